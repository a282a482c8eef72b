/* Filter chain matching, as Envoy's FilterChainManagerImpl decides it: a tree walked criterion by
 * criterion, written here as pruning a candidate set level by level.  At each level every chain
 * still in the running gets a score (-1: names values and none matches; 0: leaves the criterion
 * empty; above 0: how specific its matching value is) and only the best scorers go on.  This is
 * the same as Envoy's tree: the most specific branch is taken, and a later level that matches
 * nothing on that branch does not fall back to a less specific one. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/chain_match.h"

#define N_LEVELS 9
#define SCORE_EXACT_NAME 100000 /* above any wildcard's suffix length (names are < 256) */

typedef int (*score_fn)(const mp_chain_match_t *m, const mp_conn_facts_t *f);

uint16_t mp_ip_from_sockaddr(mp_ip_t *ip, const struct sockaddr_storage *ss)
{
    memset(ip, 0, sizeof(*ip));
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        ip->family = AF_INET;
        memcpy(ip->b, &s4->sin_addr, 4);
        return ntohs(s4->sin_port);
    }
    if (ss->ss_family != AF_INET6)
        return 0;
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    /* A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; ranges are written as IPv4. */
    if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        ip->family = AF_INET;
        memcpy(ip->b, &s6->sin6_addr.s6_addr[12], 4);
    } else {
        ip->family = AF_INET6;
        memcpy(ip->b, &s6->sin6_addr, 16);
    }
    return ntohs(s6->sin6_port);
}

int mp_cidr_parse(mp_cidr_t *r, const char *prefix, uint32_t len)
{
    memset(r, 0, sizeof(*r));
    if (inet_pton(AF_INET, prefix, r->ip.b) == 1)
        r->ip.family = AF_INET;
    else if (inet_pton(AF_INET6, prefix, r->ip.b) == 1)
        r->ip.family = AF_INET6;
    else
        return MP_ERROR;
    uint32_t bits = r->ip.family == AF_INET ? 32 : 128;
    if (len > bits)
        return MP_ERROR;
    r->len = (uint8_t)len;
    for (uint32_t i = len; i < bits; i++)
        r->ip.b[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
    return 0;
}

bool mp_cidr_contains(const mp_cidr_t *r, const mp_ip_t *ip)
{
    if (ip->family != r->ip.family)
        return false;
    uint32_t full = r->len / 8, rest = r->len % 8;
    if (memcmp(r->ip.b, ip->b, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (r->ip.b[full] & mask) == (ip->b[full] & mask);
}

/* Longest matching range + 1 (a /0 still beats an empty list). */
static int score_ranges(const mp_cidr_t *r, uint32_t n, const mp_ip_t *ip)
{
    if (n == 0)
        return 0;
    int best = -1;
    for (uint32_t i = 0; i < n; i++)
        if (mp_cidr_contains(&r[i], ip) && r[i].len + 1 > best)
            best = r[i].len + 1;
    return best;
}

static int score_dst_port(const mp_chain_match_t *m, const mp_conn_facts_t *f)
{
    if (m->destination_port == 0)
        return 0;
    return m->destination_port == f->dst_port ? 1 : -1;
}

static int score_dst_ip(const mp_chain_match_t *m, const mp_conn_facts_t *f)
{
    return score_ranges(m->prefix_ranges, m->n_prefix_ranges, &f->dst_ip);
}

/* Exact beats any wildcard; among wildcards the longest suffix wins ("*.a.example.com" over
 * "*.example.com").  A wildcard covers any number of labels, never the bare suffix. */
static int score_name(const char *name, const char *sni, size_t sni_len)
{
    if (name[0] != '*')
        return strcmp(name, sni) == 0 ? SCORE_EXACT_NAME : -1;
    const char *suffix = name + 1; /* ".example.com" */
    size_t n = strlen(suffix);
    if (sni_len <= n || strcmp(sni + sni_len - n, suffix) != 0)
        return -1;
    return (int)n;
}

static int score_server_names(const mp_chain_match_t *m, const mp_conn_facts_t *f)
{
    if (m->n_server_names == 0)
        return 0;
    const char *sni = f->sni != NULL ? f->sni : "";
    size_t len = strlen(sni);
    int best = -1;
    for (uint32_t i = 0; len > 0 && i < m->n_server_names; i++) {
        int s = score_name(m->server_names[i], sni, len);
        if (s > best)
            best = s;
    }
    return best;
}

static int score_transport(const mp_chain_match_t *m, const mp_conn_facts_t *f)
{
    if (m->transport_protocol == NULL)
        return 0;
    const char *t = f->transport != NULL ? f->transport : "raw_buffer";
    return strcmp(m->transport_protocol, t) == 0 ? 1 : -1;
}

/* The client's first protocol that some chain names wins, as Envoy walks the client's list in
 * order: earlier in the client's list scores higher. */
static int score_alpn(const mp_chain_match_t *m, const mp_conn_facts_t *f)
{
    if (m->n_application_protocols == 0)
        return 0;
    for (uint32_t i = 0; i < f->n_alpn; i++)
        for (uint32_t j = 0; j < m->n_application_protocols; j++)
            if (strcmp(f->alpn[i], m->application_protocols[j]) == 0)
                return (int)(f->n_alpn - i);
    return -1;
}

static int score_direct_src_ip(const mp_chain_match_t *m, const mp_conn_facts_t *f)
{
    return score_ranges(m->direct_source_prefix_ranges, m->n_direct_source_prefix_ranges,
                        &f->direct_src_ip);
}

static bool is_local_source(const mp_conn_facts_t *f)
{
    static const uint8_t v6_loopback[16] = {[15] = 1};
    const mp_ip_t *s = &f->src_ip;
    if (s->family == AF_INET && s->b[0] == 127)
        return true;
    if (s->family == AF_INET6 && memcmp(s->b, v6_loopback, 16) == 0)
        return true;
    return s->family != 0 && s->family == f->dst_ip.family &&
           memcmp(s->b, f->dst_ip.b, s->family == AF_INET ? 4 : 16) == 0;
}

static int score_source_type(const mp_chain_match_t *m, const mp_conn_facts_t *f)
{
    if (m->source_type == MP_SOURCE_ANY)
        return 0;
    bool local = is_local_source(f);
    return (m->source_type == MP_SOURCE_LOCAL) == local ? 1 : -1;
}

static int score_src_ip(const mp_chain_match_t *m, const mp_conn_facts_t *f)
{
    return score_ranges(m->source_prefix_ranges, m->n_source_prefix_ranges, &f->src_ip);
}

static int score_src_port(const mp_chain_match_t *m, const mp_conn_facts_t *f)
{
    if (m->n_source_ports == 0)
        return 0;
    for (uint32_t i = 0; i < m->n_source_ports; i++)
        if (m->source_ports[i] == f->src_port)
            return 1;
    return -1;
}

static const score_fn levels[N_LEVELS] = {
    score_dst_port,      score_dst_ip,      score_server_names, score_transport, score_alpn,
    score_direct_src_ip, score_source_type, score_src_ip,       score_src_port,
};

/* Keeps only the best-scoring candidates of one level; returns how many remain. */
static uint32_t prune(const mp_filter_chain_t *chains, uint32_t *cand, uint32_t n, score_fn fn,
                      const mp_conn_facts_t *f)
{
    int best = -1;
    int *scores = mp_xmalloc(n * sizeof(*scores));
    for (uint32_t i = 0; i < n; i++) {
        scores[i] = fn(&chains[cand[i]].match, f);
        if (scores[i] > best)
            best = scores[i];
    }
    uint32_t kept = 0;
    for (uint32_t i = 0; best >= 0 && i < n; i++)
        if (scores[i] == best)
            cand[kept++] = cand[i];
    free(scores);
    return kept;
}

const mp_filter_chain_t *mp_chain_match_find(const mp_filter_chain_t *chains, uint32_t n,
                                             const mp_conn_facts_t *f)
{
    if (n == 0)
        return NULL;
    uint32_t *cand = mp_xmalloc(n * sizeof(*cand));
    for (uint32_t i = 0; i < n; i++)
        cand[i] = i;
    uint32_t left = n;
    for (int lv = 0; lv < N_LEVELS && left > 0; lv++)
        left = prune(chains, cand, left, levels[lv], f);
    /* Identical criteria are refused at load, so one chain is left; the first is Envoy's pick
     * should that ever not hold. */
    const mp_filter_chain_t *fc = left > 0 ? &chains[cand[0]] : NULL;
    free(cand);
    return fc;
}

const mp_filter_chain_t *mp_chain_match_listener(const mp_listener_t *l, const mp_conn_facts_t *f)
{
    const mp_filter_chain_t *fc = mp_chain_match_find(l->chains, l->n_chains, f);
    return fc != NULL ? fc : l->default_chain;
}

unsigned mp_chain_match_uses(const mp_chain_match_t *m)
{
    unsigned u = 0;
    if (m->destination_port != 0 || m->n_prefix_ranges > 0 ||
        m->n_direct_source_prefix_ranges > 0 || m->source_type != MP_SOURCE_ANY ||
        m->n_source_prefix_ranges > 0 || m->n_source_ports > 0)
        u |= MP_CHAIN_USES_ADDRESSES;
    if (m->n_server_names > 0 || m->transport_protocol != NULL)
        u |= MP_CHAIN_USES_TLS;
    if (m->n_application_protocols > 0)
        u |= MP_CHAIN_USES_ALPN;
    return u;
}

/* ---- duplicate criteria (load time) ---- */

static bool cidr_in(const mp_cidr_t *r, const mp_cidr_t *set, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (set[i].len == r->len && set[i].ip.family == r->ip.family &&
            memcmp(set[i].ip.b, r->ip.b, 16) == 0)
            return true;
    return false;
}

/* Set equality: the order of a list's values does not change what it matches. */
static bool same_cidrs(const mp_cidr_t *a, uint32_t na, const mp_cidr_t *b, uint32_t nb)
{
    for (uint32_t i = 0; i < na; i++)
        if (!cidr_in(&a[i], b, nb))
            return false;
    for (uint32_t i = 0; i < nb; i++)
        if (!cidr_in(&b[i], a, na))
            return false;
    return true;
}

static bool str_in(const char *s, char *const *set, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(set[i], s) == 0)
            return true;
    return false;
}

static bool same_strs(char *const *a, uint32_t na, char *const *b, uint32_t nb)
{
    for (uint32_t i = 0; i < na; i++)
        if (!str_in(a[i], b, nb))
            return false;
    for (uint32_t i = 0; i < nb; i++)
        if (!str_in(b[i], a, na))
            return false;
    return true;
}

static bool u32_in(uint32_t v, const uint32_t *set, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (set[i] == v)
            return true;
    return false;
}

static bool same_ports(const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb)
{
    for (uint32_t i = 0; i < na; i++)
        if (!u32_in(a[i], b, nb))
            return false;
    for (uint32_t i = 0; i < nb; i++)
        if (!u32_in(b[i], a, na))
            return false;
    return true;
}

static bool same_match(const mp_chain_match_t *a, const mp_chain_match_t *b)
{
    const char *ta = a->transport_protocol ? a->transport_protocol : "";
    const char *tb = b->transport_protocol ? b->transport_protocol : "";
    return a->destination_port == b->destination_port && a->source_type == b->source_type &&
           strcmp(ta, tb) == 0 &&
           same_cidrs(a->prefix_ranges, a->n_prefix_ranges, b->prefix_ranges, b->n_prefix_ranges) &&
           same_strs(a->server_names, a->n_server_names, b->server_names, b->n_server_names) &&
           same_strs(a->application_protocols, a->n_application_protocols, b->application_protocols,
                     b->n_application_protocols) &&
           same_cidrs(a->direct_source_prefix_ranges, a->n_direct_source_prefix_ranges,
                      b->direct_source_prefix_ranges, b->n_direct_source_prefix_ranges) &&
           same_cidrs(a->source_prefix_ranges, a->n_source_prefix_ranges, b->source_prefix_ranges,
                      b->n_source_prefix_ranges) &&
           same_ports(a->source_ports, a->n_source_ports, b->source_ports, b->n_source_ports);
}

int mp_chain_match_check_unique(const mp_filter_chain_t *chains, uint32_t n, mp_err_t *err)
{
    for (uint32_t i = 1; i < n; i++)
        for (uint32_t j = 0; j < i; j++)
            if (same_match(&chains[i].match, &chains[j].match))
                return mp_err_set(err,
                                  "filter_chains[%u]: multiple filter chains with the same "
                                  "matching rules are defined (filter_chains[%u] \"%s\" and "
                                  "filter_chains[%u] \"%s\")",
                                  i, j, chains[j].name, i, chains[i].name);
    return 0;
}
