/* envoy.config.rbac.v3.RBAC -> mp_rbac_t (include/magpie/rbac.h), and the network filter
 * envoy.extensions.filters.network.rbac.v3.RBAC -> mp_rbac_filter_config_t.  What magpie cannot
 * evaluate (CEL conditions, metadata, matcher extensions) is refused with the field's path: a
 * policy that silently lost a condition would allow or deny more than its author meant. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

#include "../proxy/rbac_internal.h"
#include "envoy/config/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"
#include "magpie/json_pb.h"
#include "magpie/ratelimit.h"
#include "magpie/route.h"
#include "magpie/stats.h"

typedef Envoy__Config__Rbac__V3__Permission pb_permission_t;
typedef Envoy__Config__Rbac__V3__Principal pb_principal_t;
typedef Envoy__Extensions__Filters__Network__Rbac__V3__RBAC pb_net_rbac_t;

static int translate_cidr(const Envoy__Config__Core__V3__CidrRange *pb, mp_rbac_cidr_t *c,
                          mp_err_t *err)
{
    const char *a = pb->address_prefix ? pb->address_prefix : "";
    c->prefix_len = pb->prefix_len ? pb->prefix_len->value : 0;
    if (inet_pton(AF_INET, a, c->addr) == 1)
        c->family = AF_INET;
    else if (inet_pton(AF_INET6, a, c->addr) == 1)
        c->family = AF_INET6;
    else
        return mp_err_set(err, "address_prefix: \"%s\" is not an IP address", a);
    uint32_t max = c->family == AF_INET ? 32 : 128;
    if (c->prefix_len > max)
        return mp_err_set(err, "prefix_len: %u is more than %u", c->prefix_len, max);
    return 0;
}

static int translate_path(const Envoy__Type__Matcher__V3__PathMatcher *pb, mp_rbac_rule_t *r,
                          mp_err_t *err)
{
    r->kind = MP_RBAC_URL_PATH;
    if (pb->path == NULL)
        return mp_err_set(err, "path: required");
    if (mp_translate__string_matcher(pb->path, &r->str, err) != 0)
        return mp_err_prefix(err, "path.");
    return 0;
}

static int translate_header(const Envoy__Config__Route__V3__HeaderMatcher *pb, mp_rbac_rule_t *r,
                            mp_err_t *err)
{
    r->kind = MP_RBAC_HEADER;
    return mp_translate__header_matcher(pb, &r->header, err);
}

static int translate_permission(const pb_permission_t *pb, mp_rbac_rule_t *r, mp_err_t *err);
static int translate_principal(const pb_principal_t *pb, mp_rbac_rule_t *r, mp_err_t *err);

/* A list of permissions (principals when principals is set) under kind AND or OR. */
static int translate_list(void *const *items, size_t n, bool principals, mp_rbac_rule_kind_t kind,
                          mp_rbac_rule_t *r, mp_err_t *err)
{
    r->kind = kind;
    r->children = mp_xcalloc(n ? n : 1, sizeof(*r->children));
    for (size_t i = 0; i < n; i++) {
        int rc = principals ? translate_principal(items[i], &r->children[i], err)
                            : translate_permission(items[i], &r->children[i], err);
        r->n_children++;
        if (rc != 0)
            return mp_err_prefix(err, "[%zu].", i);
    }
    return 0;
}

static int translate_port_range(const Envoy__Type__V3__Int32Range *pb, mp_rbac_rule_t *r,
                                mp_err_t *err)
{
    r->kind = MP_RBAC_DESTINATION_PORT;
    if (pb->start < 0 || pb->end > 65536 || pb->start > pb->end)
        return mp_err_set(err, "[%d, %d) is not a port range", pb->start, pb->end);
    r->port_lo = (uint32_t)pb->start;
    r->port_hi = (uint32_t)pb->end;
    return 0;
}

/* The kinds both trees share (the combinators are handled by each caller). */
static int translate_not(const void *child, bool principal, mp_rbac_rule_t *r, mp_err_t *err)
{
    r->kind = MP_RBAC_NOT;
    r->children = mp_xcalloc(1, sizeof(*r->children));
    r->n_children = 1;
    return principal ? translate_principal(child, r->children, err)
                     : translate_permission(child, r->children, err);
}

static int translate_permission(const pb_permission_t *pb, mp_rbac_rule_t *r, mp_err_t *err)
{
    switch (pb->rule_case) {
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_AND_RULES:
        return translate_list((void *const *)pb->and_rules->rules, pb->and_rules->n_rules, false,
                              MP_RBAC_AND, r, err) == 0
                   ? 0
                   : mp_err_prefix(err, "and_rules.rules");
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_OR_RULES:
        return translate_list((void *const *)pb->or_rules->rules, pb->or_rules->n_rules, false,
                              MP_RBAC_OR, r, err) == 0
                   ? 0
                   : mp_err_prefix(err, "or_rules.rules");
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY:
        r->kind = pb->any ? MP_RBAC_ANY : MP_RBAC_OR; /* any: false matches nothing */
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER:
        return translate_header(pb->header, r, err) == 0 ? 0 : mp_err_prefix(err, "header.");
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URL_PATH:
        return translate_path(pb->url_path, r, err) == 0 ? 0 : mp_err_prefix(err, "url_path.");
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_IP:
        r->kind = MP_RBAC_DESTINATION_IP;
        return translate_cidr(pb->destination_ip, &r->cidr, err) == 0
                   ? 0
                   : mp_err_prefix(err, "destination_ip.");
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT:
        r->kind = MP_RBAC_DESTINATION_PORT;
        r->port_lo = pb->destination_port;
        r->port_hi = pb->destination_port + 1;
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT_RANGE:
        return translate_port_range(pb->destination_port_range, r, err) == 0
                   ? 0
                   : mp_err_prefix(err, "destination_port_range: ");
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_NOT_RULE:
        return translate_not(pb->not_rule, false, r, err) == 0 ? 0
                                                               : mp_err_prefix(err, "not_rule.");
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_REQUESTED_SERVER_NAME:
        r->kind = MP_RBAC_SNI;
        return mp_translate__string_matcher(pb->requested_server_name, &r->str, err) == 0
                   ? 0
                   : mp_err_prefix(err, "requested_server_name.");
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_METADATA:
        return mp_err_set(err, "metadata: metadata permissions are not supported");
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_MATCHER:
        return mp_err_set(err, "matcher: permission matcher extensions are not supported");
    default:
        return mp_err_set(err, "rule: not set, or a permission kind magpie does not support");
    }
}

static int translate_authenticated(const Envoy__Config__Rbac__V3__Principal__Authenticated *pb,
                                   mp_rbac_rule_t *r, mp_err_t *err)
{
    r->kind = MP_RBAC_AUTHENTICATED;
    if (pb->principal_name == NULL)
        return 0;
    r->has_str = true;
    if (mp_translate__string_matcher(pb->principal_name, &r->str, err) != 0)
        return mp_err_prefix(err, "principal_name.");
    return 0;
}

static int translate_ip_principal(const Envoy__Config__Core__V3__CidrRange *pb,
                                  mp_rbac_rule_kind_t kind, const char *field, mp_rbac_rule_t *r,
                                  mp_err_t *err)
{
    r->kind = kind;
    return translate_cidr(pb, &r->cidr, err) == 0 ? 0 : mp_err_prefix(err, "%s.", field);
}

static int translate_principal(const pb_principal_t *pb, mp_rbac_rule_t *r, mp_err_t *err)
{
    switch (pb->identifier_case) {
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AND_IDS:
        return translate_list((void *const *)pb->and_ids->ids, pb->and_ids->n_ids, true,
                              MP_RBAC_AND, r, err) == 0
                   ? 0
                   : mp_err_prefix(err, "and_ids.ids");
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_OR_IDS:
        return translate_list((void *const *)pb->or_ids->ids, pb->or_ids->n_ids, true, MP_RBAC_OR,
                              r, err) == 0
                   ? 0
                   : mp_err_prefix(err, "or_ids.ids");
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY:
        r->kind = pb->any ? MP_RBAC_ANY : MP_RBAC_OR;
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED:
        return translate_authenticated(pb->authenticated, r, err) == 0
                   ? 0
                   : mp_err_prefix(err, "authenticated.");
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_SOURCE_IP:
        return translate_ip_principal(pb->source_ip, MP_RBAC_DIRECT_REMOTE_IP, "source_ip", r, err);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_DIRECT_REMOTE_IP:
        return translate_ip_principal(pb->direct_remote_ip, MP_RBAC_DIRECT_REMOTE_IP,
                                      "direct_remote_ip", r, err);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_REMOTE_IP:
        return translate_ip_principal(pb->remote_ip, MP_RBAC_REMOTE_IP, "remote_ip", r, err);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_HEADER:
        return translate_header(pb->header, r, err) == 0 ? 0 : mp_err_prefix(err, "header.");
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_URL_PATH:
        return translate_path(pb->url_path, r, err) == 0 ? 0 : mp_err_prefix(err, "url_path.");
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_NOT_ID:
        return translate_not(pb->not_id, true, r, err) == 0 ? 0 : mp_err_prefix(err, "not_id.");
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_METADATA:
        return mp_err_set(err, "metadata: metadata principals are not supported");
    default:
        return mp_err_set(err, "identifier: not set, or a principal kind magpie does not support");
    }
}

static int translate_policy(const Envoy__Config__Rbac__V3__Policy *pb, mp_rbac_policy_t *p,
                            mp_err_t *err)
{
    if (pb->condition != NULL || pb->checked_condition != NULL)
        return mp_err_set(err, "%s: CEL conditions are not supported",
                          pb->condition != NULL ? "condition" : "checked_condition");
    /* Envoy requires both lists to be non-empty. */
    if (pb->n_permissions == 0)
        return mp_err_set(err, "permissions: at least one is required");
    if (pb->n_principals == 0)
        return mp_err_set(err, "principals: at least one is required");
    if (translate_list((void *const *)pb->permissions, pb->n_permissions, false, MP_RBAC_OR,
                       &p->permissions, err) != 0)
        return mp_err_prefix(err, "permissions");
    if (translate_list((void *const *)pb->principals, pb->n_principals, true, MP_RBAC_OR,
                       &p->principals, err) != 0)
        return mp_err_prefix(err, "principals");
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const mp_rbac_policy_t *)a)->name, ((const mp_rbac_policy_t *)b)->name);
}

mp_rbac_t *mp_rbac_build(const Envoy__Config__Rbac__V3__RBAC *pb, mp_err_t *err)
{
    mp_rbac_t *r = mp_xcalloc(1, sizeof(*r));
    if (pb->action > ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__LOG) {
        mp_err_set(err, "action: unknown value %d", (int)pb->action);
        goto fail;
    }
    r->action = (mp_rbac_action_t)pb->action;
    r->policies = mp_xcalloc(pb->n_policies ? pb->n_policies : 1, sizeof(*r->policies));
    for (size_t i = 0; i < pb->n_policies; i++) {
        const Envoy__Config__Rbac__V3__RBAC__PoliciesEntry *e = pb->policies[i];
        mp_rbac_policy_t *p = &r->policies[r->n_policies++];
        p->name = mp_xstrdup(e->key ? e->key : "");
        p->details = mp_xasprintf("rbac_access_denied_matched_policy[%s]", p->name);
        if (e->value == NULL) {
            mp_err_set(err, "policies[\"%s\"]: empty policy", p->name);
            goto fail;
        }
        if (translate_policy(e->value, p, err) != 0) {
            mp_err_prefix(err, "policies[\"%s\"].", p->name);
            goto fail;
        }
    }
    qsort(r->policies, r->n_policies, sizeof(*r->policies), by_name);
    return r;
fail:
    mp_rbac_free(r);
    return NULL;
}

/* ---- the network filter ---- */

/* Envoy's counters: "<prefix>rbac.<rules_prefix>allowed", "...<shadow_prefix>shadow_allowed". */
void mp_rbac_filter_register_stats(mp_rbac_filter_config_t *c, const char *prefix,
                                   const char *rules_prefix, const char *shadow_prefix)
{
    rules_prefix = rules_prefix ? rules_prefix : "";
    shadow_prefix = shadow_prefix ? shadow_prefix : "";
    c->stats.allowed = mp_stats_counterf("%srbac.%sallowed", prefix, rules_prefix);
    c->stats.denied = mp_stats_counterf("%srbac.%sdenied", prefix, rules_prefix);
    c->stats.shadow_allowed = mp_stats_counterf("%srbac.%sshadow_allowed", prefix, shadow_prefix);
    c->stats.shadow_denied = mp_stats_counterf("%srbac.%sshadow_denied", prefix, shadow_prefix);
}

int mp_rbac_filter_build(const Envoy__Config__Rbac__V3__RBAC *rules,
                         const Envoy__Config__Rbac__V3__RBAC *shadow, mp_rbac_filter_config_t *c,
                         mp_err_t *err)
{
    if (rules != NULL && (c->rules = mp_rbac_build(rules, err)) == NULL)
        return mp_err_prefix(err, "rules.");
    if (shadow != NULL && (c->shadow = mp_rbac_build(shadow, err)) == NULL)
        return mp_err_prefix(err, "shadow_rules.");
    return 0;
}

static int translate_network_fields(const pb_net_rbac_t *pb, mp_rbac_filter_config_t *c,
                                    mp_err_t *err)
{
    if (pb->stat_prefix == NULL || pb->stat_prefix[0] == '\0')
        return mp_err_set(err, "stat_prefix: required");
    /* CONTINUOUS re-checks on every read; the rules magpie evaluates on a connection (addresses,
     * SNI, peer certificate) cannot change after the first check, so it would only differ for
     * metadata and dynamic state, which magpie does not support. */
    if (pb->enforcement_type !=
        ENVOY__EXTENSIONS__FILTERS__NETWORK__RBAC__V3__RBAC__ENFORCEMENT_TYPE__ONE_TIME_ON_FIRST_BYTE)
        return mp_err_set(err, "enforcement_type: only ONE_TIME_ON_FIRST_BYTE is supported");
    if (pb->delay_deny != NULL && (pb->delay_deny->seconds != 0 || pb->delay_deny->nanos != 0))
        return mp_err_set(err, "delay_deny: not supported");
    c->stat_prefix = mp_xstrdup(pb->stat_prefix);
    return mp_rbac_filter_build(pb->rules, pb->shadow_rules, c, err);
}

int mp_translate__network_rbac(const Envoy__Config__Listener__V3__Filter *f,
                               mp_rbac_filter_config_t *c, mp_err_t *err)
{
    if (f->config_type_case != ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG)
        return mp_err_set(err, "typed_config: required");
    ProtobufCMessage *m =
        mp_pb_any_unpack(&f->typed_config->base,
                         &envoy__extensions__filters__network__rbac__v3__rbac__descriptor, err);
    if (m == NULL)
        return mp_err_prefix(err, "typed_config: ");
    const pb_net_rbac_t *pb = (const pb_net_rbac_t *)m;
    int rc = translate_network_fields(pb, c, err);
    if (rc == 0) {
        char prefix[512];
        size_t n = strlen(pb->stat_prefix);
        snprintf(prefix, sizeof(prefix), "%s%s", pb->stat_prefix,
                 pb->stat_prefix[n - 1] == '.' ? "" : ".");
        mp_rbac_filter_register_stats(c, prefix, NULL, pb->shadow_rules_stat_prefix);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc == 0 ? 0 : mp_err_prefix(err, "typed_config.");
}

#define NET_RBAC_FILTER "envoy.filters.network.rbac"
#define NET_RBAC_TYPE "envoy.extensions.filters.network.rbac.v3.RBAC"

static bool is_network_rbac(const Envoy__Config__Listener__V3__Filter *f)
{
    if (f->config_type_case == ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG &&
        f->typed_config->type_url != NULL) {
        const char *slash = strrchr(f->typed_config->type_url, '/');
        return strcmp(slash ? slash + 1 : f->typed_config->type_url, NET_RBAC_TYPE) == 0;
    }
    return f->name != NULL && strcmp(f->name, NET_RBAC_FILTER) == 0;
}

int mp_translate__network_rbac_list(Envoy__Config__Listener__V3__Filter *const *filters, size_t n,
                                    mp_rbac_filter_config_t **out, uint32_t *n_out, mp_err_t *err)
{
    *out = n ? mp_xcalloc(n, sizeof(**out)) : NULL;
    *n_out = 0;
    for (size_t i = 0; i < n; i++) {
        if (mp_net_ratelimit_is(filters[i]))
            continue; /* mp_net_ratelimit_build_list's */
        if (!is_network_rbac(filters[i]))
            return mp_err_set(err,
                              "filters[%zu]: only " NET_RBAC_FILTER " or envoy.filters.network."
                              "local_ratelimit may come before the terminal filter, not \"%s\"",
                              i, filters[i]->name ? filters[i]->name : "");
        if (mp_translate__network_rbac(filters[i], &(*out)[(*n_out)++], err) != 0)
            return mp_err_prefix(err, "filters[%zu].", i);
    }
    return 0;
}
