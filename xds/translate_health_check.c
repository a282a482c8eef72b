/* Cluster.health_checks (envoy.config.core.v3.HealthCheck) -> mp_health_checks_t. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "translate_internal.h"

#include "envoy/config/core/v3/health_check.pb-c.h"

#include "magpie/health_check.h"
#include "magpie/stats.h"

typedef Envoy__Config__Core__V3__HealthCheck pb_hc_t;
typedef Envoy__Config__Core__V3__HealthCheck__Payload pb_payload_t;

static int payload(const pb_payload_t *pb, mp_hc_payload_t *out, mp_err_t *err)
{
    if (pb->payload_case == ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__PAYLOAD__PAYLOAD_TEXT) {
        out->data = mp_hc_hex_decode(pb->text, &out->len);
        if (out->data == NULL)
            return mp_err_set(err, "text: not a hex string");
        return 0;
    }
    if (pb->payload_case == ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__PAYLOAD__PAYLOAD_BINARY) {
        out->len = (uint32_t)pb->binary.len;
        out->data = mp_xmalloc(out->len + 1);
        if (out->len)
            memcpy(out->data, pb->binary.data, out->len);
        return 0;
    }
    return mp_err_set(err, "payload: one of text or binary is required");
}

static int payloads(pb_payload_t *const *pb, size_t n, mp_health_check_t *hc, mp_err_t *err)
{
    hc->receive = mp_xcalloc(n ? n : 1, sizeof(*hc->receive));
    for (size_t i = 0; i < n; i++, hc->n_receive++)
        if (payload(pb[i], &hc->receive[i], err) != 0)
            return mp_err_prefix(err, "receive[%zu].", i);
    return 0;
}

static int translate_tcp(const Envoy__Config__Core__V3__HealthCheck__TcpHealthCheck *pb,
                         mp_health_check_t *hc, mp_err_t *err)
{
    hc->kind = MP_HC_TCP;
    if (pb->send != NULL && payload(pb->send, &hc->send, err) != 0)
        return mp_err_prefix(err, "send.");
    return payloads(pb->receive, pb->n_receive, hc, err);
}

static int translate_statuses(const Envoy__Config__Core__V3__HealthCheck__HttpHealthCheck *pb,
                              mp_health_check_t *hc, mp_err_t *err)
{
    size_t n = pb->n_expected_statuses ? pb->n_expected_statuses : 1;
    hc->statuses = mp_xcalloc(n, sizeof(*hc->statuses));
    hc->n_statuses = (uint32_t)n;
    hc->statuses[0][0] = 200;
    hc->statuses[0][1] = 201;
    for (size_t i = 0; i < pb->n_expected_statuses; i++) {
        int64_t s = pb->expected_statuses[i]->start, e = pb->expected_statuses[i]->end;
        /* Envoy: start in [100, 600), end in (100, 600], start < end. */
        if (s < 100 || s >= 600 || e <= 100 || e > 600 || s >= e)
            return mp_err_set(err, "expected_statuses[%zu]: need 100 <= start < end <= 600", i);
        hc->statuses[i][0] = s;
        hc->statuses[i][1] = e;
    }
    return 0;
}

static int translate_http(const Envoy__Config__Core__V3__HealthCheck__HttpHealthCheck *pb,
                          mp_health_check_t *hc, mp_err_t *err)
{
    hc->kind = MP_HC_HTTP;
    if (pb->path == NULL || pb->path[0] != '/')
        return mp_err_set(err, "path: required, and must start with '/'");
    if (strpbrk(pb->path, " \r\n") != NULL || (pb->host && strpbrk(pb->host, " \r\n/") != NULL))
        return mp_err_set(err, "path/host: must not contain spaces or line breaks");
    if (pb->send != NULL || pb->n_receive > 0 || pb->service_name_matcher != NULL ||
        pb->n_retriable_statuses > 0)
        return mp_err_set(err, "send/receive/service_name_matcher/retriable_statuses: not "
                               "supported");
    if ((int)pb->method > 1) /* METHOD_UNSPECIFIED or GET */
        return mp_err_set(err, "method: only GET is supported");
    if (pb->codec_client_type == ENVOY__TYPE__V3__CODEC_CLIENT_TYPE__HTTP3)
        return mp_err_set(err, "codec_client_type: HTTP3 is not supported");
    hc->http2 = pb->codec_client_type == ENVOY__TYPE__V3__CODEC_CLIENT_TYPE__HTTP2;
    hc->path = mp_xstrdup(pb->path);
    hc->host = pb->host && pb->host[0] ? mp_xstrdup(pb->host) : NULL;
    if (translate_statuses(pb, hc, err) != 0)
        return MP_ERROR;
    return mp_translate__header_mutation(
        "request_headers", pb->request_headers_to_add, pb->n_request_headers_to_add,
        pb->request_headers_to_remove, pb->n_request_headers_to_remove, &hc->headers, err);
}

static int translate_grpc(const Envoy__Config__Core__V3__HealthCheck__GrpcHealthCheck *pb,
                          mp_health_check_t *hc, mp_err_t *err)
{
    hc->kind = MP_HC_GRPC;
    hc->service_name = mp_xstrdup(pb->service_name ? pb->service_name : "");
    if (strlen(hc->service_name) > 1024)
        return mp_err_set(err, "service_name: longer than 1024 bytes");
    hc->authority = pb->authority && pb->authority[0] ? mp_xstrdup(pb->authority) : NULL;
    return 0;
}

static int translate_kind(const pb_hc_t *pb, mp_health_check_t *hc, mp_err_t *err)
{
    switch (pb->health_checker_case) {
    case ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_HTTP_HEALTH_CHECK:
        return translate_http(pb->http_health_check, hc, err)
                   ? mp_err_prefix(err, "http_health_check.")
                   : 0;
    case ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_TCP_HEALTH_CHECK:
        return translate_tcp(pb->tcp_health_check, hc, err)
                   ? mp_err_prefix(err, "tcp_health_check.")
                   : 0;
    case ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_GRPC_HEALTH_CHECK:
        return translate_grpc(pb->grpc_health_check, hc, err)
                   ? mp_err_prefix(err, "grpc_health_check.")
                   : 0;
    case ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_CUSTOM_HEALTH_CHECK:
        return mp_err_set(err, "custom_health_check: not supported");
    default:
        return mp_err_set(err, "health_checker: one of http_health_check, tcp_health_check or "
                               "grpc_health_check is required");
    }
}

/* Required fields and the intervals that default to one another, as Envoy resolves them. */
static int translate_timing(const pb_hc_t *pb, mp_health_check_t *hc, mp_err_t *err)
{
    const struct {
        const Google__Protobuf__Duration *d;
        uint64_t *out;
        const char *name;
    } f[] = {
        {pb->timeout, &hc->timeout_ms, "timeout"},
        {pb->interval, &hc->interval_ms, "interval"},
        {pb->initial_jitter, &hc->initial_jitter_ms, "initial_jitter"},
        {pb->interval_jitter, &hc->interval_jitter_ms, "interval_jitter"},
        {pb->no_traffic_interval, &hc->no_traffic_interval_ms, "no_traffic_interval"},
        {pb->no_traffic_healthy_interval, &hc->no_traffic_healthy_interval_ms,
         "no_traffic_healthy_interval"},
        {pb->unhealthy_interval, &hc->unhealthy_interval_ms, "unhealthy_interval"},
        {pb->unhealthy_edge_interval, &hc->unhealthy_edge_interval_ms, "unhealthy_edge_interval"},
        {pb->healthy_edge_interval, &hc->healthy_edge_interval_ms, "healthy_edge_interval"},
    };
    for (size_t i = 0; i < MP_ARRAY_SIZE(f); i++) {
        if (mp_translate__duration_ms(f[i].d, 0, f[i].out, err) != 0)
            return mp_err_prefix(err, "%s", f[i].name);
        if (f[i].d != NULL && *f[i].out == 0 && i != 2 && i != 3)
            return mp_err_set(err, "%s: must be at least 1ms", f[i].name);
    }
    if (pb->timeout == NULL || pb->interval == NULL)
        return mp_err_set(err, "timeout and interval: required");
    if (pb->unhealthy_threshold == NULL || pb->healthy_threshold == NULL)
        return mp_err_set(err, "unhealthy_threshold and healthy_threshold: required");
    hc->unhealthy_threshold = MP_MAX(pb->unhealthy_threshold->value, 1u);
    hc->healthy_threshold = MP_MAX(pb->healthy_threshold->value, 1u);
    if (pb->no_traffic_interval == NULL)
        hc->no_traffic_interval_ms = 60000;
    if (pb->no_traffic_healthy_interval == NULL)
        hc->no_traffic_healthy_interval_ms = hc->no_traffic_interval_ms;
    if (pb->unhealthy_interval == NULL)
        hc->unhealthy_interval_ms = hc->interval_ms;
    if (pb->unhealthy_edge_interval == NULL)
        hc->unhealthy_edge_interval_ms = hc->unhealthy_interval_ms;
    if (pb->healthy_edge_interval == NULL)
        hc->healthy_edge_interval_ms = hc->interval_ms;
    hc->interval_jitter_percent = pb->interval_jitter_percent;
    return 0;
}

static int translate_one(const pb_hc_t *pb, mp_health_check_t *hc, mp_err_t *err)
{
    if (pb->alt_port != NULL || pb->n_event_logger > 0 || pb->transport_socket_match_criteria)
        return mp_err_set(err, "alt_port/event_logger/transport_socket_match_criteria: not "
                               "supported");
    if (translate_timing(pb, hc, err) != 0 || translate_kind(pb, hc, err) != 0)
        return MP_ERROR;
    hc->reuse_connection = mp_translate__bool(pb->reuse_connection, true);
    hc->always_log_failures = pb->always_log_health_check_failures;
    if (pb->event_log_path != NULL && pb->event_log_path[0] != '\0') {
        hc->event_log_fd =
            open(pb->event_log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (hc->event_log_fd < 0)
            return mp_err_set(err, "event_log_path: cannot open %s", pb->event_log_path);
    }
    return 0;
}

static void register_stats(mp_hc_stats_t *s, const char *name)
{
#define C(f) s->f = mp_stats_counterf("cluster.%s.health_check." #f, name)
    C(attempt);
    C(success);
    C(failure);
    C(network_failure);
    C(passive_failure);
    C(verify_cluster);
#undef C
    s->healthy = mp_stats_gaugef("cluster.%s.health_check.healthy", name);
    s->degraded = mp_stats_gaugef("cluster.%s.health_check.degraded", name);
}

int mp_translate__health_checks(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err)
{
    if (pb->n_health_checks == 0)
        return 0;
    mp_health_checks_t *hcs = mp_xcalloc(1, sizeof(*hcs));
    hcs->v = mp_xcalloc(pb->n_health_checks, sizeof(*hcs->v));
    c->health_checks = hcs;
    for (size_t i = 0; i < pb->n_health_checks; i++, hcs->n++) {
        mp_health_check_init(&hcs->v[i]);
        if (translate_one(pb->health_checks[i], &hcs->v[i], err) != 0) {
            hcs->n++; /* so that free sees what was filled */
            return mp_err_prefix(err, "health_checks[%zu].", i);
        }
    }
    register_stats(&hcs->stats,
                   pb->alt_stat_name && pb->alt_stat_name[0] ? pb->alt_stat_name : pb->name);
    return 0;
}
