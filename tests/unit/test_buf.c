/* Slice buffers: append/move/consume/pullup keep bytes and lengths right, moves share slices
 * instead of copying, slice accounting returns to zero, and fd I/O uses readv/writev. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "magpie/buf.h"
#include "magpie/common.h"
#include "unit.h"

static char *contents(const mp_buf_t *b)
{
    char *s = malloc(mp_buf_len(b) + 1);
    s[mp_buf_copy_out(b, s, mp_buf_len(b))] = '\0';
    return s;
}

static size_t seg_count(const mp_buf_t *b)
{
    size_t n = 0;
    for (const mp_buf_seg_t *g = b->head; g != NULL; g = g->next)
        n++;
    return n;
}

static void test_append_consume(void)
{
    size_t live = mp_slice_live_count();
    mp_buf_t b;
    mp_buf_init(&b);
    CHECK_INT(mp_buf_len(&b), 0);
    mp_buf_append_str(&b, "hello ");
    mp_buf_append(&b, "world", 5);
    mp_buf_printf(&b, " %d-%s", 42, "x");
    CHECK_INT(seg_count(&b), 1); /* appends fill the exclusive tail */
    char *s = contents(&b);
    CHECK_STR(s, "hello world 42-x");
    free(s);
    mp_buf_consume(&b, 6);
    s = contents(&b);
    CHECK_STR(s, "world 42-x");
    free(s);
    CHECK_INT(mp_slice_live_count(), live + 1);
    mp_buf_consume(&b, 1000);
    CHECK_INT(mp_buf_len(&b), 0);
    CHECK(b.head == NULL && b.tail == NULL);
    CHECK_INT(mp_slice_live_count(), live);
    mp_buf_clear(&b);
}

static void test_large_and_printf(void)
{
    size_t live = mp_slice_live_count();
    size_t n = 3 * MP_SLICE_SIZE + 100;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    mp_buf_t b;
    mp_buf_init(&b);
    mp_buf_append(&b, big, n);
    CHECK_INT(mp_buf_len(&b), n);
    CHECK_INT(seg_count(&b), 4);
    CHECK_INT(mp_slice_live_count(), live + 4);
    char *out = malloc(n);
    CHECK_INT(mp_buf_copy_out(&b, out, n), n);
    CHECK(memcmp(out, big, n) == 0);
    struct iovec iov[8];
    CHECK_INT(mp_buf_peek_iov(&b, iov, 8), 4);
    CHECK_INT(mp_buf_peek_iov(&b, iov, 2), 2);
    CHECK_INT(iov[0].iov_len, MP_SLICE_SIZE);
    mp_buf_clear(&b);
    mp_buf_printf(&b, "%.*s", 2000, big + n - 2000); /* longer than printf's stack buffer */
    CHECK_INT(mp_buf_len(&b), 2000);
    mp_buf_clear(&b);
    CHECK_INT(mp_slice_live_count(), live);
    free(big);
    free(out);
}

static void test_move_shares(void)
{
    size_t live = mp_slice_live_count();
    mp_buf_t a, b;
    mp_buf_init(&a);
    mp_buf_init(&b);
    mp_buf_append_str(&a, "0123456789");
    mp_buf_move(&b, &a, 4); /* split: both windows onto one slice */
    CHECK_INT(mp_buf_len(&a), 6);
    CHECK_INT(mp_buf_len(&b), 4);
    CHECK_INT(mp_slice_live_count(), live + 1);
    CHECK_INT(a.head->slice->refs, 2);
    /* the shared tail must not be written into: the append goes to a new slice */
    mp_buf_append_str(&b, "ab");
    CHECK_INT(seg_count(&b), 2);
    CHECK_INT(mp_slice_live_count(), live + 2);
    char *s = contents(&b);
    CHECK_STR(s, "0123ab");
    free(s);
    s = contents(&a);
    CHECK_STR(s, "456789");
    free(s);
    mp_buf_move(&b, &a, 100); /* all of it */
    CHECK_INT(mp_buf_len(&a), 0);
    CHECK(a.head == NULL);
    s = contents(&b);
    CHECK_STR(s, "0123ab456789");
    free(s);
    mp_buf_clear(&b);
    mp_buf_clear(&a);
    CHECK_INT(mp_slice_live_count(), live);
}

static void test_pullup(void)
{
    mp_buf_t a, b;
    mp_buf_init(&a);
    mp_buf_init(&b);
    mp_buf_append_str(&a, "abc");
    mp_buf_append_str(&b, "xyz");
    mp_buf_move(&a, &b, 3);
    CHECK_INT(seg_count(&a), 2);
    char *p = mp_buf_pullup(&a, 2);
    CHECK(p != NULL && memcmp(p, "ab", 2) == 0);
    CHECK_INT(seg_count(&a), 2); /* no copy when the bytes are contiguous */
    p = mp_buf_pullup(&a, 5);
    CHECK(p != NULL && memcmp(p, "abcxy", 5) == 0);
    CHECK_INT(mp_buf_len(&a), 6);
    char *s = contents(&a);
    CHECK_STR(s, "abcxyz");
    free(s);
    CHECK(mp_buf_pullup(&a, 7) == NULL);
    mp_buf_clear(&a);

    size_t n = MP_SLICE_SIZE + 10;
    char *big = malloc(n);
    memset(big, 'q', n);
    mp_buf_append(&a, big, n);
    p = mp_buf_pullup(&a, n);
    CHECK(p != NULL && memcmp(p, big, n) == 0);
    CHECK_INT(seg_count(&a), 1);
    mp_buf_clear(&a);
    free(big);
}

static void test_fd_io(void)
{
    size_t live = mp_slice_live_count();
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    mp_buf_t out, in;
    mp_buf_init(&out);
    mp_buf_init(&in);
    size_t n = 2 * MP_SLICE_SIZE + 1234;
    char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)(i * 7);
    mp_buf_append_str(&out, "head:");
    mp_buf_t body;
    mp_buf_init(&body);
    mp_buf_append(&body, data, n);
    mp_buf_move(&out, &body, n);
    size_t total = mp_buf_len(&out);
    size_t sent = 0;
    while (mp_buf_len(&out) > 0) {
        ssize_t w = mp_buf_write_fd(&out, sv[0]);
        CHECK(w > 0);
        if (w <= 0)
            break;
        sent += (size_t)w;
        for (;;) {
            ssize_t r = mp_buf_read_fd(&in, sv[1], 5000);
            if (r < 0) {
                CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
                break;
            }
            CHECK(r > 0 && r <= 5000);
        }
    }
    CHECK_INT(sent, total);
    CHECK_INT(mp_buf_len(&in), total);
    char *got = malloc(total);
    mp_buf_copy_out(&in, got, total);
    CHECK(memcmp(got, "head:", 5) == 0);
    CHECK(memcmp(got + 5, data, n) == 0);
    /* small reads land in the tail slice: no slice per read */
    mp_buf_clear(&in);
    for (int i = 0; i < 10; i++)
        CHECK_INT(write(sv[0], "0123456789", 10), 10);
    CHECK_INT(mp_buf_read_fd(&in, sv[1], 4), 4);
    CHECK_INT(mp_buf_read_fd(&in, sv[1], 1 << 20), 96);
    CHECK_INT(seg_count(&in), 1);
    CHECK_INT(mp_buf_read_fd(&in, sv[1], 1 << 20), -1);
    CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
    close(sv[0]);
    CHECK_INT(mp_buf_read_fd(&in, sv[1], 100), 0);
    CHECK_INT(mp_buf_len(&in), 100);
    CHECK_INT(mp_buf_write_fd(&out, sv[1]), 0); /* nothing to write */
    mp_buf_clear(&in);
    mp_buf_clear(&out);
    close(sv[1]);
    free(data);
    free(got);
    CHECK_INT(mp_slice_live_count(), live);
}

/* A source that hands out a fixed string a piece at a time, then EAGAIN. */
typedef struct src {
    const char *data;
    size_t len, pos, chunk;
} src_t;

static ssize_t src_read(void *ctx, char *dst, size_t len)
{
    src_t *s = ctx;
    if (s->pos == s->len) {
        errno = EAGAIN;
        return -1;
    }
    size_t n = s->len - s->pos;
    n = n < len ? n : len;
    n = n < s->chunk ? n : s->chunk;
    memcpy(dst, s->data + s->pos, n);
    s->pos += n;
    return (ssize_t)n;
}

static void test_read_from(void)
{
    size_t big = 3 * MP_SLICE_SIZE + 100;
    char *data = malloc(big);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)('a' + i % 26);
    mp_buf_t b;
    mp_buf_init(&b);
    mp_buf_append(&b, "x", 1); /* the first bytes land in the tail's room */
    src_t s = {data, big, 0, big};
    CHECK_INT(mp_buf_read_from(&b, big, src_read, &s), (long long)big);
    CHECK_INT(mp_buf_len(&b), (long long)big + 1);
    char *got = contents(&b);
    CHECK(got[0] == 'x' && memcmp(got + 1, data, big) == 0);
    free(got);
    /* max bounds one call; a drained source ends the call early; nothing left is EAGAIN. */
    mp_buf_clear(&b);
    src_t t = {data, 1000, 0, 300};
    CHECK_INT(mp_buf_read_from(&b, 500, src_read, &t), 300);
    CHECK_INT(mp_buf_read_from(&b, 200, src_read, &t), 200);
    CHECK_INT(mp_buf_read_from(&b, 5000, src_read, &t), 300);
    CHECK_INT(mp_buf_read_from(&b, 5000, src_read, &t), 200);
    CHECK_INT(mp_buf_read_from(&b, 5000, src_read, &t), -1);
    CHECK_INT(errno, EAGAIN);
    CHECK_INT(mp_buf_len(&b), 1000);
    mp_buf_clear(&b);
    free(data);
}

int main(void)
{
    RUN(test_append_consume);
    RUN(test_large_and_printf);
    RUN(test_move_shares);
    RUN(test_pullup);
    RUN(test_fd_io);
    RUN(test_read_from);
    UNIT_DONE();
}
