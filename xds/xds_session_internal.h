/* Private to xds/xds_session*.c: the session's per-type state, sorted name sets and the wire
 * helpers that read untrusted bytes. */
#ifndef MAGPIE_XDS_SESSION_INTERNAL_H
#define MAGPIE_XDS_SESSION_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "google/protobuf/struct.pb-c.h"

#include "magpie/xds_session.h"

/* A set of names kept sorted (bsearch), each with an optional version string. */
typedef struct mp_xds_name {
    char *name;
    char *version; /* NULL when the set holds names only */
} mp_xds_name_t;

typedef struct mp_xds_names {
    mp_xds_name_t *v;
    size_t n, cap;
} mp_xds_names_t;

/* Index of name, or -1. */
ssize_t mp_xds__names_find(const mp_xds_names_t *set, const char *name);
/* Inserts name (or replaces its version).  Returns true when the name was new. */
bool mp_xds__names_put(mp_xds_names_t *set, const char *name, const char *version);
/* Removes name.  Returns true when it was there. */
bool mp_xds__names_del(mp_xds_names_t *set, const char *name);
void mp_xds__names_clear(mp_xds_names_t *set);

/* One type_url's state on the session. */
typedef struct mp_xds_type {
    char *type_url;
    bool complete_sets; /* LDS/CDS: a SotW response is the whole state of the world */
    bool wildcard;
    mp_xds_names_t names; /* explicit interest, without "*" */
    mp_xds_names_t known; /* accepted resources: name -> version */
    char *version;        /* last accepted SotW version_info, "" before any */

    /* This stream only (cleared by reset). */
    char *nonce;        /* the most recent response's nonce, or NULL */
    char *error;        /* NACK text to send with the next request, or NULL */
    bool sent_initial;  /* the type's first request went out */
    bool sent_explicit; /* SotW: a non-empty name list went out (an empty one now unsubscribes) */
    bool ack_pending;   /* a response waits for its ACK/NACK */
    bool sub_pending;   /* the interest changed since the last request */
    mp_xds_names_t delta_sub, delta_unsub; /* delta: changes not yet sent ("*" included) */

    bool got_response; /* any response, accepted or not, since subscription */
    bool deadline_armed;
    uint64_t deadline;
} mp_xds_type_t;

struct mp_xds_session {
    mp_xds_mode_t mode;
    mp_xds_apply_cb apply;
    void *ctx;
    bool node_sent;

    /* The node, kept as the strings and Struct the request builder points at. */
    char *node_id, *node_cluster, *region, *zone, *sub_zone, *ua_version;
    char **features;
    size_t n_features;
    Google__Protobuf__Struct *metadata; /* NULL when none */

    mp_xds_type_t **types; /* in subscription order */
    size_t n_types;
};

mp_xds_type_t *mp_xds__type_find(const mp_xds_session_t *s, const char *type_url);
/* Whether a type with this interest has anything to ask for (it has names or the wildcard). */
bool mp_xds__type_interested(const mp_xds_type_t *t);
bool mp_xds__type_wants(const mp_xds_type_t *t, const char *name);

/* Reads field 1 (the name of every xDS resource type: Listener.name, Cluster.name,
 * RouteConfiguration.name, ClusterLoadAssignment.cluster_name, Secret.name) from a serialised
 * message without decoding the rest.  Returns a new string (free), NULL when the bytes are not a
 * well-formed message, field 1 is absent, or it holds a NUL byte. */
char *mp_xds__scan_name(const uint8_t *p, size_t len);
/* Checks that the bytes are well-formed at the wire level and that messages of `desc` do not
 * nest deeper than max_depth (protobuf-c's unpacker recurses without a bound).  0 or MP_ERROR. */
int mp_xds__check_depth(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len,
                        int max_depth);

#endif
