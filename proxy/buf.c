/* Chained, refcounted byte buffers (include/magpie/buf.h).
 *
 * Slices and segments come from small per-thread free lists so that the steady state of a
 * worker (read a request, move it upstream, write it, drop it) does not call malloc.  A
 * pthread key destructor returns a thread's cached blocks to malloc when the thread exits. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "magpie/buf.h"
#include "magpie/common.h"

#define SLICE_CACHE_MAX 64
#define SEG_CACHE_MAX 256
#define WRITE_IOV_MAX 64

/* A cached block reuses its first bytes as the free-list link. */
typedef struct free_node {
    struct free_node *next;
} free_node_t;

typedef struct buf_cache {
    free_node_t *slices;
    free_node_t *segs;
    unsigned n_slices;
    unsigned n_segs;
    bool registered;
} buf_cache_t;

static _Thread_local buf_cache_t tl_cache;
static atomic_size_t live_slices;
static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

static void free_list(free_node_t *n)
{
    while (n != NULL) {
        free_node_t *next = n->next;
        free(n);
        n = next;
    }
}

static void on_thread_exit(void *arg)
{
    buf_cache_t *c = arg;
    free_list(c->slices);
    free_list(c->segs);
    c->slices = c->segs = NULL;
    c->n_slices = c->n_segs = 0;
}

static void make_cache_key(void)
{
    pthread_key_create(&cache_key, on_thread_exit);
}

static buf_cache_t *cache_get(void)
{
    buf_cache_t *c = &tl_cache;
    if (!c->registered) {
        pthread_once(&cache_key_once, make_cache_key);
        pthread_setspecific(cache_key, c);
        c->registered = true;
    }
    return c;
}

static mp_slice_t *slice_new(size_t cap)
{
    buf_cache_t *c = cache_get();
    mp_slice_t *s;
    if (cap <= MP_SLICE_SIZE && c->slices != NULL) {
        s = (mp_slice_t *)c->slices;
        c->slices = c->slices->next;
        c->n_slices--;
    } else {
        cap = MP_MAX(cap, (size_t)MP_SLICE_SIZE);
        s = mp_xmalloc(sizeof(*s) + cap);
    }
    s->refs = 1;
    s->cap = (uint32_t)MP_MAX(cap, (size_t)MP_SLICE_SIZE);
    atomic_fetch_add_explicit(&live_slices, 1, memory_order_relaxed);
    return s;
}

static void slice_unref(mp_slice_t *s)
{
    if (--s->refs > 0)
        return;
    atomic_fetch_sub_explicit(&live_slices, 1, memory_order_relaxed);
    buf_cache_t *c = cache_get();
    if (s->cap == MP_SLICE_SIZE && c->n_slices < SLICE_CACHE_MAX) {
        free_node_t *n = (free_node_t *)s;
        n->next = c->slices;
        c->slices = n;
        c->n_slices++;
        return;
    }
    free(s);
}

static mp_buf_seg_t *seg_new(mp_slice_t *s, uint32_t off, uint32_t len)
{
    buf_cache_t *c = cache_get();
    mp_buf_seg_t *g;
    if (c->segs != NULL) {
        g = (mp_buf_seg_t *)c->segs;
        c->segs = c->segs->next;
        c->n_segs--;
    } else {
        g = mp_xmalloc(sizeof(*g));
    }
    g->next = NULL;
    g->slice = s;
    g->off = off;
    g->len = len;
    return g;
}

static void seg_free(mp_buf_seg_t *g)
{
    slice_unref(g->slice);
    buf_cache_t *c = cache_get();
    if (c->n_segs < SEG_CACHE_MAX) {
        free_node_t *n = (free_node_t *)g;
        n->next = c->segs;
        c->segs = n;
        c->n_segs++;
        return;
    }
    free(g);
}

static void push_seg(mp_buf_t *b, mp_buf_seg_t *g)
{
    g->next = NULL;
    if (b->tail != NULL)
        b->tail->next = g;
    else
        b->head = g;
    b->tail = g;
    b->len += g->len;
}

/* Free bytes at the end of the tail slice that this buffer alone may write to. */
static size_t tail_room(const mp_buf_t *b)
{
    const mp_buf_seg_t *t = b->tail;
    if (t == NULL || t->slice->refs != 1)
        return 0;
    return t->slice->cap - (t->off + t->len);
}

static char *tail_end(const mp_buf_t *b)
{
    return b->tail->slice->data + b->tail->off + b->tail->len;
}

void mp_buf_init(mp_buf_t *b)
{
    b->head = b->tail = NULL;
    b->len = 0;
}

void mp_buf_clear(mp_buf_t *b)
{
    mp_buf_seg_t *g = b->head;
    while (g != NULL) {
        mp_buf_seg_t *next = g->next;
        seg_free(g);
        g = next;
    }
    mp_buf_init(b);
}

void mp_buf_append(mp_buf_t *b, const void *data, size_t len)
{
    const char *p = data;
    size_t room = tail_room(b);
    if (room > 0 && len > 0) {
        size_t n = MP_MIN(room, len);
        memcpy(tail_end(b), p, n);
        b->tail->len += (uint32_t)n;
        b->len += n;
        p += n;
        len -= n;
    }
    while (len > 0) {
        mp_slice_t *s = slice_new(MP_SLICE_SIZE);
        size_t n = MP_MIN((size_t)s->cap, len);
        memcpy(s->data, p, n);
        push_seg(b, seg_new(s, 0, (uint32_t)n));
        p += n;
        len -= n;
    }
}

void mp_buf_append_str(mp_buf_t *b, const char *s)
{
    mp_buf_append(b, s, strlen(s));
}

void mp_buf_printf(mp_buf_t *b, const char *fmt, ...)
{
    char stack[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(stack, sizeof(stack), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(stack)) {
        mp_buf_append(b, stack, (size_t)n);
        return;
    }
    char *heap = mp_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(heap, (size_t)n + 1, fmt, ap);
    va_end(ap);
    mp_buf_append(b, heap, (size_t)n);
    free(heap);
}

void mp_buf_move(mp_buf_t *dst, mp_buf_t *src, size_t n)
{
    if (dst == src)
        return;
    while (n > 0 && src->head != NULL) {
        mp_buf_seg_t *g = src->head;
        if (g->len <= n) {
            src->head = g->next;
            if (src->head == NULL)
                src->tail = NULL;
            src->len -= g->len;
            n -= g->len;
            push_seg(dst, g);
            continue;
        }
        /* Split: both buffers now window the same slice, which is therefore shared. */
        g->slice->refs++;
        push_seg(dst, seg_new(g->slice, g->off, (uint32_t)n));
        g->off += (uint32_t)n;
        g->len -= (uint32_t)n;
        src->len -= n;
        n = 0;
    }
}

void mp_buf_consume(mp_buf_t *b, size_t n)
{
    while (n > 0 && b->head != NULL) {
        mp_buf_seg_t *g = b->head;
        if (g->len > n) {
            g->off += (uint32_t)n;
            g->len -= (uint32_t)n;
            b->len -= n;
            return;
        }
        b->head = g->next;
        if (b->head == NULL)
            b->tail = NULL;
        b->len -= g->len;
        n -= g->len;
        seg_free(g);
    }
}

int mp_buf_peek_iov(const mp_buf_t *b, struct iovec *iov, int max)
{
    int i = 0;
    for (const mp_buf_seg_t *g = b->head; g != NULL && i < max; g = g->next) {
        if (g->len == 0)
            continue;
        iov[i].iov_base = g->slice->data + g->off;
        iov[i].iov_len = g->len;
        i++;
    }
    return i;
}

size_t mp_buf_copy_out(const mp_buf_t *b, void *out, size_t len)
{
    char *o = out;
    size_t done = 0;
    for (const mp_buf_seg_t *g = b->head; g != NULL && done < len; g = g->next) {
        size_t n = MP_MIN((size_t)g->len, len - done);
        memcpy(o + done, g->slice->data + g->off, n);
        done += n;
    }
    return done;
}

char *mp_buf_pullup(mp_buf_t *b, size_t n)
{
    if (n > b->len || b->head == NULL)
        return NULL;
    if (b->head->len >= n)
        return b->head->slice->data + b->head->off;
    /* Spans segments: copy into one (possibly oversized) slice that replaces the first n bytes. */
    mp_slice_t *s = slice_new(n);
    mp_buf_copy_out(b, s->data, n);
    mp_buf_consume(b, n);
    mp_buf_seg_t *g = seg_new(s, 0, (uint32_t)n);
    g->next = b->head;
    b->head = g;
    if (b->tail == NULL)
        b->tail = g;
    b->len += n;
    return s->data;
}

/* One readv into the tail's free space and a fresh slice: a large read costs one syscall, and a
 * small one still lands in the tail without wasting a slice. */
ssize_t mp_buf_read_fd(mp_buf_t *b, int fd, size_t max)
{
    if (max == 0)
        max = MP_SLICE_SIZE;
    struct iovec iov[2];
    int n_iov = 0;
    size_t room = MP_MIN(tail_room(b), max);
    if (room > 0) {
        iov[n_iov].iov_base = tail_end(b);
        iov[n_iov++].iov_len = room;
    }
    mp_slice_t *fresh = NULL;
    if (room < max) {
        fresh = slice_new(MP_SLICE_SIZE);
        iov[n_iov].iov_base = fresh->data;
        iov[n_iov++].iov_len = MP_MIN(max - room, (size_t)fresh->cap);
    }
    ssize_t r = n_iov == 1 ? read(fd, iov[0].iov_base, iov[0].iov_len) : readv(fd, iov, n_iov);
    if (r <= 0) {
        if (fresh != NULL) {
            int saved = errno;
            slice_unref(fresh);
            errno = saved;
        }
        return r;
    }
    size_t got = (size_t)r, into_tail = MP_MIN(got, room);
    if (into_tail > 0) {
        b->tail->len += (uint32_t)into_tail;
        b->len += into_tail;
    }
    if (fresh == NULL)
        return r;
    if (got > into_tail)
        push_seg(b, seg_new(fresh, 0, (uint32_t)(got - into_tail)));
    else
        slice_unref(fresh);
    return r;
}

ssize_t mp_buf_read_from(mp_buf_t *b, size_t max, mp_buf_source_fn fn, void *ctx)
{
    size_t total = 0;
    while (total < max) {
        size_t room = tail_room(b);
        mp_slice_t *fresh = NULL;
        char *dst;
        if (room == 0) {
            fresh = slice_new(MP_SLICE_SIZE);
            dst = fresh->data;
            room = fresh->cap;
        } else {
            dst = tail_end(b);
        }
        room = MP_MIN(room, max - total);
        ssize_t r = fn(ctx, dst, room);
        if (r <= 0) {
            int saved = errno;
            if (fresh != NULL)
                slice_unref(fresh);
            errno = saved;
            return total > 0 ? (ssize_t)total : r;
        }
        if (fresh != NULL) {
            push_seg(b, seg_new(fresh, 0, (uint32_t)r));
        } else {
            b->tail->len += (uint32_t)r;
            b->len += (size_t)r;
        }
        total += (size_t)r;
        if ((size_t)r < room)
            break; /* the source has nothing more for now */
    }
    return (ssize_t)total;
}

ssize_t mp_buf_write_fd(mp_buf_t *b, int fd)
{
    struct iovec iov[WRITE_IOV_MAX];
    int n = mp_buf_peek_iov(b, iov, WRITE_IOV_MAX);
    if (n == 0)
        return 0;
    ssize_t w = n == 1 ? write(fd, iov[0].iov_base, iov[0].iov_len) : writev(fd, iov, n);
    if (w > 0)
        mp_buf_consume(b, (size_t)w);
    return w;
}

size_t mp_slice_live_count(void)
{
    return atomic_load_explicit(&live_slices, memory_order_relaxed);
}

void mp_buf_append_ref(mp_buf_t *b, mp_slice_t *s, const char *p, size_t len)
{
    if (len == 0)
        return;
    mp_buf_seg_t *tail = b->tail;
    uint32_t off = (uint32_t)(p - s->data);
    /* Contiguous with the tail window onto the same slice: widen it instead of a new segment. */
    if (tail != NULL && tail->slice == s && tail->off + tail->len == off) {
        tail->len += (uint32_t)len;
        b->len += len;
        return;
    }
    s->refs++;
    push_seg(b, seg_new(s, off, (uint32_t)len));
}

void mp_buf_append_u64(mp_buf_t *b, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    mp_buf_append(b, tmp + i, sizeof(tmp) - i);
}

void mp_buf_append_hex(mp_buf_t *b, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = digits[v & 15];
        v >>= 4;
    } while (v != 0);
    mp_buf_append(b, tmp + i, sizeof(tmp) - i);
}
