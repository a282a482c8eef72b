/* The downstream side of HTTP/1.1: one client connection, its parser, its write buffer and the
 * timers that bound idle and slow clients.  Requests are answered one at a time in order; a
 * pipelined request waits, unparsed, until the previous response is complete. */
#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "magpie/access_log.h"
#include "magpie/log.h"
#include "magpie/net.h"
#include "magpie/stats.h"
#include "http_internal.h"

#define READ_CHUNK 65536

static void process_input(mp_dconn_t *dc);
static void arm_idle_timer(mp_dconn_t *dc);
static const mp_down_ops_t h1_ops;

/* A request that asks to continue as h2c (RFC 7540 3.2): Upgrade naming h2c, one
 * HTTP2-Settings, no body.  Only codec AUTO switches; HTTP1 answers over HTTP/1.1. */
static bool wants_h2c(const mp_dconn_t *dc, const mp_http_msg_t *m)
{
    if (dc->c.hcm->codec_type != MP_CODEC_AUTO || !m->upgrade || m->chunked ||
        m->content_length > 0 || mp_headers_count(&m->headers, "http2-settings") != 1)
        return false;
    const mp_header_t *up = mp_headers_get(&m->headers, "upgrade");
    return up != NULL && strcasestr(up->value, "h2c") != NULL;
}

static int on_head(void *ctx, mp_http_msg_t *msg)
{
    mp_dconn_t *dc = ctx;
    if (dc->c.dead) {
        mp_http_msg_free(msg);
        return MP_ERROR;
    }
    ev_timer_stop(dc->c.w->loop, &dc->timer);
    if (wants_h2c(dc, msg)) {
        dc->h2c_req = msg; /* switched after on_complete, outside the parser */
        return 0;
    }
    if (!msg->keep_alive || dc->c.w->draining)
        dc->close_after_write = true;
    mp_stream_t *s = mp_stream_new(&dc->c, msg);
    dc->stream = s;
    mp_stream_on_request_head(s);
    return 0;
}

static int on_body(void *ctx, const char *data, size_t len)
{
    mp_dconn_t *dc = ctx;
    if (dc->stream == NULL)
        return 0;
    return mp_stream_on_request_body(dc->stream, dc->in.head->slice, data, len);
}

static int on_trailers(void *ctx, mp_headers_t *trailers)
{
    mp_dconn_t *dc = ctx;
    dc->trailers = trailers; /* handed on at on_complete, which follows at once */
    return 0;
}

static int on_complete(void *ctx)
{
    mp_dconn_t *dc = ctx;
    mp_headers_t *trailers = dc->trailers;
    dc->trailers = NULL;
    /* Hold pipelined input until this request is answered; a stream that finishes right here
     * clears the flag again (mp_dconn_stream_done) and parsing goes on. */
    dc->parser_paused = true;
    int rc = 0;
    if (dc->stream != NULL) {
        rc = mp_stream_on_request_complete(dc->stream, trailers);
    } else if (trailers != NULL) {
        mp_headers_delete(trailers);
    }
    if (rc < 0 || dc->c.dead)
        return MP_ERROR;
    return dc->parser_paused ? MP_AGAIN : 0;
}

static const mp_h1_callbacks_t parser_callbacks = {
    .on_head = on_head,
    .on_body = on_body,
    .on_trailers = on_trailers,
    .on_complete = on_complete,
};

static void free_dconn(mp_grave_t *g)
{
    mp_dconn_t *dc = (mp_dconn_t *)g;
    mp_buf_clear(&dc->in);
    mp_buf_clear(&dc->out);
    mp_h1_parser_free(dc->parser);
    if (dc->c.config != NULL)
        mp_config_unref(dc->c.config);
    if (dc->h2c_req != NULL)
        mp_http_msg_free(dc->h2c_req);
    free(dc);
}

void mp_dconn_close(mp_dconn_t *dc, const char *why)
{
    if (dc->c.dead)
        return;
    mp_log_debug("downstream %s: closing: %s", dc->c.peer, why);
    dc->c.dead = true; /* before the abort: the stream's detach must not resume the parser */
    mp_worker_defer_cancel(dc->c.w, &dc->tunnel_kick);
    if (dc->stream != NULL)
        mp_stream_abort(dc->stream, MP_RF_DOWNSTREAM_CONN_TERM);
    mp_worker_t *w = dc->c.w;
    ev_io_stop(w->loop, &dc->rio);
    ev_io_stop(w->loop, &dc->wio);
    ev_timer_stop(w->loop, &dc->timer);
    mp_hconn_fini(&dc->c);
    mp_worker_bury(w, &dc->c.grave, free_dconn);
}

/* Closing with unread client bytes in the kernel (a body we refused, pipelined requests) makes
 * the kernel send a reset that can destroy the response still in flight.  So: half-close, then
 * read and drop what the client still sends, until its FIN, LINGER_MAX_BYTES or LINGER_MS. */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (1u << 20)

static void begin_linger(mp_dconn_t *dc)
{
    mp_tport_shutdown_write(&dc->c.tp);
    dc->lingering = true;
    mp_buf_clear(&dc->in);
    ev_timer_stop(dc->c.w->loop, &dc->timer);
    ev_timer_set(&dc->timer, LINGER_MS / 1000.0, 0.0);
    ev_timer_start(dc->c.w->loop, &dc->timer);
    ev_io_start(dc->c.w->loop, &dc->rio);
}

static void linger_read(mp_dconn_t *dc)
{
    for (int i = 0; i < 4; i++) {
        ssize_t n = mp_hconn_read(&dc->c, &dc->in, 16384);
        mp_buf_clear(&dc->in);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0 || (dc->linger_bytes += (size_t)n) > LINGER_MAX_BYTES) {
            mp_dconn_close(dc, "response written, closing");
            return;
        }
    }
}

void mp_dconn_flush(mp_dconn_t *dc)
{
    while (mp_buf_len(&dc->out) > 0) {
        ssize_t n = mp_hconn_write(&dc->c, &dc->out);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            mp_dconn_close(dc, strerror(errno));
            return;
        }
        mp_stats_add(dc->c.hcm->stats.downstream_cx_tx_bytes_total, n);
    }
    if (mp_buf_len(&dc->out) > 0) {
        ev_io_start(dc->c.w->loop, &dc->wio);
        /* Below the low mark the upstream may fill the buffer again while the rest drains. */
        if (dc->stream != NULL && mp_buf_len(&dc->out) <= dc->c.buffer_limit / 2)
            mp_stream_downstream_drained(dc->stream);
        return;
    }
    ev_io_stop(dc->c.w->loop, &dc->wio);
    if (dc->shut_after_write) {
        dc->shut_after_write = false;
        mp_tport_shutdown_write(&dc->c.tp);
    }
    if (dc->stream != NULL) {
        mp_stream_downstream_drained(dc->stream);
        return;
    }
    if (dc->peer_closed)
        mp_dconn_close(dc, "response written, client gone");
    else if (dc->close_after_write)
        begin_linger(dc);
}

static void on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    mp_dconn_flush(io->data);
}

static void dconn_block_read(mp_dconn_t *dc, bool block)
{
    dc->read_blocked = block;
    if (block || dc->peer_closed)
        ev_io_stop(dc->c.w->loop, &dc->rio);
    else
        ev_io_start(dc->c.w->loop, &dc->rio);
}

static void answer_parse_error(mp_dconn_t *dc)
{
    int status = mp_h1_parser_error_status(dc->parser);
    const char *reason = mp_h1_parser_error_reason(dc->parser);
    mp_stats_inc(dc->c.hcm->stats.downstream_cx_protocol_error);
    mp_log_debug("downstream %s: protocol error: %d %s", dc->c.peer, status, reason);
    dc->close_after_write = true;
    ev_io_stop(dc->c.w->loop, &dc->rio);
    mp_buf_clear(&dc->in);
    if (dc->stream != NULL) {
        mp_stream_local_reply(dc->stream, status, MP_RF_DOWNSTREAM_PROTOCOL_ERROR, NULL, reason);
        return;
    }
    /* Error before a complete head: answer from a stream that never reached routing. */
    mp_http_msg_t *none = mp_http_msg_new();
    none->method = mp_xstrdup("-");
    none->path = mp_xstrdup("-");
    none->version = MP_HTTP_11;
    none->content_length = -1;
    dc->stream = mp_stream_new(&dc->c, none);
    mp_stream_local_reply(dc->stream, status, MP_RF_DOWNSTREAM_PROTOCOL_ERROR, NULL, reason);
}

/* Hands the socket to the HTTP/2 codec (the preface arrived, or an h2c upgrade completed). */
static void switch_to_h2(mp_dconn_t *dc)
{
    mp_worker_t *w = dc->c.w;
    ev_io_stop(w->loop, &dc->rio);
    ev_io_stop(w->loop, &dc->wio);
    ev_timer_stop(w->loop, &dc->timer);
    mp_http_msg_t *req = dc->h2c_req;
    dc->h2c_req = NULL;
    char *settings = NULL;
    if (req != NULL)
        settings = mp_xstrdup(mp_headers_get(&req->headers, "http2-settings")->value);
    mp_h2_takeover(&dc->c, &dc->in, req, settings);
    free(settings);
    mp_worker_bury(w, &dc->c.grave, free_dconn);
}

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* Codec AUTO: true when the connection turned out to be HTTP/2 (or may still be). */
static bool sniff_preface(mp_dconn_t *dc)
{
    char head[24];
    size_t n = mp_buf_copy_out(&dc->in, head, sizeof(head));
    if (memcmp(head, h2_preface, n) != 0) {
        dc->sniffing = false;
        mp_stats_inc(dc->c.hcm->stats.downstream_cx_http1_total);
        return false;
    }
    if (n == sizeof(head))
        switch_to_h2(dc);
    return true;
}

/* Tunnel mode: what the client sends is the request body of the upgraded stream, raw. */
static void tunnel_input(mp_dconn_t *dc)
{
    while (!dc->c.dead && dc->stream != NULL && mp_buf_len(&dc->in) > 0) {
        mp_buf_seg_t *seg = dc->in.head;
        size_t len = seg->len;
        mp_stream_on_request_body(dc->stream, seg->slice, seg->slice->data + seg->off, len);
        mp_buf_consume(&dc->in, len);
    }
    if (!dc->c.dead && dc->stream == NULL)
        mp_buf_clear(&dc->in); /* the tunnel is over; the connection closes */
}

static void on_tunnel_kick(mp_deferred_t *d)
{
    mp_dconn_t *dc = (mp_dconn_t *)((char *)d - offsetof(mp_dconn_t, tunnel_kick));
    tunnel_input(dc);
    if (!dc->c.dead && !dc->read_blocked && !dc->peer_closed)
        ev_io_start(dc->c.w->loop, &dc->rio);
}

static void process_input(mp_dconn_t *dc)
{
    if (dc->tunnel) {
        tunnel_input(dc);
        return;
    }
    if (dc->sniffing && sniff_preface(dc))
        return;
    if (dc->in_dispatch)
        return;
    dc->in_dispatch = true;
    while (!dc->c.dead && !dc->parser_paused && mp_buf_len(&dc->in) > 0) {
        mp_buf_seg_t *seg = dc->in.head;
        size_t consumed = 0;
        int rc = mp_h1_parser_feed(dc->parser, seg->slice->data + seg->off, seg->len, &consumed);
        if (dc->c.dead)
            break;
        mp_buf_consume(&dc->in, consumed);
        if (rc == MP_ERROR) {
            answer_parse_error(dc);
            break;
        }
    }
    dc->in_dispatch = false;
    if (dc->c.dead)
        return;
    if (dc->h2c_req != NULL && dc->parser_paused) {
        switch_to_h2(dc);
        return;
    }
    if (mp_buf_len(&dc->out) > 0) {
        mp_dconn_flush(dc); /* local answers written during the parse */
        if (dc->c.dead)
            return;
    }
    /* A half-closed client still reads: with a response still queued, the flush closes once
     * it is out. */
    if (dc->peer_closed && dc->stream == NULL && !dc->parser_paused && mp_buf_len(&dc->out) == 0) {
        mp_dconn_close(dc, "client closed");
        return;
    }
    if (dc->stream == NULL)
        arm_idle_timer(dc);
}

static void on_peer_eof(mp_dconn_t *dc)
{
    dc->peer_closed = true;
    ev_io_stop(dc->c.w->loop, &dc->rio);
    if (dc->tunnel && dc->stream != NULL) {
        mp_stream_on_request_complete(dc->stream, NULL); /* the client's half-close */
        return;
    }
    /* A request still arriving can never complete; one already complete is still answered. */
    if (dc->stream != NULL && !dc->stream->req_complete) {
        mp_stats_inc(dc->c.hcm->stats.downstream_cx_destroy_remote);
        mp_dconn_close(dc, "client closed mid-request");
    } else if (dc->stream == NULL && mp_buf_len(&dc->out) == 0) {
        mp_stats_inc(dc->c.hcm->stats.downstream_cx_destroy_remote);
        mp_dconn_close(dc, "client closed");
    }
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    mp_dconn_t *dc = io->data;
    if (dc->lingering) {
        linger_read(dc);
        return;
    }
    ssize_t n = mp_hconn_read(&dc->c, &dc->in, READ_CHUNK);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            mp_dconn_close(dc, strerror(errno));
        return;
    }
    if (n == 0) {
        on_peer_eof(dc);
        return;
    }
    mp_stats_add(dc->c.hcm->stats.downstream_cx_rx_bytes_total, n);
    process_input(dc);
    /* Pipelined bytes wait while a response is in progress; do not let them pile up. */
    if (!dc->c.dead && dc->parser_paused && mp_buf_len(&dc->in) > dc->c.buffer_limit)
        ev_io_stop(dc->c.w->loop, &dc->rio);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_dconn_t *dc = t->data;
    if (dc->lingering) {
        mp_dconn_close(dc, "response written, closing (linger timeout)");
        return;
    }
    if (dc->stream != NULL)
        return;
    if (mp_h1_parser_idle(dc->parser) && mp_buf_len(&dc->in) == 0) {
        mp_stats_inc(dc->c.hcm->stats.downstream_cx_idle_timeout);
        mp_dconn_close(dc, "idle timeout");
        return;
    }
    /* A head that never completes (slowloris): 408 and close. */
    mp_stats_inc(dc->c.hcm->stats.downstream_rq_timeout);
    dc->close_after_write = true;
    mp_buf_printf(&dc->out, "HTTP/1.1 408 Request Timeout\r\ncontent-length: 15\r\ncontent-type: "
                            "text/plain\r\nconnection: close\r\n\r\nrequest timeout");
    ev_io_stop(dc->c.w->loop, &dc->rio);
    mp_dconn_flush(dc);
}

static void arm_idle_timer(mp_dconn_t *dc)
{
    const mp_hcm_config_t *h = dc->c.hcm;
    uint64_t ms = h->idle_timeout_ms;
    if (!mp_h1_parser_idle(dc->parser) || mp_buf_len(&dc->in) > 0) {
        /* Part of a head is here: the header timeout, else the stream idle timeout, applies. */
        ms = h->stream_idle_timeout_ms;
        if (h->request_timeout_ms != 0 && (ms == 0 || h->request_timeout_ms < ms))
            ms = h->request_timeout_ms;
        if (h->request_headers_timeout_ms != 0 && (ms == 0 || h->request_headers_timeout_ms < ms))
            ms = h->request_headers_timeout_ms;
    }
    ev_timer_stop(dc->c.w->loop, &dc->timer);
    if (ms == 0)
        return;
    ev_timer_set(&dc->timer, (double)ms / 1000.0, 0.0);
    ev_timer_start(dc->c.w->loop, &dc->timer);
}

static void stream_done(mp_dconn_t *dc)
{
    if (dc->close_after_write || dc->c.w->draining) {
        dc->close_after_write = true;
        mp_dconn_flush(dc);
        return;
    }
    dc->parser_paused = false;
    if (dc->in_dispatch)
        return; /* finished inside a parser callback: the dispatch loop goes on by itself */
    mp_h1_parser_resume(dc->parser);
    if (!dc->peer_closed && !dc->read_blocked)
        ev_io_start(dc->c.w->loop, &dc->rio);
    process_input(dc);
    if (!dc->c.dead && dc->stream == NULL)
        mp_dconn_flush(dc);
}

static void dconn_drain(mp_dconn_t *dc)
{
    dc->close_after_write = true;
    /* A listener update (retire_deadline_ms set) leaves an idle keep-alive connection open: a
     * client may be sending its next request right now, and closing would lose it.  That request
     * is answered with Connection: close; the worker closes what is still idle at the deadline. */
    if (dc->stream == NULL && mp_buf_len(&dc->out) == 0 && dc->c.retire_deadline_ms == 0) {
        mp_stats_inc(dc->c.hcm->stats.downstream_cx_drain_close);
        mp_dconn_close(dc, "draining");
    }
}

/* ---- what streams ask of an HTTP/1.1 connection ---- */

static inline mp_dconn_t *dconn_of(const mp_stream_t *s)
{
    return (mp_dconn_t *)s->conn;
}

static void h1_send_informational(mp_stream_t *s, const mp_http_msg_t *resp)
{
    mp_dconn_t *dc = dconn_of(s);
    if (s->req->version != MP_HTTP_11)
        return; /* HTTP/1.0 clients do not expect interim responses */
    if (resp->status == 100) {
        mp_buf_append_str(&dc->out, "HTTP/1.1 100 Continue\r\n\r\n");
        dc->sent_100 = true;
    } else {
        mp_http_msg_t *copy = mp_http_msg_new();
        copy->status = resp->status;
        copy->version = MP_HTTP_11;
        mp_headers_copy(&copy->headers, &resp->headers);
        mp_h1_encode_response_head(&dc->out, copy, false);
        mp_http_msg_free(copy);
    }
    mp_dconn_flush(dc);
}

/* Framing: Content-Length when known, else chunked for HTTP/1.1 and close-delimited for 1.0. */
/* The upgrade succeeded: the head goes out without framing, and the connection carries the
 * tunnel from here on (and closes after it).  Bytes the client sent early were held in `in`. */
static void send_tunnel_head(mp_dconn_t *dc, mp_stream_t *s, mp_http_msg_t *resp)
{
    if (resp->status == 101) {
        mp_headers_set(&resp->headers, "connection", "upgrade", 7);
        mp_headers_set(&resp->headers, "upgrade", s->upgrade, strlen(s->upgrade));
    }
    resp->version = MP_HTTP_11;
    dc->resp_chunked = false;
    dc->tunnel = true;
    dc->close_after_write = true;
    mp_h1_encode_response_head(&dc->out, resp, false);
    mp_worker_defer(dc->c.w, &dc->tunnel_kick);
}

static void h1_send_head(mp_stream_t *s, mp_http_msg_t *resp, bool end_stream)
{
    mp_dconn_t *dc = dconn_of(s);
    if (s->tunnel) {
        send_tunnel_head(dc, s, resp);
        return;
    }
    bool bodiless_status = resp->status == 204 || resp->status == 304;
    dc->resp_chunked = false;
    if (end_stream && !s->head_request && !bodiless_status && resp->content_length < 0)
        resp->content_length = 0;
    if (!end_stream && !bodiless_status && resp->content_length < 0) {
        if (s->req->version == MP_HTTP_11)
            dc->resp_chunked = true;
        else
            dc->close_after_write = true;
    }
    /* After a refused upgrade the client's next bytes may be tunnel data, not requests. */
    if (dc->c.w->draining || s->upgrade_refused)
        dc->close_after_write = true;
    if (dc->close_after_write)
        mp_headers_set(&resp->headers, "connection", "close", 5);
    else if (s->req->version == MP_HTTP_10)
        mp_headers_set(&resp->headers, "connection", "keep-alive", 10);
    resp->version = MP_HTTP_11;
    /* Written with the first body bytes, by whoever flushes next. */
    mp_h1_encode_response_head(&dc->out, resp, dc->resp_chunked);
}

static void h1_send_data(mp_stream_t *s, mp_slice_t *slice, const char *data, size_t len)
{
    mp_dconn_t *dc = dconn_of(s);
    if (dc->resp_chunked) {
        mp_buf_append_hex(&dc->out, len);
        mp_buf_append(&dc->out, "\r\n", 2);
    }
    mp_buf_append_ref(&dc->out, slice, data, len);
    if (dc->resp_chunked)
        mp_buf_append(&dc->out, "\r\n", 2);
}

static void h1_send_end(mp_stream_t *s, const mp_headers_t *trailers)
{
    mp_dconn_t *dc = dconn_of(s);
    if (dc->tunnel)
        dc->shut_after_write = true; /* the flush that empties `out` half-closes */
    if (dc->resp_chunked)
        mp_h1_encode_last_chunk(&dc->out, trailers);
}

static size_t h1_queued(const mp_stream_t *s)
{
    return mp_buf_len(&dconn_of(s)->out);
}

static void h1_block_read(mp_stream_t *s, bool block)
{
    mp_dconn_t *dc = dconn_of(s);
    if (block || dc->read_blocked)
        dconn_block_read(dc, block);
}

/* A small known rest of the body is read and dropped so that the connection stays usable; a
 * large or unknown one, one the client waits to send until it sees a 100 that will never come,
 * or one that timed out is not worth waiting for: the connection closes after the response. */
static bool h1_abandon_request(mp_stream_t *s)
{
    mp_dconn_t *dc = dconn_of(s);
    const mp_http_msg_t *r = s->req;
    int64_t rest = r->content_length - (int64_t)s->info.bytes_received;
    bool waits_for_100 = r->expect_continue && !dc->sent_100;
    if (dc->close_after_write || s->req_timed_out || r->chunked || rest > 65536 || waits_for_100) {
        dc->close_after_write = true;
        return false;
    }
    if (dc->read_blocked)
        dconn_block_read(dc, false); /* the rest is dropped, not queued: read it */
    return true;
}

static void h1_detach(mp_hconn_t *c, void *codec, bool reset)
{
    mp_dconn_t *dc = (mp_dconn_t *)c;
    dc->stream = NULL;
    dc->sent_100 = false;
    if (c->dead)
        return;
    if (reset)
        mp_dconn_close(dc, "response reset");
    else
        stream_done(dc);
}

static void h1_flush(mp_hconn_t *c)
{
    mp_dconn_flush((mp_dconn_t *)c);
}

static void h1_drain(mp_hconn_t *c)
{
    dconn_drain((mp_dconn_t *)c);
}

static void h1_close(mp_hconn_t *c, const char *why)
{
    mp_dconn_close((mp_dconn_t *)c, why);
}

static const mp_down_ops_t h1_ops = {
    .send_informational = h1_send_informational,
    .send_head = h1_send_head,
    .send_data = h1_send_data,
    .send_end = h1_send_end,
    .queued = h1_queued,
    .block_read = h1_block_read,
    .abandon_request = h1_abandon_request,
    .detach = h1_detach,
    .flush = h1_flush,
    .drain = h1_drain,
    .close = h1_close,
};

static mp_h1_limits_t limits_for(const mp_hcm_config_t *h)
{
    mp_h1_limits_t l;
    mp_h1_limits_default(&l);
    l.max_headers_bytes = h->max_request_headers_kb * 1024;
    l.max_headers_count = h->max_headers_count;
    return l;
}

/* Everything after the common part: buffers, parser, watchers; then it starts reading. */
static void dconn_start(mp_dconn_t *dc)
{
    mp_worker_t *w = dc->c.w;
    int fd = dc->c.tp.fd;
    mp_buf_init(&dc->in);
    mp_buf_init(&dc->out);
    mp_h1_limits_t lim = limits_for(dc->c.hcm);
    dc->parser = mp_h1_parser_new(MP_H1_REQUEST, &lim, &parser_callbacks, dc);
    ev_io_init(&dc->rio, on_readable, fd, EV_READ);
    dc->rio.data = dc;
    dc->c.tp.rio = &dc->rio;
    ev_io_init(&dc->wio, on_writable, fd, EV_WRITE);
    dc->wio.data = dc;
    ev_init(&dc->timer, on_timer);
    dc->timer.data = dc;
    dc->tunnel_kick.fn = on_tunnel_kick;
    if (dc->c.hcm->codec_type == MP_CODEC_AUTO)
        dc->sniffing = true;
    else
        mp_stats_inc(dc->c.hcm->stats.downstream_cx_http1_total);
    ev_io_start(w->loop, &dc->rio);
    arm_idle_timer(dc);
}

void mp_dconn_accept(mp_worker_t *w, const mp_listener_t *l, const mp_filter_chain_t *fc, int fd)
{
    mp_dconn_t *dc = mp_xcalloc(1, sizeof(*dc));
    mp_hconn_init(&dc->c, &h1_ops, w, l, fc, fd);
    dconn_start(dc);
}

void mp_dconn_takeover(mp_hconn_t *from)
{
    mp_dconn_t *dc = mp_xcalloc(1, sizeof(*dc));
    mp_hconn_move(&dc->c, from, &h1_ops);
    dconn_start(dc);
    mp_hconn_kick_read(&dc->c); /* OpenSSL may hold the first request already */
}
