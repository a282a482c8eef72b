/* magpie-cp: publishing directory changes.  inotify events restart a debounce timer; when it
 * fires the directory is read again, and the live snapshot follows it (all at once, or one
 * resource per SIGUSR1 in step mode).  A directory with an invalid file is not published: the
 * last good snapshot keeps being served and the error is logged. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "cp.h"
#include "magpie/log.h"

/* Where x stands against y in push order (type, then name); a missing side (NULL) sorts last,
 * so a walk over two sorted snapshots sees the other side's leftovers as additions/removals. */
static int order(const mp_cp_resource_t *x, const mp_cp_resource_t *y)
{
    if (x == NULL)
        return 1;
    if (y == NULL)
        return -1;
    return x->type != y->type ? x->type - y->type : strcmp(x->name, y->name);
}

/* The first difference between two sorted snapshots, in push order: *a indexes live, *b disk
 * (-1 when the resource is absent on that side).  Returns false when they are equal. */
static bool first_diff(const mp_cp_snapshot_t *live, const mp_cp_snapshot_t *disk, long *a, long *b)
{
    size_t i = 0, j = 0;
    while (i < live->n || j < disk->n) {
        const mp_cp_resource_t *x = i < live->n ? &live->res[i] : NULL;
        const mp_cp_resource_t *y = j < disk->n ? &disk->res[j] : NULL;
        int c = order(x, y);
        if (c == 0 && strcmp(x->version, y->version) == 0) {
            i++, j++;
            continue;
        }
        *a = c <= 0 ? (long)i : -1;
        *b = c >= 0 ? (long)j : -1;
        return true;
    }
    return false;
}

static size_t count_diffs(const mp_cp_snapshot_t *live, const mp_cp_snapshot_t *disk,
                          bool changed[MP_CP_NTYPES])
{
    size_t n = 0, i = 0, j = 0;
    while (i < live->n || j < disk->n) {
        const mp_cp_resource_t *x = i < live->n ? &live->res[i] : NULL;
        const mp_cp_resource_t *y = j < disk->n ? &disk->res[j] : NULL;
        int c = order(x, y);
        if (c != 0 || strcmp(x->version, y->version) != 0) {
            n++;
            changed[c <= 0 ? x->type : y->type] = true;
        }
        i += c <= 0;
        j += c >= 0;
    }
    return n;
}

size_t mp_cp_store_pending(const mp_cp_store_t *s)
{
    bool changed[MP_CP_NTYPES] = {0};
    return s->step ? count_diffs(&s->live, &s->disk, changed) : 0;
}

static void bump(mp_cp_store_t *s, int type)
{
    s->version[type]++;
    snprintf(s->version_str[type], sizeof(s->version_str[type]), "%llu",
             (unsigned long long)s->version[type]);
}

static void copy_resource(mp_cp_resource_t *dst, const mp_cp_resource_t *src)
{
    dst->type = src->type;
    dst->name = mp_xstrdup(src->name);
    dst->version = mp_xstrdup(src->version);
    dst->file = mp_xstrdup(src->file);
    dst->len = src->len;
    dst->value = mp_xmalloc(src->len ? src->len : 1);
    memcpy(dst->value, src->value, src->len);
}

/* Step mode: moves live one resource towards disk.  Returns false when nothing was staged. */
static bool release_one(mp_cp_store_t *s)
{
    long a, b;
    if (!first_diff(&s->live, &s->disk, &a, &b))
        return false;
    mp_cp_snapshot_t *l = &s->live;
    const mp_cp_resource_t *src = b >= 0 ? &s->disk.res[b] : NULL;
    int type = src ? src->type : l->res[a].type;
    const char *what = a < 0 ? "added" : b < 0 ? "removed" : "changed";
    mp_log_info("step: %s %s \"%s\" (%s)", what, mp_cp_type(type)->name,
                src ? src->name : l->res[a].name, src ? src->file : l->res[a].file);
    if (a >= 0) {
        free(l->res[a].name), free(l->res[a].version), free(l->res[a].file), free(l->res[a].value);
        memmove(&l->res[a], &l->res[a + 1], (l->n - (size_t)a - 1) * sizeof(*l->res));
        l->n--;
    }
    if (src != NULL) {
        /* Insert at its sorted place: b is where it sits in disk, and live equals disk up to
         * that point. */
        l->res = mp_xrealloc(l->res, (l->n + 1) * sizeof(*l->res));
        memmove(&l->res[b + 1], &l->res[b], (l->n - (size_t)b) * sizeof(*l->res));
        copy_resource(&l->res[b], src);
        l->n++;
    }
    bump(s, type);
    return true;
}

static void publish_all(mp_cp_store_t *s, mp_cp_snapshot_t *fresh)
{
    bool changed[MP_CP_NTYPES] = {0};
    size_t n = count_diffs(&s->live, fresh, changed);
    mp_cp_snapshot_free(&s->live);
    s->live = *fresh;
    for (int t = 0; t < MP_CP_NTYPES; t++)
        if (changed[t]) {
            bump(s, t);
            mp_log_info("%s resources changed: version %s", mp_cp_type(t)->name, s->version_str[t]);
        }
    if (n > 0 && s->on_change)
        s->on_change(s->arg);
}

static void reload(mp_cp_store_t *s)
{
    mp_cp_snapshot_t fresh;
    mp_err_t err;
    if (mp_cp_snapshot_load(s->dir, &fresh, &err) != 0) {
        mp_log_error("%s: not published, still serving the last good snapshot: %s", s->dir,
                     err.msg);
        return;
    }
    if (!s->step) {
        publish_all(s, &fresh);
        return;
    }
    mp_cp_snapshot_free(&s->disk);
    s->disk = fresh;
    size_t n = mp_cp_store_pending(s);
    if (n > 0)
        mp_log_info("step: %zu change(s) staged; SIGUSR1 releases the next one", n);
}

static void on_debounce(struct ev_loop *loop, ev_timer *w, int revents)
{
    reload(w->data);
}

static void on_inotify(struct ev_loop *loop, ev_io *w, int revents)
{
    mp_cp_store_t *s = w->data;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    /* The events only say "something moved"; the reload reads everything, so drain and
     * coalesce them (editors write a file in several steps). */
    while (read(s->inotify_fd, buf, sizeof(buf)) > 0)
        ;
    ev_timer_again(loop, &s->debounce);
}

static void on_usr1(struct ev_loop *loop, ev_signal *w, int revents)
{
    mp_cp_store_t *s = w->data;
    if (!s->step)
        return;
    if (!release_one(s)) {
        mp_log_info("step: nothing staged");
        return;
    }
    mp_log_info("step: %zu change(s) still staged", mp_cp_store_pending(s));
    if (s->on_change)
        s->on_change(s->arg);
}

static int watch_dir(mp_cp_store_t *s, mp_err_t *err)
{
    s->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (s->inotify_fd < 0)
        return mp_err_set(err, "inotify_init1: %s", strerror(errno));
    uint32_t mask = IN_CLOSE_WRITE | IN_MODIFY | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                    IN_MOVED_TO | IN_ATTRIB;
    if (inotify_add_watch(s->inotify_fd, s->dir, mask) < 0)
        return mp_err_set(err, "%s: inotify_add_watch: %s", s->dir, strerror(errno));
    ev_io_init(&s->inotify_io, on_inotify, s->inotify_fd, EV_READ);
    s->inotify_io.data = s;
    ev_io_start(s->loop, &s->inotify_io);
    return 0;
}

int mp_cp_store_open(mp_cp_store_t *s, struct ev_loop *loop, const char *dir, bool step,
                     double debounce_s, mp_cp_change_cb on_change, void *arg, mp_err_t *err)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->dir = mp_xstrdup(dir);
    s->step = step;
    s->on_change = on_change;
    s->arg = arg;
    s->inotify_fd = -1;
    if (mp_cp_snapshot_load(dir, &s->live, err) != 0)
        return MP_ERROR;
    /* Step mode compares the directory with what is live: both start equal. */
    if (step && mp_cp_snapshot_load(dir, &s->disk, err) != 0)
        return MP_ERROR;
    for (int t = 0; t < MP_CP_NTYPES; t++)
        bump(s, t);
    ev_init(&s->debounce, on_debounce);
    s->debounce.repeat = debounce_s;
    s->debounce.data = s;
    ev_signal_init(&s->usr1, on_usr1, SIGUSR1);
    s->usr1.data = s;
    ev_signal_start(loop, &s->usr1);
    return watch_dir(s, err);
}

void mp_cp_store_close(mp_cp_store_t *s)
{
    if (s->inotify_fd >= 0) {
        ev_io_stop(s->loop, &s->inotify_io);
        close(s->inotify_fd);
    }
    ev_timer_stop(s->loop, &s->debounce);
    ev_signal_stop(s->loop, &s->usr1);
    mp_cp_snapshot_free(&s->live);
    mp_cp_snapshot_free(&s->disk);
    free(s->dir);
}
