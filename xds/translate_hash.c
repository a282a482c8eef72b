/* Consistent hashing configuration: Cluster.lb_policy RING_HASH / MAGLEV with their lb_config
 * and common_lb_config.consistent_hashing_lb_config, and RouteAction.hash_policy. */
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

#include "magpie/lb_hash.h"
#include "magpie/log.h"
#include "magpie/route_hash.h"

typedef Envoy__Config__Cluster__V3__Cluster__RingHashLbConfig pb_ring_t;
typedef Envoy__Config__Route__V3__RouteAction__HashPolicy pb_hash_policy_t;

static uint64_t u64_or(const Google__Protobuf__UInt64Value *w, uint64_t def)
{
    return w != NULL ? w->value : def;
}

static int translate_ring(const pb_ring_t *pb, mp_lb_hash_config_t *h, mp_err_t *err)
{
    if (pb == NULL)
        return 0;
    h->min_ring_size = u64_or(pb->minimum_ring_size, MP_RING_MIN_DEFAULT);
    h->max_ring_size = u64_or(pb->maximum_ring_size, MP_RING_MAX_DEFAULT);
    if (h->min_ring_size > MP_RING_MAX_DEFAULT || h->max_ring_size > MP_RING_MAX_DEFAULT)
        return mp_err_set(err, "ring_hash_lb_config: ring sizes must be at most %u",
                          MP_RING_MAX_DEFAULT);
    if (h->min_ring_size == 0 || h->max_ring_size == 0)
        return mp_err_set(err, "ring_hash_lb_config: ring sizes must be at least 1");
    if (h->min_ring_size > h->max_ring_size)
        return mp_err_set(err,
                          "ring_hash_lb_config: minimum_ring_size (%llu) > maximum_ring_size "
                          "(%llu)",
                          (unsigned long long)h->min_ring_size,
                          (unsigned long long)h->max_ring_size);
    if (pb->hash_function ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__RING_HASH_LB_CONFIG__HASH_FUNCTION__MURMUR_HASH_2)
        h->hash_function = MP_HASH_FN_MURMUR2;
    else if (pb->hash_function !=
             ENVOY__CONFIG__CLUSTER__V3__CLUSTER__RING_HASH_LB_CONFIG__HASH_FUNCTION__XX_HASH)
        return mp_err_set(err, "ring_hash_lb_config.hash_function: unknown value %d",
                          (int)pb->hash_function);
    return 0;
}

static int translate_common_hashing(const mp_pb_cluster_t *pb, mp_lb_hash_config_t *h,
                                    mp_err_t *err)
{
    const Envoy__Config__Cluster__V3__Cluster__CommonLbConfig *common = pb->common_lb_config;
    if (common == NULL || common->consistent_hashing_lb_config == NULL)
        return 0;
    h->use_hostname = common->consistent_hashing_lb_config->use_hostname_for_hashing;
    if (common->consistent_hashing_lb_config->hash_balance_factor != NULL)
        return mp_err_set(err, "common_lb_config.consistent_hashing_lb_config."
                               "hash_balance_factor: not supported yet");
    return 0;
}

int mp_translate__hash_lb(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err)
{
    mp_lb_hash_config_t *h = &c->hash_lb;
    mp_lb_hash_config_default(h);
    c->lb_policy = pb->lb_policy == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__MAGLEV
                       ? MP_LB_MAGLEV
                       : MP_LB_RING_HASH;
    if (pb->lb_config_case == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_RING_HASH_LB_CONFIG &&
        translate_ring(pb->ring_hash_lb_config, h, err) != 0)
        return MP_ERROR;
    if (pb->lb_config_case == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_MAGLEV_LB_CONFIG &&
        pb->maglev_lb_config != NULL) {
        h->table_size = u64_or(pb->maglev_lb_config->table_size, MP_MAGLEV_SIZE_DEFAULT);
        if (h->table_size > MP_MAGLEV_SIZE_MAX || !mp_hash_is_prime(h->table_size))
            return mp_err_set(err, "maglev_lb_config.table_size: %llu must be a prime up to %u",
                              (unsigned long long)h->table_size, MP_MAGLEV_SIZE_MAX);
    }
    return translate_common_hashing(pb, h, err);
}

/* ---- RouteAction.hash_policy ---- */

static int need_name(const char *name, const char *field, char **out, mp_err_t *err)
{
    if (name == NULL || name[0] == '\0')
        return mp_err_set(err, "%s: required", field);
    *out = mp_translate__lower_dup(name);
    return 0;
}

static int translate_cookie(const Envoy__Config__Route__V3__RouteAction__HashPolicy__Cookie *pb,
                            mp_hash_policy_t *p, mp_err_t *err)
{
    if (pb->name == NULL || pb->name[0] == '\0')
        return mp_err_set(err, "cookie.name: required");
    p->name = mp_xstrdup(pb->name); /* cookie names are case-sensitive */
    p->has_ttl = pb->ttl != NULL;
    if (mp_translate__duration_ms(pb->ttl, 0, &p->ttl_ms, err) != 0)
        return mp_err_prefix(err, "cookie.ttl");
    if (pb->path != NULL && pb->path[0] != '\0')
        p->path = mp_xstrdup(pb->path);
    if (pb->n_attributes > 0)
        return mp_err_set(err, "cookie.attributes: not supported yet");
    if (p->has_ttl)
        mp_log_warn("hash_policy cookie \"%s\": magpie does not generate the cookie when it is "
                    "absent (such requests get no hash from this policy)",
                    p->name);
    return 0;
}

static int translate_policy(const pb_hash_policy_t *pb, mp_hash_policy_t *p, mp_err_t *err)
{
    p->terminal = pb->terminal;
    switch (pb->policy_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_HEADER:
        p->kind = MP_HASH_POLICY_HEADER;
        if (pb->header->regex_rewrite != NULL)
            return mp_err_set(err, "header.regex_rewrite: not supported yet");
        return need_name(pb->header->header_name, "header.header_name", &p->name, err);
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_COOKIE:
        p->kind = MP_HASH_POLICY_COOKIE;
        return translate_cookie(pb->cookie, p, err);
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_CONNECTION_PROPERTIES:
        p->kind = MP_HASH_POLICY_SOURCE_IP;
        /* source_ip false yields no hash in Envoy either: keep it as a policy that never does. */
        if (!pb->connection_properties->source_ip)
            p->kind = MP_HASH_POLICY_FILTER_STATE;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_QUERY_PARAMETER:
        p->kind = MP_HASH_POLICY_QUERY;
        if (pb->query_parameter->name == NULL || pb->query_parameter->name[0] == '\0')
            return mp_err_set(err, "query_parameter.name: required");
        p->name = mp_xstrdup(pb->query_parameter->name);
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_FILTER_STATE:
        p->kind = MP_HASH_POLICY_FILTER_STATE;
        return 0;
    default:
        return mp_err_set(err, "policy_specifier: one of header, cookie, connection_properties, "
                               "query_parameter, filter_state is required");
    }
}

int mp_translate__hash_policies(Envoy__Config__Route__V3__RouteAction__HashPolicy *const *pb,
                                size_t n, mp_route_t *r, mp_err_t *err)
{
    if (n == 0)
        return 0;
    r->hash_policies = mp_xcalloc(n, sizeof(*r->hash_policies));
    for (size_t i = 0; i < n; i++) {
        r->n_hash_policies++;
        if (translate_policy(pb[i], &r->hash_policies[i], err) != 0)
            return mp_err_prefix(err, "hash_policy[%zu].", i);
    }
    return 0;
}
