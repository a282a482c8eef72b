/* TLS contexts, built by the main thread from Envoy's DownstreamTlsContext and
 * UpstreamTlsContext (xds/translate_tls.c, proxy/tls_ctx.c) and used by workers to make
 * connections.  A context belongs to the snapshot that built it and is immutable; its SSL_CTX
 * may be used from any worker (OpenSSL allows SSL_new on a shared SSL_CTX), and a connection that
 * may outlive the snapshot takes its own reference with SSL_CTX_up_ref. */
#ifndef MAGPIE_TLS_H
#define MAGPIE_TLS_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "magpie/config.h"

typedef enum mp_san_type {
    MP_SAN_DNS,
    MP_SAN_URI,
    MP_SAN_EMAIL,
    MP_SAN_IP,
} mp_san_type_t;

/* One of match_typed_subject_alt_names (or the deprecated match_subject_alt_names, which
 * matches DNS, URI and email SANs alike: `any_type`). */
typedef struct mp_san_matcher {
    mp_san_type_t type;
    bool any_type;
    mp_string_matcher_t match;
} mp_san_matcher_t;

/* ssl.* counters, per listener ("listener.<addr>.ssl.") or per cluster ("cluster.<name>.ssl."). */
typedef struct mp_tls_stats {
    mp_stat_id_t handshake, connection_error, fail_verify_error, fail_verify_san, no_certificate,
        session_reused;
} mp_tls_stats_t;

typedef struct mp_tls_ctx {
    SSL_CTX *ssl;             /* ready for SSL_new; owned (SSL_CTX_free with the snapshot) */
    bool server;              /* DownstreamTlsContext (accepts) or UpstreamTlsContext */
    bool require_client_cert; /* server: no client certificate -> handshake refused */
    bool verify_peer;         /* a trusted CA is configured: the peer's chain is verified */
    mp_san_matcher_t *sans;   /* the peer's certificate must match one; none: any */
    uint32_t n_sans;
    char *sni;     /* upstream: server name to send, or NULL */
    uint8_t *alpn; /* ALPN protocols, wire format (length-prefixed), or NULL */
    uint32_t alpn_len;
    char *cert_desc;        /* where the certificate came from (path or "<inline>"), for /certs */
    int64_t cert_not_after; /* the leaf's notAfter (Unix seconds), for /certs; 0: none */
    mp_tls_stats_t stats;
} mp_tls_ctx_t;

/* The ssl.* stats of a context: registered under prefix ("listener.127.0.0.1_443." style). */
void mp_tls_stats_register(mp_tls_stats_t *st, const char *prefix);

/* Whether the peer certificate of a finished handshake matches one of ctx's SAN matchers
 * (true when there are none).  Pure; used by the verify callback and unit-tested. */
bool mp_tls_peer_san_ok(const mp_tls_ctx_t *ctx, X509 *peer);

void mp_tls_ctx_free(mp_tls_ctx_t *ctx);

#endif
