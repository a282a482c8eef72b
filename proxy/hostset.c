/* Cluster host sets: allocation, reference counting, the publish/acquire handoff between the
 * main thread and workers, static host initialization, and address parsing/formatting. */
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/config.h"
#include "magpie/dns.h"
#include "magpie/health_check.h"

/* Why a lock, and why it is fine.
 *
 * acquire must load c->hosts and take a ref on what it loaded.  Without coordination a publish
 * could swap the pointer and drop the last ref between those two steps, and the acquirer would
 * increment freed memory.  Lock-free fixes (hazard pointers, epochs, split counts) need per-worker
 * registration or new fields in mp_cluster_t; a spinlock around "load + ref" and around "swap"
 * needs neither.  publish releases the old set after unlocking, and any acquirer that saw the old
 * pointer already holds its ref by then, so the old set can never reach zero under a reader.
 *
 * The critical section is two instructions, acquire runs once per request, and the ref itself
 * already bounces the set's cache line between workers, so the lock adds one more uncontended
 * atomic in the common case.  Locks are striped by cluster address so that different clusters do
 * not share a cache line. */
#define HOSTS_LOCKS 64

typedef struct hosts_lock {
    _Alignas(64) atomic_flag f;
} hosts_lock_t;

/* Static storage starts zeroed, which is the clear state of atomic_flag on every compiler we
 * build with (ATOMIC_FLAG_INIT is {0} in GCC and Clang). */
static hosts_lock_t hosts_locks[HOSTS_LOCKS];

static atomic_flag *lock_for(const mp_cluster_t *c)
{
    uintptr_t h = (uintptr_t)c;
    h ^= h >> 17;
    h *= 0x9E3779B97F4A7C15ull;
    return &hosts_locks[(h >> 32) % HOSTS_LOCKS].f;
}

#if defined(__x86_64__) || defined(__i386__)
static inline void cpu_relax(void)
{
    __builtin_ia32_pause();
}
#else
static inline void cpu_relax(void)
{
}
#endif

static void spin_lock(atomic_flag *f)
{
    while (atomic_flag_test_and_set_explicit(f, memory_order_acquire))
        cpu_relax();
}

static void spin_unlock(atomic_flag *f)
{
    atomic_flag_clear_explicit(f, memory_order_release);
}

mp_hostset_t *mp_hostset_new(uint32_t n)
{
    mp_hostset_t *hs = mp_xcalloc(1, sizeof(*hs) + (size_t)n * sizeof(mp_host_t));
    atomic_init(&hs->refs, 1);
    hs->n = n;
    return hs;
}

void mp_hostset_release(mp_hostset_t *hs)
{
    if (hs == NULL)
        return;
    if (atomic_fetch_sub_explicit(&hs->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (uint32_t i = 0; i < hs->n; i++) {
        free(hs->hosts[i].hostname);
        mp_host_health_unref(hs->hosts[i].health);
    }
    free(hs->groups);
    free(hs);
}

mp_host_health_t *mp_host_health_new(void)
{
    mp_host_health_t *h = mp_xcalloc(1, sizeof(*h));
    atomic_init(&h->refs, 1);
    atomic_init(&h->flags, 0);
    h->outlier.success_rate = h->outlier.local_success_rate = -1;
    return h;
}

mp_host_health_t *mp_host_health_ref(mp_host_health_t *h)
{
    atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
    return h;
}

void mp_host_health_unref(mp_host_health_t *h)
{
    if (h != NULL && atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1)
        free(h);
}

atomic_uint_fast64_t mp__health_generation;

uint32_t mp_host_health_set(mp_host_health_t *h, uint32_t flag, bool on)
{
    uint32_t before = on ? atomic_fetch_or_explicit(&h->flags, flag, memory_order_relaxed)
                         : atomic_fetch_and_explicit(&h->flags, ~flag, memory_order_relaxed);
    if (((before & flag) != 0) != on)
        atomic_fetch_add_explicit(&mp__health_generation, 1, memory_order_release);
    return before;
}

static bool same_addr(const mp_addr_t *a, const mp_addr_t *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/* The control plane's word on a host is a flag like the others, so that /clusters shows it and
 * every reader of mp_host_usable honours it.  Set on every adoption: the endpoint is what says. */
static void apply_eds_health(mp_host_t *h)
{
    mp_host_health_set(h->health, MP_HEALTH_FAILED_EDS_HEALTH, h->eds_health == MP_EDS_UNHEALTHY);
    mp_host_health_set(h->health, MP_HEALTH_DEGRADED_EDS_HEALTH, h->eds_health == MP_EDS_DEGRADED);
}

void mp_hostset_adopt_health(mp_hostset_t *fresh, const mp_hostset_t *old)
{
    mp_hostset_adopt_health_flags(fresh, old, 0);
}

uint32_t mp_hostset_count_usable(const mp_hostset_t *hs)
{
    uint32_t n = 0;
    for (uint32_t i = 0; hs != NULL && i < hs->n; i++)
        n += mp_host_usable(&hs->hosts[i]);
    return n;
}

/* Quadratic, but only on a DNS answer, for sets of tens of hosts. */
void mp_hostset_adopt_health_flags(mp_hostset_t *fresh, const mp_hostset_t *old, uint32_t flags)
{
    for (uint32_t i = 0; i < fresh->n; i++) {
        mp_host_t *h = &fresh->hosts[i];
        for (uint32_t j = 0; old != NULL && j < old->n && h->health == NULL; j++)
            if (same_addr(&h->addr, &old->hosts[j].addr))
                h->health = mp_host_health_ref(old->hosts[j].health);
        if (h->health == NULL) {
            h->health = mp_host_health_new();
            atomic_store_explicit(&h->health->flags, flags, memory_order_relaxed);
        }
        apply_eds_health(h);
    }
}

static int cmp_host_order(const void *pa, const void *pb)
{
    const mp_host_t *a = pa, *b = pb;
    if (a->priority != b->priority)
        return a->priority < b->priority ? -1 : 1;
    if (a->locality != b->locality)
        return a->locality < b->locality ? -1 : 1;
    return 0;
}

/* Insertion sort: stable (config order survives within a group) and sets are small. */
static void sort_hosts(mp_hostset_t *hs)
{
    for (uint32_t i = 1; i < hs->n; i++) {
        mp_host_t t = hs->hosts[i];
        uint32_t j = i;
        for (; j > 0 && cmp_host_order(&hs->hosts[j - 1], &t) > 0; j--)
            hs->hosts[j] = hs->hosts[j - 1];
        hs->hosts[j] = t;
    }
}

void mp_hostset_finish(mp_hostset_t *hs)
{
    sort_hosts(hs);
    free(hs->groups);
    hs->groups = mp_xcalloc(hs->n ? hs->n : 1, sizeof(*hs->groups));
    hs->n_groups = 0;
    hs->n_priorities = 0;
    for (uint32_t i = 0; i < hs->n; i++) {
        const mp_host_t *h = &hs->hosts[i];
        mp_host_group_t *g = hs->n_groups ? &hs->groups[hs->n_groups - 1] : NULL;
        if (g == NULL || g->priority != h->priority || g->locality != h->locality) {
            g = &hs->groups[hs->n_groups++];
            g->priority = h->priority;
            g->locality = h->locality;
            g->weight = h->locality_weight;
            g->first = i;
        }
        g->n++;
        hs->n_priorities = h->priority + 1;
    }
    mp_hostset_sum_weights(hs);
}

mp_hostset_t *mp_cluster_hosts_acquire(mp_cluster_t *c)
{
    atomic_flag *l = lock_for(c);
    spin_lock(l);
    mp_hostset_t *hs = atomic_load_explicit(&c->hosts, memory_order_acquire);
    if (hs != NULL)
        atomic_fetch_add_explicit(&hs->refs, 1, memory_order_relaxed);
    spin_unlock(l);
    return hs;
}

void mp_cluster_hosts_publish(mp_cluster_t *c, mp_hostset_t *hs)
{
    atomic_flag *l = lock_for(c);
    spin_lock(l);
    mp_hostset_t *old = atomic_exchange_explicit(&c->hosts, hs, memory_order_acq_rel);
    spin_unlock(l);
    mp_hostset_release(old);
}

uint64_t mp_hostset_sum_weights(mp_hostset_t *hs)
{
    uint64_t t = 0;
    for (uint32_t i = 0; i < hs->n; i++) {
        if (hs->hosts[i].weight == 0)
            hs->hosts[i].weight = 1;
        t += hs->hosts[i].weight;
    }
    hs->total_weight = t;
    return t;
}

void mp_host_from_spec(mp_host_t *h, const mp_endpoint_spec_t *ep)
{
    h->weight = ep->weight ? ep->weight : 1;
    h->priority = ep->priority;
    h->locality = ep->locality;
    h->locality_weight = ep->locality_weight;
    h->eds_health = ep->eds_health;
}

int mp_cluster_init_static_hosts(mp_cluster_t *c, mp_err_t *err)
{
    uint32_t n = c->type == MP_CLUSTER_STATIC || c->type == MP_CLUSTER_EDS ? c->n_endpoints : 0;
    mp_hostset_t *hs = mp_hostset_new(n);
    for (uint32_t i = 0; i < n; i++) {
        const mp_endpoint_spec_t *ep = &c->endpoints[i];
        if (mp_addr_parse(&hs->hosts[i].addr, ep->address, ep->port) != 0) {
            mp_hostset_release(hs);
            return mp_err_set(err, "endpoints[%u].address: \"%s\" is not an IP address", i,
                              ep->address);
        }
        mp_host_from_spec(&hs->hosts[i], ep);
    }
    mp_hostset_finish(hs);
    mp_hostset_adopt_health_flags(hs, NULL, mp_hc_initial_flags(c));
    mp_cluster_hosts_publish(c, hs);
    return 0;
}

/* ---- addresses ---- */

/* Splits "host:port", "[v6]:port", "[v6]" or a bare literal.  A bare string with more than one
 * colon is an IPv6 literal without a port ("::1:80" is the address ::1:80, as RFC 4291 reads it).
 * Returns 0 and fills host (NUL-terminated) and *port when one is present. */
static int split_host_port(const char *s, char *host, size_t cap, int *port)
{
    const char *end = s + strlen(s), *h = s, *hend = end, *p = NULL;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || (rb[1] != '\0' && rb[1] != ':'))
            return MP_ERROR;
        h = s + 1;
        hend = rb;
        p = rb[1] == ':' ? rb + 2 : NULL;
    } else {
        const char *colon = strchr(s, ':');
        if (colon != NULL && strchr(colon + 1, ':') == NULL) {
            hend = colon;
            p = colon + 1;
        }
    }
    if ((size_t)(hend - h) >= cap || hend == h)
        return MP_ERROR;
    memcpy(host, h, (size_t)(hend - h));
    host[hend - h] = '\0';
    *port = -1;
    if (p == NULL)
        return 0;
    if (*p == '\0' || strspn(p, "0123456789") != strlen(p) || strlen(p) > 5)
        return MP_ERROR;
    *port = atoi(p);
    return *port > 65535 ? MP_ERROR : 0;
}

/* "fe80::1%eth0" or "fe80::1%2": the scope is an interface name or index. */
static int parse_scope(char *host, uint32_t *scope)
{
    char *pct = strchr(host, '%');
    *scope = 0;
    if (pct == NULL)
        return 0;
    *pct++ = '\0';
    if (*pct == '\0')
        return MP_ERROR;
    if (strspn(pct, "0123456789") == strlen(pct)) {
        *scope = (uint32_t)strtoul(pct, NULL, 10);
        return 0;
    }
    *scope = if_nametoindex(pct);
    return *scope ? 0 : MP_ERROR;
}

int mp_addr_parse(mp_addr_t *addr, const char *ip, uint16_t port)
{
    char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    int sport;
    uint32_t scope;
    if (ip == NULL || split_host_port(ip, host, sizeof(host), &sport) != 0)
        return MP_ERROR;
    uint16_t use_port = sport >= 0 ? (uint16_t)sport : port;
    memset(addr, 0, sizeof(*addr));
    struct sockaddr_in *sin = (struct sockaddr_in *)&addr->ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&addr->ss;
    if (ip[0] != '[' && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(use_port);
        addr->len = sizeof(*sin);
    } else if (parse_scope(host, &scope) == 0 && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(use_port);
        sin6->sin6_scope_id = scope;
        addr->len = sizeof(*sin6);
    } else {
        return MP_ERROR;
    }
    mp_addr_format(addr);
    return 0;
}

void mp_addr_format(mp_addr_t *addr)
{
    char ip[INET6_ADDRSTRLEN];
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&addr->ss;
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&addr->ss;
    if (addr->ss.ss_family == AF_INET) {
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        snprintf(addr->text, sizeof(addr->text), "%s:%u", ip, ntohs(sin->sin_port));
    } else if (addr->ss.ss_family == AF_INET6 && sin6->sin6_scope_id != 0) {
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        snprintf(addr->text, sizeof(addr->text), "[%s%%%u]:%u", ip, sin6->sin6_scope_id,
                 ntohs(sin6->sin6_port));
    } else if (addr->ss.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        snprintf(addr->text, sizeof(addr->text), "[%s]:%u", ip, ntohs(sin6->sin6_port));
    } else {
        snprintf(addr->text, sizeof(addr->text), "(unknown family %d)", addr->ss.ss_family);
    }
}
