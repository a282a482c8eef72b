/* magpie-cp: magpie's own xDS control plane (docs/control-plane.md).  Privates shared by the
 * files of xds/cp/: the resource store (store.c), the per-stream xDS state machine (xds.c), the
 * HTTP/2 + HTTP/1.1 server (server.c, rest.c) and the command line (main.c).  One thread, one
 * libev loop; nothing here is thread-safe. */
#ifndef MAGPIE_XDS_CP_H
#define MAGPIE_XDS_CP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "magpie/common.h"

/* Resource types, in the make-before-break order a plane pushes them (reference §2.7). */
enum { MP_CP_CDS, MP_CP_EDS, MP_CP_LDS, MP_CP_RDS, MP_CP_SDS, MP_CP_NTYPES };

typedef struct mp_cp_type_info {
    const char *url;   /* type.googleapis.com/... */
    const char *name;  /* "Cluster", for logs */
    const char *rest;  /* "clusters": the REST path /v3/discovery:<rest> */
    const char *sotw;  /* per-type gRPC path of the SotW stream */
    const char *delta; /* ... and of the delta stream */
    bool wildcard;     /* LDS and CDS: an empty first subscription means "all" */
} mp_cp_type_info_t;

const mp_cp_type_info_t *mp_cp_type(int type);
/* Type by URL; -1 when the plane does not serve it. */
int mp_cp_type_by_url(const char *url);

/* One resource as served: the Any's value bytes, and a version derived from those bytes (so the
 * same content keeps its version across restarts, which makes initial_resource_versions useful). */
typedef struct mp_cp_resource {
    int type;
    char *name;
    char *version; /* 16 hex digits */
    char *file;    /* file it came from, for logs */
    uint8_t *value;
    size_t len;
} mp_cp_resource_t;

/* All resources, sorted by (type, name).  Owned by whoever holds it. */
typedef struct mp_cp_snapshot {
    mp_cp_resource_t *res;
    size_t n;
} mp_cp_snapshot_t;

/* Reads every *.yaml, *.yml and *.json file directly under dir (sorted by name; hidden files and
 * subdirectories skipped).  A file holds one resource with an "@type", or a DiscoveryResponse
 * ({"resources": [...]}).  Each resource goes through the proxy's schema code (mp_json_to_pb
 * with the type's descriptor), so the message is the proxy's ("<file>: <path>: <message>").
 * Returns 0, or MP_ERROR with err set and *out untouched. */
int mp_cp_snapshot_load(const char *dir, mp_cp_snapshot_t *out, mp_err_t *err);
void mp_cp_snapshot_free(mp_cp_snapshot_t *s);
const mp_cp_resource_t *mp_cp_snapshot_find(const mp_cp_snapshot_t *s, int type, const char *name);

typedef void (*mp_cp_change_cb)(void *arg);

/* The live snapshot and the per-type versions clients see.  Versions are decimal counters per
 * type, bumped whenever a type's resources change.  In step mode a directory change is only
 * staged; each SIGUSR1 releases one resource change (added, changed or removed), in push order. */
typedef struct mp_cp_store {
    struct ev_loop *loop;
    char *dir;
    bool step;
    mp_cp_snapshot_t live;
    mp_cp_snapshot_t disk; /* step mode: what the directory holds */
    uint64_t version[MP_CP_NTYPES];
    char version_str[MP_CP_NTYPES][24];
    int inotify_fd;
    ev_io inotify_io;
    ev_timer debounce;
    ev_signal usr1;
    mp_cp_change_cb on_change;
    void *arg;
} mp_cp_store_t;

/* Loads dir (failing on any invalid file) and watches it.  on_change runs on the loop after the
 * live snapshot changed. */
int mp_cp_store_open(mp_cp_store_t *s, struct ev_loop *loop, const char *dir, bool step,
                     double debounce_s, mp_cp_change_cb on_change, void *arg, mp_err_t *err);
void mp_cp_store_close(mp_cp_store_t *s);
/* Number of staged changes not yet released (step mode), 0 otherwise. */
size_t mp_cp_store_pending(const mp_cp_store_t *s);

/* One xDS stream's protocol state (xds.c).  send is called with each serialized response
 * message (DiscoveryResponse or DeltaDiscoveryResponse). */
typedef void (*mp_cp_send_cb)(void *arg, const uint8_t *msg, size_t len);

typedef struct mp_cp_sub mp_cp_sub_t;

typedef struct mp_cp_xds {
    bool delta;
    int fixed_type; /* -1 on ADS */
    char *label;    /* "conn 3 stream 1 ADS" */
    char *node_id;
    uint64_t nonce_seq;
    mp_cp_sub_t *sub; /* [MP_CP_NTYPES] */
    const mp_cp_store_t *store;
    mp_cp_send_cb send;
    void *arg;
} mp_cp_xds_t;

void mp_cp_xds_init(mp_cp_xds_t *x, const mp_cp_store_t *store, bool delta, int fixed_type,
                    const char *label, mp_cp_send_cb send, void *arg);
void mp_cp_xds_free(mp_cp_xds_t *x);
/* Handles one request message.  Returns 0, or a gRPC status code (3 INVALID_ARGUMENT) with err
 * set when the stream must end. */
int mp_cp_xds_on_message(mp_cp_xds_t *x, const uint8_t *msg, size_t len, mp_err_t *err);
/* After a store change: sends every subscribed type whose content moved on. */
void mp_cp_xds_push(mp_cp_xds_t *x);

/* REST-JSON (rest.c): path "/v3/discovery:<type>", body a JSON DiscoveryRequest.  Returns the
 * HTTP status; *out is the response body (JSON or a plain-text error, "" for 304), freed by the
 * caller. */
int mp_cp_rest_handle(const mp_cp_store_t *store, const char *path, const char *body, size_t len,
                      char **out);

/* One HTTP/1.1 request in buf[0, len) (http1.c): 0 when complete (path copied, the body at
 * buf + *body_off of *body_len bytes, *total bytes used, *close when the client asked for it),
 * MP_AGAIN when more bytes are needed, MP_ERROR on a malformed or oversized request. */
int mp_cp_http1_parse(const char *buf, size_t len, char *method, size_t method_size, char *path,
                      size_t path_size, size_t *body_off, size_t *body_len, size_t *total,
                      bool *close);

/* Servers (server.c). */
typedef struct mp_cp_server mp_cp_server_t;
mp_cp_server_t *mp_cp_server_new(struct ev_loop *loop, mp_cp_store_t *store, const char *grpc_addr,
                                 const char *rest_addr, mp_err_t *err);
void mp_cp_server_push(mp_cp_server_t *srv);
void mp_cp_server_free(mp_cp_server_t *srv);

#endif
