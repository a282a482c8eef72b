/* From the command line to a runtime snapshot: read the bootstrap (file, --config-yaml, or the
 * embedded default), map it onto envoy.config.bootstrap.v3.Bootstrap through the one schema, and
 * translate it.  Main thread. */
#ifndef MAGPIE_BOOTSTRAP_H
#define MAGPIE_BOOTSTRAP_H

#include <stdbool.h>

#include <protobuf-c/protobuf-c.h>

#include "magpie/common.h"
#include "magpie/config.h"

typedef enum mp_mode {
    MP_MODE_SERVE,
    MP_MODE_VALIDATE,
} mp_mode_t;

typedef struct mp_options {
    const char *config_path; /* -c */
    const char *config_yaml; /* --config-yaml, merged over the file as Envoy does */
    unsigned concurrency;    /* --concurrency, default 2 */
    mp_mode_t mode;
    const char *log_level;
    const char *service_node;
    const char *service_cluster;
    unsigned drain_time_s; /* default 600 as Envoy; tests pass small values */
} mp_options_t;

/* The embedded default: listener 127.0.0.1:15001 -> cluster 127.0.0.1:8080, admin 127.0.0.1:15000.
 */
extern const char mp_bootstrap_default_yaml[];

/* Loads and translates.  *used_default is set when no config was given.  NULL with err set
 * (the JSON path first) on any failure. */
mp_config_t *mp_bootstrap_load(const mp_options_t *opts, bool *used_default, mp_err_t *err);

/* Translates a validated Bootstrap message (envoy.config.bootstrap.v3.Bootstrap) into a
 * snapshot; the snapshot takes ownership of msg.  NULL with err set; msg is freed either way. */
mp_config_t *mp_translate_bootstrap(ProtobufCMessage *msg, const mp_options_t *opts, mp_err_t *err);

/* The same, for a snapshot that follows prev (may be NULL): a cluster whose Cluster message
 * packs to the same bytes as prev's cluster of that name is shared (a ref), not rebuilt, so its
 * state carries over (docs/dynamic-config.md).  Main thread. */
mp_config_t *mp_translate_bootstrap_next(ProtobufCMessage *msg, const mp_options_t *opts,
                                         const mp_config_t *prev, mp_err_t *err);

/* EDS: the host set that ClusterLoadAssignment cla gives cluster c (finished, hosts without
 * health: the caller adopts the current set's, then publishes), or NULL with err set.  *fits is
 * false when cla's localities or overprovisioning differ from c's: hosts index c->localities,
 * which workers read, so such a change needs a new cluster object (a snapshot rebuild). */
mp_hostset_t *mp_translate_eds_hosts(const mp_cluster_t *c, const ProtobufCMessage *cla, bool *fits,
                                     mp_err_t *err);

#endif
