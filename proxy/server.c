/* The main thread's server: start-up order, signals, uptime, and graceful shutdown. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

#include "magpie/admin.h"
#include "magpie/apply.h"
#include "magpie/buf.h"
#include "magpie/dns.h"
#include "magpie/ads_client.h"
#include "magpie/file_source.h"
#include "magpie/health_check.h"
#include "magpie/log.h"
#include "magpie/outlier.h"
#include "magpie/sds.h"
#include "magpie/server.h"
#include "magpie/stats.h"
#include "magpie/tls.h"
#include "magpie/worker.h"

mp_server_t *mp_server;

mp_config_t *mp_server_config_acquire(mp_server_t *s)
{
    /* The server's own ref keeps the snapshot alive while we take ours: snapshots change only
     * on the main thread, which is the one calling here (admin) or is quiescent. */
    return mp_config_ref(atomic_load(&s->config));
}

static void on_shutdown_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_server_t *s = t->data;
    for (unsigned i = 0; s->workers != NULL && i < s->n_workers; i++)
        if (s->workers[i] != NULL && !mp_worker_exited(s->workers[i]))
            return;
    ev_timer_stop(loop, t);
    ev_break(loop, EVBREAK_ALL);
}

void mp_server_shutdown(mp_server_t *s)
{
    if (atomic_exchange(&s->draining, true))
        return;
    uint64_t deadline = mp_now_ms() + (uint64_t)s->opts.drain_time_s * 1000;
    mp_log_info("shutting down: draining listeners (up to %us)", s->opts.drain_time_s);
    for (unsigned i = 0; s->workers != NULL && i < s->n_workers; i++)
        if (s->workers[i] != NULL)
            mp_worker_drain(s->workers[i], deadline);
    /* One server per process, so one shutdown timer. */
    static ev_timer tick;
    ev_timer_init(&tick, on_shutdown_tick, 0.02, 0.02);
    tick.data = s;
    ev_timer_start(s->loop, &tick);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    mp_log_info("caught %s", strsignal(w->signum));
    mp_server_shutdown(w->data);
}

static void on_uptime(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_server_t *s = t->data;
    mp_stats_gauge_set(s->stats.uptime, (int64_t)((mp_now_ms() - s->start_ms) / 1000));
    mp_stats_gauge_set(s->stats.live_slices, (int64_t)mp_slice_live_count());
}

static void stats_inc(mp_stat_id_t id)
{
    mp_stats_inc(id);
}

static const mp_dns_stats_hooks_t dns_stats_hooks = {
    .inc = stats_inc,
    .gauge_set = mp_stats_gauge_set,
};

static void register_server_stats(mp_server_t *s)
{
    s->stats.live = mp_stats_gauge("server.live");
    s->stats.uptime = mp_stats_gauge("server.uptime");
    s->stats.concurrency = mp_stats_gauge("server.concurrency");
    s->stats.state = mp_stats_gauge("server.state");
    s->stats.total_connections = mp_stats_gauge("server.total_connections");
    s->stats.healthcheck_failed = mp_stats_gauge("server.healthcheck_failed");
    s->stats.live_slices = mp_stats_gauge("server.live_slices");
    mp_stats_gauge_set(s->stats.concurrency, s->n_workers);
    mp_stats_gauge_set(s->stats.live, 1);
}

static int start_workers(mp_server_t *s, mp_err_t *err)
{
    mp_config_t *cfg = atomic_load(&s->config);
    s->workers = mp_xcalloc(s->n_workers, sizeof(*s->workers));
    for (unsigned i = 0; i < s->n_workers; i++) {
        s->workers[i] = mp_worker_new(i, cfg, err);
        if (s->workers[i] == NULL)
            return MP_ERROR;
    }
    for (unsigned i = 0; i < s->n_workers; i++)
        if (mp_worker_start(s->workers[i], err) < 0)
            return MP_ERROR;
    for (uint32_t i = 0; i < cfg->n_listeners; i++)
        mp_log_info("listener %s on %s (%u workers)", cfg->listeners[i].name,
                    cfg->listeners[i].addr.text, s->n_workers);
    return 0;
}

/* Listeners open once every cluster has had its first DNS answer and every host its first
 * active health check, as Envoy initialises clusters before it takes traffic. */
static void on_health_ready(void *ctx)
{
    mp_server_t *s = ctx;
    if (atomic_load(&s->draining))
        return;
    mp_err_t err = {{0}};
    if (start_workers(s, &err) < 0) {
        mp_log(MP_LOG_CRITICAL, "cannot start: %s", err.msg);
        exit(1);
    }
    mp_stats_gauge_set(s->stats.state, 0); /* LIVE */
}

/* cluster_manager.outlier_detection.event_log_path of the bootstrap, or NULL. */
static const char *outlier_event_log(const mp_config_t *cfg)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap *b = cfg->bootstrap;
    if (b == NULL || b->cluster_manager == NULL || b->cluster_manager->outlier_detection == NULL)
        return NULL;
    return b->cluster_manager->outlier_detection->event_log_path;
}

static void on_clusters_ready(void *ctx)
{
    mp_server_t *s = ctx;
    if (atomic_load(&s->draining))
        return;
    mp_config_t *cfg = atomic_load(&s->config);
    s->hc = mp_hc_start(s->loop, cfg->clusters, cfg->n_clusters, on_health_ready, s);
}

int mp_server_run(mp_server_t *s, mp_err_t *err)
{
    mp_config_t *cfg = atomic_load(&s->config);
    s->loop = ev_default_loop(EVFLAG_AUTO);
    s->start_ms = mp_now_ms();
    register_server_stats(s);
    mp_stats_gauge_set(s->stats.state, 2); /* PRE_INITIALIZING */
    signal(SIGPIPE, SIG_IGN);
    ev_signal sigterm, sigint;
    ev_signal_init(&sigterm, on_signal, SIGTERM);
    ev_signal_init(&sigint, on_signal, SIGINT);
    sigterm.data = sigint.data = s;
    ev_signal_start(s->loop, &sigterm);
    ev_signal_start(s->loop, &sigint);
    ev_timer uptime;
    ev_timer_init(&uptime, on_uptime, 1.0, 1.0);
    uptime.data = s;
    ev_timer_start(s->loop, &uptime);
    /* Dynamic resources from files join the first snapshot before anything uses it. */
    if (mp_file_source_start(s, err) != 0)
        return MP_ERROR;
    cfg = atomic_load(&s->config);
    mp_apply_init_stats(s);
    if (cfg->has_admin && mp_admin_start(s, &cfg->admin_addr, err) < 0)
        return MP_ERROR;
    s->dns = mp_dns_new(s->loop, NULL, err);
    if (s->dns == NULL)
        return MP_ERROR;
    mp_dns_set_stats_hooks(s->dns, &dns_stats_hooks);
    mp_err_t werr = {{0}};
    if (mp_sds_watch_start(s->loop, cfg, &werr) != 0) /* serving without rotation beats not */
        mp_log_warn("%s; certificates will not rotate", werr.msg);
    mp_outlier_start_all(s->loop, cfg, outlier_event_log(cfg));
    mp_dns_watch_clusters(s->dns, cfg->clusters, cfg->n_clusters, on_clusters_ready, s);
    if (mp_ads_start(s, err) != 0)
        return MP_ERROR;
    ev_run(s->loop, 0);
    for (unsigned i = 0; s->workers != NULL && i < s->n_workers; i++)
        if (s->workers[i] != NULL)
            mp_worker_join(s->workers[i]);
    free(s->workers);
    s->workers = NULL;
    mp_ads_stop();
    mp_file_source_stop();
    cfg = atomic_load(&s->config); /* updates may have replaced it */
    if (cfg->has_admin)
        mp_admin_stop(s);
    mp_sds_watch_stop();
    mp_outlier_stop_all(cfg);
    mp_hc_free(s->hc);
    s->hc = NULL;
    mp_dns_free(s->dns);
    s->dns = NULL;
    mp_log_info("exiting");
    return 0;
}
