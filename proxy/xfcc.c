/* x-forwarded-client-cert, Envoy's format and policy (include/magpie/xfcc.h). */
#include <stdlib.h>
#include <string.h>

#include "magpie/common.h"
#include "magpie/xfcc.h"

#define XFCC "x-forwarded-client-cert"

typedef struct sb {
    char *p;
    size_t len, cap;
} sb_t;

static void sb_add(sb_t *sb, const char *s, size_t n)
{
    if (sb->len + n + 1 > sb->cap) {
        sb->cap = MP_MAX(sb->cap * 2, sb->len + n + 1);
        sb->p = mp_xrealloc(sb->p, sb->cap);
    }
    memcpy(sb->p + sb->len, s, n);
    sb->len += n;
    sb->p[sb->len] = '\0';
}

static void sb_str(sb_t *sb, const char *s)
{
    sb_add(sb, s, strlen(s));
}

mp_xfcc_action_t mp_xfcc_decide(mp_xfcc_mode_t mode, bool mtls)
{
    if (mode == MP_XFCC_ALWAYS_FORWARD_ONLY)
        return MP_XFCC_KEEP;
    /* Without a client certificate this hop has nothing to vouch for, so whatever the client
     * sent is unvouched for too. */
    if (mode == MP_XFCC_SANITIZE || !mtls)
        return MP_XFCC_REMOVE;
    if (mode == MP_XFCC_FORWARD_ONLY)
        return MP_XFCC_KEEP;
    return mode == MP_XFCC_APPEND_FORWARD ? MP_XFCC_APPEND : MP_XFCC_SET;
}

/* Key=value, ';' first unless it opens the element.  A value with the separators of the format
 * in it is quoted so a reader cannot be fooled into a new pair or element by a SAN. */
static void add_pair(sb_t *sb, const char *key, const char *v, bool quote)
{
    if (sb->len > 0)
        sb_add(sb, ";", 1);
    sb_str(sb, key);
    sb_add(sb, "=", 1);
    bool special = strpbrk(v, ",;=\"\\") != NULL;
    if (!quote && !special) {
        sb_str(sb, v);
        return;
    }
    sb_add(sb, "\"", 1);
    for (const char *p = v; *p; p++) {
        if (special && (*p == '"' || *p == '\\'))
            sb_add(sb, "\\", 1);
        sb_add(sb, p, 1);
    }
    sb_add(sb, "\"", 1);
}

/* Subject is already RFC 2253-escaped ('"' as \"), so it goes between quotes as it is. */
static void add_subject(sb_t *sb, const char *subject)
{
    if (sb->len > 0)
        sb_add(sb, ";", 1);
    sb_str(sb, "Subject=\"");
    sb_str(sb, subject ? subject : "");
    sb_add(sb, "\"", 1);
}

static void add_each(sb_t *sb, const char *key, char *const *list, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        add_pair(sb, key, list[i], false);
}

char *mp_xfcc_element(const mp_tls_ident_t *id, uint32_t details)
{
    sb_t sb = {0};
    add_each(&sb, "By", id->local_uri_sans, id->n_local_uri_sans);
    if (id->peer_sha256[0])
        add_pair(&sb, "Hash", id->peer_sha256, false);
    if (details & MP_XFCC_SUBJECT)
        add_subject(&sb, id->peer_subject);
    if ((details & MP_XFCC_URI) && id->n_peer_uri_sans == 0)
        sb_str(&sb, sb.len > 0 ? ";URI=" : "URI="); /* Envoy keeps the key when there is none */
    else if (details & MP_XFCC_URI)
        add_each(&sb, "URI", id->peer_uri_sans, id->n_peer_uri_sans);
    if ((details & MP_XFCC_CERT) && id->peer_cert_url)
        add_pair(&sb, "Cert", id->peer_cert_url, true);
    if ((details & MP_XFCC_CHAIN) && id->peer_chain_url)
        add_pair(&sb, "Chain", id->peer_chain_url, true);
    if (details & MP_XFCC_DNS)
        add_each(&sb, "DNS", id->peer_dns_sans, id->n_peer_dns_sans);
    if (sb.p == NULL)
        sb_add(&sb, "", 0);
    return sb.p;
}

/* The client's XFCC fields joined with ',' (several fields are one list, RFC 9110 5.3). */
static void join_existing(const mp_headers_t *h, sb_t *sb)
{
    for (uint32_t i = 0; i < h->n; i++) {
        const mp_header_t *f = &h->v[i];
        if (f->name_len != sizeof(XFCC) - 1 || memcmp(f->name, XFCC, sizeof(XFCC) - 1) != 0 ||
            f->value_len == 0)
            continue;
        if (sb->len > 0)
            sb_add(sb, ",", 1);
        sb_add(sb, f->value, f->value_len);
    }
}

void mp_xfcc_apply(mp_headers_t *h, mp_xfcc_mode_t mode, uint32_t details, const mp_tls_ident_t *id)
{
    bool mtls = id != NULL && id->peer_cert;
    mp_xfcc_action_t act = mp_xfcc_decide(mode, mtls);
    if (act == MP_XFCC_KEEP)
        return;
    if (act == MP_XFCC_REMOVE) {
        mp_headers_remove(h, XFCC);
        return;
    }
    char *element = mp_xfcc_element(id, details);
    sb_t sb = {0};
    if (act == MP_XFCC_APPEND)
        join_existing(h, &sb);
    if (sb.len > 0)
        sb_add(&sb, ",", 1);
    sb_str(&sb, element);
    mp_headers_set(h, XFCC, sb.p, sb.len);
    free(sb.p);
    free(element);
}

char *mp_xfcc_url_encode(const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = mp_xmalloc(3 * n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                          (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
        if (unreserved) {
            *o++ = (char)c;
            continue;
        }
        *o++ = '%';
        *o++ = hex[c >> 4];
        *o++ = hex[c & 15];
    }
    *o = '\0';
    return out;
}
