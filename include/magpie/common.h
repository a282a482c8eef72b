/* Small things every module uses: the error type, return codes, allocation that aborts on
 * failure, and the unused-parameter convention. */
#ifndef MAGPIE_COMMON_H
#define MAGPIE_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <stdbool.h>

/* Return codes: 0 success, MP_AGAIN when the work would block, negative on failure. */
#define MP_OK 0
#define MP_AGAIN 1
#define MP_ERROR (-1)

/* Unused callback parameters are silenced by -Wno-unused-parameter project-wide; this macro is
 * for the rare unused local. */
#define MP_UNUSED(x) ((void)(x))

#define MP_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MP_MAX(a, b) ((a) > (b) ? (a) : (b))

/* An error message.  For configuration it starts with the JSON path of the offending field
 * ("static_resources.clusters[1].connect_timeout: invalid duration \"5x\""); that text becomes
 * the NACK's error_detail and the --mode validate output. */
typedef struct mp_err {
    char msg[1024];
} mp_err_t;

/* Sets err->msg (printf-style).  err may be NULL, then nothing happens.  Returns MP_ERROR so a
 * caller can write `return mp_err_set(err, ...);`. */
int mp_err_set(mp_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix" to err->msg (printf-style), e.g. a path segment: mp_err_prefix(err,
 * "clusters[%d].", i).  No separator is added.  Returns MP_ERROR. */
int mp_err_prefix(mp_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation that never returns NULL: on failure it logs and aborts (STYLE.md rule 5). */
void *mp_xmalloc(size_t n);
void *mp_xcalloc(size_t nmemb, size_t size);
void *mp_xrealloc(void *p, size_t n);
char *mp_xstrdup(const char *s);
char *mp_xstrndup(const char *s, size_t n);
char *mp_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Monotonic time in milliseconds and nanoseconds (CLOCK_MONOTONIC); any thread. */
uint64_t mp_now_ms(void);
uint64_t mp_now_ns(void);

/* Case-insensitive ASCII comparison of a length-counted string with a C string. */
bool mp_strieq(const char *a, size_t alen, const char *b);

/* Base64 in either alphabet (standard or URL-safe), trailing '=' optional.  Writes at most cap
 * bytes; returns the decoded length, or -1 for a bad character, length or a short out. */
ssize_t mp_base64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

/* The value of one hexadecimal digit (either case), or -1. */
int mp_hex_digit(int c);

#endif
