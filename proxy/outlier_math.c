/* Outlier detection's arithmetic and defaults: pure functions, unit-tested
 * (tests/unit/test_outlier.c).  The numbers follow Envoy's OutlierDetection documentation. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "magpie/outlier.h"

void mp_outlier_config_default(mp_outlier_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->interval_ms = 10000;
    cfg->base_ejection_time_ms = 30000;
    cfg->max_ejection_time_ms = 300000;
    cfg->max_ejection_percent = 10;
    cfg->consecutive_5xx = 5;
    cfg->consecutive_gateway_failure = 5;
    cfg->consecutive_local_origin_failure = 5;
    cfg->enforcing[MP_OUTLIER_CONSECUTIVE_5XX] = 100;
    cfg->enforcing[MP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE] = 0;
    cfg->enforcing[MP_OUTLIER_SUCCESS_RATE] = 100;
    cfg->enforcing[MP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE] = 100;
    cfg->enforcing[MP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN] = 100;
    cfg->enforcing[MP_OUTLIER_FAILURE_PERCENTAGE] = 0;
    cfg->enforcing[MP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN] = 0;
    cfg->success_rate_minimum_hosts = 5;
    cfg->success_rate_request_volume = 100;
    cfg->success_rate_stdev_factor = 1900;
    cfg->failure_percentage_threshold = 85;
    cfg->failure_percentage_minimum_hosts = 5;
    cfg->failure_percentage_request_volume = 50;
}

/* Population variance, as Envoy computes it: the hosts are the whole population this interval,
 * not a sample of it. */
mp_outlier_sr_t mp_outlier_sr_threshold(const double *rates, uint32_t n, uint32_t stdev_factor)
{
    mp_outlier_sr_t r = {0, 0, 0};
    if (n == 0)
        return r;
    double sum = 0, var = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += rates[i];
    r.mean = sum / n;
    for (uint32_t i = 0; i < n; i++)
        var += (rates[i] - r.mean) * (rates[i] - r.mean);
    r.stdev = sqrt(var / n);
    r.threshold = r.mean - ((double)stdev_factor / 1000.0) * r.stdev;
    return r;
}

bool mp_outlier_may_eject(uint32_t active, uint32_t n_hosts, uint32_t max_percent, bool always_one)
{
    if (always_one && active == 0)
        return true;
    if (n_hosts == 0)
        return false;
    double pct = 100.0 * (double)(active + 1) / (double)n_hosts;
    return pct <= (double)(max_percent > 100 ? 100 : max_percent);
}

uint64_t mp_outlier_ejection_ms(const mp_outlier_config_t *cfg, uint32_t backoff,
                                uint32_t jitter_ms)
{
    uint64_t t = cfg->base_ejection_time_ms * backoff;
    if (t > cfg->max_ejection_time_ms)
        t = cfg->max_ejection_time_ms;
    return t + jitter_ms;
}

/* Stops growing once the next step would pass max_ejection_time: the time is capped there
 * anyway, and a smaller multiplier lets a recovered host shed it sooner. */
uint32_t mp_outlier_backoff_after_eject(const mp_outlier_config_t *cfg, uint32_t backoff)
{
    if (cfg->base_ejection_time_ms * backoff <
        cfg->max_ejection_time_ms + cfg->base_ejection_time_ms)
        return backoff + 1;
    return backoff;
}

bool mp_outlier_fails_percentage(double success_rate, uint32_t threshold)
{
    return 100.0 - success_rate >= (double)threshold;
}

const char *mp_outlier_health_flags(uint32_t flags, char *buf, size_t len)
{
    static const struct {
        uint32_t flag;
        const char *name;
    } names[] = {
        {MP_HEALTH_FAILED_ACTIVE_HC, "/failed_active_hc"},
        {MP_HEALTH_FAILED_OUTLIER_CHECK, "/failed_outlier_check"},
        {MP_HEALTH_FAILED_EDS_HEALTH, "/failed_eds_health"},
        {MP_HEALTH_DEGRADED_ACTIVE_HC, "/degraded_active_hc"},
        {MP_HEALTH_DEGRADED_EDS_HEALTH, "/degraded_eds_health"},
        {MP_HEALTH_PENDING_ACTIVE_HC, "/pending_active_hc"},
    };
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if ((flags & names[i].flag) == 0 || off >= len)
            continue;
        int n = snprintf(buf + off, len - off, "%s", names[i].name);
        off += n > 0 ? (size_t)n : 0;
    }
    if (buf[0] == '\0')
        snprintf(buf, len, "healthy");
    return buf;
}
