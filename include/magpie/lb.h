/* Load balancing over a cluster's host set: ROUND_ROBIN (weighted, smooth), LEAST_REQUEST (power
 * of N choices, weighted), RANDOM (weighted), RING_HASH and MAGLEV (consistent hashing).  A mp_lb_t
 * is per worker and per cluster, so it takes no lock; it tracks active requests per host for
 * LEAST_REQUEST. */
#ifndef MAGPIE_LB_H
#define MAGPIE_LB_H

#include <stdint.h>

#include "magpie/config.h"

typedef struct mp_lb mp_lb_t;

/* Worker state for one cluster; free with mp_lb_free. */
mp_lb_t *mp_lb_new(mp_cluster_t *c);
void mp_lb_free(mp_lb_t *lb);

/* Picks a host from hs (the set the caller holds a ref on).  Returns its index in hs, or -1 when
 * hs is empty.  exclude (-1 for none) is skipped when another host exists (a retry or a
 * failed connect prefers a different host). */
int mp_lb_pick(mp_lb_t *lb, const mp_hostset_t *hs, int exclude);

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
