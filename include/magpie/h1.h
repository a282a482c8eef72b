/* HTTP/1.1 codec: a strict, resumable parser over llhttp for requests (downstream) and
 * responses (upstream), and the encoders that write heads and chunked bodies.
 *
 * Strictness (hostile-inputs.md 4.1): no llhttp lenient flag is ever set; on top of llhttp the
 * parser rejects Content-Length together with Transfer-Encoding, differing or malformed
 * Content-Length values, Transfer-Encoding other than a single final "chunked", NUL/CR/LF in
 * values, whitespace before the colon, header names with underscores that spell framing headers,
 * missing or duplicate Host on HTTP/1.1 requests, and fragments or control bytes in the target.
 * Every rejection sets a status (400, 413, 414, 431, 501, 505) and a short reason for the log;
 * after an error the parser accepts nothing more.
 *
 * Threading: a parser belongs to one connection and is used from that connection's worker. */
#ifndef MAGPIE_H1_H
#define MAGPIE_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "magpie/buf.h"
#include "magpie/common.h"
#include "magpie/http.h"

typedef enum mp_h1_kind {
    MP_H1_REQUEST,
    MP_H1_RESPONSE,
} mp_h1_kind_t;

typedef struct mp_h1_limits {
    uint32_t max_headers_bytes; /* whole header section; default 60 KiB (max_request_headers_kb) */
    uint32_t max_headers_count; /* default 100 */
    uint32_t max_request_line;  /* method + target + version; default 16 KiB -> 414 beyond */
} mp_h1_limits_t;

void mp_h1_limits_default(mp_h1_limits_t *l);

/* Callbacks.  Each returns 0 to go on, MP_AGAIN to pause the parser after this event (the rest
 * of the input stays unconsumed; mp_h1_parser_resume continues), or MP_ERROR to abort. */
typedef struct mp_h1_callbacks {
    /* A complete head.  The callee takes ownership of msg. */
    int (*on_head)(void *ctx, mp_http_msg_t *msg);
    /* Body bytes (de-chunked).  data points into the input given to feed. */
    int (*on_body)(void *ctx, const char *data, size_t len);
    /* Trailers of a chunked message; the callee takes ownership of trailers (a heap
     * mp_headers_t freed with mp_headers_free + free).  Not called when there are none. */
    int (*on_trailers)(void *ctx, mp_headers_t *trailers);
    /* End of the message (after body and trailers). */
    int (*on_complete)(void *ctx);
} mp_h1_callbacks_t;

typedef struct mp_h1_parser mp_h1_parser_t;

/* Creates a parser; free with mp_h1_parser_free.  limits may be NULL for the defaults. */
mp_h1_parser_t *mp_h1_parser_new(mp_h1_kind_t kind, const mp_h1_limits_t *limits,
                                 const mp_h1_callbacks_t *cbs, void *ctx);
void mp_h1_parser_free(mp_h1_parser_t *p);

/* Feeds bytes.  Sets *consumed to the bytes used.  Returns 0 when all input was used, MP_AGAIN
 * when a callback paused (input from *consumed on is not yet parsed), MP_ERROR on a protocol
 * error or a callback error (see mp_h1_parser_error_status/reason).  Callbacks run before it
 * returns. */
int mp_h1_parser_feed(mp_h1_parser_t *p, const char *data, size_t len, size_t *consumed);

/* Signals EOF from the peer.  For a response without length this completes the body (calls
 * on_complete); returns MP_ERROR when EOF cuts a message short. */
int mp_h1_parser_finish(mp_h1_parser_t *p);

/* Continues after a pause. */
void mp_h1_parser_resume(mp_h1_parser_t *p);

/* Response parsing only: the next response answers a HEAD (no body whatever its headers say),
 * or a CONNECT.  Set before feeding that response. */
void mp_h1_parser_expect_head_response(mp_h1_parser_t *p, bool is_head);

/* HTTP status to answer the error with (400, 413, 414, 431, 501, 505; 502 for a response parse
 * error) and a short reason for the log and the response flag details. */
int mp_h1_parser_error_status(const mp_h1_parser_t *p);
const char *mp_h1_parser_error_reason(const mp_h1_parser_t *p);

/* True while the parser is between messages (no partial head or body pending). */
bool mp_h1_parser_idle(const mp_h1_parser_t *p);

/* Encoders.  They append to out.  Heads are written with the headers as stored; hop-by-hop
 * fields are the caller's business.  body_chunked adds Transfer-Encoding: chunked itself when
 * true; otherwise Content-Length is written from msg->content_length when >= 0. */
void mp_h1_encode_request_head(mp_buf_t *out, const mp_http_msg_t *req, bool body_chunked);
void mp_h1_encode_response_head(mp_buf_t *out, const mp_http_msg_t *resp, bool body_chunked);
/* One chunk: "<hex>\r\n" data "\r\n" with data moved from body (len bytes). */
void mp_h1_encode_chunk(mp_buf_t *out, mp_buf_t *body, size_t len);
/* Final "0\r\n" + trailers + "\r\n".  trailers may be NULL. */
void mp_h1_encode_last_chunk(mp_buf_t *out, const mp_headers_t *trailers);

/* Path normalisation applied before routing (Envoy's normalize_path and merge_slashes):
 * RFC 3986 §6.2.2 — percent-decoding of unreserved characters, upper-casing of remaining
 * percent escapes, §5.2.4 dot-segment removal — on the path part only (the query is kept as is).
 * merge_slashes collapses runs of '/'.  Returns a new heap string, or NULL when the path is
 * invalid (it must start with '/', or be "*"), with *err_reason set. */
char *mp_path_normalize(const char *path, bool normalize, bool merge_slashes,
                        const char **err_reason);

#endif
