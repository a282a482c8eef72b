/* Field and request-target checks for the HTTP/1 parser (hostile-inputs.md 4.1). */
#include <string.h>
#include <strings.h>

#include "h1_internal.h"
#include "magpie/common.h"

static bool is_tchar(unsigned char c)
{
    /* RFC 9110 §5.6.2 token characters. */
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
        return true;
    default:
        return false;
    }
}

bool mp_h1__token_ok(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!is_tchar((unsigned char)s[i]))
            return false;
    }
    return len > 0;
}

static bool ci_contains(const char *s, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++) {
        if (strncasecmp(s + i, needle, n) == 0)
            return true;
    }
    return false;
}

static void te_add_coding(mp_h1_te_t *te, const char *c, size_t len)
{
    if (len == 0 || te->chunked_last) {
        /* ",chunked", "chunked,", "chunked, chunked", "chunked, gzip" */
        te->bad = true;
        return;
    }
    if (mp_strieq(c, len, "chunked")) {
        te->chunked_last = true;
        return;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_tchar((unsigned char)c[i])) {
            te->bad = true; /* parameters or stray bytes: "chunked;x", "chunked\v" */
            return;
        }
    }
    if (mp_strieq(c, len, "gzip") || mp_strieq(c, len, "x-gzip") || mp_strieq(c, len, "deflate") ||
        mp_strieq(c, len, "compress") || mp_strieq(c, len, "x-compress")) {
        te->other = true;
        return;
    }
    /* "xchunked", "chunkedx": a disguised chunked is an attack, not an unknown coding. */
    if (ci_contains(c, len, "chunked"))
        te->bad = true;
    else
        te->unknown = true;
}

void mp_h1__te_add(mp_h1_te_t *te, const char *v, size_t len)
{
    te->seen = true;
    size_t i = 0;
    for (;;) {
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t s = start, e = i;
        while (s < e && (v[s] == ' ' || v[s] == '\t'))
            s++;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        te_add_coding(te, v + s, e - s);
        if (i >= len)
            return;
        i++;
    }
}

int mp_h1__te_request_status(const mp_h1_te_t *te)
{
    if (!te->seen)
        return 0;
    if (te->bad)
        return 400;
    if (te->unknown)
        return 501; /* RFC 9112 §6.1: a coding the server does not understand */
    if (!te->chunked_last)
        return 400; /* RFC 9112 §6.3: length cannot be determined */
    if (te->other)
        return 501; /* "gzip, chunked": we would have to decode gzip to re-frame */
    return 0;
}

static bool is_authority_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    /* unreserved, sub-delims, ':' for the port, '[' ']' for IP literals, '%' for zone ids */
    return c != 0 && strchr("-._~!$&'()*+,;=:[]%", c) != NULL;
}

bool mp_h1__authority_ok(const char *v, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!is_authority_char((unsigned char)v[i]))
            return false;
    }
    return true;
}

static bool target_chars_ok(const char *t, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c >= 0x7f || c == '#')
            return false;
    }
    return true;
}

static char *lower_dup(const char *s, size_t len)
{
    char *d = mp_xstrndup(s, len);
    for (size_t i = 0; i < len; i++) {
        if (d[i] >= 'A' && d[i] <= 'Z')
            d[i] = (char)(d[i] + ('a' - 'A'));
    }
    return d;
}

/* absolute-form: scheme "://" authority [path-abempty] ["?" query] (RFC 9112 §3.2.2). */
static int split_absolute(mp_http_msg_t *msg, const char *t, size_t len, const char **reason)
{
    const char *sep = memmem(t, len, "://", 3);
    size_t slen = (size_t)(sep - t);
    if (!mp_strieq(t, slen, "http") && !mp_strieq(t, slen, "https")) {
        *reason = "unsupported scheme in absolute-form target";
        return MP_ERROR;
    }
    const char *a = sep + 3, *end = t + len, *ae = a;
    while (ae < end && *ae != '/' && *ae != '?')
        ae++;
    if (ae == a || !mp_h1__authority_ok(a, (size_t)(ae - a)) || memchr(a, '@', ae - a)) {
        *reason = "bad authority in absolute-form target";
        return MP_ERROR;
    }
    msg->scheme = lower_dup(t, slen);
    msg->authority = mp_xstrndup(a, (size_t)(ae - a));
    if (ae == end)
        msg->path = mp_xstrdup("/");
    else if (*ae == '?')
        msg->path = mp_xasprintf("/%.*s", (int)(end - ae), ae);
    else
        msg->path = mp_xstrndup(ae, (size_t)(end - ae));
    return 0;
}

int mp_h1__target_split(mp_http_msg_t *msg, const char *t, size_t len, bool is_connect,
                        bool is_options, const char **reason)
{
    if (len == 0 || !target_chars_ok(t, len)) {
        *reason = "invalid character in request target";
        return MP_ERROR;
    }
    if (is_connect) {
        if (!mp_h1__authority_ok(t, len) || memchr(t, '@', len) != NULL) {
            *reason = "bad CONNECT authority";
            return MP_ERROR;
        }
        /* No path for CONNECT; "" rather than NULL so that a consumer that forgets the CONNECT
         * case fails path validation instead of dereferencing NULL. */
        msg->authority = mp_xstrndup(t, len);
        msg->path = mp_xstrdup("");
        return 0;
    }
    if (t[0] == '/') {
        msg->path = mp_xstrndup(t, len);
        return 0;
    }
    if (len == 1 && t[0] == '*' && is_options) {
        msg->path = mp_xstrdup("*");
        return 0;
    }
    if (memmem(t, len, "://", 3) != NULL)
        return split_absolute(msg, t, len, reason);
    *reason = "invalid request target form";
    return MP_ERROR;
}

bool mp_h1__trailer_forbidden(const char *name, size_t len)
{
    static const char *const forbidden[] = {
        "content-length",
        "transfer-encoding",
        "host",
        "authorization",
        "te",
        "trailer",
        "connection",
        "keep-alive",
        "upgrade",
        "proxy-connection",
        "proxy-authorization",
        "content_length",
        "transfer_encoding",
    };
    for (size_t i = 0; i < MP_ARRAY_SIZE(forbidden); i++) {
        if (mp_strieq(name, len, forbidden[i]))
            return true;
    }
    return false;
}
