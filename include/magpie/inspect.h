/* The listener filters' parsers: what tls_inspector and http_inspector learn from the first
 * bytes of a connection, peeked (never consumed).  Pure functions over bytes: each call parses
 * the whole prefix seen so far, so the caller simply peeks again with more.  Any thread. */
#ifndef MAGPIE_INSPECT_H
#define MAGPIE_INSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest ClientHello handshake message accepted (Envoy's max_client_hello_size default),
 * and the most bytes the TLS inspector peeks: the message plus the record headers of a hello
 * split into many small records.  A hello that needs more is "not TLS". */
#define MP_CH_MAX_HELLO 16384
#define MP_CH_MAX_PEEK (MP_CH_MAX_HELLO + 4096)
#define MP_CH_MAX_ALPN 8

typedef enum mp_inspect_result {
    MP_INSPECT_NEED_MORE, /* a prefix of what is looked for: peek again with more bytes */
    MP_INSPECT_DONE,      /* found: the out struct is filled */
    MP_INSPECT_NO,        /* not this protocol (or malformed, or over the size cap) */
} mp_inspect_result_t;

/* What a ClientHello told: SNI (lower case, "" when absent or unusable) and the ALPN list in
 * the client's order (protocols longer than 63 bytes or past MP_CH_MAX_ALPN are skipped). */
typedef struct mp_client_hello {
    char sni[256];
    char alpn[MP_CH_MAX_ALPN][64];
    uint32_t n_alpn;
    bool too_large; /* NO because the hello is over MP_CH_MAX_HELLO (tls_inspector's
                       client_hello_too_large) rather than not a hello */
} mp_client_hello_t;

/* Parses the TLS records at buf[0..len) as the start of a connection: handshake records
 * (type 22) carrying a ClientHello, possibly fragmented over several records.  GREASE values
 * and unknown extensions are skipped; a hello without SNI or ALPN is DONE with those empty. */
mp_inspect_result_t mp_inspect_client_hello(const uint8_t *buf, size_t len, mp_client_hello_t *out);

/* The most bytes the HTTP inspector looks at for a request line. */
#define MP_HTTP_INSPECT_MAX 4096

/* Sniffs plaintext HTTP: the HTTP/2 connection preface gives "h2c", a request line
 * "METHOD SP target SP HTTP/1.x CRLF" gives "http/1.1" or "http/1.0".  *proto is set on DONE
 * (a static string). */
mp_inspect_result_t mp_inspect_http(const uint8_t *buf, size_t len, const char **proto);

#endif
