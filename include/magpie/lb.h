/* Load balancing over a cluster's host set, as Envoy does it: a priority by the priority load
 * (overprovisioning factor, degraded hosts, panic threshold), then a locality (locality weighted
 * or zone aware, when configured), then a host by the cluster's policy: ROUND_ROBIN (weighted,
 * smooth), LEAST_REQUEST (power of N choices, weighted), RANDOM (weighted); or, for RING_HASH
 * and MAGLEV, the host owning the request's hash on a consistent-hashing table.  A mp_lb_t is
 * per worker and per cluster, so it takes no lock; it tracks active requests per host for
 * LEAST_REQUEST.  docs/resilience.md describes the behaviour. */
#ifndef MAGPIE_LB_H
#define MAGPIE_LB_H

#include <stdbool.h>
#include <stdint.h>

#include "magpie/config.h"

typedef struct mp_lb mp_lb_t;

/* Worker state for one cluster; free with mp_lb_free. */
mp_lb_t *mp_lb_new(mp_cluster_t *c);
void mp_lb_free(mp_lb_t *lb);

/* Picks a host from hs (the set the caller holds a ref on).  Returns its index in hs, or -1 when
 * no host may be used: hs is empty, the chosen priority has no usable host with the panic
 * threshold at 0, or the priority is in panic with fail_traffic_on_panic (the caller answers
 * 503 UH).  exclude (-1 for none) is skipped when another candidate exists (a retry or a failed
 * connect prefers a different host).  Worker; never calls back. */
int mp_lb_pick(mp_lb_t *lb, const mp_hostset_t *hs, int exclude);

/* One priority level's host counts, and the share of requests it gets. */
typedef struct mp_lb_level {
    uint32_t total, healthy, degraded;
} mp_lb_level_t;

typedef struct mp_lb_load {
    uint32_t healthy;  /* percent of requests sent to this level's healthy hosts */
    uint32_t degraded; /* percent sent to its degraded hosts */
    bool panic;        /* in panic: those requests go to all its hosts, healthy or not */
} mp_lb_load_t;

/* Envoy's priority load: each level's health is min(100, factor x healthy / total) (integer
 * percent; factor is the overprovisioning factor in percent, 140 by default), the same for
 * degraded; load fills the levels in order by health normalised to their sum (capped at 100),
 * then by degraded health, and a rounding remainder goes to the first level with healthy (else
 * degraded) hosts.  Below 100 % normalised health a level whose healthy+degraded share is under
 * panic_threshold percent is in panic; when all are, load follows host counts.  The healthy and
 * degraded loads of out[0 .. n) sum to 100.  Pure; any thread. */
void mp_lb_priority_loads(const mp_lb_level_t *lv, uint32_t n, uint32_t factor,
                          uint32_t panic_threshold, mp_lb_load_t *out);

/* mp_lb_pick with the request's hash (proxy/route_hash.c): a RING_HASH or MAGLEV cluster picks
 * the host that owns hash on its table (include/magpie/lb_hash.h); other policies ignore hash.
 * mp_lb_pick on a hashing cluster uses a random hash.  Worker. */
int mp_lb_pick_hash(mp_lb_t *lb, const mp_hostset_t *hs, int exclude, uint64_t hash);

/* Active-request bookkeeping for LEAST_REQUEST; other policies ignore it.  host_index refers to
 * the set current at pick time; a stale index (set replaced) is ignored. */
void mp_lb_request_start(mp_lb_t *lb, const mp_hostset_t *hs, int host_index);
void mp_lb_request_end(mp_lb_t *lb, const mp_hostset_t *hs, int host_index);

/* Per-worker random numbers (xorshift); not for cryptography. */
uint64_t mp_random(void);

#endif
