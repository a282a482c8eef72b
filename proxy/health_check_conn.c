/* Active health checking: a session's connection (connect, TLS, reads and writes, kept open
 * between checks when reuse_connection) and the HTTP/1.1 and TCP checks on it.  Main thread. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "health_check_internal.h"
#include "magpie/http.h"
#include "magpie/log.h"
#include "magpie/net.h"
#include "magpie/route.h"

/* A health answer is small; a server that sends more is treated as failing (Envoy buffers the
 * first response_buffer_size bytes of a TCP answer and reads HTTP bodies to their end). */
#define MAX_TCP_ANSWER 65536
#define MAX_HTTP_BODY (1u << 20)
#define READ_CHUNK 16384

static void on_io(struct ev_loop *loop, ev_io *w, int revents);

void mp_hc__close(mp_hc_session_t *s)
{
    struct ev_loop *loop = mp_hc__loop(s);
    ev_io_stop(loop, &s->rio);
    ev_io_stop(loop, &s->wio);
    if (s->tp.fd >= 0)
        mp_tport_close(&s->tp);
    s->tp.fd = -1;
    s->open = s->connecting = s->handshaking = false;
    s->close_after = false;
    mp_buf_clear(&s->in);
    mp_buf_clear(&s->out);
    if (s->h1 != NULL)
        mp_h1_parser_free(s->h1);
    s->h1 = NULL;
    mp_hc__h2_free(s);
}

int mp_hc__flush(mp_hc_session_t *s)
{
    while (mp_buf_len(&s->out) > 0) {
        ssize_t n = mp_tport_write(&s->tp, &s->out);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0)
            return MP_ERROR;
    }
    if (mp_buf_len(&s->out) > 0)
        ev_io_start(mp_hc__loop(s), &s->wio);
    else
        ev_io_stop(mp_hc__loop(s), &s->wio);
    return 0;
}

/* ---- HTTP/1.1 ---- */

static int on_h1_head(void *ctx, mp_http_msg_t *msg)
{
    mp_hc_session_t *s = ctx;
    if (msg->status < 200) { /* 1xx: the final answer follows */
        mp_http_msg_free(msg);
        return 0;
    }
    s->status = msg->status;
    s->degraded = mp_headers_get(&msg->headers, "x-envoy-degraded") != NULL;
    s->immediate_fail = mp_headers_get(&msg->headers, "x-envoy-immediate-health-check-fail");
    s->close_after = !msg->keep_alive;
    mp_http_msg_free(msg);
    return 0;
}

static int on_h1_body(void *ctx, const char *data, size_t len)
{
    mp_hc_session_t *s = ctx;
    s->resp_len += len;
    return s->resp_len > MAX_HTTP_BODY ? MP_ERROR : 0;
}

static int on_h1_complete(void *ctx)
{
    mp_hc_session_t *s = ctx;
    if (s->status == 0)
        return 0;
    if (s->immediate_fail)
        s->verdict = MP_HC_IMMEDIATE;
    else
        s->verdict = mp_hc_status_expected(s->hc, s->status) ? MP_HC_OK : MP_HC_FAIL;
    return MP_AGAIN; /* one answer per check: anything after it is the server's mistake */
}

static const mp_h1_callbacks_t h1_cbs = {
    .on_head = on_h1_head,
    .on_body = on_h1_body,
    .on_complete = on_h1_complete,
};

static void h1_request(mp_hc_session_t *s)
{
    const mp_health_check_t *hc = s->hc;
    mp_headers_t h;
    mp_headers_init(&h);
    mp_headers_add_cstr(&h, "user-agent", "magpie/HC");
    mp_header_mutation_apply(&hc->headers, &h);
    mp_buf_printf(&s->out, "GET %s HTTP/1.1\r\nhost: %s\r\n", hc->path,
                  hc->host ? hc->host : mp_hc__cluster(s)->name);
    for (uint32_t i = 0; i < h.n; i++)
        if (strcmp(h.v[i].name, "host") != 0 && strpbrk(h.v[i].value, "\r\n") == NULL)
            mp_buf_printf(&s->out, "%s: %s\r\n", h.v[i].name, h.v[i].value);
    if (!hc->reuse_connection)
        mp_buf_append_str(&s->out, "connection: close\r\n");
    mp_buf_append_str(&s->out, "\r\n");
    mp_headers_free(&h);
    if (s->h1 != NULL)
        mp_h1_parser_free(s->h1);
    s->h1 = mp_h1_parser_new(MP_H1_RESPONSE, NULL, &h1_cbs, s);
    s->status = 0;
    s->resp_len = 0;
    s->degraded = s->immediate_fail = false;
}

/* Feeds what was read; returns the verdict so far. */
static mp_hc_result_t h1_feed(mp_hc_session_t *s, bool eof)
{
    while (mp_buf_len(&s->in) > 0 && s->verdict == MP_HC_PENDING) {
        struct iovec iov = {0};
        mp_buf_peek_iov(&s->in, &iov, 1);
        size_t used = 0;
        int rc = mp_h1_parser_feed(s->h1, iov.iov_base, iov.iov_len, &used);
        mp_buf_consume(&s->in, used);
        if (rc == MP_ERROR)
            return MP_HC_NET_FAIL;
    }
    if (s->verdict == MP_HC_PENDING && eof) {
        if (mp_h1_parser_finish(s->h1) != 0 || s->verdict == MP_HC_PENDING)
            return MP_HC_NET_FAIL;
    }
    if (s->verdict != MP_HC_PENDING && (mp_buf_len(&s->in) > 0 || eof))
        s->close_after = true;
    return s->verdict;
}

/* ---- TCP ---- */

static void tcp_request(mp_hc_session_t *s)
{
    if (s->hc->send.len > 0)
        mp_buf_append(&s->out, s->hc->send.data, s->hc->send.len);
}

static mp_hc_result_t tcp_feed(mp_hc_session_t *s, bool eof)
{
    size_t n = mp_buf_len(&s->in);
    if (n > MAX_TCP_ANSWER)
        return MP_HC_FAIL;
    char *p = n ? mp_buf_pullup(&s->in, n) : NULL;
    if (mp_hc_tcp_match(s->hc, (const uint8_t *)p, n)) {
        mp_buf_clear(&s->in);
        return MP_HC_OK;
    }
    return eof ? MP_HC_FAIL : MP_HC_PENDING;
}

/* ---- the connection ---- */

static void finish(mp_hc_session_t *s, mp_hc_result_t r, const char *why)
{
    mp_hc__done(s, r, why); /* may close s's connection: nothing of it may be used after */
}

/* The connection is up (and TLS done): send this check's request. */
static void send_request(mp_hc_session_t *s)
{
    const mp_health_check_t *hc = s->hc;
    s->verdict = MP_HC_PENDING;
    ev_io_start(mp_hc__loop(s), &s->rio);
    if (hc->kind == MP_HC_GRPC || (hc->kind == MP_HC_HTTP && hc->http2)) {
        if (mp_hc__h2_start(s) != 0 || mp_hc__flush(s) != 0)
            finish(s, MP_HC_NET_FAIL, "write failed");
        return;
    }
    if (hc->kind == MP_HC_HTTP)
        h1_request(s);
    else
        tcp_request(s);
    if (mp_hc__flush(s) != 0) {
        finish(s, MP_HC_NET_FAIL, "write failed");
        return;
    }
    /* A TCP check with nothing to receive passes once connected and the payload is written. */
    if (hc->kind == MP_HC_TCP && hc->n_receive == 0 && mp_buf_len(&s->out) == 0)
        finish(s, MP_HC_OK, "");
}

static void on_connected(mp_hc_session_t *s)
{
    s->connecting = false;
    s->open = true;
    const mp_cluster_t *c = mp_hc__cluster(s);
    if (c->tls != NULL) {
        bool h2 = s->hc->kind == MP_HC_GRPC || s->hc->http2;
        /* NULL address: health checks neither resume nor fill the data path's session cache. */
        if (mp_tport_tls_connect(&s->tp, c->tls, NULL, s->sni, h2) != 0) {
            finish(s, MP_HC_NET_FAIL, "tls setup failed");
            return;
        }
        s->handshaking = true;
        return; /* the write watcher is on: the handshake starts at once */
    }
    ev_io_stop(mp_hc__loop(s), &s->wio);
    send_request(s);
}

static void do_handshake(mp_hc_session_t *s)
{
    int events = 0;
    char why[160] = "";
    int rc = mp_tport_handshake(&s->tp, mp_hc__cluster(s)->tls, &events, why, sizeof(why));
    struct ev_loop *loop = mp_hc__loop(s);
    if (rc == MP_AGAIN) {
        ev_io_stop(loop, events == EV_READ ? &s->wio : &s->rio);
        ev_io_start(loop, events == EV_READ ? &s->rio : &s->wio);
        return;
    }
    ev_io_stop(loop, &s->wio);
    s->handshaking = false;
    if (rc != 0) {
        finish(s, MP_HC_NET_FAIL, "tls handshake failed");
        return;
    }
    send_request(s);
}

static mp_hc_result_t feed(mp_hc_session_t *s, bool eof)
{
    const mp_health_check_t *hc = s->hc;
    if (hc->kind == MP_HC_GRPC || (hc->kind == MP_HC_HTTP && hc->http2)) {
        if (mp_buf_len(&s->in) > 0 && mp_hc__h2_feed(s) != 0)
            return MP_HC_NET_FAIL;
        if (s->verdict == MP_HC_PENDING && (eof || mp_hc__flush(s) != 0))
            return MP_HC_NET_FAIL;
        return s->verdict;
    }
    if (hc->kind == MP_HC_HTTP)
        return h1_feed(s, eof);
    return tcp_feed(s, eof);
}

static void on_readable(mp_hc_session_t *s)
{
    ssize_t n = mp_tport_read(&s->tp, &s->in, READ_CHUNK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    bool eof = n <= 0;
    if (!s->busy) { /* idle kept-alive connection: the server closed it or spoke out of turn */
        mp_hc__close(s);
        return;
    }
    mp_hc_result_t r = feed(s, eof);
    if (r != MP_HC_PENDING) {
        finish(s, r, r == MP_HC_NET_FAIL ? "connection closed or bad response" : "bad response");
        return;
    }
    if (eof)
        finish(s, MP_HC_NET_FAIL, "connection closed");
}

static void on_writable(mp_hc_session_t *s)
{
    if (s->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(s->tp.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            finish(s, MP_HC_NET_FAIL,
                   err == ECONNREFUSED ? "connection refused" : "connect failed");
            return;
        }
        on_connected(s);
        return;
    }
    if (mp_hc__flush(s) != 0) {
        finish(s, MP_HC_NET_FAIL, "write failed");
        return;
    }
    if (s->hc->kind == MP_HC_TCP && s->hc->n_receive == 0 && mp_buf_len(&s->out) == 0)
        finish(s, MP_HC_OK, "");
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    mp_hc_session_t *s = w->data;
    if (s->handshaking) {
        do_handshake(s);
        return;
    }
    if (revents & EV_WRITE) {
        on_writable(s);
        return;
    }
    on_readable(s);
}

void mp_hc__check(mp_hc_session_t *s)
{
    struct ev_loop *loop = mp_hc__loop(s);
    if (s->open) {
        send_request(s);
        return;
    }
    int fd = mp_net_connect(&s->addr);
    if (fd < 0) {
        finish(s, MP_HC_NET_FAIL, strerror(errno));
        return;
    }
    mp_tport_init(&s->tp, loop, fd, &s->rio);
    ev_io_init(&s->rio, on_io, fd, EV_READ);
    ev_io_init(&s->wio, on_io, fd, EV_WRITE);
    s->rio.data = s->wio.data = s;
    s->connecting = true;
    ev_io_start(loop, &s->wio);
}
