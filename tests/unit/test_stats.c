/* proxy/stats.c: registry, per-thread shards, sums, gauges, iteration; and the response-flag
 * letters of proxy/stream_info.c. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "magpie/stats.h"
#include "magpie/stream_info.h"
#include "unit.h"

#define THREADS 8
#define BUMPS 100000

static mp_stat_id_t shared_counter, shared_gauge;
static pthread_barrier_t start_line;

static void test_register_same_name_same_id(void)
{
    mp_stat_id_t a = mp_stats_counter("cluster.a.upstream_rq_total");
    mp_stat_id_t b = mp_stats_counterf("cluster.%s.upstream_rq_total", "a");
    mp_stat_id_t c = mp_stats_gauge("cluster.a.upstream_rq_active");
    CHECK_INT(a, b);
    CHECK(a != c);
    CHECK_STR(mp_stats_name(a), "cluster.a.upstream_rq_total");
    CHECK_INT(mp_stats_kind(a), MP_STAT_COUNTER);
    CHECK_INT(mp_stats_kind(c), MP_STAT_GAUGE);
    mp_stat_id_t found = 0;
    CHECK(mp_stats_find("cluster.a.upstream_rq_active", &found));
    CHECK_INT(found, c);
    CHECK(!mp_stats_find("cluster.a.nope", &found));
    CHECK(mp_stats_name(mp_stats_count()) == NULL);
}

static void *bump_thread(void *arg)
{
    long self = (long)arg;
    mp_stats_thread_init();
    /* Each thread also registers: registration must be safe from any thread. */
    mp_stat_id_t own = mp_stats_counterf("thread.%ld.bumps", self);
    pthread_barrier_wait(&start_line);
    for (int i = 0; i < BUMPS; i++) {
        mp_stats_inc(shared_counter);
        mp_stats_inc(own);
        mp_stats_inc(shared_gauge);
        if (i % 2)
            mp_stats_dec(shared_gauge);
    }
    return NULL;
}

static void test_threads_sum(void)
{
    shared_counter = mp_stats_counter("test.shared");
    shared_gauge = mp_stats_gauge("test.gauge");
    pthread_t t[THREADS];
    pthread_barrier_init(&start_line, NULL, THREADS);
    for (long i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, bump_thread, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start_line);
    /* Shards outlive their threads: the sums are complete after the joins. */
    CHECK_INT(mp_stats_value(shared_counter), (int64_t)THREADS * BUMPS);
    CHECK_INT(mp_stats_value(shared_gauge), (int64_t)THREADS * BUMPS / 2);
    for (long i = 0; i < THREADS; i++) {
        char name[64];
        mp_stat_id_t id = 0;
        snprintf(name, sizeof(name), "thread.%ld.bumps", i);
        CHECK(mp_stats_find(name, &id));
        CHECK_INT(mp_stats_value(id), BUMPS);
    }
}

static void test_gauge_set(void)
{
    mp_stats_thread_init();
    mp_stats_thread_init(); /* idempotent */
    /* The gauge already holds THREADS*BUMPS/2 spread over other shards; set makes the sum exact. */
    mp_stats_gauge_set(shared_gauge, 42);
    CHECK_INT(mp_stats_value(shared_gauge), 42);
    mp_stats_add(shared_gauge, 8);
    CHECK_INT(mp_stats_value(shared_gauge), 50);
    mp_stats_gauge_set(shared_gauge, -3);
    CHECK_INT(mp_stats_value(shared_gauge), -3);
}

static void test_many_names(void)
{
    uint32_t before = mp_stats_count();
    for (int i = 0; i < 5000; i++)
        mp_stats_counterf("bulk.%d.x", i);
    for (int i = 0; i < 5000; i++)
        mp_stats_counterf("bulk.%d.x", i);
    CHECK_INT(mp_stats_count(), before + 5000);
    mp_stat_id_t id;
    CHECK(mp_stats_find("bulk.4999.x", &id));
    CHECK_STR(mp_stats_name(id), "bulk.4999.x");
}

static void test_response_flags(void)
{
    char b[128];
    CHECK_INT(mp_response_flags_format(0, b, sizeof(b)), 1);
    CHECK_STR(b, "-");
    mp_response_flags_format(MP_RF_UPSTREAM_RETRY_LIMIT | MP_RF_UPSTREAM_CONNECT_FAIL, b,
                             sizeof(b));
    CHECK_STR(b, "UF,URX");
    mp_response_flags_format(0xffff, b, sizeof(b));
    CHECK_STR(b, "UH,UF,UO,NR,URX,NC,DC,UC,UR,UT,SI,DPE,UPE,LR,DT,DR");
    mp_response_flags_format(MP_RF_NO_ROUTE, b, sizeof(b));
    CHECK_STR(b, "NR");
    /* Truncation stops at a whole flag. */
    mp_response_flags_format(MP_RF_NO_HEALTHY_UPSTREAM | MP_RF_UPSTREAM_CONNECT_FAIL, b, 5);
    CHECK_STR(b, "UH");
}

int main(void)
{
    RUN(test_register_same_name_same_id);
    RUN(test_threads_sum);
    RUN(test_gauge_set);
    RUN(test_many_names);
    RUN(test_response_flags);
    UNIT_DONE();
}
