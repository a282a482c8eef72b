/* What a stream asks of its HTTP/2 upstream request (the head, the body, the end, backpressure,
 * detach), and the per-worker pools of HTTP/2 connections requests are attached to. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/circuit.h"
#include "h2_upstream_internal.h"
#include "magpie/log.h"
#include "magpie/net.h"
#include "magpie/stats.h"

/* ---- what a stream asks of its HTTP/2 upstream request ---- */

/* Fields that are connection-specific in HTTP/2 (RFC 9113 8.2.2), or that we write ourselves. */
static bool skip_field(const mp_header_t *f)
{
    static const char *const ours[] = {"host", "http2-settings", "content-length"};
    if (mp_http_is_connection_specific(f->name, f->name_len))
        return true;
    for (size_t i = 0; i < MP_ARRAY_SIZE(ours); i++)
        if (strcmp(f->name, ours[i]) == 0)
            return true;
    return strcmp(f->name, "te") == 0 && !mp_strieq(f->value, f->value_len, "trailers");
}

static nghttp2_nv make_nv(const char *name, size_t nlen, const char *value, size_t vlen)
{
    return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, nlen, vlen, NGHTTP2_NV_FLAG_NONE};
}

/* Splits a cookie into crumbs (RFC 9113 8.2.3) so that HPACK can index them one by one. */
static size_t add_cookie_crumbs(nghttp2_nv *nva, size_t n, const mp_header_t *f)
{
    const char *p = f->value, *end = f->value + f->value_len;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *stop = semi != NULL ? semi : end;
        if (stop > p)
            nva[n++] = make_nv("cookie", 6, p, (size_t)(stop - p));
        p = stop + 1;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
    }
    return n;
}

static size_t nv_capacity(const mp_http_msg_t *req)
{
    size_t cap = 5;
    for (uint32_t i = 0; i < req->headers.n; i++) {
        cap++;
        if (strcmp(req->headers.v[i].name, "cookie") == 0)
            for (const char *p = req->headers.v[i].value; *p != '\0'; p++)
                cap += *p == ';';
    }
    return cap;
}

/* The request head as HTTP/2 fields; strings are borrowed from req and clen. */
static size_t build_nva(const mp_http_msg_t *req, nghttp2_nv *nva, char *clen, size_t clen_cap)
{
    size_t n = 0;
    const char *method = req->method ? req->method : "GET";
    const char *scheme = req->scheme ? req->scheme : "http";
    const char *path = req->path ? req->path : "/";
    nva[n++] = make_nv(":method", 7, method, strlen(method));
    nva[n++] = make_nv(":scheme", 7, scheme, strlen(scheme));
    if (req->authority != NULL)
        nva[n++] = make_nv(":authority", 10, req->authority, strlen(req->authority));
    nva[n++] = make_nv(":path", 5, path, strlen(path));
    for (uint32_t i = 0; i < req->headers.n; i++) {
        const mp_header_t *f = &req->headers.v[i];
        if (skip_field(f))
            continue;
        if (strcmp(f->name, "cookie") == 0)
            n = add_cookie_crumbs(nva, n, f);
        else
            nva[n++] = make_nv(f->name, f->name_len, f->value, f->value_len);
    }
    if (req->content_length >= 0) {
        int len = snprintf(clen, clen_cap, "%lld", (long long)req->content_length);
        nva[n++] = make_nv("content-length", 14, clen, (size_t)len);
    }
    return n;
}

static void h2_up_send_head(mp_ustream_t *us, mp_http_msg_t *req, bool end_stream)
{
    h2_ureq_t *r = ureq_of(us);
    mp_h2_uconn_t *hc = r->hc;
    nghttp2_nv *nva = mp_xcalloc(nv_capacity(req), sizeof(*nva));
    char clen[24];
    size_t n = build_nva(req, nva, clen, sizeof(clen));
    nghttp2_data_provider prd = {.source.ptr = r, .read_callback = mp_h2u__read_body};
    int32_t id = nghttp2_submit_request(hc->session, NULL, nva, n, end_stream ? NULL : &prd, r);
    free(nva);
    r->eof = end_stream;
    if (id < 0) {
        /* Stream ids ran out, or the session is going away: this connection takes no more. */
        mp_log_debug("upstream %s: submit: %s", hc->addr.text, nghttp2_strerror(id));
        mp_h2u__pool_unlink(hc);
        mp_h2u__ureq_mark_closed(r);
        mp_h2u__ureq_fail_later(r, MP_RF_UPSTREAM_CONN_TERM, "upstream_refused_stream");
        return;
    }
    r->stream_id = id;
    uint32_t max = hc->cluster->max_requests_per_connection;
    if (max != 0 && (uint32_t)(id / 2 + 1) >= max)
        mp_h2u__pool_unlink(hc); /* drains: finishes its streams, takes no new ones */
    mp_h2u__schedule(hc);
}

static bool ureq_sending(const h2_ureq_t *r)
{
    return r->stream_id != 0 && !r->closed && !r->hc->dead;
}

static void h2_up_send_data(mp_ustream_t *us, mp_slice_t *slice, const char *data, size_t len)
{
    h2_ureq_t *r = ureq_of(us);
    if (!ureq_sending(r))
        return;
    mp_buf_append_ref(&r->body, slice, data, len);
    mp_stream_t *s = r->us.stream;
    if (s != NULL && us->ops->queued(us) > s->conn->buffer_limit)
        r->above_mark = true;
    nghttp2_session_resume_data(r->hc->session, r->stream_id);
    mp_h2u__schedule(r->hc);
}

static void h2_up_send_end(mp_ustream_t *us, const mp_headers_t *trailers)
{
    h2_ureq_t *r = ureq_of(us);
    r->eof = true;
    if (!ureq_sending(r))
        return;
    if (trailers != NULL && trailers->n > 0) {
        r->trailers = mp_xcalloc(1, sizeof(*r->trailers));
        mp_headers_init(r->trailers);
        mp_headers_copy(r->trailers, trailers);
    }
    nghttp2_session_resume_data(r->hc->session, r->stream_id);
    mp_h2u__schedule(r->hc);
}

static size_t h2_up_queued(const mp_ustream_t *us)
{
    const h2_ureq_t *r = ureq_of(us);
    return mp_buf_len(&r->body) + mp_buf_len(&r->hc->out);
}

static void h2_up_block_read(mp_ustream_t *us, bool block)
{
    h2_ureq_t *r = ureq_of(us);
    r->blocked = block;
    if (block || r->unconsumed == 0 || !ureq_sending(r))
        return;
    nghttp2_session_consume_stream(r->hc->session, r->stream_id, r->unconsumed);
    r->unconsumed = 0;
    mp_h2u__schedule(r->hc);
}

static void h2_up_detach(mp_ustream_t *us, bool abort)
{
    h2_ureq_t *r = ureq_of(us);
    mp_h2_uconn_t *hc = r->hc;
    r->us.stream = NULL;
    r->fail_details = NULL;
    if (hc->dead)
        return;
    if (r->stream_id == 0)
        mp_h2u__ureq_mark_closed(r);
    else if (!r->closed && abort)
        nghttp2_submit_rst_stream(hc->session, NGHTTP2_FLAG_NONE, r->stream_id, NGHTTP2_CANCEL);
    /* The last stream of a connection that left its pool: close now when nothing of ours is on
     * the stack (a worker about to exit runs no deferred work), else from the deferred pass. */
    if (hc->busy == 0 && hc->pool == NULL && !mp_h2u__any_attached(hc))
        mp_h2u__close_gracefully(hc);
    else
        mp_h2u__schedule(hc);
}

const mp_up_ops_t mp_h2u__ops = {
    .send_head = h2_up_send_head,
    .send_data = h2_up_send_data,
    .send_end = h2_up_send_end,
    .queued = h2_up_queued,
    .block_read = h2_up_block_read,
    .detach = h2_up_detach,
};

/* ---- pools ---- */

static mp_h2_uconn_t *find_reusable(mp_pool_t *pool, const mp_addr_t *addr)
{
    for (mp_h2_uconn_t *hc = pool != NULL ? pool->h2 : NULL; hc != NULL; hc = hc->next) {
        if (hc->dead || hc->goaway || hc->addr.len != addr->len ||
            memcmp(&hc->addr.ss, &addr->ss, addr->len) != 0)
            continue;
        if (hc->n_live < mp_h2u__capacity(hc))
            return hc;
    }
    return NULL;
}

/* max_connections: a new connection needs a place, except the pool's first (Envoy's rule, so
 * that a worker whose peers hold every place can still serve).  Over the limit with connections
 * open, the request is refused (503 UO): this pool keeps no queue for stream slots. */
static bool connection_allowed(mp_stream_t *s, mp_pool_t *pool, bool *held)
{
    *held = mp_cb_try_acquire(s->cluster, s->priority, MP_CB_CONNECTIONS);
    if (*held)
        return true;
    mp_stats_inc(s->cluster->stats.upstream_cx_overflow);
    if (pool == NULL || pool->h2 == NULL)
        return true;
    mp_stream_overflow(s);
    return false;
}

static mp_h2_uconn_t *connect_new(mp_stream_t *s, mp_pool_t *pool, const mp_addr_t *addr,
                                  const char *sni)
{
    mp_cluster_t *c = s->cluster;
    bool held;
    if (!connection_allowed(s, pool, &held))
        return NULL;
    int fd = mp_net_connect(addr);
    if (fd < 0) {
        if (held)
            mp_cb_release(c, s->priority, MP_CB_CONNECTIONS);
        mp_stats_inc(c->stats.upstream_cx_connect_fail);
        mp_stream_on_upstream_failure(s, MP_RF_UPSTREAM_CONNECT_FAIL, "upstream_connect_failure");
        return NULL;
    }
    mp_h2_uconn_t *hc = mp_h2u__hc_new(s->conn->w, pool, s, addr, fd, sni);
    hc->cb_cx_held = held;
    hc->cb_priority = s->priority;
    if (c->tls != NULL && mp_tport_tls_connect(&hc->tp, c->tls, addr->text, sni, true) != 0) {
        mp_stats_inc(c->stats.upstream_cx_connect_fail);
        mp_h2u__close_gracefully(hc); /* nothing attached yet: no stream hears of it */
        mp_stream_on_upstream_failure(s, MP_RF_UPSTREAM_CONNECT_FAIL, "tls_handshake_failure");
        return NULL;
    }
    ev_timer_set(&hc->timer, (double)c->connect_timeout_ms / 1000.0, 0.0);
    ev_timer_start(hc->w->loop, &hc->timer);
    ev_io_start(hc->w->loop, &hc->wio);
    return hc;
}

void mp_h2u__attach_addr(mp_stream_t *s, mp_pool_t *pool, const mp_addr_t *addr, const char *sni)
{
    mp_h2_uconn_t *hc = find_reusable(pool, addr);
    if (hc == NULL)
        hc = connect_new(s, pool, addr, sni);
    if (hc == NULL)
        return;
    h2_ureq_t *r = mp_xcalloc(1, sizeof(*r));
    r->us.ops = &mp_h2u__ops;
    r->us.stream = s;
    r->hc = hc;
    mp_buf_init(&r->body);
    r->next = hc->reqs;
    if (hc->reqs != NULL)
        hc->reqs->prev = r;
    hc->reqs = r;
    hc->n_live++;
    s->up = &r->us;
    if (hc->state != H2_READY) {
        mp_stats_inc(s->cluster->stats.upstream_rq_pending_total);
        return; /* started when the server's SETTINGS arrive (ready_waiting) */
    }
    ev_timer_stop(hc->w->loop, &hc->timer); /* the idle timer */
    mp_stream_on_upstream_ready(s);
}

void mp_h2_upstream_attach(mp_stream_t *s, mp_pool_t *pool, const mp_host_t *host)
{
    mp_h2u__attach_addr(s, pool, &host->addr, host->hostname);
}

void mp_h2_pool_release(mp_pool_t *pool)
{
    while (pool->h2 != NULL) {
        mp_h2_uconn_t *hc = pool->h2;
        mp_h2u__pool_unlink(hc);
        if (!mp_h2u__any_attached(hc))
            mp_h2u__close_gracefully(hc);
    }
}
