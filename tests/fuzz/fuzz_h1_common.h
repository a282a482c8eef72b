/* Shared driver for the HTTP/1 parser fuzz targets: the first 8 input bytes seed the split
 * points and the callbacks' pause decisions, the rest is fed in random pieces, with resume after
 * each pause, exactly as a connection would.  Checks the invariants the caller relies on. */
#ifndef MAGPIE_FUZZ_H1_COMMON_H
#define MAGPIE_FUZZ_H1_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/common.h"
#include "magpie/h1.h"

typedef struct fuzz_ctx {
    uint64_t rng;
    const char *chunk; /* the piece being fed: body pointers must point into it */
    size_t chunk_len;
    bool normalize_paths;
} fuzz_ctx_t;

static uint32_t fuzz_next(fuzz_ctx_t *c)
{
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return (uint32_t)(c->rng >> 16);
}

static int fuzz_maybe_pause(fuzz_ctx_t *c)
{
    return (fuzz_next(c) & 7) == 0 ? MP_AGAIN : 0;
}

static int fuzz_on_head(void *ctx, mp_http_msg_t *m)
{
    fuzz_ctx_t *c = ctx;
    if (c->normalize_paths && m->path != NULL) {
        const char *reason = NULL;
        free(mp_path_normalize(m->path, true, true, &reason));
    }
    mp_http_msg_free(m);
    return fuzz_maybe_pause(c);
}

static int fuzz_on_body(void *ctx, const char *d, size_t len)
{
    fuzz_ctx_t *c = ctx;
    if (len == 0 || d < c->chunk || d + len > c->chunk + c->chunk_len)
        abort(); /* body bytes must be a non-empty window onto the input */
    return fuzz_maybe_pause(c);
}

static int fuzz_on_trailers(void *ctx, mp_headers_t *t)
{
    mp_headers_free(t);
    free(t);
    return fuzz_maybe_pause(ctx);
}

static int fuzz_on_complete(void *ctx)
{
    return fuzz_maybe_pause(ctx);
}

static int fuzz_h1_run(mp_h1_kind_t kind, const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    fuzz_ctx_t c = {.rng = 0x9e3779b97f4a7c15ull, .normalize_paths = kind == MP_H1_REQUEST};
    for (int i = 0; i < 8; i++)
        c.rng = c.rng * 31 + data[i];
    c.rng |= 1;
    const char *in = (const char *)data + 8;
    size_t len = size - 8, off = 0;
    mp_h1_limits_t lim;
    mp_h1_limits_default(&lim);
    if (data[0] & 1) { /* small limits reach the 414/431 paths */
        lim.max_headers_bytes = 256;
        lim.max_headers_count = 8;
        lim.max_request_line = 64;
    }
    mp_h1_callbacks_t cbs = {fuzz_on_head, fuzz_on_body, fuzz_on_trailers, fuzz_on_complete};
    mp_h1_parser_t *p = mp_h1_parser_new(kind, &lim, &cbs, &c);
    mp_h1_parser_expect_head_response(p, data[1] & 1);
    int rc = 0;
    while (off < len) {
        size_t piece = 1 + fuzz_next(&c) % (len - off), used = 0;
        c.chunk = in + off;
        c.chunk_len = piece;
        rc = mp_h1_parser_feed(p, in + off, piece, &used);
        if (used > piece)
            abort();
        off += used;
        if (rc == MP_ERROR) {
            int st = mp_h1_parser_error_status(p);
            if (st < 400 || st > 599 || mp_h1_parser_error_reason(p) == NULL)
                abort();
            break;
        }
        if (rc == MP_AGAIN) {
            mp_h1_parser_resume(p);
            if (used == 0 && fuzz_next(&c) % 4 == 0)
                break; /* a caller may also give up on a paused connection */
        }
    }
    if (rc != MP_ERROR)
        mp_h1_parser_finish(p);
    mp_h1_parser_free(p);
    return 0;
}

#endif
