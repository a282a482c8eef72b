/* Watching files for changes the way Kubernetes and editors change them: inotify on the
 * directory that holds each file (a rename over the file or a `..data` symlink swap is seen, a
 * watch on the old inode would not be), a short debounce so that a writer's burst yields one
 * callback, and contents compared by SHA-256 by the caller (mp_file_digest) so that events on
 * unrelated neighbours cost a read and nothing else.  Used by the SDS certificate watcher and
 * by file-based LDS/CDS (include/magpie/file_source.h).  Main thread only. */
#ifndef MAGPIE_DIR_WATCH_H
#define MAGPIE_DIR_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include "magpie/common.h"

struct ev_loop;
typedef struct mp_dir_watch mp_dir_watch_t;

/* Called on the loop once a burst of events in any watched directory is over. */
typedef void (*mp_dir_watch_cb)(void *ctx);

/* A watcher with no directory yet.  NULL with err set when inotify is unavailable. */
mp_dir_watch_t *mp_dir_watch_new(struct ev_loop *loop, mp_dir_watch_cb cb, void *ctx,
                                 const char *what, mp_err_t *err);

/* Watches the directory of path (once per directory) and, when path is a symlink, the directory
 * it resolves to now.  Call again after each callback for paths that may be symlinks: a swap
 * moves the target.  Returns 0 or MP_ERROR (logged; the file will not be followed). */
int mp_dir_watch_add(mp_dir_watch_t *w, const char *path);

/* Number of directories watched (for the start-up log line). */
uint32_t mp_dir_watch_count(const mp_dir_watch_t *w);

/* Stops and frees; NULL is fine.  No callback runs after. */
void mp_dir_watch_free(mp_dir_watch_t *w);

/* SHA-256 of the file's first 4 MiB; a missing or unreadable file hashes as its errno, so that
 * its return counts as a change.  Any thread. */
void mp_file_digest(const char *path, uint8_t out[32]);

#endif
