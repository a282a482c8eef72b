/* The apply path (include/magpie/apply.h).  The main thread diffs the clusters of the old and
 * new snapshots by identity: the translator shares an unchanged cluster's object between them
 * (mp_translate_bootstrap_next), so "same pointer" means "same config, keep its state". */
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "magpie/apply.h"
#include "magpie/dns.h"
#include "magpie/health_check.h"
#include "magpie/log.h"
#include "magpie/outlier.h"
#include "magpie/sds.h"
#include "magpie/stats.h"
#include "magpie/worker.h"

static struct {
    mp_stat_id_t listeners_active, listeners_draining, active_clusters;
    ev_timer draining_done; /* clears listeners_draining after --drain-time-s */
    bool timer_init;
} st;

static bool has_cluster(const mp_config_t *cfg, const mp_cluster_t *c)
{
    for (uint32_t i = 0; i < cfg->n_clusters; i++)
        if (cfg->clusters[i] == c)
            return true;
    return false;
}

/* Clusters of a that b does not list (by identity); the array is new, the clusters borrowed. */
static mp_cluster_t **clusters_missing(const mp_config_t *a, const mp_config_t *b, uint32_t *n)
{
    mp_cluster_t **out = mp_xcalloc(a->n_clusters ? a->n_clusters : 1, sizeof(*out));
    *n = 0;
    for (uint32_t i = 0; i < a->n_clusters; i++)
        if (!has_cluster(b, a->clusters[i]))
            out[(*n)++] = a->clusters[i];
    return out;
}

static const mp_listener_t *find_listener(const mp_config_t *cfg, const char *name)
{
    for (uint32_t i = 0; i < cfg->n_listeners; i++)
        if (strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    return NULL;
}

/* Listeners of old that next removes or changes: their connections drain. */
static uint32_t count_retired(const mp_config_t *old, const mp_config_t *next)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < old->n_listeners; i++) {
        const mp_listener_t *o = &old->listeners[i];
        const mp_listener_t *l = find_listener(next, o->name);
        if (l == NULL || l->pb_len != o->pb_len || memcmp(l->pb, o->pb, o->pb_len) != 0)
            n++;
    }
    return n;
}

static void on_draining_done(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_stats_gauge_set(st.listeners_draining, 0);
}

static void set_gauges(mp_server_t *s, const mp_config_t *cfg, uint32_t retired)
{
    mp_stats_gauge_set(st.listeners_active, cfg->n_listeners);
    mp_stats_gauge_set(st.active_clusters, cfg->n_clusters);
    if (retired == 0 || s->loop == NULL)
        return;
    mp_stats_gauge_set(st.listeners_draining, retired);
    if (!st.timer_init) {
        ev_timer_init(&st.draining_done, on_draining_done, 0., 0.);
        st.timer_init = true;
    }
    ev_timer_stop(s->loop, &st.draining_done);
    ev_timer_set(&st.draining_done, (double)s->opts.drain_time_s + 0.5, 0.);
    ev_timer_start(s->loop, &st.draining_done);
}

void mp_apply_init_stats(mp_server_t *s)
{
    st.listeners_active = mp_stats_gauge("listener_manager.total_listeners_active");
    st.listeners_draining = mp_stats_gauge("listener_manager.total_listeners_draining");
    st.active_clusters = mp_stats_gauge("cluster_manager.active_clusters");
    set_gauges(s, atomic_load(&s->config), 0);
}

/* Removed clusters stop before the new snapshot goes out: their hosts keep the health they
 * have, which in-flight requests on older snapshots still read. */
static void stop_clusters(mp_server_t *s, mp_cluster_t **gone, uint32_t n)
{
    mp_dns_unwatch_clusters(s->dns, gone, n);
    mp_hc_remove_clusters(s->hc, gone, n);
    for (uint32_t i = 0; i < n; i++) {
        mp_outlier_stop(gone[i]);
        mp_log_info("cluster %s removed", gone[i]->name);
    }
}

static void start_clusters(mp_server_t *s, mp_config_t *next, mp_cluster_t **added, uint32_t n)
{
    if (n == 0)
        return;
    mp_dns_watch_clusters(s->dns, added, n, NULL, NULL);
    if (s->hc != NULL)
        mp_hc_add_clusters(s->hc, added, n);
    else
        s->hc = mp_hc_start(s->loop, added, n, NULL, NULL);
    mp_outlier_start_all(s->loop, next, NULL); /* starts only the detectors not running */
    for (uint32_t i = 0; i < n; i++)
        mp_log_info("cluster %s added", added[i]->name);
}

static void restart_sds(mp_server_t *s, mp_config_t *next)
{
    mp_err_t err = {{0}};
    mp_sds_watch_stop();
    if (mp_sds_watch_start(s->loop, next, &err) != 0)
        mp_log_warn("%s; certificates will not rotate", err.msg);
}

void mp_server_apply(mp_server_t *s, mp_config_t *next)
{
    mp_config_t *old = atomic_load(&s->config);
    uint32_t retired = count_retired(old, next);
    if (s->dns != NULL) {
        uint32_t n_gone, n_added;
        mp_cluster_t **gone = clusters_missing(old, next, &n_gone);
        mp_cluster_t **added = clusters_missing(next, old, &n_added);
        stop_clusters(s, gone, n_gone);
        start_clusters(s, next, added, n_added);
        free(gone);
        free(added);
        restart_sds(s, next);
    }
    atomic_store(&s->config, next);
    for (unsigned i = 0; s->workers != NULL && i < s->n_workers; i++)
        if (s->workers[i] != NULL)
            mp_worker_publish(s->workers[i], next);
    set_gauges(s, next, s->workers != NULL ? retired : 0);
    mp_log_info("configuration %llu applied: %u listeners, %u clusters",
                (unsigned long long)next->generation, next->n_listeners, next->n_clusters);
    mp_config_unref(old);
}
