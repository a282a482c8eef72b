/* The request hash for consistent-hashing clusters (include/magpie/route_hash.h), computed the
 * way Envoy's router does so that a header, cookie or client address maps to the same host
 * behind a magpie sidecar as behind an Envoy one. */
#include <stdlib.h>
#include <string.h>

#include "magpie/lb.h"
#include "magpie/lb_hash.h"
#include "magpie/route_hash.h"

static uint64_t hash_str(const char *s, size_t len)
{
    return mp_hash_xx64(s, len, 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The pseudo-headers live outside the header list; Envoy lets a policy name them. */
static const char *pseudo_value(const mp_http_msg_t *req, const char *name)
{
    if (strcmp(name, ":authority") == 0 || strcmp(name, "host") == 0)
        return req->authority;
    if (strcmp(name, ":path") == 0)
        return req->path;
    if (strcmp(name, ":method") == 0)
        return req->method;
    if (strcmp(name, ":scheme") == 0)
        return req->scheme;
    return NULL;
}

/* Several fields of one name hash as Envoy does: values sorted, then hashed as one run of bytes
 * (its xxHash64 over a span is the streaming hash of the concatenation). */
static bool hash_header(const mp_http_msg_t *req, const char *name, uint64_t *out)
{
    unsigned n = mp_headers_count(&req->headers, name);
    if (n == 0) {
        const char *v = pseudo_value(req, name);
        if (v == NULL)
            return false;
        *out = hash_str(v, strlen(v));
        return true;
    }
    const char **vals = mp_xmalloc(n * sizeof(*vals));
    size_t total = 0, k = 0;
    for (uint32_t i = 0; i < req->headers.n && k < n; i++)
        if (strcmp(req->headers.v[i].name, name) == 0) {
            vals[k++] = req->headers.v[i].value;
            total += req->headers.v[i].value_len;
        }
    qsort(vals, k, sizeof(*vals), cmp_str);
    char *joined = mp_xmalloc(total + 1);
    size_t off = 0;
    for (size_t i = 0; i < k; i++) {
        size_t len = strlen(vals[i]);
        memcpy(joined + off, vals[i], len);
        off += len;
    }
    *out = hash_str(joined, off);
    free(joined);
    free(vals);
    return true;
}

/* Finds name=value in one Cookie header ("a=1; b=2"); a quoted value loses its quotes. */
static bool cookie_in(const char *s, const char *name, const char **v, size_t *vlen)
{
    size_t nlen = strlen(name);
    while (*s != '\0') {
        while (*s == ' ' || *s == ';')
            s++;
        const char *end = strchr(s, ';');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        if (len > nlen && strncmp(s, name, nlen) == 0 && s[nlen] == '=') {
            *v = s + nlen + 1;
            *vlen = len - nlen - 1;
            while (*vlen > 0 && (*v)[*vlen - 1] == ' ')
                (*vlen)--;
            if (*vlen >= 2 && (*v)[0] == '"' && (*v)[*vlen - 1] == '"') {
                (*v)++;
                *vlen -= 2;
            }
            return true;
        }
        s += len;
    }
    return false;
}

static bool hash_cookie(const mp_http_msg_t *req, const char *name, uint64_t *out)
{
    for (uint32_t i = 0; i < req->headers.n; i++) {
        const char *v;
        size_t vlen;
        if (strcmp(req->headers.v[i].name, "cookie") == 0 &&
            cookie_in(req->headers.v[i].value, name, &v, &vlen)) {
            *out = hash_str(v, vlen);
            return true;
        }
    }
    return false;
}

/* The client's IP without the port or IPv6 brackets, as Envoy's addressAsString() gives it. */
static bool hash_source_ip(const char *peer, uint64_t *out)
{
    if (peer == NULL || peer[0] == '\0')
        return false;
    const char *colon = strrchr(peer, ':');
    size_t len = colon ? (size_t)(colon - peer) : strlen(peer);
    if (peer[0] == '[' && len >= 2 && peer[len - 1] == ']') {
        peer++;
        len -= 2;
    }
    *out = hash_str(peer, len);
    return true;
}

/* The first `name` parameter of the query string, its value as sent (not percent-decoded); a
 * bare `name` counts as an empty value. */
static bool hash_query(const char *path, const char *name, uint64_t *out)
{
    const char *q = path ? strchr(path, '?') : NULL;
    if (q == NULL)
        return false;
    size_t nlen = strlen(name);
    for (const char *p = q + 1; *p != '\0';) {
        const char *end = p + strcspn(p, "&#");
        if ((size_t)(end - p) >= nlen && strncmp(p, name, nlen) == 0 &&
            (p + nlen == end || p[nlen] == '=')) {
            const char *v = p + nlen == end ? end : p + nlen + 1;
            *out = hash_str(v, (size_t)(end - v));
            return true;
        }
        if (*end != '&')
            break;
        p = end + 1;
    }
    return false;
}

static bool eval_policy(const mp_hash_policy_t *p, const mp_http_msg_t *req, const char *peer,
                        uint64_t *out)
{
    switch (p->kind) {
    case MP_HASH_POLICY_HEADER:
        return hash_header(req, p->name, out);
    case MP_HASH_POLICY_COOKIE:
        return hash_cookie(req, p->name, out);
    case MP_HASH_POLICY_SOURCE_IP:
        return hash_source_ip(peer, out);
    case MP_HASH_POLICY_QUERY:
        return hash_query(req->path, p->name, out);
    case MP_HASH_POLICY_FILTER_STATE:
    default:
        return false;
    }
}

bool mp_route_hash_compute(const mp_route_t *r, const mp_http_msg_t *req, const char *peer,
                           uint64_t *out)
{
    bool have = false;
    uint64_t hash = 0;
    for (uint32_t i = 0; r != NULL && i < r->n_hash_policies; i++) {
        const mp_hash_policy_t *p = &r->hash_policies[i];
        uint64_t h;
        if (eval_policy(p, req, peer, &h)) {
            /* Rotating first keeps two identical policies from cancelling out. */
            hash = (have ? (hash << 1 | hash >> 63) : 0) ^ h;
            have = true;
        }
        if (p->terminal && have)
            break;
    }
    *out = hash;
    return have;
}

uint64_t mp_route_hash(const mp_route_t *r, const mp_http_msg_t *req, const char *peer)
{
    uint64_t h;
    return mp_route_hash_compute(r, req, peer, &h) ? h : mp_random();
}

void mp_hash_policies_free(mp_hash_policy_t *policies, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(policies[i].name);
        free(policies[i].path);
    }
    free(policies);
}
