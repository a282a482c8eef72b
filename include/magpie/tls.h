/* TLS contexts, built by the main thread from Envoy's DownstreamTlsContext and
 * UpstreamTlsContext (xds/translate_tls.c, proxy/tls_ctx.c) and used by workers to make
 * connections.  A context belongs to the snapshot that built it.  Its settings are immutable;
 * its SSL_CTX is not: when a certificate from file-based SDS changes, the main thread rebuilds
 * the context from its recipe and swaps the new SSL_CTX in (mp_tls_ctx_publish, xds/sds_watch.c).
 * Workers therefore never read ctx->ssl directly: mp_tls_ctx_acquire gives them a referenced
 * SSL_CTX for SSL_new, and the SSL object keeps its own reference, so a connection made before a
 * rotation keeps working on the old certificate while new handshakes use the new one.
 *
 * Generations: every SSL_CTX points (ex_data) at the mp_tls_ctx_t whose SAN matchers, flags and
 * stats its callbacks use, and holds a reference on it.  The first SSL_CTX points at the context
 * itself; a rotated one at the freshly built context it came from, which lives exactly as long as
 * that SSL_CTX (the last SSL using it may be freed on a worker, after the swap). */
#ifndef MAGPIE_TLS_H
#define MAGPIE_TLS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "magpie/common.h"
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

/* Where a context's certificate or trusted CA came from, when that can change: an SDS file (or
 * a file an SDS secret names).  The watcher re-reads these. */
typedef struct mp_tls_source {
    char *path;         /* the file (as configured) */
    char *secret;       /* the SdsSecretConfig name it feeds, for sds.<name>.* stats and logs */
    uint8_t digest[32]; /* SHA-256 of its contents when last looked at (watcher's business) */
} mp_tls_source_t;

/* Upstream sessions kept for resumption (proxy/tls_session.c): opaque, refcounted. */
typedef struct mp_tls_sessions mp_tls_sessions_t;

typedef struct mp_tls_ctx {
    /* The current SSL_CTX; swapped by the main thread under lock, so workers take it with
     * mp_tls_ctx_acquire.  Owned: one reference.  Building code (main thread, before the context
     * is published) may use it directly. */
    SSL_CTX *ssl;
    pthread_mutex_t lock;
    atomic_uint refs;         /* the owner's, plus one per SSL_CTX whose ex_data points here */
    bool server;              /* DownstreamTlsContext (accepts) or UpstreamTlsContext */
    bool require_client_cert; /* server: no client certificate -> handshake refused */
    bool verify_peer;         /* a trusted CA is configured: the peer's chain is verified */
    mp_san_matcher_t *sans;   /* the peer's certificate must match one; none: any */
    uint32_t n_sans;
    char *sni;     /* upstream: server name to send, or NULL */
    uint8_t *alpn; /* ALPN protocols, wire format (length-prefixed), or NULL */
    uint32_t alpn_len;
    char *cert_desc;        /* where the certificate came from (path or "<inline>"), for /certs */
    char *ca_desc;          /* where the trusted CAs came from, for /certs; NULL: none */
    int64_t cert_not_after; /* the leaf's notAfter (Unix seconds), for /certs; 0: none */
    bool allow_expired;     /* allow_expired_certificate: an expired peer chain is accepted */
    bool accept_untrusted;  /* trust_chain_verification ACCEPT_UNTRUSTED: failures only count */
    uint32_t max_session_keys; /* upstream: sessions to keep for resumption (0: none) */
    /* upstream with max_session_keys > 0: the sessions to resume, per peer; one reference.
     * Swapped with the SSL_CTX (under lock) by mp_tls_ctx_publish. */
    mp_tls_sessions_t *sessions;
    mp_tls_stats_t stats;
    /* Rotation (main thread only): the packed TransportSocket it was built from, the stat
     * prefix, the files it depends on and a digest of their contents when last tried. */
    uint8_t *recipe;
    size_t recipe_len;
    char *stat_prefix;
    mp_tls_source_t *sources;
    uint32_t n_sources;
} mp_tls_ctx_t;

/* Counting: the context's own callbacks count fail_verify_error, fail_verify_san and
 * no_certificate (a handshake refused for want of a client certificate).  handshake,
 * connection_error and session_reused are the data path's to count on its connections. */

/* The ssl.* stats of a context: registered under prefix ("listener.127.0.0.1_443." style). */
void mp_tls_stats_register(mp_tls_stats_t *st, const char *prefix);

/* Whether the peer certificate of a finished handshake matches one of ctx's SAN matchers
 * (true when there are none).  Pure; used by the verify callback and unit-tested. */
bool mp_tls_peer_san_ok(const mp_tls_ctx_t *ctx, X509 *peer);

/* Drops the owner's reference: the current SSL_CTX is released, and ctx itself is freed once no
 * SSL_CTX points at it any more (possibly later, on a worker).  NULL is a no-op.  Main thread. */
void mp_tls_ctx_free(mp_tls_ctx_t *ctx);

/* The current SSL_CTX with a reference taken (SSL_CTX_free it after SSL_new, which takes its
 * own).  Never NULL for a finished context.  Any thread; a short mutex, no allocation. */
SSL_CTX *mp_tls_ctx_acquire(const mp_tls_ctx_t *ctx);

/* Rotation: moves fresh's SSL_CTX into ctx, so that new handshakes use it at once, and takes
 * over fresh's certificate description and expiry.  fresh (built from the same recipe, finished)
 * stays alive as long as its SSL_CTX does, for that SSL_CTX's callbacks; the caller no longer
 * owns it.  The previous SSL_CTX is released (connections holding it keep it).  Main thread. */
void mp_tls_ctx_publish(mp_tls_ctx_t *ctx, mp_tls_ctx_t *fresh);

/* Session resumption (upstream contexts, Envoy's max_session_keys): a new SSL on ctx's current
 * SSL_CTX, offered the newest session kept for peer ("addr|sni": sessions are only offered to
 * the host that issued them) and tagged so that the sessions its handshake yields are kept for
 * peer, up to max_session_keys per peer (the oldest goes).  A TLS 1.3 session is used once, a
 * TLS 1.2 one until replaced.  A rotation starts an empty cache: a session verified under the
 * old trust settings is never resumed under the new.  NULL when OpenSSL cannot make the SSL, or
 * for peer NULL or a context without a cache, a plain SSL_new.  Any thread; short mutexes. */
SSL *mp_tls_client_ssl(const mp_tls_ctx_t *ctx, const char *peer);
/* Sessions kept for peer (tests). */
uint32_t mp_tls_sessions_count(mp_tls_sessions_t *cache, const char *peer);

/* Records that ctx depends on path, which feeds SDS secret `secret` (the SDS file itself, or a
 * file the secret names).  A path already recorded is ignored.  Main thread, while building. */
void mp_tls_ctx_add_source(mp_tls_ctx_t *ctx, const char *path, const char *secret);

/* ---- building a context (main thread; xds/translate_tls.c drives these) ----
 * Each setter returns 0, or MP_ERROR with err set to a message without a field path (the caller
 * prepends the field); what names a file or "<inline>" for messages. */

/* A new context with its SSL_CTX (TLS_server_method or TLS_client_method), TLS 1.2 to 1.3,
 * partial writes, moving write buffers and released idle buffers.  NULL with err set. */
mp_tls_ctx_t *mp_tls_ctx_new(bool server, mp_err_t *err);
/* Versions as TLS1_2_VERSION etc.; 0 leaves the default.  min above max is an error. */
int mp_tls_ctx_set_versions(mp_tls_ctx_t *ctx, int min, int max, mp_err_t *err);
/* TLS 1.2 cipher names (OpenSSL or BoringSSL spelling; "[A|B]" groups are flattened in order).
 * An unknown name fails as "[i]: unknown cipher suite \"X\"". */
int mp_tls_ctx_set_ciphers(mp_tls_ctx_t *ctx, char *const *names, size_t n, mp_err_t *err);
/* ECDH groups ("X25519", "P-256", ...); an unknown one fails as "[i]: ...". */
int mp_tls_ctx_set_curves(mp_tls_ctx_t *ctx, char *const *names, size_t n, mp_err_t *err);
int mp_tls_ctx_set_sigalgs(mp_tls_ctx_t *ctx, char *const *names, size_t n, mp_err_t *err);
/* The certificate chain (leaf first) and its private key, PEM; password may be NULL.  Errors
 * are prefixed "certificate_chain: " or "private_key: " and name chain_what / key_what.  Sets
 * cert_desc and cert_not_after. */
int mp_tls_ctx_use_cert(mp_tls_ctx_t *ctx, const char *chain, size_t chain_len,
                        const char *chain_what, const char *key, size_t key_len,
                        const char *key_what, const char *password, mp_err_t *err);
/* Trusted CA certificates (PEM, one or more) for verifying the peer; sets verify_peer. */
int mp_tls_ctx_set_trusted_ca(mp_tls_ctx_t *ctx, const char *pem, size_t len, const char *what,
                              mp_err_t *err);
/* ALPN protocol names (1..255 bytes each) -> ctx->alpn; "[i]: ..." on a bad one. */
int mp_tls_ctx_set_alpn(mp_tls_ctx_t *ctx, char *const *protos, size_t n, mp_err_t *err);
/* Takes ownership of sans (n entries, mp_xmalloc'd), appended to ctx's list. */
void mp_tls_ctx_add_sans(mp_tls_ctx_t *ctx, mp_san_matcher_t *sans, uint32_t n);
/* Last step: verification mode and callback, ALPN selection, session id context.  A server with
 * require_client_cert but no trusted CA, or SAN matchers without a trusted CA, is an error. */
int mp_tls_ctx_finish(mp_tls_ctx_t *ctx, mp_err_t *err);

/* ---- reading certificates (admin /certs, rotation logs) ---- */

/* x's serial number as lowercase hex without separators (Envoy's /certs spelling). */
void mp_tls_x509_serial(X509 *x, char *out, size_t cap);
/* An ASN1_TIME as Unix seconds; 0 when unreadable. */
int64_t mp_tls_asn1_unix(const ASN1_TIME *t);

#endif
