/* Plain and TLS byte transports (proxy/transport.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "magpie/stats.h"
#include "transport.h"

/* OpenSSL's verdict as read(2) would give it: bytes, 0 at the end, -1 with errno. */
static ssize_t ssl_result(SSL *ssl, int ok, size_t n)
{
    if (ok == 1)
        return (ssize_t)n;
    switch (SSL_get_error(ssl, 0)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0; /* close_notify */
    case SSL_ERROR_SYSCALL:
        if (errno == 0)
            return 0; /* the peer closed without close_notify: an end all the same */
        return -1;
    default:
        errno = EPROTO;
        return -1;
    }
}

static ssize_t ssl_source(void *ctx, char *dst, size_t len)
{
    size_t n = 0;
    errno = 0;
    int ok = SSL_read_ex(ctx, dst, len, &n);
    return ssl_result(ctx, ok, n);
}

ssize_t mp_tls_io_read(SSL *ssl, mp_buf_t *b, size_t max, bool *pending)
{
    ERR_clear_error();
    ssize_t n = mp_buf_read_from(b, max, ssl_source, ssl);
    /* Records OpenSSL already took off the socket raise no readiness event of their own. */
    *pending = n > 0 && SSL_has_pending(ssl);
    return n;
}

/* Small segments are gathered into one record; a write OpenSSL could not finish is retried
 * with the same bytes, as it requires. */
ssize_t mp_tls_io_write(SSL *ssl, uint32_t *retry, mp_buf_t *b)
{
    char chunk[16384];
    ssize_t total = 0;
    ERR_clear_error();
    while (mp_buf_len(b) > 0) {
        size_t len = *retry ? *retry : mp_buf_copy_out(b, chunk, sizeof(chunk));
        if (*retry)
            mp_buf_copy_out(b, chunk, len);
        size_t n = 0;
        errno = 0;
        int ok = SSL_write_ex(ssl, chunk, len, &n);
        ssize_t r = ssl_result(ssl, ok, n);
        if (r <= 0) {
            *retry = (r < 0 && errno == EAGAIN) ? (uint32_t)len : 0;
            if (r == 0)
                errno = EPIPE;
            return total > 0 ? total : -1;
        }
        *retry = 0;
        mp_buf_consume(b, (size_t)r);
        total += r;
    }
    return total;
}

void mp_tport_init(mp_tport_t *t, struct ev_loop *loop, int fd, ev_io *rio)
{
    memset(t, 0, sizeof(*t));
    t->fd = fd;
    t->loop = loop;
    t->rio = rio;
}

ssize_t mp_tport_read(mp_tport_t *t, mp_buf_t *b, size_t max)
{
    if (t->tls == NULL)
        return mp_buf_read_fd(b, t->fd, max);
    bool pending = false;
    ssize_t n = mp_tls_io_read(t->tls, b, max, &pending);
    if (pending)
        mp_tport_kick_read(t);
    return n;
}

ssize_t mp_tport_write(mp_tport_t *t, mp_buf_t *b)
{
    if (t->tls == NULL)
        return mp_buf_write_fd(b, t->fd);
    return mp_tls_io_write(t->tls, &t->tls_retry, b);
}

int mp_tport_shutdown_write(mp_tport_t *t)
{
    if (t->write_shut)
        return 0;
    if (t->tls != NULL) {
        ERR_clear_error();
        int r = SSL_shutdown(t->tls);
        /* A full socket leaves the alert unsent (the next call sends it); a FIN now would cut
         * it off, and the peer would see a truncation instead of an end.  Only one call may
         * follow a sent close_notify: once it is out, SSL_shutdown would go on to read the
         * peer's, consuming the application data still in flight. */
        if (r < 0 && SSL_get_error(t->tls, r) == SSL_ERROR_WANT_WRITE)
            return MP_AGAIN;
    }
    shutdown(t->fd, SHUT_WR);
    t->write_shut = true;
    return 0;
}

void mp_tport_kick_read(mp_tport_t *t)
{
    if (t->tls != NULL && t->rio != NULL && ev_is_active(t->rio) && SSL_has_pending(t->tls))
        ev_feed_event(t->loop, t->rio, EV_READ);
}

void mp_tport_close(mp_tport_t *t)
{
    if (t->tls != NULL) {
        /* OpenSSL marks the session of a connection freed without a close_notify sent as not
         * resumable, and a client's session is the one in our cache (tls_session.c), shared
         * with later connections.  Upstream connections end without close_notify all the time
         * (idle timeouts, Connection: close, resets); like Envoy, the session stays good. */
        if (!SSL_is_server(t->tls))
            SSL_set_shutdown(t->tls, SSL_get_shutdown(t->tls) | SSL_SENT_SHUTDOWN);
        SSL_free(t->tls);
        t->tls = NULL;
    }
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
}

static const unsigned char alpn_h2[] = {2, 'h', '2'};

int mp_tport_tls_connect(mp_tport_t *t, const mp_tls_ctx_t *ctx, const char *addr, const char *sni,
                         bool offer_h2)
{
    const char *name = ctx->sni != NULL ? ctx->sni : sni;
    /* A session is only offered to the host, and under the name, it was made with. */
    char peer[sizeof(((mp_addr_t *)0)->text) + 256];
    snprintf(peer, sizeof(peer), "%s|%s", addr != NULL ? addr : "", name != NULL ? name : "");
    SSL *ssl = mp_tls_client_ssl(ctx, addr != NULL ? peer : NULL); /* the current certificate */
    if (ssl == NULL || SSL_set_fd(ssl, t->fd) != 1) {
        SSL_free(ssl);
        return MP_ERROR;
    }
    SSL_set_connect_state(ssl);
    if (name != NULL && name[0] != '\0')
        SSL_set_tlsext_host_name(ssl, name);
    /* An h2 cluster must be asked for h2: a server that sees no ALPN may well speak HTTP/1.1. */
    if (offer_h2 && ctx->alpn == NULL)
        SSL_set_alpn_protos(ssl, alpn_h2, sizeof(alpn_h2));
    t->tls = ssl;
    t->tls_retry = 0;
    return 0;
}

int mp_tport_handshake(mp_tport_t *t, const mp_tls_ctx_t *ctx, int *events, char *why,
                       size_t why_len)
{
    ERR_clear_error();
    int r = SSL_do_handshake(t->tls);
    if (r == 1) {
        mp_stats_inc(ctx->stats.handshake);
        if (SSL_session_reused(t->tls))
            mp_stats_inc(ctx->stats.session_reused);
        return 0;
    }
    int e = SSL_get_error(t->tls, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *events = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
        return MP_AGAIN;
    }
    /* Certificate verdicts were counted by the context's verify callback. */
    mp_stats_inc(ctx->stats.connection_error);
    if (why != NULL && why_len > 0) {
        unsigned long err = ERR_peek_last_error();
        if (err != 0)
            ERR_error_string_n(err, why, why_len);
        else
            snprintf(why, why_len, "%s", e == SSL_ERROR_SYSCALL ? strerror(errno) : "closed");
    }
    return MP_ERROR;
}
