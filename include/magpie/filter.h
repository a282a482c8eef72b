/* HTTP filters (DESIGN.md, "Data path"; STYLE.md rule 9): an ops table plus a config factory,
 * registered by Envoy extension name and typed_config type in filters/registry.c.
 *
 * The connection manager runs a listener's chain in order on each request head
 * (decode_headers) and in reverse order on each response head (encode_headers).  A filter that
 * returns MP_FILTER_STOP has answered the request itself (mp_stream_local_reply) or taken it
 * over (the terminal router); the chain goes no further.  Absent callbacks are NULL.
 * Body and trailer callbacks arrive with the first filter that needs them. */
#ifndef MAGPIE_FILTER_H
#define MAGPIE_FILTER_H

#include <stdbool.h>

#include <protobuf-c/protobuf-c.h>

#include "magpie/common.h"
#include "magpie/http.h"

typedef struct mp_stream mp_stream_t;

typedef enum mp_filter_status {
    MP_FILTER_CONTINUE, /* on to the next filter */
    MP_FILTER_STOP,     /* answered, taken over or held (mp_stream_continue_decoding resumes) */
} mp_filter_status_t;

/* What a filter's config factory may know of the connection manager that owns it. */
typedef struct mp_http_filter_context {
    const char *stat_prefix; /* "http.<HCM stat_prefix>.", for the filter's own stats */
} mp_http_filter_context_t;

typedef struct mp_http_filter_ops {
    const char *name; /* Envoy extension name, "envoy.filters.http.router" */
    const char
        *type_name; /* typed_config message, "envoy.extensions.filters.http.router.v3.Router" */
    bool terminal;  /* must be last in a chain (the router) */
    /* Main thread, at translation: typed_config (an unpacked message of type_name, or NULL when
     * absent) -> the filter's immutable config.  NULL with err set rejects the listener. */
    void *(*create_config)(const ProtobufCMessage *typed_config, mp_err_t *err);
    /* Optional; when set it is called instead of create_config, with the owning HCM's context. */
    void *(*create_config_ctx)(const ProtobufCMessage *typed_config,
                               const mp_http_filter_context_t *ctx, mp_err_t *err);
    void (*free_config)(void *config);
    /* Worker, per stream. */
    mp_filter_status_t (*decode_headers)(const void *config, mp_stream_t *s, mp_http_msg_t *req);
    mp_filter_status_t (*encode_headers)(const void *config, mp_stream_t *s, mp_http_msg_t *resp);
} mp_http_filter_ops_t;

/* One filter of a listener's chain, owned by its mp_hcm_config_t. */
typedef struct mp_http_filter {
    const mp_http_filter_ops_t *ops;
    char *name; /* as configured */
    void *config;
} mp_http_filter_t;

/* State a filter keeps for one stream or one downstream connection, embedded first in the
 * filter's own struct.  The stream (or connection) owns it once added: destroy runs when it is
 * freed, however it ends (completed, reset, client gone), and frees the struct.  owner is the
 * filter's config, so that each filter of a chain finds its own.  Worker. */
typedef struct mp_filter_state {
    struct mp_filter_state *next;
    const void *owner;
    void (*destroy)(struct mp_filter_state *st);
} mp_filter_state_t;

void mp_stream_filter_state_add(mp_stream_t *s, mp_filter_state_t *st);
mp_filter_state_t *mp_stream_filter_state_get(mp_stream_t *s, const void *owner);
/* The same on the stream's downstream connection (lives across its requests). */
void mp_conn_filter_state_add(mp_stream_t *s, mp_filter_state_t *st);
mp_filter_state_t *mp_conn_filter_state_get(mp_stream_t *s, const void *owner);
/* Destroys every state of a list and empties it (the stream and connection call this). */
void mp_filter_states_destroy(mp_filter_state_t **list);

/* A filter that returned MP_FILTER_STOP to hold the request (a fault delay) lets it go on: the
 * chain resumes after the filter whose config is filter_config.  Worker, from a callback of the
 * filter's own (a timer); it may answer and free s before returning. */
void mp_stream_continue_decoding(mp_stream_t *s, const void *filter_config);

/* The built-in filter with this extension name or typed_config type name (either may be NULL);
 * NULL when magpie has none. */
const mp_http_filter_ops_t *mp_http_filter_lookup(const char *name, const char *type_name);

#endif
