/* The codec-independent part of downstream HTTP connections: accounting, the worker's list of
 * live connections, and the choice of codec for a new one. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "magpie/filter.h"
#include "magpie/net.h"
#include "magpie/stats.h"
#include "magpie/tls.h"
#include "http_internal.h"
#include "transport.h"

void mp_hconn_kick_read(mp_hconn_t *c)
{
    if (!c->dead)
        mp_tport_kick_read(&c->tp);
}

static void link_conn(mp_hconn_t *c)
{
    mp_worker_t *w = c->w;
    c->prev = NULL;
    c->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = c;
    w->conns = c;
}

static void unlink_conn(mp_hconn_t *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        c->w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

void mp_hconn_init(mp_hconn_t *c, const mp_down_ops_t *ops, mp_worker_t *w, const mp_listener_t *l,
                   const mp_filter_chain_t *fc, int fd)
{
    c->ops = ops;
    c->w = w;
    mp_tport_init(&c->tp, w->loop, fd, NULL);
    /* Responses leave in one writev per event loop pass; Nagle would only add a delayed-ACK
     * stall when a head and a body go out in separate passes. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->config = mp_config_ref(w->config);
    c->listener = l;
    c->chain = fc;
    c->hcm = fc->hcm;
    c->buffer_limit = l->per_connection_buffer_limit_bytes;
    mp_net_peer_text(fd, c->peer, sizeof(c->peer));
    mp_net_local_text(fd, c->local, sizeof(c->local));
    link_conn(c);
    atomic_fetch_add(&w->active_conns, 1);
    mp_stats_inc(l->stats.downstream_cx_total);
    mp_stats_inc(l->stats.downstream_cx_active);
    if (c->hcm == NULL)
        return; /* a TCP proxy's connection during its TLS handshake */
    mp_stats_inc(c->hcm->stats.downstream_cx_total);
    mp_stats_inc(c->hcm->stats.downstream_cx_active);
}

void mp_hconn_move(mp_hconn_t *to, mp_hconn_t *from, const mp_down_ops_t *ops)
{
    unlink_conn(from);
    *to = *from;
    to->ops = ops;
    to->dead = false;
    to->tp.rio = NULL;   /* the new codec sets its own */
    from->config = NULL; /* the ref moved */
    from->tp.tls = NULL;
    from->ident = (mp_tls_ident_t){0}; /* the cached strings moved too */
    from->filter_states = NULL;
    from->dead = true;
    link_conn(to);
}

void mp_hconn_give_tport(mp_hconn_t *c, mp_tport_t *to)
{
    unlink_conn(c);
    atomic_fetch_sub(&c->w->active_conns, 1);
    mp_tls_ident_fini(&c->ident); /* the new owner keeps its own */
    *to = c->tp;
    to->rio = NULL;
    c->tp.tls = NULL;
    c->tp.fd = -1;
    c->dead = true;
}

void mp_hconn_fini(mp_hconn_t *c)
{
    c->dead = true;
    mp_filter_states_destroy(&c->filter_states);
    mp_tls_ident_fini(&c->ident);
    mp_tport_close(&c->tp);
    unlink_conn(c);
    atomic_fetch_sub(&c->w->active_conns, 1);
    if (c->hcm != NULL)
        mp_stats_dec(c->hcm->stats.downstream_cx_active);
    mp_stats_dec(c->listener->stats.downstream_cx_active);
    mp_stats_inc(c->listener->stats.downstream_cx_destroy);
}

void mp_http_accept(mp_worker_t *w, const mp_listener_t *l, const mp_filter_chain_t *fc, int fd)
{
    if (fc->tls != NULL)
        mp_tls_accept(w, l, fc, fd);
    else if (fc->hcm->codec_type == MP_CODEC_HTTP2)
        mp_h2_accept(w, l, fc, fd);
    else
        mp_dconn_accept(w, l, fc, fd);
}
