/* envoy.filters.http.fault: delays and aborts chosen requests, to test how callers cope.
 *
 * A delay holds the request head on a timer of the stream's own (the worker goes on serving
 * others); when it fires the chain resumes after this filter.  The client may go away in the
 * meantime: the stream's end destroys the filter's state, which stops the timer.  An abort is a
 * local reply ("fault filter abort", details fault_filter_abort); a gRPC request gets the
 * configured grpc-status (HTTP 200) or one mapped from the HTTP status.  A delay may be followed
 * by an abort, drawn when the delay ends, as Envoy does.
 *
 * Counters http.<stat_prefix>.fault.delays_injected, .aborts_injected, .faults_overflow and the
 * gauge .active_faults (streams that had a fault injected and are not finished; max_active_faults
 * bounds it, counted process-wide). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proxy/stream_internal.h"
#include "../xds/translate_internal.h"
#include "envoy/extensions/filters/http/fault/v3/fault.pb-c.h"
#include "magpie/filter.h"
#include "magpie/lb.h"
#include "magpie/route.h"
#include "magpie/stats.h"
#include "magpie/token_bucket.h"

typedef Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault pb_fault_t;
typedef Envoy__Extensions__Filters__Http__Fault__V3__FaultAbort pb_abort_t;
typedef Envoy__Extensions__Filters__Common__Fault__V3__FaultDelay pb_delay_t;
typedef Envoy__Type__V3__FractionalPercent pb_percent_t;

typedef enum abort_kind { ABORT_NONE, ABORT_HTTP, ABORT_GRPC, ABORT_HEADER } abort_kind_t;

typedef struct fault_percent {
    uint32_t numerator, denominator;
} fault_percent_t;

typedef struct fault_config {
    bool has_delay, header_delay;
    uint64_t fixed_delay_ms;
    fault_percent_t delay_pct;
    abort_kind_t abort;
    uint32_t http_status, grpc_status;
    fault_percent_t abort_pct;
    char *upstream_cluster; /* NULL: any */
    mp_header_matcher_t *headers;
    uint32_t n_headers;
    char **nodes; /* downstream_nodes */
    uint32_t n_nodes;
    uint64_t max_active; /* UINT64_MAX when unset */
    _Atomic uint64_t active;
    mp_stat_id_t delays_injected, aborts_injected, active_faults, faults_overflow;
} fault_config_t;

/* Per stream, once a fault was injected: the delay timer and the active_faults charge. */
typedef struct fault_state {
    mp_filter_state_t st;
    fault_config_t *config;
    mp_stream_t *s;
    ev_timer timer;
    struct ev_loop *loop;
} fault_state_t;

static void fault_free_config(void *config)
{
    fault_config_t *c = config;
    if (c == NULL)
        return;
    for (uint32_t i = 0; i < c->n_headers; i++) {
        free(c->headers[i].name);
        mp_string_matcher_free(&c->headers[i].str);
    }
    free(c->headers);
    for (uint32_t i = 0; i < c->n_nodes; i++)
        free(c->nodes[i]);
    free(c->nodes);
    free(c->upstream_cluster);
    free(c);
}

static fault_percent_t percent_of(const pb_percent_t *p)
{
    /* An absent percentage is Envoy's default FractionalPercent: 0 %. */
    if (p == NULL)
        return (fault_percent_t){0, 100};
    return (fault_percent_t){p->numerator, mp_percent_denominator((int)p->denominator)};
}

static int build_delay(fault_config_t *c, const pb_delay_t *d, mp_err_t *err)
{
    switch (d->fault_delay_secifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_FIXED_DELAY:
        if (mp_translate__duration_ms(d->fixed_delay, 0, &c->fixed_delay_ms, err) != 0)
            return mp_err_prefix(err, "delay.fixed_delay");
        if (c->fixed_delay_ms == 0)
            return mp_err_set(err, "delay.fixed_delay: must be greater than 0");
        break;
    case ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_HEADER_DELAY:
        c->header_delay = true;
        break;
    default:
        return mp_err_set(err, "delay: one of fixed_delay or header_delay is required");
    }
    c->has_delay = true;
    c->delay_pct = percent_of(d->percentage);
    return 0;
}

static int build_abort(fault_config_t *c, const pb_abort_t *a, mp_err_t *err)
{
    switch (a->error_type_case) {
    case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HTTP_STATUS:
        if (a->http_status < 200 || a->http_status >= 600)
            return mp_err_set(err, "abort.http_status: %u is not in [200, 600)", a->http_status);
        c->abort = ABORT_HTTP;
        c->http_status = a->http_status;
        break;
    case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_GRPC_STATUS:
        c->abort = ABORT_GRPC;
        c->grpc_status = a->grpc_status;
        break;
    case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HEADER_ABORT:
        c->abort = ABORT_HEADER;
        break;
    default:
        return mp_err_set(err,
                          "abort: one of http_status, grpc_status or header_abort is required");
    }
    c->abort_pct = percent_of(a->percentage);
    return 0;
}

static int build_match(fault_config_t *c, const pb_fault_t *pb, mp_err_t *err)
{
    if (pb->upstream_cluster != NULL && pb->upstream_cluster[0] != '\0')
        c->upstream_cluster = mp_xstrdup(pb->upstream_cluster);
    c->headers = mp_xcalloc(pb->n_headers + 1, sizeof(*c->headers));
    for (size_t i = 0; i < pb->n_headers; i++) {
        if (mp_translate__header_matcher(pb->headers[i], &c->headers[i], err) != 0) {
            c->n_headers = (uint32_t)i + 1;
            return mp_err_prefix(err, "headers[%zu]", i);
        }
        c->n_headers = (uint32_t)i + 1;
    }
    c->nodes = mp_xcalloc(pb->n_downstream_nodes + 1, sizeof(*c->nodes));
    for (size_t i = 0; i < pb->n_downstream_nodes; i++)
        c->nodes[c->n_nodes++] = mp_xstrdup(pb->downstream_nodes[i]);
    return 0;
}

static void register_stats(fault_config_t *c, const char *prefix)
{
    c->delays_injected = mp_stats_counterf("%sfault.delays_injected", prefix);
    c->aborts_injected = mp_stats_counterf("%sfault.aborts_injected", prefix);
    c->faults_overflow = mp_stats_counterf("%sfault.faults_overflow", prefix);
    c->active_faults = mp_stats_gaugef("%sfault.active_faults", prefix);
}

static void *fault_create_config(const ProtobufCMessage *msg, const mp_http_filter_context_t *ctx,
                                 mp_err_t *err)
{
    const pb_fault_t *pb = (const pb_fault_t *)msg;
    fault_config_t *c = mp_xcalloc(1, sizeof(*c));
    c->max_active = UINT64_MAX;
    register_stats(c, ctx->stat_prefix);
    if (pb == NULL)
        return c; /* no delay, no abort: the filter passes everything */
    /* Refused rather than ignored: whoever asks for it expects the response to be slowed. */
    if (pb->response_rate_limit != NULL) {
        mp_err_set(err, "response_rate_limit: not supported yet");
        goto out_free;
    }
    if (pb->delay != NULL && build_delay(c, pb->delay, err) != 0)
        goto out_free;
    if (pb->abort != NULL && build_abort(c, pb->abort, err) != 0)
        goto out_free;
    if (build_match(c, pb, err) != 0)
        goto out_free;
    if (pb->max_active_faults != NULL)
        c->max_active = pb->max_active_faults->value;
    return c;
out_free:
    fault_free_config(c);
    return NULL;
}

/* ---- per request ---- */

static bool header_u64(const mp_http_msg_t *req, const char *name, uint64_t *out)
{
    const mp_header_t *h = mp_headers_get(&req->headers, name);
    if (h == NULL || h->value_len == 0 || h->value_len > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < h->value_len; i++) {
        if (h->value[i] < '0' || h->value[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(h->value[i] - '0');
    }
    *out = v;
    return true;
}

/* With the header variants, a x-envoy-fault-*-request-percentage header may lower (never raise)
 * the configured numerator; the denominator stays the configured one. */
static bool percent_draw(fault_percent_t p, bool from_header, const mp_http_msg_t *req,
                         const char *header)
{
    uint64_t v;
    if (from_header && header_u64(req, header, &v) && v < p.numerator)
        p.numerator = (uint32_t)v;
    return mp_percent_hit(p.numerator, p.denominator, mp_random());
}

/* The delay for this request, 0 for none. */
static uint64_t delay_for(const fault_config_t *c, const mp_http_msg_t *req)
{
    if (!c->has_delay ||
        !percent_draw(c->delay_pct, c->header_delay, req, "x-envoy-fault-delay-request-percentage"))
        return 0;
    uint64_t ms = c->fixed_delay_ms;
    if (c->header_delay && !header_u64(req, "x-envoy-fault-delay-request", &ms))
        return 0;
    return ms;
}

/* Whether to abort, and with what: *http (and *grpc, -1 for none). */
static bool abort_for(const fault_config_t *c, const mp_http_msg_t *req, int *http, int *grpc)
{
    uint64_t v;
    *grpc = -1;
    if (c->abort == ABORT_NONE)
        return false;
    bool hdr = c->abort == ABORT_HEADER;
    if (!percent_draw(c->abort_pct, hdr, req, "x-envoy-fault-abort-request-percentage"))
        return false;
    if (c->abort == ABORT_HTTP) {
        *http = (int)c->http_status;
        return true;
    }
    if (c->abort == ABORT_GRPC) {
        *http = 200;
        *grpc = (int)c->grpc_status;
        return true;
    }
    /* The HTTP status header wins over the gRPC one, as in Envoy. */
    if (header_u64(req, "x-envoy-fault-abort-request", &v) && v >= 200 && v < 600) {
        *http = (int)v;
        return true;
    }
    if (header_u64(req, "x-envoy-fault-abort-grpc-request", &v) && v <= INT32_MAX) {
        *http = 200;
        *grpc = (int)v;
        return true;
    }
    return false;
}

static void send_abort(mp_stream_t *s, const fault_config_t *c, int http, int grpc)
{
    mp_stats_inc(c->aborts_injected);
    if (grpc < 0 || !s->grpc) {
        mp_stream_local_reply(s, http, MP_RF_FAULT_INJECTED, "fault filter abort",
                              "fault_filter_abort");
        return;
    }
    s->info.response_flags |= MP_RF_FAULT_INJECTED;
    s->info.response_code_details = "fault_filter_abort";
    mp_http_msg_t *resp = mp_http_msg_new();
    resp->status = 200;
    resp->content_length = -1;
    char code[12];
    snprintf(code, sizeof(code), "%d", grpc);
    mp_headers_add_cstr(&resp->headers, "content-type", "application/grpc");
    mp_headers_add_cstr(&resp->headers, "grpc-status", code);
    mp_headers_add_cstr(&resp->headers, "grpc-message", "fault filter abort");
    mp_stream__send_local(s, resp, NULL, 0);
}

static void destroy_state(mp_filter_state_t *st)
{
    fault_state_t *fs = (fault_state_t *)st;
    ev_timer_stop(fs->loop, &fs->timer);
    atomic_fetch_sub(&fs->config->active, 1);
    mp_stats_dec(fs->config->active_faults);
    free(fs);
}

static void on_delay_done(struct ev_loop *loop, ev_timer *t, int revents)
{
    fault_state_t *fs = t->data;
    mp_stream_t *s = fs->s;
    const fault_config_t *c = fs->config;
    int http, grpc;
    s->info.response_flags |= MP_RF_DELAY_INJECTED;
    if (abort_for(c, s->req, &http, &grpc)) {
        send_abort(s, c, http, grpc); /* may free s and fs */
        return;
    }
    mp_stream_continue_decoding(s, c);
}

/* Charges one active fault to the stream for its remaining life (Envoy counts a stream once,
 * whether it is delayed, aborted or both). */
static fault_state_t *charge(fault_config_t *c, mp_stream_t *s)
{
    fault_state_t *fs = mp_xcalloc(1, sizeof(*fs));
    fs->st.owner = c;
    fs->st.destroy = destroy_state;
    fs->config = c;
    fs->s = s;
    fs->loop = s->conn->w->loop;
    ev_init(&fs->timer, on_delay_done);
    fs->timer.data = fs;
    atomic_fetch_add(&c->active, 1);
    mp_stats_inc(c->active_faults);
    mp_stream_filter_state_add(s, &fs->st);
    return fs;
}

static bool node_listed(const fault_config_t *c, const mp_http_msg_t *req)
{
    const mp_header_t *h = mp_headers_get(&req->headers, "x-envoy-downstream-service-node");
    if (h == NULL)
        return false;
    for (uint32_t i = 0; i < c->n_nodes; i++)
        if (strlen(c->nodes[i]) == h->value_len && memcmp(c->nodes[i], h->value, h->value_len) == 0)
            return true;
    return false;
}

/* The request is one that faults apply to: headers, destination cluster, downstream node. */
static bool applies(const fault_config_t *c, const mp_stream_t *s, const mp_http_msg_t *req)
{
    for (uint32_t i = 0; i < c->n_headers; i++)
        if (!mp_header_matcher_match(&c->headers[i], req))
            return false;
    if (c->upstream_cluster != NULL) {
        const mp_route_t *r = s->route;
        if (r == NULL || r->cluster_name == NULL || strcmp(r->cluster_name, c->upstream_cluster))
            return false;
    }
    return c->n_nodes == 0 || node_listed(c, req);
}

static mp_filter_status_t fault_decode_headers(const void *config, mp_stream_t *s,
                                               mp_http_msg_t *req)
{
    fault_config_t *c = (fault_config_t *)config; /* only the atomic count is written */
    if ((!c->has_delay && c->abort == ABORT_NONE) || !applies(c, s, req))
        return MP_FILTER_CONTINUE;
    /* A loose limit, as Envoy's: two workers may both pass it at the last slot. */
    if (atomic_load_explicit(&c->active, memory_order_relaxed) >= c->max_active) {
        mp_stats_inc(c->faults_overflow);
        return MP_FILTER_CONTINUE;
    }
    uint64_t delay_ms = delay_for(c, req);
    if (delay_ms > 0) {
        fault_state_t *fs = charge(c, s);
        mp_stats_inc(c->delays_injected);
        ev_timer_set(&fs->timer, (double)delay_ms / 1000.0, 0.0);
        ev_timer_start(fs->loop, &fs->timer);
        return MP_FILTER_STOP;
    }
    int http, grpc;
    if (!abort_for(c, req, &http, &grpc))
        return MP_FILTER_CONTINUE;
    charge(c, s);
    send_abort(s, c, http, grpc);
    return MP_FILTER_STOP;
}

const mp_http_filter_ops_t mp_filter_fault_ops = {
    .name = "envoy.filters.http.fault",
    .type_name = "envoy.extensions.filters.http.fault.v3.HTTPFault",
    .create_config_ctx = fault_create_config,
    .free_config = fault_free_config,
    .decode_headers = fault_decode_headers,
};
