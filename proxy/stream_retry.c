/* The router's timeouts and retries for one stream: which policy and timeouts apply (route,
 * virtual host, trusted x-envoy-* request headers), whether an attempt's outcome is retried,
 * and the request body kept for resending.  Envoy's router semantics throughout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/circuit.h"
#include "magpie/route.h"
#include "magpie/router.h"
#include "magpie/stats.h"
#include "stream_internal.h"

/* A decimal header value in milliseconds replaces *ms when valid. */
static void header_ms(const mp_headers_t *hd, const char *name, uint64_t *ms)
{
    const mp_header_t *h = mp_headers_get(hd, name);
    if (h == NULL || h->value[0] < '0' || h->value[0] > '9')
        return;
    char *end;
    unsigned long long v = strtoull(h->value, &end, 10);
    if (*end == '\0')
        *ms = v;
}

static char *header_dup(const mp_headers_t *hd, const char *name)
{
    const mp_header_t *h = mp_headers_get(hd, name);
    return h != NULL ? mp_xstrdup(h->value) : NULL;
}

/* The retry controls a trusted client may send; untrusted ones were removed by the connection
 * manager (stream_headers.c).  Either way none of them goes upstream, as in Envoy. */
static const char *const retry_headers[] = {
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
};

static void read_retry_headers(mp_stream_t *s, uint32_t *on, uint32_t *n)
{
    const mp_headers_t *hd = &s->req->headers;
    const mp_header_t *h;
    if ((h = mp_headers_get(hd, "x-envoy-retry-on")) != NULL)
        mp_retry_on_parse(h->value, on);
    if ((h = mp_headers_get(hd, "x-envoy-retry-grpc-on")) != NULL)
        mp_retry_on_parse(h->value, on);
    uint64_t max = *n;
    header_ms(hd, "x-envoy-max-retries", &max);
    *n = max > 100 ? 100 : (uint32_t)max;
    s->retry_extra.status_codes = header_dup(hd, "x-envoy-retriable-status-codes");
    s->retry_extra.header_names = header_dup(hd, "x-envoy-retriable-header-names");
}

static bool request_allows_retry(const mp_stream_t *s, const mp_retry_policy_t *p)
{
    if (p == NULL || p->n_retriable_request_headers == 0)
        return true;
    for (uint32_t i = 0; i < p->n_retriable_request_headers; i++)
        if (mp_header_matcher_match(&p->retriable_request_headers[i], s->req))
            return true;
    return false;
}

/* The timeouts: route timeout (default 15 s) and per-try timeout, each replaced by its header;
 * a per-try timeout not shorter than the global one is dropped (Envoy's finalTimeout).  The
 * upstream is told what we will wait in x-envoy-expected-rq-timeout-ms. */
static void init_timeouts(mp_stream_t *s, const mp_retry_policy_t *p)
{
    const mp_route_t *r = s->route;
    mp_headers_t *hd = &s->req->headers;
    s->global_timeout_ms = r->has_timeout ? r->timeout_ms : 15000;
    header_ms(hd, "x-envoy-upstream-rq-timeout-ms", &s->global_timeout_ms);
    s->per_try_ms = p != NULL ? p->per_try_timeout_ms : 0;
    s->per_try_idle_ms = p != NULL ? p->per_try_idle_timeout_ms : 0;
    header_ms(hd, "x-envoy-upstream-rq-per-try-timeout-ms", &s->per_try_ms);
    if (s->global_timeout_ms != 0 && s->per_try_ms >= s->global_timeout_ms)
        s->per_try_ms = 0;
    uint64_t expected = s->per_try_ms != 0 ? s->per_try_ms : s->global_timeout_ms;
    if (r->uses_stream_duration)
        expected = 0;
    bool suppress = s->router_config != NULL && s->router_config->suppress_envoy_headers;
    if (expected != 0 && !suppress) {
        char v[24];
        int len = snprintf(v, sizeof(v), "%llu", (unsigned long long)expected);
        mp_headers_set(hd, "x-envoy-expected-rq-timeout-ms", v, (size_t)len);
    }
}

void mp_stream__retry_init(mp_stream_t *s)
{
    const mp_retry_policy_t *p = s->route->retry != NULL ? s->route->retry : s->vhost->retry;
    init_timeouts(s, p);
    uint32_t on = p != NULL ? p->retry_on : 0;
    uint32_t n = p != NULL ? p->num_retries : 1;
    read_retry_headers(s, &on, &n);
    for (size_t i = 0; i < MP_ARRAY_SIZE(retry_headers); i++)
        mp_headers_remove(&s->req->headers, retry_headers[i]);
    if (on == 0 || s->upgrade != NULL || !request_allows_retry(s, p))
        return;
    if (p == NULL) {
        s->retry_own = mp_xmalloc(sizeof(*s->retry_own));
        mp_retry_policy_default(s->retry_own);
        p = s->retry_own;
    }
    s->retry = p;
    s->retry_on = on;
    s->retries_left = n;
    s->replay_limit = s->route->buffer_limit   ? s->route->buffer_limit
                      : s->vhost->buffer_limit ? s->vhost->buffer_limit
                                               : s->conn->buffer_limit;
}

void mp_stream__replay_keep(mp_stream_t *s, mp_slice_t *slice, const char *data, size_t len)
{
    if (!mp_stream__replayable(s))
        return;
    if (mp_buf_len(&s->replay) + len > s->replay_limit) {
        /* Too big to resend: this request is not retried; its body streams on unbuffered. */
        s->replay_lost = true;
        mp_buf_clear(&s->replay);
        return;
    }
    mp_buf_append_ref(&s->replay, slice, data, len);
}

static void start_backoff(mp_stream_t *s)
{
    const mp_retry_policy_t *p = s->retry;
    uint64_t ms = mp_retry_backoff_ms(p->backoff_base_ms, p->backoff_max_ms, s->info.attempt_count,
                                      mp_random());
    mp_stats_inc(s->cluster->stats.upstream_rq_retry_backoff_exponential);
    ev_timer_set(&s->backoff_timer, (double)ms / 1000.0, 0.0);
    ev_timer_start(s->conn->w->loop, &s->backoff_timer);
}

/* Envoy's RetryStateImpl::shouldRetry: the retry unit taken for the previous retry is given
 * back when the attempt it paid for ends; a retried request whose next outcome is not retriable
 * counts as a retry success. */
bool mp_stream__retry_decide(mp_stream_t *s, const mp_attempt_outcome_t *o)
{
    if (s->retry == NULL)
        return false;
    mp_cluster_t *c = s->cluster;
    bool would = !s->replay_lost && !s->resp_started &&
                 mp_retry_would_retry(s->retry, s->retry_on, o, &s->retry_extra);
    if (s->retry_unit) {
        mp_cb_release(c, MP_PRIORITY_DEFAULT, MP_CB_RETRIES);
        s->retry_unit = false;
        if (!would)
            mp_stats_inc(c->stats.upstream_rq_retry_success);
    }
    if (!would)
        return false;
    if (s->retries_left == 0) {
        mp_stats_inc(c->stats.upstream_rq_retry_limit_exceeded);
        s->info.response_flags |= MP_RF_UPSTREAM_RETRY_LIMIT;
        return false;
    }
    s->retries_left--;
    if (!mp_cb_try_acquire(c, MP_PRIORITY_DEFAULT, MP_CB_RETRIES)) {
        mp_stats_inc(c->stats.upstream_rq_retry_overflow);
        s->info.response_flags |= MP_RF_UPSTREAM_OVERFLOW;
        return false;
    }
    s->retry_unit = true;
    mp_stats_inc(c->stats.upstream_rq_retry);
    start_backoff(s);
    return true;
}

void mp_stream__retry_free(mp_stream_t *s)
{
    if (s->retry_unit)
        mp_cb_release(s->cluster, MP_PRIORITY_DEFAULT, MP_CB_RETRIES);
    s->retry_unit = false;
    mp_buf_clear(&s->replay);
    free((char *)s->retry_extra.status_codes);
    free((char *)s->retry_extra.header_names);
    mp_retry_policy_free(s->retry_own);
}
