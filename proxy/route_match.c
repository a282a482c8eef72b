/* The matchers a route's match carries (envoy.type.matcher.v3.StringMatcher,
 * envoy.config.route.v3.HeaderMatcher and QueryParameterMatcher) and the request header lookup
 * they share. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "magpie/grpc.h"
#include "magpie/regex.h"
#include "magpie/route.h"
#include "route_internal.h"

static bool contains_ci(const char *s, size_t len, const char *v, size_t vlen)
{
    for (size_t i = 0; i + vlen <= len; i++)
        if (strncasecmp(s + i, v, vlen) == 0)
            return true;
    return false;
}

static bool contains_cs(const char *s, size_t len, const char *v, size_t vlen)
{
    if (vlen == 0)
        return true;
    return memmem(s, len, v, vlen) != NULL;
}

static bool bytes_eq(const char *a, const char *b, size_t n, bool ignore_case)
{
    return ignore_case ? strncasecmp(a, b, n) == 0 : memcmp(a, b, n) == 0;
}

bool mp_string_matcher_match(const mp_string_matcher_t *m, const char *s, size_t len)
{
    if (s == NULL)
        s = "";
    /* ignore_case has no effect on safe_regex in Envoy; a pattern uses (?i) for that. */
    if (m->kind == MP_STR_REGEX)
        return mp_regex_match(m->regex, s, len);
    const char *v = m->value != NULL ? m->value : "";
    size_t vlen = m->value != NULL ? m->len : 0;
    switch (m->kind) {
    case MP_STR_EXACT:
        return len == vlen && bytes_eq(s, v, len, m->ignore_case);
    case MP_STR_PREFIX:
        return len >= vlen && bytes_eq(s, v, vlen, m->ignore_case);
    case MP_STR_SUFFIX:
        return len >= vlen && bytes_eq(s + len - vlen, v, vlen, m->ignore_case);
    case MP_STR_CONTAINS:
        return m->ignore_case ? contains_ci(s, len, v, vlen) : contains_cs(s, len, v, vlen);
    default:
        return false;
    }
}

/* Plain CONNECT (RFC 9110 §9.3.6): an extended CONNECT carries :protocol (RFC 8441) and is an
 * upgrade in disguise, which Envoy routes like the HTTP/1.1 upgrade it stands for.  Methods are
 * case-sensitive. */
static bool is_connect(const mp_http_msg_t *req)
{
    return req->method != NULL && strcmp(req->method, "CONNECT") == 0 &&
           mp_headers_get(&req->headers, ":protocol") == NULL;
}

/* Envoy's Grpc::Common::isGrpcRequestHeaders: a :path and a gRPC content-type (the first
 * content-type field, as Envoy's getContentTypeValue reads it). */
static bool is_grpc(const mp_http_msg_t *req)
{
    const mp_header_t *ct = mp_headers_get(&req->headers, "content-type");
    return req->path != NULL && ct != NULL && mp_grpc_is_grpc_content_type(ct->value);
}

bool mp_route__kind_match(const mp_route_t *r, const mp_http_msg_t *req)
{
    if (is_connect(req) != r->connect_matcher)
        return false;
    return !r->match_grpc || is_grpc(req);
}

/* Request fields addressed as pseudo-headers; NULL for a regular name. */
static const char *const *pseudo_field(const mp_http_msg_t *req, const char *name)
{
    if (name[0] != ':')
        return NULL;
    if (strcmp(name, ":method") == 0)
        return (const char *const *)&req->method;
    if (strcmp(name, ":path") == 0)
        return (const char *const *)&req->path;
    if (strcmp(name, ":authority") == 0)
        return (const char *const *)&req->authority;
    if (strcmp(name, ":scheme") == 0)
        return (const char *const *)&req->scheme;
    return NULL;
}

/* Every field named name, joined with "," as Envoy's getAllOfHeaderAsString does. */
static bool header_fields(const mp_headers_t *h, const char *name, const char **val, size_t *len,
                          char **joined)
{
    const mp_header_t *first = NULL;
    size_t total = 0;
    unsigned count = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (strcmp(h->v[i].name, name) != 0)
            continue;
        if (first == NULL)
            first = &h->v[i];
        total += h->v[i].value_len + (count > 0);
        count++;
    }
    if (first == NULL)
        return false;
    if (count == 1) {
        *val = first->value;
        *len = first->value_len;
        return true;
    }
    char *buf = mp_xmalloc(total + 1), *p = buf;
    for (uint32_t i = 0; i < h->n; i++) {
        if (strcmp(h->v[i].name, name) != 0)
            continue;
        if (p != buf)
            *p++ = ',';
        memcpy(p, h->v[i].value, h->v[i].value_len);
        p += h->v[i].value_len;
    }
    *p = '\0';
    *val = *joined = buf;
    *len = total;
    return true;
}

static bool set_cstr(const char *s, const char **val, size_t *len)
{
    if (s == NULL)
        return false;
    *val = s;
    *len = strlen(s);
    return true;
}

bool mp_route__header_value(const mp_http_msg_t *req, const char *name, const char **val,
                            size_t *len, char **joined)
{
    *joined = NULL;
    const char *const *field = pseudo_field(req, name);
    /* HTTP/1 carries the authority in Host, HTTP/2 in :authority; either name finds it. */
    if (field != NULL && field == (const char *const *)&req->authority && *field == NULL)
        return header_fields(&req->headers, "host", val, len, joined);
    if (field != NULL)
        return set_cstr(*field, val, len);
    if (header_fields(&req->headers, name, val, len, joined))
        return true;
    if (strcmp(name, "host") == 0)
        return set_cstr(req->authority, val, len);
    return false;
}

/* Envoy parses the value as a whole int64 (absl::SimpleAtoi); anything else does not match. */
static bool range_match(const mp_header_matcher_t *hm, const char *v, size_t len)
{
    char buf[32];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, v, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long n = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0' || isspace((unsigned char)buf[0]))
        return false;
    return n >= hm->range_start && n < hm->range_end;
}

bool mp_header_matcher_match(const mp_header_matcher_t *hm, const mp_http_msg_t *req)
{
    const char *v;
    size_t len;
    char *joined;
    bool found = mp_route__header_value(req, hm->name, &v, &len, &joined);
    if (hm->kind == MP_HDR_PRESENT) {
        free(joined);
        return (found == hm->present) != hm->invert;
    }
    if (!found && !hm->treat_missing_as_empty)
        return false; /* a missing header never matches, inverted or not (Envoy) */
    if (!found)
        set_cstr("", &v, &len);
    bool ok = hm->kind == MP_HDR_RANGE ? range_match(hm, v, len)
                                       : mp_string_matcher_match(&hm->str, v, len);
    free(joined);
    return ok != hm->invert;
}

/* First value of parameter name in the raw query (no percent-decoding, as Envoy's route
 * matcher); a parameter without "=" has the empty value. */
static bool query_param(const char *q, const char *name, const char **val, size_t *len)
{
    size_t nlen = strlen(name);
    while (*q != '\0' && *q != '#') {
        size_t plen = strcspn(q, "&#");
        const char *eq = memchr(q, '=', plen);
        size_t klen = eq != NULL ? (size_t)(eq - q) : plen;
        if (klen == nlen && memcmp(q, name, nlen) == 0) {
            *val = eq != NULL ? eq + 1 : q + plen;
            *len = eq != NULL ? plen - klen - 1 : 0;
            return true;
        }
        q += plen;
        if (*q == '&')
            q++;
    }
    return false;
}

static bool query_matches(const mp_query_matcher_t *qm, const char *path)
{
    const char *q = path != NULL ? strchr(path, '?') : NULL;
    const char *v;
    size_t len;
    /* An absent parameter never matches; a present one matches on presence alone unless a
     * string_match is given. */
    if (q == NULL || !query_param(q + 1, qm->name, &v, &len))
        return false;
    return !qm->has_string || mp_string_matcher_match(&qm->str, v, len);
}

bool mp_route__headers_match(const mp_route_t *r, const mp_http_msg_t *req)
{
    for (uint32_t i = 0; i < r->n_headers; i++)
        if (!mp_header_matcher_match(&r->headers[i], req))
            return false;
    for (uint32_t i = 0; i < r->n_query; i++)
        if (!query_matches(&r->query[i], req->path))
            return false;
    return true;
}
