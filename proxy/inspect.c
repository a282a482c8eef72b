/* The listener filters' parsers (include/magpie/inspect.h).  They read untrusted network bytes:
 * every length is checked against what remains before it is used, and the ClientHello is
 * reassembled into a fixed buffer bounded by MP_CH_MAX_HELLO (RFC 8446 5.1 lets a handshake
 * message span records, and some clients split the hello). */
#include <ctype.h>
#include <stdbool.h>
#include <string.h>

#include "magpie/inspect.h"

#define REC_HANDSHAKE 22
#define HS_CLIENT_HELLO 1
#define EXT_SERVER_NAME 0
#define EXT_ALPN 16
#define MAX_RECORD (16384 + 2048) /* TLSCiphertext's ceiling; a plaintext hello is smaller */

/* A bounds-checked cursor over bytes. */
typedef struct rd {
    const uint8_t *p;
    size_t n;
    bool bad;
} rd_t;

static const uint8_t *take(rd_t *r, size_t k)
{
    if (r->bad || k > r->n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += k;
    r->n -= k;
    return p;
}

static size_t take_len(rd_t *r, int bytes)
{
    const uint8_t *p = take(r, (size_t)bytes);
    if (p == NULL)
        return 0;
    return bytes == 1 ? p[0] : bytes == 2 ? (size_t)(p[0] << 8 | p[1]) : 0;
}

/* A sub-reader over the next len-prefixed vector. */
static rd_t take_vec(rd_t *r, int len_bytes)
{
    size_t k = take_len(r, len_bytes);
    rd_t sub = {take(r, k), k, r->bad};
    return sub;
}

/* RFC 6066 3: the first host_name entry.  Names that are not plain printable text are ignored
 * rather than matched. */
static void parse_sni(rd_t ext, mp_client_hello_t *out)
{
    rd_t list = take_vec(&ext, 2);
    while (!list.bad && list.n > 0) {
        const uint8_t *type = take(&list, 1);
        rd_t name = take_vec(&list, 2);
        if (list.bad || type[0] != 0)
            continue;
        if (name.n == 0 || name.n >= sizeof(out->sni))
            return;
        for (size_t i = 0; i < name.n; i++) {
            if (name.p[i] <= 0x20 || name.p[i] >= 0x7f)
                return;
            out->sni[i] = (char)tolower(name.p[i]);
        }
        out->sni[name.n] = '\0';
        return;
    }
}

/* RFC 7301 3.1: ProtocolNameList. */
static void parse_alpn(rd_t ext, mp_client_hello_t *out)
{
    rd_t list = take_vec(&ext, 2);
    while (!list.bad && list.n > 0) {
        rd_t proto = take_vec(&list, 1);
        /* A NUL inside would make the name compare as a shorter one: skip it (found by
         * fuzz_client_hello). */
        if (list.bad || proto.n == 0 || proto.n >= sizeof(out->alpn[0]) ||
            out->n_alpn == MP_CH_MAX_ALPN || memchr(proto.p, '\0', proto.n) != NULL)
            continue;
        memcpy(out->alpn[out->n_alpn], proto.p, proto.n);
        out->alpn[out->n_alpn][proto.n] = '\0';
        out->n_alpn++;
    }
}

/* ClientHello body (RFC 8446 4.1.2; TLS 1.0-1.2 hellos have the same layout).  Unknown and
 * GREASE extensions (RFC 8701) are skipped by their length. */
static mp_inspect_result_t parse_hello(rd_t r, mp_client_hello_t *out)
{
    take(&r, 2 + 32); /* legacy_version, random */
    rd_t session = take_vec(&r, 1);
    rd_t suites = take_vec(&r, 2);
    rd_t compression = take_vec(&r, 1);
    if (r.bad || session.n > 32 || suites.n < 2 || compression.n < 1)
        return MP_INSPECT_NO;
    if (r.n == 0)
        return MP_INSPECT_DONE; /* no extensions: an old client, no SNI, no ALPN */
    rd_t exts = take_vec(&r, 2);
    while (!exts.bad && exts.n > 0) {
        size_t type = take_len(&exts, 2);
        rd_t data = take_vec(&exts, 2);
        if (exts.bad)
            break;
        if (type == EXT_SERVER_NAME && out->sni[0] == '\0')
            parse_sni(data, out);
        else if (type == EXT_ALPN && out->n_alpn == 0)
            parse_alpn(data, out);
    }
    return exts.bad || r.bad ? MP_INSPECT_NO : MP_INSPECT_DONE;
}

/* Appends the handshake bytes of the records in buf to hs; returns how many handshake bytes
 * there are (<= cap), or -1 when the bytes are not TLS handshake records. */
static long gather_records(const uint8_t *buf, size_t len, uint8_t *hs, size_t cap)
{
    size_t off = 0, n = 0;
    while (off < len && n < cap) {
        if (buf[off] != REC_HANDSHAKE || (off + 1 < len && buf[off + 1] != 3))
            return -1;
        if (off + 5 > len)
            break;
        size_t rlen = (size_t)buf[off + 3] << 8 | buf[off + 4];
        if (rlen == 0 || rlen > MAX_RECORD)
            return -1;
        size_t have = len - off - 5 < rlen ? len - off - 5 : rlen;
        if (have > cap - n)
            have = cap - n;
        memcpy(hs + n, buf + off + 5, have);
        n += have;
        off += 5 + rlen;
    }
    return (long)n;
}

mp_inspect_result_t mp_inspect_client_hello(const uint8_t *buf, size_t len, mp_client_hello_t *out)
{
    static _Thread_local uint8_t hs[MP_CH_MAX_HELLO + 4];
    memset(out, 0, sizeof(*out));
    long n = gather_records(buf, len, hs, sizeof(hs));
    if (n < 0)
        return MP_INSPECT_NO;
    if (n >= 1 && hs[0] != HS_CLIENT_HELLO)
        return MP_INSPECT_NO;
    /* A hello whose start fills the whole peek, or which says it is longer than the cap, is
     * "too large"; either way it is not inspected. */
    out->too_large = len >= MP_CH_MAX_PEEK;
    if (n < 4)
        return out->too_large ? MP_INSPECT_NO : MP_INSPECT_NEED_MORE;
    size_t body = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
    if (body > MP_CH_MAX_HELLO) {
        out->too_large = true;
        return MP_INSPECT_NO;
    }
    if ((size_t)n < 4 + body) /* the rest may be in this record or in records still to come */
        return out->too_large ? MP_INSPECT_NO : MP_INSPECT_NEED_MORE;
    out->too_large = false;
    rd_t r = {hs + 4, body, false};
    return parse_hello(r, out);
}

/* ---- HTTP ---- */

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static bool is_tchar(uint8_t c)
{
    return isalnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* "METHOD SP target SP HTTP/1.x" up to the CR. */
static mp_inspect_result_t request_line(const uint8_t *p, size_t n, const char **proto)
{
    size_t i = 0;
    while (i < n && is_tchar(p[i]))
        i++;
    if (i == 0 || i == n || p[i] != ' ')
        return i == n && n > 0 ? MP_INSPECT_NEED_MORE : MP_INSPECT_NO;
    const uint8_t *sp = memchr(p + i + 1, ' ', n - i - 1);
    const uint8_t *cr = memchr(p, '\r', n);
    if (cr == NULL)
        return MP_INSPECT_NEED_MORE;
    if (sp == NULL || sp > cr || (size_t)(cr - sp) != 9 || memcmp(sp + 1, "HTTP/1.", 7) != 0)
        return MP_INSPECT_NO;
    if (sp[8] == '1')
        *proto = "http/1.1";
    else if (sp[8] == '0')
        *proto = "http/1.0";
    else
        return MP_INSPECT_NO;
    return MP_INSPECT_DONE;
}

mp_inspect_result_t mp_inspect_http(const uint8_t *buf, size_t len, const char **proto)
{
    size_t pl = sizeof(h2_preface) - 1;
    size_t k = len < pl ? len : pl;
    if (len > 0 && memcmp(buf, h2_preface, k) == 0) {
        if (len < pl)
            return MP_INSPECT_NEED_MORE;
        *proto = "h2c";
        return MP_INSPECT_DONE;
    }
    if (len > MP_HTTP_INSPECT_MAX)
        len = MP_HTTP_INSPECT_MAX;
    mp_inspect_result_t r = request_line(buf, len, proto);
    if (r == MP_INSPECT_NEED_MORE && len >= MP_HTTP_INSPECT_MAX)
        return MP_INSPECT_NO;
    return r;
}
