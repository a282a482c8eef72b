/* Weak stand-ins for the parts of include/magpie/buf.h and http.h that the observability tests
 * use, so those tests link while proxy/buf.c and proxy/http.c are written elsewhere.  They are
 * weak: once the real objects are in libmagpie.a and get linked, the real ones win.
 * The buffer stub keeps everything in one segment over one growing slice. */
#ifndef MAGPIE_STUBS_BUF_HTTP_H
#define MAGPIE_STUBS_BUF_HTTP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/buf.h"
#include "magpie/common.h"
#include "magpie/http.h"

#define MP_WEAK __attribute__((weak))

MP_WEAK void mp_buf_init(mp_buf_t *b)
{
    memset(b, 0, sizeof(*b));
}

MP_WEAK void mp_buf_clear(mp_buf_t *b)
{
    if (b->head) {
        free(b->head->slice);
        free(b->head);
    }
    memset(b, 0, sizeof(*b));
}

MP_WEAK void mp_buf_append(mp_buf_t *b, const void *data, size_t len)
{
    if (b->head == NULL) {
        b->head = b->tail = mp_xcalloc(1, sizeof(*b->head));
        b->head->slice = mp_xcalloc(1, sizeof(mp_slice_t) + 64);
        b->head->slice->cap = 64;
        b->head->slice->refs = 1;
    }
    mp_buf_seg_t *s = b->head;
    if (s->len + len > s->slice->cap) {
        size_t cap = (s->len + len) * 2;
        s->slice = mp_xrealloc(s->slice, sizeof(mp_slice_t) + cap);
        s->slice->cap = (uint32_t)cap;
    }
    memcpy(s->slice->data + s->len, data, len);
    s->len += (uint32_t)len;
    b->len += len;
}

MP_WEAK void mp_buf_append_str(mp_buf_t *b, const char *s)
{
    mp_buf_append(b, s, strlen(s));
}

MP_WEAK void mp_buf_printf(mp_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n > 0)
        mp_buf_append(b, s, (size_t)n);
    free(s);
}

MP_WEAK size_t mp_buf_copy_out(const mp_buf_t *b, void *out, size_t len)
{
    size_t done = 0;
    for (const mp_buf_seg_t *s = b->head; s && done < len; s = s->next) {
        size_t n = s->len < len - done ? s->len : len - done;
        memcpy((char *)out + done, s->slice->data + s->off, n);
        done += n;
    }
    return done;
}

MP_WEAK void mp_headers_init(mp_headers_t *h)
{
    memset(h, 0, sizeof(*h));
}

MP_WEAK void mp_headers_free(mp_headers_t *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        free(h->v[i].name);
        free(h->v[i].value);
    }
    free(h->v);
    memset(h, 0, sizeof(*h));
}

MP_WEAK void mp_headers_add_cstr(mp_headers_t *h, const char *name, const char *value)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 8;
        h->v = mp_xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    mp_header_t *f = &h->v[h->n++];
    f->name = mp_xstrdup(name);
    for (char *p = f->name; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    f->value = mp_xstrdup(value);
    f->name_len = (uint32_t)strlen(name);
    f->value_len = (uint32_t)strlen(value);
}

MP_WEAK mp_header_t *mp_headers_get(const mp_headers_t *h, const char *name)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (strcmp(h->v[i].name, name) == 0)
            return &h->v[i];
    }
    return NULL;
}

/* Test helper (not a stub): the whole buffer as a heap C string. */
static inline char *buf_to_str(const mp_buf_t *b)
{
    char *s = mp_xmalloc(mp_buf_len(b) + 1);
    s[mp_buf_copy_out(b, s, mp_buf_len(b))] = '\0';
    return s;
}

#endif
