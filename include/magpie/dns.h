/* Host sets for clusters: STATIC sets built once from IP literals, and STRICT_DNS / LOGICAL_DNS
 * sets kept up to date by c-ares running on the main thread's libev loop.
 *
 * For each endpoint name of a watched cluster, a resolver target asks for the cluster's
 * dns_family, re-asks every dns_refresh_rate_ms (or the record TTL when respect_dns_ttl and it is
 * shorter) plus a little jitter, and on failure keeps its last good addresses and retries with
 * back-off.  Whenever a target's answer changes the cluster's hosts, the union of all targets'
 * addresses (each with its endpoint's port and weight) is published as a new mp_hostset_t.
 * LOGICAL_DNS uses the first address of the first endpoint only. */
#ifndef MAGPIE_DNS_H
#define MAGPIE_DNS_H

#include <stdint.h>

#include <ev.h>

#include "magpie/common.h"
#include "magpie/config.h"
#include "magpie/stats.h"

/* ---- static hosts ---- */

/* Builds and publishes c's host set from its endpoint specs; main thread, at translation.
 * STATIC: every address must be an IP literal (v4, v6, bracketed or not); otherwise returns
 * MP_ERROR with "endpoints[i].address: ..." in err and leaves c->hosts as it was.
 * STRICT_DNS / LOGICAL_DNS: publishes an empty set (DNS fills it later) and returns 0. */
int mp_cluster_init_static_hosts(mp_cluster_t *c, mp_err_t *err);

/* Sets hs->total_weight from its hosts (a weight of 0 is raised to 1) and returns it.  Call once
 * after filling a new set, before publishing it. */
uint64_t mp_hostset_sum_weights(mp_hostset_t *hs);

/* ---- the resolver ---- */

typedef struct mp_dns mp_dns_t;

typedef struct mp_dns_opts {
    uint32_t timeout_ms;   /* per try; 0: c-ares' default */
    uint32_t tries;        /* 0: c-ares' default */
    const char *servers;   /* "1.2.3.4:53,[::1]:53"; NULL: /etc/resolv.conf */
    uint32_t max_per_name; /* addresses kept per name; 0: 256 */
} mp_dns_opts_t;

/* Stats bumps, supplied by the server: the stats module is optional for this file (and absent in
 * its unit test).  NULL members are skipped, and so is a stat id of 0. */
typedef struct mp_dns_stats_hooks {
    void (*inc)(mp_stat_id_t id);
    void (*gauge_set)(mp_stat_id_t id, int64_t v);
} mp_dns_stats_hooks_t;

/* A resolver on loop (the main thread's).  opts may be NULL for defaults.  Returns NULL and fills
 * err when c-ares cannot start.  /etc/hosts is consulted before DNS ("fb"). */
mp_dns_t *mp_dns_new(struct ev_loop *loop, const mp_dns_opts_t *opts, mp_err_t *err);

/* Stops every watch and frees d; pending answers are dropped.  No callback runs. */
void mp_dns_free(mp_dns_t *d);

void mp_dns_set_stats_hooks(mp_dns_t *d, const mp_dns_stats_hooks_t *hooks);

typedef void (*mp_dns_initial_done_cb)(void *ctx);

/* Starts resolving every STRICT_DNS and LOGICAL_DNS cluster among clusters (others are ignored);
 * main thread.  Each cluster must already have a host set (mp_cluster_init_static_hosts) and must
 * stay alive until mp_dns_unwatch_clusters.  The cluster's endpoint addresses are read each time a
 * name is re-resolved.  on_initial_done (may be NULL) runs once, from the loop and never before
 * this returns, when every watched cluster has had its first answer or its first failure: the
 * server starts listeners then, as Envoy does after cluster initialization. */
void mp_dns_watch_clusters(mp_dns_t *d, mp_cluster_t **clusters, uint32_t n,
                           mp_dns_initial_done_cb on_initial_done, void *ctx);

/* Stops resolving these clusters (unknown ones are ignored); main thread.  Their host sets stay
 * as they are.  A pending on_initial_done of the call that watched them still runs once the rest
 * of its clusters are initialized. */
void mp_dns_unwatch_clusters(mp_dns_t *d, mp_cluster_t **clusters, uint32_t n);

#endif
