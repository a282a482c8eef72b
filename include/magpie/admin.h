/* The admin server (bootstrap admin.address), on the main thread's loop: /ready, /stats,
 * /stats/prometheus, /clusters, /config_dump, /listeners, /quitquitquit, /healthcheck/fail,
 * /healthcheck/ok, /logging.  It binds only where configured. */
#ifndef MAGPIE_ADMIN_H
#define MAGPIE_ADMIN_H

#include "magpie/buf.h"
#include "magpie/common.h"
#include "magpie/http.h"
#include "magpie/server.h"

/* Binds and starts serving on s->loop.  MP_ERROR with err set when the bind fails. */
int mp_admin_start(mp_server_t *s, const mp_addr_t *addr, mp_err_t *err);
void mp_admin_stop(mp_server_t *s);

/* Answers one admin request: fills *status, content type and body.  Pure function of the server
 * state; split out so unit tests call it without sockets.  Main thread. */
void mp_admin_handle(mp_server_t *s, const char *method, const char *path, int *status,
                     const char **content_type, mp_buf_t *body);

/* Renders all stats in Prometheus text format with Envoy's default tag extraction
 * (cluster.<name>.x -> envoy_cluster_x{envoy_cluster_name="<name>"}, http.<prefix>.x ->
 * envoy_http_x{envoy_http_conn_manager_prefix="<prefix>"}, listener.<addr>.x ->
 * envoy_listener_x{envoy_listener_address="<addr>"}). */
void mp_admin_render_prometheus(mp_buf_t *out);

#endif
