/* envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy -> mp_tcp_proxy_config_t: the cluster or
 * weighted clusters, idle timeout, connect attempts, access logs and the tcp.<stat_prefix>.*
 * stats.  What magpie cannot do (tunneling, on-demand clusters, subsets, ...) is refused by
 * field name rather than ignored. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

#include "../proxy/config_internal.h"
#include "magpie/stats.h"

typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster__ClusterWeight
    pb_cluster_weight_t;

#define DEFAULT_IDLE_TIMEOUT_MS 3600000

static const struct {
    size_t off;
    const char *name;
} tcp_stats[] = {
#define S(f)                                                                                       \
    {                                                                                              \
        offsetof(mp_tcp_proxy_stats_t, f), #f                                                      \
    }
    S(downstream_cx_total),
    S(downstream_cx_no_route),
    S(downstream_cx_rx_bytes_total),
    S(downstream_cx_tx_bytes_total),
    S(downstream_flow_control_paused_reading_total),
    S(downstream_flow_control_resumed_reading_total),
    S(idle_timeout),
    S(upstream_flush_total),
#undef S
};

static void register_stats(mp_tcp_proxy_config_t *t)
{
    for (size_t i = 0; i < MP_ARRAY_SIZE(tcp_stats); i++) {
        mp_stat_id_t *id = (mp_stat_id_t *)((char *)&t->stats + tcp_stats[i].off);
        *id = mp_stats_counterf("tcp.%s.%s", t->stat_prefix, tcp_stats[i].name);
    }
}

/* Set fields that magpie does not implement; the first one found is the error. */
static int check_unsupported(const mp_pb_tcp_proxy_t *pb, mp_err_t *err)
{
    static const struct {
        size_t off;
        const char *name;
    } fields[] = {
        {offsetof(mp_pb_tcp_proxy_t, on_demand), "on_demand"},
        {offsetof(mp_pb_tcp_proxy_t, metadata_match), "metadata_match"},
        {offsetof(mp_pb_tcp_proxy_t, downstream_idle_timeout), "downstream_idle_timeout"},
        {offsetof(mp_pb_tcp_proxy_t, upstream_idle_timeout), "upstream_idle_timeout"},
        {offsetof(mp_pb_tcp_proxy_t, backoff_options), "backoff_options"},
        {offsetof(mp_pb_tcp_proxy_t, tunneling_config), "tunneling_config"},
        {offsetof(mp_pb_tcp_proxy_t, max_downstream_connection_duration),
         "max_downstream_connection_duration"},
        {offsetof(mp_pb_tcp_proxy_t, access_log_flush_interval), "access_log_flush_interval"},
        {offsetof(mp_pb_tcp_proxy_t, access_log_options), "access_log_options"},
    };
    for (size_t i = 0; i < MP_ARRAY_SIZE(fields); i++)
        if (*(void *const *)((const char *)pb + fields[i].off) != NULL)
            return mp_err_set(err, "%s: not supported yet", fields[i].name);
    if (pb->flush_access_log_on_connected)
        return mp_err_set(err, "flush_access_log_on_connected: not supported yet");
    return 0;
}

static void add_cluster(mp_tcp_proxy_config_t *t, const mp_config_t *cfg, const char *name,
                        uint32_t weight)
{
    mp_tcp_cluster_weight_t *c = &t->clusters[t->n_clusters++];
    c->name = mp_xstrdup(name);
    c->cluster = mp_config_find_cluster(cfg, name);
    c->weight = weight;
    t->total_weight += weight;
}

static int translate_weighted(
    const Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster *wc,
    const mp_config_t *cfg, mp_tcp_proxy_config_t *t, mp_err_t *err)
{
    if (wc->n_clusters == 0)
        return mp_err_set(err, "clusters: at least one cluster is required");
    t->clusters = mp_xcalloc(wc->n_clusters, sizeof(*t->clusters));
    for (size_t i = 0; i < wc->n_clusters; i++) {
        const pb_cluster_weight_t *cw = wc->clusters[i];
        if (cw->name == NULL || cw->name[0] == '\0')
            return mp_err_set(err, "clusters[%zu].name: required", i);
        if (cw->weight == 0)
            return mp_err_set(err, "clusters[%zu].weight: must be at least 1", i);
        if (cw->metadata_match != NULL)
            return mp_err_set(err, "clusters[%zu].metadata_match: not supported yet", i);
        add_cluster(t, cfg, cw->name, cw->weight);
    }
    return 0;
}

/* An unknown name is accepted, as Envoy accepts it (the cluster may come later by CDS): the
 * connection that picks it is closed and counted in downstream_cx_no_route. */
static int translate_clusters(const mp_pb_tcp_proxy_t *pb, const mp_config_t *cfg,
                              mp_tcp_proxy_config_t *t, mp_err_t *err)
{
    switch (pb->cluster_specifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER:
        if (pb->cluster == NULL || pb->cluster[0] == '\0')
            return mp_err_set(err, "cluster: must not be empty");
        t->clusters = mp_xcalloc(1, sizeof(*t->clusters));
        add_cluster(t, cfg, pb->cluster, 1);
        return 0;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS:
        return translate_weighted(pb->weighted_clusters, cfg, t, err) != 0
                   ? mp_err_prefix(err, "weighted_clusters.")
                   : 0;
    default:
        return mp_err_set(err, "cluster: one of cluster and weighted_clusters is required");
    }
}

static int translate_fields(const mp_pb_tcp_proxy_t *pb, const mp_config_t *cfg,
                            mp_tcp_proxy_config_t *t, mp_err_t *err)
{
    if (pb->stat_prefix == NULL || pb->stat_prefix[0] == '\0')
        return mp_err_set(err, "stat_prefix: required");
    t->stat_prefix = mp_xstrdup(pb->stat_prefix);
    if (check_unsupported(pb, err) != 0 || translate_clusters(pb, cfg, t, err) != 0)
        return MP_ERROR;
    if (mp_translate__duration_ms(pb->idle_timeout, DEFAULT_IDLE_TIMEOUT_MS, &t->idle_timeout_ms,
                                  err) != 0)
        return mp_err_prefix(err, "idle_timeout");
    t->max_connect_attempts = mp_translate__u32(pb->max_connect_attempts, 1);
    if (t->max_connect_attempts == 0)
        return mp_err_set(err, "max_connect_attempts: must be at least 1");
    return mp_translate__access_logs(pb->access_log, pb->n_access_log, &t->access_logs,
                                     &t->n_access_logs, err);
}

mp_tcp_proxy_config_t *mp_translate__tcp_proxy(const mp_pb_tcp_proxy_t *pb, const mp_config_t *cfg,
                                               mp_err_t *err)
{
    mp_tcp_proxy_config_t *t = mp_xcalloc(1, sizeof(*t));
    if (translate_fields(pb, cfg, t, err) != 0) {
        mp_config__tcp_proxy_free(t);
        return NULL;
    }
    register_stats(t);
    return t;
}
