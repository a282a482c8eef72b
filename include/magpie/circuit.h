/* Circuit breakers (Cluster.circuit_breakers): per cluster and routing priority, limits on
 * connections, pending requests, active requests, active retries and connection pools, counted
 * across all workers with shared atomics so that a limit of 10 means 10 for the whole process.
 * A resource over its limit is refused at once (the caller answers 503 with flag UO and counts
 * the cluster's *_overflow stat); nothing queues beyond a limit. */
#ifndef MAGPIE_CIRCUIT_H
#define MAGPIE_CIRCUIT_H

#include <stdbool.h>
#include <stddef.h>

#include "magpie/config.h"

typedef enum mp_cb_resource {
    MP_CB_CONNECTIONS,      /* upstream connections open or opening */
    MP_CB_PENDING_REQUESTS, /* requests waiting for a connection (or an HTTP/2 stream slot) */
    MP_CB_REQUESTS,         /* requests in flight */
    MP_CB_RETRIES,          /* retries in flight (also bounded by the retry budget) */
    MP_CB_CONNECTION_POOLS, /* connection pools (per worker, per protocol) */
    MP_CB_RESOURCE_COUNT,
} mp_cb_resource_t;

/* Takes one unit of r for cluster c at priority p.  True when under the limit (the caller owes
 * one mp_cb_release); false on overflow (nothing taken).  Any worker. */
bool mp_cb_try_acquire(mp_cluster_t *c, mp_routing_priority_t p, mp_cb_resource_t r);
void mp_cb_release(mp_cluster_t *c, mp_routing_priority_t p, mp_cb_resource_t r);
/* The units of r in use now (for gauges, /clusters and tests). */
uint32_t mp_cb_in_use(const mp_cluster_t *c, mp_routing_priority_t p, mp_cb_resource_t r);
/* Envoy's defaults: 1024 connections, pending and requests, 3 retries, pools unlimited. */
void mp_cb_limits_default(mp_cb_limits_t *l);

/* Sets every cluster's circuit_breakers.<priority>.*_open (and, with track_remaining,
 * remaining_*) gauges from the counts now.  The admin thread, before rendering stats. */
void mp_cb_refresh_gauges(const mp_config_t *cfg);
/* True when some count of cfg is not 0, with a description in what: once every request and
 * connection has ended, anything left is a leak that would wedge the cluster.  Any thread. */
bool mp_cb_leaked(const mp_config_t *cfg, char *what, size_t cap);

#endif
