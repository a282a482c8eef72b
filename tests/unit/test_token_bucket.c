/* proxy/token_bucket.c: fill arithmetic against a fake clock, the shared (atomic) bucket under
 * contention, and the fractional-percent draw. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "magpie/token_bucket.h"
#include "unit.h"

#define MS 1000000ull
#define ORIGIN (1000 * MS) /* a clock that does not start at 0 */

static mp_token_bucket_cfg_t cfg(uint32_t max, uint32_t per_fill, uint64_t fill_ms)
{
    return (mp_token_bucket_cfg_t){max, per_fill, fill_ms * MS, ORIGIN};
}

static void test_starts_full_and_empties(void)
{
    mp_token_bucket_cfg_t c = cfg(3, 1, 1000);
    mp_token_bucket_t b = mp_token_bucket_full(&c, ORIGIN);
    CHECK(mp_token_bucket_take(&c, &b, ORIGIN));
    CHECK(mp_token_bucket_take(&c, &b, ORIGIN + 10 * MS));
    CHECK(mp_token_bucket_take(&c, &b, ORIGIN + 20 * MS));
    /* 999 ms in: still the first interval, nothing refilled. */
    CHECK(!mp_token_bucket_take(&c, &b, ORIGIN + 999 * MS));
    CHECK_INT(b.tokens, 0);
}

static void test_refills_per_interval_capped(void)
{
    mp_token_bucket_cfg_t c = cfg(10, 4, 100);
    mp_token_bucket_t b = mp_token_bucket_full(&c, ORIGIN);
    b.tokens = 0;
    /* One fill at 100 ms, not at 99 ms: fills happen on interval boundaries from the origin. */
    mp_token_bucket_refill(&c, &b, ORIGIN + 99 * MS);
    CHECK_INT(b.tokens, 0);
    mp_token_bucket_refill(&c, &b, ORIGIN + 100 * MS);
    CHECK_INT(b.tokens, 4);
    /* A fill is never counted twice within one interval. */
    mp_token_bucket_refill(&c, &b, ORIGIN + 150 * MS);
    CHECK_INT(b.tokens, 4);
    /* Two more intervals owed at once: 4 + 8 = 12, capped at max_tokens. */
    mp_token_bucket_refill(&c, &b, ORIGIN + 320 * MS);
    CHECK_INT(b.tokens, 10);
    /* A clock read slightly behind the bucket's step (another worker) takes nothing away. */
    b.tokens = 2;
    mp_token_bucket_refill(&c, &b, ORIGIN + 250 * MS);
    CHECK_INT(b.tokens, 2);
}

static void test_long_idle_does_not_overflow(void)
{
    mp_token_bucket_cfg_t c = cfg(UINT32_MAX, UINT32_MAX, 50);
    mp_token_bucket_t b = mp_token_bucket_full(&c, ORIGIN);
    b.tokens = 0;
    mp_token_bucket_refill(&c, &b, ORIGIN + 3600ull * 1000 * MS);
    CHECK(b.tokens == UINT32_MAX);
}

static void test_reset_seconds(void)
{
    mp_token_bucket_cfg_t c = cfg(5, 1, 2500);
    CHECK_INT(mp_token_bucket_reset_s(&c, ORIGIN), 3);             /* 2.5 s left -> 3 */
    CHECK_INT(mp_token_bucket_reset_s(&c, ORIGIN + 1600 * MS), 1); /* 0.9 s -> 1 */
    CHECK_INT(mp_token_bucket_reset_s(&c, ORIGIN + 2500 * MS), 3); /* a new interval */
}

static void test_shared_bucket_single_thread(void)
{
    mp_token_bucket_cfg_t c = cfg(2, 2, 1000);
    _Atomic uint64_t w;
    mp_token_bucket_shared_init(&c, &w, ORIGIN);
    CHECK_INT(mp_token_bucket_shared_peek(&c, &w, ORIGIN), 2);
    CHECK(mp_token_bucket_shared_take(&c, &w, ORIGIN));
    CHECK(mp_token_bucket_shared_take(&c, &w, ORIGIN));
    CHECK(!mp_token_bucket_shared_take(&c, &w, ORIGIN + 500 * MS));
    CHECK_INT(mp_token_bucket_shared_peek(&c, &w, ORIGIN + 1000 * MS), 2);
    CHECK(mp_token_bucket_shared_take(&c, &w, ORIGIN + 1000 * MS));
    CHECK_INT(mp_token_bucket_shared_peek(&c, &w, ORIGIN + 1000 * MS), 1);
}

#define THREADS 4
#define TRIES 100000
static mp_token_bucket_cfg_t shared_cfg;
static _Atomic uint64_t shared_word;
static pthread_barrier_t start_line;

static bool walk_clock;

/* With walk_clock each thread walks the fake clock through 0..999 ms (10 intervals) on its own;
 * otherwise the clock stands still and no fill happens. */
static void *take_many(void *arg)
{
    long got = 0;
    pthread_barrier_wait(&start_line);
    for (int i = 0; i < TRIES; i++) {
        uint64_t now = ORIGIN + (walk_clock ? (uint64_t)i * 1000 * MS / TRIES : 0);
        got += mp_token_bucket_shared_take(&shared_cfg, &shared_word, now);
    }
    return (void *)got;
}

static long run_threads(void)
{
    pthread_barrier_init(&start_line, NULL, THREADS);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, take_many, NULL);
    long total = 0;
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (long)r;
    }
    pthread_barrier_destroy(&start_line);
    return total;
}

/* Under contention every token is handed out exactly once: 4 x 100000 tries on a bucket of
 * 50000 with the clock standing still get exactly 50000.  With the clock moving, the 9 fills
 * of 100 (at 100, 200, ..., 900 ms) add at most 900: never more, whatever the interleaving
 * (a fill may be lost to the cap when one thread runs ahead onto a bucket not yet empty). */
static void test_shared_bucket_concurrent(void)
{
    shared_cfg = cfg(50000, 100, 100);
    mp_token_bucket_shared_init(&shared_cfg, &shared_word, ORIGIN);
    walk_clock = false;
    CHECK_INT(run_threads(), 50000);
    shared_cfg = cfg(1000, 100, 100);
    mp_token_bucket_shared_init(&shared_cfg, &shared_word, ORIGIN);
    walk_clock = true;
    long total = run_threads();
    CHECK(total >= 1000 && total <= 1000 + 9 * 100);
}

static void test_percent(void)
{
    CHECK_INT(mp_percent_denominator(0), 100);
    CHECK_INT(mp_percent_denominator(1), 10000);
    CHECK_INT(mp_percent_denominator(2), 1000000);
    CHECK_INT(mp_percent_denominator(7), 100);
    CHECK(!mp_percent_hit(0, 100, 0));
    CHECK(mp_percent_hit(100, 100, 99));
    CHECK(mp_percent_hit(250, 100, 12345)); /* above the denominator: always */
    CHECK(mp_percent_hit(1, 10000, 20000)); /* 20000 % 10000 = 0 < 1 */
    CHECK(!mp_percent_hit(1, 10000, 20001));
    /* Over every residue, numerator/denominator of the draws hit. */
    int hits = 0;
    for (uint64_t r = 0; r < 10000; r++)
        hits += mp_percent_hit(25, 10000, r * 7919); /* 7919 is coprime to 10000 */
    CHECK_INT(hits, 25);
    hits = 0;
    for (uint64_t r = 0; r < 1000000; r++)
        hits += mp_percent_hit(500000, 1000000, r);
    CHECK_INT(hits, 500000);
}

int main(void)
{
    RUN(test_starts_full_and_empties);
    RUN(test_refills_per_interval_capped);
    RUN(test_long_idle_does_not_overflow);
    RUN(test_reset_seconds);
    RUN(test_shared_bucket_single_thread);
    RUN(test_shared_bucket_concurrent);
    RUN(test_percent);
    UNIT_DONE();
}
