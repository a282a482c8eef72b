/* The facts of a TLS connection's certificates, read once and cached on the connection
 * (include/magpie/tls_ident.h).  Everything here reads OpenSSL objects the connection owns; the
 * strings are copies, so they outlive nothing they point into. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "magpie/common.h"
#include "magpie/tls_ident.h"
#include "magpie/xfcc.h"

static const char hex_digits[] = "0123456789abcdef";

static void hex_lower(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[in[i] >> 4];
        out[2 * i + 1] = hex_digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* A SAN goes into headers and log lines verbatim: one with CR, LF, NUL or other control bytes
 * (an IA5String may hold them) would split a header, so it is not reported at all. */
static bool san_printable(const unsigned char *p, int n)
{
    for (int i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return false;
    return n > 0;
}

static void push(char ***list, uint32_t *n, const unsigned char *p, int len)
{
    *list = mp_xrealloc(*list, (*n + 1) * sizeof(**list));
    (*list)[(*n)++] = mp_xstrndup((const char *)p, (size_t)len);
}

/* URI (and, when dns is not NULL, DNS) SANs of x, in certificate order. */
static void read_sans(X509 *x, char ***uri, uint32_t *n_uri, char ***dns, uint32_t *n_dns)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (names == NULL)
        return;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        const ASN1_IA5STRING *s = NULL;
        if (g->type == GEN_URI)
            s = g->d.uniformResourceIdentifier;
        else if (g->type == GEN_DNS && dns != NULL)
            s = g->d.dNSName;
        if (s == NULL || !san_printable(ASN1_STRING_get0_data(s), ASN1_STRING_length(s)))
            continue;
        if (g->type == GEN_URI)
            push(uri, n_uri, ASN1_STRING_get0_data(s), ASN1_STRING_length(s));
        else
            push(dns, n_dns, ASN1_STRING_get0_data(s), ASN1_STRING_length(s));
    }
    GENERAL_NAMES_free(names);
}

static char *join(char *const *list, uint32_t n)
{
    if (n == 0)
        return NULL;
    size_t len = 0;
    for (uint32_t i = 0; i < n; i++)
        len += strlen(list[i]) + 1;
    char *out = mp_xmalloc(len), *o = out;
    for (uint32_t i = 0; i < n; i++) {
        size_t l = strlen(list[i]);
        memcpy(o, list[i], l);
        o += l;
        *o++ = ',';
    }
    o[-1] = '\0';
    return out;
}

/* RFC 2253, as Envoy prints subjects: escaping (',', '+', '"', control and non-ASCII bytes) is
 * OpenSSL's, so the text is safe inside XFCC's double quotes and a log line. */
static char *subject_text(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL)
        return NULL;
    char *out = NULL;
    if (X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
        char *data;
        long n = BIO_get_mem_data(b, &data);
        out = mp_xstrndup(n > 0 ? data : "", n > 0 ? (size_t)n : 0);
    }
    BIO_free(b);
    return out;
}

static char *serial_text(X509 *x)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *h = bn ? BN_bn2hex(bn) : NULL;
    char *out = NULL;
    if (h != NULL) {
        out = mp_xstrdup(h);
        for (char *p = out; *p; p++)
            *p = (char)((*p >= 'A' && *p <= 'F') ? *p + 32 : *p);
    }
    OPENSSL_free(h);
    BN_free(bn);
    return out;
}

static void load_peer(mp_tls_ident_t *id, X509 *peer)
{
    id->peer_cert = true;
    read_sans(peer, &id->peer_uri_sans, &id->n_peer_uri_sans, &id->peer_dns_sans,
              &id->n_peer_dns_sans);
    id->peer_uri_joined = join(id->peer_uri_sans, id->n_peer_uri_sans);
    id->peer_subject = subject_text(peer);
    id->peer_serial = serial_text(peer);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (X509_digest(peer, EVP_sha256(), md, &len) == 1 && len == 32)
        hex_lower(md, len, id->peer_sha256);
}

static void load_session(mp_tls_ident_t *id)
{
    id->version = SSL_get_version(id->ssl);
    const SSL_CIPHER *c = SSL_get_current_cipher(id->ssl);
    id->cipher = c ? SSL_CIPHER_get_name(c) : NULL;
    const SSL_SESSION *sess = SSL_get_session(id->ssl);
    unsigned int n = 0;
    const unsigned char *sid = sess ? SSL_SESSION_get_id(sess, &n) : NULL;
    if (sid != NULL && n > 0) {
        id->session_id = mp_xmalloc(2 * n + 1);
        hex_lower(sid, n, id->session_id);
    }
}

const mp_tls_ident_t *mp_tls_ident_get(mp_tls_ident_t *id)
{
    if (id == NULL || id->ssl == NULL)
        return NULL;
    if (id->loaded)
        return id;
    id->loaded = true;
    X509 *peer = SSL_get0_peer_certificate(id->ssl);
    if (peer != NULL)
        load_peer(id, peer);
    X509 *local = SSL_get_certificate(id->ssl);
    if (local != NULL) {
        read_sans(local, &id->local_uri_sans, &id->n_local_uri_sans, NULL, NULL);
        id->local_uri_joined = join(id->local_uri_sans, id->n_local_uri_sans);
        id->local_subject = subject_text(local);
    }
    load_session(id);
    return id;
}

/* Appends x's PEM to b. */
static void pem_of(BIO *b, X509 *x)
{
    if (x != NULL)
        PEM_write_bio_X509(b, x);
}

static char *bio_url_encoded(BIO *b)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    return n > 0 ? mp_xfcc_url_encode(data, (size_t)n) : NULL;
}

const mp_tls_ident_t *mp_tls_ident_get_pem(mp_tls_ident_t *id)
{
    if (mp_tls_ident_get(id) == NULL)
        return NULL;
    if (id->pem_loaded || !id->peer_cert)
        return id;
    id->pem_loaded = true;
    X509 *peer = SSL_get0_peer_certificate(id->ssl);
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL)
        return id;
    pem_of(b, peer);
    id->peer_cert_url = bio_url_encoded(b);
    /* A server's view of the peer chain leaves out the leaf; XFCC's Chain starts with it.  A
     * resumed session keeps only the leaf, so Chain is then the leaf alone. */
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(id->ssl);
    for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        X509 *x = sk_X509_value(chain, i);
        if (X509_cmp(x, peer) != 0)
            pem_of(b, x);
    }
    id->peer_chain_url = bio_url_encoded(b);
    BIO_free(b);
    return id;
}

static void free_list(char **list, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

void mp_tls_ident_fini(mp_tls_ident_t *id)
{
    if (id == NULL)
        return;
    free_list(id->peer_uri_sans, id->n_peer_uri_sans);
    free_list(id->peer_dns_sans, id->n_peer_dns_sans);
    free_list(id->local_uri_sans, id->n_local_uri_sans);
    free(id->peer_uri_joined);
    free(id->peer_subject);
    free(id->peer_serial);
    free(id->peer_cert_url);
    free(id->peer_chain_url);
    free(id->local_uri_joined);
    free(id->local_subject);
    free(id->session_id);
    SSL *ssl = id->ssl;
    *id = (mp_tls_ident_t){.ssl = ssl};
}

const char *mp_tls_ident_principal(const mp_tls_ident_t *id)
{
    if (id == NULL || !id->peer_cert)
        return NULL;
    if (id->n_peer_uri_sans > 0)
        return id->peer_uri_sans[0];
    if (id->n_peer_dns_sans > 0)
        return id->peer_dns_sans[0];
    return id->peer_subject;
}
