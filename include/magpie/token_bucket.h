/* Token buckets for local rate limiting (envoy.type.v3.TokenBucket) and the fractional-percent
 * test that fault injection and rate limiting share (envoy.type.v3.FractionalPercent).
 *
 * The bucket fills in steps: every fill_interval adds tokens_per_fill, up to max_tokens, and it
 * starts full.  Nothing runs on a timer: the fills owed are worked out from the time passed to
 * each call, so the same arithmetic serves one connection's bucket (a plain struct, one thread)
 * and the process-wide bucket that every worker takes from (one atomic word, compare-and-swap).
 * Pure functions of their arguments; times are nanoseconds of any monotonic clock. */
#ifndef MAGPIE_TOKEN_BUCKET_H
#define MAGPIE_TOKEN_BUCKET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct mp_token_bucket_cfg {
    uint32_t max_tokens;      /* > 0 */
    uint32_t tokens_per_fill; /* > 0 (Envoy's default 1) */
    uint64_t fill_ns;         /* fill_interval, > 0 */
    uint64_t origin_ns;       /* fills happen at origin + k * fill_ns */
} mp_token_bucket_cfg_t;

/* The bucket: tokens left, and the fill step (k above, modulo 2^32) they were counted at. */
typedef struct mp_token_bucket {
    uint32_t tokens;
    uint32_t step;
} mp_token_bucket_t;

/* A full bucket at now_ns. */
mp_token_bucket_t mp_token_bucket_full(const mp_token_bucket_cfg_t *cfg, uint64_t now_ns);
/* Adds the fills due by now_ns (capped at max_tokens); any thread, b owned by the caller. */
void mp_token_bucket_refill(const mp_token_bucket_cfg_t *cfg, mp_token_bucket_t *b,
                            uint64_t now_ns);
/* Refills, then takes one token: true when there was one. */
bool mp_token_bucket_take(const mp_token_bucket_cfg_t *cfg, mp_token_bucket_t *b, uint64_t now_ns);
/* Whole seconds, rounded up, until the next fill after now_ns (the x-ratelimit-reset value). */
uint64_t mp_token_bucket_reset_s(const mp_token_bucket_cfg_t *cfg, uint64_t now_ns);

/* The shared bucket: a mp_token_bucket_t packed in one atomic word.  Any thread. */
void mp_token_bucket_shared_init(const mp_token_bucket_cfg_t *cfg, _Atomic uint64_t *word,
                                 uint64_t now_ns);
bool mp_token_bucket_shared_take(const mp_token_bucket_cfg_t *cfg, _Atomic uint64_t *word,
                                 uint64_t now_ns);
/* Tokens left at now_ns (fills due counted, nothing taken). */
uint32_t mp_token_bucket_shared_peek(const mp_token_bucket_cfg_t *cfg, _Atomic uint64_t *word,
                                     uint64_t now_ns);

/* FractionalPercent: true for numerator out of every denominator (100, 10000 or 1000000) values
 * of random, as Envoy draws it (random % denominator < numerator); a numerator above the
 * denominator always hits. */
bool mp_percent_hit(uint32_t numerator, uint32_t denominator, uint64_t random);
/* The DenominatorType enum value (HUNDRED 0, TEN_THOUSAND 1, MILLION 2) -> 100, 10000, 1000000;
 * 100 for anything else. */
uint32_t mp_percent_denominator(int type);

#endif
