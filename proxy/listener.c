/* Accepted connections between accept() and their filter chain: listener filters that peek with
 * MSG_PEEK (the bytes stay in the socket for TLS or the HTTP codec to read), the chain choice,
 * and the hand-off.  Waiting for more bytes uses SO_RCVLOWAT so that the level-triggered watcher
 * does not fire again until more than what was already peeked has arrived. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "magpie/chain_match.h"
#include "magpie/inspect.h"
#include "magpie/log.h"
#include "magpie/ratelimit.h"
#include "magpie/stats.h"
#include "listener.h"
#include "rbac_network.h"
#include "tcp_proxy.h"

typedef struct mp_inspect mp_inspect_t;

struct mp_inspect {
    mp_inspect_t *prev, *next; /* w->inspecting */
    mp_worker_t *w;
    const mp_listener_t *l;
    int fd;
    ev_io io;
    ev_timer timer;
    mp_conn_facts_t facts;
    mp_client_hello_t hello;
    const char *alpn[MP_CH_MAX_ALPN];
    bool tls_done, http_done;
};

static void fill_addresses(int fd, mp_conn_facts_t *f)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        f->dst_port = mp_ip_from_sockaddr(&f->dst_ip, &ss);
    len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
        f->src_port = mp_ip_from_sockaddr(&f->src_ip, &ss);
    f->direct_src_ip = f->src_ip; /* differs only behind a proxy_protocol filter (not built) */
}

/* A connection that never reached a chain still counts as accepted and destroyed. */
static void drop(const mp_listener_t *l, int fd)
{
    mp_stats_inc(l->stats.downstream_cx_total);
    mp_stats_inc(l->stats.downstream_cx_destroy);
    close(fd);
}

static void dispatch(mp_worker_t *w, const mp_listener_t *l, const mp_conn_facts_t *f, int fd)
{
    const mp_filter_chain_t *fc = mp_chain_match_listener(l, f);
    if (fc == NULL) {
        mp_stats_inc(l->stats.no_filter_chain_match);
        mp_log_debug("listener %s: no filter chain matches (sni \"%s\", transport %s, %u ALPN); "
                     "closing",
                     l->name, f->sni, f->transport, f->n_alpn);
        drop(l, fd);
        return;
    }
    if (!mp_net_ratelimit_allows(fc)) {
        drop(l, fd);
        return;
    }
    /* A TLS connection is checked after its handshake (tls_accept.c), when its peer is known. */
    if (fc->tls == NULL && !mp_rbac_network_allows(l, fc, fd, NULL)) {
        drop(l, fd);
        return;
    }
    if (fc->tcp_proxy != NULL)
        mp_tcp_proxy_accept(w, l, fc, fd);
    else
        mp_http_accept(w, l, fc, fd);
}

static bool needs_inspection(const mp_listener_t *l)
{
    bool tls = l->tls_inspector && (l->chain_uses & (MP_CHAIN_USES_TLS | MP_CHAIN_USES_ALPN));
    bool http = l->http_inspector && (l->chain_uses & MP_CHAIN_USES_ALPN);
    return tls || http;
}

static void unlink_inspect(mp_inspect_t *in)
{
    if (in->prev != NULL)
        in->prev->next = in->next;
    else
        in->w->inspecting = in->next;
    if (in->next != NULL)
        in->next->prev = in->prev;
    ev_io_stop(in->w->loop, &in->io);
    ev_timer_stop(in->w->loop, &in->timer);
}

/* Inspection over: the codec reads from here, so the low-water mark goes back to one byte. */
static void finish(mp_inspect_t *in)
{
    int one = 1;
    unlink_inspect(in);
    setsockopt(in->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
    dispatch(in->w, in->l, &in->facts, in->fd);
    free(in);
}

static void abandon(mp_inspect_t *in, const char *why)
{
    mp_log_debug("listener %s: closing a connection during listener filters: %s", in->l->name, why);
    unlink_inspect(in);
    drop(in->l, in->fd);
    free(in);
}

static void apply_hello(mp_inspect_t *in)
{
    in->facts.transport = "tls";
    in->facts.sni = in->hello.sni;
    for (uint32_t i = 0; i < in->hello.n_alpn; i++)
        in->alpn[i] = in->hello.alpn[i];
    in->facts.alpn = in->alpn;
    in->facts.n_alpn = in->hello.n_alpn;
}

/* Envoy's tls_inspector.* counters for a finished look at a hello. */
static void count_tls(const mp_inspector_stats_t *st, mp_inspect_result_t r,
                      const mp_client_hello_t *h)
{
    if (r != MP_INSPECT_DONE) {
        mp_stats_inc(h->too_large ? st->client_hello_too_large : st->tls_not_found);
        return;
    }
    mp_stats_inc(st->tls_found);
    mp_stats_inc(h->sni[0] != '\0' ? st->sni_found : st->sni_not_found);
    mp_stats_inc(h->n_alpn > 0 ? st->alpn_found : st->alpn_not_found);
}

static void count_http(const mp_inspector_stats_t *st, mp_inspect_result_t r, const char *proto)
{
    if (r != MP_INSPECT_DONE)
        mp_stats_inc(st->http_not_found);
    else if (strcmp(proto, "h2c") == 0)
        mp_stats_inc(st->http2_found);
    else if (strcmp(proto, "http/1.0") == 0)
        mp_stats_inc(st->http10_found);
    else
        mp_stats_inc(st->http11_found);
}

/* Runs the inspectors over the n bytes peeked; MP_AGAIN while one needs more. */
static int inspect(mp_inspect_t *in, const uint8_t *buf, size_t n)
{
    if (in->l->tls_inspector && !in->tls_done) {
        mp_inspect_result_t r = mp_inspect_client_hello(buf, n, &in->hello);
        if (r == MP_INSPECT_NEED_MORE)
            return MP_AGAIN;
        in->tls_done = true;
        count_tls(&in->l->inspector_stats, r, &in->hello);
        if (r == MP_INSPECT_DONE)
            apply_hello(in);
    }
    /* Envoy's http_inspector leaves TLS connections alone: ALPN came from the hello. */
    if (in->l->http_inspector && !in->http_done && strcmp(in->facts.transport, "tls") != 0) {
        const char *proto = NULL;
        mp_inspect_result_t r = mp_inspect_http(buf, n, &proto);
        if (r == MP_INSPECT_NEED_MORE)
            return MP_AGAIN;
        in->http_done = true;
        count_http(&in->l->inspector_stats, r, proto);
        if (r == MP_INSPECT_DONE) {
            in->alpn[0] = proto;
            in->facts.alpn = in->alpn;
            in->facts.n_alpn = 1;
        }
    }
    return 0;
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    mp_inspect_t *in = io->data;
    static _Thread_local uint8_t buf[MP_CH_MAX_PEEK];
    ssize_t n = recv(in->fd, buf, sizeof(buf), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        abandon(in, n == 0 ? "peer closed" : strerror(errno));
        return;
    }
    if (inspect(in, buf, (size_t)n) == 0 || (size_t)n >= sizeof(buf)) {
        finish(in);
        return;
    }
    /* Wake again only when more than what we have seen is there. */
    int lowat = (int)n + 1;
    setsockopt(in->fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_inspect_t *in = t->data;
    mp_stats_inc(in->l->stats.downstream_pre_cx_timeout);
    if (in->l->continue_on_listener_filters_timeout)
        finish(in); /* with what is known: no SNI, raw_buffer unless a hello was seen */
    else
        abandon(in, "listener filters timeout");
}

static void start_inspection(mp_worker_t *w, const mp_listener_t *l, int fd,
                             const mp_conn_facts_t *f)
{
    mp_inspect_t *in = mp_xcalloc(1, sizeof(*in));
    in->w = w;
    in->l = l;
    in->fd = fd;
    in->facts = *f;
    in->next = w->inspecting;
    if (w->inspecting != NULL)
        w->inspecting->prev = in;
    w->inspecting = in;
    ev_io_init(&in->io, on_readable, fd, EV_READ);
    in->io.data = in;
    ev_io_start(w->loop, &in->io);
    ev_timer_init(&in->timer, on_timeout, (double)l->listener_filters_timeout_ms / 1000.0, 0.0);
    in->timer.data = in;
    if (l->listener_filters_timeout_ms > 0)
        ev_timer_start(w->loop, &in->timer);
}

void mp_listener_accept(mp_worker_t *w, const mp_listener_t *l, int fd)
{
    mp_conn_facts_t f = {.sni = "", .transport = "raw_buffer"};
    /* The common case, one chain matching everything, costs no system call. */
    if (l->n_chains == 1 && l->chain_uses == 0) {
        dispatch(w, l, &f, fd);
        return;
    }
    if (l->chain_uses & MP_CHAIN_USES_ADDRESSES)
        fill_addresses(fd, &f);
    if (needs_inspection(l))
        start_inspection(w, l, fd, &f);
    else
        dispatch(w, l, &f, fd);
}

void mp_listener_close_inspecting(mp_worker_t *w)
{
    while (w->inspecting != NULL)
        abandon(w->inspecting, "draining");
}
