/* Outlier detection (Cluster.outlier_detection): passive health checking as Envoy does it.
 *
 * Workers report how each upstream attempt ended (mp_outlier_report).  Consecutive-failure
 * counters live in each host's mp_host_health_t; when a report makes one reach its threshold the
 * worker wakes the main thread (ev_async), which decides at once (max_ejection_percent, the
 * enforcing_* draw) and sets MP_HEALTH_FAILED_OUTLIER_CHECK.  Every interval the main thread
 * runs success-rate and failure-percentage detection over the interval's counts and returns
 * hosts whose ejection time has passed. */
#ifndef MAGPIE_OUTLIER_H
#define MAGPIE_OUTLIER_H

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "magpie/config.h"
#include "magpie/stats.h"

/* Ejection types, in Envoy's OutlierEjectionType order (the event log's "type"). */
typedef enum mp_outlier_type {
    MP_OUTLIER_CONSECUTIVE_5XX,
    MP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE,
    MP_OUTLIER_SUCCESS_RATE,
    MP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
    MP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN,
    MP_OUTLIER_FAILURE_PERCENTAGE,
    MP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN,
    MP_OUTLIER_TYPE_COUNT,
} mp_outlier_type_t;

/* How an upstream attempt ended: an HTTP status (100..599), or one of these local-origin
 * events.  CONNECT_SUCCESS is an HTTP connection that will carry a request (its status is
 * reported too); CONNECT_SUCCESS_FINAL is a TCP proxy connection, which has nothing more. */
typedef int32_t mp_outlier_result_t;
enum {
    MP_OUTLIER_CONNECT_FAILED = -1,
    MP_OUTLIER_TIMEOUT = -2,
    MP_OUTLIER_RESET = -3,
    MP_OUTLIER_CONNECT_SUCCESS = -4,
    MP_OUTLIER_CONNECT_SUCCESS_FINAL = -5,
};

/* OutlierDetection, with Envoy's defaults (mp_outlier_config_default). */
typedef struct mp_outlier_config {
    uint64_t interval_ms;                       /* 10000 */
    uint64_t base_ejection_time_ms;             /* 30000 */
    uint64_t max_ejection_time_ms;              /* 300000 */
    uint64_t max_ejection_time_jitter_ms;       /* 0 */
    uint32_t max_ejection_percent;              /* 10 */
    uint32_t consecutive_5xx;                   /* 5 */
    uint32_t consecutive_gateway_failure;       /* 5 */
    uint32_t consecutive_local_origin_failure;  /* 5 */
    uint32_t enforcing[MP_OUTLIER_TYPE_COUNT];  /* 100, 0, 100, 100, 100, 0, 0 */
    uint32_t success_rate_minimum_hosts;        /* 5 */
    uint32_t success_rate_request_volume;       /* 100 */
    uint32_t success_rate_stdev_factor;         /* 1900: the factor times 1000 */
    uint32_t failure_percentage_threshold;      /* 85 */
    uint32_t failure_percentage_minimum_hosts;  /* 5 */
    uint32_t failure_percentage_request_volume; /* 50 */
    bool split_external_local_origin_errors;    /* false */
    bool always_eject_one_host;                 /* false */
} mp_outlier_config_t;

typedef struct mp_outlier_stats {
    mp_stat_id_t ejections_active, ejections_total, ejections_enforced_total, ejections_overflow;
    mp_stat_id_t enforced[MP_OUTLIER_TYPE_COUNT], detected[MP_OUTLIER_TYPE_COUNT];
} mp_outlier_stats_t;

/* One cluster's detector, owned by its mp_cluster_t (c->outlier). */
typedef struct mp_outlier {
    mp_outlier_config_t cfg;
    mp_cluster_t *cluster; /* back pointer, not a ref */
    mp_outlier_stats_t stats;
    struct ev_loop *loop; /* the main thread's, while started */
    ev_async wake;        /* a worker saw a consecutive threshold crossed */
    ev_timer interval;
    atomic_bool started;
    int event_fd; /* event_log_path, or -1 */
    /* Last success-rate sweep, for /clusters; -1 when not computed. */
    double sr_average, sr_threshold, local_sr_average, local_sr_threshold;
} mp_outlier_t;

void mp_outlier_config_default(mp_outlier_config_t *cfg);

/* A detector for c with cfg; registers cluster.<stat_name>.outlier_detection.* stats.  Main
 * thread, at translation.  Freed by mp_outlier_free (stopped first). */
mp_outlier_t *mp_outlier_new(mp_cluster_t *c, const mp_outlier_config_t *cfg,
                             const char *stat_name);
void mp_outlier_free(mp_outlier_t *od);

/* Starts (stops) the detectors of every cluster of cfg on the main loop.  event_log_path may be
 * NULL or "" for none; events are appended as JSON lines.  Main thread. */
void mp_outlier_start_all(struct ev_loop *loop, mp_config_t *cfg, const char *event_log_path);
void mp_outlier_stop_all(mp_config_t *cfg);
/* Stops one cluster's detector (a cluster a configuration update removed).  Main thread. */
void mp_outlier_stop(mp_cluster_t *c);

/* Records how an attempt to h (a host of c's current or recent set) ended.  No-op when c has no
 * outlier_detection.  Worker (any thread); lock-free; may wake the main thread. */
void mp_outlier_report(mp_cluster_t *c, const mp_host_t *h, mp_outlier_result_t r);

/* The outlier result for an upstream failure's response flag (MP_RF_*), or 0 when the flag is
 * not the host's doing (then report nothing). */
mp_outlier_result_t mp_outlier_result_of_flag(uint32_t rf);

/* ---- pure arithmetic (unit-tested) ---- */

/* Success rate (percent) of hosts[0..n): mean, population standard deviation, and the ejection
 * threshold mean - stdev_factor/1000 * stdev.  n > 0. */
typedef struct mp_outlier_sr {
    double mean, stdev, threshold;
} mp_outlier_sr_t;
mp_outlier_sr_t mp_outlier_sr_threshold(const double *rates, uint32_t n, uint32_t stdev_factor);

/* Whether one more ejection fits: (active + 1) / n_hosts <= max_percent, or none is active and
 * always_eject_one_host. */
bool mp_outlier_may_eject(uint32_t active, uint32_t n_hosts, uint32_t max_percent, bool always_one);

/* How long an ejection lasts for multiplier backoff: min(base * backoff, max), plus jitter. */
uint64_t mp_outlier_ejection_ms(const mp_outlier_config_t *cfg, uint32_t backoff,
                                uint32_t jitter_ms);

/* The multiplier after an ejection: grows by one while base * backoff < max + base. */
uint32_t mp_outlier_backoff_after_eject(const mp_outlier_config_t *cfg, uint32_t backoff);

/* Whether a host with success_rate (percent) fails the failure-percentage check. */
bool mp_outlier_fails_percentage(double success_rate, uint32_t threshold);

/* Envoy's health_flags text for flags ("healthy" when none), into buf. */
const char *mp_outlier_health_flags(uint32_t flags, char *buf, size_t len);

#endif
