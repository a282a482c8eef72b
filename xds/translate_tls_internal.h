/* Shared by translate_tls.c and translate_sds.c: the TLS message types and the file-based SDS
 * lookup.  Main thread. */
#ifndef MAGPIE_TRANSLATE_TLS_INTERNAL_H
#define MAGPIE_TRANSLATE_TLS_INTERNAL_H

#include "translate_internal.h"

#include "magpie/tls.h"

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig pb_sds_config_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret pb_secret_t;

/* The Secret an SdsSecretConfig names, read from the file its sds_config points at; the caller
 * frees it with protobuf_c_message_free_unpacked.  The file is recorded as a source of ctx (for
 * rotation) as soon as its path is known, so a context whose file is broken later still watches
 * it.  NULL with err relative to the SdsSecretConfig ("sds_config: no secret named \"x\" in
 * \"/path\""). */
pb_secret_t *mp_translate__sds_secret(const pb_sds_config_t *sc, mp_tls_ctx_t *ctx, mp_err_t *err);

/* Builds a new, finished context from ctx's recipe (the TransportSocket it was translated from),
 * re-reading every SDS file and certificate file now; its ssl.* stat ids are ctx's.  NULL with
 * err (relative to the TransportSocket) when the files no longer make a valid context.  Main
 * thread. */
mp_tls_ctx_t *mp_translate__tls_rebuild(const mp_tls_ctx_t *ctx, mp_err_t *err);

/* Records the current contents (SHA-256) of every source of ctx, so that the watcher rotates
 * only on a real change.  Called when the recipe is kept, right after the files were read.
 * (sds_watch.c) */
void mp_sds__digest_sources(mp_tls_ctx_t *ctx);

#endif
