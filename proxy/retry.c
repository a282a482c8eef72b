/* Retry policy arithmetic (include/magpie/retry.h). */
#include <stdlib.h>
#include <string.h>

#include "magpie/retry.h"
#include "magpie/route.h"

static const struct {
    const char *name;
    uint32_t bit;
} retry_on_names[] = {
    {"5xx", MP_RETRY_ON_5XX},
    {"gateway-error", MP_RETRY_ON_GATEWAY_ERROR},
    {"reset", MP_RETRY_ON_RESET},
    {"connect-failure", MP_RETRY_ON_CONNECT_FAILURE},
    {"retriable-4xx", MP_RETRY_ON_RETRIABLE_4XX},
    {"refused-stream", MP_RETRY_ON_REFUSED_STREAM},
    {"retriable-status-codes", MP_RETRY_ON_RETRIABLE_STATUS_CODES},
    {"retriable-headers", MP_RETRY_ON_RETRIABLE_HEADERS},
    {"cancelled", MP_RETRY_ON_GRPC_CANCELLED},
    {"deadline-exceeded", MP_RETRY_ON_GRPC_DEADLINE_EXCEEDED},
    {"resource-exhausted", MP_RETRY_ON_GRPC_RESOURCE_EXHAUSTED},
    {"unavailable", MP_RETRY_ON_GRPC_UNAVAILABLE},
    {"internal", MP_RETRY_ON_GRPC_INTERNAL},
};

static uint32_t retry_on_bit(const char *name, size_t len)
{
    for (size_t i = 0; i < MP_ARRAY_SIZE(retry_on_names); i++)
        if (strlen(retry_on_names[i].name) == len && memcmp(retry_on_names[i].name, name, len) == 0)
            return retry_on_names[i].bit;
    return 0;
}

int mp_retry_on_parse(const char *list, uint32_t *bits)
{
    int unknown = 0;
    const char *p = list;
    while (p != NULL && *p != '\0') {
        size_t n = strcspn(p, ",");
        const char *b = p, *e = p + n;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e > b) {
            uint32_t bit = retry_on_bit(b, (size_t)(e - b));
            *bits |= bit;
            unknown += bit == 0;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return unknown;
}

/* Whether code is in a comma-separated list of numbers. */
static bool code_in_list(const char *list, int code)
{
    while (list != NULL && *list != '\0') {
        char *end;
        long v = strtol(list, &end, 10);
        if (end != list && v == code)
            return true;
        const char *comma = strchr(list, ',');
        list = comma != NULL ? comma + 1 : NULL;
    }
    return false;
}

/* Whether a response has a field named in the comma-separated list. */
static bool has_named_header(const mp_http_msg_t *resp, const char *list)
{
    char name[128];
    while (list != NULL && *list != '\0') {
        size_t n = strcspn(list, ",");
        const char *b = list;
        size_t len = n;
        while (len > 0 && *b == ' ')
            b++, len--;
        while (len > 0 && b[len - 1] == ' ')
            len--;
        if (len > 0 && len < sizeof(name)) {
            for (size_t i = 0; i < len; i++)
                name[i] = (char)((b[i] >= 'A' && b[i] <= 'Z') ? b[i] + 32 : b[i]);
            name[len] = '\0';
            if (mp_headers_get(&resp->headers, name) != NULL)
                return true;
        }
        list += n;
        if (*list == ',')
            list++;
    }
    return false;
}

static bool status_listed(const mp_retry_policy_t *p, int status, const mp_retry_extra_t *x)
{
    for (uint32_t i = 0; p != NULL && i < p->n_retriable_status_codes; i++)
        if ((int)p->retriable_status_codes[i] == status)
            return true;
    return x != NULL && code_in_list(x->status_codes, status);
}

static bool headers_match(const mp_retry_policy_t *p, const mp_http_msg_t *resp,
                          const mp_retry_extra_t *x)
{
    for (uint32_t i = 0; p != NULL && i < p->n_retriable_headers; i++)
        if (mp_header_matcher_match(&p->retriable_headers[i], resp))
            return true;
    return x != NULL && has_named_header(resp, x->header_names);
}

/* gRPC status of a trailers-only response (grpc-status in the head), or -1. */
static int grpc_status_of(const mp_http_msg_t *resp)
{
    const mp_header_t *h = mp_headers_get(&resp->headers, "grpc-status");
    if (h == NULL)
        return -1;
    char *end;
    long v = strtol(h->value, &end, 10);
    return end != h->value && *end == '\0' ? (int)v : -1;
}

static bool grpc_retriable(uint32_t on, int g)
{
    return (g == 1 && (on & MP_RETRY_ON_GRPC_CANCELLED)) ||
           (g == 4 && (on & MP_RETRY_ON_GRPC_DEADLINE_EXCEEDED)) ||
           (g == 8 && (on & MP_RETRY_ON_GRPC_RESOURCE_EXHAUSTED)) ||
           (g == 13 && (on & MP_RETRY_ON_GRPC_INTERNAL)) ||
           (g == 14 && (on & MP_RETRY_ON_GRPC_UNAVAILABLE));
}

static bool response_retriable(const mp_retry_policy_t *p, uint32_t on, const mp_http_msg_t *resp,
                               const mp_retry_extra_t *x)
{
    int st = resp->status;
    if ((on & MP_RETRY_ON_5XX) && st >= 500 && st <= 599)
        return true;
    if ((on & MP_RETRY_ON_GATEWAY_ERROR) && st >= 502 && st <= 504)
        return true;
    if ((on & MP_RETRY_ON_RETRIABLE_4XX) && st == 409)
        return true;
    if ((on & MP_RETRY_ON_RETRIABLE_STATUS_CODES) && status_listed(p, st, x))
        return true;
    if ((on & MP_RETRY_ON_RETRIABLE_HEADERS) && headers_match(p, resp, x))
        return true;
    return grpc_retriable(on, grpc_status_of(resp));
}

bool mp_retry_would_retry(const mp_retry_policy_t *p, uint32_t on, const mp_attempt_outcome_t *o,
                          const mp_retry_extra_t *x)
{
    /* A reset, refused stream or failed connect produces a 503 (a timeout a 504), so 5xx and
     * gateway-error cover them, as in Envoy's router. */
    const uint32_t no_response = MP_RETRY_ON_5XX | MP_RETRY_ON_GATEWAY_ERROR | MP_RETRY_ON_RESET;
    switch (o->kind) {
    case MP_ATTEMPT_RESPONSE:
        return o->resp != NULL && response_retriable(p, on, o->resp, x);
    case MP_ATTEMPT_CONNECT_FAILURE:
        return (on & (no_response | MP_RETRY_ON_CONNECT_FAILURE)) != 0;
    case MP_ATTEMPT_REFUSED_STREAM:
        return (on & (no_response | MP_RETRY_ON_REFUSED_STREAM)) != 0;
    case MP_ATTEMPT_RESET:
    case MP_ATTEMPT_TIMEOUT:
        return (on & no_response) != 0;
    }
    return false;
}

uint64_t mp_retry_backoff_ms(uint64_t base_ms, uint64_t max_ms, uint32_t n, uint64_t rnd)
{
    if (base_ms == 0)
        return 0;
    if (max_ms < base_ms)
        max_ms = base_ms;
    uint64_t mult = n >= 63 ? UINT64_MAX : (1ull << n) - 1;
    uint64_t limit = mult > max_ms / base_ms ? max_ms : mult * base_ms;
    return limit == 0 ? 0 : rnd % limit;
}

void mp_retry_policy_default(mp_retry_policy_t *p)
{
    memset(p, 0, sizeof(*p));
    p->num_retries = 1;
    p->backoff_base_ms = 25;
    p->backoff_max_ms = 250;
    p->host_selection_max_attempts = 1;
}

static void free_matchers(mp_header_matcher_t *m, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(m[i].name);
        mp_string_matcher_free(&m[i].str);
    }
    free(m);
}

void mp_retry_policy_free(mp_retry_policy_t *p)
{
    if (p == NULL)
        return;
    free(p->retriable_status_codes);
    free_matchers(p->retriable_headers, p->n_retriable_headers);
    free_matchers(p->retriable_request_headers, p->n_retriable_request_headers);
    free(p);
}
