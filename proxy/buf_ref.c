/* Appends that the data path makes per request: by reference (how a body crosses from one
 * connection's input to another's output without a copy) and numbers without printf. */
#include "magpie/buf.h"
#include "magpie/common.h"

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
    mp_buf_seg_t *seg = mp_xmalloc(sizeof(*seg));
    seg->next = NULL;
    seg->slice = s;
    seg->off = off;
    seg->len = (uint32_t)len;
    s->refs++;
    if (tail != NULL)
        tail->next = seg;
    else
        b->head = seg;
    b->tail = seg;
    b->len += len;
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
