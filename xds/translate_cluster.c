/* envoy.config.cluster.v3.Cluster -> mp_cluster_t. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

#include "magpie/resource_store.h"

#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"

#include "../proxy/config_internal.h"
#include "magpie/circuit.h"
#include "magpie/dns.h"
#include "magpie/json_pb.h"
#include "magpie/log.h"
#include "magpie/stats.h"
#include "magpie/tls.h"

#define DEFAULT_BUFFER_LIMIT (1024 * 1024)
#define HTTP_OPTIONS_EXT "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

typedef Envoy__Config__Core__V3__HttpProtocolOptions pb_http_options_t;
typedef Envoy__Config__Endpoint__V3__LbEndpoint pb_lb_endpoint_t;

static const struct {
    size_t off;
    const char *name;
    bool gauge;
} cluster_stats[] = {
#define S(f, g)                                                                                    \
    {                                                                                              \
        offsetof(mp_cluster_stats_t, f), #f, g                                                     \
    }
    S(upstream_rq_total, false),
    S(upstream_rq_2xx, false),
    S(upstream_rq_3xx, false),
    S(upstream_rq_4xx, false),
    S(upstream_rq_5xx, false),
    S(upstream_rq_timeout, false),
    S(upstream_rq_active, true),
    S(upstream_cx_total, false),
    S(upstream_cx_active, true),
    S(upstream_cx_connect_fail, false),
    S(upstream_cx_connect_timeout, false),
    S(upstream_cx_destroy, false),
    S(upstream_cx_rx_bytes_total, false),
    S(upstream_cx_tx_bytes_total, false),
    S(upstream_rq_pending_total, false),
    S(upstream_cx_idle_timeout, false),
    S(membership_total, true),
    S(membership_healthy, true),
    S(update_success, false),
    S(update_failure, false),
    S(update_rejected, false),
    S(upstream_cx_none_healthy, false),
    S(upstream_cx_http2_total, false),
    S(upstream_cx_protocol_error, false),
    S(upstream_rq_pending_overflow, false),
    S(upstream_cx_overflow, false),
    S(upstream_cx_pool_overflow, false),
    S(upstream_rq_per_try_timeout, false),
    S(upstream_rq_per_try_idle_timeout, false),
    S(upstream_rq_retry, false),
    S(upstream_rq_retry_success, false),
    S(upstream_rq_retry_limit_exceeded, false),
    S(upstream_rq_retry_overflow, false),
    S(upstream_rq_retry_backoff_exponential, false),
#undef S
};

/* Envoy names a cluster's stats after alt_stat_name when one is given. */
static void register_stats(mp_cluster_t *c, const char *stat_name)
{
    for (size_t i = 0; i < MP_ARRAY_SIZE(cluster_stats); i++) {
        mp_stat_id_t *id = (mp_stat_id_t *)((char *)&c->stats + cluster_stats[i].off);
        *id = cluster_stats[i].gauge
                  ? mp_stats_gaugef("cluster.%s.%s", stat_name, cluster_stats[i].name)
                  : mp_stats_counterf("cluster.%s.%s", stat_name, cluster_stats[i].name);
    }
}

/* Where the assignment comes from: a file (path_config_source) is read by xds/file_source.c;
 * any other source is the xDS client's, which fills the same resource store. */
static int translate_eds_config(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err)
{
    const Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig *ec = pb->eds_cluster_config;
    if (ec == NULL || ec->eds_config == NULL)
        return mp_err_set(err, "eds_cluster_config.eds_config: required for type EDS");
    const char *sn = ec->service_name;
    c->eds_name = mp_xstrdup(sn != NULL && sn[0] != '\0' ? sn : pb->name);
    const Envoy__Config__Core__V3__ConfigSource *cs = ec->eds_config;
    if (cs->config_source_specifier_case ==
        ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH)
        c->eds_path = mp_xstrdup(cs->path);
    else if (
        cs->config_source_specifier_case ==
            ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH_CONFIG_SOURCE &&
        cs->path_config_source != NULL)
        c->eds_path = mp_xstrdup(cs->path_config_source->path);
    return 0;
}

static int translate_type(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err)
{
    if (pb->cluster_discovery_type_case ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_CLUSTER_TYPE)
        return mp_err_set(err, "cluster_type: custom cluster types are not supported");
    switch (pb->type) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC:
        c->type = MP_CLUSTER_STATIC;
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS:
        c->type = MP_CLUSTER_STRICT_DNS;
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS:
        c->type = MP_CLUSTER_LOGICAL_DNS;
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS:
        c->type = MP_CLUSTER_EDS;
        return translate_eds_config(pb, c, err);
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST:
        return mp_err_set(err, "type: ORIGINAL_DST is not supported yet");
    default:
        return mp_err_set(err, "type: unknown discovery type %d", (int)pb->type);
    }
}

static int translate_lb(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err)
{
    c->least_request_choices = 2;
    switch (pb->lb_policy) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN:
        c->lb_policy = MP_LB_ROUND_ROBIN;
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM:
        c->lb_policy = MP_LB_RANDOM;
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST:
        c->lb_policy = MP_LB_LEAST_REQUEST;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RING_HASH:
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__MAGLEV:
        return mp_translate__hash_lb(pb, c, err);
    default:
        return mp_err_set(err, "lb_policy: only ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH and "
                               "MAGLEV are supported");
    }
    if (pb->lb_config_case ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_LEAST_REQUEST_LB_CONFIG)
        c->least_request_choices = mp_translate__u32(pb->least_request_lb_config->choice_count, 2);
    if (c->least_request_choices < 2)
        return mp_err_set(err, "least_request_lb_config.choice_count: must be at least 2");
    return 0;
}

static const mp_dns_family_t dns_families[] = {
    [ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__AUTO] = MP_DNS_AUTO,
    [ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_ONLY] = MP_DNS_V4_ONLY,
    [ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V6_ONLY] = MP_DNS_V6_ONLY,
    [ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_PREFERRED] = MP_DNS_V4_PREFERRED,
    [ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__ALL] = MP_DNS_ALL,
};

static int translate_timing(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err)
{
    if (mp_translate__duration_ms(pb->connect_timeout, 5000, &c->connect_timeout_ms, err) != 0)
        return mp_err_prefix(err, "connect_timeout");
    if (c->connect_timeout_ms == 0)
        return mp_err_set(err, "connect_timeout: must be greater than 0");
    if (mp_translate__duration_ms(pb->dns_refresh_rate, 5000, &c->dns_refresh_rate_ms, err) != 0)
        return mp_err_prefix(err, "dns_refresh_rate");
    if (pb->dns_refresh_rate != NULL && c->dns_refresh_rate_ms == 0)
        return mp_err_set(err, "dns_refresh_rate: must be at least 1ms");
    if ((unsigned)pb->dns_lookup_family >= MP_ARRAY_SIZE(dns_families))
        return mp_err_set(err, "dns_lookup_family: unknown value %d", (int)pb->dns_lookup_family);
    c->dns_family = dns_families[pb->dns_lookup_family];
    c->respect_dns_ttl = pb->respect_dns_ttl;
    c->per_connection_buffer_limit_bytes =
        mp_translate__u32(pb->per_connection_buffer_limit_bytes, DEFAULT_BUFFER_LIMIT);
    return 0;
}

static int apply_http_options(const pb_http_options_t *o, mp_cluster_t *c, mp_err_t *err)
{
    if (o == NULL)
        return 0;
    if (mp_translate__duration_ms(o->idle_timeout, c->pool_idle_timeout_ms,
                                  &c->pool_idle_timeout_ms, err) != 0)
        return mp_err_prefix(err, "idle_timeout");
    c->max_requests_per_connection =
        mp_translate__u32(o->max_requests_per_connection, c->max_requests_per_connection);
    return 0;
}

typedef Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions pb_ext_options_t;

/* Each branch of HttpProtocolOptions.upstream_protocol_options can carry HTTP/2 options; they
 * are translated (and range-checked) wherever they appear, so a config that is wrong today does
 * not become wrong only when the protocol switches. */
static int ext_h2(const Envoy__Config__Core__V3__Http2ProtocolOptions *h2,
                  const Envoy__Config__Core__V3__Http3ProtocolOptions *h3, const char *where,
                  mp_cluster_t *c, mp_err_t *err)
{
    if (h3 != NULL)
        return mp_err_set(err, "%s.http3_protocol_options: HTTP/3 is not supported", where);
    if (mp_translate__h2_options(h2, NULL, &c->h2, err) != 0)
        return mp_err_prefix(err, "%s.http2_protocol_options.", where);
    return 0;
}

/* protocol_config is a oneof: its three pointers share storage, so only the case may be read. */
static int apply_explicit(
    const Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__ExplicitHttpConfig *e,
    mp_cluster_t *c, mp_err_t *err)
{
    switch (e->protocol_config_case) {
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP2_PROTOCOL_OPTIONS:
        c->protocol = MP_UPSTREAM_HTTP2;
        return ext_h2(e->http2_protocol_options, NULL, "explicit_http_config", c, err);
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP3_PROTOCOL_OPTIONS:
        return ext_h2(NULL, e->http3_protocol_options, "explicit_http_config", c, err);
    default:
        /* http_protocol_options, or (Envoy) an empty explicit_http_config: HTTP/1.1. */
        c->protocol = MP_UPSTREAM_HTTP1;
        return 0;
    }
}

/* auto_config picks h2 or http/1.1 by ALPN on the upstream TLS handshake: until magpie chooses
 * that way the cluster speaks HTTP/1.1, the protocol Envoy falls back to without ALPN. */
static int apply_auto(const pb_ext_options_t *o, mp_cluster_t *c, mp_err_t *err)
{
    const Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__AutoHttpConfig *a =
        o->auto_config;
    mp_log_warn("cluster %s: auto_config (choosing the protocol by ALPN) is not supported yet; "
                "using HTTP/1.1",
                c->name);
    c->protocol = MP_UPSTREAM_HTTP1;
    return ext_h2(a->http2_protocol_options, a->http3_protocol_options, "auto_config", c, err);
}

static int apply_protocol_ext(const pb_ext_options_t *o, mp_cluster_t *c, mp_err_t *err)
{
    switch (o->upstream_protocol_options_case) {
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_EXPLICIT_HTTP_CONFIG:
        return apply_explicit(o->explicit_http_config, c, err);
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_USE_DOWNSTREAM_PROTOCOL_CONFIG:
        c->protocol = MP_UPSTREAM_USE_DOWNSTREAM;
        return ext_h2(o->use_downstream_protocol_config->http2_protocol_options,
                      o->use_downstream_protocol_config->http3_protocol_options,
                      "use_downstream_protocol_config", c, err);
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_AUTO_CONFIG:
        return apply_auto(o, c, err);
    default:
        return mp_err_set(err, "upstream_protocol_options: one of explicit_http_config, "
                               "use_downstream_protocol_config, auto_config is required");
    }
}

static int apply_ext(const pb_ext_options_t *o, mp_cluster_t *c, mp_err_t *err)
{
    if (o->n_http_filters > 0)
        return mp_err_set(err, "http_filters: upstream HTTP filters are not supported");
    if (apply_http_options(o->common_http_protocol_options, c, err) != 0)
        return mp_err_prefix(err, "common_http_protocol_options.");
    return apply_protocol_ext(o, c, err);
}

/* typed_extension_protocol_options is a map from an extension's name to its Any; the only one
 * magpie knows is HttpProtocolOptions, keyed by its own type name.  The Any must hold that type
 * (mp_pb_any_unpack checks it against the descriptor).  *found tells whether it was there. */
static int translate_typed_http_options(const mp_pb_cluster_t *pb, mp_cluster_t *c, bool *found,
                                        mp_err_t *err)
{
    *found = false;
    for (size_t i = 0; i < pb->n_typed_extension_protocol_options; i++) {
        const char *key = pb->typed_extension_protocol_options[i]->key;
        const Google__Protobuf__Any *any = pb->typed_extension_protocol_options[i]->value;
        if (strcmp(key, HTTP_OPTIONS_EXT) != 0)
            return mp_err_set(err,
                              "typed_extension_protocol_options[\"%s\"]: unknown extension (only "
                              "\"" HTTP_OPTIONS_EXT "\" is supported)",
                              key);
        if (any == NULL || any->type_url == NULL || any->type_url[0] == '\0')
            return mp_err_set(err, "typed_extension_protocol_options[\"%s\"].@type: required", key);
        ProtobufCMessage *m = mp_pb_any_unpack(
            &any->base, &envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor,
            err);
        if (m == NULL)
            return mp_err_prefix(err, "typed_extension_protocol_options[\"%s\"]: ", key);
        int rc = apply_ext((pb_ext_options_t *)m, c, err);
        protobuf_c_message_free_unpacked(m, NULL);
        if (rc != 0)
            return mp_err_prefix(err, "typed_extension_protocol_options[\"%s\"].", key);
        *found = true;
    }
    return 0;
}

/* The deprecated cluster fields, which Envoy reads only when the extension is absent. */
static int translate_deprecated_protocol(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err)
{
    bool downstream =
        pb->protocol_selection ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_PROTOCOL_SELECTION__USE_DOWNSTREAM_PROTOCOL;
    if (!downstream && pb->http_protocol_options != NULL && pb->http2_protocol_options != NULL)
        return mp_err_set(err, "http2_protocol_options: http_protocol_options and "
                               "http2_protocol_options can only both be set with "
                               "protocol_selection USE_DOWNSTREAM_PROTOCOL");
    if (mp_translate__h2_options(pb->http2_protocol_options, NULL, &c->h2, err) != 0)
        return mp_err_prefix(err, "http2_protocol_options.");
    if (downstream)
        c->protocol = MP_UPSTREAM_USE_DOWNSTREAM;
    else if (pb->http2_protocol_options != NULL)
        c->protocol = MP_UPSTREAM_HTTP2;
    return 0;
}

static int translate_http_options(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err)
{
    c->pool_idle_timeout_ms = 3600000;
    c->max_requests_per_connection = mp_translate__u32(pb->max_requests_per_connection, 0);
    c->protocol = MP_UPSTREAM_HTTP1;
    mp_h2_options_default(&c->h2);
    if (apply_http_options(pb->common_http_protocol_options, c, err) != 0)
        return mp_err_prefix(err, "common_http_protocol_options.");
    bool ext = false;
    if (translate_typed_http_options(pb, c, &ext, err) != 0)
        return MP_ERROR;
    if (!ext)
        return translate_deprecated_protocol(pb, c, err);
    if (pb->http2_protocol_options != NULL || pb->protocol_selection != 0)
        mp_log_warn("cluster %s: http2_protocol_options and protocol_selection are ignored: "
                    "typed_extension_protocol_options[\"" HTTP_OPTIONS_EXT "\"] sets the protocol",
                    c->name);
    return 0;
}

static int translate_endpoint(const pb_lb_endpoint_t *le, const mp_cluster_t *c,
                              mp_endpoint_spec_t *out, mp_err_t *err)
{
    if (le->host_identifier_case !=
        ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT)
        return mp_err_set(err, "endpoint: required (endpoint_name is not supported)");
    const mp_pb_address_t *a = le->endpoint->address;
    if (a == NULL || a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS)
        return mp_err_set(err, "endpoint.address.socket_address: required");
    const Envoy__Config__Core__V3__SocketAddress *sa = a->socket_address;
    if (sa->port_specifier_case !=
            ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE ||
        sa->port_value == 0 || sa->port_value > 65535)
        return mp_err_set(err, "endpoint.address.socket_address.port_value: a port is required");
    mp_addr_t tmp;
    if ((c->type == MP_CLUSTER_STATIC || c->type == MP_CLUSTER_EDS) &&
        mp_translate__address(a, &tmp, err) != 0)
        return mp_err_prefix(err, "endpoint.address.");
    if (sa->address == NULL || sa->address[0] == '\0')
        return mp_err_set(err, "endpoint.address.socket_address.address: required");
    out->address = mp_xstrdup(sa->address);
    out->port = (uint16_t)sa->port_value;
    out->weight = mp_translate__u32(le->load_balancing_weight, 1);
    if (out->weight == 0)
        return mp_err_set(err, "load_balancing_weight: must be at least 1");
    return 0;
}

static char *dup_or_empty(const char *s)
{
    return mp_xstrdup(s ? s : "");
}

/* The index of loc in c->localities, added when new.  An absent locality is the empty one. */
static uint32_t locality_index(mp_cluster_t *c, const Envoy__Config__Core__V3__Locality *loc)
{
    mp_locality_t l = {
        .region = loc ? loc->region : NULL,
        .zone = loc ? loc->zone : NULL,
        .sub_zone = loc ? loc->sub_zone : NULL,
    };
    for (uint32_t i = 0; i < c->n_localities; i++)
        if (mp_locality_equal(&c->localities[i], &l))
            return i;
    c->localities = mp_xrealloc(c->localities, (c->n_localities + 1) * sizeof(*c->localities));
    mp_locality_t *n = &c->localities[c->n_localities];
    n->region = dup_or_empty(l.region);
    n->zone = dup_or_empty(l.zone);
    n->sub_zone = dup_or_empty(l.sub_zone);
    return c->n_localities++;
}

static uint8_t eds_health(Envoy__Config__Core__V3__HealthStatus st)
{
    switch (st) {
    case ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY:
    case ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DRAINING:
    case ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__TIMEOUT:
        return MP_EDS_UNHEALTHY;
    case ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DEGRADED:
        return MP_EDS_DEGRADED;
    default:
        return MP_EDS_HEALTHY;
    }
}

/* Envoy refuses a locality listed twice in one priority: its weight would be ambiguous. */
static int check_locality_unique(const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la,
                                 size_t i, const mp_cluster_t *c, const uint32_t *loc_of,
                                 mp_err_t *err)
{
    for (size_t j = 0; j < i; j++)
        if (la->endpoints[j]->priority == la->endpoints[i]->priority && loc_of[j] == loc_of[i])
            return mp_err_set(err,
                              "load_assignment.endpoints[%zu].locality: locality "
                              "{region \"%s\", zone \"%s\", sub_zone \"%s\"} is already "
                              "listed for priority %u",
                              i, c->localities[loc_of[i]].region, c->localities[loc_of[i]].zone,
                              c->localities[loc_of[i]].sub_zone, la->endpoints[i]->priority);
    return 0;
}

static int translate_locality(const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *loc, size_t i,
                              mp_cluster_t *c, uint32_t li, mp_err_t *err)
{
    if (loc->priority >= MP_MAX_PRIORITIES)
        return mp_err_set(err, "load_assignment.endpoints[%zu].priority: %u is above the limit %u",
                          i, loc->priority, MP_MAX_PRIORITIES - 1);
    uint32_t lw = mp_translate__u32(loc->load_balancing_weight, 0);
    if (loc->load_balancing_weight != NULL && lw == 0)
        return mp_err_set(err,
                          "load_assignment.endpoints[%zu].load_balancing_weight: must be at "
                          "least 1",
                          i);
    for (size_t j = 0; j < loc->n_lb_endpoints; j++) {
        mp_endpoint_spec_t *ep = &c->endpoints[c->n_endpoints++];
        if (translate_endpoint(loc->lb_endpoints[j], c, ep, err) != 0)
            return mp_err_prefix(err, "load_assignment.endpoints[%zu].lb_endpoints[%zu].", i, j);
        ep->priority = loc->priority;
        ep->locality = li;
        ep->locality_weight = lw;
        ep->eds_health = eds_health(loc->lb_endpoints[j]->health_status);
    }
    return 0;
}

static int translate_policy(const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la,
                            mp_cluster_t *c, mp_err_t *err)
{
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment__Policy *p = la ? la->policy : NULL;
    c->overprovisioning_factor = 140;
    if (p == NULL)
        return 0;
    c->overprovisioning_factor = mp_translate__u32(p->overprovisioning_factor, 140);
    if (c->overprovisioning_factor == 0)
        return mp_err_set(err, "load_assignment.policy.overprovisioning_factor: must be at least "
                               "1");
    if (p->weighted_priority_health)
        return mp_err_set(err, "load_assignment.policy.weighted_priority_health: not supported "
                               "(priority health counts hosts)");
    if (p->n_drop_overloads > 0)
        return mp_err_set(err, "load_assignment.policy.drop_overloads: not supported");
    return 0;
}

static int translate_assignment(const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la,
                                mp_cluster_t *c, mp_err_t *err)
{
    size_t total = 0, n_loc = la != NULL ? la->n_endpoints : 0;
    for (size_t i = 0; i < n_loc; i++)
        total += la->endpoints[i]->n_lb_endpoints;
    c->endpoints = mp_xcalloc(total, sizeof(*c->endpoints));
    c->local_locality = -1;
    uint32_t *loc_of = mp_xcalloc(n_loc ? n_loc : 1, sizeof(*loc_of));
    int rc = translate_policy(la, c, err);
    for (size_t i = 0; rc == 0 && i < n_loc; i++) {
        loc_of[i] = locality_index(c, la->endpoints[i]->locality);
        rc = check_locality_unique(la, i, c, loc_of, err);
        if (rc == 0)
            rc = translate_locality(la->endpoints[i], i, c, loc_of[i], err);
    }
    free(loc_of);
    if (rc != 0)
        return rc;
    /* Envoy resolves one name for a logical DNS cluster and connects to its first address. */
    if (c->type == MP_CLUSTER_LOGICAL_DNS && total != 1)
        return mp_err_set(err, "load_assignment: LOGICAL_DNS clusters must have exactly one "
                               "endpoint");
    return 0;
}

/* An EDS cluster starts from the assignment stored under its name, or with no hosts. */
static int translate_endpoints(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err)
{
    if (c->type != MP_CLUSTER_EDS)
        return translate_assignment(pb->load_assignment, c, err);
    const ProtobufCMessage *la = mp_rstore_get(
        &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, c->eds_name);
    if (translate_assignment((const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)la, c,
                             err) != 0)
        return mp_err_prefix(err, "(ClusterLoadAssignment \"%s\") ", c->eds_name);
    return 0;
}

/* The endpoints' hosts, without health: the caller adopts the current set's. */
static mp_hostset_t *hosts_of(const mp_cluster_t *c, mp_err_t *err)
{
    mp_hostset_t *hs = mp_hostset_new(c->n_endpoints);
    for (uint32_t i = 0; i < c->n_endpoints; i++) {
        const mp_endpoint_spec_t *ep = &c->endpoints[i];
        if (mp_addr_parse(&hs->hosts[i].addr, ep->address, ep->port) != 0) {
            mp_hostset_release(hs);
            mp_err_set(err, "endpoints[%u].address: \"%s\" is not an IP address", i, ep->address);
            return NULL;
        }
        mp_host_from_spec(&hs->hosts[i], ep);
    }
    mp_hostset_finish(hs);
    return hs;
}

static bool same_localities(const mp_cluster_t *a, const mp_cluster_t *b)
{
    if (a->n_localities != b->n_localities ||
        a->overprovisioning_factor != b->overprovisioning_factor)
        return false;
    for (uint32_t i = 0; i < a->n_localities; i++)
        if (!mp_locality_equal(&a->localities[i], &b->localities[i]))
            return false;
    return true;
}

mp_hostset_t *mp_translate_eds_hosts(const mp_cluster_t *c, const ProtobufCMessage *cla, bool *fits,
                                     mp_err_t *err)
{
    mp_cluster_t *tmp = mp_xcalloc(1, sizeof(*tmp));
    atomic_init(&tmp->refs, 1);
    tmp->type = MP_CLUSTER_EDS;
    tmp->name = mp_xstrdup(c->name);
    mp_hostset_t *hs = NULL;
    if (translate_assignment((const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)cla, tmp,
                             err) == 0)
        hs = hosts_of(tmp, err);
    if (hs != NULL)
        *fits = same_localities(c, tmp);
    mp_config__cluster_free(tmp);
    return hs;
}

typedef Envoy__Config__Cluster__V3__Cluster__CommonLbConfig pb_common_lb_t;

static int percent(const Envoy__Type__V3__Percent *p, double def, const char *what, double *out,
                   mp_err_t *err)
{
    *out = p != NULL ? p->value : def;
    if (!(*out >= 0 && *out <= 100))
        return mp_err_set(err, "common_lb_config.%s: must be between 0 and 100", what);
    return 0;
}

static int translate_zone_aware(const pb_common_lb_t *cl, mp_cluster_t *c, mp_err_t *err)
{
    const Envoy__Config__Cluster__V3__Cluster__CommonLbConfig__ZoneAwareLbConfig *z =
        cl->zone_aware_lb_config;
    double pct;
    if (percent(z->routing_enabled, 100, "zone_aware_lb_config.routing_enabled", &pct, err) != 0)
        return MP_ERROR;
    c->zone_routing_enabled = (uint32_t)(pct * 100 + 0.5);
    c->zone_min_cluster_size = z->min_cluster_size ? z->min_cluster_size->value : 6;
    c->fail_traffic_on_panic = z->fail_traffic_on_panic;
    c->locality_lb = MP_LOCALITY_LB_ZONE_AWARE;
    return 0;
}

/* common_lb_config: panic threshold and the locality mode.  Without zone_aware_lb_config, zone
 * aware routing still applies when the bootstrap names a local cluster (Envoy does the same);
 * the bootstrap translator switches it on then (mp_translate__cluster_locality). */
static int translate_common_lb(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err)
{
    const pb_common_lb_t *cl = pb->common_lb_config;
    c->panic_threshold = 50;
    c->zone_routing_enabled = 10000;
    c->zone_min_cluster_size = 6;
    if (cl == NULL)
        return 0;
    double pct;
    if (percent(cl->healthy_panic_threshold, 50, "healthy_panic_threshold", &pct, err) != 0)
        return MP_ERROR;
    /* Envoy compares an integer percentage of hosts against the threshold as a double; the
     * threshold itself is read as an integer from runtime, so fractions are dropped there too. */
    c->panic_threshold = (uint32_t)pct;
    switch (cl->locality_config_specifier_case) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__COMMON_LB_CONFIG__LOCALITY_CONFIG_SPECIFIER_ZONE_AWARE_LB_CONFIG:
        return translate_zone_aware(cl, c, err);
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__COMMON_LB_CONFIG__LOCALITY_CONFIG_SPECIFIER_LOCALITY_WEIGHTED_LB_CONFIG:
        c->locality_lb = MP_LOCALITY_LB_WEIGHTED;
        return 0;
    default:
        return 0;
    }
}

static int check_unsupported(const mp_pb_cluster_t *pb, mp_err_t *err)
{
    if (pb->n_transport_socket_matches > 0)
        return mp_err_set(err, "transport_socket_matches: not supported yet");
    return 0;
}

static int translate_fields(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err)
{
    if (check_unsupported(pb, err) != 0 || translate_type(pb, c, err) != 0 ||
        translate_lb(pb, c, err) != 0 || translate_timing(pb, c, err) != 0 ||
        translate_http_options(pb, c, err) != 0 || translate_endpoints(pb, c, err) != 0 ||
        translate_common_lb(pb, c, err) != 0 || mp_translate__circuit_breakers(pb, c, err) != 0 ||
        mp_translate__health_checks(pb, c, err) != 0)
        return MP_ERROR;
    return mp_cluster_init_static_hosts(c, err);
}

/* An HTTP/1.1 cluster whose alpn_protocols offers h2 breaks against any server that prefers h2:
 * the server switches to HTTP/2 and magpie speaks HTTP/1.1.  Envoy has the same trap; say so at
 * load rather than as 503s later.  (A TCP proxy passes the bytes through and is unaffected.) */
static void warn_alpn_mismatch(const mp_cluster_t *c)
{
    if (c->tls == NULL || c->tls->alpn == NULL || c->protocol == MP_UPSTREAM_HTTP2)
        return;
    for (uint32_t i = 0; i < c->tls->alpn_len; i += 1u + c->tls->alpn[i]) {
        if (c->tls->alpn[i] == 2 && i + 2 < c->tls->alpn_len &&
            memcmp(&c->tls->alpn[i + 1], "h2", 2) == 0) {
            mp_log_warn("cluster %s: alpn_protocols offers h2 but HTTP routes speak HTTP/1.1 to "
                        "this cluster; a server that chooses h2 will fail every request "
                        "(configure http2_protocol_options, or drop h2 from alpn_protocols)",
                        c->name);
            return;
        }
    }
}

void mp_translate__cluster_locality(mp_cluster_t *c, const mp_config_t *cfg)
{
    c->local_locality = -1;
    for (uint32_t i = 0; i < c->n_localities; i++)
        if (mp_locality_equal(&c->localities[i], &cfg->node_locality))
            c->local_locality = (int32_t)i;
    c->local_cluster = cfg->local_cluster_name != NULL
                           ? mp_config_find_cluster(cfg, cfg->local_cluster_name)
                           : NULL;
    if (c->local_cluster != NULL && c->locality_lb == MP_LOCALITY_LB_NONE)
        c->locality_lb = MP_LOCALITY_LB_ZONE_AWARE;
}

mp_cluster_t *mp_translate__cluster(const mp_pb_cluster_t *pb, uint32_t index, mp_err_t *err)
{
    if (pb->name == NULL || pb->name[0] == '\0') {
        mp_err_set(err, "name: required");
        return NULL;
    }
    mp_cluster_t *c = mp_xcalloc(1, sizeof(*c));
    atomic_init(&c->refs, 1);
    for (int p = 0; p < MP_PRIORITY_COUNT; p++)
        mp_cb_limits_default(&c->cb_limits[p]);
    c->name = mp_xstrdup(pb->name);
    c->index = index;
    if (translate_fields(pb, c, err) != 0) {
        mp_config__cluster_free(c);
        return NULL;
    }
    const char *stat_name =
        pb->alt_stat_name && pb->alt_stat_name[0] ? pb->alt_stat_name : pb->name;
    char *prefix = mp_xasprintf("cluster.%s.", stat_name);
    int rc = mp_translate__transport_socket(pb->transport_socket, false, prefix, &c->tls, err);
    free(prefix);
    if (rc != 0) {
        mp_config__cluster_free(c);
        mp_err_prefix(err, "transport_socket.");
        return NULL;
    }
    warn_alpn_mismatch(c);
    register_stats(c, stat_name);
    mp_translate__circuit_stats(c, stat_name);
    if (mp_translate__outlier(pb, c, stat_name, err) != 0) {
        mp_config__cluster_free(c);
        return NULL;
    }
    return c;
}
