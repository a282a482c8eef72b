/* Token bucket and fractional-percent arithmetic (include/magpie/token_bucket.h). */
#include "magpie/token_bucket.h"

static uint32_t step_at(const mp_token_bucket_cfg_t *cfg, uint64_t now_ns)
{
    uint64_t since = now_ns > cfg->origin_ns ? now_ns - cfg->origin_ns : 0;
    return (uint32_t)(since / cfg->fill_ns);
}

mp_token_bucket_t mp_token_bucket_full(const mp_token_bucket_cfg_t *cfg, uint64_t now_ns)
{
    return (mp_token_bucket_t){.tokens = cfg->max_tokens, .step = step_at(cfg, now_ns)};
}

void mp_token_bucket_refill(const mp_token_bucket_cfg_t *cfg, mp_token_bucket_t *b, uint64_t now_ns)
{
    uint32_t now_step = step_at(cfg, now_ns);
    /* Unsigned difference: right across the 2^32 wrap of the step counter.  A step "behind"
     * (another worker's clock read a hair later) shows as a huge count; a bucket is never
     * refilled backwards, so anything past half the range is taken as no fill. */
    uint32_t fills = now_step - b->step;
    if (fills == 0 || fills > UINT32_MAX / 2)
        return;
    uint64_t tokens = (uint64_t)b->tokens + (uint64_t)fills * cfg->tokens_per_fill;
    b->tokens = tokens > cfg->max_tokens ? cfg->max_tokens : (uint32_t)tokens;
    b->step = now_step;
}

bool mp_token_bucket_take(const mp_token_bucket_cfg_t *cfg, mp_token_bucket_t *b, uint64_t now_ns)
{
    mp_token_bucket_refill(cfg, b, now_ns);
    if (b->tokens == 0)
        return false;
    b->tokens--;
    return true;
}

uint64_t mp_token_bucket_reset_s(const mp_token_bucket_cfg_t *cfg, uint64_t now_ns)
{
    uint64_t since = now_ns > cfg->origin_ns ? now_ns - cfg->origin_ns : 0;
    uint64_t left = cfg->fill_ns - since % cfg->fill_ns;
    return (left + 999999999ull) / 1000000000ull;
}

static uint64_t pack(mp_token_bucket_t b)
{
    return (uint64_t)b.tokens << 32 | b.step;
}

static mp_token_bucket_t unpack(uint64_t w)
{
    return (mp_token_bucket_t){.tokens = (uint32_t)(w >> 32), .step = (uint32_t)w};
}

void mp_token_bucket_shared_init(const mp_token_bucket_cfg_t *cfg, _Atomic uint64_t *word,
                                 uint64_t now_ns)
{
    atomic_store(word, pack(mp_token_bucket_full(cfg, now_ns)));
}

bool mp_token_bucket_shared_take(const mp_token_bucket_cfg_t *cfg, _Atomic uint64_t *word,
                                 uint64_t now_ns)
{
    uint64_t old = atomic_load_explicit(word, memory_order_relaxed);
    for (;;) {
        mp_token_bucket_t b = unpack(old);
        bool got = mp_token_bucket_take(cfg, &b, now_ns);
        uint64_t nw = pack(b);
        if (nw == old)
            return got; /* empty and nothing to refill: no write needed */
        /* On failure `old` is reloaded and the refill worked out again from it, so a token is
         * never handed out twice and a fill is never counted twice. */
        if (atomic_compare_exchange_weak_explicit(word, &old, nw, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return got;
    }
}

uint32_t mp_token_bucket_shared_peek(const mp_token_bucket_cfg_t *cfg, _Atomic uint64_t *word,
                                     uint64_t now_ns)
{
    mp_token_bucket_t b = unpack(atomic_load_explicit(word, memory_order_relaxed));
    mp_token_bucket_refill(cfg, &b, now_ns);
    return b.tokens;
}

bool mp_percent_hit(uint32_t numerator, uint32_t denominator, uint64_t random)
{
    if (denominator == 0)
        return false;
    return numerator >= denominator || random % denominator < numerator;
}

uint32_t mp_percent_denominator(int type)
{
    switch (type) {
    case 1:
        return 10000;
    case 2:
        return 1000000;
    default:
        return 100;
    }
}
