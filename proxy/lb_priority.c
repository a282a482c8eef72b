/* Envoy's priority load arithmetic (include/magpie/lb.h, mp_lb_priority_loads): integer
 * percentages, computed in the same order as Envoy's LoadBalancerBase so that the same host
 * counts give the same shares, rounding included. */
#include <string.h>

#include "magpie/lb.h"

static uint32_t availability(uint32_t factor, uint32_t part, uint32_t total)
{
    if (total == 0)
        return 0;
    uint64_t a = (uint64_t)factor * part / total;
    return a < 100 ? (uint32_t)a : 100;
}

/* Gives each level min(what is left, its availability x 100 / normalised total); returns what
 * is left and the first level with any availability (or n). */
static uint32_t distribute(const uint32_t *avail, uint32_t n, uint32_t left, uint32_t norm,
                           uint32_t *load, uint32_t *first)
{
    *first = n;
    for (uint32_t i = 0; i < n; i++) {
        if (*first == n && avail[i] > 0)
            *first = i;
        uint32_t want = avail[i] * 100 / norm;
        load[i] = want < left ? want : left;
        left -= load[i];
    }
    return left;
}

static bool level_in_panic(const mp_lb_level_t *l, uint32_t threshold)
{
    double usable =
        l->total ? 100.0 * (double)l->healthy / l->total + 100.0 * (double)l->degraded / l->total
                 : 0.0;
    return usable < (double)threshold;
}

/* Every level in panic: shares by host count, healthy or not, the remainder to the first level
 * with hosts (Envoy's recalculateLoadInTotalPanic). */
static void total_panic(const mp_lb_level_t *lv, uint32_t n, mp_lb_load_t *out)
{
    uint64_t hosts = 0;
    for (uint32_t i = 0; i < n; i++)
        hosts += lv[i].total;
    uint32_t left = 100, first = n;
    for (uint32_t i = 0; i < n; i++) {
        out[i].healthy = hosts ? (uint32_t)(100 * (uint64_t)lv[i].total / hosts) : 0;
        out[i].degraded = 0;
        left -= out[i].healthy;
        if (first == n && lv[i].total > 0)
            first = i;
    }
    out[first < n ? first : 0].healthy += left;
}

#define MAX_LEVELS 128

void mp_lb_priority_loads(const mp_lb_level_t *lv, uint32_t n, uint32_t factor,
                          uint32_t panic_threshold, mp_lb_load_t *out)
{
    uint32_t health[MAX_LEVELS], degr[MAX_LEVELS], hl[MAX_LEVELS], dl[MAX_LEVELS], sum = 0;
    n = n < MAX_LEVELS ? n : MAX_LEVELS;
    if (n == 0)
        return;
    memset(out, 0, n * sizeof(*out));
    for (uint32_t i = 0; i < n; i++) {
        health[i] = availability(factor, lv[i].healthy, lv[i].total);
        degr[i] = availability(factor, lv[i].degraded, lv[i].total);
        sum += health[i] + degr[i];
    }
    uint32_t norm = sum < 100 ? sum : 100;
    if (norm == 0 && panic_threshold == 0) {
        /* Nothing usable and panic disabled: P0 takes the load and finds no host (503). */
        out[0].healthy = 100;
        return;
    }
    if (norm > 0) {
        uint32_t fh, fd;
        uint32_t left = distribute(health, n, 100, norm, hl, &fh);
        left = distribute(degr, n, left, norm, dl, &fd);
        for (uint32_t i = 0; i < n; i++) {
            out[i].healthy = hl[i];
            out[i].degraded = dl[i];
        }
        if (left > 0 && fh < n)
            out[fh].healthy += left;
        else if (left > 0 && fd < n)
            out[fd].degraded += left;
    }
    /* At 100 % normalised health the lower levels can absorb everything: no panic anywhere. */
    bool all = true;
    for (uint32_t i = 0; i < n; i++) {
        out[i].panic = norm < 100 && level_in_panic(&lv[i], panic_threshold);
        all = all && out[i].panic;
    }
    if (all)
        total_panic(lv, n, out);
}
