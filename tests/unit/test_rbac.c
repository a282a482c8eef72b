/* proxy/rbac.c and xds/translate_rbac.c: every permission and principal kind, the combinators,
 * ALLOW / DENY / LOG, policy order, shadow counting and the config refusals.  Policies are
 * written in YAML, parsed by the JSON mapping and built by mp_rbac_build, as in production. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/rbac/v3/rbac.pb-c.h"
#include "magpie/json_pb.h"
#include "magpie/rbac.h"
#include "magpie/stats.h"
#include "unit.h"

static mp_rbac_t *build(const char *yaml, char *errbuf, size_t cap)
{
    mp_err_t err = {0};
    cJSON *j = mp_yaml_to_json(yaml, strlen(yaml), &err);
    if (j == NULL) {
        snprintf(errbuf, cap, "yaml: %s", err.msg);
        return NULL;
    }
    ProtobufCMessage *m = mp_json_to_pb(&envoy__config__rbac__v3__rbac__descriptor, j, &err);
    cJSON_Delete(j);
    if (m == NULL) {
        snprintf(errbuf, cap, "json: %s", err.msg);
        return NULL;
    }
    mp_rbac_t *r = mp_rbac_build((const Envoy__Config__Rbac__V3__RBAC *)m, &err);
    protobuf_c_message_free_unpacked(m, NULL);
    if (r == NULL)
        snprintf(errbuf, cap, "%s", err.msg);
    return r;
}

static mp_rbac_t *must_build(const char *yaml)
{
    char e[512] = "";
    mp_rbac_t *r = build(yaml, e, sizeof(e));
    if (r == NULL)
        fprintf(stderr, "build failed: %s\n", e);
    CHECK(r != NULL);
    return r;
}

typedef struct env {
    struct sockaddr_in direct, remote, local;
    mp_http_msg_t *req;
    mp_rbac_peer_t peer;
    const char *uris[2];
    mp_rbac_input_t in;
} env_t;

static void set_ip(struct sockaddr_in *sa, const char *ip, int port)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &sa->sin_addr);
}

static void env_init(env_t *e, const char *method, const char *path)
{
    memset(e, 0, sizeof(*e));
    set_ip(&e->direct, "10.1.2.3", 40000);
    set_ip(&e->remote, "192.168.7.7", 0);
    set_ip(&e->local, "10.0.0.1", 8080);
    e->req = mp_http_msg_new();
    e->req->method = mp_xstrdup(method);
    e->req->path = mp_xstrdup(path);
    e->req->authority = mp_xstrdup("api.example.com");
    mp_headers_add_cstr(&e->req->headers, "x-team", "blue");
    e->uris[0] = "spiffe://cluster.local/ns/default/sa/foo";
    e->peer.uri_sans = e->uris;
    e->peer.n_uri_sans = 1;
    e->peer.subject = "CN=foo,O=magpie";
    e->in.direct_remote = (const struct sockaddr *)&e->direct;
    e->in.remote = (const struct sockaddr *)&e->remote;
    e->in.local = (const struct sockaddr *)&e->local;
    e->in.sni = "api.example.com";
    e->in.peer = &e->peer;
    e->in.req = e->req;
}

static void env_fini(env_t *e)
{
    mp_http_msg_free(e->req);
}

/* One ALLOW policy with the given permission and principal (YAML flow maps). */
static bool allows(const char *permission, const char *principal, const mp_rbac_input_t *in)
{
    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             "action: ALLOW\npolicies:\n  p:\n    permissions: [%s]\n    principals: [%s]\n",
             permission, principal);
    mp_rbac_t *r = must_build(yaml);
    if (r == NULL)
        return false;
    bool ok = mp_rbac_eval(r, in).allowed;
    mp_rbac_free(r);
    return ok;
}

#define ANY "{any: true}"

static void test_permissions(void)
{
    env_t e;
    env_init(&e, "GET", "/api/v1/items?x=/admin");
    CHECK(allows(ANY, ANY, &e.in));
    CHECK(!allows("{any: false}", ANY, &e.in));
    CHECK(allows("{header: {name: ':method', string_match: {exact: GET}}}", ANY, &e.in));
    CHECK(!allows("{header: {name: ':method', string_match: {exact: POST}}}", ANY, &e.in));
    CHECK(
        allows("{header: {name: ':authority', string_match: {suffix: example.com}}}", ANY, &e.in));
    CHECK(allows("{header: {name: ':path', string_match: {contains: 'x=/admin'}}}", ANY, &e.in));
    CHECK(allows("{header: {name: x-team, present_match: true}}", ANY, &e.in));
    CHECK(!allows("{header: {name: x-missing, string_match: {exact: ''}}}", ANY, &e.in));
    CHECK(allows("{url_path: {path: {prefix: /api/}}}", ANY, &e.in));
    CHECK(!allows("{url_path: {path: {suffix: /admin}}}", ANY, &e.in)); /* query not matched */
    CHECK(allows("{url_path: {path: {exact: /API/V1/ITEMS, ignore_case: true}}}", ANY, &e.in));
    CHECK(allows("{destination_ip: {address_prefix: 10.0.0.0, prefix_len: 24}}", ANY, &e.in));
    CHECK(!allows("{destination_ip: {address_prefix: 10.0.1.0, prefix_len: 24}}", ANY, &e.in));
    CHECK(allows("{destination_port: 8080}", ANY, &e.in));
    CHECK(!allows("{destination_port: 8081}", ANY, &e.in));
    CHECK(allows("{destination_port_range: {start: 8000, end: 8081}}", ANY, &e.in));
    CHECK(!allows("{destination_port_range: {start: 8000, end: 8080}}", ANY, &e.in));
    CHECK(allows("{requested_server_name: {exact: api.example.com}}", ANY, &e.in));
    CHECK(!allows("{requested_server_name: {prefix: web.}}", ANY, &e.in));
    CHECK(allows("{not_rule: {url_path: {path: {prefix: /admin}}}}", ANY, &e.in));
    CHECK(!allows("{not_rule: {any: true}}", ANY, &e.in));
    CHECK(allows(
        "{and_rules: {rules: [{destination_port: 8080}, {url_path: {path: {prefix: /api}}}]}}", ANY,
        &e.in));
    CHECK(!allows("{and_rules: {rules: [{destination_port: 8080}, {destination_port: 9}]}}", ANY,
                  &e.in));
    CHECK(allows("{or_rules: {rules: [{destination_port: 9}, {destination_port: 8080}]}}", ANY,
                 &e.in));
    CHECK(!allows("{or_rules: {rules: [{destination_port: 9}, {destination_port: 10}]}}", ANY,
                  &e.in));
    env_fini(&e);
}

static void test_principals(void)
{
    env_t e;
    env_init(&e, "GET", "/x");
    const char *foo = "{authenticated: {principal_name: {exact: "
                      "'spiffe://cluster.local/ns/default/sa/foo'}}}";
    CHECK(allows(ANY, foo, &e.in));
    CHECK(allows(ANY, "{authenticated: {}}", &e.in));
    CHECK(allows(ANY, "{authenticated: {principal_name: {exact: 'CN=foo,O=magpie'}}}", &e.in));
    CHECK(!allows(ANY, "{authenticated: {principal_name: {prefix: 'spiffe://other/'}}}", &e.in));
    e.in.peer = NULL; /* not TLS */
    CHECK(!allows(ANY, foo, &e.in));
    CHECK(!allows(ANY, "{authenticated: {}}", &e.in));
    e.in.peer = &e.peer;
    const char *dns[] = {"foo.default.svc"};
    e.peer.dns_sans = dns;
    e.peer.n_dns_sans = 1;
    CHECK(allows(ANY, "{authenticated: {principal_name: {suffix: .svc}}}", &e.in));
    CHECK(allows(ANY, "{direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}", &e.in));
    CHECK(allows(ANY, "{source_ip: {address_prefix: 10.1.2.3, prefix_len: 32}}", &e.in));
    CHECK(!allows(ANY, "{direct_remote_ip: {address_prefix: 192.168.0.0, prefix_len: 16}}", &e.in));
    CHECK(allows(ANY, "{remote_ip: {address_prefix: 192.168.0.0, prefix_len: 16}}", &e.in));
    CHECK(!allows(ANY, "{remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}", &e.in));
    CHECK(!allows(ANY, "{remote_ip: {address_prefix: '::', prefix_len: 0}}", &e.in));
    CHECK(allows(ANY, "{remote_ip: {address_prefix: 0.0.0.0}}", &e.in)); /* prefix_len 0 */
    CHECK(allows(ANY, "{header: {name: x-team, string_match: {exact: blue}}}", &e.in));
    CHECK(allows(ANY, "{url_path: {path: {exact: /x}}}", &e.in));
    CHECK(allows(ANY, "{not_id: {remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}}", &e.in));
    CHECK(allows(ANY, "{and_ids: {ids: [{any: true}, {header: {name: x-team}}]}}", &e.in));
    CHECK(!allows(ANY, "{or_ids: {ids: [{not_id: {any: true}}]}}", &e.in));
    e.in.req = NULL; /* the network filter: header and path rules never match */
    CHECK(!allows(ANY, "{header: {name: x-team, present_match: true}}", &e.in));
    CHECK(!allows("{url_path: {path: {prefix: /}}}", ANY, &e.in));
    env_fini(&e);
}

static void test_ipv6_and_mapped(void)
{
    struct sockaddr_in6 v6;
    memset(&v6, 0, sizeof(v6));
    v6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:10.9.8.7", &v6.sin6_addr);
    mp_rbac_input_t in = {.direct_remote = (const struct sockaddr *)&v6};
    CHECK(allows(ANY, "{direct_remote_ip: {address_prefix: 10.9.0.0, prefix_len: 16}}", &in));
    inet_pton(AF_INET6, "fd00::1", &v6.sin6_addr);
    CHECK(allows(ANY, "{direct_remote_ip: {address_prefix: 'fd00::', prefix_len: 8}}", &in));
    CHECK(!allows(ANY, "{direct_remote_ip: {address_prefix: 'fe00::', prefix_len: 8}}", &in));
}

static void test_actions_and_order(void)
{
    env_t e;
    env_init(&e, "POST", "/admin");
    mp_rbac_t *r = must_build("action: ALLOW\n");
    CHECK(!mp_rbac_eval(r, &e.in).allowed); /* no policies: ALLOW denies everything */
    CHECK_STR(mp_rbac_eval(r, &e.in).details, "rbac_access_denied_matched_policy[none]");
    mp_rbac_free(r);
    const char *two = "action: %s\npolicies:\n"
                      "  zz-post: {permissions: [{header: {name: ':method', string_match: "
                      "{exact: POST}}}], principals: [{any: true}]}\n"
                      "  aa-admin: {permissions: [{url_path: {path: {prefix: /admin}}}], "
                      "principals: [{any: true}]}\n";
    char yaml[1024];
    snprintf(yaml, sizeof(yaml), two, "DENY");
    r = must_build(yaml);
    mp_rbac_result_t res = mp_rbac_eval(r, &e.in);
    CHECK(!res.allowed);
    CHECK_STR(res.policy, "aa-admin"); /* first by name, as Envoy's ordered map */
    CHECK_STR(res.details, "rbac_access_denied_matched_policy[aa-admin]");
    mp_rbac_free(r);
    snprintf(yaml, sizeof(yaml), two, "LOG");
    r = must_build(yaml);
    res = mp_rbac_eval(r, &e.in);
    CHECK(res.allowed && res.policy != NULL);
    CHECK_INT(mp_rbac_action(r), MP_RBAC_LOG);
    mp_rbac_free(r);
    free(e.req->path);
    e.req->path = mp_xstrdup("/public");
    free(e.req->method);
    e.req->method = mp_xstrdup("GET");
    snprintf(yaml, sizeof(yaml), two, "DENY");
    r = must_build(yaml);
    res = mp_rbac_eval(r, &e.in);
    CHECK(res.allowed && res.policy == NULL);
    mp_rbac_free(r);
    env_fini(&e);
}

static void test_shadow_counts(void)
{
    env_t e;
    env_init(&e, "GET", "/x");
    mp_rbac_filter_config_t c = {0};
    c.shadow = must_build("action: ALLOW\n"); /* shadow denies everything */
    mp_rbac_filter_register_stats(&c, "unit.", NULL, "sh_");
    mp_rbac_result_t res = mp_rbac_filter_check(&c, &e.in);
    CHECK(res.allowed); /* shadow never decides */
    CHECK_INT(mp_stats_value(c.stats.shadow_denied), 1);
    CHECK_INT(mp_stats_value(c.stats.shadow_allowed), 0);
    CHECK_INT(mp_stats_value(c.stats.allowed), 0); /* no enforced rules: not counted */
    mp_stat_id_t id;
    CHECK(mp_stats_find("unit.rbac.sh_shadow_denied", &id) && id == c.stats.shadow_denied);
    CHECK(mp_stats_find("unit.rbac.allowed", &id));
    c.rules = must_build("action: DENY\n");
    res = mp_rbac_filter_check(&c, &e.in);
    CHECK(res.allowed);
    CHECK_INT(mp_stats_value(c.stats.allowed), 1);
    mp_rbac_filter_config_free(&c);
    env_fini(&e);
}

static void refused(const char *yaml, const char *want)
{
    char e[512] = "";
    mp_rbac_t *r = build(yaml, e, sizeof(e));
    CHECK(r == NULL);
    mp_rbac_free(r);
    if (strstr(e, want) == NULL)
        fprintf(stderr, "error %s lacks %s\n", e, want);
    CHECK(strstr(e, want) != NULL);
}

static void test_refusals(void)
{
    refused("policies: {p: {permissions: [{any: true}], principals: [{any: true}], "
            "condition: {id: 1}}}",
            "policies[\"p\"].condition: CEL conditions are not supported");
    refused("policies: {p: {permissions: [{metadata: {filter: f}}], principals: [{any: true}]}}",
            "policies[\"p\"].permissions[0].metadata: metadata permissions are not supported");
    refused("policies: {p: {permissions: [{any: true}], principals: [{metadata: {}}]}}",
            "principals[0].metadata");
    refused("policies: {p: {permissions: [{}], principals: [{any: true}]}}",
            "permissions[0].rule: not set");
    refused("policies: {p: {permissions: [{any: true}]}}", "principals: at least one");
    refused("policies: {p: {permissions: [{and_rules: {rules: [{destination_ip: "
            "{address_prefix: nope}}]}}], principals: [{any: true}]}}",
            "permissions[0].and_rules.rules[0].destination_ip.address_prefix");
    refused("policies: {p: {permissions: [{any: true}], principals: [{remote_ip: "
            "{address_prefix: 10.0.0.0, prefix_len: 33}}]}}",
            "remote_ip.prefix_len");
    refused("policies: {p: {permissions: [{url_path: {}}], principals: [{any: true}]}}",
            "url_path.path: required");
}

int main(void)
{
    mp_stats_thread_init();
    RUN(test_permissions);
    RUN(test_principals);
    RUN(test_ipv6_and_mapped);
    RUN(test_actions_and_order);
    RUN(test_shadow_counts);
    RUN(test_refusals);
    UNIT_DONE();
}
