/* Worker threads: one libev loop each, own listen sockets (SO_REUSEPORT), own pools. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "magpie/log.h"
#include "magpie/net.h"
#include "magpie/server.h"
#include "magpie/stats.h"
#include "http_internal.h"
#include "listener.h"
#include "tcp_proxy.h"

#define LISTEN_BACKLOG 1024

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    mp_wlistener_t *wl = (mp_wlistener_t *)io;
    /* Bounded batch: one busy listener must not starve the connections already open. */
    for (int i = 0; i < 64; i++) {
        int fd = accept4(wl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                mp_log_warn("listener %s: accept: %s", wl->listener->addr.text, strerror(errno));
            return;
        }
        mp_listener_accept(wl->worker, wl->listener, fd);
    }
}

static void free_graves(mp_worker_t *w)
{
    while (w->graves != NULL) {
        mp_grave_t *g = w->graves;
        w->graves = g->next;
        g->free_fn(g);
    }
}

static void on_reap(struct ev_loop *loop, ev_check *c, int revents)
{
    free_graves(c->data);
}

void mp_worker_bury(mp_worker_t *w, mp_grave_t *g, void (*free_fn)(mp_grave_t *))
{
    g->free_fn = free_fn;
    g->next = w->graves;
    w->graves = g;
}

void mp_worker_defer(mp_worker_t *w, mp_deferred_t *d)
{
    if (d->queued)
        return;
    d->queued = true;
    d->prev = NULL;
    d->next = w->deferred;
    if (w->deferred != NULL)
        w->deferred->prev = d;
    w->deferred = d;
}

void mp_worker_defer_cancel(mp_worker_t *w, mp_deferred_t *d)
{
    if (!d->queued)
        return;
    if (d->prev != NULL)
        d->prev->next = d->next;
    else
        w->deferred = d->next;
    if (d->next != NULL)
        d->next->prev = d->prev;
    d->queued = false;
    d->prev = d->next = NULL;
}

/* Runs until the queue is empty: a deferred write may queue another connection's. */
static void on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    mp_worker_t *w = p->data;
    while (w->deferred != NULL) {
        mp_deferred_t *d = w->deferred;
        mp_worker_defer_cancel(w, d);
        d->fn(d);
    }
}

/* The index is where the cluster was first built; a later snapshot that shares it may list it
 * elsewhere, and then a search finds it (linear, only for clusters that moved). */
mp_pool_t *mp_worker_pool(mp_worker_t *w, mp_cluster_t *c)
{
    if (c->index < w->n_pools && w->pools[c->index]->cluster == c)
        return w->pools[c->index];
    for (uint32_t i = 0; i < w->n_pools; i++)
        if (w->pools[i]->cluster == c)
            return w->pools[i];
    return NULL;
}

/* A new snapshot's pools: a cluster it shares with the old one keeps its pool (balancer state,
 * idle and busy connections, queued requests); the others' pools end. */
static void adopt_pools(mp_worker_t *w, mp_config_t *next)
{
    mp_pool_t **pools = mp_xcalloc(next->n_clusters ? next->n_clusters : 1, sizeof(*pools));
    for (uint32_t i = 0; i < next->n_clusters; i++) {
        for (uint32_t j = 0; j < w->n_pools && pools[i] == NULL; j++) {
            if (w->pools[j] != NULL && w->pools[j]->cluster == next->clusters[i]) {
                pools[i] = w->pools[j];
                w->pools[j] = NULL;
            }
        }
        if (pools[i] == NULL)
            pools[i] = mp_pool_new(w, next->clusters[i]);
    }
    mp_pools_free(w);
    w->pools = pools;
    w->n_pools = next->n_clusters;
}

static void stop_listeners(mp_worker_t *w)
{
    for (uint32_t i = 0; i < w->n_listeners; i++) {
        if (w->listeners[i].fd < 0)
            continue;
        ev_io_stop(w->loop, &w->listeners[i].io);
        close(w->listeners[i].fd);
        w->listeners[i].fd = -1;
    }
}

static bool same_listener(const mp_listener_t *a, const mp_listener_t *b)
{
    return strcmp(a->name, b->name) == 0 && a->pb_len == b->pb_len &&
           (a->pb_len == 0 || memcmp(a->pb, b->pb, a->pb_len) == 0);
}

static void start_accepting(mp_worker_t *w, mp_wlistener_t *wl)
{
    ev_io_init(&wl->io, on_accept, wl->fd, EV_READ);
    ev_io_start(w->loop, &wl->io);
}

static uint64_t listener_drain_ms(void)
{
    return (uint64_t)(mp_server != NULL ? mp_server->opts.drain_time_s : 600) * 1000;
}

static void on_retire_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_worker_t *w = t->data;
    uint64_t now = mp_now_ms();
    bool left = false;
    for (mp_hconn_t *c = w->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->retire_deadline_ms == 0)
            continue;
        if (now >= c->retire_deadline_ms)
            c->ops->close(c, "listener drain deadline");
        else
            left = true;
    }
    if (!left) {
        ev_timer_stop(loop, t);
        w->retire_timer_on = false;
    }
}

/* A removed or changed listener's connections drain as at shutdown (HTTP/1.1 Connection: close
 * after the current response, HTTP/2 GOAWAY), and whatever is open at --drain-time-s closes.
 * Matched by name: at the swap every connection of that name belongs to an old version. */
static void retire_connections(mp_worker_t *w, const char *name)
{
    uint64_t deadline = mp_now_ms() + listener_drain_ms();
    for (mp_hconn_t *c = w->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->retire_deadline_ms != 0 || strcmp(c->listener->name, name) != 0)
            continue;
        c->retire_deadline_ms = deadline;
        c->ops->drain(c);
    }
    if (!w->retire_timer_on) {
        ev_timer_init(&w->retire_timer, on_retire_tick, 0.25, 0.25);
        w->retire_timer.data = w;
        ev_timer_start(w->loop, &w->retire_timer);
        w->retire_timer_on = true;
    }
}

/* The socket of an unchanged listener moves to the new snapshot's copy of it; nothing else. */
static int take_socket(mp_worker_t *w, mp_wlistener_t *nl)
{
    for (uint32_t j = 0; j < w->n_listeners; j++) {
        mp_wlistener_t *ol = &w->listeners[j];
        if (ol->fd < 0 || !same_listener(ol->listener, nl->listener))
            continue;
        ev_io_stop(w->loop, &ol->io);
        nl->fd = ol->fd;
        ol->fd = -1;
        return 0;
    }
    return MP_ERROR;
}

static void open_listener(mp_worker_t *w, mp_wlistener_t *nl)
{
    mp_err_t err = {{0}};
    nl->fd = mp_net_listen(&nl->listener->addr, true, LISTEN_BACKLOG, &err);
    if (nl->fd < 0)
        mp_log_error("worker %u: listener %s: %s", w->index, nl->listener->name, err.msg);
}

/* Envoy's listener update: unchanged listeners keep their sockets and connections; new and
 * changed ones open (SO_REUSEPORT lets a changed one bind beside its old version) before the
 * removed and old versions stop accepting and drain. */
static void adopt_listeners(mp_worker_t *w, mp_config_t *next)
{
    mp_wlistener_t *nls = mp_xcalloc(next->n_listeners ? next->n_listeners : 1, sizeof(*nls));
    for (uint32_t i = 0; i < next->n_listeners; i++) {
        nls[i].listener = &next->listeners[i];
        nls[i].worker = w;
        nls[i].fd = -1;
        if (take_socket(w, &nls[i]) != 0)
            open_listener(w, &nls[i]);
    }
    for (uint32_t j = 0; j < w->n_listeners; j++) {
        mp_wlistener_t *ol = &w->listeners[j];
        if (ol->fd < 0)
            continue;
        ev_io_stop(w->loop, &ol->io);
        /* Closing a SO_REUSEPORT socket resets the connections in its accept queue: take them
         * first (on the old version, whose connections drain next). */
        on_accept(w->loop, &ol->io, EV_READ);
        close(ol->fd);
        ol->fd = -1;
        retire_connections(w, ol->listener->name);
    }
    free(w->listeners);
    w->listeners = nls;
    w->n_listeners = next->n_listeners;
    for (uint32_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i].fd >= 0)
            start_accepting(w, &w->listeners[i]);
}

static void check_drained(mp_worker_t *w)
{
    /* TCP proxy connections have no request boundary to close at: they run to their end or to
     * the deadline. */
    if ((w->conns == NULL && w->tcp_conns == NULL) ||
        mp_now_ms() >= atomic_load(&w->drain_deadline_ms)) {
        while (w->conns != NULL)
            w->conns->ops->close(w->conns, "drain deadline");
        mp_tcp_proxy_close_all(w, "drain deadline");
        ev_timer_stop(w->loop, &w->drain_timer);
        ev_break(w->loop, EVBREAK_ALL);
    }
}

static void on_drain_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    check_drained(t->data);
}

static void begin_drain(mp_worker_t *w)
{
    if (w->draining)
        return;
    w->draining = true;
    stop_listeners(w);
    mp_listener_close_inspecting(w);
    for (mp_hconn_t *c = w->conns, *next; c != NULL; c = next) {
        next = c->next;
        c->ops->drain(c);
    }
    ev_timer_init(&w->drain_timer, on_drain_tick, 0.05, 0.05);
    w->drain_timer.data = w;
    ev_timer_start(w->loop, &w->drain_timer);
}

static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    mp_worker_t *w = a->data;
    mp_config_t *next = atomic_exchange(&w->next_config, NULL);
    if (next != NULL) {
        /* New connections use the new snapshot; pools follow it.  Open connections and streams
         * keep refs on the snapshot they started with. */
        if (!w->draining)
            adopt_listeners(w, next);
        adopt_pools(w, next);
        mp_config_unref(w->config);
        w->config = next;
    }
    if (atomic_load(&w->drain_requested))
        begin_drain(w);
}

mp_worker_t *mp_worker_new(unsigned index, mp_config_t *cfg, mp_err_t *err)
{
    mp_worker_t *w = mp_xcalloc(1, sizeof(*w));
    w->index = index;
    w->config = mp_config_ref(cfg);
    w->n_listeners = cfg->n_listeners;
    w->listeners = mp_xcalloc(cfg->n_listeners, sizeof(*w->listeners));
    for (uint32_t i = 0; i < cfg->n_listeners; i++)
        w->listeners[i].fd = -1;
    for (uint32_t i = 0; i < cfg->n_listeners; i++) {
        mp_wlistener_t *wl = &w->listeners[i];
        wl->listener = &cfg->listeners[i];
        wl->worker = w;
        wl->fd = mp_net_listen(&wl->listener->addr, true, LISTEN_BACKLOG, err);
        if (wl->fd < 0) {
            mp_err_prefix(err, "listener %s: ", wl->listener->name);
            goto out_free;
        }
    }
    return w;
out_free:
    for (uint32_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i].fd >= 0)
            close(w->listeners[i].fd);
    free(w->listeners);
    mp_config_unref(w->config);
    free(w);
    return NULL;
}

mp_worker_t *mp_worker_new_inline(mp_config_t *cfg, struct ev_loop *loop)
{
    mp_worker_t *w = mp_xcalloc(1, sizeof(*w));
    w->config = mp_config_ref(cfg);
    w->loop = loop;
    ev_check_init(&w->reaper, on_reap);
    w->reaper.data = w;
    ev_check_start(loop, &w->reaper);
    ev_prepare_init(&w->deferrer, on_prepare);
    w->deferrer.data = w;
    ev_prepare_start(loop, &w->deferrer);
    mp_pools_init(w);
    return w;
}

void mp_worker_free_inline(mp_worker_t *w)
{
    while (w->conns != NULL)
        w->conns->ops->close(w->conns, "worker freed");
    on_prepare(w->loop, &w->deferrer, 0);
    ev_check_stop(w->loop, &w->reaper);
    ev_prepare_stop(w->loop, &w->deferrer);
    mp_pools_free(w);
    free_graves(w);
    mp_config_unref(w->config);
    free(w);
}

static void *worker_main(void *arg)
{
    mp_worker_t *w = arg;
    mp_stats_thread_init();
    ev_run(w->loop, 0);
    free_graves(w);
    atomic_store(&w->exited, true);
    return NULL;
}

int mp_worker_start(mp_worker_t *w, mp_err_t *err)
{
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (w->loop == NULL)
        return mp_err_set(err, "worker %u: cannot create event loop", w->index);
    ev_async_init(&w->wake, on_wake);
    w->wake.data = w;
    ev_async_start(w->loop, &w->wake);
    ev_check_init(&w->reaper, on_reap);
    w->reaper.data = w;
    ev_check_start(w->loop, &w->reaper);
    ev_prepare_init(&w->deferrer, on_prepare);
    w->deferrer.data = w;
    ev_prepare_start(w->loop, &w->deferrer);
    for (uint32_t i = 0; i < w->n_listeners; i++)
        start_accepting(w, &w->listeners[i]);
    mp_pools_init(w);
    /* Signals belong to the main thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return mp_err_set(err, "worker %u: pthread_create: %s", w->index, strerror(rc));
    return 0;
}

void mp_worker_publish(mp_worker_t *w, mp_config_t *cfg)
{
    mp_config_t *old = atomic_exchange(&w->next_config, mp_config_ref(cfg));
    if (old != NULL)
        mp_config_unref(old);
    ev_async_send(w->loop, &w->wake);
}

void mp_worker_drain(mp_worker_t *w, uint64_t deadline_ms)
{
    atomic_store(&w->drain_deadline_ms, deadline_ms);
    atomic_store(&w->drain_requested, true);
    ev_async_send(w->loop, &w->wake);
}

void mp_worker_join(mp_worker_t *w)
{
    pthread_join(w->thread, NULL);
    stop_listeners(w);
    if (w->retire_timer_on)
        ev_timer_stop(w->loop, &w->retire_timer);
    mp_pools_free(w);
    free_graves(w);
    mp_config_t *next = atomic_exchange(&w->next_config, NULL);
    if (next != NULL)
        mp_config_unref(next);
    mp_config_unref(w->config);
    ev_loop_destroy(w->loop);
    free(w->listeners);
    free(w);
}

bool mp_worker_exited(const mp_worker_t *w)
{
    return atomic_load(&w->exited);
}

unsigned mp_worker_active_connections(const mp_worker_t *w)
{
    return atomic_load(&w->active_conns);
}
