/* STRICT_DNS and LOGICAL_DNS host sets, resolved by c-ares on the main thread's libev loop
 * (include/magpie/dns.h).
 *
 * c-ares owns its sockets; it tells us which to watch through the socket-state callback and we
 * mirror that with one ev_io each, plus one ev_timer set from ares_timeout() after every call
 * into c-ares.  Each endpoint name is a target with its own refresh timer, so one slow or failing
 * name never delays another, and each keeps its last good answer. */
#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ares.h>

#include "magpie/dns.h"
#include "magpie/health_check.h"
#include "magpie/lb.h"
#include "magpie/log.h"

#define DEFAULT_MAX_PER_NAME 256
#define DEFAULT_REFRESH_MS 5000
#define MAX_BACKOFF_MS 30000

typedef struct dns_io {
    ev_io w;
    struct mp_dns *d;
    struct dns_io *next;
} dns_io_t;

/* One mp_dns_watch_clusters call: its callback runs when `pending` reaches zero. */
typedef struct dns_group {
    ev_timer kick; /* fires once pending is zero, so the callback always runs from the loop */
    struct mp_dns *d;
    uint32_t pending; /* clusters without a first outcome yet */
    mp_dns_initial_done_cb cb;
    void *ctx;
    struct dns_group *next;
} dns_group_t;

struct dns_cluster;

/* One endpoint name. */
typedef struct dns_target {
    struct dns_cluster *dc;
    uint32_t ep; /* index in the cluster's endpoints */
    ev_timer timer;
    char *name;    /* as asked, for hostnames and logs */
    uint8_t phase; /* 0: first family, 1: fallback family (AUTO, V4_PREFERRED) */
    bool inflight, answered;
    uint32_t failures; /* consecutive, for back-off */
    mp_addr_t *addrs;  /* last good answer, ports set */
    uint32_t n_addrs;
    uint64_t ttl_ms; /* smallest TTL of that answer; 0 unknown */
} dns_target_t;

/* A watched cluster.  After unwatch, c is NULL and the struct lingers (a zombie, off the list)
 * until c-ares has answered the queries it still has in flight, because they point at its
 * targets. */
typedef struct dns_cluster {
    struct mp_dns *d;
    mp_cluster_t *c;
    dns_group_t *g; /* until initialized */
    dns_target_t *t;
    uint32_t n_t;
    uint32_t unanswered; /* targets without a first outcome */
    uint32_t inflight;   /* queries c-ares holds for our targets */
    struct dns_cluster *next;
} dns_cluster_t;

struct mp_dns {
    struct ev_loop *loop;
    ares_channel ch;
    ev_timer timeout;
    dns_io_t *ios;
    dns_cluster_t *clusters;
    dns_group_t *groups;
    uint32_t max_per_name;
    bool destroying;
    mp_dns_stats_hooks_t hooks;
};

static void start_query(dns_target_t *t);

/* ---- c-ares <-> libev ---- */

static void update_timeout(mp_dns_t *d)
{
    struct timeval tv;
    ev_timer_stop(d->loop, &d->timeout);
    if (d->destroying || ares_timeout(d->ch, NULL, &tv) == NULL)
        return;
    ev_timer_set(&d->timeout, (double)tv.tv_sec + (double)tv.tv_usec / 1e6, 0.);
    ev_timer_start(d->loop, &d->timeout);
}

static void on_ares_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    mp_dns_t *d = w->data;
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    update_timeout(d);
}

static void on_ares_io(struct ev_loop *loop, ev_io *w, int revents)
{
    /* ares_process_fd may close this socket, and the state callback then frees w. */
    mp_dns_t *d = ((dns_io_t *)w)->d;
    int fd = w->fd;
    ares_process_fd(d->ch, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    update_timeout(d);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    mp_dns_t *d = data;
    dns_io_t **pp = &d->ios;
    while (*pp != NULL && (*pp)->w.fd != fd)
        pp = &(*pp)->next;
    dns_io_t *io = *pp;
    if (io != NULL)
        ev_io_stop(d->loop, &io->w);
    if (!readable && !writable) {
        if (io != NULL) {
            *pp = io->next;
            free(io);
        }
        return;
    }
    if (io == NULL) {
        io = mp_xcalloc(1, sizeof(*io));
        io->d = d;
        io->next = d->ios;
        d->ios = io;
        ev_init(&io->w, on_ares_io);
    }
    ev_io_set(&io->w, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    ev_io_start(d->loop, &io->w);
}

/* ---- lifecycle ---- */

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_status;

static void do_library_init(void)
{
    ares_init_status = ares_library_init(ARES_LIB_INIT_ALL);
}

static int init_channel(mp_dns_t *d, const mp_dns_opts_t *o, mp_err_t *err)
{
    struct ares_options ao;
    memset(&ao, 0, sizeof(ao));
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_LOOKUPS;
    ao.sock_state_cb = on_sock_state;
    ao.sock_state_cb_data = d;
    ao.lookups = (char *)"fb"; /* /etc/hosts first, then DNS, whatever resolv.conf says */
    if (o != NULL && o->timeout_ms) {
        mask |= ARES_OPT_TIMEOUTMS;
        ao.timeout = (int)o->timeout_ms;
    }
    if (o != NULL && o->tries) {
        mask |= ARES_OPT_TRIES;
        ao.tries = (int)o->tries;
    }
    int rc = ares_init_options(&d->ch, &ao, mask);
    if (rc != ARES_SUCCESS)
        return mp_err_set(err, "dns: c-ares init: %s", ares_strerror(rc));
    if (o != NULL && o->servers != NULL &&
        (rc = ares_set_servers_ports_csv(d->ch, o->servers)) != ARES_SUCCESS) {
        ares_destroy(d->ch);
        return mp_err_set(err, "dns: servers \"%s\": %s", o->servers, ares_strerror(rc));
    }
    return 0;
}

mp_dns_t *mp_dns_new(struct ev_loop *loop, const mp_dns_opts_t *opts, mp_err_t *err)
{
    pthread_once(&ares_once, do_library_init);
    if (ares_init_status != ARES_SUCCESS) {
        mp_err_set(err, "dns: c-ares library init: %s", ares_strerror(ares_init_status));
        return NULL;
    }
    mp_dns_t *d = mp_xcalloc(1, sizeof(*d));
    d->loop = loop;
    d->max_per_name = opts && opts->max_per_name ? opts->max_per_name : DEFAULT_MAX_PER_NAME;
    ev_init(&d->timeout, on_ares_timeout);
    d->timeout.data = d;
    if (init_channel(d, opts, err) != 0) {
        free(d);
        return NULL;
    }
    return d;
}

void mp_dns_set_stats_hooks(mp_dns_t *d, const mp_dns_stats_hooks_t *hooks)
{
    memset(&d->hooks, 0, sizeof(d->hooks));
    if (hooks != NULL)
        d->hooks = *hooks;
}

static void free_cluster(dns_cluster_t *dc)
{
    for (uint32_t i = 0; i < dc->n_t; i++) {
        ev_timer_stop(dc->d->loop, &dc->t[i].timer);
        free(dc->t[i].addrs);
        free(dc->t[i].name);
    }
    free(dc->t);
    free(dc);
}

void mp_dns_free(mp_dns_t *d)
{
    if (d == NULL)
        return;
    d->destroying = true;
    /* Answers still pending come back now with ARES_EDESTRUCTION and free any zombie. */
    ares_destroy(d->ch);
    ev_timer_stop(d->loop, &d->timeout);
    while (d->ios != NULL) {
        dns_io_t *io = d->ios;
        d->ios = io->next;
        ev_io_stop(d->loop, &io->w);
        free(io);
    }
    while (d->clusters != NULL) {
        dns_cluster_t *dc = d->clusters;
        d->clusters = dc->next;
        free_cluster(dc);
    }
    while (d->groups != NULL) {
        dns_group_t *g = d->groups;
        d->groups = g->next;
        ev_timer_stop(d->loop, &g->kick);
        free(g);
    }
    free(d);
}

/* ---- initialization tracking ---- */

static void on_group_kick(struct ev_loop *loop, ev_timer *w, int revents)
{
    dns_group_t *g = w->data;
    mp_dns_t *d = g->d;
    dns_group_t **pp = &d->groups;
    while (*pp != g)
        pp = &(*pp)->next;
    *pp = g->next;
    mp_dns_initial_done_cb cb = g->cb;
    void *ctx = g->ctx;
    free(g);
    if (cb != NULL)
        cb(ctx);
}

static void group_one_done(dns_group_t *g)
{
    if (--g->pending == 0)
        ev_timer_start(g->d->loop, &g->kick);
}

static void cluster_initialized(dns_cluster_t *dc)
{
    if (dc->g == NULL)
        return;
    group_one_done(dc->g);
    dc->g = NULL;
}

static void target_answered(dns_target_t *t)
{
    if (t->answered)
        return;
    t->answered = true;
    if (--t->dc->unanswered == 0)
        cluster_initialized(t->dc);
}

/* ---- host sets ---- */

static void stat_inc(mp_dns_t *d, mp_stat_id_t id)
{
    if (d->hooks.inc != NULL && id != 0)
        d->hooks.inc(id);
}

static void stat_set(mp_dns_t *d, mp_stat_id_t id, int64_t v)
{
    if (d->hooks.gauge_set != NULL && id != 0)
        d->hooks.gauge_set(id, v);
}

static mp_hostset_t *build_set(const dns_cluster_t *dc)
{
    bool logical = dc->c->type == MP_CLUSTER_LOGICAL_DNS;
    uint32_t n = 0;
    for (uint32_t i = 0; i < dc->n_t; i++)
        n += dc->t[i].n_addrs;
    if (logical)
        n = MP_MIN(n, 1);
    mp_hostset_t *hs = mp_hostset_new(n);
    uint32_t k = 0;
    for (uint32_t i = 0; i < dc->n_t && k < n; i++) {
        const dns_target_t *t = &dc->t[i];
        const mp_endpoint_spec_t *ep = &dc->c->endpoints[t->ep];
        for (uint32_t j = 0; j < t->n_addrs && k < n; j++, k++) {
            hs->hosts[k].addr = t->addrs[j];
            hs->hosts[k].hostname = mp_xstrdup(t->name);
            mp_host_from_spec(&hs->hosts[k], ep);
        }
    }
    mp_hostset_finish(hs);
    return hs;
}

static bool same_hosts(const mp_hostset_t *a, const mp_hostset_t *b)
{
    if (a == NULL || b == NULL || a->n != b->n)
        return false;
    for (uint32_t i = 0; i < a->n; i++) {
        const mp_host_t *x = &a->hosts[i], *y = &b->hosts[i];
        if (x->addr.len != y->addr.len || memcmp(&x->addr.ss, &y->addr.ss, x->addr.len) != 0 ||
            x->weight != y->weight || x->priority != y->priority || x->locality != y->locality ||
            x->locality_weight != y->locality_weight || x->eds_health != y->eds_health ||
            (x->hostname == NULL) != (y->hostname == NULL) ||
            (x->hostname && strcmp(x->hostname, y->hostname) != 0))
            return false;
    }
    return true;
}

/* Publishes the union of the targets' answers unless it equals the current set: republishing an
 * identical set would reset every worker's balancer state for nothing. */
static void publish_cluster(dns_cluster_t *dc)
{
    mp_hostset_t *hs = build_set(dc);
    /* Only the main thread publishes, so the current set cannot be freed while we compare. */
    mp_hostset_t *cur = atomic_load_explicit(&dc->c->hosts, memory_order_acquire);
    if (same_hosts(hs, cur)) {
        mp_hostset_release(hs);
        return;
    }
    mp_log_debug("dns: cluster %s now has %u hosts", dc->c->name, hs->n);
    /* a host that stays keeps its health and ejection state; a new one waits for its first
     * active health check, if the cluster has any */
    mp_hostset_adopt_health_flags(hs, cur, mp_hc_initial_flags(dc->c));
    stat_set(dc->d, dc->c->stats.membership_total, hs->n);
    stat_set(dc->d, dc->c->stats.membership_healthy, mp_hostset_count_usable(hs));
    mp_cluster_hosts_publish(dc->c, hs);
}

/* ---- answers ---- */

static int cmp_addr(const void *pa, const void *pb)
{
    const mp_addr_t *a = pa, *b = pb;
    if (a->ss.ss_family != b->ss.ss_family)
        return a->ss.ss_family == AF_INET ? -1 : 1;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return memcmp(&a->ss, &b->ss, a->len);
}

/* Copies the answer's addresses with the endpoint's port.  STRICT_DNS sorts and de-duplicates
 * them, because servers rotate record order and an unchanged set must compare equal; LOGICAL_DNS
 * keeps the server's order since it uses the first address. */
static uint32_t take_addrs(dns_target_t *t, const struct ares_addrinfo *res, int family)
{
    mp_dns_t *d = t->dc->d;
    uint16_t port = t->dc->c->endpoints[t->ep].port;
    uint32_t cap = 0;
    for (const struct ares_addrinfo_node *ai = res ? res->nodes : NULL; ai != NULL;
         ai = ai->ai_next)
        cap++;
    cap = MP_MIN(cap, d->max_per_name);
    if (cap == 0)
        return 0;
    mp_addr_t *out = mp_xcalloc(cap, sizeof(*out));
    uint32_t n = 0;
    uint64_t ttl = 0;
    for (const struct ares_addrinfo_node *ai = res ? res->nodes : NULL; ai != NULL && n < cap;
         ai = ai->ai_next) {
        if ((family != AF_UNSPEC && ai->ai_family != family) || ai->ai_addrlen > sizeof(out->ss) ||
            (ai->ai_family != AF_INET && ai->ai_family != AF_INET6))
            continue;
        mp_addr_t *a = &out[n++];
        memcpy(&a->ss, ai->ai_addr, ai->ai_addrlen);
        a->len = ai->ai_addrlen;
        if (ai->ai_family == AF_INET)
            ((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
        else
            ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
        mp_addr_format(a);
        if (ai->ai_ttl > 0 && (ttl == 0 || (uint64_t)ai->ai_ttl * 1000 < ttl))
            ttl = (uint64_t)ai->ai_ttl * 1000;
    }
    if (n == 0) {
        free(out);
        return 0;
    }
    if (t->dc->c->type == MP_CLUSTER_STRICT_DNS) {
        qsort(out, n, sizeof(*out), cmp_addr);
        uint32_t u = 1;
        for (uint32_t i = 1; i < n; i++)
            if (cmp_addr(&out[i], &out[u - 1]) != 0)
                out[u++] = out[i];
        n = u;
    }
    free(t->addrs);
    t->addrs = out;
    t->n_addrs = n;
    t->ttl_ms = ttl;
    return n;
}

/* The address families to ask, in order (Envoy's DnsLookupFamily). */
static int family_for(mp_dns_family_t f, uint8_t phase)
{
    switch (f) {
    case MP_DNS_V4_ONLY:
        return phase == 0 ? AF_INET : -1;
    case MP_DNS_V6_ONLY:
        return phase == 0 ? AF_INET6 : -1;
    case MP_DNS_V4_PREFERRED:
        return phase == 0 ? AF_INET : phase == 1 ? AF_INET6 : -1;
    case MP_DNS_ALL:
        return phase == 0 ? AF_UNSPEC : -1;
    case MP_DNS_AUTO:
    default:
        return phase == 0 ? AF_INET6 : phase == 1 ? AF_INET : -1;
    }
}

static uint64_t refresh_ms(const mp_cluster_t *c)
{
    return c->dns_refresh_rate_ms ? c->dns_refresh_rate_ms : DEFAULT_REFRESH_MS;
}

/* Up to a tenth more, so that targets created together drift apart instead of querying in
 * lockstep forever. */
static void schedule(dns_target_t *t, uint64_t ms)
{
    ms += ms >= 10 ? mp_random() % (ms / 10) : 0;
    ev_timer_stop(t->dc->d->loop, &t->timer);
    ev_timer_set(&t->timer, (double)ms / 1000.0, 0.);
    ev_timer_start(t->dc->d->loop, &t->timer);
}

static void on_success(dns_target_t *t)
{
    dns_cluster_t *dc = t->dc;
    uint64_t ms = refresh_ms(dc->c);
    if (dc->c->respect_dns_ttl && t->ttl_ms > 0)
        ms = MP_MIN(ms, t->ttl_ms);
    t->failures = 0;
    stat_inc(dc->d, dc->c->stats.update_success);
    publish_cluster(dc);
    schedule(t, ms);
    target_answered(t);
}

/* The previous answer stays in use; retries start at min(rate, 1 s) and double up to
 * max(rate, 30 s). */
static void on_failure(dns_target_t *t, int status)
{
    dns_cluster_t *dc = t->dc;
    uint64_t rate = refresh_ms(dc->c);
    uint64_t ms = MP_MIN(rate, 1000) << MP_MIN(t->failures, 16);
    ms = MP_MIN(ms, MP_MAX(rate, MAX_BACKOFF_MS));
    t->failures++;
    mp_log_warn("dns: cluster %s: resolving %s failed (%s); keeping %u addresses, retry in %llu ms",
                dc->c->name, t->name, ares_strerror(status), t->n_addrs, (unsigned long long)ms);
    stat_inc(dc->d, dc->c->stats.update_failure);
    schedule(t, ms);
    target_answered(t);
}

static void maybe_free_zombie(dns_cluster_t *dc)
{
    if (dc->c == NULL && dc->inflight == 0)
        free_cluster(dc);
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    dns_target_t *t = arg;
    dns_cluster_t *dc = t->dc;
    t->inflight = false;
    dc->inflight--;
    int family = family_for(dc->c ? dc->c->dns_family : MP_DNS_AUTO, t->phase);
    bool ok = status == ARES_SUCCESS && dc->c != NULL && take_addrs(t, res, family) > 0;
    ares_freeaddrinfo(res);
    if (status == ARES_EDESTRUCTION || dc->c == NULL) {
        maybe_free_zombie(dc);
        return;
    }
    if (ok) {
        on_success(t);
        return;
    }
    if (status == ARES_SUCCESS)
        status = ARES_ENODATA; /* an answer, but no address of the family asked */
    if (family_for(dc->c->dns_family, t->phase + 1) >= 0) {
        t->phase++;
        start_query(t);
        return;
    }
    on_failure(t, status);
}

static bool is_localhost(const char *name)
{
    return strcasecmp(name, "localhost") == 0 || strcasecmp(name, "localhost.") == 0;
}

/* RFC 6761 6.3: "localhost" is loopback and is never sent to a DNS server.  c-ares 1.18 already
 * answers ::1 for it when /etc/hosts has no IPv6 entry, but leaks a copy of the name each time
 * (seen with LeakSanitizer), which a refresh every few seconds would turn into a steady leak; so
 * the AAAA side of localhost is answered here.  The A side still goes through /etc/hosts. */
static void answer_localhost_v6(dns_target_t *t)
{
    mp_addr_t *a = mp_xcalloc(1, sizeof(*a));
    mp_addr_parse(a, "::1", t->dc->c->endpoints[t->ep].port);
    free(t->addrs);
    t->addrs = a;
    t->n_addrs = 1;
    t->ttl_ms = 0;
    on_success(t);
}

static void start_query(dns_target_t *t)
{
    dns_cluster_t *dc = t->dc;
    const char *name = dc->c->endpoints[t->ep].address;
    if (t->name == NULL || strcmp(t->name, name) != 0) {
        free(t->name);
        t->name = mp_xstrdup(name);
    }
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family_for(dc->c->dns_family, t->phase);
    if (hints.ai_family == AF_INET6 && is_localhost(t->name)) {
        answer_localhost_v6(t);
        return;
    }
    hints.ai_socktype = SOCK_STREAM;
    /* We order addresses ourselves; c-ares' RFC 6724 sort probes routes with UDP connects. */
    hints.ai_flags = ARES_AI_NOSORT;
    t->inflight = true;
    dc->inflight++;
    /* May answer before returning (an /etc/hosts hit or a numeric name). */
    ares_getaddrinfo(dc->d->ch, t->name, NULL, &hints, on_addrinfo, t);
    update_timeout(dc->d);
}

static void on_refresh(struct ev_loop *loop, ev_timer *w, int revents)
{
    dns_target_t *t = w->data;
    if (t->inflight)
        return;
    t->phase = 0;
    start_query(t);
}

/* ---- watching ---- */

static dns_cluster_t **find_cluster(mp_dns_t *d, const mp_cluster_t *c)
{
    dns_cluster_t **pp = &d->clusters;
    while (*pp != NULL && (*pp)->c != c)
        pp = &(*pp)->next;
    return pp;
}

static void watch_one(mp_dns_t *d, mp_cluster_t *c, dns_group_t *g)
{
    dns_cluster_t *dc = mp_xcalloc(1, sizeof(*dc));
    dc->d = d;
    dc->c = c;
    /* Envoy's LOGICAL_DNS has exactly one endpoint; extra ones are ignored here. */
    dc->n_t = c->type == MP_CLUSTER_LOGICAL_DNS ? MP_MIN(c->n_endpoints, 1) : c->n_endpoints;
    dc->t = mp_xcalloc(dc->n_t ? dc->n_t : 1, sizeof(*dc->t));
    dc->unanswered = dc->n_t;
    for (uint32_t i = 0; i < dc->n_t; i++) {
        dns_target_t *t = &dc->t[i];
        t->dc = dc;
        t->ep = i;
        ev_timer_init(&t->timer, on_refresh, 0., 0.);
        t->timer.data = t;
        /* The first query runs from the loop, never inside mp_dns_watch_clusters. */
        ev_timer_start(d->loop, &t->timer);
    }
    dc->next = d->clusters;
    d->clusters = dc;
    if (dc->n_t > 0) {
        dc->g = g;
        g->pending++;
    }
}

void mp_dns_watch_clusters(mp_dns_t *d, mp_cluster_t **clusters, uint32_t n,
                           mp_dns_initial_done_cb on_initial_done, void *ctx)
{
    dns_group_t *g = mp_xcalloc(1, sizeof(*g));
    g->d = d;
    g->cb = on_initial_done;
    g->ctx = ctx;
    ev_timer_init(&g->kick, on_group_kick, 0., 0.);
    g->kick.data = g;
    g->next = d->groups;
    d->groups = g;
    for (uint32_t i = 0; i < n; i++) {
        mp_cluster_t *c = clusters[i];
        if (c == NULL || c->type == MP_CLUSTER_STATIC || c->type == MP_CLUSTER_EDS ||
            *find_cluster(d, c) != NULL)
            continue;
        watch_one(d, c, g);
    }
    if (g->pending == 0)
        ev_timer_start(d->loop, &g->kick);
}

void mp_dns_unwatch_clusters(mp_dns_t *d, mp_cluster_t **clusters, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        dns_cluster_t **pp = find_cluster(d, clusters[i]);
        dns_cluster_t *dc = *pp;
        if (dc == NULL || clusters[i] == NULL)
            continue;
        *pp = dc->next;
        cluster_initialized(dc);
        for (uint32_t k = 0; k < dc->n_t; k++)
            ev_timer_stop(d->loop, &dc->t[k].timer);
        dc->c = NULL;
        maybe_free_zombie(dc);
    }
}
