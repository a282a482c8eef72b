/* Directory watches with a debounce (include/magpie/dir_watch.h). */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/evp.h>

#include "magpie/dir_watch.h"
#include "magpie/log.h"

/* A writer's burst (truncate, writes, close; or temp file, rename) lands within this; a check
 * that still catches a half-written file is rejected and the next event retries it. */
#define DEBOUNCE_S 0.1
#define SOURCE_MAX (4u << 20)
#define INOTIFY_MASK                                                                               \
    (IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |            \
     IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF)

struct mp_dir_watch {
    struct ev_loop *loop;
    mp_dir_watch_cb cb;
    void *ctx;
    char *what; /* "sds", "lds", ... for logs */
    int fd;
    ev_io io;
    ev_timer debounce;
    char **dirs;
    uint32_t n_dirs;
};

void mp_file_digest(const char *path, uint8_t out[32])
{
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    EVP_DigestInit_ex(h, EVP_sha256(), NULL);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int e = errno;
        EVP_DigestUpdate(h, "\0missing", 8);
        EVP_DigestUpdate(h, &e, sizeof(e));
    } else {
        char buf[16384];
        size_t n, total = 0;
        while (total < SOURCE_MAX && (n = fread(buf, 1, sizeof(buf), f)) > 0) {
            EVP_DigestUpdate(h, buf, n);
            total += n;
        }
        fclose(f);
    }
    unsigned int len = 0;
    EVP_DigestFinal_ex(h, out, &len);
    EVP_MD_CTX_free(h);
}

static void on_debounce(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_dir_watch_t *w = t->data;
    w->cb(w->ctx);
}

static void on_inotify(struct ev_loop *loop, ev_io *io, int revents)
{
    mp_dir_watch_t *w = io->data;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool any = false;
    for (int rounds = 0; rounds < 64; rounds++) {
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n <= 0)
            break; /* EAGAIN: drained */
        any = true;
    }
    if (!any)
        return;
    /* Each event pushes the callback back: it runs once the burst is over. */
    ev_timer_stop(loop, &w->debounce);
    ev_timer_set(&w->debounce, DEBOUNCE_S, 0.0);
    ev_timer_start(loop, &w->debounce);
}

mp_dir_watch_t *mp_dir_watch_new(struct ev_loop *loop, mp_dir_watch_cb cb, void *ctx,
                                 const char *what, mp_err_t *err)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) {
        mp_err_set(err, "%s: inotify_init1: %s", what, strerror(errno));
        return NULL;
    }
    mp_dir_watch_t *w = mp_xcalloc(1, sizeof(*w));
    w->loop = loop;
    w->cb = cb;
    w->ctx = ctx;
    w->what = mp_xstrdup(what);
    w->fd = fd;
    ev_io_init(&w->io, on_inotify, fd, EV_READ);
    w->io.data = w;
    ev_io_start(loop, &w->io);
    ev_timer_init(&w->debounce, on_debounce, DEBOUNCE_S, 0.0);
    w->debounce.data = w;
    return w;
}

static int watch_dir_of(mp_dir_watch_t *w, const char *path)
{
    char *copy = mp_xstrdup(path);
    char *dir = mp_xstrdup(dirname(copy));
    free(copy);
    for (uint32_t i = 0; i < w->n_dirs; i++) {
        if (strcmp(w->dirs[i], dir) == 0) {
            free(dir);
            return 0;
        }
    }
    if (inotify_add_watch(w->fd, dir, INOTIFY_MASK) < 0) {
        mp_log_warn("%s: cannot watch %s (for %s): %s; changes will not be seen", w->what, dir,
                    path, strerror(errno));
        free(dir);
        return MP_ERROR;
    }
    w->dirs = mp_xrealloc(w->dirs, (w->n_dirs + 1) * sizeof(*w->dirs));
    w->dirs[w->n_dirs++] = dir;
    return 0;
}

/* inotify returns the same watch for a directory already watched, so repeating this after every
 * callback costs one system call. */
static void watch_target_of(mp_dir_watch_t *w, const char *path)
{
    char *real = realpath(path, NULL);
    if (real == NULL)
        return;
    if (strcmp(real, path) != 0)
        inotify_add_watch(w->fd, dirname(real), INOTIFY_MASK);
    free(real);
}

int mp_dir_watch_add(mp_dir_watch_t *w, const char *path)
{
    int rc = watch_dir_of(w, path);
    watch_target_of(w, path);
    return rc;
}

uint32_t mp_dir_watch_count(const mp_dir_watch_t *w)
{
    return w->n_dirs;
}

void mp_dir_watch_free(mp_dir_watch_t *w)
{
    if (w == NULL)
        return;
    ev_io_stop(w->loop, &w->io);
    ev_timer_stop(w->loop, &w->debounce);
    close(w->fd);
    for (uint32_t i = 0; i < w->n_dirs; i++)
        free(w->dirs[i]);
    free(w->dirs);
    free(w->what);
    free(w);
}
