/* Request path normalisation before routing (mp_path_normalize in include/magpie/h1.h).
 *
 * Mirrors Envoy's normalize_path + merge_slashes so that routes and RBAC see the path the
 * upstream will act on: "/%2e%2e/admin" must not slip past a "/admin" rule (CVE-2019-9901). */
#include <stdlib.h>
#include <string.h>

#include "magpie/common.h"
#include "magpie/h1.h"

static bool is_unreserved(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* RFC 3986 §6.2.2.1-2: decode escapes of unreserved characters, upper-case the others.  An
 * escaped '/' stays escaped: decoding it would change the path's segments.  Writes into out
 * (at least len bytes); returns the new length or -1 on a malformed escape. */
static long percent_normalize(const char *in, size_t len, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] != '%') {
            out[o++] = in[i];
            continue;
        }
        if (i + 2 >= len)
            return -1;
        int hi = mp_hex_digit(in[i + 1]), lo = mp_hex_digit(in[i + 2]);
        if (hi < 0 || lo < 0)
            return -1;
        int c = hi * 16 + lo;
        if (is_unreserved(c)) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[hi];
            out[o++] = hex[lo];
        }
        i += 2;
    }
    return (long)o;
}

/* Drops the last segment of out[0..*o) together with its leading '/'. */
static void pop_segment(const char *out, size_t *o)
{
    while (*o > 0 && out[*o - 1] != '/')
        (*o)--;
    if (*o > 0)
        (*o)--;
}

/* RFC 3986 §5.2.4 on an absolute path (in[0] == '/'); out may not alias in. */
static size_t remove_dot_segments(const char *in, size_t n, char *out)
{
    size_t i = 0, o = 0;
    while (i < n) {
        const char *r = in + i;
        size_t rest = n - i;
        if (rest >= 3 && memcmp(r, "/./", 3) == 0) {
            i += 2;
        } else if (rest == 2 && memcmp(r, "/.", 2) == 0) {
            out[o++] = '/';
            i = n;
        } else if (rest >= 4 && memcmp(r, "/../", 4) == 0) {
            pop_segment(out, &o);
            i += 3;
        } else if (rest == 3 && memcmp(r, "/..", 3) == 0) {
            pop_segment(out, &o);
            out[o++] = '/';
            i = n;
        } else {
            out[o++] = in[i++];
            while (i < n && in[i] != '/')
                out[o++] = in[i++];
        }
    }
    return o;
}

static size_t merge_runs(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '/' && o > 0 && s[o - 1] == '/')
            continue;
        s[o++] = s[i];
    }
    return o;
}

char *mp_path_normalize(const char *path, bool normalize, bool merge_slashes,
                        const char **err_reason)
{
    if (strcmp(path, "*") == 0)
        return mp_xstrdup(path);
    if (path[0] != '/') {
        *err_reason = "path must start with '/'";
        return NULL;
    }
    const char *q = strchr(path, '?');
    size_t plen = q ? (size_t)(q - path) : strlen(path), qlen = q ? strlen(q) : 0;
    char *tmp = mp_xmalloc(plen + 1), *out = mp_xmalloc(plen + qlen + 1);
    size_t n = plen;
    memcpy(tmp, path, plen);
    if (normalize) {
        long m = percent_normalize(path, plen, tmp);
        if (m < 0) {
            free(tmp);
            free(out);
            *err_reason = "malformed percent-encoding in path";
            return NULL;
        }
        n = remove_dot_segments(tmp, (size_t)m, out);
    } else {
        memcpy(out, tmp, n);
    }
    free(tmp);
    if (merge_slashes)
        n = merge_runs(out, n);
    memcpy(out + n, q ? q : "", qlen + 1);
    return out;
}
