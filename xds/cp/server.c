/* magpie-cp's servers: one listening socket for gRPC (HTTP/2 cleartext with prior knowledge; a
 * connection whose first bytes are not the HTTP/2 preface is read as HTTP/1.1 REST), and an
 * optional second one for REST only.  A compact nghttp2 server session: xDS streams are few and
 * long-lived, so every stream keeps a plain output buffer that the data provider drains. */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "cp.h"
#include "magpie/config.h"
#include "magpie/log.h"
#include "magpie/net.h"

#define CP_MAX_MSG (64u * 1024 * 1024)
#define CP_MAX_CONN_OUT (256u * 1024 * 1024)
#define ADS_SVC "/envoy.service.discovery.v3.AggregatedDiscoveryService/"

typedef enum { PROTO_UNKNOWN, PROTO_H2, PROTO_H1 } cp_proto_t;

typedef struct cp_conn cp_conn_t;

typedef struct cp_stream {
    int32_t id;
    cp_conn_t *conn;
    char path[256];
    bool grpc;   /* an xDS stream; else REST over HTTP/2 */
    bool ending; /* the client half-closed, or we end it with grpc_status */
    bool started;
    int grpc_status;
    char grpc_msg[256];
    mp_cp_xds_t xds;
    uint8_t *in;
    size_t in_len;
    uint8_t *out;
    size_t out_len, out_off;
    struct cp_stream *next;
} cp_stream_t;

struct cp_conn {
    ev_io io;
    int fd;
    int id;
    cp_proto_t proto;
    mp_cp_server_t *srv;
    nghttp2_session *h2;
    char *in; /* HTTP/1.1 input, NUL-terminated */
    size_t in_len;
    uint8_t *out;
    size_t out_len, out_off;
    bool close_after_write;
    cp_stream_t *streams;
    cp_conn_t *next;
};

struct mp_cp_server {
    struct ev_loop *loop;
    mp_cp_store_t *store;
    int fds[2];
    ev_io accept_io[2];
    cp_conn_t *conns;
    int conn_seq;
};

static void conn_flush(cp_conn_t *c);

/* ---- output ---- */

static void conn_out_append(cp_conn_t *c, const void *p, size_t n)
{
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    c->out = mp_xrealloc(c->out, c->out_len + n);
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static void stream_out_append(cp_stream_t *s, const uint8_t *p, size_t n)
{
    if (s->out_off == s->out_len)
        s->out_off = s->out_len = 0;
    s->out = mp_xrealloc(s->out, s->out_len + n);
    memcpy(s->out + s->out_len, p, n);
    s->out_len += n;
}

/* An xDS response from xds.c: one length-prefixed gRPC message. */
static void on_xds_send(void *arg, const uint8_t *msg, size_t len)
{
    cp_stream_t *s = arg;
    uint8_t hdr[5] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};
    stream_out_append(s, hdr, sizeof(hdr));
    stream_out_append(s, msg, len);
    nghttp2_session_resume_data(s->conn->h2, s->id);
}

static ssize_t on_read_body(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *user)
{
    cp_stream_t *s = src->ptr;
    size_t n = MP_MIN(length, s->out_len - s->out_off);
    if (n > 0)
        memcpy(buf, s->out + s->out_off, n);
    s->out_off += n;
    if (s->out_off < s->out_len || n > 0)
        return (ssize_t)n;
    if (!s->ending)
        return NGHTTP2_ERR_DEFERRED;
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!s->grpc)
        return 0;
    *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    char code[16];
    snprintf(code, sizeof(code), "%d", s->grpc_status);
    nghttp2_nv tr[] = {
        {(uint8_t *)"grpc-status", (uint8_t *)code, 11, strlen(code), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"grpc-message", (uint8_t *)s->grpc_msg, 12, strlen(s->grpc_msg),
         NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_submit_trailer(h2, id, tr, s->grpc_msg[0] ? 2 : 1);
    return 0;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }

static void stream_respond(cp_stream_t *s, const char *status, const char *ctype)
{
    nghttp2_nv hdrs[] = {NV(":status", status), NV("content-type", ctype)};
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = on_read_body};
    nghttp2_submit_response(s->conn->h2, s->id, hdrs, 2, &dp);
    s->started = true;
}

/* Ends a gRPC stream with a status (after whatever output is queued). */
static void stream_end(cp_stream_t *s, int status, const char *msg)
{
    s->ending = true;
    s->grpc_status = status;
    snprintf(s->grpc_msg, sizeof(s->grpc_msg), "%s", msg ? msg : "");
    if (!s->started)
        stream_respond(s, "200", "application/grpc");
    nghttp2_session_resume_data(s->conn->h2, s->id);
}

/* ---- streams ---- */

static cp_stream_t *stream_new(cp_conn_t *c, int32_t id)
{
    cp_stream_t *s = mp_xcalloc(1, sizeof(*s));
    s->id = id;
    s->conn = c;
    s->next = c->streams;
    c->streams = s;
    return s;
}

static void stream_free(cp_stream_t *s)
{
    if (s->grpc)
        mp_cp_xds_free(&s->xds);
    free(s->in);
    free(s->out);
    free(s);
}

static void stream_unlink(cp_conn_t *c, cp_stream_t *s)
{
    for (cp_stream_t **p = &c->streams; *p != NULL; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            return;
        }
}

/* Which xDS method a path names: delta or not, and the type (-1 = ADS).  false if none. */
static bool route_grpc(const char *path, bool *delta, int *type)
{
    *type = -1;
    if (strcmp(path, ADS_SVC "StreamAggregatedResources") == 0)
        return *delta = false, true;
    if (strcmp(path, ADS_SVC "DeltaAggregatedResources") == 0)
        return *delta = true, true;
    for (int t = 0; t < MP_CP_NTYPES; t++) {
        *type = t;
        if (strcmp(path, mp_cp_type(t)->sotw) == 0)
            return *delta = false, true;
        if (strcmp(path, mp_cp_type(t)->delta) == 0)
            return *delta = true, true;
    }
    return false;
}

static void stream_on_headers(cp_stream_t *s)
{
    bool delta;
    int type;
    if (strncmp(s->path, "/v3/discovery:", 14) == 0)
        return; /* REST over HTTP/2: answered when the body is complete */
    if (!route_grpc(s->path, &delta, &type)) {
        mp_log_info("conn %d stream %d: unknown method %s", s->conn->id, s->id, s->path);
        s->grpc = true;
        mp_cp_xds_init(&s->xds, s->conn->srv->store, false, -1, "", on_xds_send, s);
        stream_end(s, 12, "unknown method");
        return;
    }
    char label[128];
    snprintf(label, sizeof(label), "conn %d stream %d %s%s", s->conn->id, s->id,
             type < 0 ? "ADS" : mp_cp_type(type)->name, delta ? " delta" : "");
    s->grpc = true;
    mp_cp_xds_init(&s->xds, s->conn->srv->store, delta, type, label, on_xds_send, s);
    mp_log_info("%s: stream opened (%s)", label, s->path);
    stream_respond(s, "200", "application/grpc");
}

/* Feeds complete length-prefixed messages to the xDS state machine. */
static void stream_on_grpc_data(cp_stream_t *s)
{
    size_t off = 0;
    while (!s->ending && s->in_len - off >= 5) {
        const uint8_t *p = s->in + off;
        uint32_t n = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        if (p[0] != 0 || n > CP_MAX_MSG) {
            stream_end(s, p[0] ? 12 : 8, p[0] ? "compression is not supported" : "too large");
            break;
        }
        if (s->in_len - off - 5 < n)
            break;
        mp_err_t err;
        int status = mp_cp_xds_on_message(&s->xds, p + 5, n, &err);
        if (status != 0) {
            mp_log_info("%s: ending the stream: %s", s->xds.label, err.msg);
            stream_end(s, status, err.msg);
        }
        off += 5 + (size_t)n;
    }
    memmove(s->in, s->in + off, s->in_len - off);
    s->in_len -= off;
}

static void stream_on_rest_end(cp_stream_t *s)
{
    char *body = NULL;
    int status =
        mp_cp_rest_handle(s->conn->srv->store, s->path, (const char *)s->in, s->in_len, &body);
    char code[8];
    snprintf(code, sizeof(code), "%d", status);
    stream_out_append(s, (const uint8_t *)body, strlen(body));
    free(body);
    s->ending = true;
    stream_respond(s, code, status == 200 ? "application/json" : "text/plain");
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *user)
{
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
        nghttp2_session_set_stream_user_data(h2, f->hd.stream_id,
                                             stream_new(user, f->hd.stream_id));
    return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    cp_stream_t *s = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
    if (s != NULL && namelen == 5 && memcmp(name, ":path", 5) == 0)
        snprintf(s->path, sizeof(s->path), "%.*s", (int)valuelen, (const char *)value);
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *user)
{
    cp_stream_t *s = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
    if (s == NULL)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
        stream_on_headers(s);
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        if (!s->grpc)
            stream_on_rest_end(s);
        else if (!s->ending)
            stream_end(s, 0, NULL); /* the client is done: so are we */
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    cp_stream_t *s = nghttp2_session_get_stream_user_data(h2, id);
    if (s == NULL || s->ending)
        return 0;
    if (s->in_len + len > CP_MAX_MSG + 5) {
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_ENHANCE_YOUR_CALM);
        return 0;
    }
    s->in = mp_xrealloc(s->in, s->in_len + len + 1);
    memcpy(s->in + s->in_len, data, len);
    s->in_len += len;
    if (s->grpc)
        stream_on_grpc_data(s);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t code, void *user)
{
    cp_stream_t *s = nghttp2_session_get_stream_user_data(h2, id);
    if (s == NULL)
        return 0;
    if (s->grpc && s->xds.label[0] != '\0')
        mp_log_info("%s: stream closed%s", s->xds.label,
                    code != NGHTTP2_NO_ERROR ? " (reset by the client)" : "");
    stream_unlink(user, s);
    stream_free(s);
    return 0;
}

static int h2_start(cp_conn_t *c)
{
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rc = nghttp2_session_server_new(&c->h2, cb, c);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        return MP_ERROR;
    /* Big windows: istiod-sized snapshots are megabytes in one message. */
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16 * 1024 * 1024}};
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 64 * 1024 * 1024);
    return 0;
}

/* ---- connections ---- */

static void conn_close(cp_conn_t *c)
{
    mp_cp_server_t *srv = c->srv;
    for (cp_conn_t **p = &srv->conns; *p != NULL; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    ev_io_stop(srv->loop, &c->io);
    close(c->fd);
    /* nghttp2_session_del does not report the streams it drops: free them here. */
    while (c->streams != NULL) {
        cp_stream_t *s = c->streams;
        c->streams = s->next;
        if (s->grpc && s->xds.label[0] != '\0')
            mp_log_info("%s: stream closed (client disconnected)", s->xds.label);
        stream_free(s);
    }
    if (c->h2 != NULL)
        nghttp2_session_del(c->h2);
    mp_log_debug("conn %d: closed", c->id);
    free(c->in);
    free(c->out);
    free(c);
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    default:
        return "Error";
    }
}

static void h1_reply(cp_conn_t *c, int status, const char *body, bool close)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                     reason(status), status == 200 ? "application/json" : "text/plain",
                     status == 304 ? 0 : strlen(body), close ? "Connection: close\r\n" : "");
    conn_out_append(c, head, (size_t)n);
    if (status != 304)
        conn_out_append(c, body, strlen(body));
    c->close_after_write |= close;
}

/* Answers every complete request in the input (keep-alive, pipelining). */
static int h1_process(cp_conn_t *c)
{
    for (;;) {
        char method[16], path[256];
        size_t body_off, body_len, total;
        bool close = false;
        int rc = mp_cp_http1_parse(c->in, c->in_len, method, sizeof(method), path, sizeof(path),
                                   &body_off, &body_len, &total, &close);
        if (rc == MP_AGAIN)
            return 0;
        if (rc != 0) {
            h1_reply(c, 400, "bad request\n", true);
            return 0;
        }
        char *body = NULL;
        int status = strcmp(method, "POST") == 0
                         ? mp_cp_rest_handle(c->srv->store, path, c->in + body_off, body_len, &body)
                         : (body = mp_xstrdup("POST a DiscoveryRequest\n"), 405);
        h1_reply(c, status, body, close);
        free(body);
        memmove(c->in, c->in + total, c->in_len - total + 1);
        c->in_len -= total;
        if (close)
            return 0;
    }
}

static int conn_on_bytes(cp_conn_t *c, const uint8_t *p, size_t n)
{
    if (c->proto == PROTO_H2) {
        ssize_t rc = nghttp2_session_mem_recv(c->h2, p, n);
        return rc < 0 ? MP_ERROR : 0;
    }
    if (c->in_len + n > 17u * 1024 * 1024)
        return MP_ERROR;
    c->in = mp_xrealloc(c->in, c->in_len + n + 1);
    memcpy(c->in + c->in_len, p, n);
    c->in_len += n;
    c->in[c->in_len] = '\0';
    if (c->proto == PROTO_UNKNOWN) {
        if (c->in_len < 4)
            return 0;
        /* h2c with prior knowledge starts with the preface "PRI * HTTP/2.0". */
        c->proto = memcmp(c->in, "PRI ", 4) == 0 ? PROTO_H2 : PROTO_H1;
        if (c->proto == PROTO_H2) {
            size_t len = c->in_len;
            c->in_len = 0;
            if (h2_start(c) != 0)
                return MP_ERROR;
            return nghttp2_session_mem_recv(c->h2, (uint8_t *)c->in, len) < 0 ? MP_ERROR : 0;
        }
    }
    return c->close_after_write ? 0 : h1_process(c);
}

static bool conn_done(const cp_conn_t *c)
{
    if (c->out_off < c->out_len)
        return false;
    if (c->h2 != NULL)
        return !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2);
    return c->close_after_write;
}

/* Writes what is queued; returns MP_ERROR when the connection must go. */
static int conn_write(cp_conn_t *c)
{
    while (c->h2 != NULL && c->out_len - c->out_off < 64 * 1024) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0)
            return MP_ERROR;
        if (n == 0)
            break;
        conn_out_append(c, data, (size_t)n);
    }
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return MP_AGAIN;
        if (n <= 0)
            return MP_ERROR;
        c->out_off += (size_t)n;
    }
    if (c->h2 != NULL && nghttp2_session_want_write(c->h2))
        return MP_AGAIN; /* more frames than one batch: come back when writable */
    return 0;
}

static void conn_flush(cp_conn_t *c)
{
    int rc = conn_write(c);
    if (rc == MP_ERROR || (rc == 0 && conn_done(c))) {
        conn_close(c);
        return;
    }
    int events = EV_READ | (rc == MP_AGAIN ? EV_WRITE : 0);
    if (c->io.events != events) {
        ev_io_stop(c->srv->loop, &c->io);
        ev_io_set(&c->io, c->fd, events);
        ev_io_start(c->srv->loop, &c->io);
    }
}

static void on_conn_io(struct ev_loop *loop, ev_io *w, int revents)
{
    cp_conn_t *c = w->data;
    if (revents & EV_READ) {
        uint8_t buf[32768];
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            conn_close(c);
            return;
        }
        if (n > 0 && conn_on_bytes(c, buf, (size_t)n) != 0) {
            mp_log_info("conn %d: protocol error, closing", c->id);
            conn_close(c);
            return;
        }
    }
    conn_flush(c);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    mp_cp_server_t *srv = w->data;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        cp_conn_t *c = mp_xcalloc(1, sizeof(*c));
        c->fd = fd;
        c->srv = srv;
        c->id = ++srv->conn_seq;
        c->next = srv->conns;
        srv->conns = c;
        char peer[64];
        mp_net_peer_text(fd, peer, sizeof(peer));
        mp_log_info("conn %d: accepted from %s", c->id, peer);
        ev_io_init(&c->io, on_conn_io, fd, EV_READ);
        c->io.data = c;
        ev_io_start(loop, &c->io);
    }
}

void mp_cp_server_push(mp_cp_server_t *srv)
{
    for (cp_conn_t *c = srv->conns, *next; c != NULL; c = next) {
        next = c->next;
        for (cp_stream_t *s = c->streams; s != NULL; s = s->next)
            if (s->grpc && !s->ending)
                mp_cp_xds_push(&s->xds);
        if (c->h2 != NULL)
            conn_flush(c);
    }
}

static int listen_on(mp_cp_server_t *srv, int i, const char *text, mp_err_t *err)
{
    const char *colon = strrchr(text, ':');
    if (colon == NULL)
        return mp_err_set(err, "%s: expected HOST:PORT", text);
    char host[128];
    snprintf(host, sizeof(host), "%.*s", (int)(colon - text), text);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    mp_addr_t addr;
    if (*end != '\0' || port > 65535 || mp_addr_parse(&addr, host, (uint16_t)port) != 0)
        return mp_err_set(err, "%s: expected IP:PORT", text);
    srv->fds[i] = mp_net_listen(&addr, false, 128, err);
    if (srv->fds[i] < 0)
        return mp_err_prefix(err, "%s: ", text);
    ev_io_init(&srv->accept_io[i], on_accept, srv->fds[i], EV_READ);
    srv->accept_io[i].data = srv;
    ev_io_start(srv->loop, &srv->accept_io[i]);
    return 0;
}

mp_cp_server_t *mp_cp_server_new(struct ev_loop *loop, mp_cp_store_t *store, const char *grpc_addr,
                                 const char *rest_addr, mp_err_t *err)
{
    mp_cp_server_t *srv = mp_xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->store = store;
    srv->fds[0] = srv->fds[1] = -1;
    if (listen_on(srv, 0, grpc_addr, err) != 0 ||
        (rest_addr != NULL && listen_on(srv, 1, rest_addr, err) != 0)) {
        mp_cp_server_free(srv);
        return NULL;
    }
    return srv;
}

void mp_cp_server_free(mp_cp_server_t *srv)
{
    while (srv->conns != NULL)
        conn_close(srv->conns);
    for (int i = 0; i < 2; i++)
        if (srv->fds[i] >= 0) {
            ev_io_stop(srv->loop, &srv->accept_io[i]);
            close(srv->fds[i]);
        }
    free(srv);
}
