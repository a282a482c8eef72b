/* The router: the terminal HTTP filter's work, done by the connection manager's stream. */
#ifndef MAGPIE_ROUTER_H
#define MAGPIE_ROUTER_H

#include <stdbool.h>

typedef struct mp_stream mp_stream_t;

/* envoy.extensions.filters.http.router.v3.Router, as far as magpie implements it. */
typedef struct mp_router_config {
    bool suppress_envoy_headers; /* no x-envoy-upstream-service-time on responses */
} mp_router_config_t;

/* Sends the stream where its route says: a direct response, a redirect, or a cluster's upstream;
 * answers 404 (NR) when no route matched and 503 (NC) when the cluster is unknown.  Worker.
 * May finish the stream before it returns. */
void mp_stream_route(mp_stream_t *s, const mp_router_config_t *config);

#endif
