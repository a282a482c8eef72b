/* The admin listener on the main thread's loop: accept, read one request with the HTTP/1 parser,
 * answer through mp_admin_handle with Connection: close, close.
 *
 * One request per connection keeps the state machine trivial; admin traffic is a probe every few
 * seconds, not a data path.  Limits are small because the admin port is often reachable by every
 * process in the pod: a request head is capped well below the data path's, the whole request at
 * MAX_REQUEST bytes, the number of open connections at MAX_CONNS, and each connection lives at
 * most CONN_TIMEOUT seconds. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "magpie/admin.h"
#include "magpie/h1.h"
#include "magpie/log.h"

#include "admin_internal.h"

#define MAX_REQUEST (64 * 1024)
#define MAX_CONNS 64
#define CONN_TIMEOUT 10.0

typedef struct admin_server admin_server_t;

typedef enum conn_state {
    CONN_READING, /* waiting for a complete request */
    CONN_WRITING, /* response queued in out; closes when written */
} conn_state_t;

typedef struct admin_conn {
    ev_io io;
    ev_timer timer;
    admin_server_t *srv;
    struct admin_conn *prev, *next;
    conn_state_t state;
    mp_h1_parser_t *parser;
    mp_http_msg_t *req; /* owned once the head is parsed */
    bool complete;
    size_t received;
    mp_buf_t out;
} admin_conn_t;

struct admin_server {
    mp_server_t *s;
    struct ev_loop *loop;
    ev_io accept_io;
    int fd;
    bool stopping; /* mp_admin_stop ran; freed when the last connection closes */
    admin_conn_t *conns;
    unsigned n_conns;
};

static void server_maybe_free(admin_server_t *srv)
{
    if (srv->stopping && srv->conns == NULL)
        free(srv);
}

static void conn_close(admin_conn_t *c)
{
    admin_server_t *srv = c->srv;
    ev_io_stop(srv->loop, &c->io);
    ev_timer_stop(srv->loop, &c->timer);
    close(c->io.fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->n_conns--;
    mp_h1_parser_free(c->parser);
    if (c->req)
        mp_http_msg_free(c->req);
    mp_buf_clear(&c->out);
    free(c);
    server_maybe_free(srv);
}

/* ---- parser callbacks ---- */

static int on_head(void *ctx, mp_http_msg_t *msg)
{
    admin_conn_t *c = ctx;
    if (c->req)
        mp_http_msg_free(c->req);
    c->req = msg;
    return 0;
}

static int on_body(void *ctx, const char *data, size_t len)
{
    return 0; /* no admin endpoint reads a body; its size is bounded by MAX_REQUEST */
}

static int on_trailers(void *ctx, mp_headers_t *trailers)
{
    mp_headers_delete(trailers);
    return 0;
}

static int on_complete(void *ctx)
{
    admin_conn_t *c = ctx;
    c->complete = true;
    return MP_AGAIN; /* one request per connection: anything pipelined after it is ignored */
}

static const mp_h1_callbacks_t parser_cbs = {
    .on_head = on_head,
    .on_body = on_body,
    .on_trailers = on_trailers,
    .on_complete = on_complete,
};

/* ---- responding ---- */

/* Writes what can be written; closes when done or on error.  Returns false if c was closed. */
static bool conn_flush(admin_conn_t *c)
{
    while (mp_buf_len(&c->out) > 0) {
        ssize_t n = mp_buf_write_fd(&c->out, c->io.fd);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return true;
        if (n <= 0)
            break;
    }
    /* Half-close first so that the peer reads the whole response before it sees our FIN; a
     * plain close with unread input could turn into a reset that discards it. */
    shutdown(c->io.fd, SHUT_WR);
    conn_close(c);
    return false;
}

static void conn_respond(admin_conn_t *c, int status, const char *ctype, mp_buf_t *body,
                         bool head_only)
{
    mp_buf_printf(&c->out,
                  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                  "Cache-Control: no-cache, max-age=0\r\nX-Content-Type-Options: nosniff\r\n"
                  "Connection: close\r\n\r\n",
                  status, mp_http_reason(status), ctype, mp_buf_len(body));
    if (!head_only)
        mp_buf_move(&c->out, body, mp_buf_len(body));
    c->state = CONN_WRITING;
    ev_io_stop(c->srv->loop, &c->io);
    ev_io_set(&c->io, c->io.fd, EV_WRITE);
    ev_io_start(c->srv->loop, &c->io);
}

static void conn_respond_text(admin_conn_t *c, int status, const char *text)
{
    mp_buf_t body;
    mp_buf_init(&body);
    mp_buf_append_str(&body, text);
    mp_buf_append(&body, "\n", 1);
    conn_respond(c, status, MP_ADMIN_TEXT, &body, false);
    mp_buf_clear(&body);
}

static void conn_dispatch(admin_conn_t *c)
{
    mp_buf_t body;
    int status = 500;
    const char *ctype = MP_ADMIN_TEXT;
    mp_buf_init(&body);
    const char *method = c->req->method ? c->req->method : "GET";
    mp_log_debug("admin: %s %s", method, c->req->path ? c->req->path : "-");
    mp_admin_handle(c->srv->s, method, c->req->path ? c->req->path : "/", &status, &ctype, &body);
    conn_respond(c, status, ctype, &body, strcmp(method, "HEAD") == 0);
    mp_buf_clear(&body);
}

/* ---- reading ---- */

/* Reads and parses what is available; returns false if c was closed. */
static bool conn_read(admin_conn_t *c)
{
    char buf[4096];
    ssize_t n = read(c->io.fd, buf, sizeof(buf));
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? true : (conn_close(c), false);
    if (n == 0) {
        conn_close(c); /* the peer left before finishing its request */
        return false;
    }
    c->received += (size_t)n;
    if (c->received > MAX_REQUEST) {
        conn_respond_text(c, 413, "request too large");
        return true;
    }
    size_t consumed = 0;
    if (mp_h1_parser_feed(c->parser, buf, (size_t)n, &consumed) == MP_ERROR) {
        conn_respond_text(c, mp_h1_parser_error_status(c->parser),
                          mp_h1_parser_error_reason(c->parser));
        return true;
    }
    if (c->complete && c->req)
        conn_dispatch(c);
    return true;
}

static void on_conn_io(struct ev_loop *loop, ev_io *w, int revents)
{
    admin_conn_t *c = (admin_conn_t *)w;
    if (c->state == CONN_READING) {
        if (!conn_read(c))
            return;
    }
    /* A response just queued is tried at once: most fit in the socket buffer. */
    if (c->state == CONN_WRITING)
        conn_flush(c);
}

static void on_conn_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    admin_conn_t *c = (admin_conn_t *)((char *)w - offsetof(admin_conn_t, timer));
    mp_log_debug("admin: closing a connection idle for %.0f s", CONN_TIMEOUT);
    conn_close(c);
}

/* ---- accepting ---- */

static void conn_new(admin_server_t *srv, int fd)
{
    mp_h1_limits_t limits;
    mp_h1_limits_default(&limits);
    limits.max_headers_bytes = 16 * 1024;
    limits.max_headers_count = 64;
    limits.max_request_line = 8 * 1024;
    admin_conn_t *c = mp_xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->parser = mp_h1_parser_new(MP_H1_REQUEST, &limits, &parser_cbs, c);
    mp_buf_init(&c->out);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->n_conns++;
    ev_io_init(&c->io, on_conn_io, fd, EV_READ);
    ev_timer_init(&c->timer, on_conn_timeout, CONN_TIMEOUT, 0.);
    ev_io_start(srv->loop, &c->io);
    ev_timer_start(srv->loop, &c->timer);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    admin_server_t *srv = (admin_server_t *)((char *)w - offsetof(admin_server_t, accept_io));
    for (;;) {
        int fd = accept4(srv->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                mp_log_warn("admin: accept: %s", strerror(errno));
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;
        }
        if (srv->n_conns >= MAX_CONNS) {
            close(fd); /* shed rather than queue: a probe will retry */
            continue;
        }
        conn_new(srv, fd);
    }
}

static int listen_on(const mp_addr_t *addr, mp_err_t *err)
{
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return mp_err_set(err, "admin: socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0) {
        mp_err_set(err, "admin: bind %s: %s", addr->text, strerror(errno));
        goto fail_close;
    }
    if (listen(fd, 128) != 0) {
        mp_err_set(err, "admin: listen %s: %s", addr->text, strerror(errno));
        goto fail_close;
    }
    return fd;

fail_close:
    close(fd);
    return MP_ERROR;
}

int mp_admin_start(mp_server_t *s, const mp_addr_t *addr, mp_err_t *err)
{
    int fd = listen_on(addr, err);
    if (fd < 0)
        return MP_ERROR;
    admin_server_t *srv = mp_xcalloc(1, sizeof(*srv));
    srv->s = s;
    srv->loop = s->loop;
    srv->fd = fd;
    ev_io_init(&srv->accept_io, on_accept, fd, EV_READ);
    ev_io_start(srv->loop, &srv->accept_io);
    s->admin = srv;
    mp_log_info("admin: listening on %s", addr->text);
    return 0;
}

/* Stops accepting at once.  Connections with a response queued (the /quitquitquit that led
 * here, typically) finish writing it; idle ones are closed.  This can run from inside
 * mp_admin_handle, on a connection's own callback, so that connection is never freed here. */
void mp_admin_stop(mp_server_t *s)
{
    admin_server_t *srv = s->admin;
    if (srv == NULL)
        return;
    s->admin = NULL;
    ev_io_stop(srv->loop, &srv->accept_io);
    close(srv->fd);
    srv->stopping = true;
    for (admin_conn_t *c = srv->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_READING && !c->complete)
            conn_close(c);
    }
    if (srv->conns == NULL)
        free(srv);
}
