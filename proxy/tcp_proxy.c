/* The TCP proxy (envoy.filters.network.tcp_proxy): one accepted connection, one upstream
 * connection to a host of a (weighted) cluster, bytes copied both ways.
 *
 * Each side has an output buffer holding what was read from the other side and is waiting to be
 * written to it, so a read on one side lands directly in the other's buffer.  When a buffer
 * holds more than the listener's per_connection_buffer_limit_bytes the side that fills it stops
 * being read until it drains to half (docs/tcp-proxy.md).  A FIN travels: EOF read on one side
 * becomes shutdown(SHUT_WR) on the other once its buffer is written, and the connection ends when
 * both directions have ended that way, on an error (both sockets reset), on the idle timeout or
 * at the drain deadline.
 *
 * Both ends go through the shared transport (proxy/transport.h), so plain TCP and TLS are one
 * path: a TLS listener's handshake (tls_accept.c) hands its finished connection here, and a
 * cluster with an UpstreamTlsContext gets a client handshake after the TCP connect, inside the
 * connect timeout, whose failure counts and retries like a failed connect.  With TLS a FIN is
 * close_notify followed by the TCP FIN. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "magpie/access_log.h"
#include "magpie/circuit.h"
#include "magpie/log.h"
#include "magpie/net.h"
#include "magpie/outlier.h"
#include "magpie/stats.h"
#include "tcp_proxy.h"

#define READ_CHUNK 65536

typedef struct mp_tcp_conn mp_tcp_conn_t;

/* One end of the proxied connection.  `out` holds bytes read from the other end, waiting to be
 * written to this one. */
typedef struct tp_side {
    mp_tcp_conn_t *conn;
    mp_tport_t tp; /* tp.fd -1: none (upstream between attempts) */
    ev_io rio, wio;
    mp_buf_t out;
    bool read_eof;    /* this end's peer sent FIN */
    bool write_shut;  /* we sent FIN (and close_notify) to this end, after `out` drained */
    bool read_paused; /* backpressure: the other side's `out` is over the limit */
} tp_side_t;

typedef enum tp_state {
    TP_CONNECTING,  /* upstream connect in progress; client bytes wait in up.out */
    TP_HANDSHAKING, /* upstream TLS handshake in progress (TLS clusters); still waiting */
    TP_OPEN,        /* both ends connected: bytes flow */
} tp_state_t;

struct mp_tcp_conn {
    mp_grave_t grave;
    mp_worker_t *w;
    mp_tcp_conn_t *prev, *next; /* w->tcp_conns */
    mp_config_t *config;        /* ref for the connection's life: cluster and config live there */
    const mp_listener_t *listener;
    const mp_filter_chain_t *chain; /* the filter chain the connection matched */
    const mp_tcp_proxy_config_t *tp;
    mp_cluster_t *cluster;
    mp_hostset_t *hosts; /* ref, taken at the first attempt */
    int host_idx;        /* in hosts; -1 before the first pick */
    bool lb_started;     /* mp_lb_request_start done for host_idx */
    bool up_counted;     /* upstream_cx_active counts the current upstream fd */
    bool cb_cx_held;     /* one unit of the cluster's max_connections (DEFAULT priority) */
    bool dead;
    uint32_t attempts;
    tp_state_t state;
    tp_side_t down, up;
    ev_timer connect_timer, idle_timer;
    ev_tstamp last_activity;
    uint32_t limit;
    mp_stream_info_t info;
    mp_tls_ident_t ident; /* the downstream TLS identity, for the access log's TLS operators */
    char peer[64], local[64], upstream_host[64];
};

static void start_connect(mp_tcp_conn_t *c);
static void flush_side(tp_side_t *s);
static void tls_step(mp_tcp_conn_t *c);

static inline tp_side_t *other_side(tp_side_t *s)
{
    return s == &s->conn->down ? &s->conn->up : &s->conn->down;
}

static inline bool is_down(const tp_side_t *s)
{
    return s == &s->conn->down;
}

/* The upstream is written to and read from only once connected. */
static inline bool side_open(const tp_side_t *s)
{
    return s->tp.fd >= 0 && (is_down(s) || s->conn->state == TP_OPEN);
}

static void touch(mp_tcp_conn_t *c)
{
    c->last_activity = ev_now(c->w->loop);
}

/* ---- ending ---- */

static void free_conn(mp_grave_t *g)
{
    mp_tcp_conn_t *c = (mp_tcp_conn_t *)g;
    mp_buf_clear(&c->down.out);
    mp_buf_clear(&c->up.out);
    if (c->hosts != NULL)
        mp_hostset_release(c->hosts);
    mp_tls_ident_fini(&c->ident);
    mp_config_unref(c->config);
    free(c);
}

/* A reset tells the peer that the stream was cut short rather than ended (SO_LINGER 0). */
static void close_tport(mp_tport_t *tp, bool rst)
{
    if (rst) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(tp->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    mp_tport_close(tp);
}

static void end_lb_request(mp_tcp_conn_t *c)
{
    if (!c->lb_started)
        return;
    c->lb_started = false;
    mp_pool_t *pool = mp_worker_pool(c->w, c->cluster);
    if (pool != NULL)
        mp_lb_request_end(pool->lb, c->hosts, c->host_idx);
}

static void close_upstream(mp_tcp_conn_t *c, bool rst)
{
    tp_side_t *up = &c->up;
    ev_io_stop(c->w->loop, &up->rio);
    ev_io_stop(c->w->loop, &up->wio);
    ev_timer_stop(c->w->loop, &c->connect_timer);
    if (up->tp.fd >= 0)
        close_tport(&up->tp, rst);
    if (c->up_counted) {
        c->up_counted = false;
        mp_stats_dec(c->cluster->stats.upstream_cx_active);
        mp_stats_inc(c->cluster->stats.upstream_cx_destroy);
    }
    end_lb_request(c);
}

static void write_access_logs(mp_tcp_conn_t *c)
{
    c->info.end_ns = mp_now_ns();
    for (uint32_t i = 0; i < c->tp->n_access_logs; i++)
        mp_access_log_write(&c->tp->access_logs[i], &c->info);
}

static void unlink_conn(mp_tcp_conn_t *c)
{
    mp_worker_t *w = c->w;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->tcp_conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    atomic_fetch_sub(&w->active_conns, 1);
}

/* Ends the connection: flags go to the access log; rst resets both sockets. */
static void tp_close(mp_tcp_conn_t *c, uint32_t flags, bool rst, const char *why)
{
    if (c->dead)
        return;
    c->dead = true;
    mp_log_debug("tcp_proxy %s: closing: %s", c->peer, why);
    c->info.response_flags |= flags;
    close_upstream(c, rst);
    if (c->cb_cx_held)
        mp_cb_release(c->cluster, MP_PRIORITY_DEFAULT, MP_CB_CONNECTIONS);
    c->cb_cx_held = false;
    ev_io_stop(c->w->loop, &c->down.rio);
    ev_io_stop(c->w->loop, &c->down.wio);
    ev_timer_stop(c->w->loop, &c->idle_timer);
    /* The log is written after the SSL is freed: load the facts now, and from here on only the
     * cache is read (mp_tls_ident_get returns it without touching ident.ssl). */
    if (c->tp->n_access_logs > 0)
        mp_tls_ident_get(&c->ident);
    close_tport(&c->down.tp, rst);
    mp_stats_dec(c->listener->stats.downstream_cx_active);
    mp_stats_inc(c->listener->stats.downstream_cx_destroy);
    unlink_conn(c);
    write_access_logs(c);
    mp_worker_bury(c->w, &c->grave, free_conn);
}

/* Both directions ended cleanly: FIN seen from both peers and FIN sent to both. */
static void maybe_finish(mp_tcp_conn_t *c)
{
    if (!c->dead && c->down.read_eof && c->up.read_eof && c->down.write_shut && c->up.write_shut)
        tp_close(c, 0, false, "both directions closed");
}

/* ---- flow control ---- */

static void set_read_paused(tp_side_t *s, bool pause)
{
    mp_tcp_conn_t *c = s->conn;
    if (s->read_paused == pause)
        return;
    s->read_paused = pause;
    if (is_down(s))
        mp_stats_inc(pause ? c->tp->stats.downstream_flow_control_paused_reading_total
                           : c->tp->stats.downstream_flow_control_resumed_reading_total);
    if (pause || s->read_eof || !side_open(s)) {
        ev_io_stop(c->w->loop, &s->rio);
        return;
    }
    ev_io_start(c->w->loop, &s->rio);
    /* Records OpenSSL decrypted before the pause raise no readiness event of their own. */
    mp_tport_kick_read(&s->tp);
}

/* s's buffer drained: resume the reader below the low mark, pass a pending FIN on. */
static void after_drain(tp_side_t *s)
{
    mp_tcp_conn_t *c = s->conn;
    tp_side_t *src = other_side(s);
    if (src->read_paused && mp_buf_len(&s->out) <= c->limit / 2)
        set_read_paused(src, false);
    if (mp_buf_len(&s->out) == 0 && src->read_eof && !s->write_shut) {
        /* A close_notify the socket could not take yet goes out when it is writable. */
        if (mp_tport_shutdown_write(&s->tp) == MP_AGAIN) {
            ev_io_start(c->w->loop, &s->wio);
            return;
        }
        s->write_shut = true;
        maybe_finish(c);
    }
}

static void count_tx(tp_side_t *s, ssize_t n)
{
    mp_tcp_conn_t *c = s->conn;
    if (is_down(s)) {
        mp_stats_add(c->tp->stats.downstream_cx_tx_bytes_total, n);
        c->info.bytes_sent += (uint64_t)n;
    } else {
        mp_stats_add(c->cluster->stats.upstream_cx_tx_bytes_total, n);
    }
}

/* Writes what s's socket takes.  May close the connection (write error). */
static void flush_side(tp_side_t *s)
{
    mp_tcp_conn_t *c = s->conn;
    if (!side_open(s))
        return;
    while (mp_buf_len(&s->out) > 0) {
        ssize_t n = mp_tport_write(&s->tp, &s->out);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            tp_close(c, is_down(s) ? MP_RF_DOWNSTREAM_CONN_TERM : MP_RF_UPSTREAM_CONN_TERM, true,
                     strerror(errno));
            return;
        }
        count_tx(s, n);
        touch(c);
    }
    if (mp_buf_len(&s->out) > 0)
        ev_io_start(c->w->loop, &s->wio);
    else
        ev_io_stop(c->w->loop, &s->wio);
    after_drain(s);
}

/* ---- reading ---- */

static void on_peer_eof(tp_side_t *src)
{
    mp_tcp_conn_t *c = src->conn;
    tp_side_t *dst = other_side(src);
    src->read_eof = true;
    ev_io_stop(c->w->loop, &src->rio);
    if (is_down(src) && mp_buf_len(&dst->out) > 0)
        mp_stats_inc(c->tp->stats.upstream_flush_total);
    if (side_open(dst))
        after_drain(dst);
}

static void count_rx(tp_side_t *src, ssize_t n)
{
    mp_tcp_conn_t *c = src->conn;
    if (is_down(src)) {
        mp_stats_add(c->tp->stats.downstream_cx_rx_bytes_total, n);
        c->info.bytes_received += (uint64_t)n;
    } else {
        mp_stats_add(c->cluster->stats.upstream_cx_rx_bytes_total, n);
    }
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    tp_side_t *src = io->data;
    tp_side_t *dst = other_side(src);
    mp_tcp_conn_t *c = src->conn;
    if (c->state == TP_HANDSHAKING && !is_down(src)) {
        tls_step(c);
        return;
    }
    ssize_t n = mp_tport_read(&src->tp, &dst->out, READ_CHUNK);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        tp_close(c, is_down(src) ? MP_RF_DOWNSTREAM_REMOTE_RESET : MP_RF_UPSTREAM_RESET, true,
                 strerror(errno));
        return;
    }
    if (n == 0) {
        on_peer_eof(src);
        return;
    }
    count_rx(src, n);
    touch(c);
    flush_side(dst);
    if (!c->dead && mp_buf_len(&dst->out) > c->limit)
        set_read_paused(src, true);
}

static void on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    flush_side(io->data);
}

/* ---- timers ---- */

static void on_idle_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_tcp_conn_t *c = t->data;
    double timeout = (double)c->tp->idle_timeout_ms / 1000.0;
    double left = c->last_activity + timeout - ev_now(loop);
    /* Activity only stamps the time; the timer re-arms itself for what is left. */
    if (left > 0.001) {
        ev_timer_set(t, left, 0.0);
        ev_timer_start(loop, t);
        return;
    }
    mp_stats_inc(c->tp->stats.idle_timeout);
    tp_close(c, MP_RF_STREAM_IDLE_TIMEOUT, false, "idle timeout");
}

static void start_idle_timer(mp_tcp_conn_t *c)
{
    if (c->tp->idle_timeout_ms == 0)
        return;
    touch(c);
    ev_timer_set(&c->idle_timer, (double)c->tp->idle_timeout_ms / 1000.0, 0.0);
    ev_timer_start(c->w->loop, &c->idle_timer);
}

/* ---- connecting ---- */

/* Outlier detection hears of every connect attempt: the TCP proxy has no response to judge. */
static void report_outlier(mp_tcp_conn_t *c, mp_outlier_result_t r)
{
    if (c->hosts != NULL && c->host_idx >= 0 && (uint32_t)c->host_idx < c->hosts->n)
        mp_outlier_report(c->cluster, &c->hosts->hosts[c->host_idx], r);
}

static void attempt_failed(mp_tcp_conn_t *c, const char *why)
{
    report_outlier(c, MP_OUTLIER_CONNECT_FAILED);
    mp_log_debug("tcp_proxy %s: upstream %s: %s", c->peer, c->upstream_host, why);
    mp_stats_inc(c->cluster->stats.upstream_cx_connect_fail);
    close_upstream(c, false);
    start_connect(c);
}

static void on_connect_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_tcp_conn_t *c = t->data;
    mp_stats_inc(c->cluster->stats.upstream_cx_connect_timeout);
    attempt_failed(c, "connect timeout");
}

/* Connected (and, for a TLS cluster, the handshake done): bytes flow. */
static void on_upstream_open(mp_tcp_conn_t *c)
{
    ev_timer_stop(c->w->loop, &c->connect_timer);
    report_outlier(c, MP_OUTLIER_CONNECT_SUCCESS_FINAL);
    c->state = TP_OPEN;
    ev_io_start(c->w->loop, &c->up.rio);
    mp_tport_kick_read(&c->up.tp); /* what OpenSSL read past the handshake's last record */
    start_idle_timer(c);
    /* Client bytes that arrived while connecting, and a client FIN, go out now. */
    flush_side(&c->up);
}

/* One step of the client handshake on whichever watcher OpenSSL waits for.  A failure (certificate
 * verdicts and connection_error counted in the cluster's ssl.*) is a failed connect attempt. */
static void tls_step(mp_tcp_conn_t *c)
{
    int events = 0;
    char why[160] = "";
    int rc = mp_tport_handshake(&c->up.tp, c->cluster->tls, &events, why, sizeof(why));
    struct ev_loop *loop = c->w->loop;
    if (rc == MP_AGAIN) {
        ev_io_stop(loop, events == EV_READ ? &c->up.wio : &c->up.rio);
        ev_io_start(loop, events == EV_READ ? &c->up.rio : &c->up.wio);
        return;
    }
    ev_io_stop(loop, &c->up.rio);
    ev_io_stop(loop, &c->up.wio);
    if (rc != 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "TLS handshake: %s", why);
        attempt_failed(c, msg);
        return;
    }
    on_upstream_open(c);
}

static void on_connected(mp_tcp_conn_t *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(c->up.tp.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        attempt_failed(c, strerror(err));
        return;
    }
    if (c->up.tp.tls != NULL) {
        c->state = TP_HANDSHAKING;
        tls_step(c);
        return;
    }
    on_upstream_open(c);
}

static void on_upstream_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    tp_side_t *up = io->data;
    if (up->conn->state == TP_CONNECTING) {
        ev_io_stop(loop, io);
        on_connected(up->conn);
        return;
    }
    if (up->conn->state == TP_HANDSHAKING) {
        tls_step(up->conn);
        return;
    }
    flush_side(up);
}

/* A host of c->hosts other than the last one tried, or -1. */
static int pick_host(mp_tcp_conn_t *c)
{
    if (c->hosts->n == 0)
        return -1;
    mp_pool_t *pool = mp_worker_pool(c->w, c->cluster);
    if (pool != NULL)
        return mp_lb_pick(pool->lb, c->hosts, c->host_idx);
    return (int)(mp_random() % c->hosts->n);
}

/* Opens a socket to a picked host; false when connect failed at once (counted). */
static bool connect_host(mp_tcp_conn_t *c, int idx)
{
    mp_pool_t *pool = mp_worker_pool(c->w, c->cluster);
    const mp_host_t *host = &c->hosts->hosts[idx];
    c->host_idx = idx;
    snprintf(c->upstream_host, sizeof(c->upstream_host), "%s", host->addr.text);
    c->info.upstream_host = c->upstream_host;
    int fd = mp_net_connect(&host->addr);
    if (fd < 0) {
        mp_log_debug("tcp_proxy %s: upstream %s: %s", c->peer, host->addr.text, strerror(errno));
        mp_stats_inc(c->cluster->stats.upstream_cx_connect_fail);
        report_outlier(c, MP_OUTLIER_CONNECT_FAILED);
        return false;
    }
    mp_tport_init(&c->up.tp, c->w->loop, fd, &c->up.rio);
    /* SNI as the HTTP router sends it: the context's sni, else the host's name. */
    if (c->cluster->tls != NULL && mp_tport_tls_connect(&c->up.tp, c->cluster->tls, host->addr.text,
                                                        host->hostname, false) != 0) {
        mp_log_debug("tcp_proxy %s: upstream %s: no SSL object", c->peer, host->addr.text);
        mp_stats_inc(c->cluster->stats.upstream_cx_connect_fail);
        mp_tport_close(&c->up.tp);
        return false;
    }
    if (pool != NULL) {
        mp_lb_request_start(pool->lb, c->hosts, idx);
        c->lb_started = true;
    }
    c->up_counted = true;
    mp_stats_inc(c->cluster->stats.upstream_cx_total);
    mp_stats_inc(c->cluster->stats.upstream_cx_active);
    ev_io_set(&c->up.wio, fd, EV_WRITE);
    ev_io_set(&c->up.rio, fd, EV_READ);
    ev_io_start(c->w->loop, &c->up.wio);
    ev_timer_set(&c->connect_timer, (double)c->cluster->connect_timeout_ms / 1000.0, 0.0);
    ev_timer_start(c->w->loop, &c->connect_timer);
    return true;
}

/* Tries hosts until one connect is under way or max_connect_attempts are used up. */
static void start_connect(mp_tcp_conn_t *c)
{
    c->state = TP_CONNECTING;
    /* max_connections, taken once for the connection's life (its connect attempts share it). */
    if (!c->cb_cx_held && !mp_cb_try_acquire(c->cluster, MP_PRIORITY_DEFAULT, MP_CB_CONNECTIONS)) {
        mp_stats_inc(c->cluster->stats.upstream_cx_overflow);
        tp_close(c, MP_RF_UPSTREAM_OVERFLOW, false, "max_connections reached");
        return;
    }
    c->cb_cx_held = true;
    while (c->attempts < c->tp->max_connect_attempts) {
        c->attempts++;
        int idx = pick_host(c);
        if (idx < 0) {
            mp_stats_inc(c->cluster->stats.upstream_cx_none_healthy);
            tp_close(c, MP_RF_NO_HEALTHY_UPSTREAM, false, "no healthy upstream");
            return;
        }
        if (connect_host(c, idx))
            return;
    }
    tp_close(c, MP_RF_UPSTREAM_CONNECT_FAIL, false, "upstream connect failed");
}

/* Envoy's weighted pick: a uniform draw over the sum of weights. */
static const mp_tcp_cluster_weight_t *pick_cluster(const mp_tcp_proxy_config_t *tp)
{
    if (tp->n_clusters == 1)
        return &tp->clusters[0];
    uint64_t r = mp_random() % tp->total_weight;
    for (uint32_t i = 0; i < tp->n_clusters; i++) {
        if (r < tp->clusters[i].weight)
            return &tp->clusters[i];
        r -= tp->clusters[i].weight;
    }
    return &tp->clusters[tp->n_clusters - 1];
}

/* ---- accepting ---- */

/* tp: the side's transport, taken over (its read watcher becomes the side's); NULL: none yet. */
static void init_side(mp_tcp_conn_t *c, tp_side_t *s, const mp_tport_t *tp,
                      void (*on_write)(struct ev_loop *, ev_io *, int))
{
    s->conn = c;
    if (tp != NULL)
        s->tp = *tp;
    else
        mp_tport_init(&s->tp, c->w->loop, -1, NULL);
    s->tp.rio = &s->rio;
    mp_buf_init(&s->out);
    ev_io_init(&s->rio, on_readable, s->tp.fd, EV_READ);
    s->rio.data = s;
    ev_io_init(&s->wio, on_write, s->tp.fd, EV_WRITE);
    s->wio.data = s;
}

static mp_tcp_conn_t *conn_new(mp_worker_t *w, const mp_listener_t *l, const mp_filter_chain_t *fc,
                               const mp_tport_t *tp)
{
    mp_tcp_conn_t *c = mp_xcalloc(1, sizeof(*c));
    c->w = w;
    c->config = mp_config_ref(w->config);
    c->listener = l;
    c->chain = fc;
    c->tp = fc->tcp_proxy;
    c->limit = l->per_connection_buffer_limit_bytes;
    c->host_idx = -1;
    init_side(c, &c->down, tp, on_writable);
    init_side(c, &c->up, NULL, on_upstream_writable);
    ev_init(&c->connect_timer, on_connect_timer);
    c->connect_timer.data = c;
    ev_init(&c->idle_timer, on_idle_timer);
    c->idle_timer.data = c;
    mp_net_peer_text(tp->fd, c->peer, sizeof(c->peer));
    mp_net_local_text(tp->fd, c->local, sizeof(c->local));
    gettimeofday(&c->info.start_time, NULL);
    c->info.start_ns = mp_now_ns();
    c->info.downstream_remote_address = c->peer;
    c->info.downstream_local_address = c->local;
    c->ident.ssl = tp->tls;
    c->info.downstream_tls = tp->tls != NULL ? &c->ident : NULL;
    c->next = w->tcp_conns;
    if (w->tcp_conns != NULL)
        w->tcp_conns->prev = c;
    w->tcp_conns = c;
    atomic_fetch_add(&w->active_conns, 1);
    return c;
}

/* The listener's downstream_cx_* already count the connection. */
static void start_conn(mp_worker_t *w, const mp_listener_t *l, const mp_filter_chain_t *fc,
                       const mp_tport_t *tp)
{
    mp_tcp_conn_t *c = conn_new(w, l, fc, tp);
    mp_stats_inc(c->tp->stats.downstream_cx_total);
    const mp_tcp_cluster_weight_t *cw = pick_cluster(c->tp);
    c->info.upstream_cluster = cw->name;
    if (cw->cluster == NULL) {
        mp_stats_inc(c->tp->stats.downstream_cx_no_route);
        tp_close(c, MP_RF_NO_CLUSTER, false, "no cluster");
        return;
    }
    c->cluster = cw->cluster;
    c->hosts = mp_cluster_hosts_acquire(c->cluster);
    /* Client bytes are read (into up.out, bounded by the limit) while the upstream connects. */
    ev_io_start(w->loop, &c->down.rio);
    mp_tport_kick_read(&c->down.tp); /* what the client sent with its handshake's last flight */
    start_connect(c);
}

void mp_tcp_proxy_accept(mp_worker_t *w, const mp_listener_t *l, const mp_filter_chain_t *fc,
                         int fd)
{
    if (fc->tls != NULL) {
        mp_tls_accept(w, l, fc, fd); /* comes back through mp_tcp_proxy_accept_tport */
        return;
    }
    mp_stats_inc(l->stats.downstream_cx_total);
    mp_stats_inc(l->stats.downstream_cx_active);
    mp_tport_t tp;
    mp_tport_init(&tp, w->loop, fd, NULL);
    start_conn(w, l, fc, &tp);
}

void mp_tcp_proxy_accept_tport(mp_hconn_t *from)
{
    mp_worker_t *w = from->w;
    const mp_listener_t *l = from->listener;
    mp_tport_t tp;
    const mp_filter_chain_t *fc = from->chain;
    mp_hconn_give_tport(from, &tp); /* releases the handshake's identity cache; ours reloads */
    start_conn(w, l, fc, &tp);
}

void mp_tcp_proxy_close_all(mp_worker_t *w, const char *why)
{
    while (w->tcp_conns != NULL)
        tp_close(w->tcp_conns, MP_RF_LOCAL_RESET, false, why);
}
