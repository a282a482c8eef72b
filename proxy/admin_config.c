/* /clusters, /listeners and /config_dump: views of the current snapshot. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <protobuf-c/protobuf-c.h>

#include "magpie/json_pb.h"

#include "admin_internal.h"

/* ---- /clusters ---- */

/* Circuit-breaker thresholds are not configurable yet; these are Envoy's defaults, which is what
 * a tool reading this output expects to see for an unconfigured cluster. */
static const char *const priorities[] = {"default_priority", "high_priority"};
static const struct {
    const char *name;
    int value;
} thresholds[] = {
    {"max_connections", 1024},
    {"max_pending_requests", 1024},
    {"max_requests", 1024},
    {"max_retries", 3},
};

/* Per-host counters that Envoy prints.  magpie keeps connection and request counters per
 * cluster, not per host, so these read 0 until per-host stats exist. */
static const char *const host_counters[] = {"cx_active",  "cx_connect_fail", "cx_total",
                                            "rq_active",  "rq_error",        "rq_success",
                                            "rq_timeout", "rq_total"};

static void cluster_header(const mp_cluster_t *c, mp_buf_t *out)
{
    mp_buf_printf(out, "%s::observability_name::%s\n", c->name, c->name);
    for (size_t p = 0; p < MP_ARRAY_SIZE(priorities); p++) {
        for (size_t t = 0; t < MP_ARRAY_SIZE(thresholds); t++)
            mp_buf_printf(out, "%s::%s::%s::%d\n", c->name, priorities[p], thresholds[t].name,
                          thresholds[t].value);
    }
    mp_buf_printf(out, "%s::added_via_api::false\n", c->name);
}

void mp_admin__health_flags(uint32_t flags, mp_buf_t *out)
{
    /* Envoy's order and spelling (HostUtility::healthFlagsToString). */
    static const struct {
        uint32_t flag;
        const char *name;
    } names[] = {
        {MP_HEALTH_FAILED_ACTIVE_HC, "/failed_active_hc"},
        {MP_HEALTH_FAILED_OUTLIER_CHECK, "/failed_outlier_check"},
        {MP_HEALTH_DEGRADED_ACTIVE_HC, "/degraded_active_hc"},
        {MP_HEALTH_PENDING_ACTIVE_HC, "/pending_active_hc"},
    };
    if (flags == 0) {
        mp_buf_append_str(out, "healthy");
        return;
    }
    for (size_t i = 0; i < MP_ARRAY_SIZE(names); i++)
        if (flags & names[i].flag)
            mp_buf_append_str(out, names[i].name);
}

static void host_lines(const mp_cluster_t *c, const mp_host_t *h, mp_buf_t *out)
{
    const char *pre = c->name, *addr = h->addr.text;
    for (size_t i = 0; i < MP_ARRAY_SIZE(host_counters); i++)
        mp_buf_printf(out, "%s::%s::%s::0\n", pre, addr, host_counters[i]);
    mp_buf_printf(out, "%s::%s::hostname::%s\n", pre, addr, h->hostname ? h->hostname : "");
    mp_buf_printf(out, "%s::%s::health_flags::", pre, addr);
    mp_admin__health_flags(
        h->health ? atomic_load_explicit(&h->health->flags, memory_order_relaxed) : 0, out);
    mp_buf_append_str(out, "\n");
    mp_buf_printf(out, "%s::%s::weight::%u\n", pre, addr, h->weight);
    mp_buf_printf(out, "%s::%s::region::\n%s::%s::zone::\n%s::%s::sub_zone::\n", pre, addr, pre,
                  addr, pre, addr);
    mp_buf_printf(out, "%s::%s::canary::false\n%s::%s::priority::0\n", pre, addr, pre, addr);
    mp_buf_printf(out, "%s::%s::success_rate::-1\n%s::%s::local_origin_success_rate::-1\n", pre,
                  addr, pre, addr);
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

static void listeners_json(const mp_config_t *cfg, mp_buf_t *out)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "listener_statuses");
    for (uint32_t i = 0; cfg && i < cfg->n_listeners; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", cfg->listeners[i].name ? cfg->listeners[i].name : "");
        cJSON_AddItemToObject(o, "local_address", socket_address_json(&cfg->listeners[i].addr));
        cJSON_AddItemToArray(arr, o);
    }
    char *s = cJSON_Print(root);
    mp_buf_append_str(out, s);
    mp_buf_append(out, "\n", 1);
    cJSON_free(s);
    cJSON_Delete(root);
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
    char *s = cJSON_Print(root);
    r->status = 200;
    r->content_type = MP_ADMIN_JSON;
    mp_buf_append_str(r->body, s);
    mp_buf_append(r->body, "\n", 1);
    cJSON_free(s);
    cJSON_Delete(root);
}
