/* Upstream HTTP/1.1 connections and the per-worker keep-alive pools they return to. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "magpie/circuit.h"
#include "magpie/log.h"
#include "magpie/net.h"
#include "magpie/stats.h"
#include "stream_internal.h"

#define READ_CHUNK 65536
/* Idle keep-alive connections kept per cluster and worker; more are closed.  As many as an
 * HTTP/2 client's concurrent streams may need: closing them would make every burst reconnect. */
#define POOL_MAX_IDLE 1024

static void uconn_dispatch_input(mp_uconn_t *u);
static void uconn_write(mp_uconn_t *u);
static void uconn_block_read(mp_uconn_t *u, bool block);
static void uconn_release(mp_uconn_t *u);
static const mp_up_ops_t h1_up_ops;

static int on_resp_head(void *ctx, mp_http_msg_t *msg)
{
    mp_uconn_t *u = ctx;
    if (u->us.stream == NULL) {
        mp_http_msg_free(msg);
        return MP_ERROR;
    }
    mp_stream_t *s = u->us.stream;
    bool connect = mp_stream__is_connect(s->req);
    if (msg->status == 101 && (s->upgrade == NULL || s->tunnel || connect)) {
        /* Only a request that asked to switch may be answered so (hostile-inputs 69). */
        mp_http_msg_free(msg);
        return MP_ERROR;
    }
    if (s->upgrade != NULL && (connect ? msg->status / 100 == 2 : msg->status == 101)) {
        u->tunnel = true; /* what follows the head is the tunnel's */
        u->reusable = false;
        return mp_stream_on_response_head(s, msg, false);
    }
    if (msg->status < 200)
        return mp_stream_on_response_head(u->us.stream, msg, false);
    u->reusable = msg->keep_alive;
    bool end_stream = u->us.stream->head_request || msg->status == 204 || msg->status == 304 ||
                      msg->content_length == 0;
    return mp_stream_on_response_head(u->us.stream, msg, end_stream);
}

static int on_resp_body(void *ctx, const char *data, size_t len)
{
    mp_uconn_t *u = ctx;
    if (u->us.stream == NULL)
        return MP_ERROR;
    return mp_stream_on_response_body(u->us.stream, u->in.head->slice, data, len);
}

static int on_resp_trailers(void *ctx, mp_headers_t *trailers)
{
    mp_uconn_t *u = ctx;
    u->trailers = trailers;
    return 0;
}

static int on_resp_complete(void *ctx)
{
    mp_uconn_t *u = ctx;
    mp_headers_t *trailers = u->trailers;
    u->trailers = NULL;
    if (u->tunnel)
        return MP_AGAIN; /* a 2xx to CONNECT has no body: the tunnel begins */
    u->response_done = true;
    if (u->us.stream == NULL) {
        mp_headers_delete(trailers);
        return MP_AGAIN;
    }
    mp_stream_on_response_complete(u->us.stream, trailers);
    /* Stop here: bytes after a complete response are not ours to parse (poisoned connection). */
    return MP_AGAIN;
}

static const mp_h1_callbacks_t response_callbacks = {
    .on_head = on_resp_head,
    .on_body = on_resp_body,
    .on_trailers = on_resp_trailers,
    .on_complete = on_resp_complete,
};

static void free_uconn(mp_grave_t *g)
{
    mp_uconn_t *u = (mp_uconn_t *)g;
    mp_buf_clear(&u->in);
    mp_buf_clear(&u->out);
    mp_h1_parser_free(u->parser);
    mp_config_unref(u->config);
    mp_headers_delete(u->trailers);
    free(u);
}

static void pool_unlink(mp_uconn_t *u)
{
    if (u->state != MP_UCONN_IDLE || u->pool == NULL)
        return;
    for (mp_uconn_t **pp = &u->pool->idle; *pp != NULL; pp = &(*pp)->next_idle) {
        if (*pp == u) {
            *pp = u->next_idle;
            u->pool->n_idle--;
            break;
        }
    }
    u->next_idle = NULL;
}

/* Gives back what the connection holds of its cluster's circuit breakers, once, and lets a
 * request waiting in its pool have the freed place. */
static void release_breakers(mp_uconn_t *u)
{
    if (u->cb_pending_held)
        mp_cb_release(u->cluster, u->cb_priority, MP_CB_PENDING_REQUESTS);
    u->cb_pending_held = false;
    if (u->cb_cx_held)
        mp_cb_release(u->cluster, u->cb_priority, MP_CB_CONNECTIONS);
    u->cb_cx_held = false;
    mp_pool_t *pool = mp_worker_pool(u->w, u->cluster);
    if (u->in_pool_count && pool != NULL && pool->n_h1 > 0) {
        pool->n_h1--;
        mp_pool__kick(pool);
    }
    u->in_pool_count = false;
}

void mp_uconn_close(mp_uconn_t *u)
{
    if (u->dead)
        return;
    u->dead = true;
    pool_unlink(u);
    struct ev_loop *loop = u->w->loop;
    ev_io_stop(loop, &u->rio);
    ev_io_stop(loop, &u->wio);
    ev_timer_stop(loop, &u->timer);
    mp_tport_close(&u->tp);
    mp_stats_dec(u->cluster->stats.upstream_cx_active);
    mp_stats_inc(u->cluster->stats.upstream_cx_destroy);
    release_breakers(u);
    mp_worker_bury(u->w, &u->grave, free_uconn);
}

/* The connection broke while carrying a stream: tell the stream (which answers 503 or resets). */
static void fail_stream(mp_uconn_t *u, uint32_t flag, const char *details)
{
    mp_stream_t *s = u->us.stream;
    u->us.stream = NULL;
    mp_uconn_close(u);
    if (s != NULL)
        mp_stream_on_upstream_failure(s, flag, details);
}

static void on_pool_idle_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_uconn_t *u = t->data;
    if (u->state == MP_UCONN_IDLE) {
        mp_stats_inc(u->cluster->stats.upstream_cx_idle_timeout);
        mp_uconn_close(u);
        return;
    }
    /* Still connecting: the connect timeout. */
    mp_stats_inc(u->cluster->stats.upstream_cx_connect_timeout);
    mp_stats_inc(u->cluster->stats.upstream_cx_connect_fail);
    fail_stream(u, MP_RF_UPSTREAM_CONNECT_FAIL, "upstream_connect_timeout");
}

static void go_idle(mp_uconn_t *u)
{
    /* Looked up afresh: a new snapshot may have replaced the pools since this connection began. */
    mp_pool_t *pool = mp_worker_pool(u->w, u->cluster);
    u->pool = pool;
    if (pool == NULL || pool->n_idle >= POOL_MAX_IDLE || u->w->draining) {
        mp_uconn_close(u);
        return;
    }
    u->state = MP_UCONN_IDLE;
    u->response_done = false;
    u->next_idle = pool->idle;
    pool->idle = u;
    pool->n_idle++;
    if (pool->waiting != NULL)
        mp_pool__kick(pool);
    uconn_block_read(u, false); /* an idle connection watches for the peer's close */
    uint64_t ms = u->cluster->pool_idle_timeout_ms;
    ev_timer_stop(u->w->loop, &u->timer);
    if (ms > 0) {
        ev_timer_set(&u->timer, (double)ms / 1000.0, 0.0);
        ev_timer_start(u->w->loop, &u->timer);
    }
}

static void uconn_release(mp_uconn_t *u)
{
    u->us.stream = NULL;
    if (u->in_dispatch)
        return; /* the read handler decides after its parser loop */
    bool clean = u->reusable && u->response_done && mp_buf_len(&u->in) == 0 &&
                 mp_buf_len(&u->out) == 0 && u->state == MP_UCONN_ACTIVE;
    uint32_t max = u->cluster->max_requests_per_connection;
    if (!clean || (max != 0 && u->requests >= max)) {
        mp_uconn_close(u);
        return;
    }
    go_idle(u);
}

static void uconn_block_read(mp_uconn_t *u, bool block)
{
    u->read_blocked = block;
    if (block) {
        ev_io_stop(u->w->loop, &u->rio);
    } else if (!u->dead && !(u->tunnel && u->response_done)) {
        ev_io_start(u->w->loop, &u->rio);
        mp_tport_kick_read(&u->tp);
    }
}

/* Writes what the socket takes; -1 on a hard error (the bytes stay queued). */
static int write_out(mp_uconn_t *u)
{
    while (mp_buf_len(&u->out) > 0) {
        ssize_t n = mp_tport_write(&u->tp, &u->out);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        mp_stats_add(u->cluster->stats.upstream_cx_tx_bytes_total, n);
    }
    if (mp_buf_len(&u->out) > 0) {
        ev_io_start(u->w->loop, &u->wio);
        return 0;
    }
    ev_io_stop(u->w->loop, &u->wio);
    if (u->shut_after_write) {
        u->shut_after_write = false;
        mp_tport_shutdown_write(&u->tp);
    }
    if (u->us.stream != NULL)
        mp_stream_upstream_drained(u->us.stream);
    return 0;
}

static void uconn_write(mp_uconn_t *u)
{
    /* The caller is the stream, which may not be freed under its own feet (failing it answers
     * 503 and can finish it): the failure is raised from the loop, where on_writable's write
     * meets the same error.  Closing the connection first cancels the fed event. */
    if (write_out(u) < 0)
        ev_feed_event(u->w->loop, &u->wio, EV_WRITE);
}

/* CONNECT terminated here: the TCP connection is the answer (Envoy answers 200 too). */
static void answer_connect(mp_uconn_t *u)
{
    mp_hconn_t *dc = u->us.stream->conn;
    mp_http_msg_t *resp = mp_http_msg_new();
    resp->status = 200;
    resp->version = MP_HTTP_11;
    resp->content_length = -1;
    u->tunnel = true;
    mp_stream_on_response_head(u->us.stream, resp, false);
    if (!dc->dead)
        dc->ops->flush(dc);
}

/* Tunnel bytes go to the client as response body, by reference. */
static void pump_tunnel(mp_uconn_t *u)
{
    while (!u->dead && u->us.stream != NULL && mp_buf_len(&u->in) > 0) {
        mp_buf_seg_t *seg = u->in.head;
        size_t len = seg->len;
        mp_stream_on_response_body(u->us.stream, seg->slice, seg->slice->data + seg->off, len);
        mp_buf_consume(&u->in, len);
    }
}

/* TCP connected and, for a TLS cluster, the handshake done: the stream may send. */
static void on_ready(mp_uconn_t *u)
{
    ev_timer_stop(u->w->loop, &u->timer);
    u->state = MP_UCONN_ACTIVE;
    u->requests++;
    ev_io_start(u->w->loop, &u->rio);
    if (u->cb_pending_held) /* no longer waiting for a connection */
        mp_cb_release(u->cluster, u->cb_priority, MP_CB_PENDING_REQUESTS);
    u->cb_pending_held = false;
    mp_stream_t *s = u->us.stream;
    mp_stream_on_upstream_ready(s);
    if (u->raw && u->us.stream == s)
        answer_connect(u);
}

/* One step of the TLS handshake, on whichever watcher OpenSSL waits for; the connect timeout
 * still runs. */
static void tls_step(mp_uconn_t *u)
{
    int events = 0;
    char why[160] = "";
    int rc = mp_tport_handshake(&u->tp, u->cluster->tls, &events, why, sizeof(why));
    struct ev_loop *loop = u->w->loop;
    if (rc == MP_AGAIN) {
        ev_io_stop(loop, events == EV_READ ? &u->wio : &u->rio);
        ev_io_start(loop, events == EV_READ ? &u->rio : &u->wio);
        return;
    }
    ev_io_stop(loop, &u->rio);
    ev_io_stop(loop, &u->wio);
    u->handshaking = false;
    if (rc != 0) {
        mp_log_debug("upstream %s: TLS handshake: %s", u->addr.text, why);
        mp_stats_inc(u->cluster->stats.upstream_cx_connect_fail);
        fail_stream(u, MP_RF_UPSTREAM_CONNECT_FAIL, "tls_handshake_failure");
        return;
    }
    on_ready(u);
}

static void on_connected(mp_uconn_t *u)
{
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(u->tp.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        mp_log_debug("upstream %s: connect: %s", u->addr.text, strerror(err));
        mp_stats_inc(u->cluster->stats.upstream_cx_connect_fail);
        fail_stream(u, MP_RF_UPSTREAM_CONNECT_FAIL, "upstream_connect_failure");
        return;
    }
    if (u->tp.tls != NULL) {
        u->handshaking = true;
        tls_step(u);
        return;
    }
    on_ready(u);
}

static void on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    mp_uconn_t *u = io->data;
    if (u->handshaking) {
        tls_step(u);
        return;
    }
    if (u->state == MP_UCONN_CONNECTING) {
        ev_io_stop(loop, &u->wio);
        on_connected(u);
        return;
    }
    if (write_out(u) < 0)
        fail_stream(u, MP_RF_UPSTREAM_CONN_TERM, "upstream_write_error");
}

/* After the parser loop: hand the connection back, or close it, as the stream left it. */
static void settle_after_dispatch(mp_uconn_t *u)
{
    if (u->dead || u->us.stream != NULL || u->state != MP_UCONN_ACTIVE)
        return;
    uconn_release(u);
}

static void uconn_dispatch_input(mp_uconn_t *u)
{
    /* What this read produced for the client goes out in one write after the parse.  A closed
     * client connection stays readable (dead) until the loop iteration ends. */
    mp_hconn_t *dc = u->us.stream != NULL ? u->us.stream->conn : NULL;
    u->in_dispatch = true;
    while (!u->dead && !u->tunnel && !u->response_done && mp_buf_len(&u->in) > 0) {
        mp_buf_seg_t *seg = u->in.head;
        size_t consumed = 0;
        int rc = mp_h1_parser_feed(u->parser, seg->slice->data + seg->off, seg->len, &consumed);
        if (u->dead)
            break;
        mp_buf_consume(&u->in, consumed);
        if (rc == MP_AGAIN && !u->response_done)
            break; /* paused by a callback (a 101): nothing more to parse here */
        if (rc == MP_ERROR) {
            mp_log_debug("upstream %s: bad response: %s", u->addr.text,
                         mp_h1_parser_error_reason(u->parser));
            u->in_dispatch = false;
            fail_stream(u, MP_RF_UPSTREAM_PROTOCOL_ERROR, "upstream_protocol_error");
            return;
        }
    }
    if (u->tunnel)
        pump_tunnel(u);
    u->in_dispatch = false;
    /* A stream that let go during the parse left the connection to us: pool it or close it. */
    if (!u->dead && u->us.stream == NULL)
        settle_after_dispatch(u);
    if (dc != NULL && !dc->dead)
        dc->ops->flush(dc);
}

/* The upstream's end of a tunnel: the client's side is half-closed after what is queued. */
static void tunnel_eof(mp_uconn_t *u)
{
    mp_hconn_t *dc = u->us.stream->conn;
    ev_io_stop(u->w->loop, &u->rio);
    u->response_done = true; /* nothing more to read: block_read(false) must not restart it */
    mp_stream_on_response_complete(u->us.stream, NULL);
    if (!dc->dead)
        dc->ops->flush(dc);
}

static void on_upstream_eof(mp_uconn_t *u)
{
    if (u->state == MP_UCONN_IDLE || u->us.stream == NULL) {
        mp_uconn_close(u);
        return;
    }
    if (u->tunnel) {
        tunnel_eof(u);
        return;
    }
    /* A close-delimited body ends here; anything else is a truncated or missing response. */
    u->in_dispatch = true;
    int rc = mp_h1_parser_finish(u->parser);
    u->in_dispatch = false;
    if (rc == 0 && u->response_done) {
        u->reusable = false;
        settle_after_dispatch(u);
        if (!u->dead)
            mp_uconn_close(u);
        return;
    }
    fail_stream(u, MP_RF_UPSTREAM_CONN_TERM, "upstream_reset_before_response_complete");
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    mp_uconn_t *u = io->data;
    if (u->handshaking) {
        tls_step(u);
        return;
    }
    ssize_t n = mp_tport_read(&u->tp, &u->in, READ_CHUNK);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (u->us.stream == NULL) {
            mp_uconn_close(u);
            return;
        }
        fail_stream(u, MP_RF_UPSTREAM_CONN_TERM, "upstream_reset");
        return;
    }
    if (n == 0) {
        on_upstream_eof(u);
        return;
    }
    mp_stats_add(u->cluster->stats.upstream_cx_rx_bytes_total, n);
    if (u->state == MP_UCONN_IDLE) {
        mp_uconn_close(u); /* bytes nobody asked for: the connection is poisoned */
        return;
    }
    uconn_dispatch_input(u);
}

static mp_uconn_t *uconn_new(mp_worker_t *w, mp_pool_t *pool, mp_stream_t *s, const mp_addr_t *addr,
                             int fd)
{
    mp_cluster_t *c = s->cluster;
    mp_uconn_t *u = mp_xcalloc(1, sizeof(*u));
    u->w = w;
    /* The cluster (its stats, its limits) lives in a snapshot: keep that one alive for as long
     * as the connection, which may outlive the stream that opened it. */
    u->config = mp_config_ref(s->config);
    u->pool = pool;
    u->cluster = c;
    mp_tport_init(&u->tp, w->loop, fd, &u->rio);
    u->addr = *addr;
    mp_buf_init(&u->in);
    mp_buf_init(&u->out);
    u->parser = mp_h1_parser_new(MP_H1_RESPONSE, NULL, &response_callbacks, u);
    ev_io_init(&u->rio, on_readable, fd, EV_READ);
    u->rio.data = u;
    ev_io_init(&u->wio, on_writable, fd, EV_WRITE);
    u->wio.data = u;
    ev_init(&u->timer, on_pool_idle_timeout);
    u->timer.data = u;
    mp_stats_inc(c->stats.upstream_cx_total);
    mp_stats_inc(c->stats.upstream_cx_active);
    return u;
}

/* ---- what a stream asks of its HTTP/1.1 upstream request ---- */

static inline mp_uconn_t *uconn_of(const mp_ustream_t *us)
{
    return (mp_uconn_t *)((char *)us - offsetof(mp_uconn_t, us));
}

static void h1_up_send_head(mp_ustream_t *us, mp_http_msg_t *req, bool end_stream)
{
    mp_uconn_t *u = uconn_of(us);
    if (u->raw)
        return; /* CONNECT terminated here: the request stops at magpie */
    /* A body of unknown length (HTTP/1.1 chunked, or HTTP/2 without content-length) goes
     * chunked; the encoder writes Host from the authority, first, as clients do. */
    u->req_chunked = req->chunked && !end_stream;
    mp_http_version_t v = req->version;
    req->version = MP_HTTP_11;
    mp_h1_encode_request_head(&u->out, req, u->req_chunked);
    req->version = v;
    uconn_write(u);
}

static void h1_up_send_data(mp_ustream_t *us, mp_slice_t *slice, const char *data, size_t len)
{
    mp_uconn_t *u = uconn_of(us);
    if (u->req_chunked) {
        mp_buf_append_hex(&u->out, len);
        mp_buf_append(&u->out, "\r\n", 2);
    }
    mp_buf_append_ref(&u->out, slice, data, len);
    if (u->req_chunked)
        mp_buf_append(&u->out, "\r\n", 2);
    uconn_write(u);
}

static void h1_up_send_end(mp_ustream_t *us, const mp_headers_t *trailers)
{
    mp_uconn_t *u = uconn_of(us);
    if (u->tunnel) {
        u->shut_after_write = true;
        uconn_write(u);
        return;
    }
    if (!u->req_chunked)
        return;
    mp_h1_encode_last_chunk(&u->out, trailers);
    uconn_write(u);
}

static size_t h1_up_queued(const mp_ustream_t *us)
{
    return mp_buf_len(&uconn_of(us)->out);
}

static void h1_up_block_read(mp_ustream_t *us, bool block)
{
    mp_uconn_t *u = uconn_of(us);
    if (block || u->read_blocked)
        uconn_block_read(u, block);
}

static void h1_up_detach(mp_ustream_t *us, bool abort)
{
    mp_uconn_t *u = uconn_of(us);
    u->us.stream = NULL;
    if (abort)
        u->reusable = false;
    uconn_release(u);
}

static const mp_up_ops_t h1_up_ops = {
    .send_head = h1_up_send_head,
    .send_data = h1_up_send_data,
    .send_end = h1_up_send_end,
    .queued = h1_up_queued,
    .block_read = h1_up_block_read,
    .detach = h1_up_detach,
};

static mp_uconn_t *take_idle(mp_pool_t *pool, const mp_addr_t *addr)
{
    if (pool == NULL)
        return NULL;
    for (mp_uconn_t **pp = &pool->idle; *pp != NULL; pp = &(*pp)->next_idle) {
        mp_uconn_t *u = *pp;
        if (u->addr.len == addr->len && memcmp(&u->addr.ss, &addr->ss, addr->len) == 0) {
            *pp = u->next_idle;
            u->next_idle = NULL;
            pool->n_idle--;
            return u;
        }
    }
    return NULL;
}

static void attach(mp_stream_t *s, mp_uconn_t *u)
{
    s->up = &u->us;
    u->us.stream = s;
    u->us.ready = false;
    u->reusable = false;
    u->response_done = false;
    mp_h1_parser_resume(u->parser); /* it paused at the end of the previous response */
    /* A 2xx to CONNECT has no body either (RFC 9110 9.3.6). */
    mp_h1_parser_expect_head_response(u->parser, s->head_request || mp_stream__is_connect(s->req));
}

/* Takes an idle connection to host for s; false when there is none. */
bool mp_h1__reuse_idle(mp_stream_t *s, mp_pool_t *pool, const mp_host_t *host)
{
    mp_uconn_t *u = take_idle(pool, &host->addr);
    if (u == NULL)
        return false;
    ev_timer_stop(s->conn->w->loop, &u->timer);
    u->state = MP_UCONN_ACTIVE;
    u->requests++;
    attach(s, u);
    mp_stream_on_upstream_ready(s);
    return true;
}

void mp_h1_upstream_attach(mp_stream_t *s, mp_pool_t *pool, const mp_host_t *host)
{
    if (!s->connect_terminate && mp_h1__reuse_idle(s, pool, host))
        return;
    /* max_pending_requests: a request without an idle connection waits for one. */
    if (!mp_cb_try_acquire(s->cluster, s->priority, MP_CB_PENDING_REQUESTS)) {
        mp_stream_overflow(s);
        return;
    }
    mp_h1__connect_or_wait(s, pool, host);
}

void mp_h1__connect_or_wait(mp_stream_t *s, mp_pool_t *pool, const mp_host_t *host)
{
    mp_cluster_t *c = s->cluster;
    bool cx = mp_cb_try_acquire(c, s->priority, MP_CB_CONNECTIONS);
    if (!cx)
        mp_stats_inc(c->stats.upstream_cx_overflow);
    /* Envoy's exception: a pool without a connection always opens one, or requests queued on
     * it could wait forever for connections that other workers hold. */
    if (!cx && pool != NULL && pool->n_h1 > 0) {
        mp_pool__wait(pool, s);
        return;
    }
    mp_h1__open(s, pool, host, cx);
}

void mp_h1__open(mp_stream_t *s, mp_pool_t *pool, const mp_host_t *host, bool cx_held)
{
    mp_worker_t *w = s->conn->w;
    mp_cluster_t *c = s->cluster;
    int fd = mp_net_connect(&host->addr);
    if (fd < 0) {
        mp_cb_release(c, s->priority, MP_CB_PENDING_REQUESTS);
        if (cx_held)
            mp_cb_release(c, s->priority, MP_CB_CONNECTIONS);
        mp_stats_inc(c->stats.upstream_cx_connect_fail);
        mp_stream_on_upstream_failure(s, MP_RF_UPSTREAM_CONNECT_FAIL, "upstream_connect_failure");
        return;
    }
    mp_uconn_t *u = uconn_new(w, pool, s, &host->addr, fd);
    u->cb_priority = s->priority;
    u->cb_pending_held = true;
    u->cb_cx_held = cx_held;
    u->in_pool_count = pool != NULL;
    if (pool != NULL)
        pool->n_h1++;
    /* Every connection to a TLS cluster is TLS, a CONNECT tunnel ending here included. */
    if (c->tls != NULL &&
        mp_tport_tls_connect(&u->tp, c->tls, host->addr.text, host->hostname, false) != 0) {
        mp_stats_inc(c->stats.upstream_cx_connect_fail);
        mp_uconn_close(u);
        mp_stream_on_upstream_failure(s, MP_RF_UPSTREAM_CONNECT_FAIL, "tls_handshake_failure");
        return;
    }
    u->us.ops = &h1_up_ops;
    u->raw = s->connect_terminate;
    u->state = MP_UCONN_CONNECTING;
    attach(s, u);
    ev_timer_set(&u->timer, (double)c->connect_timeout_ms / 1000.0, 0.0);
    ev_timer_start(w->loop, &u->timer);
    ev_io_start(w->loop, &u->wio);
}

mp_pool_t *mp_pool_new(mp_worker_t *w, mp_cluster_t *c)
{
    mp_pool_t *p = mp_xcalloc(1, sizeof(*p));
    p->cluster = c;
    p->lb = mp_lb_new(c);
    p->w = w;
    mp_pool__init_wake(p);
    return p;
}

void mp_pool_free(mp_pool_t *p)
{
    mp_pool__fail_waiters(p);
    while (p->idle != NULL)
        mp_uconn_close(p->idle);
    mp_h2_pool_release(p);
    mp_worker_defer_cancel(p->w, &p->wake);
    mp_lb_free(p->lb);
    free(p);
}

void mp_pools_init(mp_worker_t *w)
{
    mp_config_t *cfg = w->config;
    w->n_pools = cfg->n_clusters;
    w->pools = mp_xcalloc(cfg->n_clusters ? cfg->n_clusters : 1, sizeof(*w->pools));
    for (uint32_t i = 0; i < cfg->n_clusters; i++)
        w->pools[i] = mp_pool_new(w, cfg->clusters[i]);
}

void mp_pools_free(mp_worker_t *w)
{
    for (uint32_t i = 0; i < w->n_pools; i++)
        if (w->pools[i] != NULL)
            mp_pool_free(w->pools[i]);
    free(w->pools);
    w->pools = NULL;
    w->n_pools = 0;
}

void mp_upstream_attach(mp_stream_t *s, const mp_host_t *host)
{
    mp_pool_t *pool = mp_worker_pool(s->conn->w, s->cluster);
    mp_upstream_protocol_t p = s->cluster->protocol;
    /* Tunnels ride HTTP/1.1 upstream connections only (one per tunnel). */
    if (s->upgrade == NULL && (p == MP_UPSTREAM_HTTP2 ||
                               (p == MP_UPSTREAM_USE_DOWNSTREAM && s->req->version == MP_HTTP_2)))
        mp_h2_upstream_attach(s, pool, host);
    else
        mp_h1_upstream_attach(s, pool, host);
}
