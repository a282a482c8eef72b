/* Host sets: address parsing and formatting, static host initialization, and acquire racing
 * publish across threads. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>

#include "magpie/config.h"
#include "magpie/dns.h"
#include "unit.h"

static const char *parsed(const char *ip, uint16_t port)
{
    static mp_addr_t a;
    if (mp_addr_parse(&a, ip, port) != 0)
        return "ERR";
    return a.text;
}

static void test_addr_parse(void)
{
    CHECK_STR(parsed("1.2.3.4", 80), "1.2.3.4:80");
    CHECK_STR(parsed("1.2.3.4:8080", 80), "1.2.3.4:8080"); /* a port in the text wins */
    CHECK_STR(parsed("::1", 80), "[::1]:80");
    CHECK_STR(parsed("[::1]", 443), "[::1]:443");
    CHECK_STR(parsed("[::1]:9000", 1), "[::1]:9000");
    CHECK_STR(parsed("2001:db8::1:80", 5), "[2001:db8::1:80]:5"); /* bare v6: no port split */
    CHECK_STR(parsed("[2001:DB8::A]:65535", 0), "[2001:db8::a]:65535");
    CHECK_STR(parsed("::ffff:10.0.0.1", 7), "[::ffff:10.0.0.1]:7");
    CHECK_STR(parsed("0.0.0.0", 0), "0.0.0.0:0");
    CHECK_STR(parsed("fe80::1%1", 80), "[fe80::1%1]:80");
    CHECK_STR(parsed("localhost", 80), "ERR");
    CHECK_STR(parsed("1.2.3", 80), "ERR");
    CHECK_STR(parsed("1.2.3.4:", 80), "ERR");
    CHECK_STR(parsed("1.2.3.4:65536", 80), "ERR");
    CHECK_STR(parsed("1.2.3.4:8x", 80), "ERR");
    CHECK_STR(parsed("[1.2.3.4]:80", 80), "ERR");
    CHECK_STR(parsed("[::1", 80), "ERR");
    CHECK_STR(parsed("[::1]x", 80), "ERR");
    CHECK_STR(parsed("", 80), "ERR");
    CHECK_STR(parsed("[]:80", 80), "ERR");
    CHECK_INT(mp_addr_parse(&(mp_addr_t){0}, NULL, 1), MP_ERROR);

    mp_addr_t a;
    CHECK_INT(mp_addr_parse(&a, "10.1.2.3", 4242), 0);
    CHECK_INT(a.ss.ss_family, AF_INET);
    CHECK_INT(a.len, sizeof(struct sockaddr_in));
    CHECK_INT(ntohs(((struct sockaddr_in *)&a.ss)->sin_port), 4242);
    CHECK_INT(mp_addr_parse(&a, "::1", 4242), 0);
    CHECK_INT(a.ss.ss_family, AF_INET6);
    CHECK_INT(a.len, sizeof(struct sockaddr_in6));
    /* format rewrites text from the sockaddr after a change */
    ((struct sockaddr_in6 *)&a.ss)->sin6_port = htons(1);
    mp_addr_format(&a);
    CHECK_STR(a.text, "[::1]:1");
}

static void test_static_hosts(void)
{
    mp_endpoint_spec_t eps[] = {{.address = "10.0.0.1", .port = 80, .weight = 3},
                                {.address = "::1", .port = 81, .weight = 0},
                                {.address = "[::2]:82", .port = 9, .weight = 1}};
    mp_cluster_t c;
    memset(&c, 0, sizeof(c));
    c.type = MP_CLUSTER_STATIC;
    c.endpoints = eps;
    c.n_endpoints = 3;
    mp_err_t err;
    CHECK_INT(mp_cluster_init_static_hosts(&c, &err), 0);
    mp_hostset_t *hs = mp_cluster_hosts_acquire(&c);
    CHECK_INT(hs->n, 3);
    CHECK_STR(hs->hosts[0].addr.text, "10.0.0.1:80");
    CHECK_STR(hs->hosts[1].addr.text, "[::1]:81");
    CHECK_STR(hs->hosts[2].addr.text, "[::2]:82");
    CHECK_INT(hs->hosts[1].weight, 1);
    CHECK_INT(hs->total_weight, 5);
    CHECK_INT(atomic_load(&hs->refs), 2);
    mp_hostset_release(hs);

    /* A name in a STATIC cluster is an error that names the endpoint; the old set stays. */
    eps[1].address = "backend.local";
    err.msg[0] = '\0';
    CHECK_INT(mp_cluster_init_static_hosts(&c, &err), MP_ERROR);
    CHECK_STR(err.msg, "endpoints[1].address: \"backend.local\" is not an IP address");
    CHECK(atomic_load(&c.hosts) == hs);

    /* DNS clusters start with an empty set. */
    c.type = MP_CLUSTER_STRICT_DNS;
    CHECK_INT(mp_cluster_init_static_hosts(&c, &err), 0);
    hs = mp_cluster_hosts_acquire(&c);
    CHECK_INT(hs->n, 0);
    mp_hostset_release(hs);
    mp_hostset_release(atomic_load(&c.hosts));
}

/* Stress: one thread publishes new sets while another acquires and reads them.  Every set
 * records its own sequence number in host 0's weight; a reader must always see a consistent,
 * live set (ASan catches a use after free) and sequence numbers that never go backwards. */
#define PUBLISHES 20000

static mp_cluster_t stress_cluster;
static atomic_bool stress_done;

static mp_hostset_t *numbered_set(uint32_t seq)
{
    mp_hostset_t *hs = mp_hostset_new(2);
    hs->hosts[0].weight = seq;
    hs->hosts[1].weight = 1;
    hs->hosts[1].hostname = mp_xstrdup("stress");
    mp_hostset_sum_weights(hs);
    mp_hostset_adopt_health(hs, NULL);
    return hs;
}

static void *stress_publisher(void *arg)
{
    for (uint32_t s = 2; s <= PUBLISHES; s++)
        mp_cluster_hosts_publish(&stress_cluster, numbered_set(s));
    atomic_store(&stress_done, true);
    return NULL;
}

static void *stress_reader(void *arg)
{
    long *bad = arg;
    uint32_t last = 0;
    for (long k = 0; !atomic_load(&stress_done) || k < 1000; k++) {
        mp_hostset_t *hs = mp_cluster_hosts_acquire(&stress_cluster);
        uint32_t seq = hs->hosts[0].weight;
        if (seq < last || hs->total_weight != (uint64_t)seq + 1 || hs->n != 2 ||
            strcmp(hs->hosts[1].hostname, "stress") != 0)
            (*bad)++;
        last = seq;
        mp_hostset_release(hs);
    }
    return NULL;
}

static void test_concurrent_acquire_publish(void)
{
    long bad = 0;
    memset(&stress_cluster, 0, sizeof(stress_cluster));
    atomic_store(&stress_cluster.hosts, numbered_set(1));
    pthread_t pub, rd;
    CHECK_INT(pthread_create(&rd, NULL, stress_reader, &bad), 0);
    CHECK_INT(pthread_create(&pub, NULL, stress_publisher, NULL), 0);
    pthread_join(pub, NULL);
    pthread_join(rd, NULL);
    CHECK_INT(bad, 0);
    mp_hostset_t *hs = atomic_load(&stress_cluster.hosts);
    CHECK_INT(hs->hosts[0].weight, PUBLISHES);
    CHECK_INT(atomic_load(&hs->refs), 1);
    mp_hostset_release(hs);
}

int main(void)
{
    RUN(test_addr_parse);
    RUN(test_static_hosts);
    RUN(test_concurrent_acquire_publish);
    UNIT_DONE();
}
