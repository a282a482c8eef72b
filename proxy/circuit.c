/* Circuit breaker accounting (include/magpie/circuit.h): one atomic counter per cluster,
 * priority and resource, compared with the limit on every acquire.  The check and the increment
 * are one compare-and-swap loop, so two workers racing for the last unit cannot both win. */
#include <stdint.h>
#include <stdio.h>

#include "magpie/circuit.h"

_Static_assert(MP_CB_RESOURCE_COUNT == 5, "mp_cb_counts_t.in_use has one slot per resource");

void mp_cb_limits_default(mp_cb_limits_t *l)
{
    *l = (mp_cb_limits_t){
        .max_connections = 1024,
        .max_pending_requests = 1024,
        .max_requests = 1024,
        .max_retries = 3,
        .max_connection_pools = UINT32_MAX,
        .budget_percent = 20.0,
        .min_retry_concurrency = 3,
    };
}

/* The retry budget (Envoy's retry_budget): retries may be budget_percent of the requests active
 * and pending, but never fewer than min_retry_concurrency. */
static uint32_t retry_limit(const mp_cluster_t *c, mp_routing_priority_t p)
{
    const mp_cb_limits_t *l = &c->cb_limits[p];
    if (!l->has_retry_budget)
        return l->max_retries;
    uint32_t base = mp_cb_in_use(c, p, MP_CB_REQUESTS) + mp_cb_in_use(c, p, MP_CB_PENDING_REQUESTS);
    double budget = (double)base * l->budget_percent / 100.0;
    return budget > l->min_retry_concurrency ? (uint32_t)budget : l->min_retry_concurrency;
}

static uint32_t limit_of(const mp_cluster_t *c, mp_routing_priority_t p, mp_cb_resource_t r)
{
    const mp_cb_limits_t *l = &c->cb_limits[p];
    switch (r) {
    case MP_CB_CONNECTIONS:
        return l->max_connections;
    case MP_CB_PENDING_REQUESTS:
        return l->max_pending_requests;
    case MP_CB_REQUESTS:
        return l->max_requests;
    case MP_CB_RETRIES:
        return retry_limit(c, p);
    case MP_CB_CONNECTION_POOLS:
    default:
        return l->max_connection_pools;
    }
}

bool mp_cb_try_acquire(mp_cluster_t *c, mp_routing_priority_t p, mp_cb_resource_t r)
{
    atomic_uint *n = &c->cb_counts[p].in_use[r];
    uint32_t limit = limit_of(c, p, r);
    unsigned cur = atomic_load_explicit(n, memory_order_relaxed);
    do {
        if (cur >= limit)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(n, &cur, cur + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

void mp_cb_release(mp_cluster_t *c, mp_routing_priority_t p, mp_cb_resource_t r)
{
    atomic_fetch_sub_explicit(&c->cb_counts[p].in_use[r], 1, memory_order_relaxed);
}

uint32_t mp_cb_in_use(const mp_cluster_t *c, mp_routing_priority_t p, mp_cb_resource_t r)
{
    return atomic_load_explicit(&c->cb_counts[p].in_use[r], memory_order_relaxed);
}

/* Computed when the stats are read, so that the request path pays one atomic and nothing more;
 * a breaker is open while its resource is at (or, for a lowered retry budget, over) its limit. */
static void refresh_cluster(mp_cluster_t *c)
{
    for (int p = 0; p < MP_PRIORITY_COUNT; p++) {
        const mp_cb_limits_t *l = &c->cb_limits[p];
        for (int r = 0; l->has_gauges && r < MP_CB_RESOURCE_COUNT; r++) {
            uint32_t used = mp_cb_in_use(c, p, r), limit = limit_of(c, p, r);
            mp_stats_gauge_set(l->open_gauge[r], used >= limit ? 1 : 0);
            if (l->track_remaining)
                mp_stats_gauge_set(l->remaining_gauge[r],
                                   used >= limit ? 0 : (int64_t)limit - (int64_t)used);
        }
    }
}

void mp_cb_refresh_gauges(const mp_config_t *cfg)
{
    for (uint32_t i = 0; cfg != NULL && i < cfg->n_clusters; i++)
        refresh_cluster(cfg->clusters[i]);
}

bool mp_cb_leaked(const mp_config_t *cfg, char *what, size_t cap)
{
    for (uint32_t i = 0; cfg != NULL && i < cfg->n_clusters; i++) {
        for (int p = 0; p < MP_PRIORITY_COUNT; p++) {
            for (int r = 0; r < MP_CB_RESOURCE_COUNT; r++) {
                uint32_t n = mp_cb_in_use(cfg->clusters[i], p, r);
                if (n == 0)
                    continue;
                snprintf(what, cap, "cluster %s priority %d resource %d: %u in use",
                         cfg->clusters[i]->name, p, r, n);
                return true;
            }
        }
    }
    return false;
}
