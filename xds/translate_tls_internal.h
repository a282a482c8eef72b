/* Shared by translate_tls.c and translate_sds.c: the TLS message types and the file-based SDS
 * lookup.  Main thread. */
#ifndef MAGPIE_TRANSLATE_TLS_INTERNAL_H
#define MAGPIE_TRANSLATE_TLS_INTERNAL_H

#include "translate_internal.h"

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig pb_sds_config_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret pb_secret_t;

/* The Secret an SdsSecretConfig names, read from the file its sds_config points at; the caller
 * frees it with protobuf_c_message_free_unpacked.  NULL with err relative to the
 * SdsSecretConfig ("sds_config: no secret named \"x\" in \"/path\""). */
pb_secret_t *mp_translate__sds_secret(const pb_sds_config_t *sc, mp_err_t *err);

#endif
