/* Priorities and localities: Envoy's priority load (its documented tables), panic per priority
 * and in total, degraded hosts, locality weighted and zone aware shares, and the cost of the
 * health generation check against recounting on every pick. */
#include <stdlib.h>
#include <time.h>

#include "magpie/config.h"
#include "magpie/dns.h"
#include "magpie/lb.h"
#include "unit.h"

#define PICKS 100000

/* ---- priority load arithmetic ---- */

/* Loads for levels given as healthy percentages of 100 hosts each. */
static void loads_for(const uint32_t *healthy_pct, uint32_t n, uint32_t threshold,
                      mp_lb_load_t *out)
{
    mp_lb_level_t lv[8];
    for (uint32_t i = 0; i < n; i++)
        lv[i] = (mp_lb_level_t){.total = 100, .healthy = healthy_pct[i], .degraded = 0};
    mp_lb_priority_loads(lv, n, 140, threshold, out);
}

static void check_two(uint32_t p0, uint32_t p1, uint32_t want0, uint32_t want1)
{
    mp_lb_load_t out[2];
    loads_for((uint32_t[]){p0, p1}, 2, 50, out);
    if (out[0].healthy != want0 || out[1].healthy != want1)
        fprintf(stderr, "P0 %u%% P1 %u%% healthy: got %u/%u, want %u/%u\n", p0, p1, out[0].healthy,
                out[1].healthy, want0, want1);
    CHECK(out[0].healthy == want0 && out[1].healthy == want1);
    CHECK(out[0].degraded == 0 && out[1].degraded == 0);
}

/* The "priority levels" page of Envoy's architecture overview, P=1 100 % healthy, then both
 * levels losing hosts. */
static void test_priority_load_tables(void)
{
    check_two(100, 100, 100, 0);
    check_two(72, 100, 100, 0); /* 72 x 1.4 = 100.8: still whole */
    check_two(71, 100, 99, 1);  /* 99.4, integer 99: one percent spills */
    check_two(50, 100, 70, 30);
    check_two(25, 100, 35, 65);
    check_two(0, 100, 0, 100);
    check_two(72, 72, 100, 0);
    check_two(71, 71, 99, 1);
    check_two(50, 50, 70, 30);
    check_two(25, 25, 50, 50); /* normalised total 70: 35/35 scaled, and both in panic */

    mp_lb_load_t out[3];
    loads_for((uint32_t[]){25, 25, 100}, 3, 50, out);
    CHECK(out[0].healthy == 35 && out[1].healthy == 35 && out[2].healthy == 30);
    /* Normalised total 98: 35.7, 35.7, 28.6.  Envoy's table rounds these to 36/36/28; its code
     * (which we follow) floors each level and gives the remainder to the first: 37/35/28. */
    loads_for((uint32_t[]){25, 25, 20}, 3, 0, out); /* the table ignores panic: threshold 0 */
    CHECK(out[0].healthy == 37 && out[1].healthy == 35 && out[2].healthy == 28);
    /* With the default threshold every level is below 50 %: total panic, shares by size. */
    loads_for((uint32_t[]){25, 25, 20}, 3, 50, out);
    CHECK(out[0].panic && out[1].panic && out[2].panic);
    CHECK(out[0].healthy == 34 && out[1].healthy == 33 && out[2].healthy == 33);
}

static void test_overprovisioning_factor(void)
{
    mp_lb_level_t lv[2] = {{10, 8, 0}, {10, 10, 0}};
    mp_lb_load_t out[2];
    mp_lb_priority_loads(lv, 2, 100, 50, out); /* no headroom: 80 % healthy takes 80 % */
    CHECK(out[0].healthy == 80 && out[1].healthy == 20);
    mp_lb_priority_loads(lv, 2, 200, 50, out);
    CHECK(out[0].healthy == 100 && out[1].healthy == 0);
}

/* The "panic threshold" page: a level is in panic only when normalised total health is below
 * 100 and its own usable share is below the threshold; all in panic means shares by size. */
static void test_panic(void)
{
    mp_lb_load_t out[2];
    loads_for((uint32_t[]){25, 100}, 2, 50, out);
    CHECK(!out[0].panic && !out[1].panic); /* P1 absorbs everything: no panic */
    loads_for((uint32_t[]){5, 65}, 2, 50, out);
    /* Health 7 and 91, total 98: P0 in panic (5 % < 50 %), P1 not.  Envoy's table shows 7/93;
     * its integer code gives 7 + the remainder 1 to P0 and floor(92.9) to P1. */
    CHECK(out[0].panic && !out[1].panic);
    CHECK(out[0].healthy == 8 && out[1].healthy == 92);
    loads_for((uint32_t[]){25, 25}, 2, 50, out);
    CHECK(out[0].panic && out[1].panic);

    /* Total panic: shares follow host counts, healthy or not. */
    mp_lb_level_t lv[2] = {{3, 0, 0}, {1, 0, 0}};
    mp_lb_priority_loads(lv, 2, 140, 50, out);
    CHECK(out[0].panic && out[1].panic);
    CHECK(out[0].healthy == 75 && out[1].healthy == 25);
    /* Threshold 0 disables panic: with nothing healthy P0 takes the load and finds no host. */
    mp_lb_priority_loads(lv, 2, 140, 0, out);
    CHECK(!out[0].panic && !out[1].panic && out[0].healthy == 100 && out[1].healthy == 0);
    /* Threshold 100: below 100 % normalised health every level short of fully usable panics. */
    loads_for((uint32_t[]){60, 0}, 2, 100, out);
    CHECK(out[0].panic && out[1].panic);
    CHECK(out[0].healthy == 50 && out[1].healthy == 50);
}

static void test_degraded_load(void)
{
    mp_lb_load_t out[2];
    /* P0 all degraded, P1 healthy: healthy availability wins, degraded P0 gets nothing. */
    mp_lb_level_t a[2] = {{10, 0, 10}, {10, 10, 0}};
    mp_lb_priority_loads(a, 2, 140, 50, out);
    CHECK(out[0].healthy == 0 && out[0].degraded == 0 && out[1].healthy == 100);
    /* P0 half healthy, half degraded; P1 empty of usable hosts: 70 healthy, 30 degraded. */
    mp_lb_level_t b[2] = {{10, 5, 5}, {10, 0, 0}};
    mp_lb_priority_loads(b, 2, 140, 50, out);
    CHECK(out[0].healthy == 70 && out[0].degraded == 30 && out[1].healthy == 0);
    CHECK(!out[0].panic);
}

/* ---- picks over real host sets ---- */

typedef struct spec {
    uint32_t priority, locality, locality_weight;
} spec_t;

static mp_hostset_t *make_set(const spec_t *sp, uint32_t n)
{
    mp_hostset_t *hs = mp_hostset_new(n);
    for (uint32_t i = 0; i < n; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.0.%u.%u", sp[i].priority, i + 1);
        mp_addr_parse(&hs->hosts[i].addr, ip, 80);
        hs->hosts[i].weight = 1;
        hs->hosts[i].priority = sp[i].priority;
        hs->hosts[i].locality = sp[i].locality;
        hs->hosts[i].locality_weight = sp[i].locality_weight;
    }
    mp_hostset_finish(hs);
    mp_hostset_adopt_health(hs, NULL);
    return hs;
}

static mp_cluster_t cluster_with(mp_lb_policy_t p)
{
    mp_cluster_t c;
    memset(&c, 0, sizeof(c));
    c.lb_policy = p;
    c.least_request_choices = 2;
    c.overprovisioning_factor = 140;
    c.panic_threshold = 50;
    c.zone_routing_enabled = 10000;
    c.zone_min_cluster_size = 6;
    c.local_locality = -1;
    return c;
}

static void set_down(mp_hostset_t *hs, uint32_t i, bool down)
{
    mp_host_health_set(hs->hosts[i].health, MP_HEALTH_FAILED_ACTIVE_HC, down);
}

/* Picks PICKS times and adds the share of picks per priority (prio) or per locality (loc). */
static void tally(mp_lb_t *lb, mp_hostset_t *hs, double *prio, double *loc)
{
    for (int k = 0; k < PICKS; k++) {
        int i = mp_lb_pick(lb, hs, -1);
        CHECK(i >= 0);
        if (i < 0)
            return;
        if (prio)
            prio[hs->hosts[i].priority] += 1.0 / PICKS;
        if (loc)
            loc[hs->hosts[i].locality] += 1.0 / PICKS;
    }
}

static bool near(double got, double want, double tol)
{
    if (got - want < tol && want - got < tol)
        return true;
    fprintf(stderr, "share %.4f, want %.4f +- %.3f\n", got, want, tol);
    return false;
}

/* Two priorities of four hosts: all traffic on P0; one P0 host down keeps it whole (75 % x 1.4);
 * two down (50 %) spill 30 % to P1; all four down send everything to P1.  Every policy. */
static void test_failover_between_priorities(void)
{
    const spec_t sp[] = {{1, 0, 0}, {0, 0, 0}, {0, 0, 0}, {1, 0, 0},
                         {0, 0, 0}, {0, 0, 0}, {1, 0, 0}, {1, 0, 0}};
    const mp_lb_policy_t policies[] = {MP_LB_ROUND_ROBIN, MP_LB_RANDOM, MP_LB_LEAST_REQUEST};
    for (size_t p = 0; p < 3; p++) {
        mp_cluster_t c = cluster_with(policies[p]);
        mp_lb_t *lb = mp_lb_new(&c);
        mp_hostset_t *hs = make_set(sp, 8);
        CHECK_INT(hs->n_priorities, 2);
        CHECK(hs->hosts[0].priority == 0 && hs->hosts[3].priority == 0 && hs->hosts[4].priority);
        double share[2] = {0};
        tally(lb, hs, share, NULL);
        CHECK(near(share[0], 1.0, 1e-9));
        set_down(hs, 0, true);
        memset(share, 0, sizeof(share));
        tally(lb, hs, share, NULL);
        CHECK(near(share[0], 1.0, 1e-9));
        set_down(hs, 1, true);
        memset(share, 0, sizeof(share));
        tally(lb, hs, share, NULL);
        CHECK(near(share[0], 0.70, 0.01) && near(share[1], 0.30, 0.01));
        set_down(hs, 2, true);
        set_down(hs, 3, true);
        memset(share, 0, sizeof(share));
        tally(lb, hs, share, NULL);
        CHECK(near(share[1], 1.0, 1e-9));
        /* Both levels degraded to 25 %: total panic, each level's hosts all used, 50/50. */
        set_down(hs, 3, false);
        for (uint32_t i = 4; i < 7; i++)
            set_down(hs, i, true);
        uint32_t seen[8] = {0};
        for (int k = 0; k < PICKS; k++)
            seen[mp_lb_pick(lb, hs, -1)]++;
        for (int i = 0; i < 8; i++)
            CHECK(seen[i] > PICKS / 8 - PICKS / 40 && seen[i] < PICKS / 8 + PICKS / 40);
        mp_hostset_release(hs);
        mp_lb_free(lb);
    }
}

/* Panic disabled and nothing usable: no host (503 UH), not an unhealthy one.  EDS UNHEALTHY
 * hosts are unusable from the start. */
static void test_no_host_without_panic(void)
{
    const spec_t sp[] = {{0, 0, 0}, {0, 0, 0}};
    mp_cluster_t c = cluster_with(MP_LB_ROUND_ROBIN);
    c.panic_threshold = 0;
    mp_lb_t *lb = mp_lb_new(&c);
    mp_hostset_t *hs = mp_hostset_new(2);
    for (uint32_t i = 0; i < 2; i++) {
        mp_addr_parse(&hs->hosts[i].addr, i ? "10.0.0.2" : "10.0.0.1", 80);
        hs->hosts[i].priority = sp[i].priority;
        hs->hosts[i].eds_health = MP_EDS_UNHEALTHY;
    }
    mp_hostset_finish(hs);
    mp_hostset_adopt_health(hs, NULL);
    CHECK(!mp_host_usable(&hs->hosts[0]));
    CHECK_INT(mp_lb_pick(lb, hs, -1), -1);
    c.fail_traffic_on_panic = true;
    c.panic_threshold = 50;
    mp_lb_t *lb2 = mp_lb_new(&c);
    CHECK_INT(mp_lb_pick(lb2, hs, -1), -1); /* in panic, and told to fail then */
    mp_hostset_release(hs);
    mp_lb_free(lb);
    mp_lb_free(lb2);
}

/* Degraded hosts take traffic only when healthy ones cannot. */
static void test_degraded_hosts(void)
{
    const spec_t sp[] = {{0, 0, 0}, {0, 0, 0}, {1, 0, 0}};
    mp_cluster_t c = cluster_with(MP_LB_ROUND_ROBIN);
    mp_lb_t *lb = mp_lb_new(&c);
    mp_hostset_t *hs = make_set(sp, 3);
    mp_host_health_set(hs->hosts[0].health, MP_HEALTH_DEGRADED_ACTIVE_HC, true);
    mp_host_health_set(hs->hosts[1].health, MP_HEALTH_DEGRADED_ACTIVE_HC, true);
    double share[2] = {0};
    tally(lb, hs, share, NULL);
    CHECK(near(share[1], 1.0, 1e-9)); /* the healthy P1 host takes all */
    set_down(hs, 2, true);
    memset(share, 0, sizeof(share));
    tally(lb, hs, share, NULL);
    CHECK(near(share[0], 1.0, 1e-9)); /* now only degraded hosts are left: they serve */
    mp_hostset_release(hs);
    mp_lb_free(lb);
}

/* The "locality weighted load balancing" page: X weight 1, Y weight 2. */
static void test_locality_weighted(void)
{
    const spec_t sp[] = {{0, 0, 1}, {0, 0, 1}, {0, 0, 1}, {0, 0, 1},
                         {0, 1, 2}, {0, 1, 2}, {0, 1, 2}, {0, 1, 2}};
    const mp_lb_policy_t policies[] = {MP_LB_ROUND_ROBIN, MP_LB_RANDOM, MP_LB_LEAST_REQUEST};
    for (size_t p = 0; p < 3; p++) {
        mp_cluster_t c = cluster_with(policies[p]);
        c.locality_lb = MP_LOCALITY_LB_WEIGHTED;
        mp_lb_t *lb = mp_lb_new(&c);
        mp_hostset_t *hs = make_set(sp, 8);
        double loc[2] = {0};
        tally(lb, hs, NULL, loc);
        CHECK(near(loc[0], 1.0 / 3, 0.05 / 3) && near(loc[1], 2.0 / 3, 0.05 * 2 / 3));
        set_down(hs, 0, true);
        set_down(hs, 1, true); /* X 50 %: 0.7 / 2.7 = 26 % */
        memset(loc, 0, sizeof(loc));
        tally(lb, hs, NULL, loc);
        CHECK(near(loc[0], 0.7 / 2.7, 0.05 * 0.7 / 2.7));
        set_down(hs, 2, true);
        set_down(hs, 3, true); /* X 0 %: all to Y */
        memset(loc, 0, sizeof(loc));
        tally(lb, hs, NULL, loc);
        CHECK(near(loc[1], 1.0, 1e-9));
        mp_hostset_release(hs);
        mp_lb_free(lb);
    }
}

/* Zone aware routing with the cluster's own hosts as the picture of the callers: localities A
 * (local, 3 hosts), B (3), C (2).  All healthy: everything stays in A.  Two of A down: A keeps
 * upstream/local = 1666/3750 = 44.42 % and the rest goes to B and C by residual capacity
 * (1250 and 833 basis points). */
static void test_zone_aware(void)
{
    const spec_t sp[] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}, {0, 1, 0},
                         {0, 1, 0}, {0, 1, 0}, {0, 2, 0}, {0, 2, 0}};
    mp_cluster_t c = cluster_with(MP_LB_ROUND_ROBIN);
    c.locality_lb = MP_LOCALITY_LB_ZONE_AWARE;
    c.local_locality = 0;
    mp_lb_t *lb = mp_lb_new(&c);
    mp_hostset_t *hs = make_set(sp, 8);
    double loc[3] = {0};
    tally(lb, hs, NULL, loc);
    CHECK(near(loc[0], 1.0, 1e-9));
    set_down(hs, 0, true);
    set_down(hs, 1, true);
    memset(loc, 0, sizeof(loc));
    tally(lb, hs, NULL, loc);
    double cross = 1 - 0.4442;
    CHECK(near(loc[0], 0.4442, 0.01));
    CHECK(near(loc[1], cross * 1250 / 2083, 0.01) && near(loc[2], cross * 833 / 2083, 0.01));
    /* Below min_cluster_size healthy hosts: no zone routing, plain round robin over healthy. */
    set_down(hs, 3, true);
    memset(loc, 0, sizeof(loc));
    tally(lb, hs, NULL, loc);
    CHECK(near(loc[0], 0.2, 0.01) && near(loc[1], 0.4, 0.01) && near(loc[2], 0.4, 0.01));
    /* routing_enabled 50 %: half the picks skip zone routing. */
    set_down(hs, 0, false);
    set_down(hs, 1, false);
    set_down(hs, 3, false);
    c.zone_routing_enabled = 5000;
    memset(loc, 0, sizeof(loc));
    tally(lb, hs, NULL, loc);
    CHECK(near(loc[0], 0.5 + 0.5 * 3 / 8, 0.01));
    mp_hostset_release(hs);
    mp_lb_free(lb);
}

/* The health generation: a pick costs one atomic load until health changes.  Printed, not
 * asserted (timings vary); docs/resilience.md quotes a run. */
static void test_generation_cost(void)
{
    spec_t sp[100];
    for (uint32_t i = 0; i < 100; i++)
        sp[i] = (spec_t){i % 2, i % 3, 0};
    mp_cluster_t c = cluster_with(MP_LB_ROUND_ROBIN);
    mp_lb_t *lb = mp_lb_new(&c);
    mp_hostset_t *hs = make_set(sp, 100);
    const int n = 200000;
    struct timespec a, b, d;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int k = 0; k < n; k++)
        mp_lb_pick(lb, hs, -1);
    clock_gettime(CLOCK_MONOTONIC, &b);
    for (int k = 0; k < n; k++) {
        set_down(hs, 7, k & 1); /* a health change before every pick: a full recount each time */
        mp_lb_pick(lb, hs, -1);
    }
    clock_gettime(CLOCK_MONOTONIC, &d);
    double cached = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
    double recount = ((d.tv_sec - b.tv_sec) * 1e9 + (d.tv_nsec - b.tv_nsec)) / n;
    fprintf(stderr,
            "100 hosts, 2 priorities, 3 localities: %.0f ns per pick cached, %.0f ns "
            "with a recount\n",
            cached, recount);
    CHECK(cached > 0 && recount > 0);
    mp_hostset_release(hs);
    mp_lb_free(lb);
}

int main(void)
{
    RUN(test_priority_load_tables);
    RUN(test_overprovisioning_factor);
    RUN(test_panic);
    RUN(test_degraded_load);
    RUN(test_failover_between_priorities);
    RUN(test_no_host_without_panic);
    RUN(test_degraded_hosts);
    RUN(test_locality_weighted);
    RUN(test_zone_aware);
    RUN(test_generation_cost);
    UNIT_DONE();
}
