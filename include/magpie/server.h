/* The process: the main thread's loop, the current snapshot, the workers and the flags the admin
 * server and signals act on.  One per process, created by main. */
#ifndef MAGPIE_SERVER_H
#define MAGPIE_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "magpie/bootstrap.h"
#include "magpie/config.h"
#include "magpie/stats.h"

struct ev_loop;
typedef struct mp_worker mp_worker_t;

typedef struct mp_server_stats {
    mp_stat_id_t live, uptime, concurrency, state, days_until_first_cert_expiring, memory_allocated,
        total_connections, healthcheck_failed,
        live_slices; /* buffer slices in use (not cached): a leak shows here */
} mp_server_stats_t;

typedef struct mp_server {
    struct ev_loop *loop; /* main thread's loop */
    mp_options_t opts;
    _Atomic(mp_config_t *) config; /* current snapshot; the server holds one ref */
    mp_worker_t **workers;
    unsigned n_workers;
    atomic_bool healthcheck_failed; /* /healthcheck/fail: /ready answers 503 */
    atomic_bool draining;           /* shutting down: stop accepting, drain */
    uint64_t start_ms;
    mp_server_stats_t stats;
    void *admin; /* proxy/admin.c state, or NULL */
    void *dns;   /* proxy/dns.c state, or NULL */
    void *hc;    /* proxy/health_check.c state (mp_hc_t), or NULL */
} mp_server_t;

/* The running server (set by main); for the admin server and signal handlers on the main thread. */
extern mp_server_t *mp_server;

/* Takes a ref on the current snapshot; any thread.  Release with mp_config_unref. */
mp_config_t *mp_server_config_acquire(mp_server_t *s);

/* Runs the server until shutdown: admin, DNS for clusters, then workers and listeners once the
 * clusters are initialised.  Main thread.  Returns 0 after a clean shutdown, MP_ERROR with err
 * set when start-up fails. */
int mp_server_run(mp_server_t *s, mp_err_t *err);

/* Starts a graceful shutdown: listeners stop accepting, in-flight requests get up to
 * opts.drain_time_s, then the process exits 0.  Main thread; safe to call twice. */
void mp_server_shutdown(mp_server_t *s);

#endif
