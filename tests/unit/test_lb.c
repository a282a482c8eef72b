/* Load balancer policies: shares over many picks, exclusion, least-request preference for idle
 * hosts, and host set replacement. */
#include <stdlib.h>

#include "magpie/config.h"
#include "magpie/dns.h"
#include "magpie/lb.h"
#include "unit.h"

#define PICKS 10000

static mp_hostset_t *make_set(uint32_t n, const uint32_t *weights)
{
    mp_hostset_t *hs = mp_hostset_new(n);
    for (uint32_t i = 0; i < n; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.0.0.%u", i + 1);
        mp_addr_parse(&hs->hosts[i].addr, ip, 80);
        hs->hosts[i].weight = weights ? weights[i] : 1;
    }
    mp_hostset_sum_weights(hs);
    mp_hostset_adopt_health(hs, NULL);
    return hs;
}

static mp_cluster_t cluster_with(mp_lb_policy_t p)
{
    mp_cluster_t c;
    memset(&c, 0, sizeof(c));
    c.lb_policy = p;
    c.least_request_choices = 2;
    c.overprovisioning_factor = 140; /* the translator's defaults */
    c.panic_threshold = 50;
    c.zone_routing_enabled = 10000;
    c.zone_min_cluster_size = 6;
    c.local_locality = -1;
    return c;
}

/* Counts picks per host; exclude applies to every pick. */
static void tally(mp_lb_t *lb, mp_hostset_t *hs, int exclude, uint32_t *counts)
{
    memset(counts, 0, hs->n * sizeof(*counts));
    for (int k = 0; k < PICKS; k++) {
        int i = mp_lb_pick(lb, hs, exclude);
        CHECK(i >= 0 && (uint32_t)i < hs->n);
        if (i >= 0 && (uint32_t)i < hs->n)
            counts[i]++;
    }
}

/* |observed - expected| within tol (a fraction of PICKS). */
static int near_share(uint32_t count, double share, double tol)
{
    double d = (double)count / PICKS - share;
    return d < tol && d > -tol;
}

static void check_shares(mp_lb_policy_t p, const uint32_t *w, uint32_t n, double tol)
{
    mp_cluster_t c = cluster_with(p);
    mp_lb_t *lb = mp_lb_new(&c);
    mp_hostset_t *hs = make_set(n, w);
    uint32_t counts[16];
    tally(lb, hs, -1, counts);
    for (uint32_t i = 0; i < n; i++) {
        double share = w ? (double)w[i] / (double)hs->total_weight : 1.0 / n;
        if (!near_share(counts[i], share, tol))
            fprintf(stderr, "policy %d host %u: %u picks, want share %.3f\n", p, i, counts[i],
                    share);
        CHECK(near_share(counts[i], share, tol));
    }
    mp_lb_free(lb);
    mp_hostset_release(hs);
}

static void test_round_robin_equal_is_rotation(void)
{
    mp_cluster_t c = cluster_with(MP_LB_ROUND_ROBIN);
    mp_lb_t *lb = mp_lb_new(&c);
    mp_hostset_t *hs = make_set(4, NULL);
    int first = mp_lb_pick(lb, hs, -1);
    for (int k = 1; k < 20; k++)
        CHECK_INT(mp_lb_pick(lb, hs, -1), (first + k) % 4);
    mp_lb_free(lb);
    mp_hostset_release(hs);
}

static void test_round_robin_weighted_exact(void)
{
    /* Smooth WRR is exact: over a multiple of the total weight the counts are the weights. */
    static const uint32_t w[] = {5, 1, 1};
    mp_cluster_t c = cluster_with(MP_LB_ROUND_ROBIN);
    mp_lb_t *lb = mp_lb_new(&c);
    mp_hostset_t *hs = make_set(3, w);
    uint32_t counts[3] = {0};
    int seq[7];
    for (int k = 0; k < 7; k++)
        counts[seq[k] = mp_lb_pick(lb, hs, -1)]++;
    CHECK_INT(counts[0], 5);
    CHECK_INT(counts[1], 1);
    CHECK_INT(counts[2], 1);
    /* Interleaved, not bursty: nginx's sequence for 5,1,1 is a a b a c a a. */
    CHECK(seq[0] == 0 && seq[1] == 0 && seq[2] == 1 && seq[3] == 0 && seq[4] == 2);
    mp_lb_free(lb);
    mp_hostset_release(hs);
    check_shares(MP_LB_ROUND_ROBIN, w, 3, 0.001);
    static const uint32_t w2[] = {1, 2, 3, 4};
    check_shares(MP_LB_ROUND_ROBIN, w2, 4, 0.001);
    check_shares(MP_LB_ROUND_ROBIN, NULL, 5, 0.001);
}

static void test_random_shares(void)
{
    static const uint32_t w[] = {1, 2, 3, 4};
    check_shares(MP_LB_RANDOM, w, 4, 0.03);
    check_shares(MP_LB_RANDOM, NULL, 4, 0.03);
    static const uint32_t w2[] = {100, 1};
    check_shares(MP_LB_RANDOM, w2, 2, 0.02);
}

static void test_least_request_shares(void)
{
    /* With no request in flight, least request degenerates to its base distribution. */
    static const uint32_t w[] = {1, 3};
    check_shares(MP_LB_LEAST_REQUEST, w, 2, 0.01);
    check_shares(MP_LB_LEAST_REQUEST, NULL, 3, 0.03);
}

static void test_exclude(void)
{
    static const uint32_t w[] = {1, 2, 3};
    mp_lb_policy_t policies[] = {MP_LB_ROUND_ROBIN, MP_LB_LEAST_REQUEST, MP_LB_RANDOM};
    for (size_t p = 0; p < MP_ARRAY_SIZE(policies); p++) {
        mp_cluster_t c = cluster_with(policies[p]);
        mp_lb_t *lb = mp_lb_new(&c);
        for (int weighted = 0; weighted < 2; weighted++) {
            mp_hostset_t *hs = make_set(3, weighted ? w : NULL);
            uint32_t counts[3];
            tally(lb, hs, 1, counts);
            CHECK_INT(counts[1], 0);
            CHECK(counts[0] > 0 && counts[2] > 0);
            if (weighted) /* the others keep their relative weights: 1 : 3 */
                CHECK(near_share(counts[2], 0.75, 0.03));
            mp_hostset_release(hs);
        }
        /* A single host is returned even when excluded: there is nothing else to try. */
        mp_hostset_t *one = make_set(1, NULL);
        CHECK_INT(mp_lb_pick(lb, one, 0), 0);
        mp_hostset_release(one);
        mp_lb_free(lb);
    }
}

static void test_empty_set(void)
{
    mp_cluster_t c = cluster_with(MP_LB_ROUND_ROBIN);
    mp_lb_t *lb = mp_lb_new(&c);
    mp_hostset_t *hs = mp_hostset_new(0);
    CHECK_INT(mp_lb_pick(lb, hs, -1), -1);
    CHECK_INT(mp_lb_pick(lb, NULL, -1), -1);
    mp_lb_free(lb);
    mp_hostset_release(hs);
}

static void test_least_request_prefers_idle(void)
{
    mp_cluster_t c = cluster_with(MP_LB_LEAST_REQUEST);
    mp_lb_t *lb = mp_lb_new(&c);
    mp_hostset_t *hs = make_set(3, NULL);
    CHECK(mp_lb_pick(lb, hs, -1) >= 0);
    for (int k = 0; k < 5; k++) {
        mp_lb_request_start(lb, hs, 0);
        mp_lb_request_start(lb, hs, 1);
    }
    /* Host 0 and 1 are busy, host 2 idle: two choices miss host 2 only with p = (2/3)^2. */
    uint32_t counts[3];
    tally(lb, hs, -1, counts);
    CHECK(near_share(counts[2], 1.0 - 4.0 / 9.0, 0.03));
    /* Ending the requests restores an even spread. */
    for (int k = 0; k < 5; k++) {
        mp_lb_request_end(lb, hs, 0);
        mp_lb_request_end(lb, hs, 1);
    }
    mp_lb_request_end(lb, hs, 2); /* never below zero */
    tally(lb, hs, -1, counts);
    CHECK(near_share(counts[2], 1.0 / 3.0, 0.03));
    mp_lb_free(lb);
    mp_hostset_release(hs);
}

static void test_least_request_weighted_prefers_idle(void)
{
    static const uint32_t w[] = {2, 1};
    mp_cluster_t c = cluster_with(MP_LB_LEAST_REQUEST);
    mp_lb_t *lb = mp_lb_new(&c);
    mp_hostset_t *hs = make_set(2, w);
    CHECK(mp_lb_pick(lb, hs, -1) >= 0);
    for (int k = 0; k < 3; k++)
        mp_lb_request_start(lb, hs, 0);
    /* Effective weights 2/(3+1) = 0.5 and 1/1: host 1 gets two thirds. */
    uint32_t counts[2];
    tally(lb, hs, -1, counts);
    CHECK(near_share(counts[1], 2.0 / 3.0, 0.01));
    mp_lb_free(lb);
    mp_hostset_release(hs);
}

static void test_set_replacement(void)
{
    mp_cluster_t c = cluster_with(MP_LB_LEAST_REQUEST);
    mp_lb_t *lb = mp_lb_new(&c);
    mp_hostset_t *a = make_set(2, NULL);
    CHECK(mp_lb_pick(lb, a, -1) >= 0);
    for (int k = 0; k < 10; k++)
        mp_lb_request_start(lb, a, 0);
    mp_hostset_t *b = make_set(3, NULL);
    /* The lb holds a ref on the set it last saw. */
    CHECK_INT(atomic_load(&a->refs), 2);
    CHECK(mp_lb_pick(lb, b, -1) >= 0);
    CHECK_INT(atomic_load(&a->refs), 1);
    /* Stale ends and out-of-range indexes are ignored; counts on b start at zero. */
    mp_lb_request_end(lb, a, 0);
    mp_lb_request_start(lb, a, 2);
    mp_lb_request_start(lb, b, 7);
    mp_lb_request_start(lb, b, -1);
    uint32_t counts[3];
    tally(lb, b, -1, counts);
    for (int i = 0; i < 3; i++)
        CHECK(near_share(counts[i], 1.0 / 3.0, 0.03));
    /* Back to a smaller set: indexes from b beyond a's size never show up. */
    tally(lb, a, -1, counts);
    CHECK_INT(counts[0] + counts[1], PICKS);
    mp_lb_free(lb);
    CHECK_INT(atomic_load(&b->refs), 1);
    mp_hostset_release(a);
    mp_hostset_release(b);
}

static void test_random_numbers(void)
{
    uint64_t a = mp_random(), b = mp_random();
    CHECK(a != b);
    uint32_t buckets[8] = {0};
    for (int k = 0; k < 80000; k++)
        buckets[mp_random() >> 61]++;
    for (int i = 0; i < 8; i++)
        CHECK(buckets[i] > 9000 && buckets[i] < 11000);
}

/* Unusable hosts (ejected, failing health checks) are skipped while at least half the set is
 * usable; below that the set is in panic and every host is used again. */
static void test_unusable_hosts_skipped_until_panic(void)
{
    const mp_lb_policy_t policies[] = {MP_LB_ROUND_ROBIN, MP_LB_RANDOM, MP_LB_LEAST_REQUEST};
    const uint32_t weights[] = {1, 3, 1, 1};
    for (size_t p = 0; p < sizeof(policies) / sizeof(policies[0]); p++) {
        for (int weighted = 0; weighted < 2; weighted++) {
            mp_cluster_t c = cluster_with(policies[p]);
            mp_lb_t *lb = mp_lb_new(&c);
            mp_hostset_t *hs = make_set(4, weighted ? weights : NULL);
            mp_host_health_set(hs->hosts[1].health, MP_HEALTH_FAILED_OUTLIER_CHECK, true);
            uint32_t seen[4] = {0};
            for (int k = 0; k < PICKS; k++)
                seen[mp_lb_pick(lb, hs, -1)]++;
            CHECK_INT(seen[1], 0);
            CHECK(seen[0] > 0 && seen[2] > 0 && seen[3] > 0);
            /* 1 of 4 usable: panic, all four are used. */
            mp_host_health_set(hs->hosts[0].health, MP_HEALTH_FAILED_ACTIVE_HC, true);
            mp_host_health_set(hs->hosts[2].health, MP_HEALTH_PENDING_ACTIVE_HC, true);
            memset(seen, 0, sizeof(seen));
            for (int k = 0; k < PICKS; k++)
                seen[mp_lb_pick(lb, hs, -1)]++;
            for (int i = 0; i < 4; i++)
                CHECK(seen[i] > 0);
            mp_hostset_release(hs);
            mp_lb_free(lb);
        }
    }
}

int main(void)
{
    RUN(test_round_robin_equal_is_rotation);
    RUN(test_round_robin_weighted_exact);
    RUN(test_random_shares);
    RUN(test_least_request_shares);
    RUN(test_exclude);
    RUN(test_empty_set);
    RUN(test_least_request_prefers_idle);
    RUN(test_least_request_weighted_prefers_idle);
    RUN(test_set_replacement);
    RUN(test_random_numbers);
    RUN(test_unusable_hosts_skipped_until_panic);
    UNIT_DONE();
}
