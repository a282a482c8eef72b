/* Byte buffers as chains of reference-counted slices (DESIGN.md, "Data path").
 *
 * A slice is a fixed-size block of memory with a refcount; a buffer is a list of segments, each
 * a window onto a slice.  Moving bytes from one buffer to another moves segments (and refs), not
 * bytes, so a body crosses from downstream to upstream without a copy.  Slices are shared only
 * between buffers of one worker; their refcount is therefore not atomic.
 * A buffer is owned by one object (a connection, a stream) and used from one thread. */
#ifndef MAGPIE_BUF_H
#define MAGPIE_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define MP_SLICE_SIZE 16384

typedef struct mp_slice {
    uint32_t refs;
    uint32_t cap;
    char data[];
} mp_slice_t;

typedef struct mp_buf_seg {
    struct mp_buf_seg *next;
    mp_slice_t *slice;
    uint32_t off; /* first byte of this segment within slice->data */
    uint32_t len;
} mp_buf_seg_t;

typedef struct mp_buf {
    mp_buf_seg_t *head;
    mp_buf_seg_t *tail;
    size_t len; /* bytes in the whole chain */
} mp_buf_t;

void mp_buf_init(mp_buf_t *b);
/* Drops every segment; the buffer is empty and reusable afterwards. */
void mp_buf_clear(mp_buf_t *b);

static inline size_t mp_buf_len(const mp_buf_t *b)
{
    return b->len;
}

/* Copies bytes in, filling the tail slice when it has room and is not shared. */
void mp_buf_append(mp_buf_t *b, const void *data, size_t len);
void mp_buf_append_str(mp_buf_t *b, const char *s);
void mp_buf_printf(mp_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Decimal and lower-case hexadecimal numbers, without printf's cost on the hot path. */
void mp_buf_append_u64(mp_buf_t *b, uint64_t v);
void mp_buf_append_hex(mp_buf_t *b, uint64_t v);

/* Moves the first n bytes (all if n > len) of src to the end of dst without copying bytes. */
void mp_buf_move(mp_buf_t *dst, mp_buf_t *src, size_t n);

/* Appends len bytes that live in slice s starting at p, by reference (takes a ref on s). */
void mp_buf_append_ref(mp_buf_t *b, mp_slice_t *s, const char *p, size_t len);

/* Drops the first n bytes. */
void mp_buf_consume(mp_buf_t *b, size_t n);

/* Fills up to max iovecs with the buffer's first bytes; returns how many were filled. */
int mp_buf_peek_iov(const mp_buf_t *b, struct iovec *iov, int max);

/* Copies up to len bytes from the start into out without consuming; returns bytes copied. */
size_t mp_buf_copy_out(const mp_buf_t *b, void *out, size_t len);

/* Makes the first n bytes (n <= len) contiguous and returns a pointer to them (valid until the
 * next change to the buffer).  Copies only when they span segments. */
char *mp_buf_pullup(mp_buf_t *b, size_t n);

/* read(2) up to max bytes from fd onto the end.  Returns bytes read, 0 on EOF, -1 with errno
 * (EAGAIN included). */
ssize_t mp_buf_read_fd(mp_buf_t *b, int fd, size_t max);

/* Appends up to max bytes that fn produces straight into the buffer's slices (no copy): fn
 * fills dst with at most len bytes and returns how many, 0 at EOF, or -1 with errno.  Returns
 * the bytes appended, or fn's 0 / -1 when it produced none.  For sources that are not a plain fd
 * (TLS). */
typedef ssize_t (*mp_buf_source_fn)(void *ctx, char *dst, size_t len);
ssize_t mp_buf_read_from(mp_buf_t *b, size_t max, mp_buf_source_fn fn, void *ctx);

/* writev(2) from the start and consumes what was written.  Returns bytes written or -1 with
 * errno (EAGAIN included). */
ssize_t mp_buf_write_fd(mp_buf_t *b, int fd);

/* Process-wide count of live slices, for tests and the memory stat. */
size_t mp_slice_live_count(void);

#endif
