/* Per-worker load balancers (include/magpie/lb.h).  State is per (worker, cluster) and is
 * rebuilt whenever the caller hands in a host set other than the one last seen; the lb keeps a
 * ref on that set so its address cannot be recycled for a different set (no ABA).
 *
 * A pick is Envoy's, in three steps: a priority (by the priority load, proxy/lb_priority.c), then
 * within it a locality when locality weighted or zone aware balancing applies, then a host by the
 * cluster's policy among the healthy (or, when the priority load says so, degraded) hosts of
 * that choice, or among all of the priority's hosts when it is in panic.
 *
 * Health changes at any moment (the main thread's checkers set flags), but the per-priority and
 * per-locality healthy lists are rebuilt only when the process-wide health generation moved.
 * One counter for every cluster is deliberate: health changes arrive at most a few per second
 * per host, a rebuild is one pass over the set (microseconds for hundreds of hosts), and a
 * per-cluster counter would need the cluster in mp_host_health_set, which has only the host.
 * Re-counting on every pick instead costs one atomic load per host per request (measured by
 * tests/unit/test_lb.c's bench: see docs/resilience.md). */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "magpie/lb.h"
#include "magpie/lb_hash.h"

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

enum { HOST_HEALTHY, HOST_DEGRADED, HOST_UNUSABLE };
enum { ZONE_NONE, ZONE_DIRECT, ZONE_RESIDUAL };

/* Zone aware routing considers at most this many localities in P0 (Envoy: no limit; a mesh has a
 * handful of zones). */
#define MP_ZONE_MAX 64

/* One priority level of the set seen. */
typedef struct lb_prio {
    uint32_t first, n;          /* its hosts: seen->hosts[first .. first + n) */
    uint32_t g_first, g_n;      /* its groups */
    uint32_t healthy, degraded; /* counts; the first ones of pperm[first ..] */
    mp_lb_load_t load;
} lb_prio_t;

/* One (priority, locality) group of the set seen. */
typedef struct lb_group {
    uint32_t healthy, degraded; /* the first ones of gperm[group first ..] */
    double eff[2], cur[2];      /* locality weighted: effective weight, smooth WRR state */
    uint64_t residual;          /* zone aware, P0: cumulative residual capacity */
} lb_group_t;

struct mp_lb {
    mp_lb_policy_t policy;
    uint32_t choices;      /* LEAST_REQUEST: candidates per pick */
    const mp_cluster_t *c; /* NULL in some tests: defaults then */
    mp_hostset_t *seen;    /* ref held; NULL until the first pick */
    uint32_t n, cap;       /* hosts in seen; allocated slots */
    bool equal;            /* all weights equal: cheaper algorithms apply */
    uint32_t rr;           /* equal-weight rotation position */
    uint32_t *weight;      /* per host, >= 1 */
    uint32_t *active;      /* per host: requests started and not ended */
    int64_t *cur;          /* ROUND_ROBIN: smooth weighted round robin current weights */
    double *dcur;          /* LEAST_REQUEST, unequal weights: same, with effective weights */
    uint8_t *state;        /* per host: HOST_*, as read at the last rebuild */
    uint32_t *pperm;       /* per priority range: healthy hosts, then degraded, then the rest */
    uint32_t *gperm;       /* per group range: the same */
    /* Health view, rebuilt when the set or the health generation changes. */
    uint64_t gen;
    const mp_host_group_t *groups; /* seen->groups, or &one_group for an unfinished set */
    mp_host_group_t one_group;
    uint32_t n_prio, n_grp;
    lb_prio_t *prio;
    lb_group_t *grp;
    /* Zone aware routing, priority 0 only (as Envoy). */
    int zone_state;
    int32_t local_group;         /* the group of the local locality in P0, or -1 */
    uint32_t local_pct_to_route; /* 1/100 % */
    bool local_panic;            /* the local cluster is in panic: no zone routing */
    mp_hostset_t *local_seen;    /* ref on the local cluster's set counted */
    mp_lb_hash_t *hash;          /* RING_HASH, MAGLEV: the table state (proxy/lb_hash_state.c) */
};

mp_lb_t *mp_lb_new(mp_cluster_t *c)
{
    mp_lb_t *lb = mp_xcalloc(1, sizeof(*lb));
    lb->policy = c ? c->lb_policy : MP_LB_ROUND_ROBIN;
    lb->choices = c && c->least_request_choices >= 1 ? c->least_request_choices : 2;
    lb->c = c;
    lb->local_group = -1;
    if (c && (c->lb_policy == MP_LB_RING_HASH || c->lb_policy == MP_LB_MAGLEV))
        lb->hash = mp_lb_hash_new(c);
    return lb;
}

static void release_seen(mp_lb_t *lb)
{
    if (lb->seen != NULL)
        mp_hostset_release(lb->seen);
    lb->seen = NULL;
    if (lb->local_seen != NULL)
        mp_hostset_release(lb->local_seen);
    lb->local_seen = NULL;
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
    free(lb->state);
    free(lb->pperm);
    free(lb->gperm);
    free(lb->prio);
    free(lb->grp);
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
    lb->state = mp_xrealloc(lb->state, n * sizeof(*lb->state));
    lb->pperm = mp_xrealloc(lb->pperm, n * sizeof(*lb->pperm));
    lb->gperm = mp_xrealloc(lb->gperm, n * sizeof(*lb->gperm));
}

/* Priority and group ranges of the new set (fixed for its lifetime). */
static void layout_set(mp_lb_t *lb, const mp_hostset_t *hs)
{
    lb->groups = hs->groups;
    lb->n_grp = hs->n_groups;
    lb->n_prio = hs->n_priorities;
    if (hs->n_groups == 0) {
        lb->one_group = (mp_host_group_t){.first = 0, .n = hs->n};
        lb->groups = &lb->one_group;
        lb->n_grp = 1;
        lb->n_prio = 1;
    }
    free(lb->prio);
    free(lb->grp);
    lb->prio = mp_xcalloc(lb->n_prio, sizeof(*lb->prio));
    lb->grp = mp_xcalloc(lb->n_grp, sizeof(*lb->grp));
    for (uint32_t g = 0; g < lb->n_grp; g++) {
        lb_prio_t *p = &lb->prio[lb->groups[g].priority];
        if (p->n == 0 && p->g_n == 0) {
            p->first = lb->groups[g].first;
            p->g_first = g;
        }
        p->n += lb->groups[g].n;
        p->g_n++;
    }
    /* An empty level still needs a position: it sits where the next level starts. */
    for (uint32_t p = lb->n_prio; p-- > 0;)
        if (lb->prio[p].g_n == 0)
            lb->prio[p].first = p + 1 < lb->n_prio ? lb->prio[p + 1].first : hs->n;
}

/* Switches to hs, forgetting everything about the previous set: counts for requests started on
 * it are dropped (their ends arrive with the old set and are ignored, so nothing goes negative). */
static void sync_set(mp_lb_t *lb, const mp_hostset_t *chs)
{
    mp_hostset_t *hs = (mp_hostset_t *)chs; /* only the atomic refcount is touched */
    atomic_fetch_add_explicit(&hs->refs, 1, memory_order_relaxed);
    if (lb->seen != NULL)
        mp_hostset_release(lb->seen);
    lb->seen = hs;
    lb->n = hs->n;
    grow(lb, hs->n);
    lb->equal = true;
    for (uint32_t i = 0; i < hs->n; i++) {
        lb->weight[i] = hs->hosts[i].weight ? hs->hosts[i].weight : 1;
        lb->equal = lb->equal && lb->weight[i] == lb->weight[0];
        lb->active[i] = 0;
    }
    layout_set(lb, hs);
    /* Workers start their rotations at different hosts so that they do not all hit host 0 at
     * once after a config push (Envoy does the same). */
    lb->rr = hs->n ? (uint32_t)random_below(hs->n) : 0;
}

/* ---- zone aware routing (Envoy's, for priority 0) ---- */

/* How many healthy hosts of the local cluster sit in each of our P0 groups' localities, and
 * whether the local cluster has hosts in a locality we lack (then the locality counts differ
 * and Envoy does no zone routing).  refresh keeps the local set with a ref, so a change is
 * noticed by address without ABA. */
static bool count_local(mp_lb_t *lb, uint32_t g_n, uint64_t *local)
{
    const mp_cluster_t *c = lb->c, *lc = c->local_cluster;
    const mp_hostset_t *ls = lb->local_seen;
    uint32_t healthy = 0, matched = 0;
    for (uint32_t i = 0; ls != NULL && i < ls->n; i++) {
        const mp_host_t *h = &ls->hosts[i];
        if (h->priority != 0 || !mp_host_usable(h))
            continue;
        healthy++;
        for (uint32_t g = 0; g < g_n; g++)
            if (h->locality < lc->n_localities &&
                mp_locality_equal(&lc->localities[h->locality],
                                  &c->localities[lb->groups[g].locality])) {
                local[g]++;
                matched++;
                break;
            }
    }
    uint32_t total = ls != NULL ? ls->n : 0;
    lb->local_panic =
        total == 0 || (double)healthy * 100.0 / (double)total < (double)c->panic_threshold;
    return matched == healthy;
}

/* Without a local cluster we take the cluster's own hosts per locality, healthy or not, as the
 * picture of where the callers are (each zone's callers in proportion to its configured hosts),
 * the usual sidecar simplification: traffic then stays local until the local zone loses
 * healthy hosts faster than the others. */
static bool local_shares(mp_lb_t *lb, uint32_t g_n, uint64_t *local)
{
    if (lb->c->local_cluster != NULL)
        return count_local(lb, g_n, local);
    for (uint32_t g = 0; g < g_n; g++)
        local[g] = lb->groups[g].n;
    lb->local_panic = false;
    return true;
}

static void to_basis_points(uint64_t *v, uint32_t n)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += v[i];
    for (uint32_t i = 0; i < n; i++)
        v[i] = total ? 10000 * v[i] / total : 0;
}

/* Envoy's earlyExitNonLocalityRouting, then its regenerateLocalityRoutingStructures. */
static void zone_build(mp_lb_t *lb)
{
    lb->zone_state = ZONE_NONE;
    lb->local_group = -1;
    const mp_cluster_t *c = lb->c;
    if (c == NULL || c->locality_lb != MP_LOCALITY_LB_ZONE_AWARE || lb->n_prio == 0 ||
        lb->seen->n_groups == 0)
        return;
    const lb_prio_t *p0 = &lb->prio[0];
    if (p0->g_n < 2 || p0->healthy < c->zone_min_cluster_size)
        return;
    for (uint32_t g = 0; g < p0->g_n; g++)
        if ((int32_t)lb->groups[g].locality == c->local_locality)
            lb->local_group = (int32_t)g;
    if (lb->local_group < 0 || lb->grp[lb->local_group].healthy == 0)
        return;
    uint64_t local[MP_ZONE_MAX], up[MP_ZONE_MAX];
    uint32_t g_n = MP_MIN(p0->g_n, MP_ZONE_MAX);
    memset(local, 0, sizeof(local));
    if (!local_shares(lb, g_n, local))
        return;
    for (uint32_t g = 0; g < g_n; g++)
        up[g] = lb->grp[g].healthy;
    to_basis_points(local, g_n);
    to_basis_points(up, g_n);
    uint32_t lg = (uint32_t)lb->local_group;
    if (up[lg] > 0 && up[lg] >= local[lg]) {
        lb->zone_state = ZONE_DIRECT;
        return;
    }
    lb->zone_state = ZONE_RESIDUAL;
    lb->local_pct_to_route = local[lg] > 0 ? (uint32_t)(up[lg] * 10000 / local[lg]) : 0;
    uint64_t cum = 0;
    for (uint32_t g = 0; g < g_n; g++) {
        if (g != lg && up[g] > local[g])
            cum += up[g] - local[g];
        lb->grp[g].residual = cum;
    }
}

/* The P0 group a zone aware pick goes to (Envoy's tryChooseLocalLocalityHosts).  Envoy scans
 * with `threshold > residual[i]`, which sends a draw of 0 to the local locality; we take the
 * first group whose cumulative capacity exceeds the draw, so each gets exactly its share. */
static uint32_t zone_pick(mp_lb_t *lb)
{
    uint32_t lg = (uint32_t)lb->local_group;
    if (lb->zone_state == ZONE_DIRECT || random_below(10000) < lb->local_pct_to_route)
        return lg;
    uint32_t g_n = MP_MIN(lb->prio[0].g_n, MP_ZONE_MAX);
    uint64_t total = lb->grp[g_n - 1].residual;
    if (total == 0) /* rounding left no capacity anywhere: Envoy picks any locality */
        return (uint32_t)random_below(g_n);
    uint64_t r = random_below(total);
    uint32_t g = 0;
    while (r >= lb->grp[g].residual)
        g++;
    return g;
}

/* ---- health view ---- */

static uint8_t host_state(const mp_host_t *h)
{
    if (!mp_host_usable(h))
        return HOST_UNUSABLE;
    return mp_host_degraded(h) ? HOST_DEGRADED : HOST_HEALTHY;
}

/* Writes hosts[first .. first + n) into perm[first ..]: healthy, then degraded, then unusable,
 * each in host order.  Returns the healthy and degraded counts. */
static void partition(const mp_lb_t *lb, uint32_t first, uint32_t n, uint32_t *perm,
                      uint32_t *healthy, uint32_t *degraded)
{
    uint32_t k = first;
    for (uint8_t st = HOST_HEALTHY; st <= HOST_UNUSABLE; st++) {
        for (uint32_t i = first; i < first + n; i++)
            if (lb->state[i] == st)
                perm[k++] = i;
        if (st == HOST_HEALTHY)
            *healthy = k - first;
        else if (st == HOST_DEGRADED)
            *degraded = k - first - *healthy;
    }
}

static uint32_t overprovisioning(const mp_lb_t *lb)
{
    return lb->c && lb->c->overprovisioning_factor ? lb->c->overprovisioning_factor : 140;
}

/* Envoy's effective locality weight: weight x min(1, factor x available / total). */
static double effective_weight(const mp_lb_t *lb, const mp_host_group_t *g, uint32_t avail)
{
    if (g->n == 0)
        return 0;
    double ratio = (double)overprovisioning(lb) / 100.0 * (double)avail / (double)g->n;
    return (double)g->weight * (ratio < 1.0 ? ratio : 1.0);
}

static void count_health(mp_lb_t *lb)
{
    const mp_host_t *hosts = lb->seen->hosts;
    for (uint32_t i = 0; i < lb->n; i++)
        lb->state[i] = host_state(&hosts[i]);
    mp_lb_level_t levels[MP_MAX_PRIORITIES];
    for (uint32_t p = 0; p < lb->n_prio; p++) {
        lb_prio_t *lp = &lb->prio[p];
        partition(lb, lp->first, lp->n, lb->pperm, &lp->healthy, &lp->degraded);
        levels[p] =
            (mp_lb_level_t){.total = lp->n, .healthy = lp->healthy, .degraded = lp->degraded};
    }
    mp_lb_load_t loads[MP_MAX_PRIORITIES];
    mp_lb_priority_loads(levels, lb->n_prio, overprovisioning(lb),
                         lb->c ? lb->c->panic_threshold : 50, loads);
    for (uint32_t p = 0; p < lb->n_prio; p++)
        lb->prio[p].load = loads[p];
    for (uint32_t g = 0; g < lb->n_grp; g++) {
        const mp_host_group_t *hg = &lb->groups[g];
        lb_group_t *lg = &lb->grp[g];
        partition(lb, hg->first, hg->n, lb->gperm, &lg->healthy, &lg->degraded);
        lg->eff[0] = effective_weight(lb, hg, lg->healthy);
        lg->eff[1] = effective_weight(lb, hg, lg->degraded);
        lg->cur[0] = lg->cur[1] = 0;
    }
    /* Policy state earned against another health picture would skew the first picks. */
    memset(lb->cur, 0, lb->n * sizeof(*lb->cur));
    memset(lb->dcur, 0, lb->n * sizeof(*lb->dcur));
}

/* Rebuilds what depends on health when the set, the health generation or the local cluster's
 * set changed.  The generation is read before the flags, so a change during the pass is seen
 * again on the next pick. */
static void refresh(mp_lb_t *lb, const mp_hostset_t *hs)
{
    uint64_t gen = mp_host_health_generation();
    const mp_cluster_t *lc = lb->c ? lb->c->local_cluster : NULL;
    bool local_moved =
        lc != NULL && atomic_load_explicit(&lc->hosts, memory_order_acquire) != lb->local_seen;
    bool new_set = hs != lb->seen;
    if (!new_set && gen == lb->gen && !local_moved)
        return;
    if (new_set)
        sync_set(lb, hs);
    if (local_moved) {
        if (lb->local_seen != NULL)
            mp_hostset_release(lb->local_seen);
        lb->local_seen = mp_cluster_hosts_acquire((mp_cluster_t *)lc);
    }
    lb->gen = gen;
    count_health(lb);
    zone_build(lb);
}
/* ---- policies, over a candidate list of host indices ---- */

/* A uniformly random position in cand other than ex's when another exists. */
static uint32_t random_pos(const uint32_t *cand, uint32_t k, int ex)
{
    uint32_t r = (uint32_t)random_below(k);
    if (k > 1 && (int)cand[r] == ex)
        r = (r + 1 + (uint32_t)random_below(k - 1)) % k;
    return r;
}

static int pick_rotation(mp_lb_t *lb, const uint32_t *cand, uint32_t k, int ex)
{
    uint32_t i = cand[lb->rr++ % k];
    if ((int)i == ex && k > 1)
        i = cand[lb->rr++ % k];
    return (int)i;
}

/* Smooth weighted round robin (as in nginx): every host gains its weight, the richest is picked
 * and pays the total.  Over any window of `total` picks each host is chosen exactly `weight`
 * times, interleaved rather than in bursts.  O(k) per pick. */
static int pick_smooth_wrr(mp_lb_t *lb, const uint32_t *cand, uint32_t k, int ex)
{
    int best = -1;
    int64_t total = 0;
    for (uint32_t j = 0; j < k; j++) {
        uint32_t i = cand[j];
        if ((int)i == ex)
            continue;
        lb->cur[i] += lb->weight[i];
        total += lb->weight[i];
        if (best < 0 || lb->cur[i] > lb->cur[best])
            best = (int)i;
    }
    if (best < 0)
        return (int)cand[0];
    lb->cur[best] -= total;
    return best;
}

/* Envoy's equal-weight LEAST_REQUEST: draw `choices` hosts at random (with replacement) and keep
 * the one with the fewest active requests; the first drawn wins ties. */
static int pick_p2c(mp_lb_t *lb, const uint32_t *cand, uint32_t k, int ex)
{
    uint32_t best = cand[random_pos(cand, k, ex)];
    for (uint32_t n = 1; n < lb->choices; n++) {
        uint32_t c = cand[random_pos(cand, k, ex)];
        if (lb->active[c] < lb->active[best])
            best = c;
    }
    return (int)best;
}

/* Envoy's unequal-weight LEAST_REQUEST schedules by weight / (active + 1) (active_request_bias
 * 1.0).  We run smooth weighted round robin over those effective weights, recomputed every pick,
 * which is deterministic and converges to the same shares. */
static int pick_weighted_lr(mp_lb_t *lb, const uint32_t *cand, uint32_t k, int ex)
{
    int best = -1;
    double total = 0;
    for (uint32_t j = 0; j < k; j++) {
        uint32_t i = cand[j];
        if ((int)i == ex)
            continue;
        double w = (double)lb->weight[i] / ((double)lb->active[i] + 1.0);
        lb->dcur[i] += w;
        total += w;
        if (best < 0 || lb->dcur[i] > lb->dcur[best])
            best = (int)i;
    }
    if (best < 0)
        return (int)cand[0];
    lb->dcur[best] -= total;
    return best;
}

/* Weighted random: a draw in [0, total) located by a scan of the candidates.  An excluded
 * host's range is left out of the draw rather than retried. */
static int pick_random(mp_lb_t *lb, const uint32_t *cand, uint32_t k, int ex)
{
    if (lb->equal)
        return (int)cand[random_pos(cand, k, ex)];
    uint64_t total = 0;
    for (uint32_t j = 0; j < k; j++)
        total += (int)cand[j] == ex ? 0 : lb->weight[cand[j]];
    if (total == 0)
        return (int)cand[0];
    uint64_t r = random_below(total);
    for (uint32_t j = 0; j < k; j++) {
        uint64_t w = (int)cand[j] == ex ? 0 : lb->weight[cand[j]];
        if (r < w)
            return (int)cand[j];
        r -= w;
    }
    return (int)cand[k - 1];
}

static int pick_policy(mp_lb_t *lb, const uint32_t *cand, uint32_t k, int ex)
{
    switch (lb->policy) {
    case MP_LB_LEAST_REQUEST:
        return lb->equal ? pick_p2c(lb, cand, k, ex) : pick_weighted_lr(lb, cand, k, ex);
    case MP_LB_RANDOM:
        return pick_random(lb, cand, k, ex);
    case MP_LB_ROUND_ROBIN:
    default:
        return lb->equal ? pick_rotation(lb, cand, k, ex) : pick_smooth_wrr(lb, cand, k, ex);
    }
}

/* ---- choosing where to look ---- */

/* Envoy's choosePriority: a draw in 1..100 against the healthy loads, then the degraded ones.
 * Sets *degraded when the draw fell in a degraded share. */
static uint32_t choose_priority(const mp_lb_t *lb, bool *degraded)
{
    uint32_t r = (uint32_t)random_below(100) + 1, sum = 0;
    for (int d = 0; d < 2; d++)
        for (uint32_t p = 0; p < lb->n_prio; p++) {
            sum += d ? lb->prio[p].load.degraded : lb->prio[p].load.healthy;
            if (r <= sum) {
                *degraded = d;
                return p;
            }
        }
    *degraded = false;
    return 0;
}

/* Locality weighted: smooth weighted round robin over the priority's groups by effective weight
 * (deterministic like Envoy's EDF scheduler, with the same shares).  -1 when no group has
 * weight: Envoy then balances over the whole priority. */
static int choose_locality(mp_lb_t *lb, const lb_prio_t *p, int d)
{
    int best = -1;
    double total = 0;
    for (uint32_t g = p->g_first; g < p->g_first + p->g_n; g++) {
        lb_group_t *lg = &lb->grp[g];
        if (lg->eff[d] <= 0)
            continue;
        lg->cur[d] += lg->eff[d];
        total += lg->eff[d];
        if (best < 0 || lg->cur[d] > lb->grp[best].cur[d])
            best = (int)g;
    }
    if (best >= 0)
        lb->grp[best].cur[d] -= total;
    return best;
}

/* The group (locality) to draw from in priority pi, or -1 for the whole priority. */
static int choose_group(mp_lb_t *lb, uint32_t pi, int d)
{
    const mp_cluster_t *c = lb->c;
    if (c == NULL || lb->seen->n_groups == 0)
        return -1;
    if (c->locality_lb == MP_LOCALITY_LB_WEIGHTED)
        return choose_locality(lb, &lb->prio[pi], d);
    if (c->locality_lb != MP_LOCALITY_LB_ZONE_AWARE || pi != 0 || lb->zone_state == ZONE_NONE ||
        lb->local_panic || random_below(10000) >= c->zone_routing_enabled)
        return -1;
    return (int)zone_pick(lb);
}

int mp_lb_pick(mp_lb_t *lb, const mp_hostset_t *hs, int exclude)
{
    if (hs == NULL || hs->n == 0)
        return -1;
    /* A hashing cluster without a request hash draws a random one, as Envoy does.  Its table
     * spans every usable host of the set, whatever their priority (docs/resilience.md). */
    if (lb->hash != NULL)
        return mp_lb_hash_pick(lb->hash, hs, exclude, mp_random());
    refresh(lb, hs);
    int ex = exclude >= 0 && (uint32_t)exclude < lb->n ? exclude : -1;
    bool degraded;
    uint32_t pi = choose_priority(lb, &degraded);
    const lb_prio_t *p = &lb->prio[pi];
    if (p->load.panic) {
        if (lb->c != NULL && lb->c->fail_traffic_on_panic)
            return -1;
        return p->n ? pick_policy(lb, &lb->pperm[p->first], p->n, ex) : -1;
    }
    int d = degraded ? 1 : 0;
    int g = choose_group(lb, pi, d);
    if (g >= 0) {
        const lb_group_t *lg = &lb->grp[g];
        uint32_t k = d ? lg->degraded : lg->healthy;
        const uint32_t *cand = &lb->gperm[lb->groups[g].first + (d ? lg->healthy : 0)];
        if (k > 0)
            return pick_policy(lb, cand, k, ex);
        /* A locality chosen by rounding with nothing in it: use the whole priority instead. */
    }
    uint32_t k = d ? p->degraded : p->healthy;
    if (k == 0)
        return -1;
    return pick_policy(lb, &lb->pperm[p->first + (d ? p->healthy : 0)], k, ex);
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
