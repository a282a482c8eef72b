/* envoy.filters.http.local_ratelimit: a token bucket in front of the router.
 *
 * One token per request.  The bucket is shared by every worker of the process (one atomic word
 * in the filter's config, include/magpie/token_bucket.h), or, with
 * local_rate_limit_per_downstream_connection, one per downstream connection (kept as the
 * connection's filter state).  filter_enabled decides, per request, whether the bucket is
 * consulted at all; filter_enforced whether an empty bucket answers the request.  Both default to
 * 0 %, as Envoy's: a filter without them only counts.  An enforced refusal is a local reply with
 * `status` (429 by default) and the body "local_rate_limited", flag RL, x-envoy-ratelimited and
 * response_headers_to_add; gRPC requests get UNAVAILABLE.
 *
 * Counters <stat_prefix>.http_local_rate_limit.{enabled,ok,rate_limited,enforced}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proxy/http_internal.h"
#include "../xds/translate_internal.h"
#include "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.pb-c.h"
#include "magpie/filter.h"
#include "magpie/lb.h"
#include "magpie/ratelimit.h"
#include "magpie/route.h"
#include "magpie/stats.h"

typedef Envoy__Extensions__Filters__Http__LocalRatelimit__V3__LocalRateLimit pb_lrl_t;
typedef Envoy__Config__Core__V3__RuntimeFractionalPercent pb_runtime_pct_t;

typedef struct lrl_config {
    mp_token_bucket_cfg_t bucket;
    _Atomic uint64_t shared; /* the process-wide bucket */
    bool per_connection;
    bool x_ratelimit; /* enable_x_ratelimit_headers: DRAFT_VERSION_03 */
    uint32_t enabled_num, enabled_den, enforced_num, enforced_den;
    int status;
    mp_header_mutation_t response_headers, request_headers_not_enforced;
    mp_stat_id_t enabled, ok, rate_limited, enforced;
} lrl_config_t;

/* A downstream connection's own bucket. */
typedef struct lrl_conn_state {
    mp_filter_state_t st;
    mp_token_bucket_t bucket;
} lrl_conn_state_t;

static void lrl_free_config(void *config)
{
    lrl_config_t *c = config;
    if (c == NULL)
        return;
    mp_header_mutation_free(&c->response_headers);
    mp_header_mutation_free(&c->request_headers_not_enforced);
    free(c);
}

static void runtime_percent(const pb_runtime_pct_t *p, uint32_t *num, uint32_t *den)
{
    /* Absent: 0 % (Envoy's default for both fields).  The runtime key is not read: magpie has
     * no runtime layer, so default_value is the value. */
    *num = 0;
    *den = 100;
    if (p == NULL || p->default_value == NULL)
        return;
    *num = p->default_value->numerator;
    *den = mp_percent_denominator((int)p->default_value->denominator);
}

static int build_fields(lrl_config_t *c, const pb_lrl_t *pb, mp_err_t *err)
{
    if (mp_ratelimit_bucket_build(pb->token_bucket, &c->bucket, err) != 0)
        return mp_err_prefix(err, "token_bucket");
    runtime_percent(pb->filter_enabled, &c->enabled_num, &c->enabled_den);
    runtime_percent(pb->filter_enforced, &c->enforced_num, &c->enforced_den);
    c->per_connection = pb->local_rate_limit_per_downstream_connection;
    c->x_ratelimit = pb->enable_x_ratelimit_headers != 0;
    /* Envoy turns a status below 400 into 429: a refusal must read as one. */
    c->status = 429;
    if (pb->status != NULL && pb->status->code >= 400 && pb->status->code < 600)
        c->status = (int)pb->status->code;
    if (mp_translate__header_mutation("response_headers", pb->response_headers_to_add,
                                      pb->n_response_headers_to_add, NULL, 0, &c->response_headers,
                                      err) != 0)
        return MP_ERROR;
    if (mp_translate__header_mutation("request_headers_when_not_enforced",
                                      pb->request_headers_to_add_when_not_enforced,
                                      pb->n_request_headers_to_add_when_not_enforced, NULL, 0,
                                      &c->request_headers_not_enforced, err) != 0)
        return MP_ERROR;
    return 0;
}

static void *lrl_create_config(const ProtobufCMessage *msg, mp_err_t *err)
{
    const pb_lrl_t *pb = (const pb_lrl_t *)msg;
    if (pb == NULL || pb->stat_prefix == NULL || pb->stat_prefix[0] == '\0') {
        mp_err_set(err, "stat_prefix: required");
        return NULL;
    }
    lrl_config_t *c = mp_xcalloc(1, sizeof(*c));
    if (build_fields(c, pb, err) != 0) {
        lrl_free_config(c);
        return NULL;
    }
    mp_token_bucket_shared_init(&c->bucket, &c->shared, mp_now_ns());
    const char *p = pb->stat_prefix;
    c->enabled = mp_stats_counterf("%s.http_local_rate_limit.enabled", p);
    c->ok = mp_stats_counterf("%s.http_local_rate_limit.ok", p);
    c->rate_limited = mp_stats_counterf("%s.http_local_rate_limit.rate_limited", p);
    c->enforced = mp_stats_counterf("%s.http_local_rate_limit.enforced", p);
    return c;
}

static void destroy_conn_state(mp_filter_state_t *st)
{
    free(st);
}

static lrl_conn_state_t *conn_bucket(const lrl_config_t *c, mp_stream_t *s, uint64_t now)
{
    lrl_conn_state_t *cs = (lrl_conn_state_t *)mp_conn_filter_state_get(s, c);
    if (cs != NULL)
        return cs;
    cs = mp_xcalloc(1, sizeof(*cs));
    cs->st.owner = c;
    cs->st.destroy = destroy_conn_state;
    cs->bucket = mp_token_bucket_full(&c->bucket, now);
    mp_conn_filter_state_add(s, &cs->st);
    return cs;
}

static bool take_token(lrl_config_t *c, mp_stream_t *s)
{
    uint64_t now = mp_now_ns();
    if (!c->per_connection)
        return mp_token_bucket_shared_take(&c->bucket, &c->shared, now);
    return mp_token_bucket_take(&c->bucket, &conn_bucket(c, s, now)->bucket, now);
}

/* Marks a stream whose request consulted the bucket, for the x-ratelimit headers. */
static void mark_checked(const lrl_config_t *c, mp_stream_t *s)
{
    mp_filter_state_t *st = mp_xcalloc(1, sizeof(*st));
    st->owner = c;
    st->destroy = destroy_conn_state;
    mp_stream_filter_state_add(s, st);
}

static mp_filter_status_t lrl_decode_headers(const void *config, mp_stream_t *s, mp_http_msg_t *req)
{
    lrl_config_t *c = (lrl_config_t *)config; /* only the shared bucket's word is written */
    if (!mp_percent_hit(c->enabled_num, c->enabled_den, mp_random()))
        return MP_FILTER_CONTINUE;
    mp_stats_inc(c->enabled);
    if (c->x_ratelimit)
        mark_checked(c, s);
    if (take_token(c, s)) {
        mp_stats_inc(c->ok);
        return MP_FILTER_CONTINUE;
    }
    mp_stats_inc(c->rate_limited);
    if (!mp_percent_hit(c->enforced_num, c->enforced_den, mp_random())) {
        mp_header_mutation_apply(&c->request_headers_not_enforced, &req->headers);
        return MP_FILTER_CONTINUE;
    }
    mp_stats_inc(c->enforced);
    mp_stream_local_reply(s, c->status, MP_RF_RATE_LIMITED, "local_rate_limited",
                          "local_rate_limited");
    return MP_FILTER_STOP;
}

static void add_number(mp_http_msg_t *resp, const char *name, uint64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof(t), "%llu", (unsigned long long)v);
    mp_headers_set(&resp->headers, name, t, (size_t)n);
}

static mp_filter_status_t lrl_encode_headers(const void *config, mp_stream_t *s,
                                             mp_http_msg_t *resp)
{
    lrl_config_t *c = (lrl_config_t *)config;
    /* RL is set only here, on an enforced refusal: the reply being encoded is ours. */
    if (s->info.response_flags & MP_RF_RATE_LIMITED) {
        mp_headers_set(&resp->headers, "x-envoy-ratelimited", "true", 4);
        mp_header_mutation_apply(&c->response_headers, &resp->headers);
    }
    if (!c->x_ratelimit || mp_stream_filter_state_get(s, c) == NULL)
        return MP_FILTER_CONTINUE;
    uint64_t now = mp_now_ns();
    uint32_t left;
    if (c->per_connection) {
        lrl_conn_state_t *cs = conn_bucket(c, s, now);
        mp_token_bucket_refill(&c->bucket, &cs->bucket, now);
        left = cs->bucket.tokens;
    } else {
        left = mp_token_bucket_shared_peek(&c->bucket, &c->shared, now);
    }
    add_number(resp, "x-ratelimit-limit", c->bucket.max_tokens);
    add_number(resp, "x-ratelimit-remaining", left);
    add_number(resp, "x-ratelimit-reset", mp_token_bucket_reset_s(&c->bucket, now));
    return MP_FILTER_CONTINUE;
}

const mp_http_filter_ops_t mp_filter_local_ratelimit_ops = {
    .name = "envoy.filters.http.local_ratelimit",
    .type_name = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    .create_config = lrl_create_config,
    .free_config = lrl_free_config,
    .decode_headers = lrl_decode_headers,
    .encode_headers = lrl_encode_headers,
};
