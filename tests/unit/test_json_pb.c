/* The proto3 JSON mapping and the YAML reader, on the real generated Envoy types. */
#include <stdlib.h>
#include <string.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "magpie/json_pb.h"
#include "unit.h"

typedef Envoy__Config__Bootstrap__V3__Bootstrap bootstrap_t;
typedef Envoy__Config__Cluster__V3__Cluster cluster_t;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager hcm_t;
#define BOOTSTRAP_DESC (&envoy__config__bootstrap__v3__bootstrap__descriptor)
#define CLUSTER_DESC (&envoy__config__cluster__v3__cluster__descriptor)
#define HCM_DESC                                                                                   \
    (&envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor)

static const char BOOTSTRAP_YAML[] =
    "node:\n"
    "  id: sidecar~10.0.0.1~app.default~default.svc.cluster.local\n"
    "  cluster: app.default\n"
    "  metadata: {ISTIO_VERSION: \"1.20\", LABELS: {app: demo}, count: 3}\n"
    "admin:\n"
    "  address: {socket_address: {address: 127.0.0.1, port_value: 15000}}\n"
    "static_resources:\n"
    "  listeners:\n"
    "  - name: http\n"
    "    address:\n"
    "      socket_address: {address: 0.0.0.0, port_value: 8080}\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.http_connection_manager\n"
    "        typed_config:\n"
    "          \"@type\": type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
    "          stat_prefix: ingress_http\n"
    "          codec_type: AUTO\n"
    "          stream_idle_timeout: 300s\n"
    "          route_config:\n"
    "            name: local_route\n"
    "            virtual_hosts:\n"
    "            - name: backend\n"
    "              domains: [\"*\"]\n"
    "              routes:\n"
    "              - match: {prefix: /}\n"
    "                route: {cluster: service, timeout: 1.5s}\n"
    "          http_filters:\n"
    "          - name: envoy.filters.http.router\n"
    "            typed_config:\n"
    "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n"
    "  clusters:\n"
    "  - name: service\n"
    "    type: STRICT_DNS\n"
    "    connect_timeout: 0.25s\n"
    "    lb_policy: ROUND_ROBIN\n"
    "    circuit_breakers:\n"
    "      thresholds: [{max_connections: 100, max_retries: 3}]\n"
    "    typed_extension_protocol_options:\n"
    "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
    "        \"@type\": "
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
    "        explicit_http_config: {http2_protocol_options: {}}\n"
    "    load_assignment:\n"
    "      cluster_name: service\n"
    "      endpoints:\n"
    "      - lb_endpoints:\n"
    "        - endpoint: {address: {socket_address: {address: backend, port_value: 9000}}}\n";

static const char BOOTSTRAP_JSON[] =
    "{\"node\": {\"id\": \"sidecar~10.0.0.1~app.default~default.svc.cluster.local\","
    "  \"cluster\": \"app.default\","
    "  \"metadata\": {\"ISTIO_VERSION\": \"1.20\", \"LABELS\": {\"app\": \"demo\"}, \"count\": 3}},"
    " \"admin\": {\"address\": {\"socketAddress\": {\"address\": \"127.0.0.1\", "
    "\"portValue\": 15000}}},"
    " \"staticResources\": {\"listeners\": [{\"name\": \"http\","
    "   \"address\": {\"socketAddress\": {\"address\": \"0.0.0.0\", \"portValue\": 8080}},"
    "   \"filterChains\": [{\"filters\": [{\"name\": "
    "\"envoy.filters.network.http_connection_manager\","
    "     \"typedConfig\": {\"@type\": \"type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\","
    "       \"statPrefix\": \"ingress_http\", \"codecType\": \"AUTO\", \"streamIdleTimeout\": "
    "\"300s\","
    "       \"routeConfig\": {\"name\": \"local_route\", \"virtualHosts\": [{\"name\": \"backend\","
    "         \"domains\": [\"*\"], \"routes\": [{\"match\": {\"prefix\": \"/\"},"
    "         \"route\": {\"cluster\": \"service\", \"timeout\": \"1.5s\"}}]}]},"
    "       \"httpFilters\": [{\"name\": \"envoy.filters.http.router\", \"typedConfig\": "
    "{\"@type\": \"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\"}}]}}]}]}],"
    "  \"clusters\": [{\"name\": \"service\", \"type\": \"STRICT_DNS\", \"connectTimeout\": "
    "\"0.25s\","
    "   \"lbPolicy\": \"ROUND_ROBIN\","
    "   \"circuitBreakers\": {\"thresholds\": [{\"maxConnections\": 100, \"maxRetries\": 3}]},"
    "   \"typedExtensionProtocolOptions\": {\"envoy.extensions.upstreams.http.v3."
    "HttpProtocolOptions\": {\"@type\": \"type.googleapis.com/"
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions\","
    "     \"explicitHttpConfig\": {\"http2ProtocolOptions\": {}}}},"
    "   \"loadAssignment\": {\"clusterName\": \"service\", \"endpoints\": [{\"lbEndpoints\": "
    "[{\"endpoint\": {\"address\": {\"socketAddress\": {\"address\": \"backend\", "
    "\"portValue\": 9000}}}}]}]}}]}}";

/* ---- helpers ---- */

static ProtobufCMessage *parse_text(const ProtobufCMessageDescriptor *d, const char *text,
                                    mp_err_t *err)
{
    cJSON *json = mp_config_text_to_json(text, strlen(text), err);
    if (json == NULL)
        return NULL;
    ProtobufCMessage *m = mp_json_to_pb(d, json, err);
    cJSON_Delete(json);
    return m;
}

/* Packs m; the caller frees.  Identical bytes mean identical messages for our purposes. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len ? *len : 1);
    protobuf_c_message_pack(m, buf);
    return buf;
}

static bool same_bytes(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t la, lb;
    uint8_t *pa = pack(a, &la), *pb = pack(b, &lb);
    bool same = la == lb && memcmp(pa, pb, la) == 0;
    free(pa);
    free(pb);
    return same;
}

/* Parses text as type d and expects the exact error message. */
static void expect_error(const ProtobufCMessageDescriptor *d, const char *text, const char *want)
{
    mp_err_t err = {{0}};
    ProtobufCMessage *m = parse_text(d, text, &err);
    CHECK(m == NULL);
    if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    CHECK_STR(err.msg, want);
}

/* ---- tests ---- */

static void test_bootstrap_yaml_and_json_agree(void)
{
    mp_err_t err = {{0}};
    bootstrap_t *y = (bootstrap_t *)parse_text(BOOTSTRAP_DESC, BOOTSTRAP_YAML, &err);
    CHECK_STR(err.msg, "");
    bootstrap_t *j = (bootstrap_t *)parse_text(BOOTSTRAP_DESC, BOOTSTRAP_JSON, &err);
    CHECK_STR(err.msg, "");
    CHECK(y != NULL && j != NULL);
    if (y == NULL || j == NULL)
        return;
    /* snake_case YAML and lowerCamelCase JSON give byte-identical messages */
    CHECK(same_bytes(&y->base, &j->base));
    CHECK_STR(y->node->cluster, "app.default");
    CHECK_INT(y->admin->address->socket_address->port_value, 15000);
    CHECK_INT(y->static_resources->n_listeners, 1);
    cluster_t *c = y->static_resources->clusters[0];
    CHECK_INT(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS);
    CHECK_INT(c->cluster_discovery_type_case,
              ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE);
    CHECK_INT(c->connect_timeout->seconds, 0);
    CHECK_INT(c->connect_timeout->nanos, 250000000);
    CHECK_INT(c->circuit_breakers->thresholds[0]->max_connections->value, 100);
    CHECK_INT(c->n_typed_extension_protocol_options, 1);
    CHECK_STR(c->typed_extension_protocol_options[0]->key,
              "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    CHECK_STR(c->load_assignment->endpoints[0]
                  ->lb_endpoints[0]
                  ->endpoint->address->socket_address->address,
              "backend");
    protobuf_c_message_free_unpacked(&y->base, NULL);
    protobuf_c_message_free_unpacked(&j->base, NULL);
}

static void test_any_hcm_in_filter(void)
{
    mp_err_t err = {{0}};
    bootstrap_t *b = (bootstrap_t *)parse_text(BOOTSTRAP_DESC, BOOTSTRAP_YAML, &err);
    CHECK(b != NULL);
    if (b == NULL)
        return;
    Envoy__Config__Listener__V3__Filter *f =
        b->static_resources->listeners[0]->filter_chains[0]->filters[0];
    CHECK_STR(f->typed_config->type_url,
              "type.googleapis.com/"
              "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager");
    hcm_t *h = (hcm_t *)mp_pb_any_unpack(&f->typed_config->base, HCM_DESC, &err);
    CHECK(h != NULL);
    if (h != NULL) {
        CHECK_STR(h->stat_prefix, "ingress_http");
        CHECK_INT(h->stream_idle_timeout->seconds, 300);
        CHECK_STR(h->route_config->virtual_hosts[0]->domains[0], "*");
        CHECK_STR(h->route_config->virtual_hosts[0]->routes[0]->route->cluster, "service");
        CHECK_INT(h->route_config->virtual_hosts[0]->routes[0]->route->timeout->nanos, 500000000);
        CHECK_INT(h->n_http_filters, 1);
        /* an expected type that does not match is refused */
        ProtobufCMessage *wrong =
            mp_pb_any_unpack(&h->http_filters[0]->typed_config->base, HCM_DESC, &err);
        CHECK(wrong == NULL);
        CHECK_STR(err.msg, "expected type "
                           "envoy.extensions.filters.network.http_connection_manager.v3."
                           "HttpConnectionManager, got envoy.extensions.filters.http.router.v3."
                           "Router");
        protobuf_c_message_free_unpacked(&h->base, NULL);
    }
    protobuf_c_message_free_unpacked(&b->base, NULL);
}

static void test_round_trip(void)
{
    mp_err_t err = {{0}};
    bootstrap_t *a = (bootstrap_t *)parse_text(BOOTSTRAP_DESC, BOOTSTRAP_YAML, &err);
    CHECK(a != NULL);
    if (a == NULL)
        return;
    cJSON *json = mp_pb_to_json(&a->base, &err);
    CHECK(json != NULL);
    /* written in lowerCamelCase, Any with "@type", durations as strings, defaults omitted */
    char *text = cJSON_PrintUnformatted(json);
    CHECK(strstr(text, "\"staticResources\"") != NULL);
    CHECK(strstr(text, "\"connectTimeout\":\"0.250s\"") != NULL);
    CHECK(strstr(text, "\"@type\":\"type.googleapis.com/envoy.extensions.filters.http.router.v3."
                       "Router\"") != NULL);
    CHECK(strstr(text, "\"lbPolicy\"") == NULL);
    CHECK(strstr(text, "\"count\":3") != NULL);
    ProtobufCMessage *b = mp_json_to_pb(BOOTSTRAP_DESC, json, &err);
    CHECK(b != NULL);
    if (b != NULL) {
        CHECK(same_bytes(&a->base, b));
        protobuf_c_message_free_unpacked(b, NULL);
    }
    free(text);
    cJSON_Delete(json);
    protobuf_c_message_free_unpacked(&a->base, NULL);
}

static void test_error_paths(void)
{
    expect_error(BOOTSTRAP_DESC,
                 "static_resources:\n  clusters:\n  - name: a\n  - name: b\n"
                 "    connect_timeout: 5x\n",
                 "static_resources.clusters[1].connect_timeout: invalid duration \"5x\"");
    expect_error(BOOTSTRAP_DESC, "{\"static_resources\": {\"listeners\": [{\"foo\": 1}]}}",
                 "static_resources.listeners[0].foo: unknown field");
    /* path segments are the names as written, camelCase included */
    expect_error(BOOTSTRAP_DESC, "{\"staticResources\": {\"clusters\": [{\"lbPolicy\": \"FOO\"}]}}",
                 "staticResources.clusters[0].lbPolicy: unknown enum value \"FOO\"");
    expect_error(CLUSTER_DESC, "lb_policy: FOO", "lb_policy: unknown enum value \"FOO\"");
    expect_error(CLUSTER_DESC, "name: [1]", "name: expected string, got array");
    expect_error(CLUSTER_DESC, "connect_timeout: 5",
                 "connect_timeout: expected duration string, "
                 "got number");
    expect_error(CLUSTER_DESC, "per_connection_buffer_limit_bytes: 1.5",
                 "per_connection_buffer_limit_bytes: invalid integer 1.5");
    expect_error(CLUSTER_DESC, "per_connection_buffer_limit_bytes: 4294967296",
                 "per_connection_buffer_limit_bytes: integer 4294967296 out of range");
    expect_error(CLUSTER_DESC, "per_connection_buffer_limit_bytes: -1",
                 "per_connection_buffer_limit_bytes: integer -1 out of range");
    expect_error(CLUSTER_DESC, "close_connections_on_host_health_failure: \"yes\"",
                 "close_connections_on_host_health_failure: expected boolean, got string");
    expect_error(CLUSTER_DESC, "lb_policy: 4", "lb_policy: unknown enum value 4");
    /* two members of one oneof */
    expect_error(CLUSTER_DESC, "type: STATIC\ncluster_type: {name: x}",
                 "cluster_type: only one of \"type\" and \"cluster_type\" may be set");
    expect_error(CLUSTER_DESC, "{\"name\": \"a\", \"name\": \"b\"}",
                 "name: field \"name\" set twice");
    expect_error(CLUSTER_DESC,
                 "transport_socket: {typed_config: {\"@type\": \"type.googleapis.com/"
                 "no.such.Type\"}}",
                 "transport_socket.typed_config.@type: unknown type "
                 "\"type.googleapis.com/no.such.Type\"");
    expect_error(CLUSTER_DESC, "transport_socket: {typed_config: {name: x}}",
                 "transport_socket.typed_config.@type: missing");
    expect_error(CLUSTER_DESC, "[]", "expected object, got array");
    expect_error(CLUSTER_DESC, "metadata: {filter_metadata: {istio: 5}}",
                 "metadata.filter_metadata[\"istio\"]: expected object, got number");
    expect_error(CLUSTER_DESC, "{\"name\": ", "line 1, column 9: invalid JSON");
    expect_error(CLUSTER_DESC, "name: [\n", "line 2, column 1: did not find expected node content");
}

static void test_limits(void)
{
    /* 70 nested objects inside a Struct: past the 64 limit */
    char deep[1024] = "{\"metadata\": {\"filter_metadata\": {\"k\": ";
    for (int i = 0; i < 70; i++)
        strcat(deep, "{\"a\":");
    strcat(deep, "1");
    for (int i = 0; i < 70; i++)
        strcat(deep, "}");
    strcat(deep, "}}}");
    mp_err_t err = {{0}};
    ProtobufCMessage *m = parse_text(CLUSTER_DESC, deep, &err);
    CHECK(m == NULL);
    CHECK(strstr(err.msg, "nesting deeper than 64") != NULL);

    size_t n = 1024 * 1024 + 1;
    char *big = malloc(n + 32);
    strcpy(big, "{\"name\": \"");
    memset(big + 10, 'a', n);
    strcpy(big + 10 + n, "\"}");
    m = parse_text(CLUSTER_DESC, big, &err);
    CHECK(m == NULL);
    CHECK_STR(err.msg, "name: string longer than 1048576 bytes");
    free(big);
}

static void test_durations(void)
{
    static const struct {
        const char *text;
        long long sec;
        int nanos;
        const char *out; /* protobuf prints 0, 3, 6 or 9 fraction digits */
    } ok[] = {
        {"1.5s", 1, 500000000, "1.500s"},
        {"-0.001s", 0, -1000000, "-0.001s"},
        {"300s", 300, 0, "300s"},
        {"0s", 0, 0, "0s"},
        {"1.000340012s", 1, 340012, "1.000340012s"},
        {"-2.5s", -2, -500000000, "-2.500s"},
        {"0.000001s", 0, 1000, "0.000001s"},
        {".5s", 0, 500000000, "0.500s"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        cJSON *j = cJSON_CreateString(ok[i].text);
        mp_err_t err = {{0}};
        Google__Protobuf__Duration *d = (Google__Protobuf__Duration *)mp_json_to_pb(
            &google__protobuf__duration__descriptor, j, &err);
        CHECK(d != NULL);
        if (d != NULL) {
            CHECK_INT(d->seconds, ok[i].sec);
            CHECK_INT(d->nanos, ok[i].nanos);
            cJSON *back = mp_pb_to_json(&d->base, &err);
            CHECK_STR(cJSON_GetStringValue(back), ok[i].out);
            cJSON_Delete(back);
            protobuf_c_message_free_unpacked(&d->base, NULL);
        }
        cJSON_Delete(j);
    }
    static const char *bad[] = {"5x", "5", "s", "1.s", "1.0000000001s", "--1s", "1.5 s", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cJSON *j = cJSON_CreateString(bad[i]);
        mp_err_t err = {{0}};
        ProtobufCMessage *m = mp_json_to_pb(&google__protobuf__duration__descriptor, j, &err);
        CHECK(m == NULL);
        CHECK(strncmp(err.msg, "invalid duration", 16) == 0);
        cJSON_Delete(j);
    }
}

static void test_timestamp(void)
{
    mp_err_t err = {{0}};
    cJSON *j = cJSON_CreateString("1972-01-01T10:00:20.021+01:00");
    Google__Protobuf__Timestamp *t = (Google__Protobuf__Timestamp *)mp_json_to_pb(
        &google__protobuf__timestamp__descriptor, j, &err);
    CHECK(t != NULL);
    if (t != NULL) {
        CHECK_INT(t->seconds, 63108020 - 3600);
        CHECK_INT(t->nanos, 21000000);
        cJSON *back = mp_pb_to_json(&t->base, &err);
        CHECK_STR(cJSON_GetStringValue(back), "1972-01-01T09:00:20.021Z");
        cJSON_Delete(back);
        protobuf_c_message_free_unpacked(&t->base, NULL);
    }
    cJSON_Delete(j);
    expect_error(&google__protobuf__timestamp__descriptor, "\"1972-13-01T00:00:00Z\"",
                 "invalid timestamp \"1972-13-01T00:00:00Z\"");
}

static void test_wrappers_and_64bit(void)
{
    mp_err_t err = {{0}};
    cluster_t *c = (cluster_t *)parse_text(
        CLUSTER_DESC,
        "{\"per_connection_buffer_limit_bytes\": 32768, \"wait_for_warm_on_init\": false,"
        " \"ring_hash_lb_config\": {\"minimum_ring_size\": \"18446744073709551615\","
        " \"maximum_ring_size\": 4096},"
        " \"common_lb_config\": {\"healthy_panic_threshold\": {\"value\": 25.5}}}",
        &err);
    CHECK_STR(err.msg, "");
    CHECK(c != NULL);
    if (c == NULL)
        return;
    CHECK_INT(c->per_connection_buffer_limit_bytes->value, 32768);
    /* a wrapper set to its zero value is present, unlike an absent one */
    CHECK(c->wait_for_warm_on_init != NULL && c->wait_for_warm_on_init->value == 0);
    CHECK(c->max_requests_per_connection == NULL);
    CHECK(c->ring_hash_lb_config->minimum_ring_size->value == UINT64_MAX);
    CHECK_INT(c->ring_hash_lb_config->maximum_ring_size->value, 4096);
    CHECK(c->common_lb_config->healthy_panic_threshold->value == 25.5);
    cJSON *json = mp_pb_to_json(&c->base, &err);
    char *text = cJSON_PrintUnformatted(json);
    CHECK(strstr(text, "\"waitForWarmOnInit\":false") != NULL);
    CHECK(strstr(text, "\"minimumRingSize\":\"18446744073709551615\"") != NULL);
    free(text);
    cJSON_Delete(json);
    protobuf_c_message_free_unpacked(&c->base, NULL);
}

static void test_maps_enums_null(void)
{
    mp_err_t err = {{0}};
    cluster_t *c =
        (cluster_t *)parse_text(CLUSTER_DESC,
                                "lb_policy: 1\n"
                                "dns_lookup_family: V4_ONLY\n"
                                "name: null\n"
                                "metadata:\n"
                                "  filter_metadata:\n"
                                "    istio: {config: /apis/x, 'n': null, list: [1, two, true]}\n"
                                "    envoy.lb: {canary: true}\n",
                                &err);
    CHECK_STR(err.msg, "");
    CHECK(c != NULL);
    if (c == NULL)
        return;
    CHECK_INT(c->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST);
    CHECK_INT(c->dns_lookup_family,
              ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_ONLY);
    CHECK_STR(c->name, "");
    CHECK_INT(c->metadata->n_filter_metadata, 2);
    CHECK_STR(c->metadata->filter_metadata[1]->key, "envoy.lb");
    Google__Protobuf__Struct *s = c->metadata->filter_metadata[0]->value;
    CHECK_INT(s->n_fields, 3);
    CHECK_INT(s->fields[1]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
    CHECK_INT(s->fields[2]->value->list_value->n_values, 3);
    cJSON *json = mp_pb_to_json(&c->base, &err);
    char *text = cJSON_PrintUnformatted(json);
    CHECK(strstr(text, "\"lbPolicy\":\"LEAST_REQUEST\"") != NULL);
    CHECK(strstr(text, "\"istio\":{\"config\":\"/apis/x\",\"n\":null,\"list\":[1,\"two\",true]}") !=
          NULL);
    free(text);
    cJSON_Delete(json);
    protobuf_c_message_free_unpacked(&c->base, NULL);
}

static void test_typed_struct(void)
{
    static const char *const urls[] = {"type.googleapis.com/xds.type.v3.TypedStruct",
                                       "type.googleapis.com/udpa.type.v1.TypedStruct"};
    for (size_t i = 0; i < 2; i++) {
        char text[512];
        snprintf(text, sizeof(text),
                 "transport_socket:\n  name: x\n  typed_config:\n    \"@type\": %s\n"
                 "    type_url: type.googleapis.com/"
                 "envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
                 "    value:\n      common_http_protocol_options: {idle_timeout: 60s}\n"
                 "      explicit_http_config: {http2_protocol_options: {}}\n",
                 urls[i]);
        mp_err_t err = {{0}};
        cluster_t *c = (cluster_t *)parse_text(CLUSTER_DESC, text, &err);
        CHECK_STR(err.msg, "");
        if (c == NULL)
            continue;
        Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions *o =
            (Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions *)mp_pb_any_unpack(
                &c->transport_socket->typed_config->base,
                &envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor, &err);
        CHECK(o != NULL);
        if (o != NULL) {
            CHECK_INT(o->common_http_protocol_options->idle_timeout->seconds, 60);
            CHECK(o->explicit_http_config->http2_protocol_options != NULL);
            protobuf_c_message_free_unpacked(&o->base, NULL);
        }
        protobuf_c_message_free_unpacked(&c->base, NULL);
    }
}

static void test_any_wkt_payload_and_bytes(void)
{
    mp_err_t err = {{0}};
    cluster_t *c = (cluster_t *)parse_text(
        CLUSTER_DESC,
        "{\"typed_extension_protocol_options\": {\"d\": {\"@type\": "
        "\"type.googleapis.com/google.protobuf.Duration\", \"value\": \"2s\"}},"
        " \"upstream_bind_config\": {\"socket_options\": [{\"buf_value\": \"aGVsbG8=\","
        " \"level\": \"1\", \"name\": 2}]}}",
        &err);
    CHECK_STR(err.msg, "");
    if (c == NULL)
        return;
    Google__Protobuf__Duration *d = (Google__Protobuf__Duration *)mp_pb_any_unpack(
        &c->typed_extension_protocol_options[0]->value->base, NULL, &err);
    CHECK(d != NULL && d->seconds == 2);
    if (d)
        protobuf_c_message_free_unpacked(&d->base, NULL);
    Envoy__Config__Core__V3__SocketOption *so = c->upstream_bind_config->socket_options[0];
    CHECK_INT(so->buf_value.len, 5);
    CHECK(memcmp(so->buf_value.data, "hello", 5) == 0);
    CHECK_INT(so->level, 1);
    cJSON *json = mp_pb_to_json(&c->base, &err);
    char *text = cJSON_PrintUnformatted(json);
    CHECK(strstr(text, "\"value\":\"2s\"") != NULL);
    CHECK(strstr(text, "\"bufValue\":\"aGVsbG8=\"") != NULL);
    CHECK(strstr(text, "\"level\":\"1\"") != NULL);
    free(text);
    cJSON_Delete(json);
    protobuf_c_message_free_unpacked(&c->base, NULL);
}

static void test_yaml_scalars_and_anchors(void)
{
    static const char text[] = "base: &b {a: 1, s: \"1\", f: -2.5e1, t: true, n: ~, q: 'true'}\n"
                               "copy: *b\n"
                               "merged:\n  <<: *b\n  a: 2\n"
                               "neg: -7\n"
                               "hex: 0x1f\n"
                               "plain: hello world\n"
                               "big: 18446744073709551615\n";
    mp_err_t err = {{0}};
    cJSON *j = mp_yaml_to_json(text, sizeof(text) - 1, &err);
    CHECK(j != NULL);
    if (j == NULL)
        return;
    char *out = cJSON_PrintUnformatted(j);
    CHECK_STR(out,
              "{\"base\":{\"a\":1,\"s\":\"1\",\"f\":-25,\"t\":true,\"n\":null,\"q\":\"true\"},"
              "\"copy\":{\"a\":1,\"s\":\"1\",\"f\":-25,\"t\":true,\"n\":null,\"q\":\"true\"},"
              "\"merged\":{\"a\":2,\"s\":\"1\",\"f\":-25,\"t\":true,\"n\":null,\"q\":\"true\"},"
              "\"neg\":-7,\"hex\":31,\"plain\":\"hello world\","
              "\"big\":\"18446744073709551615\"}");
    free(out);
    cJSON_Delete(j);

    j = mp_yaml_to_json("a: *nope\n", 9, &err);
    CHECK(j == NULL);
    CHECK_STR(err.msg, "line 1, column 4: unknown anchor");
    j = mp_yaml_to_json("a: 1\na: 2\n", 10, &err);
    CHECK(j == NULL);
    CHECK_STR(err.msg, "line 2, column 1: duplicate key");
    j = mp_yaml_to_json("a: 1\n---\nb: 2\n", 14, &err);
    CHECK(j == NULL);
    CHECK_STR(err.msg, "line 2, column 1: only one YAML document is allowed");
}

static void test_alias_bomb(void)
{
    char text[2048] = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
    char line[128];
    for (char c = 'b'; c <= 'k'; c++) {
        snprintf(line, sizeof(line), "%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n",
                 c, c, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1);
        strcat(text, line);
    }
    mp_err_t err = {{0}};
    cJSON *j = mp_yaml_to_json(text, strlen(text), &err);
    CHECK(j == NULL);
    CHECK(strstr(err.msg, "too") != NULL);
}

/* An anchor defined on a "<<" merge source outlives that source (found by fuzz_config). */
static void test_anchor_on_merge_source(void)
{
    const char *text = "a:\n  - <<: &b {s: 1}\n    t: 2\nc: *b\n";
    mp_err_t err = {{0}};
    cJSON *j = mp_yaml_to_json(text, strlen(text), &err);
    CHECK(j != NULL);
    if (j == NULL)
        return;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "c");
    CHECK(cJSON_IsObject(c) && cJSON_GetObjectItemCaseSensitive(c, "s") != NULL);
    const cJSON *a0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "a"), 0);
    CHECK(cJSON_GetObjectItemCaseSensitive(a0, "s") != NULL);
    cJSON_Delete(j);
}

static void test_find_type(void)
{
    CHECK(mp_pb_find_type("envoy.config.cluster.v3.Cluster") == CLUSTER_DESC);
    CHECK(mp_pb_find_type("type.googleapis.com/envoy.config.cluster.v3.Cluster") == CLUSTER_DESC);
    CHECK(mp_pb_find_type("type.googleapis.com/envoy.config.cluster.v3.Nope") == NULL);
}

int main(void)
{
    RUN(test_bootstrap_yaml_and_json_agree);
    RUN(test_any_hcm_in_filter);
    RUN(test_round_trip);
    RUN(test_error_paths);
    RUN(test_limits);
    RUN(test_durations);
    RUN(test_timestamp);
    RUN(test_wrappers_and_64bit);
    RUN(test_maps_enums_null);
    RUN(test_typed_struct);
    RUN(test_any_wkt_payload_and_bytes);
    RUN(test_yaml_scalars_and_anchors);
    RUN(test_alias_bomb);
    RUN(test_anchor_on_merge_source);
    RUN(test_find_type);
    UNIT_DONE();
}
