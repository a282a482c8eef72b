/* Translators and the bootstrap loader: a full YAML bootstrap checked field by field, the
 * defaults, error paths with their JSON paths, the embedded default config and --config-yaml. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "magpie/filter.h"
#include "magpie/bootstrap.h"
#include "magpie/config.h"
#include "magpie/stats.h"
#include "magpie/circuit.h"
#include "unit.h"

static char log_path[64];

static const char full_yaml[] =
    "node: { id: file-node, cluster: file-cluster }\n"
    "admin:\n"
    "  address: { socket_address: { address: 127.0.0.1, port_value: 19000 } }\n"
    "static_resources:\n"
    "  listeners:\n"
    "  - name: ingress\n"
    "    address: { socket_address: { address: 127.0.0.1, port_value: 15001 } }\n"
    "    per_connection_buffer_limit_bytes: 32768\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.http_connection_manager\n"
    "        typed_config:\n"
    "          '@type': type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager\n"
    "          stat_prefix: ingress_http\n"
    "          codec_type: HTTP1\n"
    "          max_request_headers_kb: 96\n"
    "          common_http_protocol_options: { max_headers_count: 50, idle_timeout: 30s }\n"
    "          stream_idle_timeout: 10s\n"
    "          request_timeout: 20s\n"
    "          request_headers_timeout: 2s\n"
    "          drain_timeout: 1.5s\n"
    "          normalize_path: true\n"
    "          merge_slashes: true\n"
    "          use_remote_address: true\n"
    "          xff_num_trusted_hops: 2\n"
    "          generate_request_id: false\n"
    "          preserve_external_request_id: true\n"
    "          server_name: edge\n"
    "          proxy_100_continue: true\n"
    "          forward_client_cert_details: APPEND_FORWARD\n"
    "          set_current_client_cert_details: { subject: true, dns: true, chain: true }\n"
    "          access_log:\n"
    "          - name: envoy.access_loggers.file\n"
    "            typed_config:\n"
    "              '@type': type.googleapis.com/envoy.extensions.access_loggers.file.v3."
    "FileAccessLog\n"
    "              path: %s\n"
    "              log_format: { text_format_source: { inline_string: \"%%RESPONSE_CODE%%\\n\" } "
    "}\n"
    "          - name: envoy.access_loggers.stderr\n"
    "            typed_config:\n"
    "              '@type': type.googleapis.com/envoy.extensions.access_loggers.stream.v3."
    "StderrAccessLog\n"
    "          http_filters:\n"
    "          - name: example.optional\n"
    "            is_optional: true\n"
    "          - name: envoy.filters.http.router\n"
    "          route_config:\n"
    "            name: main\n"
    "            request_headers_to_add:\n"
    "            - header: { key: X-Table, value: t }\n"
    "            response_headers_to_remove: [X-Internal]\n"
    "            virtual_hosts:\n"
    "            - name: api\n"
    "              domains: [API.example.com, '*.api.example.com']\n"
    "              response_headers_to_add:\n"
    "              - header: { key: X-Vhost, value: v }\n"
    "                append: false\n"
    "              routes:\n"
    "              - name: users\n"
    "                match: { prefix: /users, case_sensitive: false }\n"
    "                route: { cluster: users, prefix_rewrite: /v2/users, timeout: 3s, "
    "idle_timeout: 7s, host_rewrite_literal: users.internal }\n"
    "              - match:\n"
    "                  safe_regex: { regex: '/items/[0-9]+' }\n"
    "                  headers:\n"
    "                  - { name: X-Mode, exact_match: fast }\n"
    "                  - { name: X-Canary, present_match: true, invert_match: true }\n"
    "                  - { name: X-Ver, range_match: { start: 1, end: 5 } }\n"
    "                  - name: X-Tag\n"
    "                    string_match: { prefix: ab, ignore_case: true }\n"
    "                    treat_missing_header_as_empty: true\n"
    "                  - { name: X-Sfx, suffix_match: z }\n"
    "                  - { name: X-Re, safe_regex_match: { regex: 'a+' } }\n"
    "                  query_parameters:\n"
    "                  - { name: debug, present_match: true }\n"
    "                  - { name: q, string_match: { exact: x } }\n"
    "                route:\n"
    "                  weighted_clusters:\n"
    "                    total_weight: 100\n"
    "                    clusters:\n"
    "                    - name: users\n"
    "                      weight: 30\n"
    "                      request_headers_to_add:\n"
    "                      - header: { key: x-w, value: a }\n"
    "                        append_action: ADD_IF_ABSENT\n"
    "                    - { name: dns, weight: 70 }\n"
    "                  timeout: 0s\n"
    "              - match: { path: /old }\n"
    "                redirect: { host_redirect: new.example.com, path_redirect: /new, "
    "response_code: PERMANENT_REDIRECT, https_redirect: true, port_redirect: 8443, "
    "strip_query: true }\n"
    "              - match: { path_separated_prefix: /health }\n"
    "                direct_response: { status: 200, body: { inline_string: ok } }\n"
    "              - match: { prefix: /h }\n"
    "                route: { cluster_header: X-Cluster, auto_host_rewrite: true }\n"
    "                request_headers_to_add:\n"
    "                - header: { key: x-keep, value: '' }\n"
    "                  keep_empty_value: true\n"
    "                  append_action: OVERWRITE_IF_EXISTS\n"
    "                request_headers_to_remove: [X-Drop]\n"
    "            - name: rest\n"
    "              domains: ['*']\n"
    "              routes:\n"
    "              - match: { prefix: / }\n"
    "                redirect: { scheme_redirect: HTTP, prefix_rewrite: /p, response_code: "
    "FOUND }\n"
    "  - name: inbound\n"
    "    address: { socket_address: { address: '::1', port_value: 15006 } }\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.http_connection_manager\n"
    "        typed_config:\n"
    "          '@type': type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager\n"
    "          stat_prefix: inbound_http\n"
    "          http_filters: [{ name: envoy.filters.http.router }]\n"
    "          route_config:\n"
    "            virtual_hosts:\n"
    "            - name: all\n"
    "              domains: ['*']\n"
    "              routes: [{ match: { prefix: / }, route: { cluster: local } }]\n"
    "  clusters:\n"
    "  - name: users\n"
    "    type: STATIC\n"
    "    connect_timeout: 0.25s\n"
    "    lb_policy: LEAST_REQUEST\n"
    "    least_request_lb_config: { choice_count: 3 }\n"
    "    per_connection_buffer_limit_bytes: 65536\n"
    "    circuit_breakers: { thresholds: [{ max_connections: 10 }] }\n"
    "    typed_extension_protocol_options:\n"
    "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
    "        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
    "        common_http_protocol_options: { idle_timeout: 90s, max_requests_per_connection: 7 }\n"
    "        explicit_http_config: { http_protocol_options: {} }\n"
    "    load_assignment:\n"
    "      cluster_name: users\n"
    "      endpoints:\n"
    "      - lb_endpoints:\n"
    "        - endpoint: { address: { socket_address: { address: 10.0.0.1, port_value: 80 } } }\n"
    "          load_balancing_weight: 3\n"
    "        - endpoint: { address: { socket_address: { address: '::1', port_value: 81 } } }\n"
    "  - name: dns\n"
    "    type: STRICT_DNS\n"
    "    lb_policy: RANDOM\n"
    "    dns_lookup_family: V4_ONLY\n"
    "    dns_refresh_rate: 2s\n"
    "    respect_dns_ttl: true\n"
    "    load_assignment:\n"
    "      cluster_name: dns\n"
    "      endpoints:\n"
    "      - lb_endpoints:\n"
    "        - endpoint: { address: { socket_address: { address: localhost, port_value: 8080 } } "
    "}\n"
    "  - name: local\n"
    "    load_assignment:\n"
    "      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: "
    "127.0.0.1, port_value: 9000 } } } }] }]\n";

static mp_config_t *load_yaml(const char *yaml, const char *over, mp_err_t *err)
{
    char path[] = "/tmp/mp_translate_XXXXXX";
    int fd = mkstemp(path);
    if (write(fd, yaml, strlen(yaml)) != (ssize_t)strlen(yaml))
        return NULL;
    close(fd);
    mp_options_t opts = {.config_path = path, .config_yaml = over};
    bool dflt = true;
    mp_config_t *c = mp_bootstrap_load(&opts, &dflt, err);
    if (dflt)
        fprintf(stderr, "used_default set with a file given\n");
    unlink(path);
    return c;
}

static mp_config_t *load_full(mp_err_t *err)
{
    char *yaml = mp_xasprintf(full_yaml, log_path);
    mp_config_t *c = load_yaml(yaml, NULL, err);
    free(yaml);
    if (c == NULL)
        fprintf(stderr, "load failed: %s\n", err->msg);
    return c;
}

static bool stat_exists(const char *name)
{
    mp_stat_id_t id;
    return mp_stats_find(name, &id);
}

static void check_clusters(mp_config_t *c)
{
    CHECK_INT(c->n_clusters, 3);
    mp_cluster_t *u = mp_config_find_cluster(c, "users");
    CHECK(u != NULL && u->index == 0);
    CHECK_INT(u->type, MP_CLUSTER_STATIC);
    CHECK_INT(u->lb_policy, MP_LB_LEAST_REQUEST);
    CHECK_INT(u->least_request_choices, 3);
    CHECK_INT(u->connect_timeout_ms, 250);
    CHECK_INT(u->per_connection_buffer_limit_bytes, 65536);
    CHECK_INT(u->pool_idle_timeout_ms, 90000);
    CHECK_INT(u->max_requests_per_connection, 7);
    CHECK_INT(u->n_endpoints, 2);
    CHECK_STR(u->endpoints[0].address, "10.0.0.1");
    CHECK_INT(u->endpoints[0].port, 80);
    CHECK_INT(u->endpoints[0].weight, 3);
    CHECK_INT(u->endpoints[1].weight, 1);
    mp_hostset_t *hs = mp_cluster_hosts_acquire(u);
    CHECK(hs != NULL && hs->n == 2 && hs->total_weight == 4);
    CHECK_STR(hs->hosts[0].addr.text, "10.0.0.1:80");
    CHECK_STR(hs->hosts[1].addr.text, "[::1]:81");
    mp_hostset_release(hs);

    mp_cluster_t *d = mp_config_find_cluster(c, "dns");
    CHECK(d != NULL && d->index == 1);
    CHECK_INT(d->type, MP_CLUSTER_STRICT_DNS);
    CHECK_INT(d->lb_policy, MP_LB_RANDOM);
    CHECK_INT(d->dns_family, MP_DNS_V4_ONLY);
    CHECK_INT(d->dns_refresh_rate_ms, 2000);
    CHECK(d->respect_dns_ttl);
    CHECK_STR(d->endpoints[0].address, "localhost");
    hs = mp_cluster_hosts_acquire(d);
    CHECK(hs != NULL && hs->n == 0);
    mp_hostset_release(hs);

    mp_cluster_t *l = mp_config_find_cluster(c, "local");
    CHECK_INT(l->type, MP_CLUSTER_STATIC);
    CHECK_INT(l->lb_policy, MP_LB_ROUND_ROBIN);
    CHECK_INT(l->least_request_choices, 2);
    CHECK_INT(l->connect_timeout_ms, 5000);
    CHECK_INT(l->per_connection_buffer_limit_bytes, 1024 * 1024);
    CHECK_INT(l->pool_idle_timeout_ms, 3600000);
    CHECK_INT(l->max_requests_per_connection, 0);
    CHECK_INT(l->dns_family, MP_DNS_AUTO);
    CHECK_INT(l->dns_refresh_rate_ms, 5000);
    CHECK(mp_config_find_cluster(c, "nope") == NULL);
    CHECK(stat_exists("cluster.users.upstream_rq_total"));
    CHECK(stat_exists("cluster.dns.upstream_cx_none_healthy"));
    CHECK(stat_exists("cluster.local.membership_healthy"));
    CHECK(mp_stats_kind(u->stats.upstream_rq_active) == MP_STAT_GAUGE);
    CHECK(mp_stats_kind(u->stats.upstream_rq_5xx) == MP_STAT_COUNTER);
}

static void check_hcm(const mp_hcm_config_t *h)
{
    CHECK_STR(h->stat_prefix, "ingress_http");
    CHECK_INT(h->codec_type, MP_CODEC_HTTP1);
    CHECK_INT(h->n_http_filters, 1);
    CHECK_STR(h->http_filters[0].name, "envoy.filters.http.router");
    CHECK(h->http_filters[0].ops == mp_http_filter_lookup("envoy.filters.http.router", NULL));
    CHECK_INT(h->max_request_headers_kb, 96);
    CHECK_INT(h->max_headers_count, 50);
    CHECK_INT(h->idle_timeout_ms, 30000);
    CHECK_INT(h->stream_idle_timeout_ms, 10000);
    CHECK_INT(h->request_timeout_ms, 20000);
    CHECK_INT(h->request_headers_timeout_ms, 2000);
    CHECK_INT(h->drain_timeout_ms, 1500);
    CHECK(h->normalize_path && h->merge_slashes && h->use_remote_address);
    CHECK_INT(h->xff_num_trusted_hops, 2);
    CHECK(!h->generate_request_id && h->preserve_external_request_id && h->proxy_100_continue);
    CHECK_STR(h->server_name, "edge");
    CHECK_INT(h->xfcc_mode, MP_XFCC_APPEND_FORWARD);
    CHECK_INT(h->xfcc_details, MP_XFCC_SUBJECT | MP_XFCC_DNS | MP_XFCC_CHAIN);
    CHECK_INT(h->n_access_logs, 2);
    CHECK_INT(h->access_logs[0].sink, MP_ALOG_FILE);
    CHECK_STR(h->access_logs[0].path, log_path);
    CHECK(h->access_logs[0].fd > 2 && h->access_logs[0].format != NULL);
    CHECK_INT(h->access_logs[1].sink, MP_ALOG_STDERR);
    CHECK_INT(h->access_logs[1].fd, 2);
    CHECK(h->access_logs[1].format != NULL);
    CHECK(stat_exists("http.ingress_http.downstream_rq_total"));
    CHECK(stat_exists("http.ingress_http.no_route"));
    CHECK(stat_exists("http.ingress_http.rq_redirect"));
    CHECK(stat_exists("http.ingress_http.downstream_cx_drain_close"));
    CHECK(mp_stats_kind(h->stats.downstream_rq_active) == MP_STAT_GAUGE);
}

static void check_route_users(const mp_route_t *r, mp_config_t *c)
{
    CHECK_STR(r->name, "users");
    CHECK_INT(r->path_kind, MP_PATH_PREFIX);
    CHECK_STR(r->path, "/users");
    CHECK_INT(r->path_len, 6);
    CHECK(!r->case_sensitive);
    CHECK_INT(r->action, MP_ACTION_ROUTE);
    CHECK_STR(r->cluster_name, "users");
    CHECK(r->cluster == mp_config_find_cluster(c, "users"));
    CHECK_STR(r->prefix_rewrite, "/v2/users");
    CHECK_STR(r->host_rewrite_literal, "users.internal");
    CHECK(r->has_timeout && r->timeout_ms == 3000);
    CHECK_INT(r->idle_timeout_ms, 7000);
}

static void check_route_regex(const mp_route_t *r, mp_config_t *c)
{
    CHECK_INT(r->path_kind, MP_PATH_REGEX);
    CHECK(r->path_regex != NULL && r->case_sensitive);
    CHECK_INT(r->n_headers, 6);
    CHECK_STR(r->headers[0].name, "x-mode");
    CHECK(r->headers[0].kind == MP_HDR_STRING && r->headers[0].str.kind == MP_STR_EXACT);
    CHECK_STR(r->headers[0].str.value, "fast");
    CHECK(r->headers[1].kind == MP_HDR_PRESENT && r->headers[1].present && r->headers[1].invert);
    CHECK(r->headers[2].kind == MP_HDR_RANGE && r->headers[2].range_start == 1 &&
          r->headers[2].range_end == 5);
    CHECK(r->headers[3].str.kind == MP_STR_PREFIX && r->headers[3].str.ignore_case &&
          r->headers[3].treat_missing_as_empty);
    CHECK(r->headers[4].str.kind == MP_STR_SUFFIX && r->headers[4].str.len == 1);
    CHECK(r->headers[5].str.kind == MP_STR_REGEX && r->headers[5].str.regex != NULL);
    CHECK_INT(r->n_query, 2);
    CHECK(!r->query[0].has_string && r->query[0].present);
    CHECK(r->query[1].has_string && r->query[1].str.kind == MP_STR_EXACT);
    CHECK_INT(r->n_weighted, 2);
    CHECK_INT(r->total_weight, 100);
    CHECK(r->weighted[0].cluster == mp_config_find_cluster(c, "users"));
    CHECK_INT(r->weighted[0].weight, 30);
    CHECK_INT(r->weighted[0].request_headers.n_add, 1);
    CHECK_INT(r->weighted[0].request_headers.add[0].action, MP_ADD_IF_ABSENT);
    CHECK(r->weighted[1].cluster == mp_config_find_cluster(c, "dns"));
    CHECK(r->has_timeout && r->timeout_ms == 0);
}

static void check_route_others(const mp_vhost_t *vh)
{
    const mp_route_t *r = &vh->routes[2];
    CHECK_INT(r->path_kind, MP_PATH_EXACT);
    CHECK_INT(r->action, MP_ACTION_REDIRECT);
    CHECK_STR(r->redirect.scheme, "https");
    CHECK_STR(r->redirect.host, "new.example.com");
    CHECK_INT(r->redirect.port, 8443);
    CHECK_STR(r->redirect.path, "/new");
    CHECK_INT(r->redirect.response_code, 308);
    CHECK(r->redirect.strip_query);
    r = &vh->routes[3];
    CHECK_INT(r->path_kind, MP_PATH_SEPARATED_PREFIX);
    CHECK_INT(r->action, MP_ACTION_DIRECT_RESPONSE);
    CHECK_INT(r->direct_status, 200);
    CHECK(r->direct_body_len == 2 && memcmp(r->direct_body, "ok", 2) == 0);
    r = &vh->routes[4];
    CHECK_STR(r->cluster_header, "x-cluster");
    CHECK(r->auto_host_rewrite && r->cluster == NULL);
    CHECK(!r->has_timeout && r->timeout_ms == 15000);
    CHECK_INT(r->request_headers.n_add, 1);
    CHECK_STR(r->request_headers.add[0].name, "x-keep");
    CHECK_STR(r->request_headers.add[0].value, "");
    CHECK(r->request_headers.add[0].keep_empty_value);
    CHECK_INT(r->request_headers.add[0].action, MP_OVERWRITE_IF_EXISTS);
    CHECK_INT(r->request_headers.n_remove, 1);
    CHECK_STR(r->request_headers.remove[0], "x-drop");
}

static void check_routes(const mp_route_table_t *t, mp_config_t *c)
{
    CHECK_STR(t->name, "main");
    CHECK_INT(t->request_headers.n_add, 1);
    CHECK_STR(t->request_headers.add[0].name, "x-table");
    CHECK_INT(t->request_headers.add[0].action, MP_APPEND_IF_EXISTS_OR_ADD);
    CHECK_STR(t->response_headers.remove[0], "x-internal");
    CHECK_INT(t->n_vhosts, 2);
    const mp_vhost_t *vh = &t->vhosts[0];
    CHECK_STR(vh->name, "api");
    CHECK_INT(vh->n_domains, 2);
    CHECK_STR(vh->domains[0], "api.example.com");
    CHECK_STR(vh->domains[1], "*.api.example.com");
    CHECK_INT(vh->response_headers.add[0].action, MP_OVERWRITE_IF_EXISTS_OR_ADD);
    CHECK_INT(vh->n_routes, 5);
    check_route_users(&vh->routes[0], c);
    check_route_regex(&vh->routes[1], c);
    check_route_others(vh);
    const mp_route_t *r = &t->vhosts[1].routes[0];
    CHECK_STR(r->redirect.scheme, "http");
    CHECK_STR(r->redirect.prefix_rewrite, "/p");
    CHECK_INT(r->redirect.response_code, 302);
}

static void test_full_bootstrap(void)
{
    mp_err_t err = {{0}};
    mp_options_t none = {0};
    MP_UNUSED(none);
    mp_config_t *c = load_full(&err);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    CHECK(c->generation > 0);
    CHECK(c->bootstrap != NULL);
    CHECK_STR(c->node_id, "file-node");
    CHECK_STR(c->node_cluster, "file-cluster");
    CHECK(c->has_admin);
    CHECK_STR(c->admin_addr.text, "127.0.0.1:19000");
    check_clusters(c);
    CHECK_INT(c->n_listeners, 2);
    mp_listener_t *l = &c->listeners[0];
    CHECK_STR(l->name, "ingress");
    CHECK_STR(l->addr.text, "127.0.0.1:15001");
    CHECK_INT(l->per_connection_buffer_limit_bytes, 32768);
    CHECK(stat_exists("listener.127.0.0.1_15001.downstream_cx_total"));
    CHECK(mp_stats_kind(l->stats.downstream_cx_active) == MP_STAT_GAUGE);
    check_hcm(l->chains[0].hcm);
    check_routes(l->chains[0].hcm->routes, c);
    l = &c->listeners[1];
    CHECK_STR(l->addr.text, "[::1]:15006");
    CHECK_INT(l->per_connection_buffer_limit_bytes, 1024 * 1024);
    CHECK(stat_exists("listener.[__1]_15006.downstream_cx_total"));
    const mp_hcm_config_t *h = l->chains[0].hcm;
    CHECK_INT(h->codec_type, MP_CODEC_AUTO);
    CHECK_INT(h->max_request_headers_kb, 60);
    CHECK_INT(h->max_headers_count, 100);
    CHECK_INT(h->idle_timeout_ms, 3600000);
    CHECK_INT(h->stream_idle_timeout_ms, 300000);
    CHECK_INT(h->request_timeout_ms, 0);
    CHECK_INT(h->drain_timeout_ms, 5000);
    CHECK(!h->normalize_path && h->generate_request_id && !h->use_remote_address);
    CHECK_STR(h->server_name, "magpie");
    CHECK_INT(h->n_access_logs, 0);
    uint64_t gen = c->generation;
    mp_config_ref(c);
    mp_config_unref(c);
    mp_config_unref(c);
    c = load_full(&err);
    CHECK(c != NULL && c->generation > gen);
    mp_config_unref(c);
}

/* Replaces the first occurrence of from in the full config with to, loads, and checks that it
 * fails with exactly want. */
static void expect_error(const char *from, const char *to, const char *want)
{
    char *yaml = mp_xasprintf(full_yaml, log_path);
    char *at = strstr(yaml, from);
    CHECK(at != NULL);
    if (at == NULL) {
        fprintf(stderr, "  pattern not found: %s\n", from);
        free(yaml);
        return;
    }
    char *edited = mp_xasprintf("%.*s%s%s", (int)(at - yaml), yaml, to, at + strlen(from));
    mp_err_t err = {{0}};
    mp_config_t *c = load_yaml(edited, NULL, &err);
    CHECK(c == NULL);
    CHECK_STR(err.msg, want);
    mp_config_unref(c);
    free(yaml);
    free(edited);
}

#define HCM "static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
#define VH0 HCM "route_config.virtual_hosts[0]."

static void test_errors(void)
{
    expect_error("connect_timeout: 0.25s", "connect_timeout: 5x",
                 "static_resources.clusters[0].connect_timeout: invalid duration \"5x\"");
    expect_error("route: { cluster: users, prefix", "route: { cluster: nope, prefix",
                 VH0 "routes[0].route.cluster: unknown cluster \"nope\"");
    expect_error("- { name: dns, weight: 70 }", "- { name: dns, weight: 71 }",
                 VH0 "routes[1].route.weighted_clusters.total_weight: 100 is not the sum of the "
                     "weights (101)");
    expect_error(
        "type: STRICT_DNS", "type: EDS",
        "static_resources.clusters[1].eds_cluster_config.eds_config: required for type EDS");
    expect_error("type: STRICT_DNS", "type: ORIGINAL_DST",
                 "static_resources.clusters[1].type: ORIGINAL_DST is not supported yet");
    expect_error("lb_policy: RANDOM", "lb_policy: CLUSTER_PROVIDED",
                 "static_resources.clusters[1].lb_policy: only ROUND_ROBIN, LEAST_REQUEST, RANDOM, "
                 "RING_HASH and MAGLEV are supported");
    expect_error(
        "lb_policy: RANDOM\n", "lb_policy: MAGLEV\n    maglev_lb_config: { table_size: 65536 }\n",
        "static_resources.clusters[1].maglev_lb_config.table_size: 65536 must be a prime up "
        "to 5000011");
    expect_error("lb_policy: RANDOM\n",
                 "lb_policy: RING_HASH\n    ring_hash_lb_config: { minimum_ring_size: 9, "
                 "maximum_ring_size: 8 }\n",
                 "static_resources.clusters[1].ring_hash_lb_config: minimum_ring_size (9) > "
                 "maximum_ring_size (8)");
    expect_error("route: { cluster: users, prefix",
                 "route: { hash_policy: [{ header: {} }], cluster: users, prefix",
                 VH0 "routes[0].route.hash_policy[0].header.header_name: required");
    expect_error("- name: dns\n", "- name: users\n",
                 "static_resources.clusters[1].name: duplicate cluster \"users\"");
    expect_error("domains: ['*']\n              routes:\n              - match: { prefix: / }\n"
                 "                redirect",
                 "domains: ['*.API.example.com']\n              routes:\n              - match: "
                 "{ prefix: / }\n                redirect",
                 HCM "route_config.virtual_hosts[1].domains[0]: duplicate domain "
                     "\"*.api.example.com\" (also in virtual host \"api\")");
    expect_error("          route_config:\n            virtual_hosts:\n            - name: all\n"
                 "              domains: ['*']\n              routes: [{ match: { prefix: / }, "
                 "route: { cluster: local } }]\n",
                 "          rds: { route_config_name: x }\n",
                 "static_resources.listeners[1].filter_chains[0].filters[0].typed_config.rds: "
                 "rds is not supported yet");
    expect_error("          stat_prefix: inbound_http\n", "",
                 "static_resources.listeners[1].filter_chains[0].filters[0].typed_config."
                 "stat_prefix: required");
    expect_error("max_request_headers_kb: 96", "max_request_headers_kb: 9000",
                 HCM "max_request_headers_kb: 9000 is not in [1, 8192]");
    expect_error("- name: example.optional\n            is_optional: true\n",
                 "- name: example.unknown\n",
                 HCM "http_filters[0]: unknown HTTP filter \"example.unknown\"");
    expect_error("port_value: 15006", "named_port: http",
                 "static_resources.listeners[1].address.socket_address.named_port: named ports "
                 "are not supported yet");
    expect_error("address: '::1', port_value: 15006", "address: 127.0.0.1, port_value: 15001",
                 "static_resources.listeners[1].address: 127.0.0.1:15001 is already used by "
                 "listener \"ingress\"");
    expect_error("codec_type: HTTP1", "codec_type: HTTP3",
                 HCM "codec_type: HTTP3 is not supported");
    expect_error("address: 10.0.0.1", "address: ten",
                 "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0]."
                 "endpoint.address.socket_address.address: \"ten\" is not an IP address");
    expect_error("body: { inline_string: ok }", "body: { filename: /nonexistent/x }",
                 VH0 "routes[3].direct_response.body.filename: cannot open \"/nonexistent/x\": "
                     "No such file or directory");
    expect_error("          http_filters:\n          - name: example.optional",
                 "          http_filters:\n          - name: envoy.filters.http.router\n"
                 "          - name: example.optional",
                 HCM "http_filters[0]: envoy.filters.http.router must be the last filter");
    /* The router's typed_config is read: what magpie cannot do is refused, not ignored. */
    expect_error("          - name: envoy.filters.http.router\n",
                 "          - name: envoy.filters.http.router\n"
                 "            typed_config:\n"
                 "              '@type': type.googleapis.com/"
                 "envoy.extensions.filters.http.router.v3.Router\n"
                 "              upstream_log: [{ name: x }]\n",
                 HCM "http_filters[1].typed_config.upstream_log: not supported yet");
    expect_error("    - filters:\n      - name: envoy.filters.network.http_connection_manager\n"
                 "        typed_config:\n",
                 "    - filters: []\n    - filters:\n      - name: "
                 "envoy.filters.network.http_connection_manager\n        typed_config:\n",
                 "static_resources.listeners[0].filter_chains[0].filters: one terminal filter "
                 "(envoy.filters.network.http_connection_manager or "
                 "envoy.filters.network.tcp_proxy) is required");
    char *from = mp_xasprintf("path: %s", log_path);
    expect_error(from, "path: /nonexistent/dir/log",
                 HCM "access_log[0].typed_config.path: cannot open \"/nonexistent/dir/log\": No "
                     "such file or directory");
    free(from);
}

/* Errors whose exact text comes from another module: only the path prefix is ours. */
static void expect_error_prefix(const char *from, const char *to, const char *prefix)
{
    char *yaml = mp_xasprintf(full_yaml, log_path);
    char *at = strstr(yaml, from);
    CHECK(at != NULL);
    if (at == NULL) {
        free(yaml);
        return;
    }
    char *edited = mp_xasprintf("%.*s%s%s", (int)(at - yaml), yaml, to, at + strlen(from));
    mp_err_t err = {{0}};
    mp_config_t *c = load_yaml(edited, NULL, &err);
    CHECK(c == NULL);
    if (strncmp(err.msg, prefix, strlen(prefix)) != 0)
        fprintf(stderr, "  got: %s\n  want prefix: %s\n", err.msg, prefix);
    CHECK(strncmp(err.msg, prefix, strlen(prefix)) == 0);
    free(yaml);
    free(edited);
}

static void test_error_prefixes(void)
{
    expect_error_prefix("regex: '/items/[0-9]+'", "regex: '/items/[0-9+'",
                        VH0 "routes[1].match.safe_regex.regex: ");
    expect_error_prefix("connect_timeout: 0.25s", "connect_timeoutx: 1s",
                        "static_resources.clusters[0].connect_timeoutx: ");
}

static void test_default_config(void)
{
    mp_options_t opts = {0};
    bool dflt = false;
    mp_err_t err = {{0}};
    mp_config_t *c = mp_bootstrap_load(&opts, &dflt, &err);
    CHECK(c != NULL);
    if (c == NULL) {
        fprintf(stderr, "default: %s\n", err.msg);
        return;
    }
    CHECK(dflt);
    CHECK(c->has_admin);
    CHECK_STR(c->admin_addr.text, "127.0.0.1:15000");
    CHECK_INT(c->n_listeners, 1);
    CHECK_STR(c->listeners[0].name, "default");
    CHECK_STR(c->listeners[0].addr.text, "127.0.0.1:15001");
    const mp_hcm_config_t *h = c->listeners[0].chains[0].hcm;
    CHECK_STR(h->stat_prefix, "ingress_http");
    CHECK_INT(h->n_access_logs, 1);
    CHECK_INT(h->access_logs[0].sink, MP_ALOG_STDOUT);
    CHECK_STR(h->routes->vhosts[0].domains[0], "*");
    CHECK_STR(h->routes->vhosts[0].routes[0].path, "/");
    CHECK(h->routes->vhosts[0].routes[0].cluster == mp_config_find_cluster(c, "local_service"));
    CHECK_INT(c->n_clusters, 1);
    mp_hostset_t *hs = mp_cluster_hosts_acquire(c->clusters[0]);
    CHECK(hs->n == 1);
    CHECK_STR(hs->hosts[0].addr.text, "127.0.0.1:8080");
    mp_hostset_release(hs);
    mp_config_unref(c);
}

static void test_config_yaml_merge(void)
{
    mp_err_t err = {{0}};
    char *yaml = mp_xasprintf(full_yaml, log_path);
    /* Objects merge (node keeps cluster, admin keeps its address host), lists replace. */
    mp_config_t *c = load_yaml(yaml,
                               "node: { id: yaml-node }\n"
                               "admin: { address: { socket_address: { port_value: 19001 } } }\n",
                               &err);
    CHECK(c != NULL);
    if (c != NULL) {
        CHECK_STR(c->node_id, "yaml-node");
        CHECK_STR(c->node_cluster, "file-cluster");
        CHECK_STR(c->admin_addr.text, "127.0.0.1:19001");
        CHECK_INT(c->n_listeners, 2);
        mp_config_unref(c);
    }
    mp_options_t opts = {.config_yaml = mp_bootstrap_default_yaml,
                         .service_node = "cli-node",
                         .service_cluster = "cli-cluster"};
    bool dflt = true;
    c = mp_bootstrap_load(&opts, &dflt, &err);
    CHECK(c != NULL && !dflt);
    if (c != NULL) {
        CHECK_STR(c->node_id, "cli-node");
        CHECK_STR(c->node_cluster, "cli-cluster");
        mp_config_unref(c);
    }
    c = load_yaml(yaml, "static_resources: [1", &err);
    CHECK(c == NULL && strncmp(err.msg, "--config-yaml: ", 15) == 0);
    free(yaml);
    mp_options_t missing = {.config_path = "/nonexistent/magpie.yaml"};
    c = mp_bootstrap_load(&missing, &dflt, &err);
    CHECK(c == NULL);
    CHECK_STR(err.msg, "/nonexistent/magpie.yaml: No such file or directory");
}

/* ---- tcp_proxy ---- */

static const char tcp_yaml[] =
    "static_resources:\n"
    "  listeners:\n"
    "  - name: tcp\n"
    "    address: { socket_address: { address: 127.0.0.1, port_value: 15010 } }\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.tcp_proxy\n"
    "        typed_config:\n"
    "          '@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3."
    "TcpProxy\n"
    "          stat_prefix: tcp_in\n"
    "%s"
    "  clusters:\n"
    "  - name: db\n"
    "    connect_timeout: 0.5s\n"
    "    load_assignment:\n"
    "      cluster_name: db\n"
    "      endpoints:\n"
    "      - lb_endpoints:\n"
    "        - endpoint: { address: { socket_address: { address: 10.0.0.9, port_value: 5432 } "
    "} }\n";

static mp_config_t *load_tcp(const char *fields, mp_err_t *err)
{
    char *yaml = mp_xasprintf(tcp_yaml, fields);
    mp_config_t *c = load_yaml(yaml, NULL, err);
    free(yaml);
    return c;
}

static void expect_tcp_error(const char *fields, const char *want)
{
    mp_err_t err = {{0}};
    mp_config_t *c = load_tcp(fields, &err);
    CHECK(c == NULL);
    CHECK_STR(err.msg, want);
    mp_config_unref(c);
}

#define TCP "static_resources.listeners[0].filter_chains[0].filters[0].typed_config."

static void test_tcp_proxy(void)
{
    mp_err_t err = {{0}};
    mp_config_t *c = load_tcp("          weighted_clusters:\n"
                              "            clusters: [{ name: db, weight: 3 }, "
                              "{ name: later, weight: 1 }]\n"
                              "          idle_timeout: 0.25s\n"
                              "          max_connect_attempts: 3\n"
                              "          access_log:\n"
                              "          - name: envoy.access_loggers.stdout\n"
                              "            typed_config:\n"
                              "              '@type': type.googleapis.com/"
                              "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog\n",
                              &err);
    CHECK(c != NULL);
    if (c == NULL) {
        fprintf(stderr, "tcp: %s\n", err.msg);
        return;
    }
    const mp_listener_t *l = &c->listeners[0];
    CHECK(l->chains[0].hcm == NULL);
    const mp_tcp_proxy_config_t *t = l->chains[0].tcp_proxy;
    CHECK(t != NULL);
    if (t == NULL)
        goto out;
    CHECK_STR(t->stat_prefix, "tcp_in");
    CHECK_INT(t->n_clusters, 2);
    CHECK_STR(t->clusters[0].name, "db");
    CHECK(t->clusters[0].cluster == mp_config_find_cluster(c, "db"));
    CHECK_INT(t->clusters[0].weight, 3);
    /* Unknown: accepted and left unresolved, as Envoy does; connections to it are refused. */
    CHECK_STR(t->clusters[1].name, "later");
    CHECK(t->clusters[1].cluster == NULL);
    CHECK_INT(t->total_weight, 4);
    CHECK_INT(t->idle_timeout_ms, 250);
    CHECK_INT(t->max_connect_attempts, 3);
    CHECK_INT(t->n_access_logs, 1);
    CHECK_INT(t->access_logs[0].sink, MP_ALOG_STDOUT);
    CHECK(stat_exists("tcp.tcp_in.downstream_cx_total"));
    CHECK(stat_exists("tcp.tcp_in.downstream_cx_no_route"));
    CHECK(stat_exists("tcp.tcp_in.idle_timeout"));
out:
    mp_config_unref(c);

    /* Defaults: one cluster of weight 1, idle timeout 1 h, one connect attempt. */
    c = load_tcp("          cluster: db\n", &err);
    CHECK(c != NULL && c->listeners[0].chains[0].tcp_proxy != NULL);
    if (c != NULL && c->listeners[0].chains[0].tcp_proxy != NULL) {
        t = c->listeners[0].chains[0].tcp_proxy;
        CHECK_INT(t->n_clusters, 1);
        CHECK(t->clusters[0].cluster == c->clusters[0]);
        CHECK_INT(t->idle_timeout_ms, 3600000);
        CHECK_INT(t->max_connect_attempts, 1);
        CHECK_INT(t->n_access_logs, 0);
    }
    mp_config_unref(c);
    c = load_tcp("          cluster: db\n          idle_timeout: 0s\n", &err);
    CHECK(c != NULL && c->listeners[0].chains[0].tcp_proxy->idle_timeout_ms == 0);
    mp_config_unref(c);
}

static void test_tcp_proxy_errors(void)
{
    expect_tcp_error("", TCP "cluster: one of cluster and weighted_clusters is required");
    expect_tcp_error("          cluster: db\n          weighted_clusters: { clusters: [{ name: db, "
                     "weight: 1 }] }\n",
                     TCP "weighted_clusters: only one of \"cluster\" and \"weighted_clusters\" "
                         "may be set");
    expect_tcp_error("          weighted_clusters: { clusters: [] }\n",
                     TCP "weighted_clusters.clusters: at least one cluster is required");
    expect_tcp_error("          weighted_clusters: { clusters: [{ name: db }] }\n",
                     TCP "weighted_clusters.clusters[0].weight: must be at least 1");
    expect_tcp_error("          cluster: db\n          max_connect_attempts: 0\n",
                     TCP "max_connect_attempts: must be at least 1");
    expect_tcp_error("          cluster: db\n          tunneling_config: { hostname: h }\n",
                     TCP "tunneling_config: not supported yet");
    expect_tcp_error("          cluster: db\n          idle_timeout: -1s\n",
                     TCP "idle_timeout: negative duration");
}

/* Fields we leave out of our .proto (hash_policy = 11, proxy_protocol_tlvs = 19) still decode
 * from a control plane's binary message: protobuf-c keeps them as unknown fields. */
static void test_tcp_proxy_binary_unknown_fields(void)
{
    static const uint8_t wire[] = {
        0x0a, 0x02, 't',  'p',       /* stat_prefix = "tp" */
        0x12, 0x02, 'd',  'b',       /* cluster = "db" */
        0x5a, 0x02, 0x08, 0x01,      /* hash_policy { 1: 1 } (not in our subset) */
        0x9a, 0x01, 0x02, 0x08, 0x05 /* proxy_protocol_tlvs { 1: 5 } (not in our subset) */
    };
    Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy *m =
        envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__unpack(NULL, sizeof(wire),
                                                                              wire);
    CHECK(m != NULL);
    if (m == NULL)
        return;
    CHECK_STR(m->stat_prefix, "tp");
    CHECK_STR(m->cluster, "db");
    CHECK_INT(m->base.n_unknown_fields, 2);
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

/* ---- HTTP/2, gRPC and upgrades ---- */

/* Every new field set, with one cluster per way of choosing the upstream protocol. */
static const char h2_yaml[] =
    "static_resources:\n"
    "  listeners:\n"
    "  - name: h2\n"
    "    address: { socket_address: { address: 127.0.0.1, port_value: 15101 } }\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.http_connection_manager\n"
    "        typed_config:\n"
    "          '@type': type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager\n"
    "          stat_prefix: h2\n"
    "          codec_type: HTTP2\n"
    "          stream_error_on_invalid_http_message: true\n"
    "          common_http_protocol_options: { max_stream_duration: 30s }\n"
    "          http2_protocol_options:\n"
    "            max_concurrent_streams: 100\n"
    "            initial_stream_window_size: 65535\n"
    "            initial_connection_window_size: 2147483647\n"
    "            hpack_table_size: 0\n"
    "            max_outbound_frames: 5000\n"
    "            max_outbound_control_frames: 500\n"
    "            max_consecutive_inbound_frames_with_empty_payload: 0\n"
    "            max_inbound_priority_frames_per_stream: 7\n"
    "            max_inbound_window_update_frames_per_data_frame_sent: 3\n"
    "            allow_connect: true\n"
    "          upgrade_configs:\n"
    "          - upgrade_type: WebSocket\n"
    "          - { upgrade_type: CONNECT, enabled: false }\n"
    "          http_filters: [{ name: envoy.filters.http.router }]\n"
    "          route_config:\n"
    "            virtual_hosts:\n"
    "            - name: all\n"
    "              domains: ['*']\n"
    "              routes:\n"
    "              - match: { prefix: /svc., grpc: {} }\n"
    "                route:\n"
    "                  cluster: explicit\n"
    "                  max_stream_duration:\n"
    "                    max_stream_duration: 2s\n"
    "                    grpc_timeout_header_max: 0s\n"
    "                    grpc_timeout_header_offset: 0.05s\n"
    "              - match: { connect_matcher: {} }\n"
    "                route:\n"
    "                  cluster: downstream\n"
    "                  upgrade_configs:\n"
    "                  - { upgrade_type: CONNECT, connect_config: {} }\n"
    "                  - { upgrade_type: websocket, enabled: false }\n"
    "              - match: { prefix: /ws }\n"
    "                route:\n"
    "                  cluster: deprecated\n"
    "                  max_stream_duration: { grpc_timeout_header_max: 5s }\n"
    "              - match: { prefix: / }\n"
    "                route: { cluster: plain, max_stream_duration: { max_stream_duration: 0s } }\n"
    "  clusters:\n"
    "  - name: explicit\n"
    "    common_http_protocol_options: { idle_timeout: 10s, max_requests_per_connection: 3 }\n"
    "    typed_extension_protocol_options:\n"
    "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
    "        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
    "        common_http_protocol_options: { idle_timeout: 20s }\n"
    "        explicit_http_config:\n"
    "          http2_protocol_options:\n"
    "            max_concurrent_streams: 50\n"
    "            initial_stream_window_size: 1048576\n"
    "            override_stream_error_on_invalid_http_message: true\n"
    "  - name: downstream\n"
    "    typed_extension_protocol_options:\n"
    "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
    "        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
    "        use_downstream_protocol_config:\n"
    "          http_protocol_options: {}\n"
    "          http2_protocol_options: { hpack_table_size: 8192 }\n"
    "  - name: auto\n"
    "    typed_extension_protocol_options:\n"
    "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
    "        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
    "        auto_config: { http2_protocol_options: { max_concurrent_streams: 9 } }\n"
    "  - name: deprecated\n"
    "    http2_protocol_options: { initial_connection_window_size: 131072 }\n"
    "  - name: selection\n"
    "    protocol_selection: USE_DOWNSTREAM_PROTOCOL\n"
    "    http_protocol_options: {}\n"
    "    http2_protocol_options: {}\n"
    "  - name: plain\n";

static mp_config_t *load_h2(mp_err_t *err)
{
    mp_config_t *c = load_yaml(h2_yaml, NULL, err);
    if (c == NULL)
        fprintf(stderr, "h2 load failed: %s\n", err->msg);
    return c;
}

static void check_h2_defaults(const mp_h2_options_t *o)
{
    CHECK_INT(o->max_concurrent_streams, 1024);
    CHECK_INT(o->initial_stream_window_size, 262144);
    CHECK_INT(o->initial_connection_window_size, 1048576);
    CHECK_INT(o->hpack_table_size, 4096);
    CHECK_INT(o->max_outbound_frames, 10000);
    CHECK_INT(o->max_outbound_control_frames, 1000);
    CHECK_INT(o->max_consecutive_inbound_frames_with_empty_payload, 1);
    CHECK_INT(o->max_inbound_priority_frames_per_stream, 100);
    CHECK_INT(o->max_inbound_window_update_frames_per_data_frame_sent, 10);
    CHECK(!o->allow_connect);
    CHECK(!o->override_stream_error_on_invalid_http_message);
}

static void test_h2_defaults(void)
{
    mp_h2_options_t o;
    memset(&o, 0xa5, sizeof(o));
    mp_h2_options_default(&o);
    check_h2_defaults(&o);
    /* A listener and clusters that say nothing about HTTP/2 get exactly the defaults. */
    mp_err_t err = {{0}};
    mp_config_t *c = load_full(&err);
    if (c == NULL)
        return;
    const mp_hcm_config_t *h = c->listeners[0].chains[0].hcm;
    check_h2_defaults(&h->h2);
    CHECK_INT(h->n_upgrades, 0);
    CHECK_INT(h->max_stream_duration_ms, 0);
    for (uint32_t i = 0; i < c->n_clusters; i++) {
        CHECK_INT(c->clusters[i]->protocol, MP_UPSTREAM_HTTP1);
        check_h2_defaults(&c->clusters[i]->h2);
    }
    const mp_route_t *r = &h->routes->vhosts[0].routes[0];
    CHECK(!r->match_grpc && !r->connect_matcher && r->n_upgrades == 0);
    CHECK(!r->has_max_stream_duration && !r->has_grpc_timeout_header_max);
    CHECK(!r->uses_stream_duration);
    CHECK_INT(r->max_stream_duration_ms, 0);
    CHECK_INT(r->grpc_timeout_header_offset_ms, 0);
    mp_config_unref(c);
}

static void check_h2_hcm(const mp_hcm_config_t *h)
{
    CHECK_INT(h->codec_type, MP_CODEC_HTTP2);
    CHECK_INT(h->max_stream_duration_ms, 30000);
    const mp_h2_options_t *o = &h->h2;
    CHECK_INT(o->max_concurrent_streams, 100);
    CHECK_INT(o->initial_stream_window_size, 65535);
    CHECK_INT(o->initial_connection_window_size, 2147483647);
    CHECK_INT(o->hpack_table_size, 0);
    CHECK_INT(o->max_outbound_frames, 5000);
    CHECK_INT(o->max_outbound_control_frames, 500);
    CHECK_INT(o->max_consecutive_inbound_frames_with_empty_payload, 0);
    CHECK_INT(o->max_inbound_priority_frames_per_stream, 7);
    CHECK_INT(o->max_inbound_window_update_frames_per_data_frame_sent, 3);
    CHECK(o->allow_connect);
    /* from the HCM's stream_error_on_invalid_http_message: the H2 options have no override */
    CHECK(o->override_stream_error_on_invalid_http_message);
    CHECK_INT(h->n_upgrades, 2);
    CHECK_STR(h->upgrades[0].upgrade_type, "websocket"); /* lower-cased */
    CHECK(h->upgrades[0].enabled && !h->upgrades[0].connect_config);
    CHECK_STR(h->upgrades[1].upgrade_type, "connect");
    CHECK(!h->upgrades[1].enabled);
}

static void check_h2_routes(const mp_vhost_t *vh)
{
    const mp_route_t *r = &vh->routes[0];
    CHECK(r->match_grpc && !r->connect_matcher);
    CHECK(r->uses_stream_duration);
    CHECK(r->has_max_stream_duration && r->max_stream_duration_ms == 2000);
    CHECK(r->has_grpc_timeout_header_max && r->grpc_timeout_header_max_ms == 0); /* no cap */
    CHECK_INT(r->grpc_timeout_header_offset_ms, 50);
    r = &vh->routes[1];
    CHECK(r->connect_matcher && !r->match_grpc);
    CHECK(r->path_kind == MP_PATH_PREFIX && r->path_len == 0);
    CHECK_INT(r->n_upgrades, 2);
    CHECK_STR(r->upgrades[0].upgrade_type, "connect");
    CHECK(r->upgrades[0].enabled && r->upgrades[0].connect_config);
    CHECK_STR(r->upgrades[1].upgrade_type, "websocket");
    CHECK(!r->upgrades[1].enabled && !r->upgrades[1].connect_config);
    CHECK(!r->has_max_stream_duration && !r->has_grpc_timeout_header_max);
    CHECK(!r->uses_stream_duration); /* no max_stream_duration message */
    r = &vh->routes[2];
    CHECK(r->uses_stream_duration && !r->has_max_stream_duration);
    CHECK(r->has_grpc_timeout_header_max && r->grpc_timeout_header_max_ms == 5000);
    r = &vh->routes[3];
    CHECK(r->has_max_stream_duration && r->max_stream_duration_ms == 0); /* 0s: disabled */
    CHECK(!r->has_grpc_timeout_header_max);
}

static void check_h2_clusters(mp_config_t *c)
{
    mp_cluster_t *k = mp_config_find_cluster(c, "explicit");
    CHECK_INT(k->protocol, MP_UPSTREAM_HTTP2);
    CHECK_INT(k->h2.max_concurrent_streams, 50);
    CHECK_INT(k->h2.initial_stream_window_size, 1048576);
    CHECK_INT(k->h2.initial_connection_window_size, 1048576);
    CHECK(k->h2.override_stream_error_on_invalid_http_message);
    /* the extension's idle_timeout wins; the deprecated field's max_requests stays */
    CHECK_INT(k->pool_idle_timeout_ms, 20000);
    CHECK_INT(k->max_requests_per_connection, 3);
    k = mp_config_find_cluster(c, "downstream");
    CHECK_INT(k->protocol, MP_UPSTREAM_USE_DOWNSTREAM);
    CHECK_INT(k->h2.hpack_table_size, 8192);
    CHECK_INT(k->h2.max_concurrent_streams, 1024);
    k = mp_config_find_cluster(c, "auto");
    CHECK_INT(k->protocol, MP_UPSTREAM_HTTP1); /* until upstream TLS with ALPN */
    CHECK_INT(k->h2.max_concurrent_streams, 9);
    k = mp_config_find_cluster(c, "deprecated");
    CHECK_INT(k->protocol, MP_UPSTREAM_HTTP2);
    CHECK_INT(k->h2.initial_connection_window_size, 131072);
    CHECK_INT(k->h2.initial_stream_window_size, 262144);
    k = mp_config_find_cluster(c, "selection");
    CHECK_INT(k->protocol, MP_UPSTREAM_USE_DOWNSTREAM);
    check_h2_defaults(&k->h2);
    k = mp_config_find_cluster(c, "plain");
    CHECK_INT(k->protocol, MP_UPSTREAM_HTTP1);
}

static void test_h2_fields(void)
{
    mp_err_t err = {{0}};
    mp_config_t *c = load_h2(&err);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    check_h2_hcm(c->listeners[0].chains[0].hcm);
    check_h2_routes(&c->listeners[0].chains[0].hcm->routes->vhosts[0]);
    check_h2_clusters(c);
    mp_config_unref(c);
}

/* As expect_error, on h2_yaml. */
static void expect_h2_error(const char *from, const char *to, const char *want)
{
    const char *at = strstr(h2_yaml, from);
    CHECK(at != NULL);
    if (at == NULL) {
        fprintf(stderr, "  pattern not found: %s\n", from);
        return;
    }
    char *edited = mp_xasprintf("%.*s%s%s", (int)(at - h2_yaml), h2_yaml, to, at + strlen(from));
    mp_err_t err = {{0}};
    mp_config_t *c = load_yaml(edited, NULL, &err);
    CHECK(c == NULL);
    CHECK_STR(err.msg, want);
    mp_config_unref(c);
    free(edited);
}

#define H2HCM "static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
#define H2VH H2HCM "route_config.virtual_hosts[0]."
#define EXT                                                                                        \
    "static_resources.clusters[%s].typed_extension_protocol_options[\"envoy.extensions.upstreams." \
    "http.v3.HttpProtocolOptions\"]."
#define EXT0                                                                                       \
    "static_resources.clusters[0].typed_extension_protocol_options[\"envoy.extensions.upstreams."  \
    "http.v3.HttpProtocolOptions\"]."

static void test_h2_range_errors(void)
{
    expect_h2_error("initial_stream_window_size: 65535", "initial_stream_window_size: 65534",
                    H2HCM "http2_protocol_options.initial_stream_window_size: must be between "
                          "65535 and 2147483647");
    expect_h2_error("initial_connection_window_size: 2147483647",
                    "initial_connection_window_size: 2147483648",
                    H2HCM "http2_protocol_options.initial_connection_window_size: must be "
                          "between 65535 and 2147483647");
    expect_h2_error("max_concurrent_streams: 100", "max_concurrent_streams: 0",
                    H2HCM "http2_protocol_options.max_concurrent_streams: must be between 1 and "
                          "2147483647");
    expect_h2_error("max_outbound_frames: 5000", "max_outbound_frames: 0",
                    H2HCM "http2_protocol_options.max_outbound_frames: must be at least 1");
    expect_h2_error("max_outbound_control_frames: 500", "max_outbound_control_frames: 0",
                    H2HCM "http2_protocol_options.max_outbound_control_frames: must be at least 1");
    expect_h2_error("max_inbound_window_update_frames_per_data_frame_sent: 3",
                    "max_inbound_window_update_frames_per_data_frame_sent: 0",
                    H2HCM "http2_protocol_options.max_inbound_window_update_frames_per_data_"
                          "frame_sent: must be at least 1");
    expect_h2_error("allow_connect: true", "allow_metadata: true",
                    H2HCM "http2_protocol_options.allow_metadata: METADATA frames are not "
                          "supported");
    expect_h2_error("allow_connect: true",
                    "custom_settings_parameters: [{ identifier: 9, value: 1 }]",
                    H2HCM "http2_protocol_options.custom_settings_parameters: not supported");
    expect_h2_error("initial_stream_window_size: 1048576", "initial_stream_window_size: 1",
                    EXT0 "explicit_http_config.http2_protocol_options.initial_stream_window_size: "
                         "must be between 65535 and 2147483647");
    expect_h2_error("hpack_table_size: 8192 }", "max_concurrent_streams: 0 }",
                    "static_resources.clusters[1].typed_extension_protocol_options[\"envoy."
                    "extensions.upstreams.http.v3.HttpProtocolOptions\"].use_downstream_protocol_"
                    "config.http2_protocol_options.max_concurrent_streams: must be between 1 and "
                    "2147483647");
    expect_h2_error("initial_connection_window_size: 131072 }",
                    "initial_connection_window_size: 100 }",
                    "static_resources.clusters[3].http2_protocol_options."
                    "initial_connection_window_size: must be between 65535 and 2147483647");
}

static void test_h2_hcm_errors(void)
{
    expect_h2_error("codec_type: HTTP2", "codec_type: HTTP3",
                    H2HCM "codec_type: HTTP3 is not supported");
    expect_h2_error("- upgrade_type: WebSocket\n",
                    "- upgrade_type: WebSocket\n            filters: [{ name: x }]\n",
                    H2HCM "upgrade_configs[0].filters: per-upgrade filter chains are not "
                          "supported (upgraded streams use the listener's http_filters)");
    expect_h2_error("upgrade_type: CONNECT, enabled", "upgrade_type: websocket, enabled",
                    H2HCM "upgrade_configs[1].upgrade_type: duplicate upgrade type \"websocket\"");
    expect_h2_error("- upgrade_type: WebSocket\n", "- enabled: true\n",
                    H2HCM "upgrade_configs[0].upgrade_type: required");
    expect_h2_error("max_stream_duration: 30s", "max_stream_duration: -1s",
                    H2HCM "common_http_protocol_options.max_stream_duration: negative duration");
}

static void test_h2_route_errors(void)
{
    expect_h2_error("- { upgrade_type: websocket, enabled: false }",
                    "- { upgrade_type: websocket, connect_config: {} }",
                    H2VH "routes[1].route.upgrade_configs[1].connect_config: only the CONNECT "
                         "upgrade can have one (upgrade_type is \"websocket\")");
    expect_h2_error("connect_config: {}", "connect_config: { allow_post: true }",
                    H2VH "routes[1].route.upgrade_configs[0].connect_config.allow_post: not "
                         "supported yet");
    expect_h2_error("- { upgrade_type: websocket, enabled: false }", "- { upgrade_type: Connect }",
                    H2VH "routes[1].route.upgrade_configs[1].upgrade_type: duplicate upgrade "
                         "type \"Connect\"");
    expect_h2_error("grpc_timeout_header_offset: 0.05s", "grpc_timeout_header_offset: -0.05s",
                    H2VH "routes[0].route.max_stream_duration.grpc_timeout_header_offset: "
                         "negative duration");
}

static void test_h2_cluster_errors(void)
{
    expect_h2_error("        explicit_http_config:\n          http2_protocol_options:\n"
                    "            max_concurrent_streams: 50\n",
                    "        explicit_http_config: { http3_protocol_options: {} }\n"
                    "        xx_unused:\n          a:\n            b: 50\n",
                    "static_resources.clusters[0].typed_extension_protocol_options[\"envoy."
                    "extensions.upstreams.http.v3.HttpProtocolOptions\"].xx_unused: unknown "
                    "field");
    expect_h2_error("        explicit_http_config:\n          http2_protocol_options:\n"
                    "            max_concurrent_streams: 50\n"
                    "            initial_stream_window_size: 1048576\n"
                    "            override_stream_error_on_invalid_http_message: true\n",
                    "        explicit_http_config: { http3_protocol_options: {} }\n",
                    EXT0 "explicit_http_config.http3_protocol_options: HTTP/3 is not supported");
    expect_h2_error("auto_config: { http2", "auto_config: { http3_protocol_options: {}, http2",
                    "static_resources.clusters[2].typed_extension_protocol_options[\"envoy."
                    "extensions.upstreams.http.v3.HttpProtocolOptions\"].auto_config.http3_"
                    "protocol_options: HTTP/3 is not supported");
    /* the oneof is required, as in Envoy */
    expect_h2_error(
        "        auto_config: { http2_protocol_options: { max_concurrent_streams: 9 } }\n",
        "        common_http_protocol_options: { idle_timeout: 1s }\n",
        "static_resources.clusters[2].typed_extension_protocol_options[\"envoy."
        "extensions.upstreams.http.v3.HttpProtocolOptions\"].upstream_protocol_"
        "options: one of explicit_http_config, use_downstream_protocol_config, "
        "auto_config is required");
    /* an unknown key, and a key whose Any holds another type */
    expect_h2_error("  - name: downstream\n    typed_extension_protocol_options:\n"
                    "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n",
                    "  - name: downstream\n    typed_extension_protocol_options:\n"
                    "      envoy.filters.network.thrift_proxy:\n",
                    "static_resources.clusters[1].typed_extension_protocol_options[\"envoy."
                    "filters.network.thrift_proxy\"]: unknown extension (only \"envoy.extensions."
                    "upstreams.http.v3.HttpProtocolOptions\" is supported)");
    expect_h2_error(
        "  - name: auto\n    typed_extension_protocol_options:\n"
        "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
        "        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3."
        "HttpProtocolOptions\n"
        "        auto_config: { http2_protocol_options: { max_concurrent_streams: 9 } "
        "}\n",
        "  - name: auto\n    typed_extension_protocol_options:\n"
        "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
        "        '@type': type.googleapis.com/envoy.config.core.v3.Http2ProtocolOptions\n"
        "        max_concurrent_streams: 9\n",
        "static_resources.clusters[2].typed_extension_protocol_options[\"envoy."
        "extensions.upstreams.http.v3.HttpProtocolOptions\"]: expected type "
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions, got "
        "envoy.config.core.v3.Http2ProtocolOptions");
    expect_h2_error("    protocol_selection: USE_DOWNSTREAM_PROTOCOL\n", "",
                    "static_resources.clusters[4].http2_protocol_options: http_protocol_options "
                    "and http2_protocol_options can only both be set with protocol_selection "
                    "USE_DOWNSTREAM_PROTOCOL");
}

/* A filter chain's transport_socket in its YAML forms: raw_buffer by name or by type means no
 * TLS; other names, the wrong context type and a TLS context without a certificate are errors
 * with the path (the full TLS translation is tests/unit/test_tls.c). */
static mp_config_t *load_socket(const char *socket, mp_err_t *err)
{
    char *fields = mp_xasprintf("          cluster: db\n");
    char *yaml = mp_xasprintf(tcp_yaml, fields);
    const char *at = strstr(yaml, "    - filters:\n");
    char *edited = mp_xasprintf("%.*s    - transport_socket: %s\n      filters:\n%s",
                                (int)(at - yaml), yaml, socket, at + strlen("    - filters:\n"));
    mp_config_t *c = load_yaml(edited, NULL, err);
    free(edited);
    free(yaml);
    free(fields);
    return c;
}

#define TS "static_resources.listeners[0].filter_chains[0].transport_socket."

static void test_transport_socket_forms(void)
{
    mp_err_t err = {{0}};
    mp_config_t *c = load_socket("{ name: envoy.transport_sockets.raw_buffer }", &err);
    CHECK(c != NULL && c->listeners[0].chains[0].tls == NULL);
    mp_config_unref(c);
    c = load_socket("{ name: x, typed_config: { '@type': type.googleapis.com/envoy.extensions."
                    "transport_sockets.raw_buffer.v3.RawBuffer } }",
                    &err);
    CHECK(c != NULL && c->listeners[0].chains[0].tls == NULL);
    mp_config_unref(c);
    c = load_socket("{ name: envoy.transport_sockets.alts }", &err);
    CHECK(c == NULL);
    CHECK_STR(err.msg, TS "name: only envoy.transport_sockets.tls and "
                          "envoy.transport_sockets.raw_buffer are supported, not "
                          "\"envoy.transport_sockets.alts\"");
    c = load_socket("{ name: envoy.transport_sockets.tls }", &err);
    CHECK(c == NULL);
    CHECK_STR(err.msg, TS "common_tls_context.tls_certificates: a server needs a certificate");
    c = load_socket("{ name: envoy.transport_sockets.tls, typed_config: { '@type': "
                    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                    "UpstreamTlsContext } }",
                    &err);
    CHECK(c == NULL);
    CHECK(strstr(err.msg,
                 TS "typed_config: a filter chain needs "
                    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext") != NULL);
}

#define CB_FROM "circuit_breakers: { thresholds: [{ max_connections: 10 }] }"

static mp_config_t *load_edited(const char *from, const char *to, mp_err_t *err)
{
    char *yaml = mp_xasprintf(full_yaml, log_path);
    char *at = strstr(yaml, from);
    CHECK(at != NULL);
    char *edited = mp_xasprintf("%.*s%s%s", (int)(at - yaml), yaml, to, at + strlen(from));
    mp_config_t *c = load_yaml(edited, NULL, err);
    free(yaml);
    free(edited);
    return c;
}

/* Thresholds per priority, the defaults for what is left out, and the gauges. */
static void test_circuit_breakers(void)
{
    mp_err_t err = {{0}};
    mp_config_t *c = load_edited(
        CB_FROM,
        "circuit_breakers: { thresholds: [{ max_connections: 10, max_pending_requests: 0, "
        "track_remaining: true }, { priority: HIGH, max_requests: 7, max_retries: 9, "
        "max_connection_pools: 2, retry_budget: { budget_percent: { value: 35 }, "
        "min_retry_concurrency: 5 } }] }",
        &err);
    CHECK(c != NULL);
    if (c == NULL) {
        fprintf(stderr, "  %s\n", err.msg);
        return;
    }
    mp_cluster_t *u = mp_config_find_cluster(c, "users");
    const mp_cb_limits_t *d = &u->cb_limits[MP_PRIORITY_DEFAULT],
                         *h = &u->cb_limits[MP_PRIORITY_HIGH];
    CHECK_INT(d->max_connections, 10);
    CHECK_INT(d->max_pending_requests, 0);
    CHECK_INT(d->max_requests, 1024);
    CHECK_INT(d->max_retries, 3);
    CHECK(d->track_remaining && !d->has_retry_budget);
    CHECK_INT(h->max_connections, 1024);
    CHECK_INT(h->max_requests, 7);
    CHECK_INT(h->max_retries, 9);
    CHECK_INT(h->max_connection_pools, 2);
    CHECK(h->has_retry_budget && h->budget_percent == 35.0);
    CHECK_INT(h->min_retry_concurrency, 5);
    CHECK(!h->track_remaining);
    CHECK(stat_exists("cluster.users.circuit_breakers.default.rq_pending_open"));
    CHECK(stat_exists("cluster.users.circuit_breakers.default.remaining_cx"));
    CHECK(stat_exists("cluster.users.circuit_breakers.high.cx_pool_open"));
    /* max_pending_requests 0: nothing may wait; the breaker is open from the start. */
    CHECK(!mp_cb_try_acquire(u, MP_PRIORITY_DEFAULT, MP_CB_PENDING_REQUESTS));
    CHECK(mp_cb_try_acquire(u, MP_PRIORITY_HIGH, MP_CB_PENDING_REQUESTS));
    mp_cb_release(u, MP_PRIORITY_HIGH, MP_CB_PENDING_REQUESTS);
    char what[128];
    CHECK(!mp_cb_leaked(c, what, sizeof(what)));
    mp_cluster_t *dns = mp_config_find_cluster(c, "dns");
    CHECK_INT(dns->cb_limits[MP_PRIORITY_HIGH].max_requests, 1024);
    mp_config_unref(c);

    c = load_edited("route: { cluster: local }", "route: { cluster: local, priority: HIGH }", &err);
    CHECK(c != NULL);
    mp_config_unref(c);
}

static void test_circuit_breaker_errors(void)
{
    expect_error(CB_FROM, "circuit_breakers: { thresholds: [{}, { max_requests: 3 }] }",
                 "static_resources.clusters[0].circuit_breakers.thresholds[1].priority: DEFAULT "
                 "given twice");
    expect_error(CB_FROM,
                 "circuit_breakers: { thresholds: [{ retry_budget: { budget_percent: { value: "
                 "101 } } }] }",
                 "static_resources.clusters[0].circuit_breakers.thresholds[0].retry_budget."
                 "budget_percent: must be between 0 and 100");
    expect_error(CB_FROM, "circuit_breakers: { per_host_thresholds: [{ max_connections: 1 }] }",
                 "static_resources.clusters[0].circuit_breakers.per_host_thresholds: not "
                 "supported yet");
}

int main(void)
{
    mp_stats_thread_init();
    snprintf(log_path, sizeof(log_path), "/tmp/mp_translate_%d.log", (int)getpid());
    RUN(test_full_bootstrap);
    RUN(test_errors);
    RUN(test_error_prefixes);
    RUN(test_default_config);
    RUN(test_config_yaml_merge);
    RUN(test_tcp_proxy);
    RUN(test_tcp_proxy_errors);
    RUN(test_tcp_proxy_binary_unknown_fields);
    RUN(test_h2_defaults);
    RUN(test_h2_fields);
    RUN(test_h2_range_errors);
    RUN(test_h2_hcm_errors);
    RUN(test_h2_route_errors);
    RUN(test_h2_cluster_errors);
    RUN(test_transport_socket_forms);
    RUN(test_circuit_breakers);
    RUN(test_circuit_breaker_errors);
    unlink(log_path);
    UNIT_DONE();
}
