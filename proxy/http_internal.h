/* The HTTP/1.1 data path's objects, shared by worker.c, h1_downstream.c, stream.c and
 * upstream.c.  Everything here belongs to one worker and is touched only by its thread.
 *
 * Ownership: a downstream connection (mp_dconn_t) owns its active stream; the stream owns its
 * request and response heads and, while attached, borrows an upstream connection from the
 * worker's pool (mp_uconn_t), which returns to the pool or is closed when the stream detaches.
 * Objects are never freed inside their own callbacks: closing marks them dead, stops their
 * watchers and queues them on the worker's graveyard, freed after the current loop iteration. */
#ifndef MAGPIE_HTTP_INTERNAL_H
#define MAGPIE_HTTP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <ev.h>

#include "magpie/buf.h"
#include "magpie/config.h"
#include "magpie/h1.h"
#include "magpie/http.h"
#include "magpie/lb.h"
#include "magpie/stream_info.h"
#include "magpie/worker.h"

typedef struct mp_dconn mp_dconn_t;
typedef struct mp_stream mp_stream_t;
typedef struct mp_uconn mp_uconn_t;
typedef struct mp_pool mp_pool_t;

/* Something to free after the current loop iteration. */
typedef struct mp_grave {
    struct mp_grave *next;
    void (*free_fn)(struct mp_grave *g);
} mp_grave_t;

typedef struct mp_wlistener {
    ev_io io;
    int fd;
    const mp_listener_t *listener;
    mp_worker_t *worker;
} mp_wlistener_t;

/* Per-worker, per-cluster upstream state: the load balancer and idle keep-alive connections. */
struct mp_pool {
    mp_cluster_t *cluster;
    mp_lb_t *lb;
    mp_uconn_t *idle; /* singly linked through mp_uconn_t.next_idle */
    unsigned n_idle;
};

struct mp_worker {
    unsigned index;
    pthread_t thread;
    struct ev_loop *loop;
    ev_async wake;
    ev_check reaper;
    ev_timer drain_timer;
    mp_config_t *config;                /* the worker's current snapshot (one ref) */
    _Atomic(mp_config_t *) next_config; /* published, not yet picked up (one ref) */
    mp_wlistener_t *listeners;
    uint32_t n_listeners;
    mp_pool_t *pools; /* indexed by mp_cluster_t.index of `config` */
    uint32_t n_pools;
    mp_grave_t *graves;
    atomic_bool drain_requested;
    _Atomic uint64_t drain_deadline_ms;
    bool draining;
    atomic_uint active_conns;
    atomic_bool exited;            /* the loop has ended; join will not block */
    mp_dconn_t *conns;             /* all live downstream connections (doubly linked) */
    struct mp_tcp_conn *tcp_conns; /* live TCP proxy connections (proxy/tcp_proxy.c) */
};

/* ---- downstream HTTP/1.1 connection (h1_downstream.c) ---- */

struct mp_dconn {
    mp_grave_t grave;
    mp_worker_t *w;
    mp_dconn_t *prev, *next;
    int fd;
    ev_io rio, wio;
    ev_timer timer; /* connection idle, or request-headers timeout */
    mp_config_t *config;
    const mp_listener_t *listener;
    const mp_hcm_config_t *hcm;
    mp_buf_t in, out;
    mp_h1_parser_t *parser;
    mp_stream_t *stream;    /* the request being answered; pipelined ones wait in `in` */
    mp_headers_t *trailers; /* request trailers between on_trailers and on_complete */
    char peer[64], local[64];
    uint32_t buffer_limit;
    bool dead;
    bool peer_closed;       /* read EOF */
    bool close_after_write; /* Connection: close, protocol error, drain */
    bool read_blocked;      /* backpressure: upstream write buffer over the limit */
    bool parser_paused;     /* a complete request is being answered */
    bool in_dispatch;       /* inside the parser loop: no recursive processing */
    bool lingering;         /* response sent, write side shut: draining what the client sends */
    size_t linger_bytes;
};

void mp_dconn_accept(mp_worker_t *w, const mp_listener_t *l, int fd);
/* Writes what is buffered; closes when close_after_write and everything went out. */
void mp_dconn_flush(mp_dconn_t *dc);
/* Closes now (abortive for an active stream). */
void mp_dconn_close(mp_dconn_t *dc, const char *why);
/* The active stream finished: resume parsing pipelined input or close. */
void mp_dconn_stream_done(mp_dconn_t *dc);
/* Backpressure from the upstream side: stop or resume reading the client. */
void mp_dconn_block_read(mp_dconn_t *dc, bool block);
/* Drain: close idle connections now, ask busy ones to close after their response. */
void mp_dconn_drain(mp_dconn_t *dc);

/* ---- one request/response exchange (stream.c) ---- */

struct mp_stream {
    mp_dconn_t *dc;
    mp_config_t *config; /* ref for the stream's life */
    mp_http_msg_t *req;
    mp_http_msg_t *resp;
    mp_stream_info_t info;
    const mp_vhost_t *vhost;
    const mp_route_t *route;
    const mp_weighted_cluster_t *wc;
    const struct mp_router_config *router_config; /* set when the router takes the stream */
    mp_cluster_t *cluster;
    mp_hostset_t *hosts; /* ref while a host from it is in use */
    int host_idx;
    mp_uconn_t *up;
    mp_buf_t req_pending; /* request body received before the upstream was ready */
    ev_timer route_timer; /* route timeout, from the end of the request */
    ev_timer idle_timer;  /* stream_idle_timeout, measured from last_activity */
    ev_tstamp last_activity;
    ev_timer request_timer; /* request_timeout: until the request is complete */
    char upstream_host[64];
    char request_id[40];
    bool req_complete;
    bool req_chunked_up; /* request body goes upstream chunked */
    bool resp_started;   /* response head written downstream */
    bool resp_complete;
    bool resp_chunked_down;
    bool resp_close_delimited;
    bool head_request;
    bool sent_100;
    bool lb_started;
};

/* Creates the connection's active stream for req (taking ownership) without routing it. */
mp_stream_t *mp_stream_new(mp_dconn_t *dc, mp_http_msg_t *req);
/* Called by the downstream parser callbacks. */
int mp_stream_on_request_head(mp_dconn_t *dc, mp_http_msg_t *req);
int mp_stream_on_request_body(mp_stream_t *s, const char *data, size_t len);
int mp_stream_on_request_complete(mp_stream_t *s, mp_headers_t *trailers);
/* The downstream went away or broke: abort the upstream side, log with `flag`, free. */
void mp_stream_abort(mp_stream_t *s, uint32_t flag);
/* Downstream write buffer drained below the low mark: resume reading the upstream. */
void mp_stream_downstream_drained(mp_stream_t *s);
/* Answers locally (no upstream): status, flags, body text.  After the response head is out this
 * resets instead (closes the downstream connection). */
void mp_stream_local_reply(mp_stream_t *s, int status, uint32_t flags, const char *body,
                           const char *details);

/* Called by the upstream connection. */
void mp_stream_on_upstream_ready(mp_stream_t *s); /* connected (or reused) */
void mp_stream_on_upstream_failure(mp_stream_t *s, uint32_t flag, const char *details);
int mp_stream_on_response_head(mp_stream_t *s, mp_http_msg_t *resp);
int mp_stream_on_response_body(mp_stream_t *s, const char *data, size_t len);
int mp_stream_on_response_complete(mp_stream_t *s, mp_headers_t *trailers);
/* Upstream write buffer drained: resume reading the client. */
void mp_stream_upstream_drained(mp_stream_t *s);

/* ---- upstream HTTP/1.1 connections and pools (upstream.c) ---- */

typedef enum mp_uconn_state {
    MP_UCONN_CONNECTING, /* TCP connect in progress, stream attached */
    MP_UCONN_ACTIVE,     /* carrying a stream */
    MP_UCONN_IDLE,       /* in the pool, waiting for reuse */
} mp_uconn_state_t;

struct mp_uconn {
    mp_grave_t grave;
    mp_worker_t *w;
    mp_pool_t *pool;
    mp_config_t *config; /* ref: the snapshot `cluster` belongs to */
    mp_cluster_t *cluster;
    mp_uconn_t *next_idle;
    int fd;
    ev_io rio, wio;
    ev_timer timer; /* connect timeout, or pool idle timeout */
    mp_addr_t addr;
    mp_uconn_state_t state;
    mp_buf_t in, out;
    mp_h1_parser_t *parser;
    mp_stream_t *stream;
    mp_headers_t *trailers; /* response trailers between on_trailers and on_complete */
    uint32_t requests;
    bool dead;
    bool reusable;     /* the response allowed keep-alive and framing was clean */
    bool read_blocked; /* backpressure: downstream write buffer over the limit */
    bool in_dispatch;
    bool response_done;
};

void mp_pools_init(mp_worker_t *w);
void mp_pools_free(mp_worker_t *w);
/* Attaches an upstream connection for host (reused or new) to s; calls back
 * mp_stream_on_upstream_ready or _failure, possibly before returning. */
void mp_upstream_attach(mp_stream_t *s, const mp_host_t *host);
/* Queues bytes of the request (head or body) and writes. */
void mp_uconn_write(mp_uconn_t *u);
/* The stream is done with the connection: back to the pool when reusable, else closed. */
void mp_uconn_release(mp_uconn_t *u);
void mp_uconn_close(mp_uconn_t *u);
void mp_uconn_block_read(mp_uconn_t *u, bool block);

/* ---- worker helpers ---- */
void mp_worker_bury(mp_worker_t *w, mp_grave_t *g, void (*free_fn)(mp_grave_t *));
mp_pool_t *mp_worker_pool(mp_worker_t *w, mp_cluster_t *c);

#endif
