/* envoy.config.route.v3.RouteConfiguration -> mp_route_table_t: virtual hosts, route matches
 * and actions, header mutations.  Match conditions and rewrites magpie cannot honour are
 * rejected rather than ignored, since ignoring one would route requests the config meant to keep
 * out. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "translate_internal.h"

#include "magpie/log.h"
#include "magpie/regex.h"
#include "magpie/route.h"

#define DEFAULT_DIRECT_BODY_MAX 4096

typedef Envoy__Config__Route__V3__VirtualHost pb_vhost_t;
typedef Envoy__Config__Route__V3__Route pb_route_t;
typedef Envoy__Config__Route__V3__RouteMatch pb_match_t;
typedef Envoy__Config__Route__V3__RouteAction pb_action_t;
typedef Envoy__Config__Route__V3__RedirectAction pb_redirect_t;
typedef Envoy__Config__Route__V3__DirectResponseAction pb_direct_t;
typedef Envoy__Config__Route__V3__HeaderMatcher pb_header_matcher_t;
typedef Envoy__Config__Route__V3__QueryParameterMatcher pb_query_matcher_t;
typedef Envoy__Config__Route__V3__WeightedCluster pb_weighted_t;
typedef Envoy__Type__Matcher__V3__StringMatcher pb_string_matcher_t;
typedef Envoy__Config__Route__V3__RouteAction__UpgradeConfig pb_upgrade_t;

/* What the route-level translators need from the table being built. */
typedef struct route_ctx {
    const mp_config_t *cfg;
    bool validate_clusters;
    size_t direct_body_max;
} route_ctx_t;

/* ---- matchers ---- */

static void set_string(mp_string_matcher_t *m, mp_str_match_kind_t kind, const char *v)
{
    m->kind = kind;
    m->value = mp_xstrdup(v ? v : "");
    m->len = (uint32_t)strlen(m->value);
}

static int compile_regex(mp_regex_t **out, const char *pattern, mp_err_t *err)
{
    *out = mp_regex_compile(pattern ? pattern : "", err);
    return *out != NULL ? 0 : mp_err_prefix(err, ": ");
}

static int translate_string_matcher(const pb_string_matcher_t *pb, mp_string_matcher_t *m,
                                    mp_err_t *err)
{
    m->ignore_case = pb->ignore_case;
    switch (pb->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        set_string(m, MP_STR_EXACT, pb->exact);
        return 0;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
        set_string(m, MP_STR_PREFIX, pb->prefix);
        return 0;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
        set_string(m, MP_STR_SUFFIX, pb->suffix);
        return 0;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
        set_string(m, MP_STR_CONTAINS, pb->contains);
        return 0;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX:
        m->kind = MP_STR_REGEX;
        if (compile_regex(&m->regex, pb->safe_regex->regex, err) != 0)
            return mp_err_prefix(err, "safe_regex.regex");
        return 0;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CUSTOM:
        return mp_err_set(err, "custom: custom string matchers are not supported");
    default:
        return mp_err_set(err, "match_pattern: one of exact, prefix, suffix, contains, "
                               "safe_regex is required");
    }
}

int mp_translate__string_matcher(const Envoy__Type__Matcher__V3__StringMatcher *pb,
                                 mp_string_matcher_t *m, mp_err_t *err)
{
    return translate_string_matcher(pb, m, err);
}

/* The deprecated one-field forms (exact_match, prefix_match, ...) are string_match in disguise. */
static int translate_header_spec(const pb_header_matcher_t *pb, mp_header_matcher_t *h,
                                 mp_err_t *err)
{
    h->kind = MP_HDR_STRING;
    switch (pb->header_match_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_EXACT_MATCH:
        set_string(&h->str, MP_STR_EXACT, pb->exact_match);
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PREFIX_MATCH:
        set_string(&h->str, MP_STR_PREFIX, pb->prefix_match);
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SUFFIX_MATCH:
        set_string(&h->str, MP_STR_SUFFIX, pb->suffix_match);
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_CONTAINS_MATCH:
        set_string(&h->str, MP_STR_CONTAINS, pb->contains_match);
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SAFE_REGEX_MATCH:
        h->str.kind = MP_STR_REGEX;
        if (compile_regex(&h->str.regex, pb->safe_regex_match->regex, err) != 0)
            return mp_err_prefix(err, "safe_regex_match.regex");
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH:
        if (translate_string_matcher(pb->string_match, &h->str, err) != 0)
            return mp_err_prefix(err, "string_match.");
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_RANGE_MATCH:
        h->kind = MP_HDR_RANGE;
        h->range_start = pb->range_match->start;
        h->range_end = pb->range_match->end;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH:
        h->kind = MP_HDR_PRESENT;
        h->present = pb->present_match;
        return 0;
    default:
        /* Envoy: a matcher with no specifier only asks for the header to be present. */
        h->kind = MP_HDR_PRESENT;
        h->present = true;
        return 0;
    }
}

static int translate_header_matcher(const pb_header_matcher_t *pb, mp_header_matcher_t *h,
                                    mp_err_t *err)
{
    if (pb->name == NULL || pb->name[0] == '\0')
        return mp_err_set(err, "name: required");
    h->name = mp_translate__lower_dup(pb->name);
    h->invert = pb->invert_match;
    h->treat_missing_as_empty = pb->treat_missing_header_as_empty;
    return translate_header_spec(pb, h, err);
}

int mp_translate__header_matcher(const Envoy__Config__Route__V3__HeaderMatcher *pb,
                                 mp_header_matcher_t *h, mp_err_t *err)
{
    return translate_header_matcher(pb, h, err);
}

static int translate_query_matcher(const pb_query_matcher_t *pb, mp_query_matcher_t *q,
                                   mp_err_t *err)
{
    if (pb->name == NULL || pb->name[0] == '\0')
        return mp_err_set(err, "name: required");
    q->name = mp_xstrdup(pb->name);
    if (pb->query_parameter_match_specifier_case ==
        ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__QUERY_PARAMETER_MATCH_SPECIFIER_STRING_MATCH) {
        q->has_string = true;
        if (translate_string_matcher(pb->string_match, &q->str, err) != 0)
            return mp_err_prefix(err, "string_match.");
        return 0;
    }
    /* present_match: true, or no specifier at all, both mean "present". */
    q->present = true;
    return 0;
}

static int check_match_unsupported(const pb_match_t *pb, mp_err_t *err)
{
    if (pb->runtime_fraction != NULL)
        return mp_err_set(err, "runtime_fraction: not supported yet");
    if (pb->tls_context != NULL)
        return mp_err_set(err, "tls_context: not supported yet");
    if (pb->n_dynamic_metadata > 0)
        return mp_err_set(err, "dynamic_metadata: not supported yet");
    if (pb->n_cookies > 0)
        return mp_err_set(err, "cookies: not supported yet");
    return 0;
}

static int translate_path(const pb_match_t *pb, mp_route_t *r, mp_err_t *err)
{
    switch (pb->path_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX:
        r->path_kind = MP_PATH_PREFIX;
        r->path = mp_xstrdup(pb->prefix);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH:
        r->path_kind = MP_PATH_EXACT;
        r->path = mp_xstrdup(pb->path);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH_SEPARATED_PREFIX:
        /* Envoy: must start with '/', must not end with one, no query or fragment. */
        if (pb->path_separated_prefix[0] != '/' || strpbrk(pb->path_separated_prefix, "?#") ||
            (strlen(pb->path_separated_prefix) > 1 &&
             pb->path_separated_prefix[strlen(pb->path_separated_prefix) - 1] == '/'))
            return mp_err_set(err,
                              "path_separated_prefix: \"%s\" must start with '/', not end "
                              "with '/', and hold no '?' or '#'",
                              pb->path_separated_prefix);
        r->path_kind = MP_PATH_SEPARATED_PREFIX;
        r->path = mp_xstrdup(pb->path_separated_prefix);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_SAFE_REGEX:
        r->path_kind = MP_PATH_REGEX;
        return compile_regex(&r->path_regex, pb->safe_regex->regex, err) != 0
                   ? mp_err_prefix(err, "safe_regex.regex")
                   : 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_CONNECT_MATCHER:
        /* A CONNECT has no path to match: an empty prefix takes any, and the route's
         * connect_matcher flag (proxy/route_match.c) restricts it to CONNECT requests. */
        r->connect_matcher = true;
        r->path_kind = MP_PATH_PREFIX;
        r->path = mp_xstrdup("");
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH_MATCH_POLICY:
        return mp_err_set(err, "path_match_policy: not supported yet");
    default:
        return mp_err_set(err, "path_specifier: one of prefix, path, safe_regex, "
                               "path_separated_prefix is required");
    }
    r->path_len = (uint32_t)strlen(r->path);
    return 0;
}

static int translate_match(const pb_match_t *pb, mp_route_t *r, mp_err_t *err)
{
    if (check_match_unsupported(pb, err) != 0 || translate_path(pb, r, err) != 0)
        return MP_ERROR;
    r->case_sensitive = mp_translate__bool(pb->case_sensitive, true);
    r->match_grpc = pb->grpc != NULL;
    r->headers = mp_xcalloc(pb->n_headers, sizeof(*r->headers));
    r->n_headers = (uint32_t)pb->n_headers;
    for (size_t i = 0; i < pb->n_headers; i++)
        if (translate_header_matcher(pb->headers[i], &r->headers[i], err) != 0)
            return mp_err_prefix(err, "headers[%zu].", i);
    r->query = mp_xcalloc(pb->n_query_parameters, sizeof(*r->query));
    r->n_query = (uint32_t)pb->n_query_parameters;
    for (size_t i = 0; i < pb->n_query_parameters; i++)
        if (translate_query_matcher(pb->query_parameters[i], &r->query[i], err) != 0)
            return mp_err_prefix(err, "query_parameters[%zu].", i);
    return 0;
}

/* ---- header mutations ---- */

static int translate_header_op(const mp_pb_header_option_t *pb, mp_header_op_t *op, mp_err_t *err)
{
    const Envoy__Config__Core__V3__HeaderValue *hv = pb->header;
    if (hv == NULL || hv->key == NULL || hv->key[0] == '\0')
        return mp_err_set(err, "header.key: required");
    /* Envoy refuses to let a route add pseudo-headers or Host: they are not headers to mutate. */
    if (hv->key[0] == ':' || strcasecmp(hv->key, "host") == 0)
        return mp_err_set(err, "header.key: \"%s\" cannot be added", hv->key);
    if (pb->append != NULL && pb->append_action != 0)
        return mp_err_set(err, "append: append and append_action cannot both be set");
    op->name = mp_translate__lower_dup(hv->key);
    if ((hv->value == NULL || hv->value[0] == '\0') && hv->raw_value.len > 0)
        op->value = mp_xstrndup((const char *)hv->raw_value.data, hv->raw_value.len);
    else
        op->value = mp_xstrdup(hv->value ? hv->value : "");
    if (pb->append != NULL)
        op->action = pb->append->value ? MP_APPEND_IF_EXISTS_OR_ADD : MP_OVERWRITE_IF_EXISTS_OR_ADD;
    else if ((unsigned)pb->append_action <= MP_OVERWRITE_IF_EXISTS)
        op->action = (mp_header_append_t)pb->append_action; /* same numbering as the proto */
    else
        return mp_err_set(err, "append_action: unknown value %d", (int)pb->append_action);
    op->keep_empty_value = pb->keep_empty_value;
    return 0;
}

int mp_translate__header_mutation(const char *what, mp_pb_header_option_t *const *add, size_t n_add,
                                  char *const *remove, size_t n_remove, mp_header_mutation_t *out,
                                  mp_err_t *err)
{
    out->add = mp_xcalloc(n_add, sizeof(*out->add));
    out->n_add = (uint32_t)n_add;
    for (size_t i = 0; i < n_add; i++)
        if (translate_header_op(add[i], &out->add[i], err) != 0)
            return mp_err_prefix(err, "%s_to_add[%zu].", what, i);
    out->remove = mp_xcalloc(n_remove, sizeof(*out->remove));
    out->n_remove = (uint32_t)n_remove;
    for (size_t i = 0; i < n_remove; i++) {
        out->remove[i] = mp_translate__lower_dup(remove[i]);
        if (remove[i][0] == ':' || remove[i][0] == '\0' || strcmp(out->remove[i], "host") == 0)
            return mp_err_set(err, "%s_to_remove[%zu]: \"%s\" cannot be removed", what, i,
                              remove[i]);
    }
    return 0;
}

/* The four *_headers_to_add/remove fields of a route, vhost, table or weighted cluster. */
#define TRANSLATE_MUTATIONS(pb, req, resp, err)                                                    \
    (mp_translate__header_mutation(                                                                \
         "request_headers", (pb)->request_headers_to_add, (pb)->n_request_headers_to_add,          \
         (pb)->request_headers_to_remove, (pb)->n_request_headers_to_remove, req, err) != 0 ||     \
             mp_translate__header_mutation("response_headers", (pb)->response_headers_to_add,      \
                                           (pb)->n_response_headers_to_add,                        \
                                           (pb)->response_headers_to_remove,                       \
                                           (pb)->n_response_headers_to_remove, resp, err) != 0     \
         ? MP_ERROR                                                                                \
         : 0)

/* ---- actions ---- */

static int resolve_cluster(const route_ctx_t *ctx, const char *name, mp_cluster_t **out,
                           mp_err_t *err)
{
    if (name == NULL || name[0] == '\0')
        return mp_err_set(err, ": required");
    *out = mp_config_find_cluster(ctx->cfg, name);
    if (*out == NULL && ctx->validate_clusters)
        return mp_err_set(err, ": unknown cluster \"%s\"", name);
    return 0;
}

static int
translate_cluster_weight(const route_ctx_t *ctx,
                         const Envoy__Config__Route__V3__WeightedCluster__ClusterWeight *pb,
                         mp_weighted_cluster_t *wc, mp_err_t *err)
{
    if (pb->cluster_header != NULL && pb->cluster_header[0] != '\0')
        return mp_err_set(err, "cluster_header: not supported yet");
    if (pb->host_rewrite_specifier_case !=
        ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__CLUSTER_WEIGHT__HOST_REWRITE_SPECIFIER__NOT_SET)
        return mp_err_set(err, "host_rewrite_literal: not supported yet on a weighted cluster");
    wc->name = mp_xstrdup(pb->name ? pb->name : "");
    if (resolve_cluster(ctx, pb->name, &wc->cluster, err) != 0)
        return mp_err_prefix(err, "name");
    wc->weight = mp_translate__u32(pb->weight, 0);
    return TRANSLATE_MUTATIONS(pb, &wc->request_headers, &wc->response_headers, err);
}

static int translate_weighted(const route_ctx_t *ctx, const pb_weighted_t *pb, mp_route_t *r,
                              mp_err_t *err)
{
    if (pb->n_clusters == 0)
        return mp_err_set(err, "clusters: at least one is required");
    if (pb->random_value_specifier_case !=
        ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__RANDOM_VALUE_SPECIFIER__NOT_SET)
        return mp_err_set(err, "header_name: not supported yet");
    r->weighted = mp_xcalloc(pb->n_clusters, sizeof(*r->weighted));
    r->n_weighted = (uint32_t)pb->n_clusters;
    uint64_t sum = 0;
    for (size_t i = 0; i < pb->n_clusters; i++) {
        if (translate_cluster_weight(ctx, pb->clusters[i], &r->weighted[i], err) != 0)
            return mp_err_prefix(err, "clusters[%zu].", i);
        sum += r->weighted[i].weight;
    }
    if (sum == 0 || sum > UINT32_MAX)
        return mp_err_set(err, "clusters: the sum of the weights must be between 1 and %u",
                          UINT32_MAX);
    if (pb->total_weight != NULL && pb->total_weight->value != sum)
        return mp_err_set(err, "total_weight: %u is not the sum of the weights (%llu)",
                          pb->total_weight->value, (unsigned long long)sum);
    r->total_weight = (uint32_t)sum;
    return 0;
}

static int translate_cluster_specifier(const route_ctx_t *ctx, const pb_action_t *pb, mp_route_t *r,
                                       mp_err_t *err)
{
    switch (pb->cluster_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER:
        r->cluster_name = mp_xstrdup(pb->cluster);
        return resolve_cluster(ctx, pb->cluster, &r->cluster, err) != 0
                   ? mp_err_prefix(err, "cluster")
                   : 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER_HEADER:
        if (pb->cluster_header[0] == '\0')
            return mp_err_set(err, "cluster_header: must not be empty");
        r->cluster_header = mp_translate__lower_dup(pb->cluster_header);
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS:
        return translate_weighted(ctx, pb->weighted_clusters, r, err) != 0
                   ? mp_err_prefix(err, "weighted_clusters.")
                   : 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER_SPECIFIER_PLUGIN:
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_INLINE_CLUSTER_SPECIFIER_PLUGIN:
        return mp_err_set(err, "cluster_specifier_plugin: not supported yet");
    default:
        return mp_err_set(err, "cluster_specifier: one of cluster, cluster_header, "
                               "weighted_clusters is required");
    }
}

static int translate_host_rewrite(const pb_action_t *pb, mp_route_t *r, mp_err_t *err)
{
    switch (pb->host_rewrite_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER__NOT_SET:
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL:
        r->host_rewrite_literal = mp_xstrdup(pb->host_rewrite_literal);
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_AUTO_HOST_REWRITE:
        r->auto_host_rewrite = pb->auto_host_rewrite->value;
        return 0;
    default:
        return mp_err_set(err, "host_rewrite_specifier: only host_rewrite_literal and "
                               "auto_host_rewrite are supported");
    }
}

/* Envoy: connect_config belongs to the CONNECT (and CONNECT-UDP) upgrade only. */
static int translate_upgrade(const pb_upgrade_t *pb, mp_route_t *r, mp_err_t *err)
{
    mp_upgrade_config_t *u = &r->upgrades[r->n_upgrades];
    if (mp_translate__upgrade_type(pb->upgrade_type, r->upgrades, r->n_upgrades, &u->upgrade_type,
                                   err) != 0)
        return MP_ERROR;
    r->n_upgrades++;
    u->enabled = mp_translate__bool(pb->enabled, true);
    if (pb->connect_config == NULL)
        return 0;
    if (strcmp(u->upgrade_type, "connect") != 0)
        return mp_err_set(err,
                          "connect_config: only the CONNECT upgrade can have one (upgrade_type "
                          "is \"%s\")",
                          pb->upgrade_type);
    if (pb->connect_config->allow_post)
        return mp_err_set(err, "connect_config.allow_post: not supported yet");
    u->connect_config = true;
    return 0;
}

static int translate_upgrades(const pb_action_t *pb, mp_route_t *r, mp_err_t *err)
{
    r->upgrades = mp_xcalloc(pb->n_upgrade_configs, sizeof(*r->upgrades));
    for (size_t i = 0; i < pb->n_upgrade_configs; i++)
        if (translate_upgrade(pb->upgrade_configs[i], r, err) != 0)
            return mp_err_prefix(err, "upgrade_configs[%zu].", i);
    return 0;
}

/* RouteAction.max_stream_duration.  grpc_timeout_header_max present (even 0, "no cap") is what
 * turns the grpc-timeout header on, as in Envoy. */
static int translate_stream_duration(const pb_action_t *pb, mp_route_t *r, mp_err_t *err)
{
    const Envoy__Config__Route__V3__RouteAction__MaxStreamDuration *d = pb->max_stream_duration;
    if (d == NULL)
        return 0;
    r->uses_stream_duration = true;
    r->has_max_stream_duration = d->max_stream_duration != NULL;
    if (mp_translate__duration_ms(d->max_stream_duration, 0, &r->max_stream_duration_ms, err) != 0)
        return mp_err_prefix(err, "max_stream_duration.max_stream_duration");
    r->has_grpc_timeout_header_max = d->grpc_timeout_header_max != NULL;
    if (mp_translate__duration_ms(d->grpc_timeout_header_max, 0, &r->grpc_timeout_header_max_ms,
                                  err) != 0)
        return mp_err_prefix(err, "max_stream_duration.grpc_timeout_header_max");
    if (mp_translate__duration_ms(d->grpc_timeout_header_offset, 0,
                                  &r->grpc_timeout_header_offset_ms, err) != 0)
        return mp_err_prefix(err, "max_stream_duration.grpc_timeout_header_offset");
    return 0;
}

/* RouteAction.priority picks which of a cluster's circuit breaker thresholds the request uses. */
static int translate_priority(const pb_action_t *pb, mp_route_t *r, mp_err_t *err)
{
    if ((unsigned)pb->priority >= MP_PRIORITY_COUNT)
        return mp_err_set(err, "priority: unknown value %d (DEFAULT or HIGH)", (int)pb->priority);
    r->priority = (uint8_t)pb->priority;
    return 0;
}

static int translate_route_action(const route_ctx_t *ctx, const pb_action_t *pb, mp_route_t *r,
                                  mp_err_t *err)
{
    r->action = MP_ACTION_ROUTE;
    if (translate_cluster_specifier(ctx, pb, r, err) != 0 ||
        translate_host_rewrite(pb, r, err) != 0)
        return MP_ERROR;
    if (pb->regex_rewrite != NULL)
        return mp_err_set(err, "regex_rewrite: not supported yet");
    if (pb->path_rewrite_policy != NULL || (pb->path_rewrite && pb->path_rewrite[0]))
        return mp_err_set(err, "path_rewrite: not supported yet");
    if (pb->prefix_rewrite != NULL && pb->prefix_rewrite[0] != '\0')
        r->prefix_rewrite = mp_xstrdup(pb->prefix_rewrite);
    r->has_timeout = pb->timeout != NULL;
    if (mp_translate__duration_ms(pb->timeout, 15000, &r->timeout_ms, err) != 0)
        return mp_err_prefix(err, "timeout");
    r->has_idle_timeout = pb->idle_timeout != NULL;
    if (mp_translate__duration_ms(pb->idle_timeout, 0, &r->idle_timeout_ms, err) != 0)
        return mp_err_prefix(err, "idle_timeout");
    if (pb->retry_policy_typed_config != NULL)
        return mp_err_set(err, "retry_policy_typed_config: not supported");
    if (mp_translate__retry_policy(pb->retry_policy, &r->retry, err) != 0)
        return MP_ERROR;
    if (translate_priority(pb, r, err) != 0 || translate_upgrades(pb, r, err) != 0 ||
        mp_translate__hash_policies(pb->hash_policy, pb->n_hash_policy, r, err) != 0)
        return MP_ERROR;
    return translate_stream_duration(pb, r, err);
}

static const int redirect_codes[] = {301, 302, 303, 307, 308};

static int translate_redirect(const pb_redirect_t *pb, mp_route_t *r, mp_err_t *err)
{
    mp_redirect_t *rd = &r->redirect;
    r->action = MP_ACTION_REDIRECT;
    if (pb->scheme_rewrite_specifier_case ==
        ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_HTTPS_REDIRECT)
        rd->scheme = pb->https_redirect ? mp_xstrdup("https") : NULL;
    else if (pb->scheme_rewrite_specifier_case ==
             ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_SCHEME_REDIRECT)
        rd->scheme = mp_translate__lower_dup(pb->scheme_redirect);
    if (pb->host_redirect != NULL && pb->host_redirect[0] != '\0')
        rd->host = mp_xstrdup(pb->host_redirect);
    if (pb->port_redirect > 65535)
        return mp_err_set(err, "port_redirect: %u is not a port", pb->port_redirect);
    rd->port = pb->port_redirect;
    if (pb->path_rewrite_specifier_case ==
        ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PATH_REDIRECT)
        rd->path = mp_xstrdup(pb->path_redirect);
    else if (pb->path_rewrite_specifier_case ==
             ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PREFIX_REWRITE)
        rd->prefix_rewrite = mp_xstrdup(pb->prefix_rewrite);
    else if (pb->path_rewrite_specifier_case ==
             ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_REGEX_REWRITE)
        return mp_err_set(err, "regex_rewrite: not supported yet");
    if ((unsigned)pb->response_code >= MP_ARRAY_SIZE(redirect_codes))
        return mp_err_set(err, "response_code: unknown value %d", (int)pb->response_code);
    rd->response_code = redirect_codes[pb->response_code];
    rd->strip_query = pb->strip_query;
    return 0;
}

static int translate_direct(const route_ctx_t *ctx, const pb_direct_t *pb, mp_route_t *r,
                            mp_err_t *err)
{
    r->action = MP_ACTION_DIRECT_RESPONSE;
    if (pb->status < 200 || pb->status > 599)
        return mp_err_set(err, "status: %u is not in [200, 600)", pb->status);
    r->direct_status = (int)pb->status;
    if (pb->body_format != NULL)
        return mp_err_set(err, "body_format: not supported yet");
    if (pb->body == NULL)
        return 0;
    r->direct_body =
        mp_translate__data_source(pb->body, ctx->direct_body_max, &r->direct_body_len, err);
    return r->direct_body != NULL ? 0 : mp_err_prefix(err, "body.");
}

static int translate_action(const route_ctx_t *ctx, const pb_route_t *pb, mp_route_t *r,
                            mp_err_t *err)
{
    switch (pb->action_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE:
        return translate_route_action(ctx, pb->route, r, err) != 0 ? mp_err_prefix(err, "route.")
                                                                   : 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_REDIRECT:
        return translate_redirect(pb->redirect, r, err) != 0 ? mp_err_prefix(err, "redirect.") : 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_DIRECT_RESPONSE:
        return translate_direct(ctx, pb->direct_response, r, err) != 0
                   ? mp_err_prefix(err, "direct_response.")
                   : 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_FILTER_ACTION:
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_NON_FORWARDING_ACTION:
        return mp_err_set(err, "action: filter_action and non_forwarding_action are not "
                               "supported");
    default:
        return mp_err_set(err, "action: one of route, redirect, direct_response is required");
    }
}

/* ---- routes, virtual hosts, the table ---- */

static int translate_route(const route_ctx_t *ctx, const pb_route_t *pb, mp_route_t *r,
                           mp_err_t *err)
{
    if (pb->name != NULL && pb->name[0] != '\0')
        r->name = mp_xstrdup(pb->name);
    if (pb->match == NULL)
        return mp_err_set(err, "match: required");
    if (translate_match(pb->match, r, err) != 0)
        return mp_err_prefix(err, "match.");
    if (translate_action(ctx, pb, r, err) != 0)
        return MP_ERROR;
    r->buffer_limit = mp_translate__u32(pb->per_request_buffer_limit_bytes, 0);
    return TRANSLATE_MUTATIONS(pb, &r->request_headers, &r->response_headers, err);
}

static int translate_vhost(const route_ctx_t *ctx, const pb_vhost_t *pb, mp_vhost_t *vh,
                           mp_err_t *err)
{
    if (pb->name == NULL || pb->name[0] == '\0')
        return mp_err_set(err, "name: required");
    vh->name = mp_xstrdup(pb->name);
    if (pb->n_domains == 0)
        return mp_err_set(err, "domains: at least one is required");
    if (pb->require_tls != ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__TLS_REQUIREMENT_TYPE__NONE)
        return mp_err_set(err, "require_tls: not supported yet");
    vh->domains = mp_xcalloc(pb->n_domains, sizeof(*vh->domains));
    vh->n_domains = (uint32_t)pb->n_domains;
    for (size_t i = 0; i < pb->n_domains; i++)
        vh->domains[i] = mp_translate__lower_dup(pb->domains[i]);
    vh->routes = mp_xcalloc(pb->n_routes, sizeof(*vh->routes));
    vh->n_routes = (uint32_t)pb->n_routes;
    for (size_t i = 0; i < pb->n_routes; i++)
        if (translate_route(ctx, pb->routes[i], &vh->routes[i], err) != 0)
            return mp_err_prefix(err, "routes[%zu].", i);
    if (pb->retry_policy_typed_config != NULL)
        return mp_err_set(err, "retry_policy_typed_config: not supported");
    if (mp_translate__retry_policy(pb->retry_policy, &vh->retry, err) != 0)
        return MP_ERROR;
    vh->buffer_limit = mp_translate__u32(pb->per_request_buffer_limit_bytes, 0);
    vh->include_request_attempt_count = pb->include_request_attempt_count;
    vh->include_attempt_count_in_response = pb->include_attempt_count_in_response;
    return TRANSLATE_MUTATIONS(pb, &vh->request_headers, &vh->response_headers, err);
}

/* The virtual host that already holds domain among the domains before (v, d), or NULL. */
static const mp_vhost_t *find_earlier_domain(const mp_route_table_t *t, uint32_t v, uint32_t d,
                                             const char *domain)
{
    for (uint32_t w = 0; w <= v; w++) {
        uint32_t end = w == v ? d : t->vhosts[w].n_domains;
        for (uint32_t e = 0; e < end; e++)
            if (strcmp(t->vhosts[w].domains[e], domain) == 0)
                return &t->vhosts[w];
    }
    return NULL;
}

/* Envoy rejects a route table in which one domain names two virtual hosts (or one twice).
 * Quadratic, but in the number of domains of one table, at translation time. */
static int check_duplicate_domains(const mp_route_table_t *t, mp_err_t *err)
{
    for (uint32_t v = 0; v < t->n_vhosts; v++) {
        for (uint32_t d = 0; d < t->vhosts[v].n_domains; d++) {
            const mp_vhost_t *other = find_earlier_domain(t, v, d, t->vhosts[v].domains[d]);
            if (other != NULL)
                return mp_err_set(err,
                                  "virtual_hosts[%u].domains[%u]: duplicate domain \"%s\" (also "
                                  "in virtual host \"%s\")",
                                  v, d, t->vhosts[v].domains[d], other->name);
        }
    }
    return 0;
}

static int check_table_unsupported(const mp_pb_route_config_t *pb, mp_err_t *err)
{
    if (pb->vhds != NULL)
        return mp_err_set(err, "vhds: not supported yet");
    if (pb->n_cluster_specifier_plugins > 0)
        return mp_err_set(err, "cluster_specifier_plugins: not supported yet");
    return 0;
}

static int translate_table(const mp_pb_route_config_t *pb, const route_ctx_t *ctx,
                           mp_route_table_t *t, mp_err_t *err)
{
    if (check_table_unsupported(pb, err) != 0)
        return MP_ERROR;
    t->vhosts = mp_xcalloc(pb->n_virtual_hosts, sizeof(*t->vhosts));
    t->n_vhosts = (uint32_t)pb->n_virtual_hosts;
    for (size_t i = 0; i < pb->n_virtual_hosts; i++)
        if (translate_vhost(ctx, pb->virtual_hosts[i], &t->vhosts[i], err) != 0)
            return mp_err_prefix(err, "virtual_hosts[%zu].", i);
    if (check_duplicate_domains(t, err) != 0)
        return MP_ERROR;
    return TRANSLATE_MUTATIONS(pb, &t->request_headers, &t->response_headers, err);
}

mp_route_table_t *mp_translate__route_config(const mp_pb_route_config_t *pb, const mp_config_t *cfg,
                                             mp_err_t *err)
{
    route_ctx_t ctx = {
        .cfg = cfg,
        .validate_clusters = mp_translate__bool(pb->validate_clusters, true),
        .direct_body_max =
            mp_translate__u32(pb->max_direct_response_body_size_bytes, DEFAULT_DIRECT_BODY_MAX),
    };
    mp_route_table_t *t = mp_xcalloc(1, sizeof(*t));
    t->name = mp_xstrdup(pb->name ? pb->name : "");
    if (translate_table(pb, &ctx, t, err) != 0) {
        mp_route_table_free(t);
        return NULL;
    }
    return t;
}
