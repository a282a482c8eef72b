/* Codec-independent HTTP messages (include/magpie/http.h). */
#include <stdlib.h>
#include <string.h>

#include "magpie/common.h"
#include "magpie/http.h"

void mp_headers_init(mp_headers_t *h)
{
    h->v = NULL;
    h->n = 0;
    h->cap = 0;
}

/* A field's name and value share one allocation, name first: half the mallocs per header. */
static void header_release(mp_header_t *f)
{
    free(f->name);
}

static void header_fill(mp_header_t *f, const char *name, size_t name_len, const char *value,
                        size_t value_len)
{
    char *block = mp_xmalloc(name_len + value_len + 2);
    memcpy(block, name, name_len);
    block[name_len] = '\0';
    memcpy(block + name_len + 1, value, value_len);
    block[name_len + 1 + value_len] = '\0';
    f->name = block;
    f->value = block + name_len + 1;
    f->name_len = (uint32_t)name_len;
    f->value_len = (uint32_t)value_len;
}

void mp_headers_free(mp_headers_t *h)
{
    for (uint32_t i = 0; i < h->n; i++)
        header_release(&h->v[i]);
    free(h->v);
    mp_headers_init(h);
}

mp_headers_t *mp_headers_new(void)
{
    mp_headers_t *h = mp_xmalloc(sizeof(*h));
    mp_headers_init(h);
    return h;
}

void mp_headers_delete(mp_headers_t *h)
{
    if (h == NULL)
        return;
    mp_headers_free(h);
    free(h);
}

static inline char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
}

void mp_headers_add(mp_headers_t *h, const char *name, size_t name_len, const char *value,
                    size_t value_len)
{
    if (h->n == h->cap) {
        /* 16 covers a typical request head in one allocation. */
        h->cap = h->cap ? h->cap * 2 : 16;
        h->v = mp_xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    mp_header_t *f = &h->v[h->n++];
    header_fill(f, name, name_len, value, value_len);
    for (size_t i = 0; i < name_len; i++)
        f->name[i] = ascii_lower(f->name[i]);
}

void mp_headers_add_cstr(mp_headers_t *h, const char *name, const char *value)
{
    mp_headers_add(h, name, strlen(name), value, strlen(value));
}

static bool name_is(const mp_header_t *f, const char *name, size_t len)
{
    return f->name_len == len && memcmp(f->name, name, len) == 0;
}

void mp_headers_set(mp_headers_t *h, const char *name, const char *value, size_t value_len)
{
    size_t len = strlen(name);
    for (uint32_t i = 0; i < h->n; i++) {
        if (!name_is(&h->v[i], name, len))
            continue;
        mp_header_t *f = &h->v[i];
        if (value_len <= f->value_len) {
            memcpy(f->value, value, value_len); /* fits where the old value was */
            f->value[value_len] = '\0';
            f->value_len = (uint32_t)value_len;
        } else {
            char *old = f->name;
            header_fill(f, old, f->name_len, value, value_len);
            free(old);
        }
        /* Any later duplicates go, so exactly one field remains. */
        for (uint32_t j = h->n; j-- > i + 1;) {
            if (name_is(&h->v[j], name, len)) {
                header_release(&h->v[j]);
                memmove(&h->v[j], &h->v[j + 1], (h->n - j - 1) * sizeof(*h->v));
                h->n--;
            }
        }
        return;
    }
    mp_headers_add(h, name, len, value, value_len);
}

mp_header_t *mp_headers_get(const mp_headers_t *h, const char *name)
{
    size_t len = strlen(name);
    for (uint32_t i = 0; i < h->n; i++) {
        if (name_is(&h->v[i], name, len))
            return &h->v[i];
    }
    return NULL;
}

unsigned mp_headers_count(const mp_headers_t *h, const char *name)
{
    size_t len = strlen(name);
    unsigned n = 0;
    for (uint32_t i = 0; i < h->n; i++)
        n += name_is(&h->v[i], name, len);
    return n;
}

unsigned mp_headers_remove_if(mp_headers_t *h, bool (*pred)(const mp_header_t *f, const void *ctx),
                              const void *ctx)
{
    uint32_t out = 0;
    unsigned gone = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (pred(&h->v[i], ctx)) {
            header_release(&h->v[i]);
            gone++;
            continue;
        }
        h->v[out++] = h->v[i];
    }
    h->n = out;
    return gone;
}

typedef struct name_ref {
    const char *name;
    size_t len;
} name_ref_t;

static bool has_name(const mp_header_t *f, const void *ctx)
{
    const name_ref_t *n = ctx;
    return name_is(f, n->name, n->len);
}

unsigned mp_headers_remove(mp_headers_t *h, const char *name)
{
    name_ref_t n = {name, strlen(name)};
    return mp_headers_remove_if(h, has_name, &n);
}

void mp_headers_copy(mp_headers_t *dst, const mp_headers_t *src)
{
    for (uint32_t i = 0; i < src->n; i++) {
        const mp_header_t *f = &src->v[i];
        mp_headers_add(dst, f->name, f->name_len, f->value, f->value_len);
    }
}

mp_http_msg_t *mp_http_msg_new(void)
{
    mp_http_msg_t *m = mp_xcalloc(1, sizeof(*m));
    mp_headers_init(&m->headers);
    m->version = MP_HTTP_11;
    m->content_length = -1;
    return m;
}

void mp_http_msg_free(mp_http_msg_t *m)
{
    if (m == NULL)
        return;
    mp_headers_free(&m->headers);
    free(m->method);
    free(m->path);
    free(m->authority);
    free(m->scheme);
    free(m->protocol);
    free(m);
}

typedef struct reason {
    int status;
    const char *text;
} reason_t;

/* RFC 9110 §15 plus the few extension codes proxies meet in practice; sorted for bsearch. */
static const reason_t reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {102, "Processing"},
    {103, "Early Hints"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {207, "Multi-Status"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {305, "Use Proxy"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Content"},
    {425, "Too Early"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {451, "Unavailable For Legal Reasons"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
    {507, "Insufficient Storage"},
    {511, "Network Authentication Required"},
};

static int cmp_reason(const void *key, const void *elem)
{
    return *(const int *)key - ((const reason_t *)elem)->status;
}

const char *mp_http_reason(int status)
{
    const reason_t *r =
        bsearch(&status, reasons, MP_ARRAY_SIZE(reasons), sizeof(reasons[0]), cmp_reason);
    return r ? r->text : "Unknown";
}

static bool lname_is(const char *lname, size_t len, const char *name)
{
    return strlen(name) == len && memcmp(name, lname, len) == 0;
}

bool mp_http_is_connection_specific(const char *lname, size_t len)
{
    static const char *const names[] = {
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
    };
    for (size_t i = 0; i < MP_ARRAY_SIZE(names); i++)
        if (lname_is(lname, len, names[i]))
            return true;
    return false;
}

bool mp_http_is_hop_by_hop(const char *lname, size_t len)
{
    return mp_http_is_connection_specific(lname, len) || lname_is(lname, len, "te") ||
           lname_is(lname, len, "trailer");
}
