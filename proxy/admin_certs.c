/* /certs: the certificates each TLS context presents and trusts right now, in the shape of
 * Envoy's envoy.admin.v3.Certificates, so a rotation shows here as soon as new handshakes see
 * it.  Main thread. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/x509v3.h>

#include "magpie/tls.h"

#include "admin_internal.h"

/* proto3 JSON spells a Timestamp as RFC 3339 in UTC. */
static void add_time(cJSON *o, const char *key, const ASN1_TIME *t)
{
    time_t tt = (time_t)mp_tls_asn1_unix(t);
    struct tm tm;
    char buf[32];
    gmtime_r(&tt, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON_AddStringToObject(o, key, buf);
}

static void add_san(cJSON *arr, const GENERAL_NAME *gn)
{
    const char *key = gn->type == GEN_DNS ? "dns" : gn->type == GEN_URI ? "uri" : NULL;
    if (key != NULL) {
        const ASN1_STRING *s =
            gn->type == GEN_DNS ? gn->d.dNSName : gn->d.uniformResourceIdentifier;
        char v[512];
        int len = ASN1_STRING_length(s);
        snprintf(v, sizeof(v), "%.*s", len, (const char *)ASN1_STRING_get0_data(s));
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, key, v);
        cJSON_AddItemToArray(arr, o);
    } else if (gn->type == GEN_IPADD) {
        char ip[INET6_ADDRSTRLEN];
        int len = ASN1_STRING_length(gn->d.iPAddress);
        int af = len == 4 ? AF_INET : len == 16 ? AF_INET6 : -1;
        if (af < 0 || inet_ntop(af, ASN1_STRING_get0_data(gn->d.iPAddress), ip, sizeof(ip)) == NULL)
            return;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "ip_address", ip);
        cJSON_AddItemToArray(arr, o);
    }
}

/* One envoy.admin.v3.CertificateDetails.  days_until_expiration is a uint64, which proto3 JSON
 * writes as a string; an expired certificate shows 0. */
static cJSON *details(X509 *x, const char *path, time_t now)
{
    cJSON *o = cJSON_CreateObject();
    char serial[128];
    mp_tls_x509_serial(x, serial, sizeof(serial));
    cJSON_AddStringToObject(o, "path", path ? path : "<inline>");
    cJSON_AddStringToObject(o, "serial_number", serial);
    cJSON *sans = cJSON_AddArrayToObject(o, "subject_alt_names");
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++)
        add_san(sans, sk_GENERAL_NAME_value(names, i));
    GENERAL_NAMES_free(names);
    int64_t left = mp_tls_asn1_unix(X509_get0_notAfter(x)) - (int64_t)now;
    char days[24];
    snprintf(days, sizeof(days), "%lld", (long long)(left > 0 ? left / 86400 : 0));
    cJSON_AddStringToObject(o, "days_until_expiration", days);
    add_time(o, "valid_from", X509_get0_notBefore(x));
    add_time(o, "expiration_time", X509_get0_notAfter(x));
    return o;
}

static cJSON *ctx_certs(const mp_tls_ctx_t *ctx, time_t now)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *ca = cJSON_AddArrayToObject(o, "ca_cert");
    cJSON *chain = cJSON_AddArrayToObject(o, "cert_chain");
    SSL_CTX *ssl = mp_tls_ctx_acquire(ctx); /* the current generation, as new handshakes get */
    X509 *leaf = SSL_CTX_get0_certificate(ssl);
    if (leaf != NULL)
        cJSON_AddItemToArray(chain, details(leaf, ctx->cert_desc, now));
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ssl));
    for (int i = 0; ctx->verify_peer && i < sk_X509_OBJECT_num(objs); i++) {
        X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        if (x != NULL)
            cJSON_AddItemToArray(ca, details(x, ctx->ca_desc, now));
    }
    SSL_CTX_free(ssl);
    return o;
}

void mp_admin__certs(const mp_config_t *cfg, mp_admin_reply_t *r)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "certificates");
    time_t now = time(NULL);
    for (uint32_t i = 0; cfg != NULL && i < cfg->n_tls_ctxs; i++)
        cJSON_AddItemToArray(arr, ctx_certs(cfg->tls_ctxs[i], now));
    r->status = 200;
    r->content_type = MP_ADMIN_JSON;
    mp_admin__json_out(root, r->body);
}
