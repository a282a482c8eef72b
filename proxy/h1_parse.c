/* Strict, resumable HTTP/1.1 parser over llhttp 8.1 (include/magpie/h1.h).
 *
 * llhttp does the byte-level work; this file adds what its strict mode lets through
 * (hostile-inputs.md 4.1) and turns its events into mp_http_msg_t heads.
 *
 * Two of the checks need byte positions, which llhttp's non-data callbacks do not give: the
 * line-ending rules (every CR followed by LF, every LF preceded by CR, no LF followed by SP/HTAB:
 * llhttp 8.1 accepts "\r\n\rX" and "\n\n" as a head terminator, bare LF after the start line, CR
 * inside chunk extensions, and obs-fold) and the raw size of the head.  So on_headers_complete,
 * and on_message_complete of a chunked message, pause llhttp internally; the pause position is
 * the end of the head (or of the trailers), and every byte outside body spans is scanned before
 * the head, trailers or the body that follows reach the caller.  That costs one extra return
 * from llhttp_execute per message, not a callback per byte. */
#include <stdlib.h>
#include <string.h>

#include "h1_internal.h"
#include "magpie/common.h"
#include "magpie/h1.h"

#define MAX_CHUNK_EXT_BYTES 4096

typedef enum phase {
    PH_IDLE,       /* between messages */
    PH_START_LINE, /* request or status line */
    PH_HEADERS,    /* header section */
    PH_BODY,       /* body (identity, chunked or until EOF) */
    PH_TRAILERS,   /* after the last chunk */
} phase_t;

struct mp_h1_parser {
    llhttp_t ll;
    mp_h1_kind_t kind;
    mp_h1_limits_t lim;
    mp_h1_callbacks_t cbs;
    void *ctx;

    phase_t phase;
    mp_http_msg_t *msg;     /* head being built, owned until on_head */
    mp_headers_t *trailers; /* trailers being built, owned until on_trailers */
    char *acc;              /* name + value (or target) of the field being parsed */
    uint32_t acc_len, acc_cap, name_len;
    uint32_t n_fields;   /* fields in the current section */
    uint32_t head_bytes; /* raw bytes of the current header or trailer section */
    uint32_t line_bytes; /* raw bytes of the start line */
    uint32_t ext_bytes;  /* chunk-extension bytes of the current message */
    uint32_t target_len; /* request target length, to check the request line's shape */
    uint8_t want_crlf;   /* CRLF bytes still due after chunk data (llhttp skips them) */
    bool version_seen;
    unsigned n_host;
    mp_h1_te_t te;

    const char *scan_from;   /* first input byte not yet scanned (valid during feed) */
    unsigned char scan_prev; /* last scanned byte, 0 after a body span */

    bool pending_head;     /* internal pause: the head awaits checks and on_head */
    bool pending_complete; /* internal pause: trailers and on_complete are owed */
    bool pending_trailers; /* internal pause: the last-chunk line ended, trailers start */
    bool user_pause;       /* a callback returned MP_AGAIN */
    bool paused;           /* feed returned MP_AGAIN; resume clears */
    bool chunked;          /* current message */
    bool informational;    /* current response is 1xx */
    bool expect_head;      /* next final response answers HEAD or CONNECT */
    bool in_finish;
    bool upgraded; /* a 101 went by: the rest of the stream is not HTTP/1 */
    bool failed;
    int err_status;
    const char *err_reason;
};

static mp_h1_parser_t *parser_of(llhttp_t *ll)
{
    return ll->data;
}

/* Records the first error; returns HPE_USER so that a callback can `return fail(...)`. */
static int fail(mp_h1_parser_t *p, int status, const char *reason)
{
    if (!p->failed) {
        p->failed = true;
        p->err_status = p->kind == MP_H1_RESPONSE ? 502 : status;
        p->err_reason = reason;
    }
    return HPE_USER;
}

/* Maps a user callback's return to llhttp's vocabulary. */
static int user_ret(mp_h1_parser_t *p, int r)
{
    if (r == MP_AGAIN) {
        p->user_pause = true;
        return HPE_PAUSED;
    }
    if (r < 0)
        return fail(p, 400, "aborted by callback");
    return 0;
}

void mp_h1_limits_default(mp_h1_limits_t *l)
{
    l->max_headers_bytes = 60 * 1024;
    l->max_headers_count = 100;
    l->max_request_line = 16 * 1024;
}

/* ---- framing scan -------------------------------------------------------------------------- */

/* A start line ends at its LF; empty lines before it are skipped (RFC 9112 §2.2). */
static int end_start_line(mp_h1_parser_t *p, uint32_t len)
{
    if (len <= 2) {
        p->line_bytes = 0;
        return 0;
    }
    p->line_bytes = len;
    p->phase = PH_HEADERS;
    if (len > p->lim.max_request_line + 2)
        return fail(p, 414, "request line too long");
    return 0;
}

/* Counts bytes of the start line or of a header section against the limits. */
static int count_bytes(mp_h1_parser_t *p, size_t n)
{
    n = MP_MIN(n, (size_t)UINT32_MAX / 2);
    if (p->phase == PH_START_LINE) {
        p->line_bytes += (uint32_t)n;
        if (p->line_bytes > p->lim.max_request_line + 2)
            return fail(p, 414, "request line too long");
    } else if (p->phase == PH_HEADERS || p->phase == PH_TRAILERS) {
        p->head_bytes += (uint32_t)n;
        if (p->head_bytes > p->lim.max_headers_bytes + 2)
            return fail(p, 431, "header section too large");
    }
    return 0;
}

static int scan_byte(mp_h1_parser_t *p, unsigned char prev, unsigned char ch)
{
    if (p->want_crlf != 0) {
        if (ch != (p->want_crlf == 2 ? '\r' : '\n'))
            return fail(p, 400, "missing CRLF after chunk data");
        p->want_crlf--;
    }
    if (prev == '\r' && ch != '\n')
        return fail(p, 400, "bare CR");
    if (prev == '\n' && (ch == ' ' || ch == '\t'))
        return fail(p, 400, "obs-fold or leading whitespace");
    if (ch == '\n' && prev != '\r')
        return fail(p, 400, "bare LF");
    return 0;
}

static int scan_range(mp_h1_parser_t *p, const char *s, const char *e)
{
    unsigned char prev = p->scan_prev;
    const char *seg = s; /* first byte not yet counted */
    for (const char *c = s; c < e; c++) {
        unsigned char ch = (unsigned char)*c;
        if ((ch == '\r' || ch == '\n' || prev == '\r' || prev == '\n' || p->want_crlf) &&
            scan_byte(p, prev, ch) != 0)
            return HPE_USER;
        prev = ch;
        if (ch == '\n' && p->phase == PH_START_LINE) {
            uint32_t len = p->line_bytes + (uint32_t)MP_MIN((size_t)(c + 1 - seg), (size_t)1 << 20);
            seg = c + 1;
            if (end_start_line(p, len) != 0)
                return HPE_USER;
        }
    }
    p->scan_prev = prev;
    return count_bytes(p, (size_t)(e - seg));
}

/* Scans up to `to` (exclusive) and moves the scan start there. */
static int scan_to(mp_h1_parser_t *p, const char *to)
{
    int r = to > p->scan_from ? scan_range(p, p->scan_from, to) : 0;
    p->scan_from = to;
    return r;
}

/* ---- accumulation of names, values and the target ----------------------------------------- */

static int acc_append(mp_h1_parser_t *p, const char *at, size_t n, uint32_t limit, int status)
{
    if (n == 0)
        return 0;
    if ((size_t)p->acc_len + n > limit)
        return fail(p, status, status == 414 ? "request target too long" : "header too large");
    if (p->acc_len + n > p->acc_cap) {
        size_t cap = MP_MAX((size_t)p->acc_cap * 2, (size_t)p->acc_len + n);
        p->acc_cap = (uint32_t)MP_MIN(MP_MAX(cap, (size_t)256), (size_t)limit);
        p->acc = mp_xrealloc(p->acc, p->acc_cap);
    }
    memcpy(p->acc + p->acc_len, at, n);
    p->acc_len += (uint32_t)n;
    return 0;
}

static void section_reset(mp_h1_parser_t *p)
{
    p->acc_len = 0;
    p->name_len = 0;
    p->n_fields = 0;
    p->head_bytes = 0;
}

static int on_message_begin(llhttp_t *ll)
{
    mp_h1_parser_t *p = parser_of(ll);
    section_reset(p);
    mp_http_msg_free(p->msg);
    p->phase = PH_START_LINE;
    p->line_bytes = 0;
    p->ext_bytes = 0;
    p->n_host = 0;
    memset(&p->te, 0, sizeof(p->te));
    p->chunked = false;
    p->informational = false;
    p->version_seen = false;
    p->want_crlf = 0;
    p->target_len = 0;
    p->msg = mp_http_msg_new();
    return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t n)
{
    mp_h1_parser_t *p = parser_of(ll);
    return acc_append(p, at, n, p->lim.max_request_line, 414);
}

static int on_url_complete(llhttp_t *ll)
{
    mp_h1_parser_t *p = parser_of(ll);
    const char *reason = NULL;
    bool connect = ll->method == HTTP_CONNECT, options = ll->method == HTTP_OPTIONS;
    if (mp_h1__target_split(p->msg, p->acc, p->acc_len, connect, options, &reason) < 0)
        return fail(p, 400, reason);
    p->target_len = p->acc_len;
    p->acc_len = 0;
    return 0;
}

/* llhttp 8.1 accepts any byte in the reason phrase; RFC 9112 §4 allows HTAB, SP, VCHAR, obs-text.
 */
static int on_status(llhttp_t *ll, const char *at, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)at[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(parser_of(ll), 502, "control byte in reason phrase");
    }
    return 0;
}

static int on_version_complete(llhttp_t *ll)
{
    mp_h1_parser_t *p = parser_of(ll);
    p->version_seen = true;
    if (ll->http_major != 1 || ll->http_minor > 1)
        return fail(p, 505, "unsupported HTTP version");
    return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t n)
{
    mp_h1_parser_t *p = parser_of(ll);
    return acc_append(p, at, n, p->lim.max_headers_bytes, 431);
}

static int on_header_field_complete(llhttp_t *ll)
{
    mp_h1_parser_t *p = parser_of(ll);
    p->name_len = p->acc_len;
    if (p->name_len == 0)
        return fail(p, 400, "empty header name");
    char last = p->acc[p->name_len - 1];
    if (last == ' ' || last == '\t')
        return fail(p, 400, "whitespace before colon");
    if (!mp_h1__token_ok(p->acc, p->name_len))
        return fail(p, 400, "invalid character in header name");
    if (++p->n_fields > p->lim.max_headers_count)
        return fail(p, 431, "too many header fields");
    return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t n)
{
    mp_h1_parser_t *p = parser_of(ll);
    return acc_append(p, at, n, p->lim.max_headers_bytes, 431);
}

/* Framing and routing fields get their checks here, once per field, by length first. */
static int check_field(mp_h1_parser_t *p, const char *name, uint32_t nlen, const char *v,
                       size_t vlen)
{
    if (nlen == 4 && mp_strieq(name, nlen, "host")) {
        p->n_host++;
    } else if (nlen == 17 && mp_strieq(name, nlen, "transfer-encoding")) {
        mp_h1__te_add(&p->te, v, vlen);
    } else if (nlen == 6 && mp_strieq(name, nlen, "expect")) {
        if (mp_strieq(v, vlen, "100-continue"))
            p->msg->expect_continue = true;
    } else if ((nlen == 14 && mp_strieq(name, nlen, "content_length")) ||
               (nlen == 17 && mp_strieq(name, nlen, "transfer_encoding"))) {
        return fail(p, 400, "underscore in framing header name");
    }
    return 0;
}

static int on_header_value_complete(llhttp_t *ll)
{
    mp_h1_parser_t *p = parser_of(ll);
    const char *name = p->acc, *v = p->acc + p->name_len;
    size_t vlen = p->acc_len - p->name_len;
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--; /* llhttp keeps trailing OWS; RFC 9110 §5.5 excludes it */
    p->acc_len = 0;
    if (p->phase == PH_TRAILERS) {
        if (mp_h1__trailer_forbidden(name, p->name_len))
            return 0; /* RFC 9110 §6.5.1: drop, do not fail */
        if (p->trailers == NULL) {
            p->trailers = mp_xmalloc(sizeof(*p->trailers));
            mp_headers_init(p->trailers);
        }
        mp_headers_add(p->trailers, name, p->name_len, v, vlen);
        return 0;
    }
    if (check_field(p, name, p->name_len, v, vlen) != 0)
        return HPE_USER;
    mp_headers_add(&p->msg->headers, name, p->name_len, v, vlen);
    return 0;
}

/* ---- head completion ---------------------------------------------------------------------- */

static int request_head_check(mp_h1_parser_t *p)
{
    mp_http_msg_t *m = p->msg;
    int te = mp_h1__te_request_status(&p->te);
    if (te != 0)
        return fail(p, te, te == 501 ? "unsupported transfer coding" : "bad transfer-encoding");
    if (p->n_host > 1)
        return fail(p, 400, "duplicate host");
    if (p->n_host == 0 && m->version == MP_HTTP_11)
        return fail(p, 400, "missing host");
    if (p->ll.method == HTTP_CONNECT && (p->te.seen || m->content_length > 0))
        return fail(p, 400, "CONNECT with a body");
    if (p->n_host == 0)
        return 0;
    const mp_header_t *h = mp_headers_get(&m->headers, "host");
    if (!mp_h1__authority_ok(h->value, h->value_len) || memchr(h->value, '@', h->value_len))
        return fail(p, 400, "bad host");
    if (m->authority == NULL) {
        m->authority = mp_xstrndup(h->value, h->value_len);
        return 0;
    }
    /* absolute-form (or CONNECT): the target's authority wins, and must agree with Host */
    if (p->ll.method != HTTP_CONNECT && !mp_strieq(h->value, h->value_len, m->authority))
        return fail(p, 400, "host disagrees with target authority");
    return 0;
}

static int response_head_check(mp_h1_parser_t *p)
{
    int st = p->ll.status_code;
    if (st < 100 || st > 999)
        return fail(p, 502, "bad status code");
    p->msg->status = st;
    if (p->te.seen && (p->te.bad || p->te.unknown || p->te.other || !p->te.chunked_last))
        return fail(p, 502, "bad transfer-encoding");
    p->informational = st < 200;
    if (p->informational || st == 204 || st == 304 || p->expect_head)
        p->ll.flags |= F_SKIPBODY; /* RFC 9112 §6.3 rule 1: no body whatever the headers say */
    return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
    mp_h1_parser_t *p = parser_of(ll);
    mp_http_msg_t *m = p->msg;
    if (!p->version_seen)
        return fail(p, 400, "missing HTTP version"); /* HTTP/0.9 simple request */
    m->version = ll->http_minor == 0 ? MP_HTTP_10 : MP_HTTP_11;
    if (ll->flags & F_CONTENT_LENGTH) {
        if (ll->content_length > (uint64_t)INT64_MAX)
            return fail(p, 400, "content-length overflow");
        m->content_length = (int64_t)ll->content_length;
    }
    m->upgrade = (ll->flags & F_UPGRADE) && (ll->flags & F_CONNECTION_UPGRADE);
    /* Upgrades and CONNECT are the caller's decision (tunnel only after a 101 or 2xx), so
     * llhttp parses on as HTTP instead of stopping at the end of the head. */
    ll->upgrade = 0;
    int r = p->kind == MP_H1_REQUEST ? request_head_check(p) : response_head_check(p);
    if (r != 0)
        return r;
    if (p->kind == MP_H1_REQUEST)
        m->method = mp_xstrdup(llhttp_method_name((llhttp_method_t)ll->method));
    m->chunked = (ll->flags & F_CHUNKED) && !(ll->flags & F_SKIPBODY);
    m->keep_alive = llhttp_should_keep_alive(ll);
    p->chunked = m->chunked;
    p->pending_head = true;
    return HPE_PAUSED;
}

/* The head passed llhttp and the field checks; the scan up to its end passed too. */
static int deliver_head(mp_h1_parser_t *p)
{
    mp_http_msg_t *m = p->msg;
    /* llhttp 8.1 lets "GET  /" through; the raw length shows any extra byte in the line:
     * method SP target SP "HTTP/1.x" CRLF. */
    if (p->kind == MP_H1_REQUEST && p->line_bytes != strlen(m->method) + p->target_len + 12)
        return fail(p, 400, "malformed request line"), MP_ERROR;
    p->msg = NULL;
    p->pending_head = false;
    p->phase = PH_BODY;
    if (p->kind == MP_H1_RESPONSE && !p->informational)
        p->expect_head = false;
    if (m->status == 101)
        p->upgraded = true;
    if (p->cbs.on_head == NULL) {
        mp_http_msg_free(m);
        return 0;
    }
    return p->cbs.on_head(p->ctx, m);
}

/* ---- body and completion ------------------------------------------------------------------ */

static int on_body(llhttp_t *ll, const char *at, size_t n)
{
    mp_h1_parser_t *p = parser_of(ll);
    if (n == 0)
        return 0; /* llhttp flushes empty spans, e.g. on an empty execute */
    /* chunk-size lines before this span must be clean before its bytes go anywhere */
    if (scan_to(p, at) != 0)
        return HPE_USER;
    p->scan_from = at + n;
    p->scan_prev = 0;
    if (p->chunked)
        p->want_crlf = 2;
    if (p->cbs.on_body == NULL)
        return 0;
    return user_ret(p, p->cbs.on_body(p->ctx, at, n));
}

static int on_chunk_ext(llhttp_t *ll, const char *at, size_t n)
{
    mp_h1_parser_t *p = parser_of(ll);
    p->ext_bytes += (uint32_t)MP_MIN(n, (size_t)MAX_CHUNK_EXT_BYTES + 1);
    if (p->ext_bytes > MAX_CHUNK_EXT_BYTES)
        return fail(p, 400, "chunk extensions too large");
    return 0;
}

/* The last-chunk line belongs to the body, not to the trailer section: its bytes must not count
 * against max_headers_bytes.  The callback has no position, and how much of the line the scan
 * has already seen depends on where feeds were split, so pause here: the pause position is the
 * end of the line, and the phase changes only once the scan has reached it (run_pending). */
static int on_chunk_header(llhttp_t *ll)
{
    mp_h1_parser_t *p = parser_of(ll);
    if (ll->content_length != 0)
        return 0;
    p->pending_trailers = true;
    return HPE_PAUSED;
}

static void start_trailers(mp_h1_parser_t *p)
{
    p->pending_trailers = false;
    section_reset(p);
    p->phase = PH_TRAILERS;
}

static int deliver_complete(mp_h1_parser_t *p)
{
    p->pending_complete = false;
    p->phase = PH_IDLE;
    if (p->cbs.on_complete == NULL)
        return 0;
    return p->cbs.on_complete(p->ctx);
}

static int on_message_complete(llhttp_t *ll)
{
    mp_h1_parser_t *p = parser_of(ll);
    if (p->informational) {
        /* 1xx: the exchange goes on with the next head; on_complete waits for the final one */
        p->phase = PH_IDLE;
        return 0;
    }
    if (p->chunked && !p->in_finish) {
        p->pending_complete = true; /* trailers are scanned before they are handed over */
        return HPE_PAUSED;
    }
    return user_ret(p, deliver_complete(p));
}

/* Hands over what an internal pause held back: the head, or trailers and completion (or starts
 * the trailer section).  Returns 0,
 * MP_AGAIN when the callee paused, MP_ERROR. */
static int run_pending(mp_h1_parser_t *p)
{
    int r = 0;
    if (p->pending_trailers) {
        start_trailers(p);
        return 0;
    }
    if (p->pending_head) {
        r = deliver_head(p);
        if (r < 0 && !p->failed)
            fail(p, 400, "aborted by callback");
        if (r < 0)
            return MP_ERROR;
        return r;
    }
    if (p->pending_complete && p->trailers != NULL) {
        mp_headers_t *t = p->trailers;
        p->trailers = NULL;
        if (p->cbs.on_trailers != NULL) {
            r = p->cbs.on_trailers(p->ctx, t);
        } else {
            mp_headers_delete(t);
        }
        if (r != 0)
            return r < 0 ? (fail(p, 400, "aborted by callback"), MP_ERROR) : r;
    }
    if (p->pending_complete) {
        r = deliver_complete(p);
        if (r < 0)
            return fail(p, 400, "aborted by callback"), MP_ERROR;
    }
    return r;
}

/* ---- public API --------------------------------------------------------------------------- */

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_status = on_status,
    .on_version_complete = on_version_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_extension_name = on_chunk_ext,
    .on_chunk_extension_value = on_chunk_ext,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};

mp_h1_parser_t *mp_h1_parser_new(mp_h1_kind_t kind, const mp_h1_limits_t *limits,
                                 const mp_h1_callbacks_t *cbs, void *ctx)
{
    mp_h1_parser_t *p = mp_xcalloc(1, sizeof(*p));
    p->kind = kind;
    if (limits != NULL)
        p->lim = *limits;
    else
        mp_h1_limits_default(&p->lim);
    if (cbs != NULL)
        p->cbs = *cbs;
    p->ctx = ctx;
    llhttp_init(&p->ll, kind == MP_H1_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE, &settings);
    p->ll.data = p;
    return p;
}

void mp_h1_parser_free(mp_h1_parser_t *p)
{
    if (p == NULL)
        return;
    mp_http_msg_free(p->msg);
    mp_headers_delete(p->trailers);
    free(p->acc);
    free(p);
}

static int llhttp_status(mp_h1_parser_t *p, llhttp_errno_t e, const char *end)
{
    if (p->kind == MP_H1_RESPONSE)
        return 502;
    if (e != HPE_INVALID_VERSION)
        return 400;
    /* "HTTP/1.10", "HTTP/1.257": a version we do not speak; "HTTP/1.1 " is just malformed.
     * llhttp 8.1 reports the first as a bad digit, or as a digit where CRLF was expected. */
    const char *why = llhttp_get_error_reason(&p->ll);
    if (why != NULL && strcmp(why, "Invalid HTTP version") == 0)
        return 505;
    const char *at = llhttp_get_error_pos(&p->ll);
    return at != NULL && at < end && *at >= '0' && *at <= '9' ? 505 : 400;
}

/* Turns a stop of llhttp_execute into the feed result; *off is where parsing stopped. */
static int after_execute(mp_h1_parser_t *p, llhttp_errno_t e, const char *stop, const char *end)
{
    if (e != HPE_OK && e != HPE_PAUSED) {
        if (!p->failed)
            fail(p, llhttp_status(p, e, end), llhttp_get_error_reason(&p->ll));
        return MP_ERROR;
    }
    if (p->failed || scan_to(p, stop) != 0)
        return MP_ERROR;
    if (e == HPE_OK)
        return 0;
    int r = run_pending(p);
    if (r < 0)
        return MP_ERROR;
    if (r == MP_AGAIN || p->user_pause || p->upgraded) {
        p->user_pause = false;
        p->paused = !p->upgraded;
        return MP_AGAIN;
    }
    return 0;
}

int mp_h1_parser_feed(mp_h1_parser_t *p, const char *data, size_t len, size_t *consumed)
{
    *consumed = 0;
    if (p->upgraded)
        fail(p, 502, "fed after 101: the stream is no longer HTTP/1");
    if (p->failed)
        return MP_ERROR;
    if (p->paused)
        return MP_AGAIN;
    int r = run_pending(p); /* owed from a pause in the middle of a hand-over */
    if (r != 0) {
        p->paused = r == MP_AGAIN;
        return r;
    }
    size_t off = 0;
    for (;;) {
        if (llhttp_get_errno(&p->ll) == HPE_PAUSED)
            llhttp_resume(&p->ll);
        p->scan_from = data + off;
        llhttp_errno_t e = llhttp_execute(&p->ll, data + off, len - off);
        const char *stop = e == HPE_OK ? data + len : llhttp_get_error_pos(&p->ll);
        r = after_execute(p, e, stop, data + len);
        p->scan_from = NULL;
        if (r < 0)
            return MP_ERROR;
        off = (size_t)(stop - data);
        if (r == MP_AGAIN) {
            *consumed = off;
            return MP_AGAIN;
        }
        if (e == HPE_OK)
            break;
    }
    *consumed = len;
    return 0;
}

int mp_h1_parser_finish(mp_h1_parser_t *p)
{
    if (p->failed)
        return MP_ERROR;
    if (p->upgraded)
        return 0;
    /* EOF ends any pause: hand over what is owed, then let llhttp judge the cut. */
    p->paused = false;
    if (run_pending(p) < 0)
        return MP_ERROR;
    /* A pause leaves llhttp short of its end-of-message bookkeeping; an empty execute runs the
     * steps that need no input (and may complete a body-less message) before EOF is judged. */
    static const char empty[1];
    for (int i = 0; i < 4 && llhttp_get_errno(&p->ll) == HPE_PAUSED; i++) {
        llhttp_resume(&p->ll);
        p->scan_from = empty;
        llhttp_execute(&p->ll, empty, 0);
        p->scan_from = NULL;
        p->user_pause = false;
        if (p->failed || run_pending(p) < 0)
            return MP_ERROR;
    }
    p->in_finish = true;
    llhttp_errno_t e = llhttp_finish(&p->ll);
    p->in_finish = false;
    if (p->failed)
        return MP_ERROR;
    if (e != HPE_OK && e != HPE_PAUSED) {
        fail(p, llhttp_status(p, e, NULL), "connection closed inside a message");
        return MP_ERROR;
    }
    return 0;
}

void mp_h1_parser_resume(mp_h1_parser_t *p)
{
    p->paused = false;
}

void mp_h1_parser_expect_head_response(mp_h1_parser_t *p, bool is_head)
{
    p->expect_head = is_head;
}

int mp_h1_parser_error_status(const mp_h1_parser_t *p)
{
    return p->failed ? p->err_status : 0;
}

const char *mp_h1_parser_error_reason(const mp_h1_parser_t *p)
{
    return p->failed ? p->err_reason : NULL;
}

bool mp_h1_parser_idle(const mp_h1_parser_t *p)
{
    return !p->failed && p->phase == PH_IDLE && !p->pending_head && !p->pending_complete &&
           p->trailers == NULL;
}
