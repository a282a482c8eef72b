/* The HTTP data path's objects, shared by the worker, the downstream codecs (HTTP/1.1:
 * h1_downstream.c; HTTP/2: h2_conn.c, h2_downstream.c), the stream (stream*.c) and the upstream
 * side (HTTP/1.1: upstream.c; HTTP/2: h2_upstream*.c).  Everything here belongs to one worker
 * and is touched only by its thread.
 *
 * Ownership: a downstream connection owns its streams (HTTP/1.1: one at a time; HTTP/2: one
 * per open stream); a stream owns its request and response heads and, while attached, borrows
 * an upstream request (mp_ustream_t): an HTTP/1.1 connection from the worker's keep-alive pool,
 * or a stream on a multiplexed HTTP/2 connection.  The stream and the codecs meet only through
 * the ops tables below (mp_down_ops_t, mp_up_ops_t).
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
#include "magpie/retry.h"
#include "magpie/stream_info.h"
#include "magpie/tls_ident.h"
#include "magpie/worker.h"
#include "transport.h"

typedef struct mp_dconn mp_dconn_t;
typedef struct mp_stream mp_stream_t;
typedef struct mp_uconn mp_uconn_t;
typedef struct mp_pool mp_pool_t;
typedef struct mp_h2_uconn mp_h2_uconn_t;
typedef struct mp_hconn mp_hconn_t;
typedef struct mp_ustream mp_ustream_t;

/* Something to free after the current loop iteration. */
typedef struct mp_grave {
    struct mp_grave *next;
    void (*free_fn)(struct mp_grave *g);
} mp_grave_t;

/* Work to do once the current loop iteration's events are handled (a codec's write of what
 * several callbacks queued).  Owned by its object, which cancels it before it dies. */
typedef struct mp_deferred {
    struct mp_deferred *prev, *next;
    void (*fn)(struct mp_deferred *d);
    bool queued;
} mp_deferred_t;

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
    /* Circuit breaking (upstream_pending.c): this pool's HTTP/1.1 connections, and the requests
     * waiting for one because max_connections is reached, served in order when one frees. */
    unsigned n_h1;
    struct mp_pool_waiter *waiting, *waiting_tail;
    mp_deferred_t wake;
    mp_worker_t *w;
    mp_h2_uconn_t *h2; /* HTTP/2 connections (doubly linked), multiplexed */
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
    /* one per cluster of `config`, in its order; each allocated on its own because its
     * connections point at it and a pool whose cluster a new snapshot shares moves over */
    mp_pool_t **pools;
    uint32_t n_pools;
    ev_timer retire_timer; /* closes retired listeners' connections at their deadline */
    bool retire_timer_on;
    mp_grave_t *graves;
    ev_prepare deferrer;
    mp_deferred_t *deferred; /* doubly linked, run by `deferrer` before the loop blocks */
    atomic_bool drain_requested;
    _Atomic uint64_t drain_deadline_ms;
    bool draining;
    atomic_uint active_conns;
    atomic_bool exited;            /* the loop has ended; join will not block */
    mp_hconn_t *conns;             /* all live downstream HTTP connections (doubly linked) */
    struct mp_tcp_conn *tcp_conns; /* live TCP proxy connections (proxy/tcp_proxy.c) */
    struct mp_inspect *inspecting; /* accepted, listener filters still peeking (listener.c) */
};

/* ---- downstream connections, any codec ---- */

/* What a stream asks of its downstream connection.  The codec frames (HTTP/1.1 chunks and
 * Connection headers, HTTP/2 frames and flow control); the stream decides what to say. */
typedef struct mp_down_ops {
    /* A 1xx response (100 Continue for an Expect the proxy answers itself, or one forwarded). */
    void (*send_informational)(mp_stream_t *s, const mp_http_msg_t *resp);
    /* The final response head, header policy applied.  end_stream: no body or trailers follow. */
    void (*send_head)(mp_stream_t *s, mp_http_msg_t *resp, bool end_stream);
    /* Body bytes that live in slice, by reference. */
    void (*send_data)(mp_stream_t *s, mp_slice_t *slice, const char *data, size_t len);
    /* The end of the body, with trailers (borrowed) or NULL. */
    void (*send_end)(mp_stream_t *s, const mp_headers_t *trailers);
    /* Response bytes queued for the client on this stream (the watermark's measure). */
    size_t (*queued)(const mp_stream_t *s);
    /* Request-body backpressure: stop (or resume) taking request bytes for this stream. */
    void (*block_read)(mp_stream_t *s, bool block);
    /* The response is complete before the request: true when the codec will read and drop the
     * rest of the request (mp_stream_on_request_complete follows), false to end the stream now. */
    bool (*abandon_request)(mp_stream_t *s);
    /* The stream has been logged and freed; the codec lets go of its state (codec is the
     * stream's `codec` pointer).  reset: the response did not complete after its head went out,
     * so the client's stream is reset (HTTP/1.1: the connection closes). */
    void (*detach)(mp_hconn_t *c, void *codec, bool reset);
    /* Writes what the sends above queued (called once after a burst of them). */
    void (*flush)(mp_hconn_t *c);
    /* Graceful drain (close when idle, Connection: close or GOAWAY) and immediate close. */
    void (*drain)(mp_hconn_t *c);
    void (*close)(mp_hconn_t *c, const char *why);
} mp_down_ops_t;

/* The codec-independent part of a downstream HTTP connection; each codec's connection begins
 * with one.  Linked into the worker's list of live connections for drain and shutdown. */
struct mp_hconn {
    mp_grave_t grave;
    const mp_down_ops_t *ops;
    mp_worker_t *w;
    mp_hconn_t *prev, *next;
    mp_tport_t tp;       /* the socket, and TLS over it when the handshake chose it */
    mp_config_t *config; /* ref for the connection's life */
    const mp_listener_t *listener;
    const mp_filter_chain_t
        *chain;                 /* the filter chain the connection matched (proxy/chain_match.c) */
    const mp_hcm_config_t *hcm; /* chain->hcm */
    char peer[64], local[64];
    uint32_t buffer_limit;
    bool dead;
    /* its listener was removed or changed (proxy/worker.c): draining, closed at this time
     * (mp_now_ms) if still open; 0: not retired */
    uint64_t retire_deadline_ms;
    void *tls;          /* the connection's SSL when it came through TLS, else NULL (owned) */
    uint32_t tls_retry; /* bytes of an SSL_write that must be retried as they were */
    struct ev_io *rio;  /* the codec's read watcher: TLS re-arms it for data OpenSSL holds */
    /* The certificates' facts, loaded on first use (mp_hconn_ident); freed by mp_hconn_fini. */
    mp_tls_ident_t ident;
    struct mp_filter_state *filter_states; /* HTTP filters' per-connection state (filter.h) */
};

/* The codecs read and write through the transport (proxy/transport.h): plain TCP, or TLS after
 * a handshake, the same calls either way. */
static inline ssize_t mp_hconn_read(mp_hconn_t *c, mp_buf_t *b, size_t max)
{
    return mp_tport_read(&c->tp, b, max);
}

static inline ssize_t mp_hconn_write(mp_hconn_t *c, mp_buf_t *b)
{
    return mp_tport_write(&c->tp, b);
}

/* The connection's TLS identity cache (include/magpie/tls_ident.h), or NULL when it is not TLS;
 * mp_tls_ident_get on it loads the facts once per connection.  Worker. */
static inline mp_tls_ident_t *mp_hconn_ident(mp_hconn_t *c)
{
    if (c->tp.tls == NULL)
        return NULL;
    c->ident.ssl = c->tp.tls;
    return &c->ident;
}

/* Fills the common part for an accepted socket and links it into the worker's list. */
void mp_hconn_init(mp_hconn_t *c, const mp_down_ops_t *ops, mp_worker_t *w, const mp_listener_t *l,
                   const mp_filter_chain_t *fc, int fd);
/* Unlinks, closes the socket and counts; the codec buries its object afterwards. */
void mp_hconn_fini(mp_hconn_t *c);
/* Hands a connection to another codec: `to` takes from's place (socket, TLS, snapshot ref, list
 * entry, counts); from is left dead, to be buried without closing anything. */
void mp_hconn_move(mp_hconn_t *to, mp_hconn_t *from, const mp_down_ops_t *ops);
/* Hands the connection's transport (socket and SSL) to *to, for a TCP proxy after the TLS
 * handshake: unlinks c and drops it from the worker's active count, but leaves the listener's
 * downstream_cx_* counts to the new owner, which ends them.  c is left dead, to be buried
 * without closing anything. */
void mp_hconn_give_tport(mp_hconn_t *c, mp_tport_t *to);
/* After a takeover: let the new codec read what the old side (or OpenSSL) already holds. */
void mp_hconn_kick_read(mp_hconn_t *c);

/* ---- downstream HTTP/1.1 connection (h1_downstream.c) ---- */

struct mp_dconn {
    mp_hconn_t c;
    ev_io rio, wio;
    ev_timer timer; /* connection idle, or request-headers timeout */
    mp_buf_t in, out;
    mp_h1_parser_t *parser;
    mp_stream_t *stream;       /* the request being answered; pipelined ones wait in `in` */
    mp_headers_t *trailers;    /* request trailers between on_trailers and on_complete */
    bool peer_closed;          /* read EOF */
    bool close_after_write;    /* Connection: close, protocol error, drain */
    bool read_blocked;         /* backpressure: upstream write buffer over the limit */
    bool parser_paused;        /* a complete request is being answered */
    bool in_dispatch;          /* inside the parser loop: no recursive processing */
    bool lingering;            /* response sent, write side shut: draining what the client sends */
    bool tunnel;               /* the stream's upgrade succeeded: bytes pass raw both ways */
    bool shut_after_write;     /* the upstream's end of the tunnel: half-close once `out` is sent */
    mp_deferred_t tunnel_kick; /* hands bytes read before the 101 to the tunnel */
    bool resp_chunked;         /* the response body goes chunked */
    bool sent_100;             /* we answered Expect: 100-continue */
    bool sniffing;             /* codec AUTO: the first bytes may still be the HTTP/2 preface */
    mp_http_msg_t *h2c_req;    /* a request asking for Upgrade: h2c, switched once complete */
    size_t linger_bytes;
};

/* Accepts a connection for an HTTP connection manager listener: HTTP/1.1, or HTTP/2 when the
 * codec says so or (AUTO) the client's first bytes are the HTTP/2 preface. */
void mp_http_accept(mp_worker_t *w, const mp_listener_t *l, const mp_filter_chain_t *fc, int fd);
void mp_dconn_accept(mp_worker_t *w, const mp_listener_t *l, const mp_filter_chain_t *fc, int fd);
/* Takes over a connection whose TLS handshake chose HTTP/1.1 (or nothing: codec AUTO still
 * looks for the HTTP/2 preface). */
void mp_dconn_takeover(mp_hconn_t *from);

/* ---- TLS on accepted connections (tls_accept.c) ---- */

/* Runs the server handshake with the chain's context (fc->tls), then hands the connection to
 * the codec ALPN chose. */
void mp_tls_accept(mp_worker_t *w, const mp_listener_t *l, const mp_filter_chain_t *fc, int fd);
/* Writes what is buffered; closes when close_after_write and everything went out. */
void mp_dconn_flush(mp_dconn_t *dc);
/* Closes now (abortive for an active stream). */
void mp_dconn_close(mp_dconn_t *dc, const char *why);

/* ---- downstream HTTP/2 connection (h2_downstream.c) ---- */

/* A connection that speaks HTTP/2 from its first byte (codec_type HTTP2). */
void mp_h2_accept(mp_worker_t *w, const mp_listener_t *l, const mp_filter_chain_t *fc, int fd);
/* Takes over an HTTP/1.1 connection: `in` holds the bytes read and not parsed (the start of
 * the preface), moved out.  upgrade_req (owned) is a request that asked for h2c with the
 * HTTP2-Settings value settings: it becomes stream 1, answered over HTTP/2 after a 101. */
void mp_h2_takeover(mp_hconn_t *from, mp_buf_t *in, mp_http_msg_t *upgrade_req,
                    const char *settings);

/* ---- one request/response exchange (stream.c) ---- */

struct mp_stream {
    mp_hconn_t *conn;
    void *codec;         /* the codec's per-stream state (HTTP/2), or NULL */
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
    mp_ustream_t *up;
    mp_buf_t req_pending;       /* request body received before the upstream was ready */
    mp_headers_t *req_trailers; /* request trailers received before the upstream was ready */
    ev_timer route_timer;       /* route timeout, from the end of the request */
    ev_timer idle_timer;        /* stream_idle_timeout, measured from last_activity */
    ev_tstamp last_activity;
    ev_timer request_timer;  /* request_timeout: until the request is complete */
    ev_timer duration_timer; /* max_stream_duration / grpc-timeout, from the stream's start */
    char upstream_host[64];
    char request_id[40];
    bool req_complete;
    bool resp_started; /* response head sent downstream */
    bool resp_complete;
    bool head_request;
    bool grpc; /* content-type application/grpc*: local answers speak gRPC */
    bool lb_started;
    bool cb_request_held; /* holds one MP_CB_REQUESTS unit of cluster at `priority` */
    uint8_t priority;     /* the route's mp_routing_priority_t, for the circuit breakers */
    bool resp_end_sent;   /* the response head went out with end_stream */
    bool req_timed_out;   /* a timeout answered before the request was complete */
    /* Upgrades (stream_upgrade.c).  upgrade: the allowed upgrade this request asks for (the
     * Upgrade value, e.g. "websocket", or "CONNECT"), heap, NULL for none.  Until the answer,
     * request bytes are held in req_pending.  A 101 (a 2xx for CONNECT) sets tunnel: from then
     * on the request and response bodies are the two byte directions of a tunnel, and each
     * side's end is a half-close. */
    char *upgrade;
    bool connect_terminate; /* CONNECT ends here: the upstream is a raw TCP connection */
    bool upgrade_req_ended; /* the request's HTTP part ended while the answer was awaited */
    bool upgrade_counted;   /* counted in downstream_cx_upgrades_active */
    bool tunnel;
    bool upgrade_refused; /* the upstream answered an upgrade with something else */
    /* Attempts, timeouts and retries (stream.c, stream_retry.c).  An attempt is one upstream
     * request to one host; retries start from backoff_timer, never inside an upstream callback. */
    const mp_retry_policy_t *retry; /* the policy in force, or NULL: a single attempt */
    mp_retry_policy_t *retry_own;   /* a default policy for x-envoy-retry-on alone (owned) */
    uint32_t retry_on;              /* the policy's conditions, plus the request headers' */
    uint32_t retries_left;
    mp_retry_extra_t retry_extra; /* x-envoy-retriable-* values (heap strings, owned) */
    uint64_t global_timeout_ms;   /* route timeout or x-envoy-upstream-rq-timeout-ms; 0: none */
    uint64_t per_try_ms, per_try_idle_ms;
    ev_timer per_try_timer, per_try_idle_timer, backoff_timer;
    mp_buf_t replay;       /* the request body so far, by reference, for a retry to resend */
    uint32_t replay_limit; /* per_request_buffer_limit_bytes in force */
    bool replay_lost;      /* the body outgrew replay_limit: no more retries */
    bool retry_unit;       /* holds one MP_CB_RETRIES unit of the cluster's circuit breaker */
    bool attempt_open;     /* an attempt is under way and attempt_done has not seen it */
    bool internal;         /* the request is from a trusted (internal) client: Envoy's rule */
    uint32_t n_tried;
    int tried[8]; /* hosts (indices in `hosts`) tried so far, for previous_hosts */
    struct mp_filter_state *filter_states; /* HTTP filters' per-stream state (filter.h) */
};

/* Creates a stream for req (taking ownership) without routing it; the codec records it (and
 * sets `codec`) before anything else happens to it. */
mp_stream_t *mp_stream_new(mp_hconn_t *c, mp_http_msg_t *req);
/* Called by the downstream codecs.  on_request_head normalises, routes and starts the stream;
 * it may answer and free it at once (the codec learns through its detach op). */
void mp_stream_on_request_head(mp_stream_t *s);
int mp_stream_on_request_body(mp_stream_t *s, mp_slice_t *slice, const char *data, size_t len);
int mp_stream_on_request_complete(mp_stream_t *s, mp_headers_t *trailers);
/* The downstream went away or broke: abort the upstream side, log with `flag`, free. */
void mp_stream_abort(mp_stream_t *s, uint32_t flag);
/* Downstream queue drained below the low mark: resume reading the upstream. */
void mp_stream_downstream_drained(mp_stream_t *s);
/* Answers locally (no upstream): status, flags, body text (gRPC requests get a gRPC status).
 * After the response head is out this resets the client's stream instead. */
void mp_stream_local_reply(mp_stream_t *s, int status, uint32_t flags, const char *body,
                           const char *details);

/* Called by the upstream side. */
void mp_stream_on_upstream_ready(mp_stream_t *s); /* connected (or reused) */
void mp_stream_on_upstream_failure(mp_stream_t *s, uint32_t flag, const char *details);
/* end_stream: no body follows (on_response_complete is still called). */
int mp_stream_on_response_head(mp_stream_t *s, mp_http_msg_t *resp, bool end_stream);
int mp_stream_on_response_body(mp_stream_t *s, mp_slice_t *slice, const char *data, size_t len);
int mp_stream_on_response_complete(mp_stream_t *s, mp_headers_t *trailers);
/* Upstream write queue drained: resume reading the client. */
void mp_stream_upstream_drained(mp_stream_t *s);

/* ---- a stream's upstream request, any protocol ---- */

typedef struct mp_up_ops {
    /* The request head (header policy applied).  end_stream: no body or trailers follow. */
    void (*send_head)(mp_ustream_t *u, mp_http_msg_t *req, bool end_stream);
    void (*send_data)(mp_ustream_t *u, mp_slice_t *slice, const char *data, size_t len);
    void (*send_end)(mp_ustream_t *u, const mp_headers_t *trailers);
    size_t (*queued)(const mp_ustream_t *u);
    void (*block_read)(mp_ustream_t *u, bool block);
    /* The stream lets go.  abort: the exchange did not finish cleanly (reset it; an HTTP/1.1
     * connection closes); otherwise the connection may be reused. */
    void (*detach)(mp_ustream_t *u, bool abort);
} mp_up_ops_t;

struct mp_ustream {
    const mp_up_ops_t *ops;
    mp_stream_t *stream; /* NULL once detached */
    bool ready;          /* connected: sends go out */
};

/* ---- upstream HTTP/1.1 connections and pools (upstream.c) ---- */

typedef enum mp_uconn_state {
    MP_UCONN_CONNECTING, /* TCP connect in progress, stream attached */
    MP_UCONN_ACTIVE,     /* carrying a stream */
    MP_UCONN_IDLE,       /* in the pool, waiting for reuse */
} mp_uconn_state_t;

struct mp_uconn {
    mp_grave_t grave;
    mp_ustream_t us; /* the one request this connection carries at a time */
    mp_worker_t *w;
    mp_pool_t *pool;
    mp_config_t *config; /* ref: the snapshot `cluster` belongs to */
    mp_cluster_t *cluster;
    mp_uconn_t *next_idle;
    mp_tport_t tp; /* the socket, and its TLS when the cluster has a transport_socket */
    ev_io rio, wio;
    ev_timer timer; /* connect timeout, or pool idle timeout */
    mp_addr_t addr;
    mp_uconn_state_t state;
    mp_buf_t in, out;
    mp_h1_parser_t *parser;
    mp_headers_t *trailers; /* response trailers between on_trailers and on_complete */
    uint32_t requests;
    bool dead;
    bool reusable;     /* the response allowed keep-alive and framing was clean */
    bool read_blocked; /* backpressure: downstream write buffer over the limit */
    bool in_dispatch;
    bool response_done;
    bool req_chunked; /* the request body goes chunked */
    bool raw;         /* CONNECT terminated here: no HTTP on this connection, only the tunnel */
    bool tunnel;      /* after a 101 (2xx to CONNECT): bytes pass raw both ways; never reused */
    bool shut_after_write; /* the client's end of the tunnel: half-close once `out` is sent */
    bool handshaking;      /* connected, TLS handshake under way (state still CONNECTING) */
    /* circuit breakers: the units this connection holds at cb_priority (a connection counted
     * against max_connections; while connecting, its stream's max_pending_requests unit) */
    bool cb_cx_held, cb_pending_held, in_pool_count;
    uint8_t cb_priority;
};

void mp_pools_init(mp_worker_t *w);
void mp_pools_free(mp_worker_t *w);
/* A new pool for c (its balancer built), and the end of one (waiters answered 503, idle
 * connections closed, busy HTTP/2 ones finish their streams).  Worker. */
mp_pool_t *mp_pool_new(mp_worker_t *w, mp_cluster_t *c);
void mp_pool_free(mp_pool_t *p);
/* Attaches an upstream request for host to s (s->up), over a reused or new connection of the
 * cluster's protocol; calls back mp_stream_on_upstream_ready or _failure, possibly before
 * returning. */
void mp_upstream_attach(mp_stream_t *s, const mp_host_t *host);
void mp_h1_upstream_attach(mp_stream_t *s, mp_pool_t *pool, const mp_host_t *host);
void mp_uconn_close(mp_uconn_t *u);

/* ---- circuit breaking on the HTTP/1.1 pool (upstream_pending.c) ---- */

/* Answers s with 503 UO (Envoy's overflow reply) and counts upstream_rq_pending_overflow. */
void mp_stream_overflow(mp_stream_t *s);
/* s (holding one MP_CB_PENDING_REQUESTS unit, passed on) waits in pool for a connection. */
void mp_pool__wait(mp_pool_t *pool, mp_stream_t *s);
/* A connection of pool went idle or closed: serve the waiters after this event. */
void mp_pool__kick(mp_pool_t *pool);
void mp_pool__init_wake(mp_pool_t *pool);
/* Takes an idle connection of pool to host for s (ready called back); false when none. */
bool mp_h1__reuse_idle(mp_stream_t *s, mp_pool_t *pool, const mp_host_t *host);
/* Pool teardown: every waiter is answered 503 UO. */
void mp_pool__fail_waiters(mp_pool_t *pool);
/* Opens a new connection for s, which holds one pending unit; cx_held: it also took a
 * connection unit.  (upstream.c) */
void mp_h1__open(mp_stream_t *s, mp_pool_t *pool, const mp_host_t *host, bool cx_held);
/* Serves s from pool: an idle connection to host, a new one, or a place in the queue. */
void mp_h1__connect_or_wait(mp_stream_t *s, mp_pool_t *pool, const mp_host_t *host);

/* ---- upstream HTTP/2 connections (h2_upstream.c) ---- */

void mp_h2_upstream_attach(mp_stream_t *s, mp_pool_t *pool, const mp_host_t *host);
/* Pool teardown (a new snapshot): idle HTTP/2 connections close; busy ones leave the pool,
 * finish their streams and then close. */
void mp_h2_pool_release(mp_pool_t *pool);

/* ---- worker helpers ---- */
/* For unit tests and fuzz targets: a worker on the caller's loop and thread, without listeners
 * or threads; free closes what is left and frees everything. */
mp_worker_t *mp_worker_new_inline(mp_config_t *cfg, struct ev_loop *loop);
void mp_worker_free_inline(mp_worker_t *w);
void mp_worker_bury(mp_worker_t *w, mp_grave_t *g, void (*free_fn)(mp_grave_t *));
/* Queues d (once) to run before the loop next blocks; cancel removes it if queued. */
void mp_worker_defer(mp_worker_t *w, mp_deferred_t *d);
void mp_worker_defer_cancel(mp_worker_t *w, mp_deferred_t *d);
mp_pool_t *mp_worker_pool(mp_worker_t *w, mp_cluster_t *c);

#endif
