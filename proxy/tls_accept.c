/* The server side of a TLS handshake on an accepted connection.  While it runs, the connection
 * is an mp_hconn of its own (counted, drained and closed like any other); once it is done, the
 * codec the client chose by ALPN takes the connection over (h2: HTTP/2; http/1.1 or nothing:
 * HTTP/1.1, or HTTP/2 by its preface with codec AUTO) and reads through TLS from then on.  On
 * a TCP proxy listener the TCP proxy takes it instead, whatever ALPN chose. */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "magpie/log.h"
#include "magpie/stats.h"
#include "magpie/tls.h"
#include "http_internal.h"
#include "tcp_proxy.h"
#include "rbac_network.h"

#define HANDSHAKE_TIMEOUT_S 10.0 /* Envoy's transport_socket_connect_timeout default */

typedef struct tls_hs {
    mp_hconn_t c;
    ev_io io;
    ev_timer timer;
    SSL *ssl;
} tls_hs_t;

static void free_hs(mp_grave_t *g)
{
    tls_hs_t *hs = (tls_hs_t *)g;
    if (hs->c.config != NULL)
        mp_config_unref(hs->c.config);
    free(hs);
}

/* Stops the handshake's watchers and buries it; the socket and SSL stay with a codec that took
 * them over, or are closed (fini) when the handshake failed. */
static void hs_end(tls_hs_t *hs, bool taken_over, const char *why)
{
    struct ev_loop *loop = hs->c.w->loop;
    ev_io_stop(loop, &hs->io);
    ev_timer_stop(loop, &hs->timer);
    if (!taken_over) {
        mp_log_debug("downstream %s: TLS handshake: %s", hs->c.peer, why);
        mp_hconn_fini(&hs->c);
    }
    mp_worker_bury(hs->c.w, &hs->c.grave, free_hs);
}

static void hs_close(mp_hconn_t *c, const char *why)
{
    tls_hs_t *hs = (tls_hs_t *)c;
    if (!c->dead)
        hs_end(hs, false, why);
}

static void hs_drain(mp_hconn_t *c)
{
    hs_close(c, "draining");
}

static const mp_down_ops_t hs_ops = {
    .drain = hs_drain,
    .close = hs_close,
};

static bool alpn_is(SSL *ssl, const char *proto)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &p, &len);
    return len == strlen(proto) && memcmp(p, proto, len) == 0;
}

static void handshake_done(tls_hs_t *hs)
{
    mp_stats_inc(hs->c.chain->tls->stats.handshake);
    if (SSL_session_reused(hs->ssl))
        mp_stats_inc(hs->c.chain->tls->stats.session_reused);
    /* The identity is parsed here only when a network RBAC filter needs it. */
    if (hs->c.chain->n_rbac_filters > 0 &&
        !mp_rbac_network_allows(hs->c.listener, hs->c.chain, hs->c.tp.fd,
                                mp_tls_ident_get(mp_hconn_ident(&hs->c)))) {
        hs_end(hs, false, "denied by network RBAC");
        return;
    }
    SSL *ssl = hs->ssl; /* already the connection's transport (hs->c.tp.tls) */
    hs->ssl = NULL;
    ev_io_stop(hs->c.w->loop, &hs->io);
    ev_timer_stop(hs->c.w->loop, &hs->timer);
    if (hs->c.chain->tcp_proxy != NULL) {
        mp_tcp_proxy_accept_tport(&hs->c);
    } else if (alpn_is(ssl, "h2") || hs->c.hcm->codec_type == MP_CODEC_HTTP2) {
        mp_buf_t none;
        mp_buf_init(&none);
        mp_h2_takeover(&hs->c, &none, NULL, NULL);
    } else {
        mp_dconn_takeover(&hs->c);
    }
    hs_end(hs, true, NULL);
}

static void step(tls_hs_t *hs)
{
    ERR_clear_error();
    int r = SSL_do_handshake(hs->ssl);
    if (r == 1) {
        handshake_done(hs);
        return;
    }
    int e = SSL_get_error(hs->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        struct ev_loop *loop = hs->c.w->loop;
        ev_io_stop(loop, &hs->io);
        ev_io_set(&hs->io, hs->c.tp.fd, e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE);
        ev_io_start(loop, &hs->io);
        return;
    }
    /* Certificate verdicts were counted by the verify callback; this counts the failure. */
    mp_stats_inc(hs->c.chain->tls->stats.connection_error);
    char why[160];
    ERR_error_string_n(ERR_peek_last_error(), why, sizeof(why));
    hs_end(hs, false, why);
}

static void on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    step(io->data);
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    tls_hs_t *hs = t->data;
    mp_stats_inc(hs->c.chain->tls->stats.connection_error);
    hs_end(hs, false, "handshake timeout");
}

void mp_tls_accept(mp_worker_t *w, const mp_listener_t *l, const mp_filter_chain_t *fc, int fd)
{
    tls_hs_t *hs = mp_xcalloc(1, sizeof(*hs));
    mp_hconn_init(&hs->c, &hs_ops, w, l, fc, fd);
    SSL_CTX *sc = mp_tls_ctx_acquire(fc->tls); /* the current certificate, even mid-rotation */
    hs->ssl = SSL_new(sc);
    SSL_CTX_free(sc);
    if (hs->ssl == NULL || SSL_set_fd(hs->ssl, fd) != 1) {
        if (hs->ssl != NULL)
            SSL_free(hs->ssl);
        hs->ssl = NULL;
        hs_end(hs, false, "cannot create an SSL object");
        return;
    }
    SSL_set_accept_state(hs->ssl);
    /* The connection's transport from now on; fini frees it if the handshake fails. */
    hs->c.tp.tls = hs->ssl;
    ev_io_init(&hs->io, on_io, fd, EV_READ);
    hs->io.data = hs;
    ev_timer_init(&hs->timer, on_timeout, HANDSHAKE_TIMEOUT_S, 0.0);
    hs->timer.data = hs;
    ev_timer_start(w->loop, &hs->timer);
    step(hs);
}
