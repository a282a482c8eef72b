/* Outlier detection at run time: workers' reports, the main thread's ejection decisions, the
 * interval sweep (success rate, failure percentage, unejection), stats and the event log.
 *
 * Workers only touch atomics in the host's mp_outlier_host_t.  Every decision, every flag change
 * and every non-atomic field belongs to the main thread, so no lock is needed: a worker that sees
 * a consecutive counter reach its threshold sets a pending bit and wakes the main thread, which
 * usually runs the decision well under a millisecond later. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "magpie/lb.h"
#include "magpie/log.h"
#include "magpie/outlier.h"
#include "magpie/stream_info.h"
#include "outlier_internal.h"

#define RELAXED memory_order_relaxed

static const char *const type_names[MP_OUTLIER_TYPE_COUNT] = {"CONSECUTIVE_5XX",
                                                              "CONSECUTIVE_GATEWAY_FAILURE",
                                                              "SUCCESS_RATE",
                                                              "CONSECUTIVE_LOCAL_ORIGIN_FAILURE",
                                                              "SUCCESS_RATE_LOCAL_ORIGIN",
                                                              "FAILURE_PERCENTAGE",
                                                              "FAILURE_PERCENTAGE_LOCAL_ORIGIN"};

static const char *const stat_names[MP_OUTLIER_TYPE_COUNT] = {"consecutive_5xx",
                                                              "consecutive_gateway_failure",
                                                              "success_rate",
                                                              "consecutive_local_origin_failure",
                                                              "local_origin_success_rate",
                                                              "failure_percentage",
                                                              "local_origin_failure_percentage"};

/* One server per process, so one event log. */
static int event_fd = -1;

/* ---- construction ---- */

mp_outlier_t *mp_outlier_new(mp_cluster_t *c, const mp_outlier_config_t *cfg, const char *stat_name)
{
    mp_outlier_t *od = mp_xcalloc(1, sizeof(*od));
    od->cfg = *cfg;
    od->cluster = c;
    od->sr_average = od->sr_threshold = od->local_sr_average = od->local_sr_threshold = -1;
    atomic_init(&od->started, false);
    const char *p = stat_name;
    mp_outlier_stats_t *s = &od->stats;
    s->ejections_active = mp_stats_gaugef("cluster.%s.outlier_detection.ejections_active", p);
    s->ejections_total = mp_stats_counterf("cluster.%s.outlier_detection.ejections_total", p);
    s->ejections_enforced_total =
        mp_stats_counterf("cluster.%s.outlier_detection.ejections_enforced_total", p);
    s->ejections_overflow = mp_stats_counterf("cluster.%s.outlier_detection.ejections_overflow", p);
    for (int t = 0; t < MP_OUTLIER_TYPE_COUNT; t++) {
        s->enforced[t] = mp_stats_counterf("cluster.%s.outlier_detection.ejections_enforced_%s", p,
                                           stat_names[t]);
        s->detected[t] = mp_stats_counterf("cluster.%s.outlier_detection.ejections_detected_%s", p,
                                           stat_names[t]);
    }
    return od;
}

void mp_outlier_free(mp_outlier_t *od)
{
    free(od);
}

/* ---- workers' reports ---- */

static void wake(mp_outlier_t *od)
{
    if (atomic_load_explicit(&od->started, memory_order_acquire))
        ev_async_send(od->loop, &od->wake);
}

static void zero(atomic_uint *a)
{
    /* Skip the store when already zero: a shared cache line written on every success by every
     * worker would bounce between cores. */
    if (atomic_load_explicit(a, RELAXED) != 0)
        atomic_store_explicit(a, 0, RELAXED);
}

/* Exactly one report sees the counter reach the threshold, so one wake-up per bout. */
static void count_failure(mp_outlier_t *od, mp_outlier_host_t *oh, atomic_uint *ctr,
                          uint32_t threshold, mp_outlier_type_t type)
{
    if (atomic_fetch_add_explicit(ctr, 1, RELAXED) + 1 != threshold)
        return;
    atomic_fetch_or_explicit(&oh->pending, 1u << type, RELAXED);
    wake(od);
}

static void put_status(mp_outlier_t *od, mp_outlier_host_t *oh, int code)
{
    atomic_fetch_add_explicit(&oh->ext_total, 1, RELAXED);
    if (code < 500 || code > 599) {
        atomic_fetch_add_explicit(&oh->ext_success, 1, RELAXED);
        zero(&oh->consecutive_5xx);
        zero(&oh->consecutive_gateway);
        return;
    }
    if (code >= 502 && code <= 504)
        count_failure(od, oh, &oh->consecutive_gateway, od->cfg.consecutive_gateway_failure,
                      MP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE);
    else
        zero(&oh->consecutive_gateway);
    count_failure(od, oh, &oh->consecutive_5xx, od->cfg.consecutive_5xx,
                  MP_OUTLIER_CONSECUTIVE_5XX);
}

static void put_local(mp_outlier_t *od, mp_outlier_host_t *oh, bool ok)
{
    atomic_fetch_add_explicit(&oh->local_total, 1, RELAXED);
    if (ok) {
        atomic_fetch_add_explicit(&oh->local_success, 1, RELAXED);
        zero(&oh->consecutive_local);
        return;
    }
    count_failure(od, oh, &oh->consecutive_local, od->cfg.consecutive_local_origin_failure,
                  MP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE);
}

/* Without the split, local-origin events count as the status Envoy maps them to: a failed
 * connect or a reset as 503, a timeout as 504, a finished TCP connect as 200.  An HTTP connect
 * success says nothing about the response that follows, so it is not counted. */
static int mapped_status(mp_outlier_result_t r)
{
    switch (r) {
    case MP_OUTLIER_CONNECT_FAILED:
    case MP_OUTLIER_RESET:
        return 503;
    case MP_OUTLIER_TIMEOUT:
        return 504;
    case MP_OUTLIER_CONNECT_SUCCESS_FINAL:
        return 200;
    default:
        return 0;
    }
}

void mp_outlier_report(mp_cluster_t *c, const mp_host_t *h, mp_outlier_result_t r)
{
    mp_outlier_t *od = c != NULL ? c->outlier : NULL;
    if (od == NULL || h == NULL || h->health == NULL || r == 0)
        return;
    mp_outlier_host_t *oh = &h->health->outlier;
    bool split = od->cfg.split_external_local_origin_errors;
    if (r > 0) {
        /* A response means the connection worked: that is the split mode's local success. */
        if (split)
            put_local(od, oh, true);
        put_status(od, oh, r);
        return;
    }
    if (!split) {
        int code = mapped_status(r);
        if (code != 0)
            put_status(od, oh, code);
        return;
    }
    put_local(od, oh, r == MP_OUTLIER_CONNECT_SUCCESS || r == MP_OUTLIER_CONNECT_SUCCESS_FINAL);
}

mp_outlier_result_t mp_outlier_result_of_flag(uint32_t rf)
{
    if (rf & MP_RF_UPSTREAM_CONNECT_FAIL)
        return MP_OUTLIER_CONNECT_FAILED;
    if (rf & MP_RF_UPSTREAM_TIMEOUT)
        return MP_OUTLIER_TIMEOUT;
    if (rf & (MP_RF_UPSTREAM_RESET | MP_RF_UPSTREAM_CONN_TERM | MP_RF_UPSTREAM_PROTOCOL_ERROR))
        return MP_OUTLIER_RESET;
    return 0; /* not the host's doing (overflow, downstream reset, ...) */
}

/* ---- the event log ---- */

static void add_timestamp(cJSON *o)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char buf[40], out[48];
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, sizeof(out), "%s.%03ldZ", buf, ts.tv_nsec / 1000000);
    cJSON_AddStringToObject(o, "timestamp", out);
}

typedef struct sr_info {
    double host, average, threshold; /* host < 0: not a success-rate event */
} sr_info_t;

static void add_detail(cJSON *o, mp_outlier_type_t type, const sr_info_t *sr)
{
    cJSON *d = cJSON_CreateObject();
    const char *key = "eject_consecutive_event";
    if (sr != NULL &&
        (type == MP_OUTLIER_SUCCESS_RATE || type == MP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN)) {
        key = "eject_success_rate_event";
        cJSON_AddNumberToObject(d, "host_success_rate", (int)sr->host);
        cJSON_AddNumberToObject(d, "cluster_average_success_rate", (int)sr->average);
        cJSON_AddNumberToObject(d, "cluster_success_rate_ejection_threshold", (int)sr->threshold);
    } else if (sr != NULL) {
        key = "eject_failure_percentage_event";
        cJSON_AddNumberToObject(d, "host_success_rate", (int)sr->host);
    }
    cJSON_AddItemToObject(o, key, d);
}

/* One JSON line per action, appended (O_APPEND: whole lines even if another process shares the
 * file).  A failed write is dropped: the log is for people, ejection goes on without it. */
static void log_event(mp_outlier_t *od, const mp_host_t *h, mp_outlier_type_t type, bool eject,
                      bool enforced, const sr_info_t *sr, uint64_t last_ms, uint64_t now)
{
    if (event_fd < 0)
        return;
    const mp_outlier_host_t *oh = &h->health->outlier;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type_names[type]);
    add_timestamp(o);
    if (last_ms != 0) {
        char secs[24];
        snprintf(secs, sizeof(secs), "%llu", (unsigned long long)((now - last_ms) / 1000));
        cJSON_AddStringToObject(o, "secs_since_last_action", secs);
    }
    cJSON_AddStringToObject(o, "cluster_name", od->cluster->name);
    cJSON_AddStringToObject(o, "upstream_url", h->addr.text);
    cJSON_AddStringToObject(o, "action", eject ? "EJECT" : "UNEJECT");
    cJSON_AddNumberToObject(o, "num_ejections", oh->num_ejections);
    if (eject) {
        cJSON_AddBoolToObject(o, "enforced", enforced);
        add_detail(o, type, sr);
    }
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    size_t n = strlen(line);
    line[n] = '\n';
    ssize_t w = write(event_fd, line, n + 1);
    (void)w;
    free(line);
}

/* ---- decisions (main thread) ---- */

int mp_outlier__event_fd(void)
{
    return event_fd;
}

void mp_outlier__set_event_fd(int fd)
{
    event_fd = fd;
}

void mp_outlier__detected(mp_outlier_t *od, mp_outlier_type_t type)
{
    mp_stats_inc(od->stats.detected[type]);
}

bool mp_outlier__is_ejected(const mp_host_t *h)
{
    return (atomic_load(&h->health->flags) & MP_HEALTH_FAILED_OUTLIER_CHECK) != 0;
}

static uint32_t count_ejected(const mp_hostset_t *hs)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < hs->n; i++)
        n += mp_outlier__is_ejected(&hs->hosts[i]);
    return n;
}

void mp_outlier__set_active_gauge(mp_outlier_t *od, const mp_hostset_t *hs)
{
    mp_stats_gauge_set(od->stats.ejections_active, count_ejected(hs));
}

static void enforce(mp_outlier_t *od, const mp_host_t *h, mp_outlier_type_t type, uint64_t now)
{
    mp_outlier_host_t *oh = &h->health->outlier;
    mp_host_health_set(h->health, MP_HEALTH_FAILED_OUTLIER_CHECK, true);
    mp_stats_inc(od->stats.ejections_enforced_total);
    mp_stats_inc(od->stats.enforced[type]);
    oh->num_ejections++;
    oh->backoff = mp_outlier_backoff_after_eject(&od->cfg, oh->backoff);
    oh->jitter_ms = (uint32_t)(mp_random() % (od->cfg.max_ejection_time_jitter_ms + 1));
    oh->last_type = type;
    mp_log_info("outlier_detection: cluster %s: ejected host %s (%s, ejection %u, for %llums)",
                od->cluster->name, h->addr.text, stat_names[type], oh->num_ejections,
                (unsigned long long)mp_outlier_ejection_ms(&od->cfg, oh->backoff, oh->jitter_ms));
}

/* Envoy's ejectHost: the max_ejection_percent check, then the enforcing_* draw. */
void mp_outlier__eject(mp_outlier_t *od, const mp_hostset_t *hs, const mp_host_t *h,
                       mp_outlier_type_t type, double host_rate, double average, double threshold)
{
    sr_info_t info = {host_rate, average, threshold};
    const sr_info_t *sr = host_rate >= 0 ? &info : NULL;
    if (mp_outlier__is_ejected(h))
        return;
    if (!mp_outlier_may_eject(count_ejected(hs), hs->n, od->cfg.max_ejection_percent,
                              od->cfg.always_eject_one_host)) {
        mp_stats_inc(od->stats.ejections_overflow);
        return;
    }
    mp_stats_inc(od->stats.ejections_total);
    uint64_t now = mp_now_ms();
    mp_outlier_host_t *oh = &h->health->outlier;
    uint64_t last = oh->ejected_ms > oh->unejected_ms ? oh->ejected_ms : oh->unejected_ms;
    bool enforced = mp_random() % 100 < od->cfg.enforcing[type];
    if (enforced) {
        enforce(od, h, type, now);
        oh->ejected_ms = now;
    }
    log_event(od, h, type, true, enforced, sr, last, now);
}

static void reset_counter(mp_outlier_host_t *oh, mp_outlier_type_t type)
{
    if (type == MP_OUTLIER_CONSECUTIVE_5XX)
        atomic_store_explicit(&oh->consecutive_5xx, 0, RELAXED);
    else if (type == MP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE)
        atomic_store_explicit(&oh->consecutive_gateway, 0, RELAXED);
    else
        atomic_store_explicit(&oh->consecutive_local, 0, RELAXED);
}

/* A worker crossed a consecutive threshold.  The counter is reset whatever the outcome, so that
 * a host kept in (max_ejection_percent, enforcing_*) is judged again on a fresh bout. */
void mp_outlier__on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    mp_outlier_t *od = w->data;
    mp_hostset_t *hs = mp_cluster_hosts_acquire(od->cluster);
    for (uint32_t i = 0; i < hs->n; i++) {
        const mp_host_t *h = &hs->hosts[i];
        mp_outlier_host_t *oh = &h->health->outlier;
        uint32_t pending = atomic_exchange_explicit(&oh->pending, 0, RELAXED);
        for (int t = 0; pending != 0 && t < MP_OUTLIER_TYPE_COUNT; t++) {
            if ((pending & (1u << t)) == 0)
                continue;
            if (!mp_outlier__is_ejected(h)) {
                mp_stats_inc(od->stats.detected[t]);
                mp_outlier__eject(od, hs, h, (mp_outlier_type_t)t, -1, -1, -1);
            }
            reset_counter(oh, (mp_outlier_type_t)t);
        }
    }
    mp_outlier__set_active_gauge(od, hs);
    mp_hostset_release(hs);
}

/* Envoy's checkHostForUneject.  A host that stays in service for an interval after its last
 * return sheds one step of its ejection multiplier per interval. */
void mp_outlier__check_uneject(mp_outlier_t *od, const mp_host_t *h, uint64_t now)
{
    mp_outlier_host_t *oh = &h->health->outlier;
    if (!mp_outlier__is_ejected(h)) {
        if (oh->unejected_ms != 0 && now - oh->unejected_ms >= od->cfg.interval_ms &&
            oh->backoff > 0)
            oh->backoff--;
        return;
    }
    if (now - oh->ejected_ms < mp_outlier_ejection_ms(&od->cfg, oh->backoff, oh->jitter_ms))
        return;
    mp_host_health_set(h->health, MP_HEALTH_FAILED_OUTLIER_CHECK, false);
    /* A counter left near its threshold would re-eject the host on its first new error. */
    atomic_store_explicit(&oh->consecutive_5xx, 0, RELAXED);
    atomic_store_explicit(&oh->consecutive_gateway, 0, RELAXED);
    atomic_store_explicit(&oh->consecutive_local, 0, RELAXED);
    uint64_t last = oh->ejected_ms;
    oh->unejected_ms = now;
    mp_log_info("outlier_detection: cluster %s: host %s returned to service", od->cluster->name,
                h->addr.text);
    log_event(od, h, (mp_outlier_type_t)oh->last_type, false, false, NULL, last, now);
}
