/* Active health checking: sessions per host and health check, following each cluster's host
 * set; thresholds, flags, intervals and stats as Envoy's HealthCheckerImplBase has them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "health_check_internal.h"
#include "magpie/log.h"

/* How often a cluster's host set is compared with the one the sessions follow.  DNS publishes
 * new hosts already failed and pending (mp_hc_initial_flags), so this only bounds how soon a new
 * host gets its first check. */
#define SYNC_INTERVAL 0.2

struct hc_cluster {
    mp_hc_t *hc;
    mp_cluster_t *c;
    mp_hostset_t *hs; /* the set the sessions follow (a ref) */
    mp_hc_session_t *sessions;
    hc_cluster_t *next;
};

struct mp_hc {
    struct ev_loop *loop;
    hc_cluster_t *clusters;
    ev_timer sync;
    ev_timer kick; /* runs on_initial_done from the loop when nothing needs checking */
    uint32_t initial_left;
    mp_hc_initial_done_cb cb;
    void *ctx;
    uint64_t rng;
};

struct ev_loop *mp_hc__loop(const mp_hc_session_t *s)
{
    return s->hcc->hc->loop;
}

const mp_cluster_t *mp_hc__cluster(const mp_hc_session_t *s)
{
    return s->hcc->c;
}

/* xorshift64*: jitter only needs to spread checks, not to be unpredictable. */
static uint64_t rand_below(mp_hc_t *hc, uint64_t n)
{
    if (n == 0)
        return 0;
    hc->rng ^= hc->rng >> 12;
    hc->rng ^= hc->rng << 25;
    hc->rng ^= hc->rng >> 27;
    return (hc->rng * 0x2545F4914F6CDD1Dull) % n;
}

typedef enum transition {
    T_UNCHANGED,
    T_CHANGED,
    T_PENDING, /* counting towards a threshold */
} transition_t;

/* Envoy's HealthCheckerImplBase::interval: the no-traffic intervals until the cluster has made a
 * connection, then by the check's result and whether a threshold is being counted. */
static uint64_t next_interval_ms(mp_hc_session_t *s, bool ok, transition_t t)
{
    const mp_health_check_t *hc = s->hc;
    uint64_t base;
    if (mp_stats_value(s->hcc->c->stats.upstream_cx_total) > 0) {
        if (!ok)
            base = t == T_PENDING ? hc->unhealthy_edge_interval_ms : hc->unhealthy_interval_ms;
        else
            base = t == T_PENDING ? hc->healthy_edge_interval_ms : hc->interval_ms;
    } else {
        base =
            ok && t != T_PENDING ? hc->no_traffic_healthy_interval_ms : hc->no_traffic_interval_ms;
    }
    if (hc->interval_jitter_percent > 0)
        base += rand_below(s->hcc->hc, hc->interval_jitter_percent * base / 100);
    return base + rand_below(s->hcc->hc, hc->interval_jitter_ms);
}

static void update_gauges(hc_cluster_t *hcc)
{
    const mp_hostset_t *hs = hcc->hs;
    int64_t healthy = 0, degraded = 0;
    for (uint32_t i = 0; hs != NULL && i < hs->n; i++) {
        uint32_t f = atomic_load_explicit(&hs->hosts[i].health->flags, memory_order_relaxed);
        healthy += (f & (MP_HEALTH_FAILED_ACTIVE_HC | MP_HEALTH_PENDING_ACTIVE_HC)) == 0;
        degraded += (f & MP_HEALTH_DEGRADED_ACTIVE_HC) != 0;
    }
    mp_stats_gauge_set(hcc->c->health_checks->stats.healthy, healthy);
    mp_stats_gauge_set(hcc->c->health_checks->stats.degraded, degraded);
    mp_stats_gauge_set(hcc->c->stats.membership_healthy, mp_hostset_count_usable(hs));
}

static const char *type_name(const mp_health_check_t *hc)
{
    return hc->kind == MP_HC_HTTP ? "HTTP" : hc->kind == MP_HC_TCP ? "TCP" : "GRPC";
}

/* One line of Envoy's HealthCheckEvent JSON in event_log_path. */
static void log_event(mp_hc_session_t *s, const char *event)
{
    if (s->hc->event_log_fd < 0)
        return;
    char line[1024];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    int n = snprintf(line, sizeof(line),
                     "{\"health_checker_type\":\"%s\",\"host\":{\"socket_address\":{\"address\":"
                     "\"%s\"}},\"cluster_name\":\"%s\",%s,\"timestamp\":\"%04d-%02d-%02dT%02d:%"
                     "02d:%02dZ\"}\n",
                     type_name(s->hc), s->addr.text, s->hcc->c->name, event, tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (n > 0 && (size_t)n < sizeof(line) && write(s->hc->event_log_fd, line, (size_t)n) < 0)
        mp_log_debug("health check event log: write failed");
}

/* The first verdict of a session clears the pending flag, which is itself a change. */
static transition_t clear_pending(mp_hc_session_t *s, transition_t t)
{
    uint32_t before = mp_host_health_set(s->health, MP_HEALTH_PENDING_ACTIVE_HC, false);
    return (before & MP_HEALTH_PENDING_ACTIVE_HC) != 0 ? T_CHANGED : t;
}

static transition_t on_success(mp_hc_session_t *s, bool degraded)
{
    transition_t t = T_UNCHANGED;
    s->n_unhealthy = 0;
    uint32_t f = atomic_load_explicit(&s->health->flags, memory_order_relaxed);
    if (f & MP_HEALTH_FAILED_ACTIVE_HC) {
        /* Envoy: the first answer after a session starts moves the host to healthy at once. */
        if (++s->n_healthy >= s->hc->healthy_threshold || s->first_check) {
            mp_host_health_set(s->health, MP_HEALTH_FAILED_ACTIVE_HC, false);
            t = T_CHANGED;
            char ev[96];
            snprintf(ev, sizeof(ev), "\"add_healthy_event\":{\"first_check\":%s}",
                     s->first_check ? "true" : "false");
            log_event(s, ev);
        } else {
            t = T_PENDING;
        }
    }
    bool was = mp_host_health_set(s->health, MP_HEALTH_DEGRADED_ACTIVE_HC, degraded) &
               MP_HEALTH_DEGRADED_ACTIVE_HC;
    if (was != degraded)
        log_event(s, degraded ? "\"degraded_healthy_host\":{}" : "\"no_longer_degraded_host\":{}");
    mp_stats_inc(s->hcc->c->health_checks->stats.success);
    return clear_pending(s, t);
}

static transition_t on_failure(mp_hc_session_t *s, mp_hc_result_t r, const char *why)
{
    const mp_hc_stats_t *st = &s->hcc->c->health_checks->stats;
    transition_t t = T_UNCHANGED;
    s->n_healthy = 0;
    const char *ft = r == MP_HC_FAIL || r == MP_HC_IMMEDIATE ? "ACTIVE" : "NETWORK";
    char ev[160];
    uint32_t f = atomic_load_explicit(&s->health->flags, memory_order_relaxed);
    if ((f & MP_HEALTH_FAILED_ACTIVE_HC) == 0) {
        if (++s->n_unhealthy >= s->hc->unhealthy_threshold || r == MP_HC_IMMEDIATE) {
            mp_host_health_set(s->health, MP_HEALTH_FAILED_ACTIVE_HC, true);
            t = T_CHANGED;
            snprintf(ev, sizeof(ev), "\"eject_unhealthy_event\":{\"failure_type\":\"%s\"}", ft);
            log_event(s, ev);
            mp_log_info("health check: cluster %s host %s is unhealthy (%s)", s->hcc->c->name,
                        s->addr.text, why);
        } else {
            t = T_PENDING;
        }
    } else if (s->hc->always_log_failures) {
        snprintf(ev, sizeof(ev),
                 "\"health_check_failure_event\":{\"failure_type\":\"%s\",\"first_check\":%s}", ft,
                 s->first_check ? "true" : "false");
        log_event(s, ev);
    }
    mp_host_health_set(s->health, MP_HEALTH_DEGRADED_ACTIVE_HC, false);
    mp_stats_inc(st->failure);
    if (r == MP_HC_NET_FAIL || r == MP_HC_TIMEOUT)
        mp_stats_inc(st->network_failure);
    return clear_pending(s, t);
}

static void initial_one_done(mp_hc_t *hc)
{
    if (hc->initial_left > 0 && --hc->initial_left == 0 && hc->cb != NULL) {
        mp_hc_initial_done_cb cb = hc->cb;
        hc->cb = NULL;
        cb(hc->ctx);
    }
}

void mp_hc__done(mp_hc_session_t *s, mp_hc_result_t r, const char *why)
{
    struct ev_loop *loop = mp_hc__loop(s);
    ev_timer_stop(loop, &s->timeout);
    s->busy = false;
    bool ok = r == MP_HC_OK;
    mp_log_debug("health check: cluster %s host %s: %s", s->hcc->c->name, s->addr.text,
                 ok ? "ok" : why);
    transition_t t = ok ? on_success(s, s->degraded) : on_failure(s, r, why);
    s->first_check = false;
    if (!ok || !s->hc->reuse_connection || s->close_after)
        mp_hc__close(s);
    if (t == T_CHANGED)
        update_gauges(s->hcc);
    ev_timer_set(&s->tick, (double)next_interval_ms(s, ok, t) / 1000.0, 0.0);
    ev_timer_start(loop, &s->tick);
    if (s->initial) {
        s->initial = false;
        initial_one_done(s->hcc->hc);
    }
}

static void on_check_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    mp_hc_session_t *s = w->data;
    mp_hc__done(s, MP_HC_TIMEOUT, "timeout");
}

static void on_next(struct ev_loop *loop, ev_timer *w, int revents)
{
    mp_hc_session_t *s = w->data;
    mp_stats_inc(s->hcc->c->health_checks->stats.attempt);
    s->busy = true;
    s->verdict = MP_HC_PENDING;
    ev_timer_set(&s->timeout, (double)s->hc->timeout_ms / 1000.0, 0.0);
    ev_timer_start(loop, &s->timeout);
    mp_hc__check(s);
}

static mp_hc_session_t *session_new(hc_cluster_t *hcc, const mp_health_check_t *hc,
                                    const mp_host_t *h, bool initial)
{
    mp_hc_session_t *s = mp_xcalloc(1, sizeof(*s));
    s->hcc = hcc;
    s->hc = hc;
    s->health = mp_host_health_ref(h->health);
    s->addr = h->addr;
    s->sni = h->hostname ? mp_xstrdup(h->hostname) : NULL;
    s->first_check = true;
    s->initial = initial;
    s->tp.fd = -1;
    s->grpc_status = -1;
    mp_buf_init(&s->in);
    mp_buf_init(&s->out);
    ev_timer_init(&s->timeout, on_check_timeout, 0, 0);
    s->timeout.data = s;
    /* Envoy spreads the first checks over initial_jitter. */
    double first = (double)rand_below(hcc->hc, hc->initial_jitter_ms) / 1000.0;
    ev_timer_init(&s->tick, on_next, first, 0);
    s->tick.data = s;
    ev_timer_start(hcc->hc->loop, &s->tick);
    return s;
}

static void session_free(mp_hc_session_t *s)
{
    struct ev_loop *loop = mp_hc__loop(s);
    ev_timer_stop(loop, &s->tick);
    ev_timer_stop(loop, &s->timeout);
    mp_hc__close(s);
    mp_buf_clear(&s->in);
    mp_buf_clear(&s->out);
    mp_host_health_unref(s->health);
    free(s->sni);
    if (s->initial)
        initial_one_done(s->hcc->hc);
    free(s);
}

static mp_hc_session_t *find_session(hc_cluster_t *hcc, const mp_health_check_t *hc,
                                     const mp_host_health_t *h)
{
    for (mp_hc_session_t *s = hcc->sessions; s != NULL; s = s->next)
        if (s->hc == hc && s->health == h)
            return s;
    return NULL;
}

/* Makes the sessions match hs: one per host per health check, found by the host's health record
 * (a DNS refresh that keeps an address keeps its record). */
static void sync_sessions(hc_cluster_t *hcc, mp_hostset_t *hs, bool initial)
{
    for (mp_hc_session_t *s = hcc->sessions; s != NULL; s = s->next)
        s->mark = false;
    const mp_health_checks_t *hcs = hcc->c->health_checks;
    for (uint32_t i = 0; i < hs->n; i++) {
        for (uint32_t k = 0; k < hcs->n; k++) {
            mp_hc_session_t *s = find_session(hcc, &hcs->v[k], hs->hosts[i].health);
            if (s == NULL) {
                s = session_new(hcc, &hcs->v[k], &hs->hosts[i], initial);
                s->next = hcc->sessions;
                hcc->sessions = s;
                hcc->hc->initial_left += initial;
            }
            s->mark = true;
        }
    }
    for (mp_hc_session_t **pp = &hcc->sessions; *pp != NULL;) {
        mp_hc_session_t *s = *pp;
        if (s->mark) {
            pp = &s->next;
            continue;
        }
        *pp = s->next;
        session_free(s);
    }
    mp_hostset_release(hcc->hs);
    hcc->hs = hs;
    update_gauges(hcc);
}

static void on_sync(struct ev_loop *loop, ev_timer *w, int revents)
{
    mp_hc_t *hc = w->data;
    for (hc_cluster_t *hcc = hc->clusters; hcc != NULL; hcc = hcc->next) {
        /* Only the main thread publishes, so comparing the pointer needs no ref. */
        if (atomic_load_explicit(&hcc->c->hosts, memory_order_acquire) != hcc->hs)
            sync_sessions(hcc, mp_cluster_hosts_acquire(hcc->c), false);
    }
}

static void on_kick(struct ev_loop *loop, ev_timer *w, int revents)
{
    mp_hc_t *hc = w->data;
    if (hc->initial_left == 0 && hc->cb != NULL) {
        mp_hc_initial_done_cb cb = hc->cb;
        hc->cb = NULL;
        cb(hc->ctx);
    }
}

/* Starts checking the clusters of clusters[0..n) that have health checks; initial: they belong
 * to the first round that startup waits for. */
static void add_clusters(mp_hc_t *hc, mp_cluster_t **clusters, uint32_t n, bool initial)
{
    for (uint32_t i = 0; i < n; i++) {
        if (clusters[i]->health_checks == NULL || clusters[i]->health_checks->n == 0)
            continue;
        hc_cluster_t *hcc = mp_xcalloc(1, sizeof(*hcc));
        hcc->hc = hc;
        hcc->c = clusters[i];
        hcc->next = hc->clusters;
        hc->clusters = hcc;
        sync_sessions(hcc, mp_cluster_hosts_acquire(hcc->c), initial);
    }
}

mp_hc_t *mp_hc_start(struct ev_loop *loop, mp_cluster_t **clusters, uint32_t n,
                     mp_hc_initial_done_cb on_initial_done, void *ctx)
{
    mp_hc_t *hc = mp_xcalloc(1, sizeof(*hc));
    hc->loop = loop;
    hc->cb = on_initial_done;
    hc->ctx = ctx;
    hc->rng = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ 0x9E3779B97F4A7C15ull;
    add_clusters(hc, clusters, n, true);
    ev_timer_init(&hc->sync, on_sync, SYNC_INTERVAL, SYNC_INTERVAL);
    hc->sync.data = hc;
    ev_timer_start(loop, &hc->sync);
    ev_timer_init(&hc->kick, on_kick, 0, 0);
    hc->kick.data = hc;
    ev_timer_start(loop, &hc->kick);
    return hc;
}

void mp_hc_add_clusters(mp_hc_t *hc, mp_cluster_t **clusters, uint32_t n)
{
    add_clusters(hc, clusters, n, false);
}

static void hc_cluster_free(hc_cluster_t *hcc)
{
    while (hcc->sessions != NULL) {
        mp_hc_session_t *s = hcc->sessions;
        hcc->sessions = s->next;
        session_free(s);
    }
    mp_hostset_release(hcc->hs);
    free(hcc);
}

void mp_hc_remove_clusters(mp_hc_t *hc, mp_cluster_t **clusters, uint32_t n)
{
    for (uint32_t i = 0; hc != NULL && i < n; i++) {
        for (hc_cluster_t **pp = &hc->clusters; *pp != NULL; pp = &(*pp)->next) {
            if ((*pp)->c != clusters[i])
                continue;
            hc_cluster_t *hcc = *pp;
            *pp = hcc->next;
            hc_cluster_free(hcc);
            break;
        }
    }
}

void mp_hc_free(mp_hc_t *hc)
{
    if (hc == NULL)
        return;
    hc->cb = NULL;
    ev_timer_stop(hc->loop, &hc->sync);
    ev_timer_stop(hc->loop, &hc->kick);
    while (hc->clusters != NULL) {
        hc_cluster_t *hcc = hc->clusters;
        hc->clusters = hcc->next;
        hc_cluster_free(hcc);
    }
    free(hc);
}
