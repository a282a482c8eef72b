/* Cluster.circuit_breakers -> mp_cluster_t.cb_limits (include/magpie/circuit.h), and the
 * circuit_breakers.<priority>.* gauges. */
#include <stddef.h>

#include "translate_internal.h"

#include "magpie/circuit.h"

typedef Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds pb_thresholds_t;

static const char *const priority_names[MP_PRIORITY_COUNT] = {"default", "high"};
static const char *const open_names[MP_CB_RESOURCE_COUNT] = {
    "cx_open", "rq_pending_open", "rq_open", "rq_retry_open", "cx_pool_open"};
static const char *const remaining_names[MP_CB_RESOURCE_COUNT] = {
    "remaining_cx", "remaining_pending", "remaining_rq", "remaining_retries", "remaining_cx_pools"};

static int translate_budget(const pb_thresholds_t *t, mp_cb_limits_t *l, mp_err_t *err)
{
    const Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds__RetryBudget *b = t->retry_budget;
    if (b == NULL)
        return 0;
    l->has_retry_budget = true;
    if (b->budget_percent != NULL) {
        double v = b->budget_percent->value;
        /* NaN fails both comparisons, so it is refused too. */
        if (!(v >= 0.0 && v <= 100.0))
            return mp_err_set(err, "retry_budget.budget_percent: must be between 0 and 100");
        l->budget_percent = v;
    }
    l->min_retry_concurrency = mp_translate__u32(b->min_retry_concurrency, 3);
    return 0;
}

static int translate_thresholds(const pb_thresholds_t *t, mp_cb_limits_t *l, mp_err_t *err)
{
    l->max_connections = mp_translate__u32(t->max_connections, l->max_connections);
    l->max_pending_requests = mp_translate__u32(t->max_pending_requests, l->max_pending_requests);
    l->max_requests = mp_translate__u32(t->max_requests, l->max_requests);
    l->max_retries = mp_translate__u32(t->max_retries, l->max_retries);
    l->max_connection_pools = mp_translate__u32(t->max_connection_pools, l->max_connection_pools);
    l->track_remaining = t->track_remaining;
    return translate_budget(t, l, err);
}

int mp_translate__circuit_breakers(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err)
{
    for (int p = 0; p < MP_PRIORITY_COUNT; p++)
        mp_cb_limits_default(&c->cb_limits[p]);
    const Envoy__Config__Cluster__V3__CircuitBreakers *cb = pb->circuit_breakers;
    bool seen[MP_PRIORITY_COUNT] = {false, false};
    for (size_t i = 0; cb != NULL && i < cb->n_thresholds; i++) {
        const pb_thresholds_t *t = cb->thresholds[i];
        if ((unsigned)t->priority >= MP_PRIORITY_COUNT)
            return mp_err_set(err, "circuit_breakers.thresholds[%zu].priority: unknown value %d", i,
                              (int)t->priority);
        /* Envoy keeps the last entry of a priority silently; a repeat is almost always a typo. */
        if (seen[t->priority])
            return mp_err_set(err, "circuit_breakers.thresholds[%zu].priority: %s given twice", i,
                              t->priority == 0 ? "DEFAULT" : "HIGH");
        seen[t->priority] = true;
        if (translate_thresholds(t, &c->cb_limits[t->priority], err) != 0)
            return mp_err_prefix(err, "circuit_breakers.thresholds[%zu].", i);
    }
    if (cb != NULL && cb->n_per_host_thresholds > 0)
        return mp_err_set(err, "circuit_breakers.per_host_thresholds: not supported yet");
    return 0;
}

void mp_translate__circuit_stats(mp_cluster_t *c, const char *stat_name)
{
    for (int p = 0; p < MP_PRIORITY_COUNT; p++) {
        mp_cb_limits_t *l = &c->cb_limits[p];
        l->has_gauges = true;
        for (int r = 0; r < MP_CB_RESOURCE_COUNT; r++) {
            l->open_gauge[r] = mp_stats_gaugef("cluster.%s.circuit_breakers.%s.%s", stat_name,
                                               priority_names[p], open_names[r]);
            l->remaining_gauge[r] =
                l->track_remaining ? mp_stats_gaugef("cluster.%s.circuit_breakers.%s.%s", stat_name,
                                                     priority_names[p], remaining_names[r])
                                   : 0;
        }
    }
}
