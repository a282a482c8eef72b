/* Cluster.outlier_detection -> mp_outlier_t (include/magpie/outlier.h). */
#include <stddef.h>

#include "translate_internal.h"

#include "envoy/config/cluster/v3/outlier_detection.pb-c.h"

#include "magpie/log.h"
#include "magpie/outlier.h"

typedef Envoy__Config__Cluster__V3__OutlierDetection pb_od_t;

static int durations(const pb_od_t *pb, mp_outlier_config_t *o, mp_err_t *err)
{
    if (mp_translate__duration_ms(pb->interval, o->interval_ms, &o->interval_ms, err) != 0)
        return mp_err_prefix(err, "interval: ");
    if (mp_translate__duration_ms(pb->base_ejection_time, o->base_ejection_time_ms,
                                  &o->base_ejection_time_ms, err) != 0)
        return mp_err_prefix(err, "base_ejection_time: ");
    if (mp_translate__duration_ms(pb->max_ejection_time, o->max_ejection_time_ms,
                                  &o->max_ejection_time_ms, err) != 0)
        return mp_err_prefix(err, "max_ejection_time: ");
    if (mp_translate__duration_ms(pb->max_ejection_time_jitter, 0, &o->max_ejection_time_jitter_ms,
                                  err) != 0)
        return mp_err_prefix(err, "max_ejection_time_jitter: ");
    /* Envoy's validation: a sweep needs a period, an ejection a length. */
    if (o->interval_ms == 0)
        return mp_err_set(err, "interval: must be greater than 0s");
    if (o->base_ejection_time_ms == 0)
        return mp_err_set(err, "base_ejection_time: must be greater than 0s");
    if (o->max_ejection_time_ms == 0)
        return mp_err_set(err, "max_ejection_time: must be greater than 0s");
    return 0;
}

static void enforcing(const pb_od_t *pb, mp_outlier_config_t *o)
{
    static const size_t off[MP_OUTLIER_TYPE_COUNT] = {
        offsetof(pb_od_t, enforcing_consecutive_5xx),
        offsetof(pb_od_t, enforcing_consecutive_gateway_failure),
        offsetof(pb_od_t, enforcing_success_rate),
        offsetof(pb_od_t, enforcing_consecutive_local_origin_failure),
        offsetof(pb_od_t, enforcing_local_origin_success_rate),
        offsetof(pb_od_t, enforcing_failure_percentage),
        offsetof(pb_od_t, enforcing_failure_percentage_local_origin),
    };
    for (int t = 0; t < MP_OUTLIER_TYPE_COUNT; t++) {
        const Google__Protobuf__UInt32Value *w =
            *(Google__Protobuf__UInt32Value *const *)((const char *)pb + off[t]);
        o->enforcing[t] = mp_translate__u32(w, o->enforcing[t]);
    }
}

static int percentages(const mp_outlier_config_t *o, mp_err_t *err)
{
    static const char *const names[MP_OUTLIER_TYPE_COUNT] = {
        "enforcing_consecutive_5xx",
        "enforcing_consecutive_gateway_failure",
        "enforcing_success_rate",
        "enforcing_consecutive_local_origin_failure",
        "enforcing_local_origin_success_rate",
        "enforcing_failure_percentage",
        "enforcing_failure_percentage_local_origin",
    };
    for (int t = 0; t < MP_OUTLIER_TYPE_COUNT; t++)
        if (o->enforcing[t] > 100)
            return mp_err_set(err, "%s: must be at most 100", names[t]);
    if (o->max_ejection_percent > 100)
        return mp_err_set(err, "max_ejection_percent: must be at most 100");
    if (o->failure_percentage_threshold > 100)
        return mp_err_set(err, "failure_percentage_threshold: must be at most 100");
    return 0;
}

static int fields(const pb_od_t *pb, mp_outlier_config_t *o, mp_err_t *err)
{
    if (durations(pb, o, err) != 0)
        return MP_ERROR;
    o->max_ejection_percent = mp_translate__u32(pb->max_ejection_percent, o->max_ejection_percent);
    o->consecutive_5xx = mp_translate__u32(pb->consecutive_5xx, o->consecutive_5xx);
    o->consecutive_gateway_failure =
        mp_translate__u32(pb->consecutive_gateway_failure, o->consecutive_gateway_failure);
    o->consecutive_local_origin_failure = mp_translate__u32(pb->consecutive_local_origin_failure,
                                                            o->consecutive_local_origin_failure);
    o->success_rate_minimum_hosts =
        mp_translate__u32(pb->success_rate_minimum_hosts, o->success_rate_minimum_hosts);
    o->success_rate_request_volume =
        mp_translate__u32(pb->success_rate_request_volume, o->success_rate_request_volume);
    o->success_rate_stdev_factor =
        mp_translate__u32(pb->success_rate_stdev_factor, o->success_rate_stdev_factor);
    o->failure_percentage_threshold =
        mp_translate__u32(pb->failure_percentage_threshold, o->failure_percentage_threshold);
    o->failure_percentage_minimum_hosts = mp_translate__u32(pb->failure_percentage_minimum_hosts,
                                                            o->failure_percentage_minimum_hosts);
    o->failure_percentage_request_volume = mp_translate__u32(pb->failure_percentage_request_volume,
                                                             o->failure_percentage_request_volume);
    o->split_external_local_origin_errors = pb->split_external_local_origin_errors;
    o->always_eject_one_host = mp_translate__bool(pb->always_eject_one_host, false);
    enforcing(pb, o);
    return percentages(o, err);
}

int mp_translate__outlier(const mp_pb_cluster_t *pb, mp_cluster_t *c, const char *stat_name,
                          mp_err_t *err)
{
    const pb_od_t *od = pb->outlier_detection;
    if (od == NULL)
        return 0;
    mp_outlier_config_t cfg;
    mp_outlier_config_default(&cfg);
    if (fields(od, &cfg, err) != 0)
        return mp_err_prefix(err, "outlier_detection.");
    if (od->n_monitors > 0 || od->successful_active_health_check_uneject_host != NULL)
        mp_log_warn("cluster %s: outlier_detection.monitors and "
                    "successful_active_health_check_uneject_host are ignored",
                    c->name);
    c->outlier = mp_outlier_new(c, &cfg, stat_name);
    return 0;
}
