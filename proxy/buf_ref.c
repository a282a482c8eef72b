/* Appending by reference: how a body crosses from one connection's input to another's output
 * without a copy. */
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
