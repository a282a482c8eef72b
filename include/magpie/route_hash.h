/* A route's hash_policy (RouteAction.hash_policy): how a request becomes the 64-bit hash that a
 * RING_HASH or MAGLEV cluster maps to a host (include/magpie/lb_hash.h).  Translated in
 * xds/translate_hash.c, evaluated per request in proxy/route_hash.c. */
#ifndef MAGPIE_ROUTE_HASH_H
#define MAGPIE_ROUTE_HASH_H

#include <stdbool.h>
#include <stdint.h>

#include "magpie/config.h"
#include "magpie/http.h"

typedef enum mp_hash_policy_kind {
    MP_HASH_POLICY_HEADER,       /* header.header_name */
    MP_HASH_POLICY_COOKIE,       /* cookie.name */
    MP_HASH_POLICY_SOURCE_IP,    /* connection_properties.source_ip */
    MP_HASH_POLICY_QUERY,        /* query_parameter.name */
    MP_HASH_POLICY_FILTER_STATE, /* filter_state: magpie keeps no filter state; never hashes */
} mp_hash_policy_kind_t;

/* One HashPolicy entry; owned by its route. */
struct mp_hash_policy {
    mp_hash_policy_kind_t kind;
    char *name;    /* header (lower-case), cookie or query parameter name; NULL otherwise */
    bool terminal; /* a hash so far ends the evaluation */
    /* cookie.ttl given (Envoy then generates the cookie when absent; magpie does not yet, see
     * docs/resilience.md) and cookie.path; kept for that and for /config_dump parity. */
    bool has_ttl;
    uint64_t ttl_ms;
    char *path;
};

/* The request hash of r's hash policies, as Envoy combines them: each policy that yields a value
 * (header present, cookie present, ...) hashes it with xxHash64 and the running hash is rotated
 * left by one bit and XORed with it; a terminal policy that found a hash stops the walk.  peer is
 * the downstream "ip:port" text.  Returns true with *out set, false when no policy yielded a
 * value (or r has none).  Pure; any thread. */
bool mp_route_hash_compute(const mp_route_t *r, const mp_http_msg_t *req, const char *peer,
                           uint64_t *out);

/* mp_route_hash_compute, or a random hash when it yields none (Envoy then picks at random).
 * Worker (the random numbers are per thread). */
uint64_t mp_route_hash(const mp_route_t *r, const mp_http_msg_t *req, const char *peer);

/* Frees policies[0..n) and the array. */
void mp_hash_policies_free(mp_hash_policy_t *policies, uint32_t n);

#endif
