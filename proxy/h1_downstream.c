/* The downstream side of HTTP/1.1: one client connection, its parser, its write buffer and the
 * timers that bound idle and slow clients.  Requests are answered one at a time in order; a
 * pipelined request waits, unparsed, until the previous response is complete. */
#include <errno.h>
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

static int on_head(void *ctx, mp_http_msg_t *msg)
{
    mp_dconn_t *dc = ctx;
    if (dc->dead) {
        mp_http_msg_free(msg);
        return MP_ERROR;
    }
    ev_timer_stop(dc->w->loop, &dc->timer);
    return mp_stream_on_request_head(dc, msg);
}

static int on_body(void *ctx, const char *data, size_t len)
{
    mp_dconn_t *dc = ctx;
    return dc->stream != NULL ? mp_stream_on_request_body(dc->stream, data, len) : 0;
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
        mp_headers_free(trailers);
        free(trailers);
    }
    if (rc < 0 || dc->dead)
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
    mp_config_unref(dc->config);
    free(dc);
}

void mp_dconn_close(mp_dconn_t *dc, const char *why)
{
    if (dc->dead)
        return;
    mp_log_debug("downstream %s: closing: %s", dc->peer, why);
    if (dc->stream != NULL)
        mp_stream_abort(dc->stream, MP_RF_DOWNSTREAM_CONN_TERM);
    dc->dead = true;
    mp_worker_t *w = dc->w;
    ev_io_stop(w->loop, &dc->rio);
    ev_io_stop(w->loop, &dc->wio);
    ev_timer_stop(w->loop, &dc->timer);
    close(dc->fd);
    if (dc->prev != NULL)
        dc->prev->next = dc->next;
    else
        w->conns = dc->next;
    if (dc->next != NULL)
        dc->next->prev = dc->prev;
    atomic_fetch_sub(&w->active_conns, 1);
    mp_stats_dec(dc->hcm->stats.downstream_cx_active);
    mp_stats_dec(dc->listener->stats.downstream_cx_active);
    mp_stats_inc(dc->listener->stats.downstream_cx_destroy);
    mp_worker_bury(w, &dc->grave, free_dconn);
}

/* Closing with unread client bytes in the kernel (a body we refused, pipelined requests) makes
 * the kernel send a reset that can destroy the response still in flight.  So: half-close, then
 * read and drop what the client still sends, until its FIN, LINGER_MAX_BYTES or LINGER_MS. */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (1u << 20)

static void begin_linger(mp_dconn_t *dc)
{
    shutdown(dc->fd, SHUT_WR);
    dc->lingering = true;
    mp_buf_clear(&dc->in);
    ev_timer_stop(dc->w->loop, &dc->timer);
    ev_timer_set(&dc->timer, LINGER_MS / 1000.0, 0.0);
    ev_timer_start(dc->w->loop, &dc->timer);
    ev_io_start(dc->w->loop, &dc->rio);
}

static void linger_read(mp_dconn_t *dc)
{
    char sink[16384];
    for (int i = 0; i < 4; i++) {
        ssize_t n = read(dc->fd, sink, sizeof(sink));
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
        ssize_t n = mp_buf_write_fd(&dc->out, dc->fd);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            mp_dconn_close(dc, strerror(errno));
            return;
        }
        mp_stats_add(dc->hcm->stats.downstream_cx_tx_bytes_total, n);
    }
    if (mp_buf_len(&dc->out) > 0) {
        ev_io_start(dc->w->loop, &dc->wio);
        /* Below the low mark the upstream may fill the buffer again while the rest drains. */
        if (dc->stream != NULL && mp_buf_len(&dc->out) <= dc->buffer_limit / 2)
            mp_stream_downstream_drained(dc->stream);
        return;
    }
    ev_io_stop(dc->w->loop, &dc->wio);
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

void mp_dconn_block_read(mp_dconn_t *dc, bool block)
{
    dc->read_blocked = block;
    if (block || dc->peer_closed)
        ev_io_stop(dc->w->loop, &dc->rio);
    else
        ev_io_start(dc->w->loop, &dc->rio);
}

static void answer_parse_error(mp_dconn_t *dc)
{
    int status = mp_h1_parser_error_status(dc->parser);
    const char *reason = mp_h1_parser_error_reason(dc->parser);
    mp_stats_inc(dc->hcm->stats.downstream_cx_protocol_error);
    mp_log_debug("downstream %s: protocol error: %d %s", dc->peer, status, reason);
    dc->close_after_write = true;
    ev_io_stop(dc->w->loop, &dc->rio);
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
    mp_stream_local_reply(mp_stream_new(dc, none), status, MP_RF_DOWNSTREAM_PROTOCOL_ERROR, NULL,
                          reason);
}

static void process_input(mp_dconn_t *dc)
{
    if (dc->in_dispatch)
        return;
    dc->in_dispatch = true;
    while (!dc->dead && !dc->parser_paused && mp_buf_len(&dc->in) > 0) {
        mp_buf_seg_t *seg = dc->in.head;
        size_t consumed = 0;
        int rc = mp_h1_parser_feed(dc->parser, seg->slice->data + seg->off, seg->len, &consumed);
        if (dc->dead)
            break;
        mp_buf_consume(&dc->in, consumed);
        if (rc == MP_ERROR) {
            answer_parse_error(dc);
            break;
        }
    }
    dc->in_dispatch = false;
    if (dc->dead)
        return;
    if (mp_buf_len(&dc->out) > 0) {
        mp_dconn_flush(dc); /* local answers written during the parse */
        if (dc->dead)
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
    ev_io_stop(dc->w->loop, &dc->rio);
    /* A request still arriving can never complete; one already complete is still answered. */
    if (dc->stream != NULL && !dc->stream->req_complete) {
        mp_stats_inc(dc->hcm->stats.downstream_cx_destroy_remote);
        mp_dconn_close(dc, "client closed mid-request");
    } else if (dc->stream == NULL && mp_buf_len(&dc->out) == 0) {
        mp_stats_inc(dc->hcm->stats.downstream_cx_destroy_remote);
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
    ssize_t n = mp_buf_read_fd(&dc->in, dc->fd, READ_CHUNK);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            mp_dconn_close(dc, strerror(errno));
        return;
    }
    if (n == 0) {
        on_peer_eof(dc);
        return;
    }
    mp_stats_add(dc->hcm->stats.downstream_cx_rx_bytes_total, n);
    process_input(dc);
    /* Pipelined bytes wait while a response is in progress; do not let them pile up. */
    if (!dc->dead && dc->parser_paused && mp_buf_len(&dc->in) > dc->buffer_limit)
        ev_io_stop(dc->w->loop, &dc->rio);
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
        mp_stats_inc(dc->hcm->stats.downstream_cx_idle_timeout);
        mp_dconn_close(dc, "idle timeout");
        return;
    }
    /* A head that never completes (slowloris): 408 and close. */
    mp_stats_inc(dc->hcm->stats.downstream_rq_timeout);
    dc->close_after_write = true;
    mp_buf_printf(&dc->out, "HTTP/1.1 408 Request Timeout\r\ncontent-length: 15\r\ncontent-type: "
                            "text/plain\r\nconnection: close\r\n\r\nrequest timeout");
    ev_io_stop(dc->w->loop, &dc->rio);
    mp_dconn_flush(dc);
}

static void arm_idle_timer(mp_dconn_t *dc)
{
    const mp_hcm_config_t *h = dc->hcm;
    uint64_t ms = h->idle_timeout_ms;
    if (!mp_h1_parser_idle(dc->parser) || mp_buf_len(&dc->in) > 0) {
        /* Part of a head is here: the header timeout, else the stream idle timeout, applies. */
        ms = h->stream_idle_timeout_ms;
        if (h->request_timeout_ms != 0 && (ms == 0 || h->request_timeout_ms < ms))
            ms = h->request_timeout_ms;
        if (h->request_headers_timeout_ms != 0 && (ms == 0 || h->request_headers_timeout_ms < ms))
            ms = h->request_headers_timeout_ms;
    }
    ev_timer_stop(dc->w->loop, &dc->timer);
    if (ms == 0)
        return;
    ev_timer_set(&dc->timer, (double)ms / 1000.0, 0.0);
    ev_timer_start(dc->w->loop, &dc->timer);
}

void mp_dconn_stream_done(mp_dconn_t *dc)
{
    dc->stream = NULL;
    if (dc->close_after_write || dc->w->draining) {
        dc->close_after_write = true;
        mp_dconn_flush(dc);
        return;
    }
    dc->parser_paused = false;
    if (dc->in_dispatch)
        return; /* finished inside a parser callback: the dispatch loop goes on by itself */
    mp_h1_parser_resume(dc->parser);
    if (!dc->peer_closed && !dc->read_blocked)
        ev_io_start(dc->w->loop, &dc->rio);
    process_input(dc);
    if (!dc->dead && dc->stream == NULL)
        mp_dconn_flush(dc);
}

void mp_dconn_drain(mp_dconn_t *dc)
{
    dc->close_after_write = true;
    if (dc->stream == NULL && mp_buf_len(&dc->out) == 0) {
        mp_stats_inc(dc->hcm->stats.downstream_cx_drain_close);
        mp_dconn_close(dc, "draining");
    }
}

static mp_h1_limits_t limits_for(const mp_hcm_config_t *h)
{
    mp_h1_limits_t l;
    mp_h1_limits_default(&l);
    l.max_headers_bytes = h->max_request_headers_kb * 1024;
    l.max_headers_count = h->max_headers_count;
    return l;
}

void mp_dconn_accept(mp_worker_t *w, const mp_listener_t *l, int fd)
{
    mp_dconn_t *dc = mp_xcalloc(1, sizeof(*dc));
    dc->w = w;
    dc->fd = fd;
    /* Responses leave in one writev per event loop pass; Nagle would only add a delayed-ACK
     * stall when a head and a body go out in separate passes. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    dc->config = mp_config_ref(w->config);
    dc->listener = l;
    dc->hcm = l->hcm;
    dc->buffer_limit = l->per_connection_buffer_limit_bytes;
    mp_buf_init(&dc->in);
    mp_buf_init(&dc->out);
    mp_h1_limits_t lim = limits_for(dc->hcm);
    dc->parser = mp_h1_parser_new(MP_H1_REQUEST, &lim, &parser_callbacks, dc);
    mp_net_peer_text(fd, dc->peer, sizeof(dc->peer));
    mp_net_local_text(fd, dc->local, sizeof(dc->local));
    ev_io_init(&dc->rio, on_readable, fd, EV_READ);
    dc->rio.data = dc;
    ev_io_init(&dc->wio, on_writable, fd, EV_WRITE);
    dc->wio.data = dc;
    ev_init(&dc->timer, on_timer);
    dc->timer.data = dc;
    dc->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = dc;
    w->conns = dc;
    atomic_fetch_add(&w->active_conns, 1);
    mp_stats_inc(l->stats.downstream_cx_total);
    mp_stats_inc(l->stats.downstream_cx_active);
    mp_stats_inc(dc->hcm->stats.downstream_cx_total);
    mp_stats_inc(dc->hcm->stats.downstream_cx_active);
    mp_stats_inc(dc->hcm->stats.downstream_cx_http1_total);
    ev_io_start(w->loop, &dc->rio);
    arm_idle_timer(dc);
}
