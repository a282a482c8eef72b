/* Shared by proxy/tls_ctx.c and proxy/tls_verify.c; not for other modules. */
#ifndef MAGPIE_TLS_INTERNAL_H
#define MAGPIE_TLS_INTERNAL_H

#include "magpie/tls.h"

/* Drops one reference on ctx (include/magpie/tls.h, "Generations"); the last frees it.  Any
 * thread: an SSL_CTX's ex_data free callback calls it wherever the SSL_CTX dies. */
void mp_tls__ctx_unref(mp_tls_ctx_t *ctx);

#endif
