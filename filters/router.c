/* envoy.filters.http.router: the terminal filter.  Its config lives here; the routing itself
 * (route -> cluster -> load balancer -> pooled upstream connection) is the connection manager's
 * (proxy/stream.c, mp_stream_route), since it drives the stream's upstream side. */
#include <stdlib.h>

#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "magpie/filter.h"
#include "magpie/router.h"

static void *router_create_config(const ProtobufCMessage *msg, mp_err_t *err)
{
    mp_router_config_t *c = mp_xcalloc(1, sizeof(*c));
    const Envoy__Extensions__Filters__Http__Router__V3__Router *r =
        (const Envoy__Extensions__Filters__Http__Router__V3__Router *)msg;
    if (r == NULL)
        return c;
    /* Refused rather than ignored: a user who asks for these expects them to happen. */
    if (r->n_upstream_log > 0 || r->n_upstream_http_filters > 0) {
        mp_err_set(err, "%s: not supported yet",
                   r->n_upstream_log > 0 ? "upstream_log" : "upstream_http_filters");
        free(c);
        return NULL;
    }
    c->suppress_envoy_headers = r->suppress_envoy_headers;
    return c;
}

static mp_filter_status_t router_decode_headers(const void *config, mp_stream_t *s,
                                                mp_http_msg_t *req)
{
    mp_stream_route(s, config);
    return MP_FILTER_STOP;
}

const mp_http_filter_ops_t mp_filter_router_ops = {
    .name = "envoy.filters.http.router",
    .type_name = "envoy.extensions.filters.http.router.v3.Router",
    .terminal = true,
    .create_config = router_create_config,
    .free_config = free,
    .decode_headers = router_decode_headers,
};
