/* The downstream side of HTTP/2 (RFC 9113) on nghttp2's server session: many streams per
 * connection, each an mp_stream; flow control tied to the data path's watermarks; the abuse
 * limits of docs/http2.md.
 *
 * Ownership: the connection (h2_conn_t) owns one h2_dstream_t per open HTTP/2 stream.  A
 * dstream lives until nghttp2 closes its stream; the mp_stream it carries may end earlier (its
 * response then waits in the dstream's queue for flow-control window) and detaches through
 * h2_detach.  Nothing is freed inside nghttp2's callbacks except dstreams, in on_stream_close,
 * which nghttp2 calls when it has let go of them itself. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "h2_internal.h"
#include "magpie/log.h"
#include "magpie/stats.h"

#define READ_CHUNK 65536
#define OUT_HIGH (64 * 1024) /* serialise frames until this much waits for the socket */
#define CLOSE_GRACE_S 1.0    /* after a fatal error, how long the GOAWAY may take to leave */

static const mp_down_ops_t h2_ops;
static void h2_close(mp_hconn_t *c, const char *why);

static inline h2_conn_t *conn_of(const mp_stream_t *s)
{
    return (h2_conn_t *)s->conn;
}

static inline h2_dstream_t *dstream_of(const mp_stream_t *s)
{
    return s->codec;
}

static inline const mp_http_stats_t *stats_of(const h2_conn_t *h)
{
    return &h->c.hcm->stats;
}

static void schedule_flush(h2_conn_t *h)
{
    if (!h->c.dead)
        mp_worker_defer(h->c.w, &h->flusher);
}

/* ---- streams ---- */

static h2_dstream_t *dstream_new(h2_conn_t *h, int32_t id)
{
    h2_dstream_t *d = mp_xcalloc(1, sizeof(*d));
    d->h = h;
    d->id = id;
    mp_buf_init(&d->out);
    d->next = h->streams;
    if (h->streams != NULL)
        h->streams->prev = d;
    h->streams = d;
    h->n_streams++;
    h->streams_total++;
    ev_timer_stop(h->c.w->loop, &h->timer);
    nghttp2_session_set_stream_user_data(h->session, id, d);
    return d;
}

static void dstream_free(h2_dstream_t *d)
{
    h2_conn_t *h = d->h;
    if (d->prev != NULL)
        d->prev->next = d->next;
    else
        h->streams = d->next;
    if (d->next != NULL)
        d->next->prev = d->prev;
    h->n_streams--;
    h->out_queued -= mp_buf_len(&d->out);
    mp_buf_clear(&d->out);
    if (d->req != NULL)
        mp_http_msg_free(d->req);
    mp_headers_delete(d->trailers);
    mp_headers_delete(d->resp_trailers);
    free(d);
}

/* Grants the window for request bytes that were held back while the stream was blocked. */
static void release_window(h2_dstream_t *d)
{
    if (d->unconsumed == 0)
        return;
    nghttp2_session_consume(d->h->session, d->id, d->unconsumed);
    d->unconsumed = 0;
    schedule_flush(d->h);
}

/* ---- request side: nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    h2_conn_t *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        bool over = h->n_streams >= h->opt.max_concurrent_streams;
        h2_dstream_t *d = dstream_new(h, f->hd.stream_id);
        if (over) {
            /* Past the limit the client was told (nghttp2's is higher: h2_conn.c): refuse this
             * stream only, so that the client may retry it (RFC 9113 5.1.2). */
            d->refused = true;
            nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, d->id, NGHTTP2_REFUSED_STREAM);
            return 0;
        }
        d->req = mp_http_msg_new();
        d->req->version = MP_HTTP_2;
        d->req->content_length = -1;
        d->req->keep_alive = true;
        return 0;
    }
    h2_dstream_t *d = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (d != NULL && d->trailers == NULL) {
        d->trailers = mp_headers_new();
    }
    return 0;
}

/* Cookie crumbs (RFC 9113 8.2.3) are joined into one field for the HTTP/1.1 side. */
static void add_cookie(mp_headers_t *hd, const uint8_t *v, size_t len)
{
    mp_header_t *c = mp_headers_get(hd, "cookie");
    if (c == NULL) {
        mp_headers_add(hd, "cookie", 6, (const char *)v, len);
        return;
    }
    char *joined = mp_xasprintf("%s; %.*s", c->value, (int)len, (const char *)v);
    mp_headers_set(hd, "cookie", joined, strlen(joined));
    free(joined);
}

static char *dup_n(const uint8_t *v, size_t len)
{
    char *p = mp_xmalloc(len + 1);
    memcpy(p, v, len);
    p[len] = '\0';
    return p;
}

/* Pseudo-headers become the message's fields; nghttp2 has checked that each appears once, in
 * front, with a valid name. */
static void set_pseudo(mp_http_msg_t *m, const uint8_t *n, size_t nl, const uint8_t *v, size_t vl)
{
    char **slot = NULL;
    if (nl == 7 && memcmp(n, ":method", 7) == 0)
        slot = &m->method;
    else if (nl == 5 && memcmp(n, ":path", 5) == 0)
        slot = &m->path;
    else if (nl == 10 && memcmp(n, ":authority", 10) == 0)
        slot = &m->authority;
    else if (nl == 7 && memcmp(n, ":scheme", 7) == 0)
        slot = &m->scheme;
    else if (nl == 9 && memcmp(n, ":protocol", 9) == 0)
        slot = &m->protocol;
    if (slot == NULL)
        return;
    free(*slot);
    *slot = dup_n(v, vl);
}

static void add_request_field(mp_http_msg_t *m, const uint8_t *n, size_t nl, const uint8_t *v,
                              size_t vl)
{
    if (nl > 0 && n[0] == ':') {
        set_pseudo(m, n, nl, v, vl);
    } else if (nl == 6 && memcmp(n, "cookie", 6) == 0) {
        add_cookie(&m->headers, v, vl);
    } else if (nl == 4 && memcmp(n, "host", 4) == 0) {
        if (m->authority == NULL)
            m->authority = dup_n(v, vl);
    } else if (nl == 14 && memcmp(n, "content-length", 14) == 0) {
        m->content_length = strtoll((const char *)v, NULL, 10); /* digits: nghttp2 checked */
    } else {
        mp_headers_add(&m->headers, (const char *)n, nl, (const char *)v, vl);
    }
}

/* The connection manager's header limits apply per header block: over them the stream is
 * refused (nghttp2 resets it) and counted. */
static bool over_header_limits(h2_conn_t *h, h2_dstream_t *d, size_t nl, size_t vl)
{
    const mp_hcm_config_t *hcm = h->c.hcm;
    d->header_bytes += (uint32_t)(nl + vl + 32); /* RFC 9113 6.5.2's per-field overhead */
    d->header_count++;
    if (d->header_bytes <= hcm->max_request_headers_kb * 1024u &&
        d->header_count <= hcm->max_headers_count)
        return false;
    mp_stats_inc(stats_of(h)->h2_header_overflow);
    return true;
}

static int on_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *n, size_t nl,
                     const uint8_t *v, size_t vl, uint8_t flags, void *ud)
{
    h2_conn_t *h = ud;
    h2_dstream_t *d = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (d == NULL || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (over_header_limits(h, d, nl, vl))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (f->headers.cat == NGHTTP2_HCAT_REQUEST && d->req != NULL)
        add_request_field(d->req, n, nl, v, vl);
    else if (d->trailers != NULL)
        mp_headers_add(d->trailers, (const char *)n, nl, (const char *)v, vl);
    return 0;
}

/* nghttp2 refuses `te` only when it is not "trailers": as a name, it counts here. */
static bool is_connection_specific(const uint8_t *n, size_t nl)
{
    return mp_http_is_connection_specific((const char *)n, nl) ||
           (nl == 2 && memcmp(n, "te", 2) == 0);
}

/* Regular fields nghttp2 finds malformed (RFC 9113 8.2): the stream is reset with
 * PROTOCOL_ERROR, which is what returning TEMPORAL_CALLBACK_FAILURE here asks for. */
static int on_invalid_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *n,
                             size_t nl, const uint8_t *v, size_t vl, uint8_t flags, void *ud)
{
    h2_conn_t *h = ud;
    h->malformed_stream = f->hd.stream_id;
    mp_stats_inc(stats_of(h)->h2_rx_messaging_error);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

/* nghttp2 names a field it refuses only in its error message ("... stream: N, name: [x], ..."):
 * read the name back to count what kind of field it was. */
static void classify_bad_field(h2_conn_t *h, const char *msg, size_t len)
{
    const char *sid = memmem(msg, len, "stream: ", 8);
    const char *name = memmem(msg, len, "name: [", 7);
    if (sid == NULL || name == NULL)
        return;
    h->malformed_stream = (int32_t)strtol(sid + 8, NULL, 10);
    name += 7;
    const char *end = memchr(name, ']', len - (size_t)(name - msg));
    if (end == NULL)
        return;
    const mp_http_stats_t *st = stats_of(h);
    if (is_connection_specific((const uint8_t *)name, (size_t)(end - name)))
        mp_stats_inc(st->h2_connection_specific_header);
    else
        mp_stats_inc(st->h2_invalid_pseudo_header);
}

static int on_error(nghttp2_session *ss, int lib_error, const char *msg, size_t len, void *ud)
{
    h2_conn_t *h = ud;
    if (lib_error == NGHTTP2_ERR_HTTP_HEADER)
        classify_bad_field(h, msg, len);
    mp_log_debug("downstream %s: h2: %.*s", h->c.peer, (int)len, msg);
    return 0;
}

/* What we reset or refused, counted by what the peer did wrong. */
static void count_sent_error(h2_conn_t *h, const nghttp2_frame *f)
{
    const mp_http_stats_t *st = stats_of(h);
    uint32_t code = f->hd.type == NGHTTP2_GOAWAY ? f->goaway.error_code : f->rst_stream.error_code;
    if (code == NGHTTP2_NO_ERROR || code == NGHTTP2_CANCEL || code == NGHTTP2_ENHANCE_YOUR_CALM ||
        code == NGHTTP2_INTERNAL_ERROR || code == NGHTTP2_REFUSED_STREAM)
        return;
    if (code == NGHTTP2_COMPRESSION_ERROR) {
        mp_stats_inc(st->h2_hpack_error);
        return;
    }
    mp_stats_inc(st->h2_rx_messaging_error);
    if (f->hd.type != NGHTTP2_RST_STREAM || code != NGHTTP2_PROTOCOL_ERROR)
        return;
    /* A request whose head never completed and had no bad field: a pseudo-header was missing
     * or misplaced. */
    h2_dstream_t *d = nghttp2_session_get_stream_user_data(h->session, f->hd.stream_id);
    if (d != NULL && d->req != NULL && h->malformed_stream != f->hd.stream_id)
        mp_stats_inc(st->h2_invalid_pseudo_header);
}

/* Streams we had to refuse count like streams the client cancelled: a client that makes us
 * reset most of what it opens is flooding us with work (the server-provoked rapid reset). */
static void count_sent_reset(h2_conn_t *h, const nghttp2_frame *f)
{
    h2_dstream_t *d = nghttp2_session_get_stream_user_data(h->session, f->hd.stream_id);
    if (d != NULL && d->responded)
        return;
    h->streams_reset_early++;
    if (h->streams_reset_early >= H2_RESET_FLOOD_MIN &&
        h->streams_reset_early * 2 >= h->streams_total)
        h2_flood(h, stats_of(h)->h2_too_many_resets, "too many reset streams");
}

/* A request head is complete: it becomes an mp_stream and is routed. */
static void start_request(h2_conn_t *h, h2_dstream_t *d, bool end_stream)
{
    mp_http_msg_t *req = d->req;
    d->req = NULL;
    /* A body of unknown length follows: say so, as HTTP/1.1's chunked would. */
    req->chunked = !end_stream && req->content_length < 0;
    if (req->scheme == NULL)
        req->scheme = mp_xstrdup("http");
    mp_stream_t *s = mp_stream_new(&h->c, req);
    s->codec = d;
    d->stream = s;
    mp_stream_on_request_head(s);
    if (end_stream && d->stream != NULL)
        mp_stream_on_request_complete(d->stream, NULL);
}

static void end_request(h2_dstream_t *d)
{
    mp_headers_t *t = d->trailers;
    d->trailers = NULL;
    if (d->stream != NULL)
        mp_stream_on_request_complete(d->stream, t);
    else
        mp_headers_delete(t);
}

static void count_client_reset(h2_conn_t *h, int32_t id)
{
    mp_stats_inc(stats_of(h)->h2_rx_reset);
    h2_dstream_t *d = nghttp2_session_get_stream_user_data(h->session, id);
    if (d == NULL || d->responded)
        return;
    /* Rapid reset (CVE-2023-44487): streams the client cancels before any answer cost us a
     * route and an upstream request each.  A connection where that is most of what happens is
     * an attack, not a client changing its mind. */
    h->streams_reset_early++;
    if (h->streams_reset_early >= H2_RESET_FLOOD_MIN &&
        h->streams_reset_early * 2 >= h->streams_total)
        h2_flood(h, stats_of(h)->h2_too_many_resets, "too many reset streams");
}

static int on_frame_recv(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    h2_conn_t *h = ud;
    bool end_stream = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    h2_dstream_t *d = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (d == NULL)
            return 0;
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST && d->req != NULL)
            start_request(h, d, end_stream);
        else if (end_stream)
            end_request(d);
        return 0;
    case NGHTTP2_DATA:
        if (d != NULL && end_stream)
            end_request(d);
        return 0;
    case NGHTTP2_RST_STREAM:
        count_client_reset(h, f->hd.stream_id);
        return 0;
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *ss, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    h2_conn_t *h = ud;
    h2_dstream_t *d = nghttp2_session_get_stream_user_data(ss, id);
    if (d == NULL || d->stream == NULL) {
        nghttp2_session_consume(ss, id, len); /* nobody wants it: keep the window open */
        return 0;
    }
    /* data points into the input slice nghttp2 is reading: referenced, not copied. */
    mp_stream_on_request_body(d->stream, h->cur_slice, (const char *)data, len);
    if (d->blocked)
        d->unconsumed += len;
    else
        nghttp2_session_consume(ss, id, len);
    return 0;
}

static int on_stream_close(nghttp2_session *ss, int32_t id, uint32_t error_code, void *ud)
{
    h2_dstream_t *d = nghttp2_session_get_stream_user_data(ss, id);
    if (d == NULL)
        return 0;
    h2_conn_t *h = ud;
    if (d->unconsumed > 0)
        nghttp2_session_consume_connection(ss, d->unconsumed);
    d->unconsumed = 0;
    if (d->stream != NULL) {
        mp_stream_t *s = d->stream;
        d->stream = NULL;
        s->codec = NULL;
        mp_stream_abort(s, MP_RF_DOWNSTREAM_REMOTE_RESET);
    }
    nghttp2_session_set_stream_user_data(ss, id, NULL);
    dstream_free(d);
    if (h->n_streams == 0)
        h2_conn_idle(h);
    return 0;
}

static int on_frame_send(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    h2_conn_t *h = ud;
    if (f->hd.type == NGHTTP2_RST_STREAM) {
        mp_stats_inc(stats_of(h)->h2_tx_reset);
        count_sent_error(h, f);
        count_sent_reset(h, f);
    }
    if (f->hd.type == NGHTTP2_GOAWAY) {
        mp_stats_inc(stats_of(h)->h2_goaway_sent);
        count_sent_error(h, f);
    }
    if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    h2_dstream_t *d = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    /* The response is out while the client is still sending: tell it to stop (RFC 9113 8.1). */
    if (d != NULL && d->rst_after_end && d->stream == NULL)
        nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, d->id, NGHTTP2_NO_ERROR);
    return 0;
}

/* ---- response side ---- */

static ssize_t read_response_body(nghttp2_session *ss, int32_t id, uint8_t *buf, size_t length,
                                  uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    h2_dstream_t *d = src->ptr;
    size_t avail = mp_buf_len(&d->out);
    if (avail == 0 && !d->out_eof) {
        d->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = avail < length ? avail : length;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (d->out_eof && n == avail) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (d->resp_trailers != NULL) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            h2_submit_headers(ss, id, NULL, d->resp_trailers, true);
        }
    }
    return (ssize_t)n;
}

/* Fix: the response watermark used to be each stream's own queue, so a client that opened
 * max_concurrent_streams streams and read none could make magpie hold that many times
 * buffer_limit (50 streams: 55 MiB).  The measure is now the connection's queue.  A stream with
 * nothing queued counts as empty: a stream the client does read is never held back by one it
 * left unread, and a held-back stream resumes when its own queue drains (send_body_frame). */
static size_t queued_of(const h2_dstream_t *d)
{
    return mp_buf_len(&d->out) == 0 ? 0 : d->h->out_queued;
}

/* DATA frames leave by reference: the 9-byte header, then the queued body segments moved. */
static int send_body_frame(nghttp2_session *ss, nghttp2_frame *f, const uint8_t *framehd,
                           size_t length, nghttp2_data_source *src, void *ud)
{
    h2_conn_t *h = ud;
    h2_dstream_t *d = src->ptr;
    mp_buf_append(&h->out, framehd, 9);
    mp_buf_move(&h->out, &d->out, length);
    h->out_queued -= length;
    h->data_frames_sent++;
    if (d->stream != NULL && queued_of(d) <= h->c.buffer_limit / 2)
        mp_stream_downstream_drained(d->stream);
    return 0;
}

static void h2_send_informational(mp_stream_t *s, const mp_http_msg_t *resp)
{
    h2_conn_t *h = conn_of(s);
    if (resp->status == 101)
        return; /* no such thing in HTTP/2 */
    h2_submit_headers(h->session, dstream_of(s)->id, resp, &resp->headers, false);
    schedule_flush(h);
}

static void h2_send_head(mp_stream_t *s, mp_http_msg_t *resp, bool end_stream)
{
    h2_conn_t *h = conn_of(s);
    h2_dstream_t *d = dstream_of(s);
    if (s->tunnel && resp->status == 101) {
        /* RFC 8441 5: an extended CONNECT's upstream 101 is a 2xx here; Upgrade and Connection
         * are HTTP/1.1's and must not appear in HTTP/2. */
        resp->status = 200;
        mp_headers_remove(&resp->headers, "connection");
        mp_headers_remove(&resp->headers, "upgrade");
    }
    d->responded = true;
    d->out_eof = end_stream;
    nghttp2_data_provider body = {.source.ptr = d, .read_callback = read_response_body};
    h2_submit_response(h->session, d->id, resp, end_stream ? NULL : &body);
    schedule_flush(h);
}

static void h2_send_data(mp_stream_t *s, mp_slice_t *slice, const char *data, size_t len)
{
    h2_conn_t *h = conn_of(s);
    h2_dstream_t *d = dstream_of(s);
    mp_buf_append_ref(&d->out, slice, data, len);
    h->out_queued += len;
    if (d->deferred) {
        d->deferred = false;
        nghttp2_session_resume_data(h->session, d->id);
    }
    schedule_flush(h);
}

static void h2_send_end(mp_stream_t *s, const mp_headers_t *trailers)
{
    h2_conn_t *h = conn_of(s);
    h2_dstream_t *d = dstream_of(s);
    d->out_eof = true;
    if (trailers != NULL && trailers->n > 0) {
        d->resp_trailers = mp_headers_new();
        mp_headers_copy(d->resp_trailers, trailers);
    }
    if (d->deferred) {
        d->deferred = false;
        nghttp2_session_resume_data(h->session, d->id);
    }
    schedule_flush(h);
}

static size_t h2_queued(const mp_stream_t *s)
{
    return queued_of(dstream_of(s));
}

static void h2_block_read(mp_stream_t *s, bool block)
{
    h2_dstream_t *d = dstream_of(s);
    d->blocked = block;
    if (!block)
        release_window(d);
}

static bool h2_abandon_request(mp_stream_t *s)
{
    dstream_of(s)->rst_after_end = true;
    return false;
}

static void h2_detach(mp_hconn_t *c, void *codec, bool reset)
{
    h2_conn_t *h = (h2_conn_t *)c;
    h2_dstream_t *d = codec;
    if (d == NULL)
        return; /* the HTTP/2 stream closed first (on_stream_close) */
    d->stream = NULL;
    release_window(d);
    if (c->dead)
        return;
    if (reset) {
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, d->id, NGHTTP2_INTERNAL_ERROR);
    } else if (d->rst_after_end && nghttp2_session_get_stream_local_close(h->session, d->id) == 1 &&
               nghttp2_session_get_stream_remote_close(h->session, d->id) == 0) {
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, d->id, NGHTTP2_NO_ERROR);
    }
    schedule_flush(h);
}

static void h2_flush_op(mp_hconn_t *c)
{
    schedule_flush((h2_conn_t *)c);
}

static void h2_drain(mp_hconn_t *c)
{
    h2_conn_t *h = (h2_conn_t *)c;
    h2_goaway(h, NGHTTP2_NO_ERROR);
}

static const mp_down_ops_t h2_ops = {
    .send_informational = h2_send_informational,
    .send_head = h2_send_head,
    .send_data = h2_send_data,
    .send_end = h2_send_end,
    .queued = h2_queued,
    .block_read = h2_block_read,
    .abandon_request = h2_abandon_request,
    .detach = h2_detach,
    .flush = h2_flush_op,
    .drain = h2_drain,
    .close = h2_close,
};

/* ---- the connection ---- */

static void free_conn(mp_grave_t *g)
{
    h2_conn_t *h = (h2_conn_t *)g;
    while (h->streams != NULL)
        dstream_free(h->streams);
    nghttp2_session_del(h->session);
    mp_buf_clear(&h->in);
    mp_buf_clear(&h->out);
    mp_config_unref(h->c.config);
    free(h);
}

static void h2_close(mp_hconn_t *c, const char *why)
{
    h2_conn_t *h = (h2_conn_t *)c;
    if (c->dead)
        return;
    mp_log_debug("downstream %s: closing h2: %s", c->peer, why);
    c->dead = true;
    for (h2_dstream_t *d = h->streams; d != NULL; d = d->next) {
        if (d->stream != NULL) {
            mp_stream_t *s = d->stream;
            d->stream = NULL;
            s->codec = NULL;
            mp_stream_abort(s, MP_RF_DOWNSTREAM_CONN_TERM);
        }
    }
    struct ev_loop *loop = c->w->loop;
    ev_io_stop(loop, &h->rio);
    ev_io_stop(loop, &h->wio);
    ev_timer_stop(loop, &h->timer);
    mp_worker_defer_cancel(c->w, &h->flusher);
    mp_stats_dec(stats_of(h)->downstream_cx_http2_active);
    mp_hconn_fini(c);
    mp_worker_bury(c->w, &c->grave, free_conn);
}

void h2_conn_close(h2_conn_t *h, const char *why)
{
    h2_close(&h->c, why);
}

const mp_down_ops_t *h2_conn_ops(void)
{
    return &h2_ops;
}

nghttp2_session_callbacks *h2_server_callbacks(void)
{
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_invalid_header_callback(cb, on_invalid_header);
    nghttp2_session_callbacks_set_error_callback2(cb, on_error);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_body_frame);
    return cb;
}
