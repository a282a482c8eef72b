/* envoy.filters.network.local_ratelimit at accept (include/magpie/ratelimit.h). */
#include "magpie/config.h"
#include "magpie/log.h"
#include "magpie/ratelimit.h"

bool mp_net_ratelimit_allows(const mp_filter_chain_t *fc)
{
    if (fc->n_net_ratelimits == 0)
        return true;
    uint64_t now = mp_now_ns();
    for (uint32_t i = 0; i < fc->n_net_ratelimits; i++) {
        /* The chain is immutable but for each limiter's bucket word, which is atomic. */
        mp_net_ratelimit_t *rl = (mp_net_ratelimit_t *)&fc->net_ratelimits[i];
        if (!mp_token_bucket_shared_take(&rl->bucket, &rl->word, now)) {
            mp_stats_inc(rl->rate_limited);
            mp_log_debug("filter chain \"%s\": connection over the local rate limit, closed",
                         fc->name);
            return false;
        }
    }
    return true;
}
