/* Circuit breaking on the HTTP/1.1 pool: requests that found max_connections reached wait here,
 * in arrival order, for a connection of their pool to go idle or close (Envoy's pending
 * requests).  A waiter is the stream's upstream request until then, so that the stream ending
 * (client gone, timeout, drain) takes it out of the queue through the ordinary detach. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/circuit.h"
#include "magpie/stats.h"
#include "stream_internal.h"

/* Envoy's text for a request refused by a circuit breaker. */
#define OVERFLOW_BODY                                                                              \
    "upstream connect error or disconnect/reset before headers. reset reason: overflow"

typedef struct mp_pool_waiter {
    mp_ustream_t us;
    mp_pool_t *pool;
    struct mp_pool_waiter *next;
} mp_pool_waiter_t;

void mp_stream_overflow(mp_stream_t *s)
{
    mp_stats_inc(s->cluster->stats.upstream_rq_pending_overflow);
    mp_stream_local_reply(s, 503, MP_RF_UPSTREAM_OVERFLOW, OVERFLOW_BODY,
                          "upstream_reset_before_response_started{overflow}");
}

static void unlink_waiter(mp_pool_waiter_t *wt)
{
    mp_pool_t *pool = wt->pool;
    mp_pool_waiter_t *prev = NULL;
    for (mp_pool_waiter_t *p = pool->waiting; p != NULL; prev = p, p = p->next) {
        if (p != wt)
            continue;
        if (prev != NULL)
            prev->next = p->next;
        else
            pool->waiting = p->next;
        if (pool->waiting_tail == p)
            pool->waiting_tail = prev;
        break;
    }
    wt->next = NULL;
}

/* Nothing is sent before a connection is found: the stream keeps the request bytes. */
static void waiter_send_head(mp_ustream_t *u, mp_http_msg_t *req, bool end_stream)
{
}

static void waiter_send_data(mp_ustream_t *u, mp_slice_t *slice, const char *data, size_t len)
{
}

static void waiter_send_end(mp_ustream_t *u, const mp_headers_t *trailers)
{
}

static size_t waiter_queued(const mp_ustream_t *u)
{
    return 0;
}

static void waiter_block_read(mp_ustream_t *u, bool block)
{
}

/* The stream gave up while waiting: its pending unit goes back. */
static void waiter_detach(mp_ustream_t *u, bool abort)
{
    mp_pool_waiter_t *wt = (mp_pool_waiter_t *)u;
    mp_stream_t *s = u->stream;
    unlink_waiter(wt);
    if (s != NULL)
        mp_cb_release(s->cluster, s->priority, MP_CB_PENDING_REQUESTS);
    free(wt);
}

static const mp_up_ops_t waiter_ops = {
    .send_head = waiter_send_head,
    .send_data = waiter_send_data,
    .send_end = waiter_send_end,
    .queued = waiter_queued,
    .block_read = waiter_block_read,
    .detach = waiter_detach,
};

void mp_pool__wait(mp_pool_t *pool, mp_stream_t *s)
{
    mp_pool_waiter_t *wt = mp_xcalloc(1, sizeof(*wt));
    wt->us.ops = &waiter_ops;
    wt->us.stream = s;
    wt->pool = pool;
    if (pool->waiting_tail != NULL)
        pool->waiting_tail->next = wt;
    else
        pool->waiting = wt;
    pool->waiting_tail = wt;
    s->up = &wt->us;
}

void mp_pool__kick(mp_pool_t *pool)
{
    if (pool->waiting != NULL && pool->w != NULL)
        mp_worker_defer(pool->w, &pool->wake);
}

/* Takes the first waiter off the queue; its stream keeps the pending unit for the next try. */
static mp_stream_t *pop_waiter(mp_pool_t *pool)
{
    mp_pool_waiter_t *wt = pool->waiting;
    pool->waiting = wt->next;
    if (pool->waiting == NULL)
        pool->waiting_tail = NULL;
    mp_stream_t *s = wt->us.stream;
    s->up = NULL;
    free(wt);
    return s;
}

/* An idle connection to a host no waiter wants still holds a place under max_connections:
 * closing it lets the first waiter connect where it was sent. */
static bool free_a_place(mp_pool_t *pool)
{
    if (pool->idle == NULL)
        return false;
    mp_uconn_close(pool->idle);
    return true;
}

/* Runs after the event that freed a place: each waiter, in order, takes an idle connection to
 * its host, or a new connection while max_connections allows, and the rest wait on. */
static void on_wake(mp_deferred_t *d)
{
    mp_pool_t *pool = (mp_pool_t *)((char *)d - offsetof(mp_pool_t, wake));
    for (unsigned guard = 0; pool->waiting != NULL && guard < 1024; guard++) {
        mp_stream_t *s = pool->waiting->us.stream;
        const mp_host_t *host = &s->hosts->hosts[s->host_idx];
        bool idle = false;
        for (mp_uconn_t *u = pool->idle; u != NULL && !idle; u = u->next_idle)
            idle = u->addr.len == host->addr.len &&
                   memcmp(&u->addr.ss, &host->addr.ss, host->addr.len) == 0;
        bool cx = !idle && mp_cb_try_acquire(s->cluster, s->priority, MP_CB_CONNECTIONS);
        if (!idle && !cx && !free_a_place(pool))
            return; /* no place yet: a connection closing or going idle kicks again */
        if (!idle && !cx)
            continue;
        s = pop_waiter(pool);
        if (idle) {
            mp_cb_release(s->cluster, s->priority, MP_CB_PENDING_REQUESTS);
            mp_h1__reuse_idle(s, pool, host);
        } else {
            mp_h1__open(s, pool, host, true);
        }
    }
}

void mp_pool__init_wake(mp_pool_t *pool)
{
    pool->wake.fn = on_wake;
}

void mp_pool__fail_waiters(mp_pool_t *pool)
{
    while (pool->waiting != NULL) {
        mp_stream_t *s = pop_waiter(pool);
        mp_cb_release(s->cluster, s->priority, MP_CB_PENDING_REQUESTS);
        mp_stream_overflow(s);
    }
}
