/* Snapshot lifetime: reference counting and the full free of everything a snapshot owns. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h>

#include "config_internal.h"
#include "magpie/filter.h"
#include "magpie/health_check.h"
#include "magpie/rbac.h"
#include "magpie/access_log.h"
#include "magpie/circuit.h"
#include "magpie/log.h"
#include "magpie/config.h"
#include "magpie/outlier.h"
#include "magpie/route.h"
#include "magpie/tls.h"

mp_config_t *mp_config_ref(mp_config_t *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

/* magpie grants HTTP/2 window only as fast as the other side drains (DESIGN.md, flow control),
 * so the windows are the per-stream and per-connection buffer bounds: 256 KiB and 1 MiB rather
 * than Envoy's 256 MiB.  The flood limits are Envoy's. */
void mp_h2_options_default(mp_h2_options_t *o)
{
    *o = (mp_h2_options_t){
        .max_concurrent_streams = 1024,
        .initial_stream_window_size = 256 * 1024,
        .initial_connection_window_size = 1024 * 1024,
        .hpack_table_size = 4096,
        .max_outbound_frames = 10000,
        .max_outbound_control_frames = 1000,
        .max_consecutive_inbound_frames_with_empty_payload = 1,
        .max_inbound_priority_frames_per_stream = 100,
        .max_inbound_window_update_frames_per_data_frame_sent = 10,
        .allow_connect = false,
        .override_stream_error_on_invalid_http_message = false,
    };
}

void mp_config__upgrades_free(mp_upgrade_config_t *u, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(u[i].upgrade_type);
    free(u);
}

void mp_config__access_log_clear(mp_access_log_t *log)
{
    /* stdout and stderr belong to the process, not to the snapshot. */
    if (log->sink == MP_ALOG_FILE && log->fd >= 0)
        close(log->fd);
    log->fd = -1;
    free(log->path);
    log->path = NULL;
    if (log->format != NULL)
        mp_access_log_format_free(log->format);
    log->format = NULL;
}

void mp_config__hcm_free(mp_hcm_config_t *h)
{
    if (h == NULL)
        return;
    free(h->stat_prefix);
    mp_route_table_free(h->routes);
    for (uint32_t i = 0; i < h->n_http_filters; i++) {
        mp_http_filter_t *f = &h->http_filters[i];
        if (f->ops != NULL && f->config != NULL)
            f->ops->free_config(f->config);
        free(f->name);
    }
    free(h->http_filters);
    free(h->server_name);
    mp_config__upgrades_free(h->upgrades, h->n_upgrades);
    for (uint32_t i = 0; i < h->n_access_logs; i++)
        mp_config__access_log_clear(&h->access_logs[i]);
    free(h->access_logs);
    free(h);
}

void mp_config__tcp_proxy_free(mp_tcp_proxy_config_t *t)
{
    if (t == NULL)
        return;
    free(t->stat_prefix);
    for (uint32_t i = 0; i < t->n_clusters; i++)
        free(t->clusters[i].name);
    free(t->clusters);
    for (uint32_t i = 0; i < t->n_access_logs; i++)
        mp_config__access_log_clear(&t->access_logs[i]);
    free(t->access_logs);
    free(t);
}

static void free_strings(char **v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void mp_config__chain_clear(mp_filter_chain_t *fc)
{
    mp_chain_match_t *m = &fc->match;
    free(fc->name);
    free(m->prefix_ranges);
    free_strings(m->server_names, m->n_server_names);
    free(m->transport_protocol);
    free_strings(m->application_protocols, m->n_application_protocols);
    free(m->direct_source_prefix_ranges);
    free(m->source_prefix_ranges);
    free(m->source_ports);
    mp_config__hcm_free(fc->hcm);
    mp_config__tcp_proxy_free(fc->tcp_proxy);
    mp_tls_ctx_free(fc->tls);
    for (uint32_t i = 0; i < fc->n_rbac_filters; i++)
        mp_rbac_filter_config_free(&fc->rbac_filters[i]);
    free(fc->rbac_filters);
    free(fc->net_ratelimits);
    memset(fc, 0, sizeof(*fc));
}

void mp_config__listener_clear(mp_listener_t *l)
{
    free(l->name);
    free(l->pb);
    for (uint32_t i = 0; i < l->n_chains; i++)
        mp_config__chain_clear(&l->chains[i]);
    free(l->chains);
    if (l->default_chain != NULL)
        mp_config__chain_clear(l->default_chain);
    free(l->default_chain);
    memset(l, 0, sizeof(*l));
}

/* Every request and connection holds the snapshot its cluster belongs to, so when the cluster
 * goes, all it lent out must have come back: a count left over is a leak (one that, on a live
 * cluster, would refuse requests forever).  Say so loudly; the tests look for this line. */
static void check_breakers(const mp_cluster_t *c)
{
    for (int p = 0; p < MP_PRIORITY_COUNT; p++) {
        for (int r = 0; r < MP_CB_RESOURCE_COUNT; r++) {
            uint32_t n = mp_cb_in_use(c, p, r);
            if (n != 0)
                mp_log_error("cluster %s: circuit breaker leak: priority %d resource %d still "
                             "holds %u",
                             c->name, p, r, n);
        }
    }
}

void mp_config__cluster_free(mp_cluster_t *c)
{
    if (c == NULL)
        return;
    check_breakers(c);
    free(c->name);
    free(c->pb);
    free(c->eds_name);
    free(c->eds_path);
    for (uint32_t i = 0; i < c->n_endpoints; i++)
        free(c->endpoints[i].address);
    free(c->endpoints);
    for (uint32_t i = 0; i < c->n_localities; i++)
        mp_locality_clear(&c->localities[i]);
    free(c->localities);
    mp_tls_ctx_free(c->tls);
    mp_health_checks_free(c->health_checks);
    mp_hostset_release(atomic_load_explicit(&c->hosts, memory_order_acquire));
    mp_outlier_free(c->outlier);
    free(c);
}

static void config_free(mp_config_t *c)
{
    for (uint32_t i = 0; i < c->n_listeners; i++)
        mp_config__listener_clear(&c->listeners[i]);
    free(c->listeners);
    for (uint32_t i = 0; i < c->n_clusters; i++)
        mp_cluster_unref(c->clusters[i]);
    free(c->clusters);
    free(c->tls_ctxs);
    free(c->node_id);
    free(c->node_cluster);
    mp_locality_clear(&c->node_locality);
    free(c->local_cluster_name);
    if (c->bootstrap != NULL)
        protobuf_c_message_free_unpacked(c->bootstrap, NULL);
    free(c);
}

mp_cluster_t *mp_cluster_ref(mp_cluster_t *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void mp_cluster_unref(mp_cluster_t *c)
{
    if (c != NULL && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        mp_config__cluster_free(c);
}

void mp_config_unref(mp_config_t *c)
{
    if (c == NULL)
        return;
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        config_free(c);
}

/* Linear: called at translation time and by the router on a cluster_header route; configs with
 * thousands of clusters will want an index here. */
mp_cluster_t *mp_config_find_cluster(const mp_config_t *c, const char *name)
{
    for (uint32_t i = 0; i < c->n_clusters; i++)
        if (strcmp(c->clusters[i]->name, name) == 0)
            return c->clusters[i];
    return NULL;
}

void mp_locality_clear(mp_locality_t *l)
{
    free(l->region);
    free(l->zone);
    free(l->sub_zone);
    memset(l, 0, sizeof(*l));
}

static bool same_str(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

bool mp_locality_equal(const mp_locality_t *a, const mp_locality_t *b)
{
    return same_str(a->region, b->region) && same_str(a->zone, b->zone) &&
           same_str(a->sub_zone, b->sub_zone);
}
