/* gRPC helpers the router and the HTTP/2 codec share: the grpc-timeout header, the gRPC
 * content-type test, and the status a gRPC client sees for an HTTP error
 * (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md and http-grpc-status-mapping.md).
 * Pure functions: any thread, no allocation. */
#ifndef MAGPIE_GRPC_H
#define MAGPIE_GRPC_H

#include <stdbool.h>
#include <stdint.h>

/* gRPC status codes used by magpie's own replies (google.rpc.Code numbering). */
enum {
    MP_GRPC_OK = 0,
    MP_GRPC_UNKNOWN = 2,
    MP_GRPC_PERMISSION_DENIED = 7,
    MP_GRPC_UNIMPLEMENTED = 12,
    MP_GRPC_INTERNAL = 13,
    MP_GRPC_UNAVAILABLE = 14,
    MP_GRPC_UNAUTHENTICATED = 16,
};

#define MP_GRPC_TIMEOUT_BUF 16

/* Parses a grpc-timeout header value: 1 to 8 ASCII digits followed by one unit letter, H
 * (hours), M (minutes), S (seconds), m (milliseconds), u (microseconds) or n (nanoseconds),
 * nothing else (no sign, no space).  On success stores the timeout in milliseconds in *ms,
 * rounding a fraction of a millisecond up ("1u" is 1 ms, "0n" is 0) and saturating at
 * UINT64_MAX, and returns 0; otherwise returns MP_ERROR and leaves *ms alone.  value may be
 * NULL (MP_ERROR). */
int mp_grpc_timeout_parse(const char *value, uint64_t *ms);

/* Writes ms as a grpc-timeout value into out (NUL-terminated, at most 10 bytes with the NUL):
 * in milliseconds when that fits the 8-digit limit, else in the first of seconds, minutes,
 * hours that fits, rounded down (a shorter deadline upstream is the safe side), and saturated
 * at 99999999H.  Returns the length.  Any thread. */
size_t mp_grpc_timeout_format(uint64_t ms, char out[MP_GRPC_TIMEOUT_BUF]);

/* The gRPC status for an HTTP status that did not come with a grpc-status: 400 -> INTERNAL,
 * 401 -> UNAUTHENTICATED, 403 -> PERMISSION_DENIED, 404 -> UNIMPLEMENTED, 429, 502, 503, 504 ->
 * UNAVAILABLE, anything else -> UNKNOWN. */
int mp_grpc_status_from_http(int http_status);

/* True for "application/grpc" alone or followed by '+' (a subtype such as "+proto") or ';' (a
 * parameter); the type compares case-insensitively, as media types do (RFC 9110 §8.3.1).
 * "application/grpc-web" and NULL are not gRPC. */
bool mp_grpc_is_grpc_content_type(const char *ct);

#endif
