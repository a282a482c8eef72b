/* envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager ->
 * mp_hcm_config_t: codec and HTTP/2 options, upgrade types, inline route table, HTTP filter names,
 * limits and timeouts, x-forwarded-client-cert policy, access logs, and the http.<stat_prefix>.*
 * stats. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

#include "../proxy/config_internal.h"
#include "magpie/filter.h"
#include "magpie/json_pb.h"
#include "magpie/log.h"
#include "magpie/stats.h"

#define ROUTER_FILTER "envoy.filters.http.router"
#define MAX_HEADERS_KB_LIMIT 8192

typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter pb_http_filter_t;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__UpgradeConfig
    pb_upgrade_t;

static const struct {
    size_t off;
    const char *name;
    bool gauge;
} http_stats[] = {
#define S(f, g)                                                                                    \
    {                                                                                              \
        offsetof(mp_http_stats_t, f), #f, g                                                        \
    }
    S(downstream_rq_total, false),
    S(downstream_rq_1xx, false),
    S(downstream_rq_2xx, false),
    S(downstream_rq_3xx, false),
    S(downstream_rq_4xx, false),
    S(downstream_rq_5xx, false),
    S(downstream_cx_total, false),
    S(downstream_cx_active, true),
    S(downstream_cx_http1_total, false),
    S(downstream_cx_rx_bytes_total, false),
    S(downstream_cx_tx_bytes_total, false),
    S(downstream_rq_active, true),
    S(downstream_rq_timeout, false),
    S(downstream_rq_idle_timeout, false),
    S(downstream_cx_idle_timeout, false),
    S(downstream_cx_protocol_error, false),
    S(downstream_rq_completed, false),
    S(no_route, false),
    S(rq_direct_response, false),
    S(rq_redirect, false),
    S(downstream_rq_too_large, false),
    S(downstream_cx_destroy_remote, false),
    S(downstream_cx_destroy_local, false),
    S(downstream_rq_rx_reset, false),
    S(downstream_rq_tx_reset, false),
    S(downstream_cx_drain_close, false),
    S(downstream_cx_http2_total, false),
    S(downstream_cx_http2_active, true),
    S(downstream_cx_upgrades_total, false),
    S(downstream_cx_upgrades_active, true),
    S(downstream_rq_max_duration_reached, false),
#define S2(f, n)                                                                                   \
    {                                                                                              \
        offsetof(mp_http_stats_t, f), "http2." n, false                                            \
    }
    S2(h2_rx_messaging_error, "rx_messaging_error"),
    S2(h2_rx_reset, "rx_reset"),
    S2(h2_tx_reset, "tx_reset"),
    S2(h2_too_many_resets, "too_many_resets"),
    S2(h2_header_overflow, "header_overflow"),
    S2(h2_continuation_flood, "continuation_flood"),
    S2(h2_inbound_empty_frames_flood, "inbound_empty_frames_flood"),
    S2(h2_outbound_flood, "outbound_flood"),
    S2(h2_outbound_control_flood, "outbound_control_flood"),
    S2(h2_inbound_priority_frames_flood, "inbound_priority_frames_flood"),
    S2(h2_inbound_window_update_frames_flood, "inbound_window_update_frames_flood"),
    S2(h2_settings_flood, "settings_flood"),
    S2(h2_ping_flood, "ping_flood"),
    S2(h2_invalid_pseudo_header, "invalid_pseudo_header"),
    S2(h2_connection_specific_header, "connection_specific_header"),
    S2(h2_stream_id_misuse, "stream_id_misuse"),
    S2(h2_hpack_error, "hpack_error"),
    S2(h2_goaway_sent, "goaway_sent"),
#undef S2
#undef S
};

static void register_stats(mp_hcm_config_t *h)
{
    for (size_t i = 0; i < MP_ARRAY_SIZE(http_stats); i++) {
        mp_stat_id_t *id = (mp_stat_id_t *)((char *)&h->stats + http_stats[i].off);
        *id = http_stats[i].gauge
                  ? mp_stats_gaugef("http.%s.%s", h->stat_prefix, http_stats[i].name)
                  : mp_stats_counterf("http.%s.%s", h->stat_prefix, http_stats[i].name);
    }
}

/* The type name inside a typed_config ("type.googleapis.com/x.y.Z" -> "x.y.Z"), or NULL. */
static const char *typed_config_type(const pb_http_filter_t *f)
{
    const char *url = f->typed_config ? f->typed_config->type_url : NULL;
    const char *slash = url ? strrchr(url, '/') : NULL;
    return slash != NULL ? slash + 1 : NULL;
}

/* A filter is known by the type inside its typed_config or else by its name, as in Envoy. */
static const mp_http_filter_ops_t *lookup_filter(const pb_http_filter_t *f)
{
    const char *type = typed_config_type(f);
    const mp_http_filter_ops_t *ops = type ? mp_http_filter_lookup(NULL, type) : NULL;
    return ops != NULL ? ops : mp_http_filter_lookup(f->name, NULL);
}

/* Builds one filter's config from its typed_config; 0 or MP_ERROR with err set. */
static int create_filter(const pb_http_filter_t *f, const mp_http_filter_ops_t *ops,
                         const mp_hcm_config_t *h, mp_http_filter_t *out, mp_err_t *err)
{
    ProtobufCMessage *msg = NULL;
    if (f->typed_config != NULL) {
        msg = mp_pb_any_unpack(&f->typed_config->base, mp_pb_find_type(ops->type_name), err);
        if (msg == NULL)
            return mp_err_prefix(err, "typed_config: ");
    }
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "http.%s.", h->stat_prefix);
    const mp_http_filter_context_t ctx = {.stat_prefix = prefix};
    out->config = ops->create_config_ctx != NULL ? ops->create_config_ctx(msg, &ctx, err)
                                                 : ops->create_config(msg, err);
    if (msg != NULL)
        protobuf_c_message_free_unpacked(msg, NULL);
    if (out->config == NULL)
        return mp_err_prefix(err, "typed_config.");
    out->ops = ops;
    out->name = mp_xstrdup(f->name);
    return 0;
}

static int translate_filters(const mp_pb_hcm_t *pb, mp_hcm_config_t *h, mp_err_t *err)
{
    h->http_filters = mp_xcalloc(pb->n_http_filters, sizeof(*h->http_filters));
    for (size_t i = 0; i < pb->n_http_filters; i++) {
        const pb_http_filter_t *f = pb->http_filters[i];
        if (f->name == NULL || f->name[0] == '\0')
            return mp_err_set(err, "http_filters[%zu].name: required", i);
        if (f->config_type_case ==
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_CONFIG_DISCOVERY)
            return mp_err_set(err, "http_filters[%zu].config_discovery: not supported yet", i);
        const mp_http_filter_ops_t *ops = lookup_filter(f);
        if (ops == NULL && !f->is_optional)
            return mp_err_set(err, "http_filters[%zu]: unknown HTTP filter \"%s\"", i, f->name);
        if (ops == NULL || f->disabled) {
            mp_log_warn("http filter %s skipped (%s)", f->name,
                        ops == NULL ? "unknown and optional" : "disabled");
            continue;
        }
        if (ops->terminal && i + 1 != pb->n_http_filters)
            return mp_err_set(err, "http_filters[%zu]: %s must be the last filter", i, ops->name);
        if (create_filter(f, ops, h, &h->http_filters[h->n_http_filters], err) != 0)
            return mp_err_prefix(err, "http_filters[%zu].", i);
        h->n_http_filters++;
    }
    if (h->n_http_filters == 0 || !h->http_filters[h->n_http_filters - 1].ops->terminal)
        return mp_err_set(err, "http_filters: the last filter must be " ROUTER_FILTER);
    return 0;
}

static int translate_routes(const mp_pb_hcm_t *pb, const mp_config_t *cfg, mp_hcm_config_t *h,
                            mp_err_t *err)
{
    switch (pb->route_specifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG:
        h->routes = mp_translate__route_config(pb->route_config, cfg, err);
        return h->routes != NULL ? 0 : mp_err_prefix(err, "route_config.");
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS:
        return mp_err_set(err, "rds: rds is not supported yet");
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_SCOPED_ROUTES:
        return mp_err_set(err, "scoped_routes: scoped routes are not supported yet");
    default:
        return mp_err_set(err, "route_config: required");
    }
}

static int translate_codec(const mp_pb_hcm_t *pb, mp_hcm_config_t *h, mp_err_t *err)
{
    switch (pb->codec_type) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__AUTO:
        h->codec_type = MP_CODEC_AUTO;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP1:
        h->codec_type = MP_CODEC_HTTP1;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP2:
        h->codec_type = MP_CODEC_HTTP2;
        break;
    default:
        /* Refused rather than served as something else: a listener told to speak HTTP/3 that
         * does not would fail every client in a way that is hard to trace back here. */
        return mp_err_set(err, "codec_type: HTTP3 is not supported");
    }
    if (mp_translate__h2_options(pb->http2_protocol_options,
                                 pb->stream_error_on_invalid_http_message, &h->h2, err) != 0)
        return mp_err_prefix(err, "http2_protocol_options.");
    return 0;
}

/* Upgraded streams (WebSocket, CONNECT) run through the listener's own http_filters; Envoy's
 * per-upgrade filter chains are refused rather than silently replaced by those. */
static int translate_upgrades(const mp_pb_hcm_t *pb, mp_hcm_config_t *h, mp_err_t *err)
{
    h->upgrades = mp_xcalloc(pb->n_upgrade_configs, sizeof(*h->upgrades));
    for (size_t i = 0; i < pb->n_upgrade_configs; i++) {
        const pb_upgrade_t *u = pb->upgrade_configs[i];
        mp_upgrade_config_t *out = &h->upgrades[h->n_upgrades];
        if (mp_translate__upgrade_type(u->upgrade_type, h->upgrades, h->n_upgrades,
                                       &out->upgrade_type, err) != 0)
            return mp_err_prefix(err, "upgrade_configs[%zu].", i);
        h->n_upgrades++;
        if (u->n_filters > 0)
            return mp_err_set(err,
                              "upgrade_configs[%zu].filters: per-upgrade filter chains are not "
                              "supported (upgraded streams use the listener's http_filters)",
                              i);
        out->enabled = mp_translate__bool(u->enabled, true);
    }
    return 0;
}

static int translate_limits(const mp_pb_hcm_t *pb, mp_hcm_config_t *h, mp_err_t *err)
{
    h->max_request_headers_kb = mp_translate__u32(pb->max_request_headers_kb, 60);
    if (h->max_request_headers_kb == 0 || h->max_request_headers_kb > MAX_HEADERS_KB_LIMIT)
        return mp_err_set(err, "max_request_headers_kb: %u is not in [1, %u]",
                          h->max_request_headers_kb, MAX_HEADERS_KB_LIMIT);
    const Envoy__Config__Core__V3__HttpProtocolOptions *o = pb->common_http_protocol_options;
    h->max_headers_count = mp_translate__u32(o ? o->max_headers_count : NULL, 100);
    if (h->max_headers_count == 0)
        return mp_err_set(err, "common_http_protocol_options.max_headers_count: must be at "
                               "least 1");
    if (mp_translate__duration_ms(o ? o->idle_timeout : NULL, 3600000, &h->idle_timeout_ms, err) !=
        0)
        return mp_err_prefix(err, "common_http_protocol_options.idle_timeout");
    if (mp_translate__duration_ms(o ? o->max_stream_duration : NULL, 0, &h->max_stream_duration_ms,
                                  err) != 0)
        return mp_err_prefix(err, "common_http_protocol_options.max_stream_duration");
    return 0;
}

static int translate_timeouts(const mp_pb_hcm_t *pb, mp_hcm_config_t *h, mp_err_t *err)
{
    static const struct {
        size_t pb_off, out_off;
        uint64_t def;
        const char *name;
    } t[] = {
        {offsetof(mp_pb_hcm_t, stream_idle_timeout),
         offsetof(mp_hcm_config_t, stream_idle_timeout_ms), 300000, "stream_idle_timeout"},
        {offsetof(mp_pb_hcm_t, request_timeout), offsetof(mp_hcm_config_t, request_timeout_ms), 0,
         "request_timeout"},
        {offsetof(mp_pb_hcm_t, request_headers_timeout),
         offsetof(mp_hcm_config_t, request_headers_timeout_ms), 0, "request_headers_timeout"},
        {offsetof(mp_pb_hcm_t, drain_timeout), offsetof(mp_hcm_config_t, drain_timeout_ms), 5000,
         "drain_timeout"},
    };
    for (size_t i = 0; i < MP_ARRAY_SIZE(t); i++) {
        const Google__Protobuf__Duration *d =
            *(Google__Protobuf__Duration *const *)((const char *)pb + t[i].pb_off);
        uint64_t *out = (uint64_t *)((char *)h + t[i].out_off);
        if (mp_translate__duration_ms(d, t[i].def, out, err) != 0)
            return mp_err_prefix(err, "%s", t[i].name);
    }
    return 0;
}

static void translate_flags(const mp_pb_hcm_t *pb, mp_hcm_config_t *h)
{
    h->normalize_path = mp_translate__bool(pb->normalize_path, false);
    h->merge_slashes = pb->merge_slashes;
    h->use_remote_address = mp_translate__bool(pb->use_remote_address, false);
    h->xff_num_trusted_hops = pb->xff_num_trusted_hops;
    h->generate_request_id = mp_translate__bool(pb->generate_request_id, true);
    h->preserve_external_request_id = pb->preserve_external_request_id;
    h->server_name = mp_xstrdup(pb->server_name && pb->server_name[0] ? pb->server_name : "magpie");
    h->proxy_100_continue = pb->proxy_100_continue;
    h->server_header = (mp_server_header_t)pb->server_header_transformation;
    /* Envoy leaves the default to the implementation; ours rejects, as a sidecar that authorises
     * by path must not let "/a%2Fb" and "/a/b" mean different things to it and to the upstream. */
    switch (pb->path_with_escaped_slashes_action) {
    case 1:
        h->escaped_slashes = MP_ESCAPED_SLASHES_KEEP;
        break;
    case 3:
        h->escaped_slashes = MP_ESCAPED_SLASHES_UNESCAPE_REDIRECT;
        break;
    case 4:
        h->escaped_slashes = MP_ESCAPED_SLASHES_UNESCAPE_FORWARD;
        break;
    default:
        h->escaped_slashes = MP_ESCAPED_SLASHES_REJECT;
        break;
    }
}

/* forward_client_cert_details and set_current_client_cert_details.  Envoy lists the details in
 * a fixed order (Subject, URI, Cert, Chain, DNS) whatever the message says; ours are bits, and
 * proxy/xfcc.c writes them in that order. */
static int translate_xfcc(const mp_pb_hcm_t *pb, mp_hcm_config_t *h, mp_err_t *err)
{
    if ((unsigned)pb->forward_client_cert_details > MP_XFCC_ALWAYS_FORWARD_ONLY)
        return mp_err_set(err, "forward_client_cert_details: unknown value %d",
                          (int)pb->forward_client_cert_details);
    h->xfcc_mode = (mp_xfcc_mode_t)pb->forward_client_cert_details;
    const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__SetCurrentClientCertDetails
        *d = pb->set_current_client_cert_details;
    if (d == NULL)
        return 0;
    h->xfcc_details = (mp_translate__bool(d->subject, false) ? MP_XFCC_SUBJECT : 0) |
                      (d->uri ? MP_XFCC_URI : 0) | (d->cert ? MP_XFCC_CERT : 0) |
                      (d->chain ? MP_XFCC_CHAIN : 0) | (d->dns ? MP_XFCC_DNS : 0);
    return 0;
}

static int translate_fields(const mp_pb_hcm_t *pb, const mp_config_t *cfg, mp_hcm_config_t *h,
                            mp_err_t *err)
{
    if (pb->stat_prefix == NULL || pb->stat_prefix[0] == '\0')
        return mp_err_set(err, "stat_prefix: required");
    h->stat_prefix = mp_xstrdup(pb->stat_prefix);
    if (translate_codec(pb, h, err) != 0 || translate_filters(pb, h, err) != 0 ||
        translate_upgrades(pb, h, err) != 0 || translate_limits(pb, h, err) != 0 ||
        translate_timeouts(pb, h, err) != 0 || translate_xfcc(pb, h, err) != 0)
        return MP_ERROR;
    translate_flags(pb, h);
    if (translate_routes(pb, cfg, h, err) != 0)
        return MP_ERROR;
    return mp_translate__access_logs(pb->access_log, pb->n_access_log, &h->access_logs,
                                     &h->n_access_logs, err);
}

mp_hcm_config_t *mp_translate__hcm(const mp_pb_hcm_t *pb, const mp_config_t *cfg, mp_err_t *err)
{
    mp_hcm_config_t *h = mp_xcalloc(1, sizeof(*h));
    if (translate_fields(pb, cfg, h, err) != 0) {
        mp_config__hcm_free(h);
        return NULL;
    }
    register_stats(h);
    return h;
}
