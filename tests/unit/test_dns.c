/* DNS clusters on a real libev loop with c-ares: /etc/hosts answers for "localhost", bounded
 * failures for names that do not resolve, the last good set kept across failures, LOGICAL_DNS
 * taking the first address, and unwatch/free with queries in flight.  Every loop run is bounded
 * by a guard timer.  There is no network here, so "DNS servers" are a closed local port (answers
 * fail at once) or the system's, with a short timeout. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "magpie/dns.h"
#include "magpie/lb.h"
#include "magpie/log.h"
#include "unit.h"

static struct ev_loop *loop;
static int initial_done_calls;
static int64_t stat_counts[8];

static void count_stat(mp_stat_id_t id)
{
    stat_counts[id]++;
}

static void on_initial_done(void *ctx)
{
    initial_done_calls++;
    if (ctx != NULL)
        ev_break(loop, EVBREAK_ALL);
}

static void on_guard(struct ev_loop *l, ev_timer *w, int revents)
{
    *(int *)w->data = 1;
    ev_break(l, EVBREAK_ALL);
}

/* Runs the loop until something breaks it or ms pass; returns 1 if the guard fired. */
static int run_for(double ms)
{
    int fired = 0;
    ev_timer guard;
    ev_timer_init(&guard, on_guard, ms / 1000.0, 0.);
    guard.data = &fired;
    ev_timer_start(loop, &guard);
    ev_run(loop, 0);
    ev_timer_stop(loop, &guard);
    return fired;
}

static mp_endpoint_spec_t eps[4];

/* A UDP socket on loopback that never answers: queries to it can only time out. */
static int silent_fd = -1;
static char silent_addr[32];

static const char *silent_server(void)
{
    if (silent_fd >= 0)
        return silent_addr;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    silent_fd = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(silent_fd >= 0);
    CHECK_INT(bind(silent_fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    CHECK_INT(getsockname(silent_fd, (struct sockaddr *)&sin, &len), 0);
    snprintf(silent_addr, sizeof(silent_addr), "127.0.0.1:%u", ntohs(sin.sin_port));
    return silent_addr;
}

static void setup_cluster(mp_cluster_t *c, mp_cluster_type_t type, mp_dns_family_t fam,
                          uint32_t n_eps)
{
    memset(c, 0, sizeof(*c));
    c->name = "test";
    c->type = type;
    c->dns_family = fam;
    c->dns_refresh_rate_ms = 60000;
    c->endpoints = eps;
    c->n_endpoints = n_eps;
    c->stats.update_success = 1;
    c->stats.update_failure = 2;
    mp_err_t err;
    CHECK_INT(mp_cluster_init_static_hosts(c, &err), 0);
    memset(stat_counts, 0, sizeof(stat_counts));
    initial_done_calls = 0;
}

static mp_dns_t *new_dns(const char *servers, uint32_t timeout_ms)
{
    mp_dns_opts_t o = {.timeout_ms = timeout_ms, .tries = 1, .servers = servers};
    mp_err_t err;
    mp_dns_t *d = mp_dns_new(loop, &o, &err);
    CHECK(d != NULL);
    mp_dns_stats_hooks_t hooks = {.inc = count_stat};
    mp_dns_set_stats_hooks(d, &hooks);
    return d;
}

/* Resolves one cluster until its initial callback, within 3 s. */
static int resolve(mp_dns_t *d, mp_cluster_t *c)
{
    mp_cluster_t *cs[] = {c};
    mp_dns_watch_clusters(d, cs, 1, on_initial_done, c);
    CHECK_INT(initial_done_calls, 0); /* never from inside watch */
    int fired = run_for(3000);
    CHECK_INT(fired, 0);
    CHECK_INT(initial_done_calls, 1);
    return fired;
}

static void release_cluster(mp_cluster_t *c)
{
    mp_hostset_release(atomic_load(&c->hosts));
}

static void test_localhost_v4(void)
{
    mp_dns_t *d = new_dns("127.0.0.1:1", 200);
    mp_cluster_t c;
    eps[0] = (mp_endpoint_spec_t){.address = "localhost", .port = 8080, .weight = 3};
    setup_cluster(&c, MP_CLUSTER_STRICT_DNS, MP_DNS_V4_ONLY, 1);
    resolve(d, &c);
    mp_hostset_t *hs = mp_cluster_hosts_acquire(&c);
    CHECK_INT(hs->n, 1);
    if (hs->n == 1) {
        CHECK_STR(hs->hosts[0].addr.text, "127.0.0.1:8080");
        CHECK_STR(hs->hosts[0].hostname, "localhost");
        CHECK_INT(hs->hosts[0].weight, 3);
        CHECK_INT(hs->total_weight, 3);
    }
    CHECK_INT(stat_counts[1], 1);
    CHECK_INT(stat_counts[2], 0);
    mp_hostset_release(hs);
    mp_dns_free(d);
    release_cluster(&c);
}

/* AUTO asks for AAAA first and falls back to A; V4_PREFERRED the other way round; ALL both.
 * Whether this c-ares synthesizes ::1 for localhost or not, the result is a loopback address. */
static void test_localhost_families(void)
{
    mp_dns_family_t fams[] = {MP_DNS_AUTO, MP_DNS_V4_PREFERRED, MP_DNS_ALL, MP_DNS_V6_ONLY};
    for (size_t f = 0; f < MP_ARRAY_SIZE(fams); f++) {
        mp_dns_t *d = new_dns("127.0.0.1:1", 200);
        mp_cluster_t c;
        eps[0] = (mp_endpoint_spec_t){.address = "localhost", .port = 80, .weight = 1};
        setup_cluster(&c, MP_CLUSTER_STRICT_DNS, fams[f], 1);
        resolve(d, &c);
        mp_hostset_t *hs = mp_cluster_hosts_acquire(&c);
        for (uint32_t i = 0; i < hs->n; i++) {
            const char *t = hs->hosts[i].addr.text;
            CHECK(strcmp(t, "127.0.0.1:80") == 0 || strcmp(t, "[::1]:80") == 0);
            if (fams[f] == MP_DNS_V6_ONLY)
                CHECK_STR(t, "[::1]:80");
        }
        if (fams[f] == MP_DNS_V4_PREFERRED)
            CHECK(hs->n == 1 && strcmp(hs->hosts[0].addr.text, "127.0.0.1:80") == 0);
        if (fams[f] != MP_DNS_V6_ONLY)
            CHECK(hs->n >= 1);
        /* V6_ONLY either finds ::1 or fails cleanly with an empty set. */
        CHECK_INT(stat_counts[1] + stat_counts[2], 1);
        mp_hostset_release(hs);
        mp_dns_free(d);
        release_cluster(&c);
    }
}

static void check_failure_bounded(const char *servers)
{
    /* 300 ms per try, one try, two families (AUTO): well under the 3 s guard. */
    mp_dns_t *d = new_dns(servers, 300);
    mp_cluster_t c;
    eps[0] = (mp_endpoint_spec_t){.address = "nonexistent.invalid", .port = 80, .weight = 1};
    setup_cluster(&c, MP_CLUSTER_STRICT_DNS, MP_DNS_AUTO, 1);
    uint64_t t0 = mp_now_ms();
    resolve(d, &c);
    CHECK(mp_now_ms() - t0 < 1500);
    mp_hostset_t *hs = mp_cluster_hosts_acquire(&c);
    CHECK_INT(hs->n, 0);
    CHECK_INT(stat_counts[2], 1);
    CHECK_INT(stat_counts[1], 0);
    mp_hostset_release(hs);
    mp_dns_free(d);
    release_cluster(&c);
}

static void test_failure_is_bounded(void)
{
    check_failure_bounded(silent_server()); /* a server that never answers */
    check_failure_bounded("127.0.0.1:1");   /* a closed port */
    check_failure_bounded(NULL);            /* the system's, unreachable in a sandbox */
}

static void test_failure_keeps_last_good(void)
{
    mp_dns_t *d = new_dns("127.0.0.1:1", 100);
    mp_cluster_t c;
    eps[0] = (mp_endpoint_spec_t){.address = "localhost", .port = 81, .weight = 1};
    setup_cluster(&c, MP_CLUSTER_STRICT_DNS, MP_DNS_V4_ONLY, 1);
    c.dns_refresh_rate_ms = 50;
    resolve(d, &c);
    mp_hostset_t *good = mp_cluster_hosts_acquire(&c);
    CHECK_INT(good->n, 1);
    /* Re-resolving the same answer publishes nothing new: workers keep their balancer state. */
    run_for(200);
    CHECK(stat_counts[1] >= 2);
    CHECK(atomic_load(&c.hosts) == good);
    /* The name now fails on every refresh; the set stays the last good one. */
    eps[0].address = "nonexistent.invalid";
    run_for(400);
    CHECK(stat_counts[2] >= 1);
    CHECK(atomic_load(&c.hosts) == good);
    /* And recovers. */
    eps[0].address = "localhost";
    eps[0].port = 82;
    int64_t ok_before = stat_counts[1];
    run_for(1500); /* back-off is at most 50 << failures ms here, plus jitter */
    CHECK(stat_counts[1] > ok_before);
    mp_hostset_t *now = mp_cluster_hosts_acquire(&c);
    CHECK(now->n == 1 && strcmp(now->hosts[0].addr.text, "127.0.0.1:82") == 0);
    mp_hostset_release(now);
    mp_hostset_release(good);
    mp_dns_free(d);
    release_cluster(&c);
}

static void test_strict_union_and_logical_first(void)
{
    mp_dns_t *d = new_dns("127.0.0.1:1", 200);
    eps[0] = (mp_endpoint_spec_t){.address = "localhost", .port = 80, .weight = 2};
    eps[1] = (mp_endpoint_spec_t){
        .address = "127.0.0.2", .port = 81, .weight = 5}; /* numeric names resolve to themselves */
    eps[2] = (mp_endpoint_spec_t){.address = "::1", .port = 82, .weight = 1};
    mp_cluster_t s, l;
    setup_cluster(&s, MP_CLUSTER_STRICT_DNS, MP_DNS_ALL, 3);
    setup_cluster(&l, MP_CLUSTER_LOGICAL_DNS, MP_DNS_ALL, 3);
    mp_cluster_t *cs[] = {&s, &l};
    mp_dns_watch_clusters(d, cs, 2, on_initial_done, &s);
    CHECK_INT(run_for(3000), 0);
    CHECK_INT(initial_done_calls, 1);
    mp_hostset_t *hs = atomic_load(&s.hosts);
    CHECK(hs->n >= 3);
    bool saw2 = false, saw6 = false;
    for (uint32_t i = 0; i < hs->n; i++) {
        saw2 |= strcmp(hs->hosts[i].addr.text, "127.0.0.2:81") == 0 && hs->hosts[i].weight == 5;
        saw6 |= strcmp(hs->hosts[i].addr.text, "[::1]:82") == 0;
    }
    CHECK(saw2 && saw6);
    hs = atomic_load(&l.hosts);
    CHECK_INT(hs->n, 1);
    if (hs->n == 1)
        CHECK_STR(hs->hosts[0].hostname, "localhost");
    mp_dns_free(d);
    release_cluster(&s);
    release_cluster(&l);
}

static void test_no_dns_clusters_still_calls_back(void)
{
    mp_dns_t *d = new_dns("127.0.0.1:1", 200);
    mp_cluster_t c;
    eps[0] = (mp_endpoint_spec_t){.address = "10.0.0.1", .port = 80, .weight = 1};
    setup_cluster(&c, MP_CLUSTER_STATIC, MP_DNS_AUTO, 1);
    mp_cluster_t *cs[] = {&c};
    mp_dns_watch_clusters(d, cs, 1, on_initial_done, &c);
    CHECK_INT(initial_done_calls, 0);
    CHECK_INT(run_for(1000), 0);
    CHECK_INT(initial_done_calls, 1);
    CHECK_INT(atomic_load(&c.hosts)->n, 1);
    mp_dns_free(d);
    release_cluster(&c);
}

static void test_unwatch_and_free_in_flight(void)
{
    /* Queries to a silent server stay in flight while we unwatch and free. */
    mp_dns_t *d = new_dns(silent_server(), 2000);
    mp_cluster_t a, b;
    eps[0] = (mp_endpoint_spec_t){.address = "nonexistent.invalid", .port = 80, .weight = 1};
    setup_cluster(&a, MP_CLUSTER_STRICT_DNS, MP_DNS_V4_ONLY, 1);
    setup_cluster(&b, MP_CLUSTER_STRICT_DNS, MP_DNS_V4_ONLY, 1);
    mp_cluster_t *cs[] = {&a, &b};
    mp_dns_watch_clusters(d, cs, 2, on_initial_done, NULL);
    run_for(50);
    mp_dns_unwatch_clusters(d, cs, 1);
    release_cluster(&a);
    memset(&a, 0xAA, sizeof(a)); /* a is gone: nothing may touch it */
    run_for(50);
    CHECK_INT(initial_done_calls, 0);
    mp_dns_free(d);
    CHECK_INT(initial_done_calls, 0);
    release_cluster(&b);
}

int main(void)
{
    mp_log_set_level(MP_LOG_ERROR);
    loop = ev_default_loop(0);
    RUN(test_localhost_v4);
    RUN(test_localhost_families);
    RUN(test_failure_is_bounded);
    RUN(test_failure_keeps_last_good);
    RUN(test_strict_union_and_logical_first);
    RUN(test_no_dns_clusters_still_calls_back);
    RUN(test_unwatch_and_free_in_flight);
    if (silent_fd >= 0)
        close(silent_fd);
    UNIT_DONE();
}
