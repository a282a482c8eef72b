/* Building a TLS context: the SSL_CTX and its parameters, certificates, trusted CAs and ALPN
 * (include/magpie/tls.h).  Verification and the handshake callbacks live in tls_verify.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "magpie/route.h"
#include "magpie/stats.h"
#include "magpie/tls.h"

#include "tls_internal.h"

void mp_tls_stats_register(mp_tls_stats_t *st, const char *prefix)
{
    st->handshake = mp_stats_counterf("%sssl.handshake", prefix);
    st->connection_error = mp_stats_counterf("%sssl.connection_error", prefix);
    st->fail_verify_error = mp_stats_counterf("%sssl.fail_verify_error", prefix);
    st->fail_verify_san = mp_stats_counterf("%sssl.fail_verify_san", prefix);
    st->no_certificate = mp_stats_counterf("%sssl.no_certificate", prefix);
    st->session_reused = mp_stats_counterf("%sssl.session_reused", prefix);
}

static void free_sources(mp_tls_source_t *src, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(src[i].path);
        free(src[i].secret);
    }
    free(src);
}

/* The last reference: from the owner (mp_tls_ctx_free) or from an SSL_CTX being freed (its
 * ex_data free callback, tls_verify.c), which may be a worker.  ssl is NULL or unowned by then. */
void mp_tls__ctx_unref(mp_tls_ctx_t *ctx)
{
    if (atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) != 1)
        return;
    mp_tls__sessions_unref(ctx->sessions); /* sessions before the SSL_CTX they came from */
    SSL_CTX_free(ctx->ssl);
    for (uint32_t i = 0; i < ctx->n_sans; i++)
        mp_string_matcher_free(&ctx->sans[i].match);
    free(ctx->sans);
    free(ctx->sni);
    free(ctx->alpn);
    free(ctx->cert_desc);
    free(ctx->ca_desc);
    free(ctx->recipe);
    free(ctx->stat_prefix);
    free_sources(ctx->sources, ctx->n_sources);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

void mp_tls_ctx_free(mp_tls_ctx_t *ctx)
{
    if (ctx == NULL)
        return;
    /* Releasing the SSL_CTX first drops the reference its ex_data holds on ctx (when no
     * connection still uses it), so the unref below can be the last. */
    SSL_CTX *ssl = ctx->ssl;
    ctx->ssl = NULL;
    mp_tls__sessions_unref(ctx->sessions); /* sessions before the SSL_CTX they came from */
    ctx->sessions = NULL;
    SSL_CTX_free(ssl);
    mp_tls__ctx_unref(ctx);
}

SSL_CTX *mp_tls_ctx_acquire(const mp_tls_ctx_t *ctx)
{
    pthread_mutex_t *lock = (pthread_mutex_t *)&ctx->lock; /* logically mutable */
    pthread_mutex_lock(lock);
    SSL_CTX *ssl = ctx->ssl;
    SSL_CTX_up_ref(ssl);
    pthread_mutex_unlock(lock);
    return ssl;
}

void mp_tls_ctx_publish(mp_tls_ctx_t *ctx, mp_tls_ctx_t *fresh)
{
    SSL_CTX *next = fresh->ssl;
    fresh->ssl = NULL; /* the reference moves to ctx; fresh lives on through next's ex_data */
    pthread_mutex_lock(&ctx->lock);
    SSL_CTX *prev = ctx->ssl;
    ctx->ssl = next;
    mp_tls_sessions_t *prev_sessions = ctx->sessions;
    ctx->sessions = fresh->sessions; /* empty: nothing verified under the old trust resumes */
    fresh->sessions = NULL;
    pthread_mutex_unlock(&ctx->lock);
    mp_tls__sessions_unref(prev_sessions); /* connections made before keep theirs */
    char *desc = ctx->cert_desc;
    ctx->cert_desc = fresh->cert_desc;
    fresh->cert_desc = desc;
    ctx->cert_not_after = fresh->cert_not_after;
    desc = ctx->ca_desc;
    ctx->ca_desc = fresh->ca_desc;
    fresh->ca_desc = desc;
    mp_tls_source_t *src = ctx->sources;
    uint32_t n_src = ctx->n_sources;
    ctx->sources = fresh->sources;
    ctx->n_sources = fresh->n_sources;
    fresh->sources = src;
    fresh->n_sources = n_src;
    mp_tls__ctx_unref(fresh);
    SSL_CTX_free(prev); /* connections made on it keep their own references */
}

void mp_tls_ctx_add_source(mp_tls_ctx_t *ctx, const char *path, const char *secret)
{
    for (uint32_t i = 0; i < ctx->n_sources; i++)
        if (strcmp(ctx->sources[i].path, path) == 0)
            return;
    ctx->sources = mp_xrealloc(ctx->sources, (ctx->n_sources + 1) * sizeof(*ctx->sources));
    mp_tls_source_t *src = &ctx->sources[ctx->n_sources];
    memset(src, 0, sizeof(*src));
    src->path = mp_xstrdup(path);
    src->secret = mp_xstrdup(secret != NULL ? secret : "");
    ctx->n_sources++;
}

/* The newest OpenSSL error as text, and the queue cleared so the next message is not stale. */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0)
        snprintf(buf, len, "unknown error");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

mp_tls_ctx_t *mp_tls_ctx_new(bool server, mp_err_t *err)
{
    SSL_CTX *ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (ssl == NULL) {
        char r[160];
        mp_err_set(err, "cannot create an SSL context: %s", ssl_reason(r, sizeof(r)));
        return NULL;
    }
    mp_tls_ctx_t *ctx = mp_xcalloc(1, sizeof(*ctx));
    ctx->ssl = ssl;
    atomic_init(&ctx->refs, 1);
    pthread_mutex_init(&ctx->lock, NULL);
    ctx->server = server;
    ctx->max_session_keys = 1;
    /* Our writes come from slices that may move between retries, and idle connections should
     * not pin 2 x 16 KiB of record buffers each (DESIGN.md: megabytes, not tens). */
    SSL_CTX_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ssl, TLS1_3_VERSION);
    SSL_CTX_set_options(ssl, SSL_OP_NO_COMPRESSION);
    return ctx;
}

int mp_tls_ctx_set_versions(mp_tls_ctx_t *ctx, int min, int max, mp_err_t *err)
{
    if (min != 0 && max != 0 && min > max)
        return mp_err_set(err, "the minimum protocol version is above the maximum");
    if (min != 0 && !SSL_CTX_set_min_proto_version(ctx->ssl, min))
        return mp_err_set(err, "minimum protocol version not available");
    if (max != 0 && !SSL_CTX_set_max_proto_version(ctx->ssl, max))
        return mp_err_set(err, "maximum protocol version not available");
    int eff_min = SSL_CTX_get_min_proto_version(ctx->ssl);
    int eff_max = SSL_CTX_get_max_proto_version(ctx->ssl);
    if (eff_min != 0 && eff_max != 0 && eff_min > eff_max)
        return mp_err_set(err, "the minimum protocol version is above the maximum");
    return 0;
}

/* Whether name is a TLS 1.2-or-older cipher OpenSSL knows, at any security level. */
static bool cipher_known(const char *name)
{
    SSL_CTX *tmp = SSL_CTX_new(TLS_method());
    bool found = false;
    if (tmp != NULL && SSL_CTX_set_cipher_list(tmp, "ALL:COMPLEMENTOFALL:@SECLEVEL=0")) {
        STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(tmp);
        for (int i = 0; !found && i < sk_SSL_CIPHER_num(sk); i++) {
            const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);
            found = strcmp(SSL_CIPHER_get_name(c), name) == 0 &&
                    strcmp(SSL_CIPHER_get_version(c), "TLSv1.3") != 0;
        }
    }
    SSL_CTX_free(tmp);
    ERR_clear_error();
    return found;
}

/* Appends the names of one entry to list; BoringSSL's equal-preference group "[A|B]" becomes
 * "A:B" (OpenSSL has no equal preference: the first listed wins ties). */
static int append_cipher_entry(char **list, const char *entry, size_t i, mp_err_t *err)
{
    size_t len = strlen(entry);
    bool group = len >= 2 && entry[0] == '[' && entry[len - 1] == ']';
    char *copy = group ? mp_xstrndup(entry + 1, len - 2) : mp_xstrdup(entry);
    char *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(copy, group ? "|" : "", &save); tok != NULL;
         tok = strtok_r(NULL, "|", &save)) {
        if (!cipher_known(tok)) {
            rc = mp_err_set(err, "[%zu]: unknown cipher suite \"%s\"", i, tok);
            break;
        }
        char *next = *list ? mp_xasprintf("%s:%s", *list, tok) : mp_xstrdup(tok);
        free(*list);
        *list = next;
    }
    free(copy);
    return rc;
}

int mp_tls_ctx_set_ciphers(mp_tls_ctx_t *ctx, char *const *names, size_t n, mp_err_t *err)
{
    if (n == 0)
        return 0;
    char *list = NULL;
    for (size_t i = 0; i < n; i++) {
        if (names[i] == NULL || names[i][0] == '\0') {
            free(list);
            return mp_err_set(err, "[%zu]: empty cipher suite name", i);
        }
        if (append_cipher_entry(&list, names[i], i, err) != 0) {
            free(list);
            return MP_ERROR;
        }
    }
    int ok = SSL_CTX_set_cipher_list(ctx->ssl, list);
    free(list);
    ERR_clear_error();
    return ok ? 0 : mp_err_set(err, ": no usable cipher suite");
}

/* groups and sigalgs share the shape: each name is tried alone first so the error names it. */
typedef int (*list_setter_fn)(SSL_CTX *ssl, const char *list);

static int set1_groups(SSL_CTX *ssl, const char *list)
{
    return (int)SSL_CTX_set1_groups_list(ssl, list);
}

static int set1_sigalgs(SSL_CTX *ssl, const char *list)
{
    return (int)SSL_CTX_set1_sigalgs_list(ssl, list);
}

static int set_name_list(mp_tls_ctx_t *ctx, char *const *names, size_t n, list_setter_fn set,
                         const char *what, mp_err_t *err)
{
    if (n == 0)
        return 0;
    char *list = NULL;
    for (size_t i = 0; i < n; i++) {
        if (names[i] == NULL || names[i][0] == '\0' || strchr(names[i], ':') != NULL ||
            !set(ctx->ssl, names[i])) {
            free(list);
            ERR_clear_error();
            return mp_err_set(err, "[%zu]: unknown %s \"%s\"", i, what, names[i] ? names[i] : "");
        }
        char *next = list ? mp_xasprintf("%s:%s", list, names[i]) : mp_xstrdup(names[i]);
        free(list);
        list = next;
    }
    int ok = set(ctx->ssl, list);
    free(list);
    ERR_clear_error();
    return ok ? 0 : mp_err_set(err, ": the %s list is not usable", what);
}

int mp_tls_ctx_set_curves(mp_tls_ctx_t *ctx, char *const *names, size_t n, mp_err_t *err)
{
    return set_name_list(ctx, names, n, set1_groups, "ECDH curve", err);
}

int mp_tls_ctx_set_sigalgs(mp_tls_ctx_t *ctx, char *const *names, size_t n, mp_err_t *err)
{
    return set_name_list(ctx, names, n, set1_sigalgs, "signature algorithm", err);
}

int64_t mp_tls_asn1_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
        return 0;
    return (int64_t)timegm(&tm);
}

static int64_t not_after_unix(X509 *x)
{
    return mp_tls_asn1_unix(X509_get0_notAfter(x));
}

void mp_tls_x509_serial(X509 *x, char *out, size_t cap)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    snprintf(out, cap, "%s", hex != NULL ? hex : "");
    for (char *p = out; *p != '\0'; p++)
        if (*p >= 'A' && *p <= 'F')
            *p = (char)(*p - 'A' + 'a');
    OPENSSL_free(hex);
    BN_free(bn);
}

/* The chain after the leaf goes to the context's extra chain, in order. */
static int load_chain_rest(mp_tls_ctx_t *ctx, BIO *bio, const char *what, mp_err_t *err)
{
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!SSL_CTX_add0_chain_cert(ctx->ssl, x)) {
            X509_free(x);
            char r[160];
            return mp_err_set(err, "certificate_chain: %s: %s", what, ssl_reason(r, sizeof(r)));
        }
    }
    ERR_clear_error(); /* the loop ends on "no start line" */
    return 0;
}

static int load_leaf(mp_tls_ctx_t *ctx, const char *pem, size_t len, const char *what,
                     mp_err_t *err)
{
    char r[160];
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *leaf = bio ? PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL) : NULL;
    if (leaf == NULL) {
        BIO_free(bio);
        return mp_err_set(err, "certificate_chain: no PEM certificate in %s: %s", what,
                          ssl_reason(r, sizeof(r)));
    }
    int rc = 0;
    if (!SSL_CTX_use_certificate(ctx->ssl, leaf))
        rc = mp_err_set(err, "certificate_chain: %s: %s", what, ssl_reason(r, sizeof(r)));
    else
        rc = load_chain_rest(ctx, bio, what, err);
    ctx->cert_not_after = not_after_unix(leaf);
    X509_free(leaf);
    BIO_free(bio);
    return rc;
}

static int pem_password(char *buf, int size, int rwflag, void *u)
{
    const char *pw = u;
    if (pw == NULL)
        return 0;
    size_t n = strlen(pw);
    if (n > (size_t)size)
        return 0;
    memcpy(buf, pw, n);
    return (int)n;
}

static int load_key(mp_tls_ctx_t *ctx, const char *pem, size_t len, const char *what,
                    const char *password, mp_err_t *err)
{
    char r[160];
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, pem_password, (void *)password) : NULL;
    BIO_free(bio);
    if (key == NULL)
        return mp_err_set(err, "private_key: cannot read a PEM private key from %s: %s", what,
                          ssl_reason(r, sizeof(r)));
    int ok = SSL_CTX_use_PrivateKey(ctx->ssl, key);
    EVP_PKEY_free(key);
    if (!ok)
        return mp_err_set(err, "private_key: %s does not match the certificate: %s", what,
                          ssl_reason(r, sizeof(r)));
    if (!SSL_CTX_check_private_key(ctx->ssl))
        return mp_err_set(err, "private_key: %s does not match the certificate: %s", what,
                          ssl_reason(r, sizeof(r)));
    return 0;
}

int mp_tls_ctx_use_cert(mp_tls_ctx_t *ctx, const char *chain, size_t chain_len,
                        const char *chain_what, const char *key, size_t key_len,
                        const char *key_what, const char *password, mp_err_t *err)
{
    if (ctx->cert_desc != NULL)
        return mp_err_set(err, "only one certificate per context is supported yet");
    if (load_leaf(ctx, chain, chain_len, chain_what, err) != 0 ||
        load_key(ctx, key, key_len, key_what, password, err) != 0)
        return MP_ERROR;
    ctx->cert_desc = mp_xstrdup(chain_what);
    return 0;
}

int mp_tls_ctx_set_trusted_ca(mp_tls_ctx_t *ctx, const char *pem, size_t len, const char *what,
                              mp_err_t *err)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509_STORE *store = SSL_CTX_get_cert_store(ctx->ssl);
    int n = 0;
    X509 *x;
    while (bio != NULL && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_cert(store, x); /* a duplicate is not an error worth failing on */
        X509_free(x);
        n++;
    }
    BIO_free(bio);
    ERR_clear_error();
    if (n == 0)
        return mp_err_set(err, "no PEM certificate in %s", what);
    /* Envoy lets an intermediate in trusted_ca anchor a chain, as OpenSSL's partial chains do. */
    X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
    ctx->verify_peer = true;
    free(ctx->ca_desc);
    ctx->ca_desc = mp_xstrdup(what);
    return 0;
}

int mp_tls_ctx_set_alpn(mp_tls_ctx_t *ctx, char *const *protos, size_t n, mp_err_t *err)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = protos[i] ? strlen(protos[i]) : 0;
        if (len == 0 || len > 255)
            return mp_err_set(err, "[%zu]: a protocol name must be 1 to 255 bytes", i);
        total += 1 + len;
    }
    if (total == 0)
        return 0;
    uint8_t *w = mp_xmalloc(total);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(protos[i]);
        w[off++] = (uint8_t)len;
        memcpy(w + off, protos[i], len);
        off += len;
    }
    free(ctx->alpn);
    ctx->alpn = w;
    ctx->alpn_len = (uint32_t)total;
    return 0;
}

void mp_tls_ctx_add_sans(mp_tls_ctx_t *ctx, mp_san_matcher_t *sans, uint32_t n)
{
    if (n == 0) {
        free(sans);
        return;
    }
    ctx->sans = mp_xrealloc(ctx->sans, (ctx->n_sans + n) * sizeof(*ctx->sans));
    memcpy(ctx->sans + ctx->n_sans, sans, n * sizeof(*sans));
    ctx->n_sans += n;
    free(sans);
}
