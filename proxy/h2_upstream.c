/* Upstream HTTP/2 connections: many streams multiplexed on one connection per pool entry, with
 * nghttp2's client session doing the framing, HPACK and flow-control bookkeeping.
 *
 * Ownership: a connection (mp_h2_uconn_t) owns its requests (h2_ureq_t).  A request lives until
 * nghttp2 is done with its stream (closed, or never submitted) and the mp_stream has detached;
 * the connection's deferred pass frees such requests, never a callback.  A connection is freed
 * through the worker's graveyard and frees whatever requests remain.
 *
 * Reentrancy: nghttp2 must not be re-entered (mem_recv and session_send are called only from
 * this file's handlers, never from an op or a callback).  Failures found inside nghttp2 are
 * recorded on the request and delivered to the stream once nghttp2 has returned. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "magpie/circuit.h"
#include "magpie/log.h"
#include "magpie/net.h"
#include "magpie/stats.h"
#include "h2_upstream_internal.h"

#define READ_CHUNK 65536
#define OUT_HIGH (256 * 1024)  /* framed bytes buffered before nghttp2 is told to wait */
#define OUR_MAX_CONCURRENT 100 /* advertised: servers do not open streams (no push) */
#define PUMP_ROUNDS 64

static void hc_close(mp_h2_uconn_t *hc, uint32_t flag, const char *details);

void mp_h2u__schedule(mp_h2_uconn_t *hc)
{
    if (!hc->dead)
        mp_worker_defer(hc->w, &hc->deferred);
}

static uint32_t opt_or(uint32_t v, uint32_t dflt)
{
    return v != 0 ? v : dflt;
}

/* ---- requests ---- */

static void ureq_free(h2_ureq_t *r)
{
    mp_buf_clear(&r->body);
    mp_headers_delete(r->trailers);
    mp_headers_delete(r->resp_trailers);
    if (r->resp != NULL)
        mp_http_msg_free(r->resp);
    free(r);
}

static void ureq_unlink(h2_ureq_t *r)
{
    mp_h2_uconn_t *hc = r->hc;
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        hc->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

void mp_h2u__ureq_mark_closed(h2_ureq_t *r)
{
    if (r->closed)
        return;
    r->closed = true;
    r->hc->n_live--;
}

/* Records a failure for the stream, delivered by deliver_failures outside nghttp2. */
void mp_h2u__ureq_fail_later(h2_ureq_t *r, uint32_t flag, const char *details)
{
    if (r->us.stream == NULL || r->fail_details != NULL)
        return;
    r->fail_flag = flag;
    r->fail_details = details;
    mp_h2u__schedule(r->hc);
}

static h2_ureq_t *find_by_id(mp_h2_uconn_t *hc, int32_t id)
{
    for (h2_ureq_t *r = hc->reqs; r != NULL; r = r->next)
        if (r->stream_id == id)
            return r;
    return NULL;
}

static h2_ureq_t *ureq_for(mp_h2_uconn_t *hc, int32_t id)
{
    h2_ureq_t *r = nghttp2_session_get_stream_user_data(hc->session, id);
    return r != NULL ? r : find_by_id(hc, id);
}

static void touch_conn(mp_h2_uconn_t *hc, mp_hconn_t *c)
{
    for (uint32_t i = 0; i < hc->n_touched; i++)
        if (hc->touched[i] == c)
            return;
    if (hc->n_touched == hc->cap_touched) {
        hc->cap_touched = hc->cap_touched ? hc->cap_touched * 2 : 8;
        hc->touched = mp_xrealloc(hc->touched, hc->cap_touched * sizeof(*hc->touched));
    }
    hc->touched[hc->n_touched++] = c;
}

/* Writes what this pass gave the downstream connections.  They are freed only after the loop
 * iteration, so a pointer taken before calling into a stream is still valid here. */
static void flush_touched(mp_h2_uconn_t *hc)
{
    /* A flush may close a client connection, whose streams detach from us and may close this
     * connection, which flushes again: the list is taken before anything is called. */
    mp_hconn_t **list = hc->touched;
    uint32_t n = hc->n_touched, cap = hc->cap_touched;
    hc->touched = NULL;
    hc->n_touched = hc->cap_touched = 0;
    for (uint32_t i = 0; i < n; i++)
        if (!list[i]->dead)
            list[i]->ops->flush(list[i]);
    if (hc->touched == NULL) {
        hc->touched = list;
        hc->cap_touched = cap;
    } else {
        free(list);
    }
}

/* The stream of r, remembering its connection for the flush after this pass. */
static mp_stream_t *stream_of(h2_ureq_t *r)
{
    mp_stream_t *s = r->us.stream;
    if (s != NULL)
        touch_conn(r->hc, s->conn);
    return s;
}

/* Hands recorded failures to their streams.  A failing stream may finish others on this
 * connection (an HTTP/2 client connection closing), so the scan restarts after each. */
static void deliver_failures(mp_h2_uconn_t *hc)
{
    hc->busy++;
    for (;;) {
        h2_ureq_t *r = hc->reqs;
        while (r != NULL && (r->fail_details == NULL || r->us.stream == NULL))
            r = r->next;
        if (r == NULL)
            break;
        mp_stream_t *s = stream_of(r);
        const char *details = r->fail_details;
        r->fail_details = NULL;
        r->us.stream = NULL;
        if (r->stream_id == 0)
            mp_h2u__ureq_mark_closed(r);
        mp_stream_on_upstream_failure(s, r->fail_flag, details);
    }
    for (h2_ureq_t *r = hc->reqs; r != NULL; r = r->next)
        r->fail_details = NULL;
    hc->busy--;
}

bool mp_h2u__any_attached(const mp_h2_uconn_t *hc)
{
    for (const h2_ureq_t *r = hc->reqs; r != NULL; r = r->next)
        if (r->us.stream != NULL)
            return true;
    return false;
}

/* ---- the connection ---- */

void mp_h2u__pool_unlink(mp_h2_uconn_t *hc)
{
    mp_pool_t *pool = hc->pool;
    if (pool == NULL)
        return;
    if (hc->prev != NULL)
        hc->prev->next = hc->next;
    else
        pool->h2 = hc->next;
    if (hc->next != NULL)
        hc->next->prev = hc->prev;
    hc->prev = hc->next = NULL;
    hc->pool = NULL;
}

static void free_hc(mp_grave_t *g)
{
    mp_h2_uconn_t *hc = (mp_h2_uconn_t *)g;
    while (hc->reqs != NULL) {
        h2_ureq_t *r = hc->reqs;
        ureq_unlink(r);
        ureq_free(r);
    }
    if (hc->session != NULL)
        nghttp2_session_del(hc->session);
    mp_buf_clear(&hc->in);
    mp_buf_clear(&hc->out);
    free(hc->touched);
    free(hc->sni);
    mp_config_unref(hc->config);
    free(hc);
}

/* Fails every stream still attached (restarting the scan: a failure may finish others). */
static void fail_attached(mp_h2_uconn_t *hc, uint32_t flag, const char *details)
{
    for (;;) {
        h2_ureq_t *r = hc->reqs;
        while (r != NULL && r->us.stream == NULL)
            r = r->next;
        if (r == NULL)
            return;
        mp_stream_t *s = stream_of(r);
        r->us.stream = NULL;
        mp_stream_on_upstream_failure(s, r->fail_details ? r->fail_flag : flag,
                                      r->fail_details ? r->fail_details : details);
    }
}

static void hc_close(mp_h2_uconn_t *hc, uint32_t flag, const char *details)
{
    if (hc->dead)
        return;
    hc->dead = true;
    mp_h2u__pool_unlink(hc);
    struct ev_loop *loop = hc->w->loop;
    ev_io_stop(loop, &hc->rio);
    ev_io_stop(loop, &hc->wio);
    ev_timer_stop(loop, &hc->timer);
    mp_worker_defer_cancel(hc->w, &hc->deferred);
    mp_tport_close(&hc->tp);
    mp_stats_dec(hc->cluster->stats.upstream_cx_active);
    mp_stats_inc(hc->cluster->stats.upstream_cx_destroy);
    if (hc->cb_cx_held)
        mp_cb_release(hc->cluster, hc->cb_priority, MP_CB_CONNECTIONS);
    hc->cb_cx_held = false;
    mp_worker_bury(hc->w, &hc->grave, free_hc);
    hc->busy++;
    fail_attached(hc, flag, details);
    hc->busy--;
    flush_touched(hc);
}

/* ---- output ---- */

static ssize_t on_send(nghttp2_session *session, const uint8_t *data, size_t length, int flags,
                       void *user_data)
{
    mp_h2_uconn_t *hc = user_data;
    if (mp_buf_len(&hc->out) >= OUT_HIGH)
        return NGHTTP2_ERR_WOULDBLOCK;
    mp_buf_append(&hc->out, data, length);
    return (ssize_t)length;
}

/* DATA payloads leave by reference: the frame header is copied, the body segments moved. */
static int on_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *user_data)
{
    mp_h2_uconn_t *hc = user_data;
    h2_ureq_t *r = source->ptr;
    if (mp_buf_len(&hc->out) >= OUT_HIGH)
        return NGHTTP2_ERR_WOULDBLOCK;
    mp_buf_append(&hc->out, framehd, 9);
    mp_buf_move(&hc->out, &r->body, length);
    return 0;
}

static void submit_trailers(mp_h2_uconn_t *hc, h2_ureq_t *r)
{
    mp_headers_t *t = r->trailers;
    nghttp2_nv *nva = mp_xcalloc(t->n, sizeof(*nva));
    for (uint32_t i = 0; i < t->n; i++)
        nva[i] = (nghttp2_nv){(uint8_t *)t->v[i].name, (uint8_t *)t->v[i].value, t->v[i].name_len,
                              t->v[i].value_len, NGHTTP2_NV_FLAG_NONE};
    nghttp2_submit_trailer(hc->session, r->stream_id, nva, t->n);
    free(nva);
}

ssize_t mp_h2u__read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                          uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    mp_h2_uconn_t *hc = user_data;
    h2_ureq_t *r = source->ptr;
    size_t have = mp_buf_len(&r->body);
    size_t n = have < length ? have : length;
    if (n == 0 && !r->eof)
        return NGHTTP2_ERR_DEFERRED;
    *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == have && r->eof) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (r->trailers != NULL) {
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            submit_trailers(hc, r);
        }
    }
    return (ssize_t)n;
}

/* Tells streams whose request bytes went out that they may read their client again. */
static void notify_drained(mp_h2_uconn_t *hc)
{
    hc->busy++;
    for (h2_ureq_t *r = hc->reqs; r != NULL && !hc->dead; r = r->next) {
        mp_stream_t *s = r->us.stream;
        if (!r->above_mark || s == NULL)
            continue;
        if (r->us.ops->queued(&r->us) > s->conn->buffer_limit / 2)
            continue;
        r->above_mark = false;
        mp_stream_upstream_drained(stream_of(r));
    }
    hc->busy--;
}

/* Frames what nghttp2 has to send and writes it; -1 on a socket or session error. */
static int pump(mp_h2_uconn_t *hc)
{
    for (int i = 0; i < PUMP_ROUNDS; i++) {
        if (mp_buf_len(&hc->out) < OUT_HIGH && nghttp2_session_want_write(hc->session)) {
            hc->busy++;
            int rv = nghttp2_session_send(hc->session);
            hc->busy--;
            if (rv != 0)
                return -1;
        }
        if (mp_buf_len(&hc->out) == 0)
            break;
        ssize_t n = mp_tport_write(&hc->tp, &hc->out);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        mp_stats_add(hc->cluster->stats.upstream_cx_tx_bytes_total, n);
    }
    return 0;
}

static void update_wio(mp_h2_uconn_t *hc)
{
    bool more = mp_buf_len(&hc->out) > 0 ||
                (hc->state != H2_CONNECTING && nghttp2_session_want_write(hc->session));
    if (more)
        ev_io_start(hc->w->loop, &hc->wio);
    else
        ev_io_stop(hc->w->loop, &hc->wio);
}

/* Frees requests that nghttp2 and their stream are both done with. */
static void sweep(mp_h2_uconn_t *hc)
{
    for (h2_ureq_t *r = hc->reqs, *next; r != NULL; r = next) {
        next = r->next;
        if (!r->closed || r->us.stream != NULL)
            continue;
        if (r->stream_id != 0 && !hc->dead)
            nghttp2_session_set_stream_user_data(hc->session, r->stream_id, NULL);
        ureq_unlink(r);
        ureq_free(r);
    }
}

static void arm_idle(mp_h2_uconn_t *hc)
{
    uint64_t ms = hc->cluster->pool_idle_timeout_ms;
    if (hc->state != H2_READY || ev_is_active(&hc->timer) || ms == 0)
        return;
    ev_timer_set(&hc->timer, (double)ms / 1000.0, 0.0);
    ev_timer_start(hc->w->loop, &hc->timer);
}

/* After a pass: free what is done, and close or idle the connection as it now stands. */
static void settle(mp_h2_uconn_t *hc)
{
    if (hc->dead)
        return;
    sweep(hc);
    if (hc->state == H2_CONNECTING)
        return;
    if (!nghttp2_session_want_read(hc->session) && !nghttp2_session_want_write(hc->session) &&
        mp_buf_len(&hc->out) == 0) {
        hc_close(hc, MP_RF_UPSTREAM_CONN_TERM, "upstream_reset_before_response_complete");
        return;
    }
    if (hc->pool == NULL && !mp_h2u__any_attached(hc)) {
        mp_h2u__close_gracefully(hc);
        return;
    }
    if (hc->n_live == 0 && hc->pool != NULL)
        arm_idle(hc);
}

static void on_deferred(mp_deferred_t *d)
{
    mp_h2_uconn_t *hc = (mp_h2_uconn_t *)((char *)d - offsetof(mp_h2_uconn_t, deferred));
    if (hc->dead || hc->state == H2_CONNECTING)
        return;
    if (pump(hc) < 0) {
        hc_close(hc, MP_RF_UPSTREAM_CONN_TERM, "upstream_write_error");
        return;
    }
    update_wio(hc);
    deliver_failures(hc);
    if (!hc->dead)
        notify_drained(hc);
    flush_touched(hc);
    settle(hc);
}

/* Says goodbye (GOAWAY, best effort: one write) and closes. */
void mp_h2u__close_gracefully(mp_h2_uconn_t *hc)
{
    if (hc->state != H2_CONNECTING) {
        nghttp2_session_terminate_session(hc->session, NGHTTP2_NO_ERROR);
        pump(hc);
    }
    hc_close(hc, MP_RF_UPSTREAM_CONN_TERM, "upstream_reset_before_response_complete");
}

/* ---- input: nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    mp_h2_uconn_t *hc = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2_ureq_t *r = ureq_for(hc, frame->hd.stream_id);
    if (r == NULL || r->us.stream == NULL)
        return 0;
    if (!r->got_final && r->resp == NULL) {
        r->resp = mp_http_msg_new();
        r->resp->content_length = -1;
        r->resp->version = MP_HTTP_2;
        r->resp->keep_alive = true;
    } else if (r->got_final && r->resp_trailers == NULL) {
        r->resp_trailers = mp_xcalloc(1, sizeof(*r->resp_trailers));
        mp_headers_init(r->resp_trailers);
    }
    return 0;
}

static int64_t parse_u63(const uint8_t *v, size_t len)
{
    int64_t n = 0;
    if (len == 0 || len > 18)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    return n;
}

static void add_response_field(mp_http_msg_t *m, const uint8_t *name, size_t nlen,
                               const uint8_t *value, size_t vlen)
{
    if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
        m->status = (int)parse_u63(value, vlen);
        return;
    }
    if (nlen > 0 && name[0] == ':')
        return;
    if (nlen == 14 && memcmp(name, "content-length", 14) == 0)
        m->content_length = parse_u63(value, vlen);
    mp_headers_add(&m->headers, (const char *)name, nlen, (const char *)value, vlen);
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    mp_h2_uconn_t *hc = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2_ureq_t *r = ureq_for(hc, frame->hd.stream_id);
    if (r == NULL || r->us.stream == NULL)
        return 0;
    if (!r->got_final && r->resp != NULL)
        add_response_field(r->resp, name, namelen, value, valuelen);
    else if (r->resp_trailers != NULL && (namelen == 0 || name[0] != ':'))
        mp_headers_add(r->resp_trailers, (const char *)name, namelen, (const char *)value,
                       valuelen);
    return 0;
}

/* The stream may let go (or fail) inside any of these calls: r->us.stream is read afresh. */
static void complete_response(h2_ureq_t *r, mp_headers_t *trailers)
{
    r->complete = true;
    mp_stream_t *s = stream_of(r);
    if (s == NULL) {
        mp_headers_delete(trailers);
        return;
    }
    mp_stream_on_response_complete(s, trailers);
}

static void on_response_headers(h2_ureq_t *r, bool end_stream)
{
    mp_http_msg_t *msg = r->resp;
    r->resp = NULL;
    if (msg == NULL)
        return;
    mp_stream_t *s = stream_of(r);
    if (msg->status < 200) {
        mp_stream_on_response_head(s, msg, false);
        return;
    }
    r->got_final = true;
    if (end_stream)
        r->complete = true;
    mp_stream_on_response_head(s, msg, end_stream);
    if (end_stream)
        complete_response(r, NULL);
}

static void on_headers_frame(mp_h2_uconn_t *hc, const nghttp2_frame *frame)
{
    h2_ureq_t *r = ureq_for(hc, frame->hd.stream_id);
    if (r == NULL || r->us.stream == NULL)
        return;
    bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (r->resp != NULL) {
        on_response_headers(r, end_stream);
        return;
    }
    mp_headers_t *t = r->resp_trailers;
    r->resp_trailers = NULL;
    if (end_stream)
        complete_response(r, t);
    else
        mp_headers_delete(t);
}

static void on_goaway(mp_h2_uconn_t *hc, const nghttp2_frame *frame)
{
    /* Streams above last_stream_id were never processed (RFC 9113 6.8): nghttp2 closes them
     * right after this callback, and they fail as refused, which a retry may resend. */
    hc->goaway = true;
    hc->goaway_last_id = frame->goaway.last_stream_id;
    mp_h2u__pool_unlink(hc);
    mp_log_debug("upstream %s: GOAWAY last_stream_id=%d error=%u", hc->addr.text,
                 frame->goaway.last_stream_id, frame->goaway.error_code);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    mp_h2_uconn_t *hc = user_data;
    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && hc->state == H2_HANDSHAKE)
            hc->settings_seen = true;
        break;
    case NGHTTP2_GOAWAY:
        on_goaway(hc, frame);
        break;
    case NGHTTP2_HEADERS:
        on_headers_frame(hc, frame);
        break;
    case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            h2_ureq_t *r = ureq_for(hc, frame->hd.stream_id);
            if (r != NULL && r->us.stream != NULL)
                complete_response(r, NULL);
        }
        break;
    default:
        break;
    }
    return 0;
}

/* Connection window: returned at once, so that one slow client cannot stall the others.  Stream
 * window: returned when the stream's client keeps up (block_read). */
static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    mp_h2_uconn_t *hc = user_data;
    nghttp2_session_consume_connection(session, len);
    h2_ureq_t *r = ureq_for(hc, stream_id);
    if (r == NULL || r->us.stream == NULL) {
        nghttp2_session_consume_stream(session, stream_id, len);
        return 0;
    }
    mp_stream_on_response_body(stream_of(r), hc->cur_slice, (const char *)data, len);
    if (r->blocked && r->us.stream != NULL)
        r->unconsumed += len;
    else
        nghttp2_session_consume_stream(session, stream_id, len);
    return 0;
}

static const char *close_details(mp_h2_uconn_t *hc, const h2_ureq_t *r, uint32_t error_code)
{
    if (hc->goaway && r->stream_id > hc->goaway_last_id)
        return "upstream_goaway_refused";
    if (error_code == NGHTTP2_REFUSED_STREAM)
        return "upstream_refused_stream";
    return "upstream_reset_before_response_complete";
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    mp_h2_uconn_t *hc = user_data;
    h2_ureq_t *r = ureq_for(hc, stream_id);
    if (r == NULL || r->closed)
        return 0;
    mp_h2u__ureq_mark_closed(r);
    if (!r->complete)
        mp_h2u__ureq_fail_later(r, MP_RF_UPSTREAM_CONN_TERM, close_details(hc, r, error_code));
    mp_h2u__schedule(hc);
    return 0;
}

/* A request whose HEADERS never left (GOAWAY came first, or we cancelled it while queued). */
static int on_frame_not_send(nghttp2_session *session, const nghttp2_frame *frame, int lib_error,
                             void *user_data)
{
    mp_h2_uconn_t *hc = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2_ureq_t *r = find_by_id(hc, frame->hd.stream_id);
    if (r == NULL || r->closed)
        return 0;
    mp_h2u__ureq_mark_closed(r);
    mp_h2u__ureq_fail_later(r, MP_RF_UPSTREAM_CONN_TERM,
                            lib_error == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED
                                ? "upstream_goaway_refused"
                                : "upstream_refused_stream");
    return 0;
}

/* The session copies the table, so the caller deletes it right after creating the session. */
static nghttp2_session_callbacks *callbacks_new(void)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        abort(); /* out of memory, as mp_xmalloc would */
    nghttp2_session_callbacks_set_send_callback(cbs, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
    return cbs;
}

/* ---- connection setup and events ---- */

uint32_t mp_h2u__capacity(const mp_h2_uconn_t *hc)
{
    uint32_t own = opt_or(hc->cluster->h2.max_concurrent_streams, 1024);
    if (hc->state != H2_READY)
        return own;
    uint32_t peer =
        nghttp2_session_get_remote_settings(hc->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return peer < own ? peer : own;
}

/* Moves a stream that the server's limit left out to another connection (or a new one). */
static void rehome(mp_h2_uconn_t *hc, h2_ureq_t *r)
{
    mp_stream_t *s = r->us.stream;
    r->us.stream = NULL;
    mp_h2u__ureq_mark_closed(r);
    s->up = NULL;
    mp_h2u__attach_addr(s, mp_worker_pool(hc->w, s->cluster), &hc->addr, hc->sni);
}

/* The server's SETTINGS arrived: start the streams that fit its limit, move the others.  A
 * server that allows no stream at all refuses them. */
static void ready_waiting(mp_h2_uconn_t *hc)
{
    uint32_t limit = mp_h2u__capacity(hc), active = 0;
    for (h2_ureq_t *r = hc->reqs; r != NULL; r = r->next)
        if (r->stream_id != 0 && !r->closed)
            active++;
    hc->busy++;
    for (h2_ureq_t *r = hc->reqs; r != NULL && !hc->dead; r = r->next) {
        if (r->us.stream == NULL || r->us.ready || r->stream_id != 0 || r->fail_details != NULL)
            continue;
        if (active < limit && !hc->goaway) {
            active++;
            mp_stream_on_upstream_ready(stream_of(r));
        } else if (limit == 0) {
            mp_h2u__ureq_fail_later(r, MP_RF_UPSTREAM_CONN_TERM, "upstream_refused_stream");
        } else {
            rehome(hc, r);
        }
    }
    hc->busy--;
}

static void on_handshake_done(mp_h2_uconn_t *hc)
{
    hc->state = H2_READY;
    ev_timer_stop(hc->w->loop, &hc->timer);
    ready_waiting(hc);
}

static void dispatch_input(mp_h2_uconn_t *hc)
{
    ssize_t rv = 0;
    hc->busy++;
    while (mp_buf_len(&hc->in) > 0) {
        mp_buf_seg_t *seg = hc->in.head;
        hc->cur_slice = seg->slice;
        rv = nghttp2_session_mem_recv(hc->session, (const uint8_t *)seg->slice->data + seg->off,
                                      seg->len);
        if (rv < 0)
            break;
        mp_buf_consume(&hc->in, (size_t)rv);
    }
    hc->cur_slice = NULL;
    hc->busy--;
    if (rv < 0) {
        mp_log_debug("upstream %s: HTTP/2: %s", hc->addr.text, nghttp2_strerror((int)rv));
        mp_stats_inc(hc->cluster->stats.upstream_cx_protocol_error);
        hc_close(hc, MP_RF_UPSTREAM_PROTOCOL_ERROR, "upstream_protocol_error");
        return;
    }
    if (hc->settings_seen) {
        hc->settings_seen = false;
        on_handshake_done(hc);
    } else if (hc->goaway) {
        ready_waiting(hc); /* streams still waiting for this connection go elsewhere */
    }
    if (hc->dead)
        return;
    deliver_failures(hc);
    flush_touched(hc);
    mp_h2u__schedule(hc);
}

static void tls_step(mp_h2_uconn_t *hc);

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    mp_h2_uconn_t *hc = io->data;
    if (hc->handshaking) {
        tls_step(hc);
        return;
    }
    ssize_t n = mp_tport_read(&hc->tp, &hc->in, READ_CHUNK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (n <= 0) {
        hc_close(hc, MP_RF_UPSTREAM_CONN_TERM,
                 n == 0 ? "upstream_reset_before_response_complete" : "upstream_reset");
        return;
    }
    mp_stats_add(hc->cluster->stats.upstream_cx_rx_bytes_total, n);
    dispatch_input(hc);
}

static void submit_settings(mp_h2_uconn_t *hc)
{
    const mp_h2_options_t *o = &hc->cluster->h2;
    uint32_t stream_window = opt_or(o->initial_stream_window_size, 262144);
    uint32_t conn_window = opt_or(o->initial_connection_window_size, 1048576);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, OUR_MAX_CONCURRENT},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, stream_window},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, opt_or(o->hpack_table_size, 4096)},
    };
    nghttp2_submit_settings(hc->session, NGHTTP2_FLAG_NONE, iv, MP_ARRAY_SIZE(iv));
    /* The connection window starts at 65535 whatever SETTINGS say (RFC 9113 6.9.2). */
    nghttp2_session_set_local_window_size(hc->session, NGHTTP2_FLAG_NONE, 0, (int32_t)conn_window);
}

/* TCP connected and, for a TLS cluster, the handshake done: the HTTP/2 preface goes out. */
static void on_ready(mp_h2_uconn_t *hc)
{
    hc->state = H2_HANDSHAKE;
    submit_settings(hc);
    ev_io_start(hc->w->loop, &hc->rio);
    mp_h2u__schedule(hc);
}

/* One step of the TLS handshake on whichever watcher OpenSSL waits for; the connect timeout
 * still runs. */
static void tls_step(mp_h2_uconn_t *hc)
{
    int events = 0;
    char why[160] = "";
    int rc = mp_tport_handshake(&hc->tp, hc->cluster->tls, &events, why, sizeof(why));
    struct ev_loop *loop = hc->w->loop;
    if (rc == MP_AGAIN) {
        ev_io_stop(loop, events == EV_READ ? &hc->wio : &hc->rio);
        ev_io_start(loop, events == EV_READ ? &hc->rio : &hc->wio);
        return;
    }
    ev_io_stop(loop, &hc->rio);
    ev_io_stop(loop, &hc->wio);
    hc->handshaking = false;
    if (rc != 0) {
        mp_log_debug("upstream %s: TLS handshake: %s", hc->addr.text, why);
        mp_stats_inc(hc->cluster->stats.upstream_cx_connect_fail);
        hc_close(hc, MP_RF_UPSTREAM_CONNECT_FAIL, "tls_handshake_failure");
        return;
    }
    on_ready(hc);
}

static void on_connected(mp_h2_uconn_t *hc)
{
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(hc->tp.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        mp_log_debug("upstream %s: connect: %s", hc->addr.text, strerror(err));
        mp_stats_inc(hc->cluster->stats.upstream_cx_connect_fail);
        hc_close(hc, MP_RF_UPSTREAM_CONNECT_FAIL, "upstream_connect_failure");
        return;
    }
    int one = 1;
    setsockopt(hc->tp.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (hc->tp.tls != NULL) {
        hc->handshaking = true;
        tls_step(hc);
        return;
    }
    on_ready(hc);
}

static void on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    mp_h2_uconn_t *hc = io->data;
    if (hc->handshaking) {
        tls_step(hc);
        return;
    }
    if (hc->state == H2_CONNECTING) {
        ev_io_stop(loop, &hc->wio);
        on_connected(hc);
        return;
    }
    mp_worker_defer_cancel(hc->w, &hc->deferred);
    on_deferred(&hc->deferred);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_h2_uconn_t *hc = t->data;
    if (hc->state != H2_READY) {
        mp_stats_inc(hc->cluster->stats.upstream_cx_connect_timeout);
        mp_stats_inc(hc->cluster->stats.upstream_cx_connect_fail);
        hc_close(hc, MP_RF_UPSTREAM_CONNECT_FAIL, "upstream_connect_timeout");
        return;
    }
    if (hc->n_live == 0) {
        mp_stats_inc(hc->cluster->stats.upstream_cx_idle_timeout);
        mp_h2u__close_gracefully(hc);
    }
}

static void new_session(mp_h2_uconn_t *hc)
{
    const mp_h2_options_t *o = &hc->cluster->h2;
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0)
        abort();
    /* Windows are returned as the downstream takes the bytes (flow control by watermarks). */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_outbound_ack(opt, opt_or(o->max_outbound_control_frames, 1000));
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, opt_or(o->hpack_table_size, 4096));
    nghttp2_session_callbacks *cbs = callbacks_new();
    if (nghttp2_session_client_new2(&hc->session, cbs, hc, opt) != 0)
        abort();
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
}

mp_h2_uconn_t *mp_h2u__hc_new(mp_worker_t *w, mp_pool_t *pool, mp_stream_t *s,
                              const mp_addr_t *addr, int fd, const char *sni)
{
    mp_cluster_t *c = s->cluster;
    mp_h2_uconn_t *hc = mp_xcalloc(1, sizeof(*hc));
    hc->w = w;
    /* The cluster lives in a snapshot that the connection may outlive the stream's use of. */
    hc->config = mp_config_ref(s->config);
    hc->cluster = c;
    mp_tport_init(&hc->tp, w->loop, fd, &hc->rio);
    hc->sni = sni != NULL ? mp_xstrdup(sni) : NULL;
    hc->addr = *addr;
    hc->state = H2_CONNECTING;
    mp_buf_init(&hc->in);
    mp_buf_init(&hc->out);
    hc->deferred.fn = on_deferred;
    ev_io_init(&hc->rio, on_readable, fd, EV_READ);
    hc->rio.data = hc;
    ev_io_init(&hc->wio, on_writable, fd, EV_WRITE);
    hc->wio.data = hc;
    ev_init(&hc->timer, on_timer);
    hc->timer.data = hc;
    new_session(hc);
    if (pool != NULL) {
        hc->pool = pool;
        hc->next = pool->h2;
        if (pool->h2 != NULL)
            pool->h2->prev = hc;
        pool->h2 = hc;
    }
    mp_stats_inc(c->stats.upstream_cx_total);
    mp_stats_inc(c->stats.upstream_cx_http2_total);
    mp_stats_inc(c->stats.upstream_cx_active);
    return hc;
}
