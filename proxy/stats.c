/* Stats registry and per-thread shards (include/magpie/stats.h).
 *
 * The registry maps names to dense ids with an open-addressing hash table.  Registration takes a
 * mutex: it is rare (translation time) and tests register from several threads.  The bump path
 * never touches the registry: it writes the calling thread's shard only.  Readers sum all shards
 * with relaxed loads, walking a push-only list of shards that is never shortened, so a reader
 * needs no lock either. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/common.h"
#include "magpie/stats.h"

/* Twice the id space keeps the load factor at or below one half; a power of two for masking. */
#define TABLE_SIZE (2 * MP_STATS_MAX)

typedef struct shard_node {
    mp_stats_shard_t *shard;
    struct shard_node *next;
} shard_node_t;

_Thread_local mp_stats_shard_t *mp_stats_tls;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
/* names[id] and kinds[id] are written before count is raised (release), so a reader that sees
 * count > id (acquire) sees both. */
static char *names[MP_STATS_MAX];
static mp_stat_kind_t kinds[MP_STATS_MAX];
static _Atomic uint32_t count;
/* Slots hold id + 1; 0 is empty.  Only read or written under registry_lock. */
static uint32_t table[TABLE_SIZE];

static _Atomic(shard_node_t *) shards;

static uint32_t hash_name(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a: short keys, good enough spread, no table */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

/* Returns the slot holding name, or the empty slot where it would go.  Caller holds the lock. */
static uint32_t *find_slot(const char *name)
{
    uint32_t i = hash_name(name) & (TABLE_SIZE - 1);
    for (;;) {
        uint32_t v = table[i];
        if (v == 0 || strcmp(names[v - 1], name) == 0)
            return &table[i];
        i = (i + 1) & (TABLE_SIZE - 1);
    }
}

static mp_stat_id_t register_stat(const char *name, mp_stat_kind_t kind)
{
    pthread_mutex_lock(&registry_lock);
    uint32_t *slot = find_slot(name);
    if (*slot != 0) {
        mp_stat_id_t id = *slot - 1;
        pthread_mutex_unlock(&registry_lock);
        return id;
    }
    uint32_t id = atomic_load_explicit(&count, memory_order_relaxed);
    if (id >= MP_STATS_MAX) {
        fprintf(stderr, "magpie: more than %d stats registered (at \"%s\")\n", MP_STATS_MAX, name);
        abort();
    }
    names[id] = mp_xstrdup(name);
    kinds[id] = kind;
    *slot = id + 1;
    atomic_store_explicit(&count, id + 1, memory_order_release);
    pthread_mutex_unlock(&registry_lock);
    return id;
}

mp_stat_id_t mp_stats_counter(const char *name)
{
    return register_stat(name, MP_STAT_COUNTER);
}

mp_stat_id_t mp_stats_gauge(const char *name)
{
    return register_stat(name, MP_STAT_GAUGE);
}

static mp_stat_id_t register_vf(mp_stat_kind_t kind, const char *fmt, va_list ap)
{
    char buf[512];
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    if (n >= 0 && (size_t)n < sizeof(buf))
        return register_stat(buf, kind);
    /* Longer than any sane stat name, but still correct. */
    va_list ap2;
    va_copy(ap2, ap);
    char *big = mp_xmalloc((size_t)n + 1);
    vsnprintf(big, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    mp_stat_id_t id = register_stat(big, kind);
    free(big);
    return id;
}

mp_stat_id_t mp_stats_counterf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mp_stat_id_t id = register_vf(MP_STAT_COUNTER, fmt, ap);
    va_end(ap);
    return id;
}

mp_stat_id_t mp_stats_gaugef(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mp_stat_id_t id = register_vf(MP_STAT_GAUGE, fmt, ap);
    va_end(ap);
    return id;
}

void mp_stats_thread_init(void)
{
    if (mp_stats_tls != NULL)
        return;
    /* 512 KiB per thread of which only the pages of ids actually bumped become resident. */
    shard_node_t *node = mp_xmalloc(sizeof(*node));
    node->shard = mp_xcalloc(1, sizeof(*node->shard));
    node->next = atomic_load_explicit(&shards, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&shards, &node->next, node, memory_order_release,
                                                  memory_order_relaxed))
        ;
    mp_stats_tls = node->shard;
}

/* Sum of every shard but skip (which may be NULL). */
static int64_t sum_except(mp_stat_id_t id, const mp_stats_shard_t *skip)
{
    int64_t sum = 0;
    for (shard_node_t *n = atomic_load_explicit(&shards, memory_order_acquire); n; n = n->next) {
        if (n->shard != skip)
            sum += atomic_load_explicit(&n->shard->v[id], memory_order_relaxed);
    }
    return sum;
}

int64_t mp_stats_value(mp_stat_id_t id)
{
    if (id >= MP_STATS_MAX)
        return 0;
    return sum_except(id, NULL);
}

void mp_stats_gauge_set(mp_stat_id_t id, int64_t v)
{
    if (mp_stats_tls == NULL)
        mp_stats_thread_init();
    int64_t others = sum_except(id, mp_stats_tls);
    atomic_store_explicit(&mp_stats_tls->v[id], v - others, memory_order_relaxed);
}

uint32_t mp_stats_count(void)
{
    return atomic_load_explicit(&count, memory_order_acquire);
}

const char *mp_stats_name(mp_stat_id_t id)
{
    return id < mp_stats_count() ? names[id] : NULL;
}

mp_stat_kind_t mp_stats_kind(mp_stat_id_t id)
{
    return id < mp_stats_count() ? kinds[id] : MP_STAT_COUNTER;
}

bool mp_stats_find(const char *name, mp_stat_id_t *out)
{
    pthread_mutex_lock(&registry_lock);
    uint32_t v = *find_slot(name);
    pthread_mutex_unlock(&registry_lock);
    if (v == 0)
        return false;
    if (out != NULL)
        *out = v - 1;
    return true;
}
