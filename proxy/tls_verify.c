/* Peer verification for TLS contexts: the SAN matchers, OpenSSL's verify callback with the ssl.*
 * failure counters, server-side ALPN selection, and the last step of building a context
 * (include/magpie/tls.h).  The callbacks run on whichever worker runs the handshake. */
#include <arpa/inet.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "magpie/route.h"
#include "magpie/stats.h"
#include "magpie/tls.h"

#include "tls_internal.h"

static int ctx_index = -1;
static pthread_once_t ctx_index_once = PTHREAD_ONCE_INIT;

/* An SSL_CTX holds a reference on the context its callbacks read (tls.h, "Generations"); it
 * ends when the SSL_CTX does, which after a rotation is when its last connection closes. */
static void on_ctx_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
    if (ptr != NULL)
        mp_tls__ctx_unref(ptr);
}

static void make_ctx_index(void)
{
    ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, on_ctx_ex_free);
}

static const mp_tls_ctx_t *ctx_of_ssl(const SSL *ssl)
{
    return ssl != NULL ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_index) : NULL;
}

/* A certificate's DNS SAN "*.example.com" stands for one label: an exact matcher for
 * "api.example.com" accepts it, as Envoy's DNS SAN matching does. */
static bool dns_wildcard_match(const mp_string_matcher_t *m, const char *san, size_t len)
{
    if (m->kind != MP_STR_EXACT || len < 3 || san[0] != '*' || san[1] != '.')
        return false;
    const char *dot = memchr(m->value, '.', m->len);
    if (dot == NULL || dot == m->value)
        return false;
    size_t rest = m->len - (size_t)(dot - m->value);
    return rest == len - 1 &&
           (m->ignore_case ? strncasecmp(dot, san + 1, rest) : memcmp(dot, san + 1, rest)) == 0;
}

static bool san_value(const GENERAL_NAME *gn, mp_san_type_t *type, char *buf, size_t cap,
                      const char **out, size_t *len)
{
    const ASN1_STRING *s = NULL;
    switch (gn->type) {
    case GEN_DNS:
        *type = MP_SAN_DNS;
        s = gn->d.dNSName;
        break;
    case GEN_URI:
        *type = MP_SAN_URI;
        s = gn->d.uniformResourceIdentifier;
        break;
    case GEN_EMAIL:
        *type = MP_SAN_EMAIL;
        s = gn->d.rfc822Name;
        break;
    case GEN_IPADD: {
        *type = MP_SAN_IP;
        int l = ASN1_STRING_length(gn->d.iPAddress);
        int af = l == 4 ? AF_INET : l == 16 ? AF_INET6 : -1;
        if (af < 0 || inet_ntop(af, ASN1_STRING_get0_data(gn->d.iPAddress), buf, cap) == NULL)
            return false;
        *out = buf;
        *len = strlen(buf);
        return true;
    }
    default:
        return false;
    }
    *out = (const char *)ASN1_STRING_get0_data(s);
    *len = (size_t)ASN1_STRING_length(s);
    /* An embedded NUL would let "good.com\0.evil.com" pass a suffix match on a C string. */
    return memchr(*out, '\0', *len) == NULL;
}

/* The deprecated untyped matchers match DNS, URI and email SANs (tls.h: any_type). */
static bool matcher_accepts(const mp_san_matcher_t *m, mp_san_type_t type, const char *v,
                            size_t len)
{
    if (m->any_type ? type == MP_SAN_IP : m->type != type)
        return false;
    if (mp_string_matcher_match(&m->match, v, len))
        return true;
    return type == MP_SAN_DNS && dns_wildcard_match(&m->match, v, len);
}

bool mp_tls_peer_san_ok(const mp_tls_ctx_t *ctx, X509 *peer)
{
    if (ctx->n_sans == 0)
        return true;
    if (peer == NULL)
        return false;
    GENERAL_NAMES *names = X509_get_ext_d2i(peer, NID_subject_alt_name, NULL, NULL);
    bool ok = false;
    for (int i = 0; !ok && names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        char ip[INET6_ADDRSTRLEN];
        const char *v;
        size_t len;
        mp_san_type_t type;
        if (!san_value(sk_GENERAL_NAME_value(names, i), &type, ip, sizeof(ip), &v, &len))
            continue;
        for (uint32_t j = 0; !ok && j < ctx->n_sans; j++)
            ok = matcher_accepts(&ctx->sans[j], type, v, len);
    }
    GENERAL_NAMES_free(names);
    return ok;
}

/* A chain error that the context's settings forgive. */
static bool forgiven(const mp_tls_ctx_t *ctx, int error)
{
    if (ctx->accept_untrusted)
        return true;
    return ctx->allow_expired && error == X509_V_ERR_CERT_HAS_EXPIRED;
}

/* OpenSSL calls this once per certificate of the chain, root first, leaf (depth 0) last; the
 * SAN check waits for the leaf.  Returning 0 ends the handshake, so each failure counts once. */
static int on_verify(int preverify_ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    const mp_tls_ctx_t *ctx = ctx_of_ssl(ssl);
    if (ctx == NULL)
        return preverify_ok;
    if (!preverify_ok) {
        int error = X509_STORE_CTX_get_error(store);
        if (!forgiven(ctx, error)) {
            mp_stats_inc(ctx->stats.fail_verify_error);
            return 0;
        }
        if (ctx->accept_untrusted)
            mp_stats_inc(ctx->stats.fail_verify_error);
        X509_STORE_CTX_set_error(store, X509_V_OK);
    }
    if (X509_STORE_CTX_get_error_depth(store) != 0)
        return 1;
    if (!mp_tls_peer_san_ok(ctx, X509_STORE_CTX_get_current_cert(store))) {
        mp_stats_inc(ctx->stats.fail_verify_san);
        X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
        return ctx->accept_untrusted ? 1 : 0;
    }
    return 1;
}

/* No client certificate under SSL_VERIFY_FAIL_IF_NO_PEER_CERT never reaches on_verify: OpenSSL
 * raises PEER_DID_NOT_RETURN_A_CERTIFICATE and sends its fatal alert at once, so the alert is
 * where that refusal is seen (the reason is still the newest error on this thread). */
static void on_info(const SSL *ssl, int where, int ret)
{
    if (!(where & SSL_CB_WRITE_ALERT) || (ret >> 8) != SSL3_AL_FATAL)
        return;
    const mp_tls_ctx_t *ctx = ctx_of_ssl(ssl);
    unsigned long e = ERR_peek_last_error();
    if (ctx != NULL && ERR_GET_LIB(e) == ERR_LIB_SSL &&
        ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        mp_stats_inc(ctx->stats.no_certificate);
}

/* Envoy's rule: the first of the server's protocols that the client offers; none in common ->
 * no ALPN (the handshake goes on without it). */
static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    const mp_tls_ctx_t *ctx = arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ctx->alpn, ctx->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* Sessions resumed under a verifying server need an id context; one derived from the
 * certificate and the CA set keeps a session from resuming under a different trust setup. */
static void set_session_id_context(mp_tls_ctx_t *ctx)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    EVP_DigestInit_ex(h, EVP_sha256(), NULL);
    X509 *leaf = SSL_CTX_get0_certificate(ctx->ssl);
    unsigned char leaf_md[EVP_MAX_MD_SIZE];
    unsigned int leaf_len = 0;
    if (leaf != NULL && X509_digest(leaf, EVP_sha256(), leaf_md, &leaf_len))
        EVP_DigestUpdate(h, leaf_md, leaf_len);
    unsigned char flags[3] = {ctx->require_client_cert, ctx->verify_peer,
                              (unsigned char)ctx->n_sans};
    EVP_DigestUpdate(h, flags, sizeof(flags));
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx->ssl));
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        if (x != NULL && X509_digest(x, EVP_sha256(), leaf_md, &leaf_len))
            EVP_DigestUpdate(h, leaf_md, leaf_len);
    }
    EVP_DigestFinal_ex(h, md, &md_len);
    EVP_MD_CTX_free(h);
    SSL_CTX_set_session_id_context(
        ctx->ssl, md, md_len < SSL_MAX_SID_CTX_LENGTH ? md_len : SSL_MAX_SID_CTX_LENGTH);
}

static int finish_server(mp_tls_ctx_t *ctx, mp_err_t *err)
{
    if (SSL_CTX_get0_certificate(ctx->ssl) == NULL)
        return mp_err_set(err, "common_tls_context.tls_certificates: a server needs a "
                               "certificate");
    if (ctx->require_client_cert && !ctx->verify_peer)
        return mp_err_set(err, "require_client_certificate: needs "
                               "common_tls_context.validation_context.trusted_ca");
    if (ctx->alpn != NULL)
        SSL_CTX_set_alpn_select_cb(ctx->ssl, on_alpn_select, ctx);
    set_session_id_context(ctx);
    return 0;
}

static int finish_client(mp_tls_ctx_t *ctx, mp_err_t *err)
{
    if (ctx->alpn != NULL && SSL_CTX_set_alpn_protos(ctx->ssl, ctx->alpn, ctx->alpn_len) != 0)
        return mp_err_set(err, "common_tls_context.alpn_protocols: rejected by OpenSSL");
    if (ctx->max_session_keys == 0) {
        SSL_CTX_set_session_cache_mode(ctx->ssl, SSL_SESS_CACHE_OFF);
        return 0;
    }
    /* Sessions go to our per-peer cache (tls_session.c) only: OpenSSL's internal one would
     * hold up to 20k of them, keyed for servers. */
    SSL_CTX_set_session_cache_mode(ctx->ssl,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx->ssl, mp_tls__on_new_session);
    if (ctx->sessions == NULL)
        ctx->sessions = mp_tls__sessions_new(ctx->max_session_keys);
    return 0;
}

int mp_tls_ctx_finish(mp_tls_ctx_t *ctx, mp_err_t *err)
{
    pthread_once(&ctx_index_once, make_ctx_index);
    if (ctx->n_sans > 0 && !ctx->verify_peer)
        return mp_err_set(err, "common_tls_context.validation_context: SAN matching without a "
                               "trusted_ca is insecure and not allowed");
    if (ctx->server ? finish_server(ctx, err) != 0 : finish_client(ctx, err) != 0)
        return MP_ERROR;
    if (SSL_CTX_get_ex_data(ctx->ssl, ctx_index) == NULL) {
        atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
        SSL_CTX_set_ex_data(ctx->ssl, ctx_index, ctx);
    }
    int mode = SSL_VERIFY_NONE;
    if (ctx->verify_peer)
        mode = SSL_VERIFY_PEER;
    if (ctx->require_client_cert)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx->ssl, mode, ctx->verify_peer ? on_verify : NULL);
    SSL_CTX_set_info_callback(ctx->ssl, on_info);
    return 0;
}
