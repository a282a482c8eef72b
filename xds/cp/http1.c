/* magpie-cp: just enough HTTP/1.1 for REST-JSON discovery (a request line, Content-Length, a
 * body; no chunked uploads: Envoy's REST client and curl both send Content-Length). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cp.h"

#define HTTP1_MAX_HEAD (64 * 1024)
#define HTTP1_MAX_BODY (16 * 1024 * 1024)

/* Value of header name in the head (CRLF-separated lines after the request line), or NULL. */
static const char *header_value(const char *head, const char *end, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p != NULL && p < end; p = strstr(p, "\r\n")) {
        p += 2;
        if ((size_t)(end - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *e = strstr(v, "\r\n");
            *vlen = (size_t)((e ? e : end) - v);
            return v;
        }
    }
    return NULL;
}

static int request_line(const char *buf, char *method, size_t method_size, char *path,
                        size_t path_size)
{
    const char *sp = strchr(buf, ' ');
    if (sp == NULL || (size_t)(sp - buf) >= method_size)
        return MP_ERROR;
    memcpy(method, buf, (size_t)(sp - buf));
    method[sp - buf] = '\0';
    const char *sp2 = strchr(sp + 1, ' ');
    const char *eol = strstr(buf, "\r\n");
    if (sp2 == NULL || eol == NULL || sp2 > eol || (size_t)(sp2 - sp - 1) >= path_size)
        return MP_ERROR;
    memcpy(path, sp + 1, (size_t)(sp2 - sp - 1));
    path[sp2 - sp - 1] = '\0';
    return 0;
}

int mp_cp_http1_parse(const char *buf, size_t len, char *method, size_t method_size, char *path,
                      size_t path_size, size_t *body_off, size_t *body_len, size_t *total,
                      bool *close)
{
    /* buf is NUL-terminated by the caller, so the string functions stop at len. */
    const char *end = strstr(buf, "\r\n\r\n");
    if (end == NULL)
        return len > HTTP1_MAX_HEAD ? MP_ERROR : MP_AGAIN;
    if (request_line(buf, method, method_size, path, path_size) != 0)
        return MP_ERROR;
    size_t vlen = 0;
    const char *cl = header_value(buf, end, "content-length", &vlen);
    size_t n = cl ? strtoul(cl, NULL, 10) : 0;
    if (n > HTTP1_MAX_BODY || header_value(buf, end, "transfer-encoding", &vlen) != NULL)
        return MP_ERROR;
    const char *conn = header_value(buf, end, "connection", &vlen);
    *close = conn != NULL && vlen >= 5 && strncasecmp(conn, "close", 5) == 0;
    *body_off = (size_t)(end + 4 - buf);
    *body_len = n;
    *total = *body_off + n;
    return *total <= len ? 0 : MP_AGAIN;
}
