/* File-based dynamic resources (docs/dynamic-config.md): the bootstrap's
 * dynamic_resources.lds_config / cds_config with path_config_source (or the deprecated `path`)
 * name a file holding a DiscoveryResponse (YAML or JSON) of Listener / Cluster resources.  The
 * main thread reads them at start, watches their directories (include/magpie/dir_watch.h) and,
 * when a file's contents change, builds a new snapshot from the static resources plus the
 * latest accepted dynamic ones and applies it (mp_server_apply).  A file that does not parse or
 * translate is rejected whole, logged and counted; the previous config stays.  Main thread. */
#ifndef MAGPIE_FILE_SOURCE_H
#define MAGPIE_FILE_SOURCE_H

#include <protobuf-c/protobuf-c.h>

#include "magpie/common.h"
#include "magpie/server.h"

/* Reads the files named by s's bootstrap (nothing to do when it names none) and, when they give
 * resources, replaces s->config with a snapshot that includes them; starts the watch.  A broken
 * file at start is rejected like a later one (the static resources serve).  Returns 0, or
 * MP_ERROR with err set when a config source is of a kind files cannot serve.  Before the
 * workers start. */
int mp_file_source_start(mp_server_t *s, mp_err_t *err);

/* Stops watching and frees what was kept; safe without a start. */
void mp_file_source_stop(void);

/* Reads the files now and applies a change (what the watcher does after a burst of events). */
void mp_file_source_check(void);

/* For the ADS client (include/magpie/ads_client.h): makes res (n Listener messages when lds,
 * else Cluster messages; ownership passes in, whatever the result) the accepted set of that
 * type and applies a snapshot of the bootstrap plus it plus the other type's accepted set.
 * Counts update_attempt / _success / _rejected like a file.  Returns 0, or MP_ERROR with err
 * set (the translator's message) and the previous configuration kept.  Main thread, after
 * mp_file_source_start. */
int mp_file_source_offer(bool lds, ProtobufCMessage **res, size_t n, const char *version,
                         mp_err_t *err);

/* For /config_dump: the version_info and the mp_now_ms() of the last accepted update of the
 * listener (lds) or cluster (cds) file, or NULL/0 when none. */
const char *mp_file_source_version(bool lds, uint64_t *last_updated_ms);

#endif
