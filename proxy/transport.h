/* A connection's byte transport outside the downstream codecs: plain TCP, or TLS through
 * OpenSSL.  The downstream connections (hconn.c) and the upstream ones (upstream.c,
 * h2_upstream.c) share the TLS rules here: OpenSSL's verdicts read as read(2)'s, records that
 * OpenSSL already holds re-arm the read watcher, and a write OpenSSL could not finish is
 * retried with the same bytes. */
#ifndef MAGPIE_TRANSPORT_H
#define MAGPIE_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <ev.h>
#include <openssl/ssl.h>

#include "magpie/buf.h"
#include "magpie/tls.h"

/* A connection's transport, either side.  tls NULL: plain TCP. */
typedef struct mp_tport {
    int fd;
    SSL *tls;           /* owned; freed by mp_tport_close */
    uint32_t tls_retry; /* bytes of an SSL_write that must be retried as they were */
    bool write_shut;    /* mp_tport_shutdown_write finished */
    struct ev_loop *loop;
    ev_io *rio; /* fed a read event when OpenSSL holds decrypted bytes the socket won't signal */
} mp_tport_t;

/* ---- TLS on any connection ---- */

/* SSL_read into b (up to max bytes): bytes, 0 at the end, -1 with errno (EAGAIN included).
 * *pending: OpenSSL holds more than this read took. */
ssize_t mp_tls_io_read(SSL *ssl, mp_buf_t *b, size_t max, bool *pending);
/* SSL_write of b's bytes, consumed as written; *retry carries an unfinished write's length to
 * the next call.  Bytes written, or -1 with errno (EPIPE at the peer's close). */
ssize_t mp_tls_io_write(SSL *ssl, uint32_t *retry, mp_buf_t *b);

/* ---- the upstream transport ---- */

void mp_tport_init(mp_tport_t *t, struct ev_loop *loop, int fd, ev_io *rio);
ssize_t mp_tport_read(mp_tport_t *t, mp_buf_t *b, size_t max);
ssize_t mp_tport_write(mp_tport_t *t, mp_buf_t *b);
/* Ends the writing direction: TLS close_notify, then the TCP FIN.  0 when done, MP_AGAIN when
 * the socket could not take the close_notify yet (call again once it is writable; the FIN waits
 * for it).  Reading goes on: the peer may still send (TLS 1.2 and 1.3 both allow it). */
int mp_tport_shutdown_write(mp_tport_t *t);
/* After the read watcher is started again: let it see what OpenSSL already holds. */
void mp_tport_kick_read(mp_tport_t *t);
/* Frees the SSL and closes the socket. */
void mp_tport_close(mp_tport_t *t);

/* Begins a client handshake with ctx once the TCP connect is done.  addr: the host's address
 * text, which keys session resumption (a session kept for addr and the server name is offered;
 * NULL: none); sni: the server name to send (ctx->sni wins), or NULL; offer_h2: HTTP/2 is
 * offered by ALPN when ctx lists no protocols.  0, or MP_ERROR when no SSL object could be
 * made. */
int mp_tport_tls_connect(mp_tport_t *t, const mp_tls_ctx_t *ctx, const char *addr, const char *sni,
                         bool offer_h2);
/* One step of the client handshake: 0 when done (handshake and session_reused counted),
 * MP_AGAIN with *events (EV_READ or EV_WRITE) to wait for, or MP_ERROR (connection_error
 * counted; why, if not NULL, gets OpenSSL's reason). */
int mp_tport_handshake(mp_tport_t *t, const mp_tls_ctx_t *ctx, int *events, char *why,
                       size_t why_len);

#endif
