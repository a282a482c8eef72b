/* Filter chain matching (proxy/chain_match.c) and the listener filters' parsers
 * (proxy/inspect.c): Envoy's precedence level by level, and ClientHellos built byte by byte. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/chain_match.h"
#include "magpie/inspect.h"
#include "unit.h"

#define MAXC 8

static mp_filter_chain_t chains[MAXC];
static uint32_t n_chains;
static char *names[MAXC][4];
static char *alpns[MAXC][4];
static mp_cidr_t ranges[MAXC][3][2];
static uint32_t ports[MAXC][2];

static mp_chain_match_t *add_chain(const char *name)
{
    mp_filter_chain_t *fc = &chains[n_chains++];
    memset(fc, 0, sizeof(*fc));
    fc->name = (char *)name;
    return &fc->match;
}

static void reset(void)
{
    n_chains = 0;
}

static uint32_t index_of(const mp_chain_match_t *m)
{
    return (uint32_t)(((const char *)m - (const char *)&chains[0]) / sizeof(chains[0]));
}

static void set_names(mp_chain_match_t *m, const char *a, const char *b)
{
    uint32_t i = index_of(m);
    names[i][0] = (char *)a;
    names[i][1] = (char *)b;
    m->server_names = names[i];
    m->n_server_names = b ? 2 : 1;
}

static void set_alpn(mp_chain_match_t *m, const char *a, const char *b)
{
    uint32_t i = index_of(m);
    alpns[i][0] = (char *)a;
    alpns[i][1] = (char *)b;
    m->application_protocols = alpns[i];
    m->n_application_protocols = b ? 2 : 1;
}

/* which: 0 destination, 1 direct source, 2 source. */
static void set_range(mp_chain_match_t *m, int which, const char *prefix, uint32_t len)
{
    uint32_t i = index_of(m);
    CHECK(mp_cidr_parse(&ranges[i][which][0], prefix, len) == 0);
    if (which == 0) {
        m->prefix_ranges = ranges[i][0];
        m->n_prefix_ranges = 1;
    } else if (which == 1) {
        m->direct_source_prefix_ranges = ranges[i][1];
        m->n_direct_source_prefix_ranges = 1;
    } else {
        m->source_prefix_ranges = ranges[i][2];
        m->n_source_prefix_ranges = 1;
    }
}

static void set_src_port(mp_chain_match_t *m, uint32_t port)
{
    uint32_t i = index_of(m);
    ports[i][0] = port;
    m->source_ports = ports[i];
    m->n_source_ports = 1;
}

static mp_conn_facts_t facts(const char *dst, uint16_t dport, const char *src, uint16_t sport)
{
    mp_conn_facts_t f = {
        .sni = "", .transport = "raw_buffer", .dst_port = dport, .src_port = sport};
    mp_cidr_t r;
    mp_cidr_parse(&r, dst, strchr(dst, ':') ? 128 : 32);
    f.dst_ip = r.ip;
    mp_cidr_parse(&r, src, strchr(src, ':') ? 128 : 32);
    f.src_ip = f.direct_src_ip = r.ip;
    return f;
}

static const char *pick(const mp_conn_facts_t *f)
{
    const mp_filter_chain_t *fc = mp_chain_match_find(chains, n_chains, f);
    return fc ? fc->name : "(none)";
}

static void test_server_names(void)
{
    reset();
    set_names(add_chain("exact"), "www.example.com", NULL);
    set_names(add_chain("wild"), "*.example.com", NULL);
    set_names(add_chain("deeper"), "*.a.example.com", NULL);
    add_chain("any");
    mp_conn_facts_t f = facts("127.0.0.1", 443, "127.0.0.1", 5000);
    f.sni = "www.example.com";
    CHECK_STR(pick(&f), "exact");
    f.sni = "api.example.com";
    CHECK_STR(pick(&f), "wild");
    f.sni = "x.y.example.com"; /* a wildcard covers several labels */
    CHECK_STR(pick(&f), "wild");
    f.sni = "b.a.example.com"; /* the longer suffix wins */
    CHECK_STR(pick(&f), "deeper");
    f.sni = "example.com"; /* never the bare suffix */
    CHECK_STR(pick(&f), "any");
    f.sni = "";
    CHECK_STR(pick(&f), "any");
    f.sni = "other.org";
    CHECK_STR(pick(&f), "any");
    /* without the catch-all chain nothing matches */
    n_chains = 3;
    CHECK_STR(pick(&f), "(none)");
}

static void test_port_then_no_backtracking(void)
{
    reset();
    mp_chain_match_t *m = add_chain("port-tls");
    m->destination_port = 8443;
    m->transport_protocol = "tls";
    add_chain("any");
    mp_conn_facts_t f = facts("127.0.0.1", 8443, "127.0.0.1", 5000);
    f.transport = "tls";
    CHECK_STR(pick(&f), "port-tls");
    /* The port picked the branch; its transport does not match and Envoy does not go back to
     * the chain without a port: no chain. */
    f.transport = "raw_buffer";
    CHECK_STR(pick(&f), "(none)");
    f.dst_port = 80;
    CHECK_STR(pick(&f), "any");
}

static void test_destination_ip(void)
{
    reset();
    set_range(add_chain("slash8"), 0, "10.0.0.0", 8);
    set_range(add_chain("slash24"), 0, "10.1.2.0", 24);
    set_range(add_chain("v6"), 0, "fd00::", 8);
    add_chain("any");
    mp_conn_facts_t f = facts("10.1.2.3", 80, "1.2.3.4", 1);
    CHECK_STR(pick(&f), "slash24");
    f = facts("10.9.9.9", 80, "1.2.3.4", 1);
    CHECK_STR(pick(&f), "slash8");
    f = facts("fd12::1", 80, "::1", 1);
    CHECK_STR(pick(&f), "v6");
    f = facts("192.168.0.1", 80, "1.2.3.4", 1);
    CHECK_STR(pick(&f), "any");
}

static void test_transport_and_alpn(void)
{
    reset();
    mp_chain_match_t *m = add_chain("tls-h2");
    m->transport_protocol = "tls";
    set_alpn(m, "h2", NULL);
    m = add_chain("tls-h1");
    m->transport_protocol = "tls";
    set_alpn(m, "http/1.1", NULL);
    m = add_chain("tls");
    m->transport_protocol = "tls";
    add_chain("plain");
    mp_conn_facts_t f = facts("127.0.0.1", 1, "127.0.0.1", 2);
    CHECK_STR(pick(&f), "plain");
    f.transport = "tls";
    CHECK_STR(pick(&f), "tls");
    const char *both[] = {"h2", "http/1.1"};
    f.alpn = both;
    f.n_alpn = 2;
    CHECK_STR(pick(&f), "tls-h2"); /* the client's first protocol some chain names */
    const char *rev[] = {"http/1.1", "h2"};
    f.alpn = rev;
    CHECK_STR(pick(&f), "tls-h1");
    const char *other[] = {"spdy/3"};
    f.alpn = other;
    f.n_alpn = 1;
    CHECK_STR(pick(&f), "tls");
}

static void test_sources(void)
{
    reset();
    set_range(add_chain("src-lo2"), 2, "127.0.0.2", 32);
    set_range(add_chain("src-lo"), 2, "127.0.0.0", 8);
    mp_chain_match_t *m = add_chain("src-port");
    set_range(m, 2, "127.0.0.0", 8);
    set_src_port(m, 4444);
    add_chain("any");
    mp_conn_facts_t f = facts("127.0.0.1", 80, "127.0.0.2", 1000);
    CHECK_STR(pick(&f), "src-lo2");
    f = facts("127.0.0.1", 80, "127.0.0.3", 1000);
    CHECK_STR(pick(&f), "src-lo");
    f = facts("127.0.0.1", 80, "127.0.0.3", 4444);
    CHECK_STR(pick(&f), "src-port");
    f = facts("127.0.0.1", 80, "10.0.0.1", 4444);
    CHECK_STR(pick(&f), "any");
}

static void test_source_type_and_direct(void)
{
    reset();
    add_chain("local")->source_type = MP_SOURCE_LOCAL;
    add_chain("external")->source_type = MP_SOURCE_EXTERNAL;
    mp_conn_facts_t f = facts("10.0.0.5", 80, "127.0.0.1", 1);
    CHECK_STR(pick(&f), "local");
    f = facts("10.0.0.5", 80, "10.0.0.5", 1); /* same IP as the destination */
    CHECK_STR(pick(&f), "local");
    f = facts("10.0.0.5", 80, "10.0.0.6", 1);
    CHECK_STR(pick(&f), "external");
    reset();
    set_range(add_chain("direct"), 1, "10.0.0.0", 8);
    set_range(add_chain("source"), 2, "10.0.0.0", 8);
    /* direct source IP comes before source IP */
    f = facts("1.1.1.1", 80, "10.0.0.6", 1);
    CHECK_STR(pick(&f), "direct");
}

static void test_listener_default_and_unique(void)
{
    reset();
    mp_chain_match_t *m = add_chain("p80");
    m->destination_port = 80;
    m = add_chain("p81");
    m->destination_port = 81;
    mp_filter_chain_t dflt = {.name = "default"};
    mp_listener_t l = {.chains = chains, .n_chains = n_chains, .default_chain = &dflt};
    mp_conn_facts_t f = facts("127.0.0.1", 82, "127.0.0.1", 1);
    CHECK_STR(mp_chain_match_listener(&l, &f)->name, "default");
    f.dst_port = 81;
    CHECK_STR(mp_chain_match_listener(&l, &f)->name, "p81");
    mp_err_t err = {{0}};
    CHECK(mp_chain_match_check_unique(chains, n_chains, &err) == 0);
    m = add_chain("p80-again");
    m->destination_port = 80;
    CHECK(mp_chain_match_check_unique(chains, n_chains, &err) == MP_ERROR);
    CHECK(strstr(err.msg, "same matching rules") != NULL);
    /* the order of a list does not make criteria different */
    reset();
    set_names(add_chain("ab"), "a.com", "b.com");
    set_names(add_chain("ba"), "b.com", "a.com");
    CHECK(mp_chain_match_check_unique(chains, n_chains, &err) == MP_ERROR);
    CHECK_INT(mp_chain_match_uses(&chains[0].match), MP_CHAIN_USES_TLS);
}

static void test_cidr(void)
{
    mp_cidr_t r;
    CHECK(mp_cidr_parse(&r, "10.1.2.3", 16) == 0);
    mp_cidr_t ip;
    mp_cidr_parse(&ip, "10.1.200.1", 32);
    CHECK(mp_cidr_contains(&r, &ip.ip));
    mp_cidr_parse(&ip, "10.2.0.1", 32);
    CHECK(!mp_cidr_contains(&r, &ip.ip));
    CHECK(mp_cidr_parse(&r, "10.0.0.0", 33) == MP_ERROR);
    CHECK(mp_cidr_parse(&r, "nope", 8) == MP_ERROR);
    CHECK(mp_cidr_parse(&r, "::", 0) == 0);
    mp_cidr_parse(&ip, "10.2.0.1", 32);
    CHECK(!mp_cidr_contains(&r, &ip.ip)); /* families differ */
    struct sockaddr_storage ss = {0};
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(8080);
    inet_pton(AF_INET6, "::ffff:127.0.0.2", &s6->sin6_addr);
    mp_ip_t got;
    CHECK_INT(mp_ip_from_sockaddr(&got, &ss), 8080);
    CHECK_INT(got.family, AF_INET);
    CHECK(got.b[0] == 127 && got.b[3] == 2);
}

/* ---- ClientHello ---- */

typedef struct bytes {
    uint8_t b[40000];
    size_t n;
} bytes_t;

static void put(bytes_t *o, const void *p, size_t n)
{
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void put16(bytes_t *o, size_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(o, x, 2);
}

static void put_ext(bytes_t *o, unsigned type, const bytes_t *data)
{
    put16(o, type);
    put16(o, data->n);
    put(o, data->b, data->n);
}

/* A ClientHello handshake message (header included). */
static void build_hello(bytes_t *msg, const char *sni, const char *const *alpn, int n_alpn,
                        size_t padding)
{
    static bytes_t body, exts, e;
    body.n = exts.n = 0;
    uint8_t rnd[34] = {3, 3};
    put(&body, rnd, 34);
    uint8_t sid[33] = {32};
    put(&body, sid, 33);
    uint8_t suites[] = {0, 4, 0x0a, 0x0a, 0x13, 0x01}; /* GREASE suite first */
    put(&body, suites, sizeof(suites));
    uint8_t comp[] = {1, 0};
    put(&body, comp, 2);
    e.n = 0;
    put_ext(&exts, 0x1a1a, &e); /* GREASE extension, empty */
    if (sni != NULL) {
        e.n = 0;
        put16(&e, strlen(sni) + 3);
        uint8_t t = 0;
        put(&e, &t, 1);
        put16(&e, strlen(sni));
        put(&e, sni, strlen(sni));
        put_ext(&exts, 0, &e);
    }
    if (n_alpn > 0) {
        static bytes_t list;
        list.n = 0;
        for (int i = 0; i < n_alpn; i++) {
            uint8_t l = (uint8_t)strlen(alpn[i]);
            put(&list, &l, 1);
            put(&list, alpn[i], l);
        }
        e.n = 0;
        put16(&e, list.n);
        put(&e, list.b, list.n);
        put_ext(&exts, 16, &e);
    }
    if (padding > 0) {
        e.n = 0;
        memset(e.b, 0, padding);
        e.n = padding;
        put_ext(&exts, 21, &e);
    }
    put16(&body, exts.n);
    put(&body, exts.b, exts.n);
    msg->n = 0;
    uint8_t hdr[4] = {1, (uint8_t)(body.n >> 16), (uint8_t)(body.n >> 8), (uint8_t)body.n};
    put(msg, hdr, 4);
    put(msg, body.b, body.n);
}

/* Wraps msg into handshake records of at most frag bytes each. */
static void records(bytes_t *out, const bytes_t *msg, size_t frag)
{
    out->n = 0;
    for (size_t off = 0; off < msg->n; off += frag) {
        size_t k = msg->n - off < frag ? msg->n - off : frag;
        uint8_t hdr[3] = {22, 3, 1};
        put(out, hdr, 3);
        put16(out, k);
        put(out, msg->b + off, k);
    }
}

static void test_client_hello(void)
{
    static bytes_t msg, wire;
    const char *alpn[] = {"h2", "http/1.1"};
    build_hello(&msg, "WWW.Example.com", alpn, 2, 0);
    records(&wire, &msg, 16384);
    mp_client_hello_t ch;
    CHECK(mp_inspect_client_hello(wire.b, wire.n, &ch) == MP_INSPECT_DONE);
    CHECK_STR(ch.sni, "www.example.com");
    CHECK_INT(ch.n_alpn, 2);
    CHECK_STR(ch.alpn[0], "h2");
    CHECK_STR(ch.alpn[1], "http/1.1");
    /* every prefix is "need more" */
    for (size_t n = 0; n < wire.n; n++)
        if (mp_inspect_client_hello(wire.b, n, &ch) != MP_INSPECT_NEED_MORE) {
            CHECK(!"prefix not NEED_MORE");
            break;
        }
    /* fragmented into 7-byte records */
    records(&wire, &msg, 7);
    CHECK(mp_inspect_client_hello(wire.b, wire.n, &ch) == MP_INSPECT_DONE);
    CHECK_STR(ch.sni, "www.example.com");
    CHECK(mp_inspect_client_hello(wire.b, wire.n - 3, &ch) == MP_INSPECT_NEED_MORE);
    /* no SNI, no ALPN */
    build_hello(&msg, NULL, NULL, 0, 0);
    records(&wire, &msg, 16384);
    CHECK(mp_inspect_client_hello(wire.b, wire.n, &ch) == MP_INSPECT_DONE);
    CHECK_STR(ch.sni, "");
    CHECK_INT(ch.n_alpn, 0);
    /* a hello over two records near the cap, then one over the cap */
    build_hello(&msg, "big.example", NULL, 0, 16000);
    records(&wire, &msg, 10000);
    CHECK(mp_inspect_client_hello(wire.b, wire.n, &ch) == MP_INSPECT_DONE);
    CHECK_STR(ch.sni, "big.example");
    build_hello(&msg, "big.example", NULL, 0, 17000);
    records(&wire, &msg, 16384);
    CHECK(mp_inspect_client_hello(wire.b, wire.n, &ch) == MP_INSPECT_NO);
    CHECK(ch.too_large);
}

static void test_client_hello_hostile(void)
{
    mp_client_hello_t ch;
    const uint8_t http[] = "GET / HTTP/1.1\r\n";
    CHECK(mp_inspect_client_hello(http, sizeof(http) - 1, &ch) == MP_INSPECT_NO);
    const uint8_t alert[] = {21, 3, 1, 0, 2, 2, 40};
    CHECK(mp_inspect_client_hello(alert, sizeof(alert), &ch) == MP_INSPECT_NO);
    const uint8_t zero_len[] = {22, 3, 1, 0, 0};
    CHECK(mp_inspect_client_hello(zero_len, sizeof(zero_len), &ch) == MP_INSPECT_NO);
    const uint8_t huge_rec[] = {22, 3, 1, 0xff, 0xff};
    CHECK(mp_inspect_client_hello(huge_rec, sizeof(huge_rec), &ch) == MP_INSPECT_NO);
    const uint8_t server_hello[] = {22, 3, 3, 0, 4, 2, 0, 0, 0};
    CHECK(mp_inspect_client_hello(server_hello, sizeof(server_hello), &ch) == MP_INSPECT_NO);
    const uint8_t huge_msg[] = {22, 3, 3, 0, 4, 1, 0xff, 0xff, 0xff};
    CHECK(mp_inspect_client_hello(huge_msg, sizeof(huge_msg), &ch) == MP_INSPECT_NO);
    CHECK(ch.too_large);
    CHECK(mp_inspect_client_hello(server_hello, sizeof(server_hello), &ch) == MP_INSPECT_NO);
    CHECK(!ch.too_large);
    /* lengths inside the hello that run past its end */
    static bytes_t msg, wire;
    build_hello(&msg, "a.example", NULL, 0, 0);
    msg.b[4 + 34] = 200; /* session id length */
    records(&wire, &msg, 16384);
    CHECK(mp_inspect_client_hello(wire.b, wire.n, &ch) == MP_INSPECT_NO);
    build_hello(&msg, "a.example", NULL, 0, 0);
    size_t ext_len_at = 4 + 34 + 33 + 6 + 2;
    msg.b[ext_len_at] = 0x7f; /* extensions length */
    records(&wire, &msg, 16384);
    CHECK(mp_inspect_client_hello(wire.b, wire.n, &ch) == MP_INSPECT_NO);
}

static void test_http_sniff(void)
{
    const char *p = NULL;
    const char *pre = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    CHECK(mp_inspect_http((const uint8_t *)pre, strlen(pre), &p) == MP_INSPECT_DONE);
    CHECK_STR(p, "h2c");
    CHECK(mp_inspect_http((const uint8_t *)pre, 10, &p) == MP_INSPECT_NEED_MORE);
    const char *h11 = "GET /x HTTP/1.1\r\nHost: a\r\n";
    CHECK(mp_inspect_http((const uint8_t *)h11, strlen(h11), &p) == MP_INSPECT_DONE);
    CHECK_STR(p, "http/1.1");
    const char *h10 = "POST / HTTP/1.0\r\n";
    CHECK(mp_inspect_http((const uint8_t *)h10, strlen(h10), &p) == MP_INSPECT_DONE);
    CHECK_STR(p, "http/1.0");
    CHECK(mp_inspect_http((const uint8_t *)h11, 8, &p) == MP_INSPECT_NEED_MORE);
    CHECK(mp_inspect_http((const uint8_t *)"GE", 2, &p) == MP_INSPECT_NEED_MORE);
    const char *bad = "\x16\x03\x01\x00";
    CHECK(mp_inspect_http((const uint8_t *)bad, 4, &p) == MP_INSPECT_NO);
    const char *h2v = "GET / HTTP/2.0\r\n";
    CHECK(mp_inspect_http((const uint8_t *)h2v, strlen(h2v), &p) == MP_INSPECT_NO);
    const char *ssh = "SSH-2.0-OpenSSH\r\n";
    CHECK(mp_inspect_http((const uint8_t *)ssh, strlen(ssh), &p) == MP_INSPECT_NO);
}

int main(void)
{
    RUN(test_server_names);
    RUN(test_port_then_no_backtracking);
    RUN(test_destination_ip);
    RUN(test_transport_and_alpn);
    RUN(test_sources);
    RUN(test_source_type_and_direct);
    RUN(test_listener_default_and_unique);
    RUN(test_cidr);
    RUN(test_client_hello);
    RUN(test_client_hello_hostile);
    RUN(test_http_sniff);
    UNIT_DONE();
}
