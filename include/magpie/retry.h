/* Retry policy arithmetic, as Envoy's router defines it: which attempt outcomes a retry_on set
 * retries, the retry_on strings, and the jittered exponential back-off.  Pure functions; any
 * thread.  The stream (proxy/stream.c, proxy/stream_retry.c) drives attempts with them. */
#ifndef MAGPIE_RETRY_H
#define MAGPIE_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "magpie/config.h"
#include "magpie/http.h"

/* How one upstream attempt ended. */
typedef enum mp_attempt_kind {
    MP_ATTEMPT_RESPONSE,        /* a final response head arrived (status, headers) */
    MP_ATTEMPT_CONNECT_FAILURE, /* no connection (refused, connect timeout, TLS handshake) */
    MP_ATTEMPT_RESET,           /* the connection or stream broke before a response head */
    MP_ATTEMPT_REFUSED_STREAM,  /* HTTP/2 REFUSED_STREAM (or GOAWAY before the stream) */
    MP_ATTEMPT_TIMEOUT,         /* per-try (or per-try idle) timeout, or the route timeout */
} mp_attempt_kind_t;

typedef struct mp_attempt_outcome {
    mp_attempt_kind_t kind;
    const mp_http_msg_t *resp; /* MP_ATTEMPT_RESPONSE: the response head; else NULL */
    uint32_t flag;             /* the MP_RF_* flag the failure would carry; 0 for a response */
    const char *details;       /* why, for logs; NULL for a response */
} mp_attempt_outcome_t;

/* Parses a comma-separated retry_on list (spaces around names allowed) into MP_RETRY_ON_* bits,
 * ORed into *bits.  Names not known are skipped and counted in the return value (Envoy ignores
 * them too); so 0 means every name was understood. */
int mp_retry_on_parse(const char *list, uint32_t *bits);

/* The extra conditions a request header may add: the retriable status codes of
 * x-envoy-retriable-status-codes and the header names of x-envoy-retriable-header-names. */
typedef struct mp_retry_extra {
    const char *status_codes; /* comma-separated, or NULL */
    const char *header_names; /* comma-separated, or NULL */
} mp_retry_extra_t;

/* Whether policy p with condition bits retry_on retries outcome o.  A per-try timeout counts as
 * a reset and as a 504.  extra may be NULL. */
bool mp_retry_would_retry(const mp_retry_policy_t *p, uint32_t retry_on,
                          const mp_attempt_outcome_t *o, const mp_retry_extra_t *extra);

/* Envoy's fully jittered exponential back-off: before retry n (1 for the first), a random time in
 * [0, min((2^n - 1) * base, max)) milliseconds; rnd is a uniform random number. */
uint64_t mp_retry_backoff_ms(uint64_t base_ms, uint64_t max_ms, uint32_t n, uint64_t rnd);

/* Policy defaults: num_retries 1, back-off 25 ms up to 250 ms, host selection 1 attempt. */
void mp_retry_policy_default(mp_retry_policy_t *p);
/* Frees what p owns and p itself; NULL is fine.  Main thread. */
void mp_retry_policy_free(mp_retry_policy_t *p);

#endif
