/* Admin request dispatch and the small endpoints (include/magpie/admin.h).
 *
 * mp_admin_handle is a pure function of the server state so that unit tests drive every endpoint
 * without sockets; proxy/admin_server.c only moves bytes.  Mutating endpoints require POST, as
 * Envoy does, so that a crawler or a stray GET cannot stop the proxy; read-only endpoints take
 * GET, HEAD or POST. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "magpie/admin.h"
#include "magpie/circuit.h"
#include "magpie/log.h"

#include "admin_internal.h"

typedef void (*endpoint_fn)(mp_server_t *s, const char *query, mp_admin_reply_t *r);

typedef struct endpoint {
    const char *path;
    endpoint_fn fn;
    bool mutates; /* POST only */
    const char *help;
} endpoint_t;

static void on_help(mp_server_t *s, const char *query, mp_admin_reply_t *r);
static void on_ready(mp_server_t *s, const char *query, mp_admin_reply_t *r);
static void on_stats(mp_server_t *s, const char *query, mp_admin_reply_t *r);
static void on_prometheus(mp_server_t *s, const char *query, mp_admin_reply_t *r);
static void on_clusters(mp_server_t *s, const char *query, mp_admin_reply_t *r);
static void on_listeners(mp_server_t *s, const char *query, mp_admin_reply_t *r);
static void on_config_dump(mp_server_t *s, const char *query, mp_admin_reply_t *r);
static void on_certs(mp_server_t *s, const char *query, mp_admin_reply_t *r);
static void on_quit(mp_server_t *s, const char *query, mp_admin_reply_t *r);
static void on_hc_fail(mp_server_t *s, const char *query, mp_admin_reply_t *r);
static void on_hc_ok(mp_server_t *s, const char *query, mp_admin_reply_t *r);
static void on_logging(mp_server_t *s, const char *query, mp_admin_reply_t *r);

static const endpoint_t endpoints[] = {
    {"/", on_help, false, "this list"},
    {"/help", on_help, false, "this list"},
    {"/ready", on_ready, false, "200 LIVE when serving; 503 PRE_INITIALIZING or DRAINING"},
    {"/stats", on_stats, false, "all stats; ?filter=<regex>, ?format=json, ?usedonly"},
    {"/stats/prometheus", on_prometheus, false, "all stats in Prometheus text format"},
    {"/clusters", on_clusters, false, "upstream clusters and their hosts"},
    {"/listeners", on_listeners, false, "listeners and their addresses; ?format=json"},
    {"/config_dump", on_config_dump, false, "the current bootstrap as JSON"},
    {"/certs", on_certs, false, "TLS certificates in use (rotations included), as JSON"},
    {"/quitquitquit", on_quit, true, "drain and exit (POST)"},
    {"/healthcheck/fail", on_hc_fail, true, "make /ready answer 503 (POST)"},
    {"/healthcheck/ok", on_hc_ok, true, "undo /healthcheck/fail (POST)"},
    {"/logging", on_logging, false, "show the log level; POST ?level=<level> sets it"},
};

void mp_admin__reply_text(mp_admin_reply_t *r, int status, const char *text)
{
    r->status = status;
    r->content_type = MP_ADMIN_TEXT;
    mp_buf_append_str(r->body, text);
}

void mp_admin__json_out(void *root, mp_buf_t *out)
{
    char *s = cJSON_Print(root);
    if (s != NULL) {
        mp_buf_append_str(out, s);
        mp_buf_append(out, "\n", 1);
    }
    cJSON_free(s);
    cJSON_Delete(root);
}

/* Percent-decodes src[0..n) into out ('+' is a space, as in forms). */
static void decode_value(const char *src, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        int hi = i + 2 < n ? mp_hex_digit((unsigned char)src[i + 1]) : -1;
        int lo = i + 2 < n ? mp_hex_digit((unsigned char)src[i + 2]) : -1;
        if (src[i] == '%' && hi >= 0 && lo >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = src[i] == '+' ? ' ' : src[i];
        }
    }
    out[o] = '\0';
}

bool mp_admin__query_get(const char *query, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
        size_t len = strcspn(p, "&");
        if (len < klen || memcmp(p, key, klen) != 0 || (len > klen && p[klen] != '='))
            continue;
        size_t vstart = len > klen ? klen + 1 : klen;
        if (cap > 0)
            decode_value(p + vstart, len - vstart, out, cap);
        return true;
    }
    return false;
}

static void on_help(mp_server_t *s, const char *query, mp_admin_reply_t *r)
{
    mp_admin__reply_text(r, 200, "admin commands are:\n");
    for (size_t i = 1; i < MP_ARRAY_SIZE(endpoints); i++)
        mp_buf_printf(r->body, "  %s: %s\n", endpoints[i].path, endpoints[i].help);
}

/* Envoy's server states: a failed health check reports DRAINING so that load balancers that
 * probe /ready take the instance out before it actually stops. */
static void on_ready(mp_server_t *s, const char *query, mp_admin_reply_t *r)
{
    mp_config_t *cfg = mp_server_config_acquire(s);
    /* Workers (and listeners) start once clusters are initialized: DNS answered and the first
     * round of active health checks done.  Until then Envoy reports PRE_INITIALIZING. */
    if (cfg == NULL || s->workers == NULL)
        mp_admin__reply_text(r, 503, "PRE_INITIALIZING\n");
    else if (atomic_load(&s->draining) || atomic_load(&s->healthcheck_failed))
        mp_admin__reply_text(r, 503, "DRAINING\n");
    else
        mp_admin__reply_text(r, 200, "LIVE\n");
    if (cfg)
        mp_config_unref(cfg);
}

static void on_stats(mp_server_t *s, const char *query, mp_admin_reply_t *r)
{
    mp_config_t *cfg = mp_server_config_acquire(s);
    mp_cb_refresh_gauges(cfg);
    if (cfg)
        mp_config_unref(cfg);
    mp_admin__stats(query, r);
}

static void on_prometheus(mp_server_t *s, const char *query, mp_admin_reply_t *r)
{
    mp_config_t *cfg = mp_server_config_acquire(s);
    r->status = 200;
    r->content_type = MP_ADMIN_PROMETHEUS;
    mp_cb_refresh_gauges(cfg);
    mp_admin__prometheus(cfg, r->body);
    if (cfg)
        mp_config_unref(cfg);
}

void mp_admin_render_prometheus(mp_buf_t *out)
{
    mp_config_t *cfg = mp_server ? mp_server_config_acquire(mp_server) : NULL;
    mp_cb_refresh_gauges(cfg);
    mp_admin__prometheus(cfg, out);
    if (cfg)
        mp_config_unref(cfg);
}

static void on_clusters(mp_server_t *s, const char *query, mp_admin_reply_t *r)
{
    mp_config_t *cfg = mp_server_config_acquire(s);
    mp_admin__clusters(cfg, r);
    if (cfg)
        mp_config_unref(cfg);
}

static void on_listeners(mp_server_t *s, const char *query, mp_admin_reply_t *r)
{
    mp_config_t *cfg = mp_server_config_acquire(s);
    mp_admin__listeners(cfg, query, r);
    if (cfg)
        mp_config_unref(cfg);
}

static void on_certs(mp_server_t *s, const char *query, mp_admin_reply_t *r)
{
    mp_config_t *cfg = mp_server_config_acquire(s);
    mp_admin__certs(cfg, r);
    if (cfg)
        mp_config_unref(cfg);
}

static void on_config_dump(mp_server_t *s, const char *query, mp_admin_reply_t *r)
{
    mp_config_t *cfg = mp_server_config_acquire(s);
    mp_admin__config_dump(cfg, r);
    if (cfg)
        mp_config_unref(cfg);
}

static void on_quit(mp_server_t *s, const char *query, mp_admin_reply_t *r)
{
    mp_log_info("admin: /quitquitquit, shutting down");
    mp_admin__reply_text(r, 200, "OK\n");
    mp_server_shutdown(s);
}

static void on_hc_fail(mp_server_t *s, const char *query, mp_admin_reply_t *r)
{
    atomic_store(&s->healthcheck_failed, true);
    mp_admin__reply_text(r, 200, "OK\n");
}

static void on_hc_ok(mp_server_t *s, const char *query, mp_admin_reply_t *r)
{
    atomic_store(&s->healthcheck_failed, false);
    mp_admin__reply_text(r, 200, "OK\n");
}

static void list_loggers(mp_admin_reply_t *r)
{
    mp_buf_printf(r->body, "active loggers:\n  magpie: %s\n",
                  mp_log_level_name(mp_log_current_level));
}

/* magpie has one logger; Envoy's per-logger form "?<name>=<level>" is accepted for "magpie". */
static void on_logging(mp_server_t *s, const char *query, mp_admin_reply_t *r)
{
    char level[32];
    bool given = mp_admin__query_get(query, "level", level, sizeof(level)) ||
                 mp_admin__query_get(query, "magpie", level, sizeof(level));
    mp_log_level_t lv;
    r->status = 200;
    r->content_type = MP_ADMIN_TEXT;
    if (given && mp_log_level_parse(level, &lv) != 0) {
        r->status = 400;
        mp_buf_printf(r->body, "unknown log level \"%s\"\n", level);
        return;
    }
    if (given) {
        mp_log_set_level(lv);
        mp_log_info("admin: log level set to %s", mp_log_level_name(lv));
    }
    list_loggers(r);
}

static const endpoint_t *find_endpoint(const char *path, size_t len)
{
    for (size_t i = 0; i < MP_ARRAY_SIZE(endpoints); i++) {
        if (strlen(endpoints[i].path) == len && memcmp(endpoints[i].path, path, len) == 0)
            return &endpoints[i];
    }
    return NULL;
}

/* Which methods an endpoint takes.  /logging changes state only when given a level, so a GET
 * that would set one is refused like any GET on a mutating endpoint. */
static bool method_allowed(const endpoint_t *e, const char *method, const char *query)
{
    bool post = strcmp(method, "POST") == 0;
    bool read = post || strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (e->mutates)
        return post;
    if (e->fn == on_logging && !post && query && *query)
        return false;
    return read;
}

void mp_admin_handle(mp_server_t *s, const char *method, const char *path, int *status,
                     const char **content_type, mp_buf_t *body)
{
    mp_admin_reply_t r = {.status = 200, .content_type = MP_ADMIN_TEXT, .body = body};
    const char *q = strchr(path, '?');
    size_t plen = q ? (size_t)(q - path) : strlen(path);
    const endpoint_t *e = find_endpoint(path, plen);
    if (e == NULL) {
        mp_admin__reply_text(&r, 404, "invalid path; see / for the list of endpoints\n");
    } else if (!method_allowed(e, method, q ? q + 1 : NULL)) {
        mp_admin__reply_text(&r, 405,
                             "method not allowed; state-changing endpoints require POST\n");
    } else {
        e->fn(s, q ? q + 1 : NULL, &r);
    }
    *status = r.status;
    *content_type = r.content_type;
}
