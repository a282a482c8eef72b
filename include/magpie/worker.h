/* Worker threads (DESIGN.md, "Threads"): each runs its own libev loop with its own
 * SO_REUSEPORT listen sockets, connection pools and stats shard.  The main thread creates them,
 * publishes snapshots to them and asks them to drain. */
#ifndef MAGPIE_WORKER_H
#define MAGPIE_WORKER_H

#include <stdbool.h>

#include "magpie/common.h"
#include "magpie/config.h"

typedef struct mp_worker mp_worker_t;

/* Creates worker `index` and binds its listen sockets for cfg's listeners (so a bind error is
 * reported before any thread starts).  Main thread.  NULL with err set. */
mp_worker_t *mp_worker_new(unsigned index, mp_config_t *cfg, mp_err_t *err);

/* Starts the thread.  Main thread. */
int mp_worker_start(mp_worker_t *w, mp_err_t *err);

/* Hands the worker a new snapshot (the worker takes its own ref); any thread.  The worker picks
 * it up between events; connections keep the snapshot they started on. */
void mp_worker_publish(mp_worker_t *w, mp_config_t *cfg);

/* Asks the worker to stop accepting and to finish in-flight requests within deadline_ms, then
 * to exit its loop.  Any thread. */
void mp_worker_drain(mp_worker_t *w, uint64_t deadline_ms);

/* Waits for the thread to end and frees the worker.  Main thread. */
void mp_worker_join(mp_worker_t *w);

/* True once the worker's loop has ended (after a drain); any thread. */
bool mp_worker_exited(const mp_worker_t *w);

/* Live downstream connections of this worker (for the drain wait); any thread. */
unsigned mp_worker_active_connections(const mp_worker_t *w);

#endif
