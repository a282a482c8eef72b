/* An HTTP/2 client connection: the socket, nghttp2's server session, the abuse limits that
 * nghttp2 does not enforce itself, GOAWAY on drain, idle timeout. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h2_internal.h"
#include "magpie/log.h"
#include "magpie/stats.h"

#define READ_CHUNK 65536
#define OUT_HIGH (64 * 1024)
#define CLOSE_GRACE_S 1.0

static const mp_http_stats_t *stats_of(const h2_conn_t *h)
{
    return &h->c.hcm->stats;
}

static uint32_t or_default(uint32_t v, uint32_t def)
{
    return v != 0 ? v : def;
}

static void effective_options(mp_h2_options_t *o, const mp_h2_options_t *cfg)
{
    *o = *cfg;
    o->max_concurrent_streams = or_default(cfg->max_concurrent_streams, 1024);
    o->initial_stream_window_size = or_default(cfg->initial_stream_window_size, 256 * 1024);
    o->initial_connection_window_size = or_default(cfg->initial_connection_window_size, 1 << 20);
    o->hpack_table_size = or_default(cfg->hpack_table_size, 4096);
    o->max_outbound_frames = or_default(cfg->max_outbound_frames, 10000);
    o->max_outbound_control_frames = or_default(cfg->max_outbound_control_frames, 1000);
    o->max_consecutive_inbound_frames_with_empty_payload =
        or_default(cfg->max_consecutive_inbound_frames_with_empty_payload, 1);
    o->max_inbound_priority_frames_per_stream =
        or_default(cfg->max_inbound_priority_frames_per_stream, 100);
    o->max_inbound_window_update_frames_per_data_frame_sent =
        or_default(cfg->max_inbound_window_update_frames_per_data_frame_sent, 10);
}

/* ---- abuse limits (docs/http2.md) ---- */

void h2_flood(h2_conn_t *h, mp_stat_id_t counter, const char *what)
{
    if (h->closing)
        return;
    mp_stats_inc(counter);
    mp_log_info("downstream %s: HTTP/2 %s: closing the connection", h->c.peer, what);
    h2_goaway(h, NGHTTP2_ENHANCE_YOUR_CALM);
}

/* Frames without payload cost work and carry nothing (CVE-2019-9518). */
static bool empty_frame_flood(h2_conn_t *h, const nghttp2_frame_hd *hd)
{
    if (hd->type != NGHTTP2_DATA)
        return false;
    if (hd->length > 0 || (hd->flags & NGHTTP2_FLAG_END_STREAM)) {
        h->empty_frames = 0;
        return false;
    }
    return ++h->empty_frames > h->opt.max_consecutive_inbound_frames_with_empty_payload;
}

/* A header block may span a few CONTINUATION frames; more than the header size limit needs is
 * a flood (CVE-2024-27316 and kin). */
static bool continuation_flood(h2_conn_t *h, const nghttp2_frame_hd *hd)
{
    if (hd->type == NGHTTP2_HEADERS) {
        h->continuations = 0;
        return false;
    }
    if (hd->type != NGHTTP2_CONTINUATION)
        return false;
    uint32_t max = h->c.hcm->max_request_headers_kb / 16 + 3;
    return ++h->continuations > max;
}

static bool control_flood(h2_conn_t *h, const nghttp2_frame_hd *hd)
{
    bool control = (hd->type == NGHTTP2_PING || hd->type == NGHTTP2_SETTINGS) &&
                   !(hd->flags & NGHTTP2_FLAG_ACK);
    if (!control)
        return false;
    ev_tstamp now = ev_now(h->c.w->loop);
    if (now - h->control_window_start > H2_CONTROL_FLOOD_WINDOW_S) {
        h->control_window_start = now;
        h->control_frames = 0;
    }
    return ++h->control_frames > h->opt.max_outbound_control_frames;
}

static bool recently_opened(const h2_conn_t *h, int32_t id)
{
    for (uint32_t i = 0; i < h->n_recent; i++)
        if (h->recent_ids[i] == id)
            return true;
    return false;
}

/* A client's new stream ids are odd and increasing (RFC 9113 5.1.1); DATA goes to streams it
 * opened.  nghttp2 answers most misuse itself but ignores a lower new id, which we end with
 * PROTOCOL_ERROR. */
static void check_stream_id(h2_conn_t *h, const nghttp2_frame_hd *hd)
{
    int32_t id = hd->stream_id;
    if (hd->type == NGHTTP2_DATA) {
        if (id == 0 || id % 2 == 0 || id > h->last_client_id)
            mp_stats_inc(stats_of(h)->h2_stream_id_misuse);
        return;
    }
    if (hd->type != NGHTTP2_HEADERS)
        return;
    if (id == 0 || id % 2 == 0) {
        mp_stats_inc(stats_of(h)->h2_stream_id_misuse);
        return;
    }
    if (id > h->last_client_id) {
        h->last_client_id = id;
        if (h->n_recent < MP_ARRAY_SIZE(h->recent_ids))
            h->recent_ids[h->n_recent++] = id;
        return;
    }
    if (nghttp2_session_find_stream(h->session, id) == NULL && !recently_opened(h, id)) {
        mp_stats_inc(stats_of(h)->h2_stream_id_misuse);
        h2_goaway(h, NGHTTP2_PROTOCOL_ERROR);
    }
}

static bool priority_flood(h2_conn_t *h, const nghttp2_frame_hd *hd)
{
    if (hd->type != NGHTTP2_PRIORITY)
        return false;
    uint64_t max = (uint64_t)h->opt.max_inbound_priority_frames_per_stream * (1 + h->streams_total);
    return ++h->priority_frames > max;
}

static bool window_update_flood(h2_conn_t *h, const nghttp2_frame_hd *hd)
{
    if (hd->type != NGHTTP2_WINDOW_UPDATE)
        return false;
    uint64_t per_data = h->opt.max_inbound_window_update_frames_per_data_frame_sent;
    return ++h->window_updates > 10 + per_data * (1 + h->data_frames_sent);
}

static void check_frame(h2_conn_t *h, const nghttp2_frame_hd *hd)
{
    const mp_http_stats_t *st = stats_of(h);
    check_stream_id(h, hd);
    if (continuation_flood(h, hd))
        h2_flood(h, st->h2_continuation_flood, "CONTINUATION flood");
    else if (empty_frame_flood(h, hd))
        h2_flood(h, st->h2_inbound_empty_frames_flood, "empty frame flood");
    else if (control_flood(h, hd))
        h2_flood(h, hd->type == NGHTTP2_PING ? st->h2_ping_flood : st->h2_settings_flood,
                 hd->type == NGHTTP2_PING ? "PING flood" : "SETTINGS flood");
    else if (priority_flood(h, hd))
        h2_flood(h, st->h2_inbound_priority_frames_flood, "PRIORITY flood");
    else if (window_update_flood(h, hd))
        h2_flood(h, st->h2_inbound_window_update_frames_flood, "WINDOW_UPDATE flood");
}

static void decode_frame_header(nghttp2_frame_hd *hd, const uint8_t b[9])
{
    hd->length = (size_t)b[0] << 16 | (size_t)b[1] << 8 | b[2];
    hd->type = b[3];
    hd->flags = b[4];
    hd->stream_id = (int32_t)((uint32_t)(b[5] & 0x7f) << 24 | (uint32_t)b[6] << 16 |
                              (uint32_t)b[7] << 8 | b[8]);
    hd->reserved = 0;
}

/* Walks frame boundaries in the bytes nghttp2 is about to read, so that every limit is checked
 * on every frame, whatever nghttp2 later makes of it. */
void h2_scan_frames(h2_conn_t *h, const uint8_t *data, size_t len)
{
    while (len > 0 && !h->closing) {
        size_t n;
        if (h->scan_preface > 0 || h->scan_payload > 0) {
            uint32_t *skip = h->scan_preface > 0 ? &h->scan_preface : &h->scan_payload;
            n = len < *skip ? len : *skip;
            *skip -= (uint32_t)n;
        } else {
            n = sizeof(h->scan_hd) - h->scan_hd_len;
            n = len < n ? len : n;
            memcpy(h->scan_hd + h->scan_hd_len, data, n);
            h->scan_hd_len += (uint32_t)n;
            if (h->scan_hd_len == sizeof(h->scan_hd)) {
                nghttp2_frame_hd hd;
                decode_frame_header(&hd, h->scan_hd);
                h->scan_hd_len = 0;
                h->scan_payload = (uint32_t)hd.length;
                check_frame(h, &hd);
            }
        }
        data += n;
        len -= n;
    }
}

/* ---- GOAWAY, idle, close ---- */

static void arm_timer(h2_conn_t *h, double seconds)
{
    ev_timer_stop(h->c.w->loop, &h->timer);
    if (seconds <= 0)
        return;
    ev_timer_set(&h->timer, seconds, 0.0);
    ev_timer_start(h->c.w->loop, &h->timer);
}

void h2_goaway(h2_conn_t *h, uint32_t code)
{
    if (h->c.dead)
        return;
    if (code != NGHTTP2_NO_ERROR) {
        /* Fatal: nothing more is read; what is queued gets a short grace to leave. */
        h->closing = true;
        nghttp2_session_terminate_session(h->session, code);
        ev_io_stop(h->c.w->loop, &h->rio);
        arm_timer(h, CLOSE_GRACE_S);
    } else if (!h->goaway_sent) {
        int32_t last = nghttp2_session_get_last_proc_stream_id(h->session);
        nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0);
    }
    h->goaway_sent = true;
    if (h->n_streams == 0)
        h->closing = true;
    mp_worker_defer(h->c.w, &h->flusher);
}

void h2_conn_idle(h2_conn_t *h)
{
    if (h->goaway_sent || h->c.w->draining) {
        h->closing = true;
        mp_worker_defer(h->c.w, &h->flusher);
        return;
    }
    arm_timer(h, (double)h->c.hcm->idle_timeout_ms / 1000.0);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    h2_conn_t *h = t->data;
    if (h->closing) {
        h2_conn_close(h, "GOAWAY grace over");
        return;
    }
    if (h->n_streams > 0)
        return;
    mp_stats_inc(stats_of(h)->downstream_cx_idle_timeout);
    h2_goaway(h, NGHTTP2_NO_ERROR);
}

/* ---- I/O ---- */

/* RFC 9113 5.1.2 makes a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS a stream error, but
 * nghttp2 ends the whole connection for it once the client has acknowledged the setting.  So
 * nghttp2 is told a limit H2_STREAM_SLACK higher than the client is: the first SETTINGS frame
 * carries the real one, written over the value nghttp2 serialised, and h2_downstream.c refuses
 * the streams between the two with REFUSED_STREAM itself. */
static void advertise_stream_limit(h2_conn_t *h, uint8_t *frame, size_t n)
{
    h->settings_patched = true;
    if (n < 9 || frame[3] != NGHTTP2_SETTINGS || (frame[4] & NGHTTP2_FLAG_ACK))
        return;
    size_t len = (size_t)frame[0] << 16 | (size_t)frame[1] << 8 | frame[2];
    uint32_t v = h->opt.max_concurrent_streams;
    for (size_t off = 9; off + 6 <= 9 + len && off + 6 <= n; off += 6) {
        if (frame[off] == 0 && frame[off + 1] == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) {
            frame[off + 2] = (uint8_t)(v >> 24);
            frame[off + 3] = (uint8_t)(v >> 16);
            frame[off + 4] = (uint8_t)(v >> 8);
            frame[off + 5] = (uint8_t)v;
        }
    }
}

static void append_first_frames(h2_conn_t *h, const uint8_t *data, size_t n)
{
    uint8_t copy[512];
    size_t take = n < sizeof(copy) ? n : sizeof(copy);
    memcpy(copy, data, take);
    advertise_stream_limit(h, copy, take);
    mp_buf_append(&h->out, copy, take);
    mp_buf_append(&h->out, data + take, n - take);
}

/* Serialises frames into `out` until it holds OUT_HIGH; false on a fatal session error. */
static bool pump_output(h2_conn_t *h)
{
    while (mp_buf_len(&h->out) < OUT_HIGH) {
        const uint8_t *data = NULL;
        ssize_t n = nghttp2_session_mem_send(h->session, &data);
        if (n < 0) {
            if (n == NGHTTP2_ERR_FLOODED)
                mp_stats_inc(stats_of(h)->h2_outbound_control_flood);
            mp_log_debug("downstream %s: h2 send: %s", h->c.peer, nghttp2_strerror((int)n));
            return false;
        }
        if (n == 0)
            return true;
        if (!h->settings_patched)
            append_first_frames(h, data, (size_t)n);
        else
            mp_buf_append(&h->out, data, (size_t)n);
    }
    return true;
}

static bool finished(const h2_conn_t *h)
{
    if (mp_buf_len(&h->out) > 0)
        return false;
    if (h->closing && (h->n_streams == 0 || !nghttp2_session_want_write(h->session)))
        return true;
    return !nghttp2_session_want_read(h->session) && !nghttp2_session_want_write(h->session);
}

/* Writes until the socket is full or nothing is left; closes when the session is over. */
void h2_flush(mp_deferred_t *def)
{
    h2_conn_t *h = (h2_conn_t *)((char *)def - offsetof(h2_conn_t, flusher));
    if (h->c.dead)
        return;
    for (int i = 0; i < 256; i++) {
        bool ok = pump_output(h);
        if (mp_buf_len(&h->out) > 0) {
            ssize_t n = mp_hconn_write(&h->c, &h->out);
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                h2_conn_close(h, strerror(errno));
                return;
            }
            if (n > 0)
                mp_stats_add(stats_of(h)->downstream_cx_tx_bytes_total, n);
        }
        if (!ok) {
            h2_conn_close(h, "session error");
            return;
        }
        if (mp_buf_len(&h->out) > 0 || !nghttp2_session_want_write(h->session))
            break;
    }
    if (mp_buf_len(&h->out) > 0)
        ev_io_start(h->c.w->loop, &h->wio);
    else
        ev_io_stop(h->c.w->loop, &h->wio);
    if (finished(h))
        h2_conn_close(h, h->closing ? "GOAWAY sent" : "session over");
}

static void on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    h2_conn_t *h = io->data;
    h2_flush(&h->flusher);
}

/* Feeds what was read to nghttp2, one input segment at a time so that request bodies can
 * reference the slice they arrived in. */
static void process_input(h2_conn_t *h)
{
    while (!h->c.dead && !h->closing && mp_buf_len(&h->in) > 0) {
        mp_buf_seg_t *seg = h->in.head;
        const uint8_t *data = (const uint8_t *)seg->slice->data + seg->off;
        h2_scan_frames(h, data, seg->len);
        if (h->closing)
            break;
        h->cur_slice = seg->slice;
        ssize_t n = nghttp2_session_mem_recv(h->session, data, seg->len);
        h->n_recent = 0;
        if (h->c.dead)
            return;
        if (n < 0) {
            if (n == NGHTTP2_ERR_FLOODED)
                mp_stats_inc(stats_of(h)->h2_outbound_control_flood);
            else if (n == NGHTTP2_ERR_BAD_CLIENT_MAGIC)
                mp_stats_inc(stats_of(h)->downstream_cx_protocol_error);
            mp_log_debug("downstream %s: h2 recv: %s", h->c.peer, nghttp2_strerror((int)n));
            h->closing = true;
            arm_timer(h, CLOSE_GRACE_S);
            break;
        }
        mp_buf_consume(&h->in, (size_t)n);
    }
    mp_buf_clear(&h->in); /* after a fatal error, whatever is left is not for us */
    h->cur_slice = NULL;
    mp_worker_defer(h->c.w, &h->flusher);
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    h2_conn_t *h = io->data;
    ssize_t n = mp_hconn_read(&h->c, &h->in, READ_CHUNK);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            h2_conn_close(h, strerror(errno));
        return;
    }
    if (n == 0) {
        mp_stats_inc(stats_of(h)->downstream_cx_destroy_remote);
        h2_conn_close(h, "client closed");
        return;
    }
    mp_stats_add(stats_of(h)->downstream_cx_rx_bytes_total, n);
    process_input(h);
}

/* ---- setup ---- */

static uint32_t nghttp2_stream_limit(const mp_h2_options_t *o)
{
    uint32_t max = 0x7fffffff;
    return o->max_concurrent_streams > max - H2_STREAM_SLACK
               ? max
               : o->max_concurrent_streams + H2_STREAM_SLACK;
}

static int submit_settings(h2_conn_t *h)
{
    const mp_h2_options_t *o = &h->opt;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, nghttp2_stream_limit(o)},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->initial_stream_window_size},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, o->hpack_table_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, h->c.hcm->max_request_headers_kb * 1024},
        /* RFC 9218: we do not schedule by the deprecated priority tree, so nghttp2 need not
         * keep one. */
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    size_t n = MP_ARRAY_SIZE(iv) - (o->allow_connect ? 0 : 1);
    if (nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, n) != 0)
        return MP_ERROR;
    return nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0,
                                                 (int32_t)o->initial_connection_window_size);
}

static int new_session(h2_conn_t *h)
{
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* Closed streams are kept only for the priority tree, which we do not use. */
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_max_outbound_ack(opt, h->opt.max_outbound_control_frames);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    nghttp2_session_callbacks *cb = h2_server_callbacks();
    int rv = nghttp2_session_server_new2(&h->session, cb, h, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    return rv == 0 ? 0 : MP_ERROR;
}

static h2_conn_t *conn_new(void)
{
    h2_conn_t *h = mp_xcalloc(1, sizeof(*h));
    mp_buf_init(&h->in);
    mp_buf_init(&h->out);
    h->flusher.fn = h2_flush;
    return h;
}

/* Everything after the common part is in place: options, session, watchers, SETTINGS. */
static bool conn_start(h2_conn_t *h)
{
    effective_options(&h->opt, &h->c.hcm->h2);
    mp_stats_inc(stats_of(h)->downstream_cx_http2_total);
    mp_stats_inc(stats_of(h)->downstream_cx_http2_active);
    ev_io_init(&h->rio, on_readable, h->c.tp.fd, EV_READ);
    h->rio.data = h;
    h->c.tp.rio = &h->rio;
    ev_io_init(&h->wio, on_writable, h->c.tp.fd, EV_WRITE);
    h->wio.data = h;
    ev_init(&h->timer, on_timer);
    h->timer.data = h;
    h->control_window_start = ev_now(h->c.w->loop);
    h->scan_preface = 24;
    if (new_session(h) != 0 || submit_settings(h) != 0) {
        h2_conn_close(h, "cannot start an HTTP/2 session");
        return false;
    }
    ev_io_start(h->c.w->loop, &h->rio);
    arm_timer(h, (double)h->c.hcm->idle_timeout_ms / 1000.0);
    return true;
}

void mp_h2_accept(mp_worker_t *w, const mp_listener_t *l, const mp_filter_chain_t *fc, int fd)
{
    h2_conn_t *h = conn_new();
    mp_hconn_init(&h->c, h2_conn_ops(), w, l, fc, fd);
    if (conn_start(h))
        mp_worker_defer(w, &h->flusher);
}

/* RFC 7540 3.2: the 101 goes out first, then our SETTINGS; the request becomes stream 1,
 * half-closed from the client's side. */
static bool start_upgraded_stream(h2_conn_t *h, mp_http_msg_t *req, const char *settings)
{
    uint8_t payload[256];
    int len = h2_decode_settings(settings, payload, sizeof(payload));
    bool head = req->method != NULL && strcmp(req->method, "HEAD") == 0;
    if (len < 0 || nghttp2_session_upgrade2(h->session, payload, (size_t)len, head, NULL) != 0) {
        mp_http_msg_free(req);
        return false;
    }
    mp_stats_inc(stats_of(h)->downstream_cx_upgrades_total);
    h2_dstream_t *d = mp_xcalloc(1, sizeof(*d));
    d->h = h;
    d->id = 1;
    mp_buf_init(&d->out);
    d->next = h->streams;
    h->streams = d;
    h->n_streams++;
    h->streams_total++;
    h->last_client_id = 1;
    nghttp2_session_set_stream_user_data(h->session, 1, d);
    mp_stream_t *s = mp_stream_new(&h->c, req);
    s->codec = d;
    d->stream = s;
    mp_stream_on_request_head(s);
    if (d->stream != NULL)
        mp_stream_on_request_complete(d->stream, NULL);
    return true;
}

void mp_h2_takeover(mp_hconn_t *from, mp_buf_t *in, mp_http_msg_t *upgrade_req,
                    const char *settings)
{
    h2_conn_t *h = conn_new();
    mp_hconn_move(&h->c, from, h2_conn_ops());
    mp_buf_move(&h->in, in, mp_buf_len(in));
    if (upgrade_req != NULL)
        mp_buf_append_str(&h->out, "HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\n"
                                   "upgrade: h2c\r\n\r\n");
    if (!conn_start(h)) {
        mp_http_msg_free(upgrade_req);
        return;
    }
    if (upgrade_req != NULL && !start_upgraded_stream(h, upgrade_req, settings)) {
        h2_conn_close(h, "bad HTTP2-Settings");
        return;
    }
    if (h->c.dead)
        return;
    process_input(h);
    if (h->c.tp.tls != NULL)
        mp_hconn_kick_read(&h->c); /* OpenSSL may hold the preface already */
}
