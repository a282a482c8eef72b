/* Outlier detection's arithmetic: success-rate threshold, failure percentage, ejection time
 * growth and cap, max_ejection_percent, health_flags text; and the workers' counters. */
#include <math.h>

#include "magpie/outlier.h"
#include "magpie/stats.h"
#include "unit.h"

static bool near(double a, double b)
{
    return fabs(a - b) < 1e-9;
}

static void test_defaults_are_envoys(void)
{
    mp_outlier_config_t c;
    mp_outlier_config_default(&c);
    CHECK_INT(c.interval_ms, 10000);
    CHECK_INT(c.base_ejection_time_ms, 30000);
    CHECK_INT(c.max_ejection_time_ms, 300000);
    CHECK_INT(c.max_ejection_percent, 10);
    CHECK_INT(c.consecutive_5xx, 5);
    CHECK_INT(c.consecutive_gateway_failure, 5);
    CHECK_INT(c.consecutive_local_origin_failure, 5);
    CHECK_INT(c.enforcing[MP_OUTLIER_CONSECUTIVE_5XX], 100);
    CHECK_INT(c.enforcing[MP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE], 0);
    CHECK_INT(c.enforcing[MP_OUTLIER_SUCCESS_RATE], 100);
    CHECK_INT(c.enforcing[MP_OUTLIER_FAILURE_PERCENTAGE], 0);
    CHECK_INT(c.success_rate_minimum_hosts, 5);
    CHECK_INT(c.success_rate_request_volume, 100);
    CHECK_INT(c.success_rate_stdev_factor, 1900);
    CHECK_INT(c.failure_percentage_threshold, 85);
    CHECK_INT(c.failure_percentage_minimum_hosts, 5);
    CHECK_INT(c.failure_percentage_request_volume, 50);
}

/* Five hosts, one at 50 %: mean 90, population stdev 20, threshold 90 - 1.9 * 20 = 52. */
static void test_success_rate_threshold(void)
{
    double r[] = {100, 100, 100, 100, 50};
    mp_outlier_sr_t sr = mp_outlier_sr_threshold(r, 5, 1900);
    CHECK(near(sr.mean, 90));
    CHECK(near(sr.stdev, 20));
    CHECK(near(sr.threshold, 52));
    CHECK(r[4] < sr.threshold);
    /* A milder factor (1.0) and a host at 85 %: mean 97, stdev 6, threshold 91. */
    double q[] = {100, 100, 100, 100, 85};
    sr = mp_outlier_sr_threshold(q, 5, 1000);
    CHECK(near(sr.mean, 97));
    CHECK(near(sr.stdev, 6));
    CHECK(near(sr.threshold, 91));
    /* All equal: stdev 0, threshold = mean, and nobody is strictly below it. */
    double e[] = {80, 80, 80};
    sr = mp_outlier_sr_threshold(e, 3, 1900);
    CHECK(near(sr.stdev, 0) && near(sr.threshold, 80));
}

static void test_failure_percentage(void)
{
    CHECK(mp_outlier_fails_percentage(15, 85)); /* 85 % failing: at the threshold ejects */
    CHECK(mp_outlier_fails_percentage(0, 85));
    CHECK(!mp_outlier_fails_percentage(15.1, 85));
    CHECK(!mp_outlier_fails_percentage(100, 85));
    CHECK(mp_outlier_fails_percentage(100, 0));
}

static void test_ejection_time_grows_and_caps(void)
{
    mp_outlier_config_t c;
    mp_outlier_config_default(&c); /* base 30 s, max 300 s */
    uint32_t b = 0;
    uint64_t want[] = {30000, 60000, 90000};
    for (int i = 0; i < 3; i++) {
        b = mp_outlier_backoff_after_eject(&c, b);
        CHECK_INT(b, i + 1);
        CHECK_INT(mp_outlier_ejection_ms(&c, b, 0), want[i]);
    }
    for (int i = 0; i < 20; i++)
        b = mp_outlier_backoff_after_eject(&c, b);
    /* Grows while base * backoff < max + base: stops at 11, and the time is capped at max. */
    CHECK_INT(b, 11);
    CHECK_INT(mp_outlier_ejection_ms(&c, b, 0), 300000);
    CHECK_INT(mp_outlier_ejection_ms(&c, b, 250), 300250);
}

static void test_max_ejection_percent(void)
{
    /* 3 hosts at 10 %: even the first ejection (33 %) is over. */
    CHECK(!mp_outlier_may_eject(0, 3, 10, false));
    CHECK(mp_outlier_may_eject(0, 3, 10, true)); /* always_eject_one_host */
    CHECK(!mp_outlier_may_eject(1, 3, 10, true));
    /* 3 hosts at 50 %: one (33 %) yes, two (67 %) no. */
    CHECK(mp_outlier_may_eject(0, 3, 50, false));
    CHECK(!mp_outlier_may_eject(1, 3, 50, false));
    /* 10 hosts at 20 %: two fit exactly. */
    CHECK(mp_outlier_may_eject(1, 10, 20, false));
    CHECK(!mp_outlier_may_eject(2, 10, 20, false));
    CHECK(mp_outlier_may_eject(2, 3, 100, false));
    CHECK(!mp_outlier_may_eject(0, 0, 100, false));
}

static void test_health_flags_text(void)
{
    char b[128];
    CHECK_STR(mp_outlier_health_flags(0, b, sizeof(b)), "healthy");
    CHECK_STR(mp_outlier_health_flags(MP_HEALTH_FAILED_OUTLIER_CHECK, b, sizeof(b)),
              "/failed_outlier_check");
    CHECK_STR(mp_outlier_health_flags(MP_HEALTH_FAILED_ACTIVE_HC | MP_HEALTH_FAILED_OUTLIER_CHECK |
                                          MP_HEALTH_PENDING_ACTIVE_HC,
                                      b, sizeof(b)),
              "/failed_active_hc/failed_outlier_check/pending_active_hc");
    CHECK_STR(mp_outlier_health_flags(MP_HEALTH_DEGRADED_ACTIVE_HC, b, sizeof(b)),
              "/degraded_active_hc");
}

/* Reports without a running main loop: counters and pending bits only. */
static void test_reports_count_and_mark(void)
{
    mp_cluster_t c = {0};
    c.name = "c";
    mp_outlier_config_t cfg;
    mp_outlier_config_default(&cfg);
    cfg.consecutive_5xx = 3;
    cfg.consecutive_gateway_failure = 2;
    c.outlier = mp_outlier_new(&c, &cfg, "c");
    mp_host_t h = {.health = mp_host_health_new()};
    mp_outlier_host_t *oh = &h.health->outlier;
    mp_outlier_report(&c, &h, 500);
    mp_outlier_report(&c, &h, 404); /* a 4xx is a success for outlier detection */
    CHECK_INT(atomic_load(&oh->consecutive_5xx), 0);
    mp_outlier_report(&c, &h, 503);
    mp_outlier_report(&c, &h, MP_OUTLIER_CONNECT_FAILED); /* counted as 503 without the split */
    CHECK_INT(atomic_load(&oh->pending), 1u << MP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE);
    mp_outlier_report(&c, &h, 500); /* not a gateway error: that count restarts */
    CHECK_INT(atomic_load(&oh->consecutive_gateway), 0);
    CHECK(atomic_load(&oh->pending) & (1u << MP_OUTLIER_CONSECUTIVE_5XX));
    CHECK_INT(atomic_load(&oh->ext_total), 5);
    CHECK_INT(atomic_load(&oh->ext_success), 1);
    mp_outlier_report(&c, &h, MP_OUTLIER_CONNECT_SUCCESS); /* says nothing about the response */
    CHECK_INT(atomic_load(&oh->ext_total), 5);
    mp_host_health_unref(h.health);
    mp_outlier_free(c.outlier);
}

static void test_split_mode_counts_local_origin_apart(void)
{
    mp_cluster_t c = {0};
    c.name = "c";
    mp_outlier_config_t cfg;
    mp_outlier_config_default(&cfg);
    cfg.split_external_local_origin_errors = true;
    cfg.consecutive_local_origin_failure = 2;
    c.outlier = mp_outlier_new(&c, &cfg, "c2");
    mp_host_t h = {.health = mp_host_health_new()};
    mp_outlier_host_t *oh = &h.health->outlier;
    mp_outlier_report(&c, &h, MP_OUTLIER_CONNECT_FAILED);
    mp_outlier_report(&c, &h, MP_OUTLIER_TIMEOUT);
    CHECK_INT(atomic_load(&oh->consecutive_5xx), 0);
    CHECK_INT(atomic_load(&oh->pending), 1u << MP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE);
    mp_outlier_report(&c, &h, MP_OUTLIER_CONNECT_SUCCESS);
    CHECK_INT(atomic_load(&oh->consecutive_local), 0);
    CHECK_INT(atomic_load(&oh->local_total), 3);
    CHECK_INT(atomic_load(&oh->local_success), 1);
    mp_host_health_unref(h.health);
    mp_outlier_free(c.outlier);
}

int main(void)
{
    mp_stats_thread_init();
    RUN(test_defaults_are_envoys);
    RUN(test_success_rate_threshold);
    RUN(test_failure_percentage);
    RUN(test_ejection_time_grows_and_caps);
    RUN(test_max_ejection_percent);
    RUN(test_health_flags_text);
    RUN(test_reports_count_and_mark);
    RUN(test_split_mode_counts_local_origin_apart);
    UNIT_DONE();
}
