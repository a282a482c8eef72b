/* The peer certificate's identity for RBAC's `authenticated` principal: URI SANs (a SPIFFE ID
 * in a mesh), DNS SANs and the RFC 2253 subject, read once per decision.  (The XFCC work keeps a
 * per-connection cache of the same facts; the two meet at merge.) */
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "magpie/rbac.h"

static char *keep(mp_rbac_peer_buf_t *b, const char *s, size_t len)
{
    char *copy = mp_xmalloc(len + 1);
    memcpy(copy, s, len);
    copy[len] = '\0';
    b->strings[b->n_strings++] = copy;
    return copy;
}

static char *subject_text(mp_rbac_peer_buf_t *b, X509 *cert)
{
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return NULL;
    char *out = NULL;
    if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
        char *data;
        long len = BIO_get_mem_data(bio, &data);
        out = keep(b, len > 0 ? data : "", len > 0 ? (size_t)len : 0);
    }
    BIO_free(bio);
    return out;
}

/* URI SANs first in b->strings, then DNS SANs: uri_sans and dns_sans are two runs of it. */
static void load_sans(mp_rbac_peer_buf_t *b, X509 *cert, const char **ptrs, int type, uint32_t *n)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (names == NULL)
        return;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != type)
            continue;
        const ASN1_IA5STRING *s = type == GEN_URI ? g->d.uniformResourceIdentifier : g->d.dNSName;
        ptrs[(*n)++] = keep(b, (const char *)ASN1_STRING_get0_data(s), ASN1_STRING_length(s));
    }
    GENERAL_NAMES_free(names);
}

static int count_sans(X509 *cert)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int n = names != NULL ? sk_GENERAL_NAME_num(names) : 0;
    GENERAL_NAMES_free(names);
    return n;
}

void mp_rbac_peer_load(mp_rbac_peer_buf_t *b, void *ssl)
{
    memset(b, 0, sizeof(*b));
    X509 *cert = ssl != NULL ? SSL_get1_peer_certificate(ssl) : NULL;
    if (cert == NULL)
        return;
    int n = count_sans(cert);
    b->strings = mp_xcalloc((size_t)n + 1, sizeof(char *));
    const char **ptrs = mp_xcalloc((size_t)n + 1, sizeof(char *));
    load_sans(b, cert, ptrs, GEN_URI, &b->peer.n_uri_sans);
    b->peer.uri_sans = ptrs;
    load_sans(b, cert, ptrs + b->peer.n_uri_sans, GEN_DNS, &b->peer.n_dns_sans);
    b->peer.dns_sans = ptrs + b->peer.n_uri_sans;
    b->peer.subject = subject_text(b, cert);
    X509_free(cert);
}

void mp_rbac_peer_free(mp_rbac_peer_buf_t *b)
{
    for (uint32_t i = 0; i < b->n_strings; i++)
        free(b->strings[i]);
    free(b->strings);
    free((void *)b->peer.uri_sans);
    memset(b, 0, sizeof(*b));
}
