/* Per-worker load balancers (include/magpie/lb.h).  State is per (worker, cluster) and is
 * rebuilt whenever the caller hands in a host set other than the one last seen; the lb keeps a
 * ref on that set so its address cannot be recycled for a different set (no ABA). */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "magpie/lb.h"
#include "magpie/lb_hash.h"

struct mp_lb {
    mp_lb_policy_t policy;
    uint32_t choices;   /* LEAST_REQUEST: candidates per pick */
    mp_hostset_t *seen; /* ref held; NULL until the first pick */
    uint32_t n, cap;    /* hosts in seen; allocated slots */
    bool equal;         /* all weights equal: cheaper algorithms apply */
    uint64_t total;     /* sum of weights */
    uint32_t rr;        /* equal-weight rotation position */
    uint32_t *weight;   /* per host, >= 1 */
    uint32_t *active;   /* per host: requests started and not ended */
    int64_t *cur;       /* ROUND_ROBIN: smooth weighted round robin current weights */
    double *dcur;       /* LEAST_REQUEST, unequal weights: same, with effective weights */
    uint64_t *cum;      /* RANDOM: cumulative weights, cum[i] = sum of weights[0..i] */
    mp_lb_hash_t *hash; /* RING_HASH, MAGLEV: the table state (proxy/lb_hash_state.c) */
};

/* ---- random numbers: xorshift128+, seeded once per thread ---- */

static _Thread_local uint64_t rnd_s[2];
static _Thread_local bool rnd_seeded;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void seed_random(void)
{
    uint64_t seed;
    /* getrandom can only fail before the kernel's pool is ready or under seccomp; a time- and
     * thread-derived seed is enough for load balancing then. */
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed = mp_now_ns() ^ ((uint64_t)gettid() << 32) ^ (uint64_t)(uintptr_t)&seed;
    rnd_s[0] = splitmix64(&seed);
    rnd_s[1] = splitmix64(&seed);
    if ((rnd_s[0] | rnd_s[1]) == 0)
        rnd_s[1] = 1;
    rnd_seeded = true;
}

uint64_t mp_random(void)
{
    if (!rnd_seeded)
        seed_random();
    uint64_t s1 = rnd_s[0];
    const uint64_t s0 = rnd_s[1];
    rnd_s[0] = s0;
    s1 ^= s1 << 23;
    rnd_s[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return rnd_s[1] + s0;
}

/* Uniform in [0, n) for n > 0.  The modulo bias of a 64-bit draw is below 2^-32 for any n we
 * see. */
static uint64_t random_below(uint64_t n)
{
    return mp_random() % n;
}

/* ---- state ---- */

mp_lb_t *mp_lb_new(mp_cluster_t *c)
{
    mp_lb_t *lb = mp_xcalloc(1, sizeof(*lb));
    lb->policy = c ? c->lb_policy : MP_LB_ROUND_ROBIN;
    lb->choices = c && c->least_request_choices >= 1 ? c->least_request_choices : 2;
    if (c && (c->lb_policy == MP_LB_RING_HASH || c->lb_policy == MP_LB_MAGLEV))
        lb->hash = mp_lb_hash_new(c);
    return lb;
}

static void release_seen(mp_lb_t *lb)
{
    if (lb->seen != NULL)
        mp_hostset_release(lb->seen);
    lb->seen = NULL;
}

void mp_lb_free(mp_lb_t *lb)
{
    if (lb == NULL)
        return;
    release_seen(lb);
    mp_lb_hash_free(lb->hash);
    free(lb->weight);
    free(lb->active);
    free(lb->cur);
    free(lb->dcur);
    free(lb->cum);
    free(lb);
}

static void grow(mp_lb_t *lb, uint32_t n)
{
    if (n <= lb->cap)
        return;
    lb->cap = n;
    lb->weight = mp_xrealloc(lb->weight, n * sizeof(*lb->weight));
    lb->active = mp_xrealloc(lb->active, n * sizeof(*lb->active));
    lb->cur = mp_xrealloc(lb->cur, n * sizeof(*lb->cur));
    lb->dcur = mp_xrealloc(lb->dcur, n * sizeof(*lb->dcur));
    lb->cum = mp_xrealloc(lb->cum, n * sizeof(*lb->cum));
}

/* Switches to hs, forgetting everything about the previous set: counts for requests started on
 * it are dropped (their ends arrive with the old set and are ignored, so nothing goes negative). */
static void sync_set(mp_lb_t *lb, const mp_hostset_t *chs)
{
    mp_hostset_t *hs = (mp_hostset_t *)chs; /* only the atomic refcount is touched */
    if (hs == lb->seen)
        return;
    atomic_fetch_add_explicit(&hs->refs, 1, memory_order_relaxed);
    release_seen(lb);
    lb->seen = hs;
    lb->n = hs->n;
    grow(lb, hs->n);
    lb->total = 0;
    lb->equal = true;
    for (uint32_t i = 0; i < hs->n; i++) {
        lb->weight[i] = hs->hosts[i].weight ? hs->hosts[i].weight : 1;
        lb->equal = lb->equal && lb->weight[i] == lb->weight[0];
        lb->total += lb->weight[i];
        lb->cum[i] = lb->total;
        lb->active[i] = 0;
        lb->cur[i] = 0;
        lb->dcur[i] = 0;
    }
    /* Workers start their rotations at different hosts so that they do not all hit host 0 at
     * once after a config push (Envoy does the same). */
    lb->rr = hs->n ? (uint32_t)random_below(hs->n) : 0;
}

/* ---- policies ---- */

static int pick_rotation(mp_lb_t *lb, int ex)
{
    uint32_t i = lb->rr++ % lb->n;
    if ((int)i == ex)
        i = lb->rr++ % lb->n;
    return (int)i;
}

/* Smooth weighted round robin (as in nginx): every host gains its weight, the richest is picked
 * and pays the total.  Over any window of `total` picks each host is chosen exactly `weight`
 * times, interleaved rather than in bursts.  O(n) per pick. */
static int pick_smooth_wrr(mp_lb_t *lb, int ex)
{
    int best = -1;
    int64_t total = 0;
    for (uint32_t i = 0; i < lb->n; i++) {
        if ((int)i == ex)
            continue;
        lb->cur[i] += lb->weight[i];
        total += lb->weight[i];
        if (best < 0 || lb->cur[i] > lb->cur[best])
            best = (int)i;
    }
    lb->cur[best] -= total;
    return best;
}

/* A uniformly random index other than ex (ex is -1 or valid, and n >= 2 when it is valid). */
static uint32_t random_index(mp_lb_t *lb, int ex)
{
    if (ex < 0)
        return (uint32_t)random_below(lb->n);
    uint32_t r = (uint32_t)random_below(lb->n - 1);
    return r >= (uint32_t)ex ? r + 1 : r;
}

/* Envoy's equal-weight LEAST_REQUEST: draw `choices` hosts at random (with replacement) and keep
 * the one with the fewest active requests; the first drawn wins ties. */
static int pick_p2c(mp_lb_t *lb, int ex)
{
    uint32_t best = random_index(lb, ex);
    for (uint32_t k = 1; k < lb->choices; k++) {
        uint32_t c = random_index(lb, ex);
        if (lb->active[c] < lb->active[best])
            best = c;
    }
    return (int)best;
}

/* Envoy's unequal-weight LEAST_REQUEST schedules by weight / (active + 1) (active_request_bias
 * 1.0).  We run smooth weighted round robin over those effective weights, recomputed every pick,
 * which is deterministic and converges to the same shares. */
static int pick_weighted_lr(mp_lb_t *lb, int ex)
{
    int best = -1;
    double total = 0;
    for (uint32_t i = 0; i < lb->n; i++) {
        if ((int)i == ex)
            continue;
        double w = (double)lb->weight[i] / ((double)lb->active[i] + 1.0);
        lb->dcur[i] += w;
        total += w;
        if (best < 0 || lb->dcur[i] > lb->dcur[best])
            best = (int)i;
    }
    lb->dcur[best] -= total;
    return best;
}

/* Weighted random: a draw in [0, total) located by binary search in the cumulative weights.
 * An excluded host's range is cut out of the draw rather than retried. */
static int pick_random(mp_lb_t *lb, int ex)
{
    if (lb->equal)
        return (int)random_index(lb, ex);
    uint64_t exw = ex >= 0 ? lb->weight[ex] : 0;
    uint64_t r = random_below(lb->total - exw);
    if (ex >= 0 && r >= lb->cum[ex] - exw)
        r += exw;
    uint32_t lo = 0, hi = lb->n - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r < lb->cum[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return (int)lo;
}

static int pick_policy(mp_lb_t *lb, int ex)
{
    switch (lb->policy) {
    case MP_LB_LEAST_REQUEST:
        return lb->equal ? pick_p2c(lb, ex) : pick_weighted_lr(lb, ex);
    case MP_LB_RANDOM:
        return pick_random(lb, ex);
    case MP_LB_ROUND_ROBIN:
    default:
        return lb->equal ? pick_rotation(lb, ex) : pick_smooth_wrr(lb, ex);
    }
}

/* Below this share of usable hosts (Envoy's healthy_panic_threshold default, 50 %) the set is
 * "in panic" and health is ignored: sending to every host beats overloading the few left. */
#define PANIC_THRESHOLD_PERCENT 50

int mp_lb_pick(mp_lb_t *lb, const mp_hostset_t *hs, int exclude)
{
    if (hs == NULL || hs->n == 0)
        return -1;
    if (lb->hash != NULL) /* no request hash: a random one, as Envoy does */
        return mp_lb_hash_pick(lb->hash, hs, exclude, mp_random());
    sync_set(lb, hs);
    if (lb->n == 1)
        return 0;
    int ex = exclude >= 0 && (uint32_t)exclude < lb->n ? exclude : -1;
    uint32_t usable = 0;
    for (uint32_t i = 0; i < hs->n; i++)
        usable += mp_host_usable(&hs->hosts[i]);
    if (usable == hs->n || (uint64_t)usable * 100 < (uint64_t)PANIC_THRESHOLD_PERCENT * hs->n)
        return pick_policy(lb, ex);
    /* Let the policy choose among all and skip unusable picks: its own rotation or draw moves
     * on, so a usable host comes up within a few tries. */
    for (uint32_t k = 0; k < 2 * hs->n; k++) {
        int i = pick_policy(lb, ex);
        if (mp_host_usable(&hs->hosts[i]))
            return i;
    }
    for (uint32_t i = 0; i < hs->n; i++)
        if ((int)i != ex && mp_host_usable(&hs->hosts[i]))
            return (int)i;
    return pick_policy(lb, ex);
}

int mp_lb_pick_hash(mp_lb_t *lb, const mp_hostset_t *hs, int exclude, uint64_t hash)
{
    if (lb->hash == NULL)
        return mp_lb_pick(lb, hs, exclude);
    return mp_lb_hash_pick(lb->hash, hs, exclude, hash);
}

static bool current_index(const mp_lb_t *lb, const mp_hostset_t *hs, int i)
{
    return hs != NULL && hs == lb->seen && i >= 0 && (uint32_t)i < lb->n;
}

void mp_lb_request_start(mp_lb_t *lb, const mp_hostset_t *hs, int host_index)
{
    if (current_index(lb, hs, host_index))
        lb->active[host_index]++;
}

void mp_lb_request_end(mp_lb_t *lb, const mp_hostset_t *hs, int host_index)
{
    if (current_index(lb, hs, host_index) && lb->active[host_index] > 0)
        lb->active[host_index]--;
}
