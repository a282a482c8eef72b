/* proxy/admin*.c: every endpoint through mp_admin_handle on a hand-built server and snapshot,
 * and the Prometheus output checked line by line against the text exposition grammar. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "magpie/admin.h"
#include "magpie/json_pb.h"
#include "magpie/log.h"
#include "stubs_buf_http.h"
#include "magpie/circuit.h"
#include "unit.h"

/* ---- stand-ins for server.c, config.c and json_pb.c (weak: the real ones win when linked) ---- */

MP_WEAK mp_server_t *mp_server;
static int shutdown_calls;

MP_WEAK mp_config_t *mp_server_config_acquire(mp_server_t *s)
{
    mp_config_t *c = atomic_load(&s->config);
    if (c)
        atomic_fetch_add(&c->refs, 1);
    return c;
}

MP_WEAK void mp_config_unref(mp_config_t *c)
{
    atomic_fetch_sub(&c->refs, 1);
}

MP_WEAK void mp_server_shutdown(mp_server_t *s)
{
    shutdown_calls++;
    atomic_store(&s->draining, true);
}

MP_WEAK mp_hostset_t *mp_cluster_hosts_acquire(mp_cluster_t *c)
{
    mp_hostset_t *hs = atomic_load(&c->hosts);
    atomic_fetch_add(&hs->refs, 1);
    return hs;
}

MP_WEAK void mp_hostset_release(mp_hostset_t *hs)
{
    atomic_fetch_sub(&hs->refs, 1);
}

MP_WEAK cJSON *mp_pb_to_json(const ProtobufCMessage *msg, mp_err_t *err)
{
    return cJSON_Parse("{\"node\":{\"id\":\"sidecar~10.0.0.1\"}}");
}

/* ---- fixture ---- */

static mp_server_t server;
static mp_config_t cfg;
static mp_cluster_t c_backend, c_dotted, c_quote;
static mp_cluster_t *clusters[] = {&c_backend, &c_dotted, &c_quote};
static mp_listener_t listener;
static mp_filter_chain_t chain;
static mp_hcm_config_t hcm;
static int fake_bootstrap;

static mp_hostset_t *make_hosts(uint32_t n, const char *const *addrs)
{
    mp_hostset_t *hs = mp_xcalloc(1, sizeof(*hs) + n * sizeof(mp_host_t));
    atomic_init(&hs->refs, 1);
    hs->n = n;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(hs->hosts[i].addr.text, sizeof(hs->hosts[i].addr.text), "%s", addrs[i]);
        hs->hosts[i].weight = i + 1;
        hs->total_weight += i + 1;
    }
    return hs;
}

static void set_stat(mp_stat_id_t id, int64_t v)
{
    mp_stats_gauge_set(id, v); /* one thread here, so a counter can be set the same way */
}

static void setup(void)
{
    static const char *const backend_hosts[] = {"10.0.0.1:80", "10.0.0.2:80"};
    static const char *const dotted_hosts[] = {"10.1.0.1:9000"};
    mp_stats_thread_init();
    c_backend.name = "backend";
    c_dotted.name = "svc.ns.cluster.local";
    c_quote.name = "q\"uo\\te";
    /* Hand-made clusters carry the default thresholds a translated one would have. */
    for (int p = 0; p < MP_PRIORITY_COUNT; p++) {
        mp_cb_limits_default(&c_backend.cb_limits[p]);
        mp_cb_limits_default(&c_dotted.cb_limits[p]);
        mp_cb_limits_default(&c_quote.cb_limits[p]);
    }
    atomic_init(&c_backend.hosts, make_hosts(2, backend_hosts));
    atomic_init(&c_dotted.hosts, make_hosts(1, dotted_hosts));
    atomic_init(&c_quote.hosts, make_hosts(0, NULL));
    hcm.stat_prefix = "ingress_http";
    listener.name = "ingress";
    chain.hcm = &hcm;
    listener.chains = &chain;
    listener.n_chains = 1;
    struct sockaddr_in *sin = (struct sockaddr_in *)&listener.addr.ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(8080);
    inet_pton(AF_INET, "127.0.0.1", &sin->sin_addr);
    snprintf(listener.addr.text, sizeof(listener.addr.text), "127.0.0.1:8080");
    atomic_init(&cfg.refs, 1);
    cfg.clusters = clusters;
    cfg.n_clusters = 3;
    cfg.listeners = &listener;
    cfg.n_listeners = 1;
    cfg.bootstrap = &fake_bootstrap;
    atomic_init(&server.config, &cfg);
    static mp_worker_t *no_workers[1]; /* workers started (none to run): the server is LIVE */
    server.workers = no_workers;
    mp_server = &server;

    set_stat(mp_stats_counter("cluster.backend.upstream_rq_total"), 5);
    set_stat(mp_stats_counter("cluster.backend.upstream_rq_2xx"), 4);
    set_stat(mp_stats_counter("cluster.backend.upstream_rq_5xx"), 1);
    set_stat(mp_stats_counter("cluster.backend.upstream_rq_200"), 4);
    set_stat(mp_stats_counter("cluster.backend.upstream_rq_503"), 1);
    set_stat(mp_stats_gauge("cluster.backend.upstream_cx_active"), 2);
    set_stat(mp_stats_counter("cluster.svc.ns.cluster.local.upstream_rq_total"), 7);
    set_stat(mp_stats_counter("cluster.q\"uo\\te.upstream_rq_total"), 1);
    set_stat(mp_stats_counter("cluster.gone.upstream_rq_total"), 3);
    set_stat(mp_stats_counter("http.ingress_http.downstream_rq_total"), 9);
    set_stat(mp_stats_counter("http.ingress_http.downstream_rq_4xx"), 2);
    set_stat(mp_stats_counter("listener.127.0.0.1_8080.downstream_cx_total"), 6);
    set_stat(mp_stats_counter("listener.0.0.0.0_9090.downstream_cx_total"), 1);
    set_stat(mp_stats_counter("tcp.db_proxy.downstream_cx_total"), 8);
    set_stat(mp_stats_gauge("server.live"), 1);
    set_stat(mp_stats_gauge("server.concurrency"), 2);
    mp_stats_counter("server.odd-name/x");
}

typedef struct reply {
    int status;
    const char *ctype;
    char *body;
} reply_t;

static reply_t call(const char *method, const char *path)
{
    mp_buf_t b;
    mp_buf_init(&b);
    reply_t r = {0};
    mp_admin_handle(&server, method, path, &r.status, &r.ctype, &b);
    r.body = buf_to_str(&b);
    mp_buf_clear(&b);
    return r;
}

static bool has_line(const char *body, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return true;
    }
    return false;
}

#define CHECK_LINE(body, line)                                                                     \
    do {                                                                                           \
        if (!has_line(body, line))                                                                 \
            fprintf(stderr, "missing line: %s\n", line);                                           \
        CHECK(has_line(body, line));                                                               \
    } while (0)

/* ---- endpoints ---- */

static void test_ready(void)
{
    reply_t r = call("GET", "/ready");
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body, "LIVE\n");
    free(r.body);

    r = call("POST", "/healthcheck/fail");
    CHECK_INT(r.status, 200);
    free(r.body);
    r = call("GET", "/ready");
    CHECK_INT(r.status, 503);
    CHECK_STR(r.body, "DRAINING\n");
    free(r.body);
    r = call("POST", "/healthcheck/ok");
    free(r.body);
    r = call("GET", "/ready");
    CHECK_INT(r.status, 200);
    free(r.body);

    atomic_store(&server.config, NULL);
    r = call("GET", "/ready");
    CHECK_INT(r.status, 503);
    CHECK_STR(r.body, "PRE_INITIALIZING\n");
    free(r.body);
    atomic_store(&server.config, &cfg);
    /* Clusters still initializing (DNS, first health checks): workers not started yet. */
    server.workers = NULL;
    r = call("GET", "/ready");
    CHECK_INT(r.status, 503);
    CHECK_STR(r.body, "PRE_INITIALIZING\n");
    free(r.body);
    static mp_worker_t *no_workers[1];
    server.workers = no_workers;
    CHECK_INT(atomic_load(&cfg.refs), 1); /* every acquire was released */
}

static void test_methods_and_404(void)
{
    reply_t r = call("GET", "/quitquitquit");
    CHECK_INT(r.status, 405);
    CHECK_INT(shutdown_calls, 0);
    free(r.body);
    r = call("GET", "/healthcheck/fail");
    CHECK_INT(r.status, 405);
    CHECK(!atomic_load(&server.healthcheck_failed));
    free(r.body);
    r = call("GET", "/logging?level=trace");
    CHECK_INT(r.status, 405);
    free(r.body);
    r = call("DELETE", "/stats");
    CHECK_INT(r.status, 405);
    free(r.body);
    r = call("GET", "/nope");
    CHECK_INT(r.status, 404);
    free(r.body);
    r = call("GET", "/stats/nope");
    CHECK_INT(r.status, 404);
    free(r.body);
    r = call("POST", "/stats"); /* read-only endpoints take POST too */
    CHECK_INT(r.status, 200);
    free(r.body);
    r = call("GET", "/");
    CHECK_INT(r.status, 200);
    CHECK(strstr(r.body, "/stats/prometheus") != NULL);
    CHECK(strstr(r.body, "/quitquitquit") != NULL);
    free(r.body);
}

static void test_quit(void)
{
    reply_t r = call("POST", "/quitquitquit");
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body, "OK\n");
    CHECK_INT(shutdown_calls, 1);
    free(r.body);
    r = call("GET", "/ready");
    CHECK_INT(r.status, 503);
    CHECK_STR(r.body, "DRAINING\n");
    free(r.body);
    atomic_store(&server.draining, false);
}

static void test_logging(void)
{
    mp_log_level_t saved = mp_log_current_level;
    reply_t r = call("POST", "/logging?level=debug");
    CHECK_INT(r.status, 200);
    CHECK_INT(mp_log_current_level, MP_LOG_DEBUG);
    CHECK(strstr(r.body, "magpie: debug") != NULL);
    free(r.body);
    r = call("GET", "/logging");
    CHECK_INT(r.status, 200);
    CHECK(strstr(r.body, "magpie: debug") != NULL);
    free(r.body);
    r = call("POST", "/logging?level=loud");
    CHECK_INT(r.status, 400);
    CHECK_INT(mp_log_current_level, MP_LOG_DEBUG);
    free(r.body);
    mp_log_set_level(saved);
}

static void test_stats_text(void)
{
    reply_t r = call("GET", "/stats");
    CHECK_INT(r.status, 200);
    CHECK_LINE(r.body, "cluster.backend.upstream_rq_total: 5");
    CHECK_LINE(r.body, "cluster.backend.upstream_cx_active: 2");
    CHECK_LINE(r.body, "server.live: 1");
    /* Sorted by name. */
    const char *prev = NULL;
    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        if (prev)
            CHECK(strcmp(prev, line) < 0);
        prev = line;
    }
    free(r.body);

    r = call("GET", "/stats?filter=backend%5C.upstream_rq_%5B0-9%5D");
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body, "cluster.backend.upstream_rq_200: 4\ncluster.backend.upstream_rq_2xx: 4\n"
                      "cluster.backend.upstream_rq_503: 1\ncluster.backend.upstream_rq_5xx: 1\n");
    free(r.body);
    r = call("GET", "/stats?filter=(");
    CHECK_INT(r.status, 400);
    free(r.body);
    r = call("GET", "/stats?usedonly&filter=server");
    CHECK(!has_line(r.body, "server.odd-name/x: 0"));
    CHECK_LINE(r.body, "server.live: 1");
    free(r.body);
}

static void test_stats_json(void)
{
    reply_t r = call("GET", "/stats?format=json&filter=^server%5C.live$");
    CHECK_INT(r.status, 200);
    CHECK_STR(r.ctype, "application/json");
    cJSON *j = cJSON_Parse(r.body);
    CHECK(j != NULL);
    cJSON *arr = cJSON_GetObjectItem(j, "stats");
    CHECK_INT(cJSON_GetArraySize(arr), 1);
    cJSON *o = cJSON_GetArrayItem(arr, 0);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(o, "name")), "server.live");
    CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "value")), 1);
    cJSON_Delete(j);
    free(r.body);
}

static void test_clusters(void)
{
    reply_t r = call("GET", "/clusters");
    CHECK_INT(r.status, 200);
    CHECK_LINE(r.body, "backend::observability_name::backend");
    CHECK_LINE(r.body, "backend::default_priority::max_connections::1024");
    CHECK_LINE(r.body, "backend::high_priority::max_retries::3");
    CHECK_LINE(r.body, "backend::10.0.0.1:80::cx_active::0");
    CHECK_LINE(r.body, "backend::10.0.0.1:80::rq_total::0");
    CHECK_LINE(r.body, "backend::10.0.0.1:80::health_flags::healthy");
    CHECK_LINE(r.body, "backend::10.0.0.2:80::weight::2");
    CHECK_LINE(r.body, "svc.ns.cluster.local::10.1.0.1:9000::weight::1");
    CHECK_LINE(r.body, "q\"uo\\te::added_via_api::false");
    CHECK_INT(atomic_load(&atomic_load(&c_backend.hosts)->refs), 1);
    free(r.body);
}

static void test_listeners(void)
{
    reply_t r = call("GET", "/listeners");
    CHECK_STR(r.body, "ingress::127.0.0.1:8080\n");
    free(r.body);
    r = call("GET", "/listeners?format=json");
    cJSON *j = cJSON_Parse(r.body);
    cJSON *l = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "listener_statuses"), 0);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(l, "name")), "ingress");
    cJSON *sa = cJSON_GetObjectItem(cJSON_GetObjectItem(l, "local_address"), "socket_address");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(sa, "address")), "127.0.0.1");
    CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(sa, "port_value")), 8080);
    cJSON_Delete(j);
    free(r.body);
}

static void test_config_dump(void)
{
    reply_t r = call("GET", "/config_dump");
    CHECK_INT(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "configs"), 0);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(c, "@type")),
              "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump");
    cJSON *node = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "bootstrap"), "node");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(node, "id")), "sidecar~10.0.0.1");
    cJSON_Delete(j);
    free(r.body);
}

/* ---- Prometheus: a checker for the text exposition format 0.0.4 ---- */

static bool name_char(int c, bool first)
{
    return isalpha(c) || c == '_' || c == ':' || (!first && isdigit(c));
}

/* Parses `{k="v",...}` at *p; advances *p past it. */
static bool parse_labels(const char **p)
{
    const char *s = *p + 1;
    for (;;) {
        if (!(isalpha((unsigned char)*s) || *s == '_'))
            return false;
        while (isalnum((unsigned char)*s) || *s == '_')
            s++;
        if (*s++ != '=' || *s++ != '"')
            return false;
        while (*s && *s != '"') {
            if (*s == '\n')
                return false;
            if (*s == '\\' && !(s[1] == '\\' || s[1] == '"' || s[1] == 'n'))
                return false;
            s += *s == '\\' ? 2 : 1;
        }
        if (*s++ != '"')
            return false;
        if (*s == '}') {
            *p = s + 1;
            return true;
        }
        if (*s++ != ',')
            return false;
    }
}

/* A sample line: metric name, optional labels, one space, an integer value.  Copies the name. */
static bool parse_sample(const char *line, char *name, size_t cap)
{
    const char *p = line;
    if (!name_char((unsigned char)*p, true))
        return false;
    while (name_char((unsigned char)*p, false))
        p++;
    snprintf(name, cap, "%.*s", (int)(p - line), line);
    if (*p == '{' && !parse_labels(&p))
        return false;
    if (*p++ != ' ')
        return false;
    if (*p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return false;
    while (isdigit((unsigned char)*p))
        p++;
    return *p == '\0';
}

/* Every line is a TYPE line or a sample; each family has one TYPE line, before its samples, and
 * its samples are contiguous.  Returns the number of problems found. */
static bool checker_quiet;

static int check_exposition(char *text)
{
    char families[256][128];
    int n_families = 0, problems = 0;
    char current[128] = "";
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char name[128], kind[16];
        if (strncmp(line, "# TYPE ", 7) == 0) {
            if (sscanf(line, "# TYPE %127s %15s", name, kind) != 2 ||
                (strcmp(kind, "counter") && strcmp(kind, "gauge"))) {
                if (!checker_quiet)
                    fprintf(stderr, "bad TYPE line: %s\n", line);
                problems++;
            }
            for (int i = 0; i < n_families; i++) {
                if (strcmp(families[i], name) == 0) {
                    if (!checker_quiet)
                        fprintf(stderr, "second TYPE line for %s\n", name);
                    problems++;
                }
            }
            snprintf(families[n_families++], sizeof(families[0]), "%s", name);
            snprintf(current, sizeof(current), "%s", name);
            continue;
        }
        if (!parse_sample(line, name, sizeof(name))) {
            if (!checker_quiet)
                fprintf(stderr, "bad sample line: %s\n", line);
            problems++;
        } else if (strcmp(name, current) != 0) {
            if (!checker_quiet)
                fprintf(stderr, "sample outside its family's block (%s): %s\n", current, line);
            problems++;
        }
    }
    return problems;
}

static void test_prometheus(void)
{
    reply_t r = call("GET", "/stats/prometheus");
    CHECK_INT(r.status, 200);
    CHECK(strncmp(r.ctype, "text/plain; version=0.0.4", 25) == 0);
    const char *b = r.body;
    CHECK_LINE(b, "# TYPE envoy_cluster_upstream_rq_total counter");
    CHECK_LINE(b, "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 5");
    CHECK_LINE(b, "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"svc.ns.cluster.local\"} 7");
    CHECK_LINE(b, "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"q\\\"uo\\\\te\"} 1");
    /* A cluster no longer in the snapshot falls back to Envoy's first-dot rule. */
    CHECK_LINE(b, "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"gone\"} 3");
    CHECK_LINE(b, "envoy_cluster_upstream_rq{envoy_response_code=\"200\","
                  "envoy_cluster_name=\"backend\"} 4");
    CHECK_LINE(b, "envoy_cluster_upstream_rq{envoy_response_code=\"503\","
                  "envoy_cluster_name=\"backend\"} 1");
    CHECK_LINE(b, "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\","
                  "envoy_cluster_name=\"backend\"} 4");
    CHECK_LINE(b, "# TYPE envoy_cluster_upstream_cx_active gauge");
    CHECK_LINE(b, "envoy_cluster_upstream_cx_active{envoy_cluster_name=\"backend\"} 2");
    CHECK_LINE(b, "envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="
                  "\"ingress_http\"} 9");
    CHECK_LINE(b, "envoy_http_downstream_rq_xx{envoy_response_code_class=\"4\","
                  "envoy_http_conn_manager_prefix=\"ingress_http\"} 2");
    CHECK_LINE(b, "envoy_listener_downstream_cx_total{envoy_listener_address="
                  "\"127.0.0.1_8080\"} 6");
    CHECK_LINE(b, "envoy_listener_downstream_cx_total{envoy_listener_address="
                  "\"0.0.0.0_9090\"} 1");
    CHECK_LINE(b, "envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"db_proxy\"} 8");
    CHECK_LINE(b, "# TYPE envoy_server_live gauge");
    CHECK_LINE(b, "envoy_server_live 1");
    CHECK_LINE(b, "envoy_server_odd_name_x 0");
    if (getenv("DUMP_PROMETHEUS"))
        fputs(r.body, stdout);
    CHECK_INT(check_exposition(r.body), 0);
    free(r.body);

    /* The same through the socket-free entry point that reads the global server. */
    mp_buf_t out;
    mp_buf_init(&out);
    mp_admin_render_prometheus(&out);
    char *s = buf_to_str(&out);
    CHECK(strstr(s, "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 5") != NULL);
    CHECK_INT(check_exposition(s), 0);
    free(s);
    mp_buf_clear(&out);
}

static void test_checker_rejects(void)
{
    /* The checker itself must catch what it is there to catch. */
    char a[] = "# TYPE x counter\nx 1\n# TYPE x counter\nx 2\n";
    char b[] = "y 1\n";
    char c[] = "# TYPE z gauge\nz{a=\"b} 1\n";
    char d[] = "# TYPE w gauge\nw{a=\"b\"}  1\n";
    checker_quiet = true;
    CHECK(check_exposition(a) > 0);
    CHECK(check_exposition(b) > 0);
    CHECK(check_exposition(c) > 0);
    CHECK(check_exposition(d) > 0);
    checker_quiet = false;
}

int main(void)
{
    setup();
    RUN(test_ready);
    RUN(test_methods_and_404);
    RUN(test_quit);
    RUN(test_logging);
    RUN(test_stats_text);
    RUN(test_stats_json);
    RUN(test_clusters);
    RUN(test_listeners);
    RUN(test_config_dump);
    RUN(test_prometheus);
    RUN(test_checker_rejects);
    UNIT_DONE();
}
