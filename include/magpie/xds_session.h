/* The xDS client protocol state machine (docs/xds-protocol.md), as a library with no I/O: the
 * gRPC ADS and per-type transports, the REST poller and the tests all drive this one piece of
 * logic.  A session is one stream (ADS multiplexing every type, or a per-type stream carrying
 * one), in state-of-the-world (SotW) or delta mode.  The transport feeds it each received message
 * (mp_xds_session_on_message), asks it for the next message to send (mp_xds_session_next_request)
 * and tells it when the stream is replaced (mp_xds_session_reset).  The applier, called back from
 * on_message, turns resources into configuration and may change the subscriptions from inside
 * the callback (as Envoy's CDS apply sets the EDS names).
 *
 * Threads: a session belongs to the thread that created it (the main thread in magpie); nothing
 * in it is shared.  Time is passed in by the caller (milliseconds, any monotonic clock). */
#ifndef MAGPIE_XDS_SESSION_H
#define MAGPIE_XDS_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "magpie/common.h"

#define MP_XDS_TYPE_PREFIX "type.googleapis.com/"
#define MP_XDS_TYPE_LISTENER MP_XDS_TYPE_PREFIX "envoy.config.listener.v3.Listener"
#define MP_XDS_TYPE_ROUTE MP_XDS_TYPE_PREFIX "envoy.config.route.v3.RouteConfiguration"
#define MP_XDS_TYPE_CLUSTER MP_XDS_TYPE_PREFIX "envoy.config.cluster.v3.Cluster"
#define MP_XDS_TYPE_ENDPOINT MP_XDS_TYPE_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment"
#define MP_XDS_TYPE_SECRET MP_XDS_TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.Secret"
#define MP_XDS_TYPE_RESOURCE MP_XDS_TYPE_PREFIX "envoy.service.discovery.v3.Resource"

/* Envoy's initial_fetch_timeout default (ConfigSource field 7). */
#define MP_XDS_DEFAULT_FETCH_TIMEOUT_MS 15000
/* Envoy's xDS stream retry back-off (grpc_stream.h: 500 ms base, 30 s cap). */
#define MP_XDS_BACKOFF_BASE_MS 500
#define MP_XDS_BACKOFF_MAX_MS 30000
/* The gRPC code a NACK's error_detail carries: 13 INTERNAL, as Envoy's gRPC mux sets it. */
#define MP_XDS_NACK_CODE 13
/* Nesting bound for received messages (Struct, DynamicParameterConstraints recurse). */
#define MP_XDS_MAX_DEPTH 64

typedef enum mp_xds_mode {
    MP_XDS_SOTW,  /* DiscoveryRequest / DiscoveryResponse */
    MP_XDS_DELTA, /* DeltaDiscoveryRequest / DeltaDiscoveryResponse */
} mp_xds_mode_t;

/* The Node sent on the first request of every stream.  Strings may be NULL (= empty); the
 * session copies everything, so the caller's storage may go after mp_xds_session_new.
 * user_agent_name is always "magpie". */
typedef struct mp_xds_node {
    const char *id;
    const char *cluster;
    const cJSON *metadata; /* a JSON object (google.protobuf.Struct), or NULL */
    const char *region, *zone, *sub_zone;
    const char *user_agent_version; /* NULL: not sent */
    const char *const *client_features;
    size_t n_client_features;
} mp_xds_node_t;

/* One resource handed to the applier.  Pointers are valid only during the apply callback. */
typedef struct mp_xds_resource {
    const char *name;    /* the resource's name (Listener.name, ...cluster_name, ...) */
    const char *version; /* delta: Resource.version; SotW: the response's version_info */
    /* The resource message, serialised (the inner Any's value, after unwrapping a
     * envoy.service.discovery.v3.Resource); its type is the update's type_url.  NULL with
     * len 0 for a delta/wrapped TTL heartbeat (a Resource without `resource`). */
    const uint8_t *value;
    size_t len;
    int64_t ttl_ms; /* Resource.ttl, or -1 when none */
} mp_xds_resource_t;

/* What one response means, handed to the applier in one call. */
typedef struct mp_xds_update {
    mp_xds_mode_t mode;
    const char *version_info; /* SotW version_info; delta system_version_info (informational) */
    /* true: `resources` is the complete set of this type (SotW LDS and CDS, and SotW on a
     * wildcard subscription of those): anything not in it is gone, and `removed` lists the names
     * accepted before that are absent now.  false: `resources` are upserts and absence means
     * nothing (SotW RDS/EDS/SDS: those go when no parent references them); in delta `removed`
     * is the response's removed_resources (deleted, or never existed). */
    bool complete;
    const mp_xds_resource_t *resources;
    size_t n_resources;
    const char *const *removed;
    size_t n_removed;
} mp_xds_update_t;

/* The applier: called once per valid response with its whole content.  Return 0 to accept
 * (the session ACKs with the new version), or MP_ERROR with err set to reject everything in the
 * response (the session NACKs with err's text and keeps the previous version; the applier must
 * keep the previous configuration in force).  May call mp_xds_session_subscribe /
 * _unsubscribe / _set_names on the same session; must not call on_message, reset or free. */
typedef int (*mp_xds_apply_cb)(void *ctx, const char *type_url, const mp_xds_update_t *u,
                               mp_err_t *err);

/* The next message to send: owned by the caller, release with mp_xds_request_clear. */
typedef struct mp_xds_request {
    uint8_t *data; /* a serialised DiscoveryRequest or DeltaDiscoveryRequest */
    size_t len;
    const char *type_url; /* which type it is for (the session's string; valid until free) */
    bool is_nack;         /* carries error_detail */
} mp_xds_request_t;

typedef struct mp_xds_session mp_xds_session_t;

/* A new session in `mode`, for `node`, calling `apply(ctx, ...)`.  Never NULL. */
mp_xds_session_t *mp_xds_session_new(mp_xds_mode_t mode, const mp_xds_node_t *node,
                                     mp_xds_apply_cb apply, void *ctx);
void mp_xds_session_free(mp_xds_session_t *s);

/* Adds names to the interest set of type_url (creating the type on first use), and queues a
 * request if that changes what the server must know.  The name "*" is the explicit wildcard.
 * For LDS and CDS a first call with n == 0 subscribes to the wildcard, as Envoy does; for other
 * types n == 0 only declares the type.  Returns 0. */
int mp_xds_session_subscribe(mp_xds_session_t *s, const char *type_url, const char *const *names,
                             size_t n);
/* Removes names ("*" leaves the wildcard).  Unknown names are ignored.  Returns 0, or MP_ERROR
 * when the type was never subscribed. */
int mp_xds_session_unsubscribe(mp_xds_session_t *s, const char *type_url, const char *const *names,
                               size_t n);
/* Replaces the named interest set of type_url with exactly `names` (the wildcard flag is kept),
 * queueing a request when it changed: what the applier calls after applying CDS (EDS names) or
 * LDS (RDS names).  Returns 0. */
int mp_xds_session_set_names(mp_xds_session_t *s, const char *type_url, const char *const *names,
                             size_t n);

/* Handles one received message (a DiscoveryResponse or DeltaDiscoveryResponse per the mode):
 * decodes it (bounded: depth MP_XDS_MAX_DEPTH), unwraps Resource wrappers, validates type URLs
 * and names, calls the applier, and queues the ACK or NACK.  Returns 0 when the message was
 * handled (accepted, rejected with a NACK queued, or ignored because no one subscribed to its
 * type), or MP_ERROR with err set when the bytes are not a message at all: then, as Envoy does
 * with an undecodable gRPC message, the transport must end the stream and reconnect (after
 * mp_xds_session_reset).  now is the caller's clock (ms), reserved for TTL bookkeeping and
 * unused today. */
int mp_xds_session_on_message(mp_xds_session_t *s, const uint8_t *data, size_t len, uint64_t now,
                              mp_err_t *err);

/* The next request to send, if any: returns 1 and fills *out (release with
 * mp_xds_request_clear), or 0 when nothing is pending.  ACK/NACKs come before subscription-only
 * requests, so the EDS request an applier queued while applying CDS follows the CDS ACK.  Call
 * until it returns 0.  The first request of a stream carries the node. */
int mp_xds_session_next_request(mp_xds_session_t *s, mp_xds_request_t *out);
void mp_xds_request_clear(mp_xds_request_t *r);

/* A new stream replaces the old one: nonces are forgotten, and the next requests re-send every
 * type's whole interest with the last accepted state (SotW version_info; delta
 * initial_resource_versions) and the node.  Accepted versions and resources are kept: the
 * configuration keeps serving while the plane is away. */
void mp_xds_session_reset(mp_xds_session_t *s);

/* initial_fetch_timeout: arms type_url's deadline at now + timeout_ms (0: wait forever, as
 * Istio configures).  Returns MP_ERROR for a type never subscribed. */
int mp_xds_session_set_fetch_timeout(mp_xds_session_t *s, const char *type_url, uint64_t timeout_ms,
                                     uint64_t now);
/* true while type_url has had no response (accepted or rejected) since it was subscribed and
 * its deadline has not passed; false once a response arrived or the deadline passed (the
 * caller then stops waiting for it, as Envoy ends warming).  A type never given a timeout
 * waits until its first response.  Unknown types: false. */
bool mp_xds_session_fetch_pending(const mp_xds_session_t *s, const char *type_url, uint64_t now);
/* The earliest deadline of a type still waiting, or UINT64_MAX: when to ask again. */
uint64_t mp_xds_session_next_deadline(const mp_xds_session_t *s);

/* Introspection for /config_dump and tests.  The last accepted SotW version_info of the type
 * ("" before any), or NULL for an unknown type. */
const char *mp_xds_session_version(const mp_xds_session_t *s, const char *type_url);
/* The accepted version of one resource (delta: per resource; SotW: the response's version), or
 * NULL when the session holds no such resource. */
const char *mp_xds_session_resource_version(const mp_xds_session_t *s, const char *type_url,
                                            const char *name);

/* Jittered exponential back-off for reconnect attempt number `attempt` (0 for the first retry
 * after a failure): a value in [0, min(base << attempt, max)), chosen by `random` — Envoy's
 * JitteredExponentialBackOffStrategy.  base 0 counts as 1, max < base counts as base.  Pure. */
uint64_t mp_xds_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t max_ms, uint64_t random);

#endif
