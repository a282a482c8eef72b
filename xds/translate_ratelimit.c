/* envoy.type.v3.TokenBucket and envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit
 * -> the structures of include/magpie/ratelimit.h. */
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

#include "envoy/extensions/filters/network/local_ratelimit/v3/local_rate_limit.pb-c.h"
#include "envoy/type/v3/token_bucket.pb-c.h"
#include "magpie/json_pb.h"
#include "magpie/ratelimit.h"

#define NET_LRL_FILTER "envoy.filters.network.local_ratelimit"
#define NET_LRL_TYPE "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit"

typedef Envoy__Extensions__Filters__Network__LocalRatelimit__V3__LocalRateLimit pb_net_lrl_t;

int mp_ratelimit_bucket_build(const Envoy__Type__V3__TokenBucket *pb, mp_token_bucket_cfg_t *out,
                              mp_err_t *err)
{
    if (pb == NULL)
        return mp_err_set(err, ": required");
    if (pb->max_tokens == 0)
        return mp_err_set(err, ".max_tokens: must be greater than 0");
    uint32_t per_fill = mp_translate__u32(pb->tokens_per_fill, 1);
    if (per_fill == 0)
        return mp_err_set(err, ".tokens_per_fill: must be greater than 0");
    if (pb->fill_interval == NULL)
        return mp_err_set(err, ".fill_interval: required");
    uint64_t ms = 0;
    if (mp_translate__duration_ms(pb->fill_interval, 0, &ms, err) != 0)
        return mp_err_prefix(err, ".fill_interval");
    /* Envoy's floor: a finer interval would refill faster than it can be measured usefully. */
    if (ms < 50)
        return mp_err_set(err, ".fill_interval: must be at least 50ms");
    *out = (mp_token_bucket_cfg_t){
        .max_tokens = pb->max_tokens,
        .tokens_per_fill = per_fill,
        .fill_ns = ms * 1000000ull,
        .origin_ns = mp_now_ns(),
    };
    return 0;
}

bool mp_net_ratelimit_is(const Envoy__Config__Listener__V3__Filter *f)
{
    if (f->config_type_case == ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG &&
        f->typed_config->type_url != NULL) {
        const char *slash = strrchr(f->typed_config->type_url, '/');
        return strcmp(slash ? slash + 1 : f->typed_config->type_url, NET_LRL_TYPE) == 0;
    }
    return f->name != NULL && strcmp(f->name, NET_LRL_FILTER) == 0;
}

static int build_one(const Envoy__Config__Listener__V3__Filter *f, mp_net_ratelimit_t *out,
                     mp_err_t *err)
{
    if (f->config_type_case != ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG)
        return mp_err_set(err, "typed_config: required");
    ProtobufCMessage *m = mp_pb_any_unpack(
        &f->typed_config->base,
        &envoy__extensions__filters__network__local_ratelimit__v3__local_rate_limit__descriptor,
        err);
    if (m == NULL)
        return mp_err_prefix(err, "typed_config: ");
    const pb_net_lrl_t *pb = (const pb_net_lrl_t *)m;
    int rc = 0;
    if (pb->stat_prefix == NULL || pb->stat_prefix[0] == '\0')
        rc = mp_err_set(err, "stat_prefix: required");
    else if (mp_ratelimit_bucket_build(pb->token_bucket, &out->bucket, err) != 0)
        rc = mp_err_prefix(err, "token_bucket");
    if (rc == 0) {
        mp_token_bucket_shared_init(&out->bucket, &out->word, mp_now_ns());
        out->rate_limited = mp_stats_counterf("local_ratelimit.%s.rate_limited", pb->stat_prefix);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc == 0 ? 0 : mp_err_prefix(err, "typed_config.");
}

int mp_net_ratelimit_build_list(Envoy__Config__Listener__V3__Filter *const *filters, size_t n,
                                mp_net_ratelimit_t **out, uint32_t *n_out, mp_err_t *err)
{
    *out = NULL;
    *n_out = 0;
    for (size_t i = 0; i < n; i++) {
        if (!mp_net_ratelimit_is(filters[i]))
            continue;
        if (*out == NULL)
            *out = mp_xcalloc(n, sizeof(**out));
        if (build_one(filters[i], &(*out)[*n_out], err) != 0)
            return mp_err_prefix(err, "filters[%zu].", i);
        (*n_out)++;
    }
    return 0;
}
