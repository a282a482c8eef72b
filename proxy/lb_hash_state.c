/* Per-worker consistent-hashing state for one cluster (include/magpie/lb_hash.h): the table over
 * the hosts usable now, rebuilt when the host set or the usable subset changes.  Envoy builds its
 * tables from the healthy hosts too, so an ejected host's keys spread over the others and come
 * back to it when it returns. */
#include <stdlib.h>
#include <string.h>

#include "magpie/lb_hash.h"
#include "magpie/log.h"

struct mp_lb_hash {
    mp_hash_table_kind_t kind;
    mp_lb_hash_config_t cfg;
    mp_hostset_t *seen;     /* ref held; the set the table was built from */
    bool *usable;           /* per host of seen: in the table */
    uint32_t cap;           /* slots in usable */
    mp_hash_table_t *table; /* NULL until the first pick, or when the build failed (logged once
                               per change; picks then fall back to hash % n) */
};

mp_lb_hash_t *mp_lb_hash_new(const mp_cluster_t *c)
{
    mp_lb_hash_t *h = mp_xcalloc(1, sizeof(*h));
    h->kind = c->lb_policy == MP_LB_MAGLEV ? MP_HASH_TABLE_MAGLEV : MP_HASH_TABLE_RING;
    h->cfg = c->hash_lb;
    if (h->cfg.min_ring_size == 0 && h->cfg.table_size == 0)
        mp_lb_hash_config_default(&h->cfg); /* a cluster built by hand (tests) */
    return h;
}

void mp_lb_hash_free(mp_lb_hash_t *h)
{
    if (h == NULL)
        return;
    if (h->seen != NULL)
        mp_hostset_release(h->seen);
    mp_hash_table_free(h->table);
    free(h->usable);
    free(h);
}

/* Below half usable the set is in panic and every host goes in (the 50 % of mp_lb_pick). */
static bool in_table(const mp_hostset_t *hs, uint32_t i, bool panic)
{
    return panic || mp_host_usable(&hs->hosts[i]);
}

static bool is_panic(const mp_hostset_t *hs)
{
    uint32_t usable = 0;
    for (uint32_t i = 0; i < hs->n; i++)
        usable += mp_host_usable(&hs->hosts[i]);
    return (uint64_t)usable * 100 < 50ull * hs->n;
}

static bool is_current(const mp_lb_hash_t *h, const mp_hostset_t *hs, bool panic)
{
    if (hs != h->seen)
        return false;
    for (uint32_t i = 0; i < hs->n; i++)
        if (h->usable[i] != in_table(hs, i, panic))
            return false;
    return true;
}

static void rebuild(mp_lb_hash_t *h, const mp_hostset_t *chs, bool panic)
{
    mp_hostset_t *hs = (mp_hostset_t *)chs; /* only the atomic refcount is touched */
    if (hs != h->seen) {
        atomic_fetch_add_explicit(&hs->refs, 1, memory_order_relaxed);
        if (h->seen != NULL)
            mp_hostset_release(h->seen);
        h->seen = hs;
    }
    if (hs->n > h->cap) {
        h->cap = hs->n;
        h->usable = mp_xrealloc(h->usable, hs->n * sizeof(*h->usable));
    }
    mp_hash_host_t *hosts = mp_xcalloc(hs->n, sizeof(*hosts));
    uint32_t n = 0;
    for (uint32_t i = 0; i < hs->n; i++) {
        h->usable[i] = in_table(hs, i, panic);
        if (!h->usable[i])
            continue;
        const mp_host_t *host = &hs->hosts[i];
        hosts[n++] = (mp_hash_host_t){
            .key = h->cfg.use_hostname && host->hostname ? host->hostname : host->addr.text,
            .index = i,
            .weight = host->weight,
        };
    }
    mp_hash_table_free(h->table);
    mp_err_t err;
    h->table = mp_hash_table_new(h->kind, hosts, n, &h->cfg, &err);
    if (h->table == NULL)
        mp_log_warn("consistent hashing: %s", err.msg);
    free(hosts);
}

int mp_lb_hash_pick(mp_lb_hash_t *h, const mp_hostset_t *hs, int exclude, uint64_t hash)
{
    if (hs == NULL || hs->n == 0)
        return -1;
    bool panic = is_panic(hs);
    if (!is_current(h, hs, panic))
        rebuild(h, hs, panic);
    if (h->table == NULL)
        return (int)(hash % hs->n);
    int i = (int)mp_hash_table_pick(h->table, hash, 0);
    if (i == exclude)
        i = (int)mp_hash_table_pick(h->table, hash, 1);
    return i;
}
