/* Applying a new snapshot while serving (docs/dynamic-config.md, docs/architecture.md
 * "Configuration updates").  Main thread. */
#ifndef MAGPIE_APPLY_H
#define MAGPIE_APPLY_H

#include "magpie/config.h"
#include "magpie/server.h"

/* Makes next (its ref passes to the server) the current snapshot: clusters it no longer lists
 * stop resolving DNS, health checking and outlier detection; clusters new to it start them
 * (clusters it shares with the current snapshot keep theirs running); the SDS watcher follows
 * the new TLS contexts; workers get next (mp_worker_publish) and, on their own threads, open new
 * and changed listeners, drain removed and changed ones, and keep shared clusters' pools.
 * Before start-up has begun the modules (s->dns NULL) this only swaps the snapshot.  Also sets
 * listener_manager.total_listeners_* and cluster_manager.active_clusters.  Main thread. */
void mp_server_apply(mp_server_t *s, mp_config_t *next);

/* Registers the gauges above and sets them for the current snapshot.  Main thread. */
void mp_apply_init_stats(mp_server_t *s);

#endif
