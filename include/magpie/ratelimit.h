/* Local rate limiting: the network filter envoy.filters.network.local_ratelimit (connections of a
 * filter chain) and the TokenBucket translation that it shares with the HTTP filter
 * (filters/local_ratelimit.c).  The arithmetic is include/magpie/token_bucket.h. */
#ifndef MAGPIE_RATELIMIT_H
#define MAGPIE_RATELIMIT_H

#include <stdatomic.h>
#include <stdbool.h>

#include "magpie/common.h"
#include "magpie/stats.h"
#include "magpie/token_bucket.h"

struct Envoy__Type__V3__TokenBucket;
struct Envoy__Config__Listener__V3__Filter;
struct mp_filter_chain;

/* One envoy.filters.network.local_ratelimit filter of a chain, owned by the chain
 * (mp_filter_chain_t.net_ratelimits).  The bucket word is the only field written after
 * translation, by any worker, atomically. */
typedef struct mp_net_ratelimit {
    mp_token_bucket_cfg_t bucket;
    _Atomic uint64_t word;
    mp_stat_id_t rate_limited; /* local_ratelimit.<stat_prefix>.rate_limited */
} mp_net_ratelimit_t;

/* TokenBucket -> *out, its origin the current time.  max_tokens must be > 0, tokens_per_fill
 * defaults to 1, fill_interval is required and at least 50 ms (Envoy's floor).  Errors are
 * relative to the TokenBucket (".max_tokens: ...").  Main thread. */
int mp_ratelimit_bucket_build(const struct Envoy__Type__V3__TokenBucket *pb,
                              mp_token_bucket_cfg_t *out, mp_err_t *err);

/* True when filter is a envoy.filters.network.local_ratelimit (by name or typed_config type). */
bool mp_net_ratelimit_is(const struct Envoy__Config__Listener__V3__Filter *filter);
/* The local_ratelimit filters among filters[0..n) -> *out / *n_out (heap array, NULL when none);
 * other filters are skipped (their translators check them).  Errors name "filters[i]". */
int mp_net_ratelimit_build_list(struct Envoy__Config__Listener__V3__Filter *const *filters,
                                size_t n, mp_net_ratelimit_t **out, uint32_t *n_out, mp_err_t *err);

/* Takes a token from every limiter of fc; false (counted) when one of them has none, and the
 * caller closes the connection at once.  Called at accept, before TLS or any byte.  Worker. */
bool mp_net_ratelimit_allows(const struct mp_filter_chain *fc);

#endif
