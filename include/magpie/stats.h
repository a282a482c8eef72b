/* Counters and gauges with Envoy's names, sharded per thread (DESIGN.md, "Threads").
 *
 * The main thread registers a name once and gets an id; any thread then bumps its own shard with
 * no lock and no atomic read-modify-write (only the owning thread writes a shard; readers sum
 * all shards with relaxed loads).  The admin server reads sums.  Ids are stable for the life of
 * the process; registering the same name again returns the same id. */
#ifndef MAGPIE_STATS_H
#define MAGPIE_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef uint32_t mp_stat_id_t;

#define MP_STATS_MAX 65536 /* ids per process; registration beyond this aborts */

typedef enum mp_stat_kind {
    MP_STAT_COUNTER,
    MP_STAT_GAUGE,
} mp_stat_kind_t;

/* Registers (or finds) a stat; main thread.  Names use Envoy's dotted form. */
mp_stat_id_t mp_stats_counter(const char *name);
mp_stat_id_t mp_stats_gauge(const char *name);
mp_stat_id_t mp_stats_counterf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
mp_stat_id_t mp_stats_gaugef(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Gives the calling thread its shard; call once at the start of every thread that bumps stats
 * (the main thread included).  Shards outlive their threads so sums stay right. */
void mp_stats_thread_init(void);

typedef struct mp_stats_shard {
    _Atomic int64_t v[MP_STATS_MAX];
} mp_stats_shard_t;

extern _Thread_local mp_stats_shard_t *mp_stats_tls;

/* Bump on the calling thread's shard: any thread that called mp_stats_thread_init. */
static inline void mp_stats_add(mp_stat_id_t id, int64_t delta)
{
    _Atomic int64_t *p = &mp_stats_tls->v[id];
    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + delta,
                          memory_order_relaxed);
}
static inline void mp_stats_inc(mp_stat_id_t id)
{
    mp_stats_add(id, 1);
}
static inline void mp_stats_dec(mp_stat_id_t id)
{
    mp_stats_add(id, -1);
}

/* Sum over all shards; any thread. */
int64_t mp_stats_value(mp_stat_id_t id);
/* Sets a gauge to an absolute value: writes the calling thread's shard so that the sum comes out
 * as v.  Only for gauges that a single thread maintains (main thread: server.uptime, ...). */
void mp_stats_gauge_set(mp_stat_id_t id, int64_t v);

/* Iteration for the admin server: number of registered stats and each one's name and kind. */
uint32_t mp_stats_count(void);
const char *mp_stats_name(mp_stat_id_t id);
mp_stat_kind_t mp_stats_kind(mp_stat_id_t id);
/* Finds a registered stat by name; returns false when absent. */
bool mp_stats_find(const char *name, mp_stat_id_t *out);

#endif
