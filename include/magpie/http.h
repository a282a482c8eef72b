/* HTTP messages independent of the wire codec: a header list and the request/response head.
 * A message is owned by whoever holds the pointer; mp_http_msg_free releases it and all its
 * strings.  Header names are stored lower-cased (HTTP/2 style) so that lookups and the HTTP/2
 * codec need no case folding; the HTTP/1 encoder writes them as stored. */
#ifndef MAGPIE_HTTP_H
#define MAGPIE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mp_header {
    char *name;  /* lower-case, NUL-terminated, owned */
    char *value; /* NUL-terminated, owned */
    uint32_t name_len;
    uint32_t value_len;
} mp_header_t;

typedef struct mp_headers {
    mp_header_t *v;
    uint32_t n;
    uint32_t cap;
} mp_headers_t;

void mp_headers_init(mp_headers_t *h);
void mp_headers_free(mp_headers_t *h);
/* A list on the heap (trailers travel as one): new returns an empty one, delete frees it and
 * its fields (NULL is fine). */
mp_headers_t *mp_headers_new(void);
void mp_headers_delete(mp_headers_t *h);
/* Appends a copy; the name is lower-cased on the way in. */
void mp_headers_add(mp_headers_t *h, const char *name, size_t name_len, const char *value,
                    size_t value_len);
void mp_headers_add_cstr(mp_headers_t *h, const char *name, const char *value);
/* Replaces every field named name by one with value (appends if absent). */
void mp_headers_set(mp_headers_t *h, const char *name, const char *value, size_t value_len);
/* First field named name (lower-case C string) or NULL. */
mp_header_t *mp_headers_get(const mp_headers_t *h, const char *name);
/* Number of fields named name. */
unsigned mp_headers_count(const mp_headers_t *h, const char *name);
/* Removes every field named name; returns how many went. */
unsigned mp_headers_remove(mp_headers_t *h, const char *name);
/* Removes, in one pass, every field for which pred(field, ctx) holds; returns how many went. */
unsigned mp_headers_remove_if(mp_headers_t *h, bool (*pred)(const mp_header_t *f, const void *ctx),
                              const void *ctx);
void mp_headers_copy(mp_headers_t *dst, const mp_headers_t *src);

typedef enum mp_http_version {
    MP_HTTP_10 = 10,
    MP_HTTP_11 = 11,
    MP_HTTP_2 = 20,
} mp_http_version_t;

/* A request or response head.  For a request: method, path (origin-form, query included),
 * authority (from Host or the absolute-form target), scheme.  For a response: status. */
typedef struct mp_http_msg {
    mp_headers_t headers;
    char *method;
    char *path;
    char *authority;
    char *scheme;
    char *protocol; /* HTTP/2 extended CONNECT's :protocol (RFC 8441), or NULL */
    int status;
    mp_http_version_t version;
    int64_t content_length; /* -1: none given */
    bool chunked;           /* Transfer-Encoding: chunked on the wire (HTTP/1) */
    bool keep_alive;        /* what the peer asked for, after Connection and version */
    bool expect_continue;   /* request carried Expect: 100-continue */
    bool upgrade;           /* request carried Connection: upgrade + Upgrade */
} mp_http_msg_t;

mp_http_msg_t *mp_http_msg_new(void);
void mp_http_msg_free(mp_http_msg_t *m);

/* Status reason phrase ("OK", "Not Found", ...); "Unknown" for codes it does not know. */
const char *mp_http_reason(int status);

/* True for hop-by-hop fields that a proxy must not forward (RFC 9110 §7.6.1): connection,
 * keep-alive, proxy-connection, transfer-encoding, upgrade, te, trailer. */
bool mp_http_is_hop_by_hop(const char *lname, size_t len);

/* The fields HTTP/2 forbids outright (RFC 9113 8.2.2): connection, keep-alive,
 * proxy-connection, transfer-encoding, upgrade.  (`te` is allowed there as "trailers" only.) */
bool mp_http_is_connection_specific(const char *lname, size_t len);

#endif
