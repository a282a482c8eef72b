/* /clusters, /listeners and /config_dump: views of the current snapshot. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <protobuf-c/protobuf-c.h>

#include "magpie/json_pb.h"
#include "magpie/outlier.h"

#include "admin_internal.h"

/* ---- /clusters ---- */

/* The circuit breaker thresholds in force, as Envoy prints them (its four, in its order). */
static const char *const priorities[] = {"default_priority", "high_priority"};

/* Per-host counters that Envoy prints.  magpie keeps connection and request counters per
 * cluster, not per host, so these read 0 until per-host stats exist. */
static const char *const host_counters[] = {"cx_active",  "cx_connect_fail", "cx_total",
                                            "rq_active",  "rq_error",        "rq_success",
                                            "rq_timeout", "rq_total"};

static void cluster_header(const mp_cluster_t *c, mp_buf_t *out)
{
    mp_buf_printf(out, "%s::observability_name::%s\n", c->name, c->name);
    for (size_t p = 0; p < MP_ARRAY_SIZE(priorities); p++) {
        const mp_cb_limits_t *l = &c->cb_limits[p];
        mp_buf_printf(out,
                      "%s::%s::max_connections::%u\n%s::%s::max_pending_requests::%u\n"
                      "%s::%s::max_requests::%u\n%s::%s::max_retries::%u\n",
                      c->name, priorities[p], l->max_connections, c->name, priorities[p],
                      l->max_pending_requests, c->name, priorities[p], l->max_requests, c->name,
                      priorities[p], l->max_retries);
    }
    mp_buf_printf(out, "%s::added_via_api::false\n", c->name);
    if (c->outlier == NULL)
        return;
    /* The last sweep's figures, as Envoy prints them; -1 until one is computed. */
    const mp_outlier_t *od = c->outlier;
    mp_buf_printf(out, "%s::outlier::success_rate_average::%g\n", c->name, od->sr_average);
    mp_buf_printf(out, "%s::outlier::success_rate_ejection_threshold::%g\n", c->name,
                  od->sr_threshold);
    mp_buf_printf(out, "%s::outlier::local_origin_success_rate_average::%g\n", c->name,
                  od->local_sr_average);
    mp_buf_printf(out, "%s::outlier::local_origin_success_rate_ejection_threshold::%g\n", c->name,
                  od->local_sr_threshold);
}

static void host_lines(const mp_cluster_t *c, const mp_host_t *h, mp_buf_t *out)
{
    const char *pre = c->name, *addr = h->addr.text;
    for (size_t i = 0; i < MP_ARRAY_SIZE(host_counters); i++)
        mp_buf_printf(out, "%s::%s::%s::0\n", pre, addr, host_counters[i]);
    mp_buf_printf(out, "%s::%s::hostname::%s\n", pre, addr, h->hostname ? h->hostname : "");
    /* A set built by hand (tests) may have no health records: such hosts are healthy. */
    static mp_host_health_t none = {.outlier = {.success_rate = -1, .local_success_rate = -1}};
    mp_host_health_t *hh = h->health != NULL ? h->health : &none;
    char flags[128];
    mp_outlier_health_flags(atomic_load(&hh->flags), flags, sizeof(flags));
    mp_buf_printf(out, "%s::%s::health_flags::%s\n", pre, addr, flags);
    mp_buf_printf(out, "%s::%s::weight::%u\n", pre, addr, h->weight);
    mp_buf_printf(out, "%s::%s::region::\n%s::%s::zone::\n%s::%s::sub_zone::\n", pre, addr, pre,
                  addr, pre, addr);
    mp_buf_printf(out, "%s::%s::canary::false\n%s::%s::priority::0\n", pre, addr, pre, addr);
    const mp_outlier_host_t *oh = &hh->outlier;
    mp_buf_printf(out, "%s::%s::success_rate::%g\n%s::%s::local_origin_success_rate::%g\n", pre,
                  addr, oh->success_rate, pre, addr, oh->local_success_rate);
}

void mp_admin__clusters(const mp_config_t *cfg, mp_admin_reply_t *r)
{
    r->status = 200;
    r->content_type = MP_ADMIN_TEXT;
    for (uint32_t i = 0; cfg && i < cfg->n_clusters; i++) {
        mp_cluster_t *c = cfg->clusters[i];
        cluster_header(c, r->body);
        mp_hostset_t *hs = mp_cluster_hosts_acquire(c);
        for (uint32_t j = 0; hs && j < hs->n; j++)
            host_lines(c, &hs->hosts[j], r->body);
        if (hs)
            mp_hostset_release(hs);
    }
}

/* ---- /listeners ---- */

static cJSON *socket_address_json(const mp_addr_t *a)
{
    char ip[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        port = ntohs(sin->sin_port);
    } else if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        port = ntohs(sin6->sin6_port);
    }
    cJSON *sa = cJSON_CreateObject();
    cJSON_AddStringToObject(sa, "address", ip);
    cJSON_AddNumberToObject(sa, "port_value", port);
    cJSON *outer = cJSON_CreateObject();
    cJSON_AddItemToObject(outer, "socket_address", sa);
    return outer;
}

static void describe_names(mp_buf_t *b, const char *what, char *const *v, uint32_t n)
{
    if (n == 0)
        return;
    mp_buf_printf(b, "%s%s=[", mp_buf_len(b) > 0 ? " " : "", what);
    for (uint32_t i = 0; i < n; i++)
        mp_buf_printf(b, "%s%s", i > 0 ? "," : "", v[i]);
    mp_buf_append(b, "]", 1);
}

static void describe_cidrs(mp_buf_t *b, const char *what, const mp_cidr_t *v, uint32_t n)
{
    if (n == 0)
        return;
    mp_buf_printf(b, "%s%s=[", mp_buf_len(b) > 0 ? " " : "", what);
    for (uint32_t i = 0; i < n; i++) {
        char ip[INET6_ADDRSTRLEN] = "?";
        inet_ntop(v[i].ip.family == AF_INET6 ? AF_INET6 : AF_INET, v[i].ip.b, ip, sizeof(ip));
        mp_buf_printf(b, "%s%s/%u", i > 0 ? "," : "", ip, v[i].len);
    }
    mp_buf_append(b, "]", 1);
}

/* The criteria a chain sets, in Envoy's field names and match order; nothing for none. */
static void describe_match(const mp_chain_match_t *m, mp_buf_t *b)
{
    static const char *const source_types[] = {"ANY", "SAME_IP_OR_LOOPBACK", "EXTERNAL"};
    if (m->destination_port != 0)
        mp_buf_printf(b, "destination_port=%u", m->destination_port);
    describe_cidrs(b, "prefix_ranges", m->prefix_ranges, m->n_prefix_ranges);
    describe_names(b, "server_names", m->server_names, m->n_server_names);
    if (m->transport_protocol != NULL)
        mp_buf_printf(b, "%stransport_protocol=%s", mp_buf_len(b) > 0 ? " " : "",
                      m->transport_protocol);
    describe_names(b, "application_protocols", m->application_protocols,
                   m->n_application_protocols);
    describe_cidrs(b, "direct_source_prefix_ranges", m->direct_source_prefix_ranges,
                   m->n_direct_source_prefix_ranges);
    if (m->source_type != MP_SOURCE_ANY)
        mp_buf_printf(b, "%ssource_type=%s", mp_buf_len(b) > 0 ? " " : "",
                      source_types[m->source_type]);
    describe_cidrs(b, "source_prefix_ranges", m->source_prefix_ranges, m->n_source_prefix_ranges);
    if (m->n_source_ports > 0)
        mp_buf_printf(b, "%ssource_ports=[", mp_buf_len(b) > 0 ? " " : "");
    for (uint32_t i = 0; i < m->n_source_ports; i++)
        mp_buf_printf(b, "%s%u", i > 0 ? "," : "", m->source_ports[i]);
    if (m->n_source_ports > 0)
        mp_buf_append(b, "]", 1);
}

static cJSON *chain_json(const mp_filter_chain_t *fc)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", fc->name != NULL ? fc->name : "");
    mp_buf_t b;
    mp_buf_init(&b);
    describe_match(&fc->match, &b);
    size_t len = mp_buf_len(&b);
    char *match = mp_xmalloc(len + 1);
    mp_buf_copy_out(&b, match, len);
    match[len] = '\0';
    mp_buf_clear(&b);
    cJSON_AddStringToObject(o, "match", len > 0 ? match : "any");
    free(match);
    cJSON_AddStringToObject(o, "transport", fc->tls != NULL ? "tls" : "raw");
    cJSON_AddStringToObject(o, "filter",
                            fc->tcp_proxy != NULL
                                ? "envoy.filters.network.tcp_proxy"
                                : "envoy.filters.network.http_connection_manager");
    cJSON_AddNumberToObject(o, "rbac_filters", fc->n_rbac_filters);
    return o;
}

static void listener_chains_json(const mp_listener_t *l, cJSON *o)
{
    cJSON *arr = cJSON_AddArrayToObject(o, "filter_chains");
    for (uint32_t i = 0; i < l->n_chains; i++)
        cJSON_AddItemToArray(arr, chain_json(&l->chains[i]));
    if (l->default_chain != NULL)
        cJSON_AddItemToObject(o, "default_filter_chain", chain_json(l->default_chain));
}

static void listeners_json(const mp_config_t *cfg, mp_buf_t *out)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "listener_statuses");
    for (uint32_t i = 0; cfg && i < cfg->n_listeners; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", cfg->listeners[i].name ? cfg->listeners[i].name : "");
        cJSON_AddItemToObject(o, "local_address", socket_address_json(&cfg->listeners[i].addr));
        listener_chains_json(&cfg->listeners[i], o);
        cJSON_AddItemToArray(arr, o);
    }
    mp_admin__json_out(root, out);
}

void mp_admin__listeners(const mp_config_t *cfg, const char *query, mp_admin_reply_t *r)
{
    char format[16] = "";
    mp_admin__query_get(query, "format", format, sizeof(format));
    r->status = 200;
    if (strcmp(format, "json") == 0) {
        r->content_type = MP_ADMIN_JSON;
        listeners_json(cfg, r->body);
        return;
    }
    r->content_type = MP_ADMIN_TEXT;
    for (uint32_t i = 0; cfg && i < cfg->n_listeners; i++) {
        const mp_listener_t *l = &cfg->listeners[i];
        mp_buf_printf(r->body, "%s::%s\n", l->name ? l->name : "", l->addr.text);
    }
}

/* ---- /config_dump ---- */

void mp_admin__config_dump(const mp_config_t *cfg, mp_admin_reply_t *r)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *configs = cJSON_AddArrayToObject(root, "configs");
    if (cfg && cfg->bootstrap) {
        mp_err_t err = {{0}};
        cJSON *boot = mp_pb_to_json((const ProtobufCMessage *)cfg->bootstrap, &err);
        if (boot == NULL) {
            cJSON_Delete(root);
            mp_admin__reply_text(r, 500, "config_dump failed: ");
            mp_buf_printf(r->body, "%s\n", err.msg);
            return;
        }
        cJSON *dump = cJSON_CreateObject();
        cJSON_AddStringToObject(dump, "@type",
                                "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump");
        cJSON_AddItemToObject(dump, "bootstrap", boot);
        cJSON_AddItemToArray(configs, dump);
    }
    r->status = 200;
    r->content_type = MP_ADMIN_JSON;
    mp_admin__json_out(root, r->body);
}
