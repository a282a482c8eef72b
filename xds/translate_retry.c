/* RetryPolicy (route and virtual host) into mp_retry_policy_t. */
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

#include "magpie/log.h"
#include "magpie/retry.h"

typedef Envoy__Config__Route__V3__RetryPolicy pb_retry_t;
typedef Envoy__Config__Route__V3__HeaderMatcher pb_header_matcher_t;

static int translate_matchers(pb_header_matcher_t *const *pb, size_t n, mp_header_matcher_t **out,
                              uint32_t *n_out, const char *what, mp_err_t *err)
{
    *out = mp_xcalloc(n ? n : 1, sizeof(**out));
    for (size_t i = 0; i < n; i++) {
        if (mp_translate__header_matcher(pb[i], &(*out)[i], err) != 0)
            return mp_err_prefix(err, "%s[%zu].", what, i);
        *n_out = (uint32_t)(i + 1);
    }
    return 0;
}

static int translate_backoff(const pb_retry_t *pb, mp_retry_policy_t *p, mp_err_t *err)
{
    if (pb->retry_back_off == NULL)
        return 0;
    const Google__Protobuf__Duration *base = pb->retry_back_off->base_interval;
    if (base == NULL)
        return mp_err_set(err, "retry_back_off.base_interval: required");
    if (mp_translate__duration_ms(base, 25, &p->backoff_base_ms, err) != 0)
        return mp_err_prefix(err, "retry_back_off.base_interval");
    if (p->backoff_base_ms == 0)
        return mp_err_set(err, "retry_back_off.base_interval: must be at least 1ms");
    if (mp_translate__duration_ms(pb->retry_back_off->max_interval, 10 * p->backoff_base_ms,
                                  &p->backoff_max_ms, err) != 0)
        return mp_err_prefix(err, "retry_back_off.max_interval");
    if (p->backoff_max_ms < p->backoff_base_ms)
        return mp_err_set(err, "retry_back_off.max_interval: less than base_interval");
    return 0;
}

/* Only previous_hosts is known; another predicate would change where retries go in ways we do
 * not do, so it is refused rather than ignored. */
static int translate_host_predicates(const pb_retry_t *pb, mp_retry_policy_t *p, mp_err_t *err)
{
    for (size_t i = 0; i < pb->n_retry_host_predicate; i++) {
        const char *name = pb->retry_host_predicate[i]->name;
        if (name == NULL || strcmp(name, "envoy.retry_host_predicates.previous_hosts") != 0)
            return mp_err_set(err, "retry_host_predicate[%zu].name: \"%s\" is not supported", i,
                              name ? name : "");
        p->previous_hosts = true;
    }
    if (pb->host_selection_retry_max_attempts < 0)
        return mp_err_set(err, "host_selection_retry_max_attempts: negative");
    if (pb->host_selection_retry_max_attempts > 0)
        p->host_selection_max_attempts = pb->host_selection_retry_max_attempts > 100
                                             ? 100
                                             : (uint32_t)pb->host_selection_retry_max_attempts;
    return 0;
}

static int translate_timeouts(const pb_retry_t *pb, mp_retry_policy_t *p, mp_err_t *err)
{
    if (mp_translate__duration_ms(pb->per_try_timeout, 0, &p->per_try_timeout_ms, err) != 0)
        return mp_err_prefix(err, "per_try_timeout");
    if (mp_translate__duration_ms(pb->per_try_idle_timeout, 0, &p->per_try_idle_timeout_ms, err) !=
        0)
        return mp_err_prefix(err, "per_try_idle_timeout");
    return 0;
}

static int translate_policy(const pb_retry_t *pb, mp_retry_policy_t *p, mp_err_t *err)
{
    if (pb->retry_on != NULL && mp_retry_on_parse(pb->retry_on, &p->retry_on) != 0)
        mp_log_warn("retry_on \"%s\": unknown conditions are ignored", pb->retry_on);
    p->num_retries = mp_translate__u32(pb->num_retries, 1);
    if (pb->retry_priority != NULL)
        return mp_err_set(err, "retry_priority: not supported");
    if (pb->rate_limited_retry_back_off != NULL)
        return mp_err_set(err, "rate_limited_retry_back_off: not supported");
    p->retriable_status_codes = mp_xcalloc(pb->n_retriable_status_codes + 1, sizeof(uint32_t));
    for (size_t i = 0; i < pb->n_retriable_status_codes; i++) {
        if (pb->retriable_status_codes[i] < 100 || pb->retriable_status_codes[i] > 599)
            return mp_err_set(err, "retriable_status_codes[%zu]: %u is not an HTTP status", i,
                              pb->retriable_status_codes[i]);
        p->retriable_status_codes[i] = pb->retriable_status_codes[i];
        p->n_retriable_status_codes = (uint32_t)(i + 1);
    }
    if (translate_matchers(pb->retriable_headers, pb->n_retriable_headers, &p->retriable_headers,
                           &p->n_retriable_headers, "retriable_headers", err) != 0 ||
        translate_matchers(pb->retriable_request_headers, pb->n_retriable_request_headers,
                           &p->retriable_request_headers, &p->n_retriable_request_headers,
                           "retriable_request_headers", err) != 0)
        return MP_ERROR;
    if (translate_timeouts(pb, p, err) != 0 || translate_backoff(pb, p, err) != 0)
        return MP_ERROR;
    return translate_host_predicates(pb, p, err);
}

int mp_translate__retry_policy(const Envoy__Config__Route__V3__RetryPolicy *pb,
                               mp_retry_policy_t **out, mp_err_t *err)
{
    *out = NULL;
    if (pb == NULL)
        return 0;
    mp_retry_policy_t *p = mp_xmalloc(sizeof(*p));
    mp_retry_policy_default(p);
    *out = p; /* owned by the caller even on error, so a half-built route frees it */
    if (translate_policy(pb, p, err) != 0)
        return mp_err_prefix(err, "retry_policy.");
    return 0;
}
