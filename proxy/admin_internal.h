/* Shared between the files of the admin module (admin.c, admin_stats.c, admin_config.c,
 * admin_server.c); not for other modules.  Main thread. */
#ifndef MAGPIE_ADMIN_INTERNAL_H
#define MAGPIE_ADMIN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "magpie/buf.h"
#include "magpie/config.h"
#include "magpie/server.h"

/* What a handler fills: status, a static content type, and the body it appends to. */
typedef struct mp_admin_reply {
    int status;
    const char *content_type;
    mp_buf_t *body;
} mp_admin_reply_t;

#define MP_ADMIN_TEXT "text/plain; charset=UTF-8"
#define MP_ADMIN_JSON "application/json"
#define MP_ADMIN_PROMETHEUS "text/plain; version=0.0.4; charset=utf-8"

/* Finds key in a query string ("a=1&b=x%2Fy"; NULL allowed) and copies its percent-decoded
 * value into out (NUL-terminated, truncated to cap).  A bare "key" yields "".  Returns whether
 * the key was present. */
bool mp_admin__query_get(const char *query, const char *key, char *out, size_t cap);

/* Sets a plain-text reply. */
void mp_admin__reply_text(mp_admin_reply_t *r, int status, const char *text);

/* Appends root, printed, and a newline to out, then deletes root (a cJSON *: kept opaque here so
 * that this header does not pull cJSON into every admin file). */
void mp_admin__json_out(void *root, mp_buf_t *out);

/* /stats: "name: value" lines sorted by name, or ?format=json; ?filter=<regex> keeps names the
 * regex finds a match in (unanchored, as Envoy); ?usedonly keeps non-zero stats. */
void mp_admin__stats(const char *query, mp_admin_reply_t *r);

/* Prometheus text format 0.0.4 of every stat.  cfg (may be NULL) supplies the cluster names,
 * HTTP stat prefixes and listener addresses used to split stat names that contain dots. */
void mp_admin__prometheus(const mp_config_t *cfg, mp_buf_t *out);

/* Appends a host's MP_HEALTH_* flags as Envoy's /clusters health_flags spell them: "healthy"
 * when none, else "/failed_active_hc/failed_outlier_check/degraded_active_hc/pending_active_hc"
 * (those set, in that order). */

/* /clusters, /listeners, /config_dump over the snapshot cfg (may be NULL). */
void mp_admin__clusters(const mp_config_t *cfg, mp_admin_reply_t *r);
void mp_admin__listeners(const mp_config_t *cfg, const char *query, mp_admin_reply_t *r);
void mp_admin__config_dump(const mp_config_t *cfg, mp_admin_reply_t *r);

/* /certs: Envoy's Certificates JSON, one entry per TLS context of cfg (may be NULL), read from
 * the contexts' current SSL_CTX (admin_certs.c). */
void mp_admin__certs(const mp_config_t *cfg, mp_admin_reply_t *r);

#endif
