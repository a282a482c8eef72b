/* Who is at each end of a TLS connection: the facts that x-forwarded-client-cert, the access log
 * (%DOWNSTREAM_PEER_URI_SAN% and friends) and authorization read from the certificates.
 *
 * One mp_tls_ident_t lives in each downstream connection that may carry TLS (proxy/http_internal.h
 * mp_hconn_t.ident; any other connection kind may embed one the same way).  It is filled on first
 * use and kept for the connection's life, so requests after the first pay nothing: the
 * certificates of a connection never change after its handshake.  Worker thread only (the
 * connection's); not shared, no locking. */
#ifndef MAGPIE_TLS_IDENT_H
#define MAGPIE_TLS_IDENT_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

typedef struct mp_tls_ident {
    SSL *ssl;        /* borrowed from the connection; NULL: the connection is not TLS */
    bool loaded;     /* the facts below are filled (mp_tls_ident_get) */
    bool pem_loaded; /* peer_cert_url and peer_chain_url are filled (mp_tls_ident_get_pem) */
    /* The peer (for a listener: the client). */
    bool peer_cert;       /* it presented a certificate: the connection is mutual TLS */
    char **peer_uri_sans; /* URI SANs in certificate order (a SPIFFE ID is one) */
    uint32_t n_peer_uri_sans;
    char **peer_dns_sans; /* DNS SANs in certificate order */
    uint32_t n_peer_dns_sans;
    char *peer_uri_joined; /* the URI SANs joined by ',' (Envoy's log form); NULL when none */
    char *peer_subject;    /* RFC 2253 ("CN=client,O=acme"); NULL without a certificate */
    char *peer_serial;     /* lower-case hex, no leading zeros; NULL without a certificate */
    char peer_sha256[65];  /* lower-case hex SHA-256 of the leaf's DER; "" without one */
    char *peer_cert_url;   /* URL-encoded PEM of the leaf (after mp_tls_ident_get_pem) */
    char *peer_chain_url;  /* URL-encoded PEM of leaf then the chain it sent */
    /* This end (the certificate magpie presented on the connection). */
    char **local_uri_sans;
    uint32_t n_local_uri_sans;
    char *local_uri_joined; /* joined by ','; NULL when none */
    char *local_subject;    /* RFC 2253, or NULL */
    /* The session. */
    const char *version; /* "TLSv1.3", "TLSv1.2" (OpenSSL's static strings) */
    const char *cipher;  /* "TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256", ... */
    char *session_id;    /* lower-case hex, or NULL when the session has none */
} mp_tls_ident_t;

/* Facts of id's connection, computed from id->ssl on the first call and cached; NULL when
 * id is NULL or its connection is not TLS.  SAN values holding control characters, NUL or
 * bytes above 0x7e are left out, so every string here is safe in a header or a log line.
 * Worker thread; call only after the handshake finished. */
const mp_tls_ident_t *mp_tls_ident_get(mp_tls_ident_t *id);
/* As mp_tls_ident_get, plus the URL-encoded PEM of the peer's certificate and chain (kept
 * apart: several kilobytes that only XFCC's Cert and Chain need). */
const mp_tls_ident_t *mp_tls_ident_get_pem(mp_tls_ident_t *id);
/* Frees what the cache holds and empties it (ssl stays).  The SSL is not touched. */
void mp_tls_ident_fini(mp_tls_ident_t *id);

/* The principal an authorization rule names by `principal_name`, as Envoy chooses it: the
 * first URI SAN, else the first DNS SAN, else the subject; NULL without a peer certificate. */
const char *mp_tls_ident_principal(const mp_tls_ident_t *id);

#endif
