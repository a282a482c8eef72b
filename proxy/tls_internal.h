/* Shared by proxy/tls_ctx.c and proxy/tls_verify.c; not for other modules. */
#ifndef MAGPIE_TLS_INTERNAL_H
#define MAGPIE_TLS_INTERNAL_H

#include "magpie/tls.h"

/* Drops one reference on ctx (include/magpie/tls.h, "Generations"); the last frees it.  Any
 * thread: an SSL_CTX's ex_data free callback calls it wherever the SSL_CTX dies. */
void mp_tls__ctx_unref(mp_tls_ctx_t *ctx);

/* Session resumption (tls_session.c).  A cache keeping max_keys (>= 1) sessions per peer, one
 * reference held by the caller; the unref is a no-op on NULL.  Any thread. */
mp_tls_sessions_t *mp_tls__sessions_new(uint32_t max_keys);
void mp_tls__sessions_unref(mp_tls_sessions_t *c);
/* SSL_CTX_sess_set_new_cb's callback for client contexts. */
int mp_tls__on_new_session(SSL *ssl, SSL_SESSION *s);

#endif
