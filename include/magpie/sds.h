/* Certificate rotation from file-based SDS: the main thread watches the files that TLS contexts
 * were built from (include/magpie/tls.h, "sources") with inotify and, when their contents
 * change, rebuilds each affected context and publishes its new SSL_CTX (docs/security.md,
 * "Certificate rotation").  One watcher per process. */
#ifndef MAGPIE_SDS_H
#define MAGPIE_SDS_H

#include "magpie/common.h"
#include "magpie/config.h"

struct ev_loop;

/* Starts watching the directories of every source of cfg's TLS contexts (cfg->tls_ctxs) and
 * records the files' current contents.  Takes a ref on cfg until mp_sds_watch_stop.  Nothing to
 * watch is not an error.  Returns 0, or MP_ERROR with err set when inotify is unavailable.
 * Main thread. */
int mp_sds_watch_start(struct ev_loop *loop, mp_config_t *cfg, mp_err_t *err);

/* Stops the watcher and drops its ref; safe without a start.  Main thread. */
void mp_sds_watch_stop(void);

/* Looks at every source of cfg's contexts now; each context whose files changed is rebuilt and
 * published, or, if the new files do not make a valid context, left as it is with the error
 * logged and sds.<secret>.update_rejected counted.  Returns the number of contexts rotated.
 * The watcher calls it after a burst of events; tests may call it directly.  Main thread. */
int mp_sds_check(mp_config_t *cfg);

#endif
