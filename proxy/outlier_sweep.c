/* Outlier detection's interval sweep (main thread): unejection, then success-rate and
 * failure-percentage detection over the counts workers gathered since the last sweep; and the
 * detectors' start and stop. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "magpie/log.h"
#include "magpie/outlier.h"
#include "outlier_internal.h"

#define RELAXED memory_order_relaxed

/* Which counters a sweep reads, and what it ejects for. */
typedef struct sweep_kind {
    bool local;
    mp_outlier_type_t sr_type, fp_type;
} sweep_kind_t;

typedef struct candidate {
    const mp_host_t *host;
    double rate;
} candidate_t;

/* Takes the interval's counts (leaving zero for the next), and returns the host's success rate
 * in percent with its volume, or -1 when it had no requests. */
static double take_rate(mp_outlier_host_t *oh, bool local, uint32_t *volume)
{
    uint32_t total =
        atomic_exchange_explicit(local ? &oh->local_total : &oh->ext_total, 0, RELAXED);
    uint32_t ok =
        atomic_exchange_explicit(local ? &oh->local_success : &oh->ext_success, 0, RELAXED);
    *volume = total;
    if (total == 0)
        return -1;
    if (ok > total) /* a success counted after its total was taken */
        ok = total;
    return 100.0 * ok / total;
}

static void sweep_success_rate(mp_outlier_t *od, const mp_hostset_t *hs, const sweep_kind_t *k,
                               candidate_t *v, uint32_t n)
{
    double *rates = mp_xcalloc(n, sizeof(*rates));
    for (uint32_t i = 0; i < n; i++)
        rates[i] = v[i].rate;
    mp_outlier_sr_t sr = mp_outlier_sr_threshold(rates, n, od->cfg.success_rate_stdev_factor);
    free(rates);
    *(k->local ? &od->local_sr_average : &od->sr_average) = sr.mean;
    *(k->local ? &od->local_sr_threshold : &od->sr_threshold) = sr.threshold;
    for (uint32_t i = 0; i < n; i++) {
        if (v[i].rate >= sr.threshold)
            continue;
        mp_outlier__detected(od, k->sr_type);
        mp_outlier__eject(od, hs, v[i].host, k->sr_type, v[i].rate, sr.mean, sr.threshold);
    }
}

static void sweep_failure_percentage(mp_outlier_t *od, const mp_hostset_t *hs,
                                     const sweep_kind_t *k, candidate_t *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (!mp_outlier_fails_percentage(v[i].rate, od->cfg.failure_percentage_threshold))
            continue;
        mp_outlier__detected(od, k->fp_type);
        mp_outlier__eject(od, hs, v[i].host, k->fp_type, v[i].rate, -1, -1);
    }
}

/* Envoy's processSuccessRateEjections: hosts already ejected, or with too few requests this
 * interval, take no part; each check needs its minimum number of hosts with enough volume. */
static void sweep(mp_outlier_t *od, const mp_hostset_t *hs, const sweep_kind_t *k)
{
    const mp_outlier_config_t *cfg = &od->cfg;
    candidate_t *sr = mp_xcalloc(hs->n + 1, sizeof(*sr));
    candidate_t *fp = mp_xcalloc(hs->n + 1, sizeof(*fp));
    uint32_t n_sr = 0, n_fp = 0;
    *(k->local ? &od->local_sr_average : &od->sr_average) = -1;
    *(k->local ? &od->local_sr_threshold : &od->sr_threshold) = -1;
    for (uint32_t i = 0; i < hs->n; i++) {
        const mp_host_t *h = &hs->hosts[i];
        mp_outlier_host_t *oh = &h->health->outlier;
        uint32_t volume;
        double rate = take_rate(oh, k->local, &volume);
        double *shown = k->local ? &oh->local_success_rate : &oh->success_rate;
        *shown = -1;
        if (rate < 0 || mp_outlier__is_ejected(h))
            continue;
        if (volume >= cfg->success_rate_request_volume) {
            sr[n_sr++] = (candidate_t){h, rate};
            *shown = rate;
        }
        if (volume >= cfg->failure_percentage_request_volume)
            fp[n_fp++] = (candidate_t){h, rate};
    }
    if (n_sr > 0 && n_sr >= cfg->success_rate_minimum_hosts)
        sweep_success_rate(od, hs, k, sr, n_sr);
    if (n_fp > 0 && n_fp >= cfg->failure_percentage_minimum_hosts)
        sweep_failure_percentage(od, hs, k, fp, n_fp);
    free(sr);
    free(fp);
}

static void on_interval(struct ev_loop *loop, ev_timer *t, int revents)
{
    static const sweep_kind_t external = {false, MP_OUTLIER_SUCCESS_RATE,
                                          MP_OUTLIER_FAILURE_PERCENTAGE};
    static const sweep_kind_t local = {true, MP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN,
                                       MP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN};
    mp_outlier_t *od = t->data;
    mp_hostset_t *hs = mp_cluster_hosts_acquire(od->cluster);
    uint64_t now = mp_now_ms();
    for (uint32_t i = 0; i < hs->n; i++)
        mp_outlier__check_uneject(od, &hs->hosts[i], now);
    sweep(od, hs, &external);
    /* Without the split there are no separate local-origin counts to judge. */
    if (od->cfg.split_external_local_origin_errors)
        sweep(od, hs, &local);
    mp_outlier__set_active_gauge(od, hs);
    mp_hostset_release(hs);
}

void mp_outlier_start_all(struct ev_loop *loop, mp_config_t *cfg, const char *event_log_path)
{
    if (event_log_path != NULL && event_log_path[0] != '\0' && mp_outlier__event_fd() < 0) {
        int fd = open(event_log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0)
            mp_log_warn("outlier_detection: cannot open event_log_path %s", event_log_path);
        mp_outlier__set_event_fd(fd);
    }
    for (uint32_t i = 0; i < cfg->n_clusters; i++) {
        mp_outlier_t *od = cfg->clusters[i]->outlier;
        if (od == NULL || atomic_load(&od->started))
            continue;
        od->loop = loop;
        ev_async_init(&od->wake, mp_outlier__on_wake);
        od->wake.data = od;
        ev_async_start(loop, &od->wake);
        double s = (double)od->cfg.interval_ms / 1000.0;
        ev_timer_init(&od->interval, on_interval, s, s);
        od->interval.data = od;
        ev_timer_start(loop, &od->interval);
        atomic_store_explicit(&od->started, true, memory_order_release);
    }
}

void mp_outlier_stop(mp_cluster_t *c)
{
    mp_outlier_t *od = c->outlier;
    if (od == NULL || !atomic_exchange(&od->started, false))
        return;
    ev_async_stop(od->loop, &od->wake);
    ev_timer_stop(od->loop, &od->interval);
}

void mp_outlier_stop_all(mp_config_t *cfg)
{
    for (uint32_t i = 0; cfg != NULL && i < cfg->n_clusters; i++) {
        mp_outlier_t *od = cfg->clusters[i]->outlier;
        if (od == NULL || !atomic_exchange(&od->started, false))
            continue;
        ev_async_stop(od->loop, &od->wake);
        ev_timer_stop(od->loop, &od->interval);
    }
    int fd = mp_outlier__event_fd();
    if (fd >= 0)
        close(fd);
    mp_outlier__set_event_fd(-1);
}
