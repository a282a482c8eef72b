/* Certificate rotation: inotify on the directories of SDS files and the files their secrets
 * name, a short debounce, then a content check per context (include/magpie/sds.h).
 *
 * Directories, not files, are watched: Kubernetes and cert-manager replace a file by renaming a
 * new one over it (or by swapping the `..data` symlink of a projected volume), and a watch on
 * the old inode would see neither.  Any event in a watched directory schedules one check; the
 * check compares file contents (SHA-256), so temporary files and unrelated neighbours cost a
 * read and nothing else.  Main thread only. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/evp.h>

#include "translate_tls_internal.h"

#include "magpie/log.h"
#include "magpie/sds.h"
#include "magpie/stats.h"
#include "magpie/tls.h"

/* A writer's burst (truncate, writes, close; or temp file, rename) lands within this; a check
 * that still catches a half-written file is rejected and the next event retries it. */
#define DEBOUNCE_S 0.1
#define SOURCE_MAX (4u << 20)
#define INOTIFY_MASK                                                                               \
    (IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |            \
     IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF)

typedef struct sds_watch {
    struct ev_loop *loop;
    mp_config_t *cfg; /* a ref */
    int fd;
    ev_io io;
    ev_timer debounce;
    char **dirs;
    uint32_t n_dirs;
} sds_watch_t;

static sds_watch_t *watch;

/* ---- contents ---- */

/* SHA-256 of the file's bytes; a missing or unreadable file hashes as its errno, so that its
 * return is a change too. */
static void digest_file(const char *path, uint8_t out[32])
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

void mp_sds__digest_sources(mp_tls_ctx_t *ctx)
{
    for (uint32_t i = 0; i < ctx->n_sources; i++)
        digest_file(ctx->sources[i].path, ctx->sources[i].digest);
}

/* Whether source i's secret name already appeared among sources [0, i) that changed. */
static bool name_seen(const mp_tls_ctx_t *ctx, uint32_t i, const bool *changed)
{
    for (uint32_t j = 0; j < i; j++)
        if (changed[j] && strcmp(ctx->sources[j].secret, ctx->sources[i].secret) == 0)
            return true;
    return false;
}

/* sds.<name>.<what> once per secret among the changed sources. */
static void count_changed(const mp_tls_ctx_t *ctx, const bool *changed, const char *what)
{
    for (uint32_t i = 0; i < ctx->n_sources; i++)
        if (changed[i] && !name_seen(ctx, i, changed))
            mp_stats_inc(mp_stats_counterf("sds.%s.%s", ctx->sources[i].secret, what));
}

/* "secret \"a\" (/x/sds.yaml), secret \"b\" (/x/ca.pem)" for the changed sources. */
static void describe_changed(const mp_tls_ctx_t *ctx, const bool *changed, char *out, size_t cap)
{
    size_t off = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < ctx->n_sources && off < cap; i++) {
        if (!changed[i])
            continue;
        int n = snprintf(out + off, cap - off, "%ssecret \"%s\" (%s)", off ? ", " : "",
                         ctx->sources[i].secret, ctx->sources[i].path);
        off += n > 0 ? (size_t)n : 0;
    }
}

/* ---- one context ---- */

static void format_time(int64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void log_rotated(const mp_tls_ctx_t *ctx, const char *what)
{
    SSL_CTX *ssl = mp_tls_ctx_acquire(ctx);
    X509 *leaf = SSL_CTX_get0_certificate(ssl);
    char serial[128] = "none", not_after[32] = "none";
    if (leaf != NULL) {
        mp_tls_x509_serial(leaf, serial, sizeof(serial));
        format_time(mp_tls_asn1_unix(X509_get0_notAfter(leaf)), not_after, sizeof(not_after));
    }
    int n_ca = ctx->verify_peer
                   ? sk_X509_OBJECT_num(X509_STORE_get0_objects(SSL_CTX_get_cert_store(ssl)))
                   : 0;
    mp_log_info("sds: rotated TLS context %s: %s; certificate serial %s notAfter %s, %d trusted "
                "CA(s)",
                ctx->stat_prefix, what, serial, not_after, n_ca);
    SSL_CTX_free(ssl);
}

/* Returns 1 when ctx was rotated, 0 when its files are unchanged, MP_ERROR when the new files
 * were rejected (the old certificate stays). */
static int check_ctx(mp_tls_ctx_t *ctx)
{
    bool changed[ctx->n_sources > 0 ? ctx->n_sources : 1];
    bool any = false;
    for (uint32_t i = 0; i < ctx->n_sources; i++) {
        uint8_t d[32];
        digest_file(ctx->sources[i].path, d);
        changed[i] = memcmp(d, ctx->sources[i].digest, sizeof(d)) != 0;
        any |= changed[i];
        memcpy(ctx->sources[i].digest, d, sizeof(d));
    }
    if (!any)
        return 0;
    char what[768];
    describe_changed(ctx, changed, what, sizeof(what));
    count_changed(ctx, changed, "update_attempt");
    mp_err_t err = {{0}};
    mp_tls_ctx_t *fresh = mp_translate__tls_rebuild(ctx, &err);
    if (fresh == NULL) {
        count_changed(ctx, changed, "update_rejected");
        mp_log_error("sds: rejected update of TLS context %s from %s, keeping the current "
                     "certificates: %s",
                     ctx->stat_prefix, what, err.msg);
        return MP_ERROR;
    }
    count_changed(ctx, changed, "update_success");
    mp_tls_ctx_publish(ctx, fresh);
    mp_sds__digest_sources(ctx); /* the sources are the new build's now */
    log_rotated(ctx, what);
    return 1;
}

int mp_sds_check(mp_config_t *cfg)
{
    int rotated = 0;
    for (uint32_t i = 0; cfg != NULL && i < cfg->n_tls_ctxs; i++) {
        mp_tls_ctx_t *ctx = cfg->tls_ctxs[i];
        if (ctx->recipe != NULL && check_ctx(ctx) == 1)
            rotated++;
    }
    return rotated;
}

/* ---- inotify ---- */

static void watch_sources(sds_watch_t *w, bool configured);

static void on_debounce(struct ev_loop *loop, ev_timer *t, int revents)
{
    sds_watch_t *w = t->data;
    mp_sds_check(w->cfg);
    watch_sources(w, false);
}

static void on_inotify(struct ev_loop *loop, ev_io *io, int revents)
{
    sds_watch_t *w = io->data;
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
    /* Each event pushes the check back: it runs once the burst is over. */
    ev_timer_stop(loop, &w->debounce);
    ev_timer_set(&w->debounce, DEBOUNCE_S, 0.0);
    ev_timer_start(loop, &w->debounce);
}

static void watch_dir_of(sds_watch_t *w, const char *path)
{
    char *copy = mp_xstrdup(path);
    char *dir = mp_xstrdup(dirname(copy));
    free(copy);
    for (uint32_t i = 0; i < w->n_dirs; i++) {
        if (strcmp(w->dirs[i], dir) == 0) {
            free(dir);
            return;
        }
    }
    if (inotify_add_watch(w->fd, dir, INOTIFY_MASK) < 0) {
        mp_log_warn("sds: cannot watch %s (for %s): %s; its certificates will not rotate", dir,
                    path, strerror(errno));
        free(dir);
        return;
    }
    w->dirs = mp_xrealloc(w->dirs, (w->n_dirs + 1) * sizeof(*w->dirs));
    w->dirs[w->n_dirs++] = dir;
}

/* A path that is a symlink (a projected volume's sds.yaml -> ..data/sds.yaml) is also watched
 * where it resolves to, so that a rewrite in place of the target is seen.  Re-done after every
 * check because a swap moves the target; inotify returns the same watch for a directory
 * already watched, so repeating it costs one system call. */
static void watch_target_of(sds_watch_t *w, const char *path)
{
    char *real = realpath(path, NULL);
    if (real == NULL)
        return;
    if (strcmp(real, path) != 0)
        inotify_add_watch(w->fd, dirname(real), INOTIFY_MASK);
    free(real);
}

static void watch_sources(sds_watch_t *w, bool configured)
{
    for (uint32_t i = 0; i < w->cfg->n_tls_ctxs; i++) {
        mp_tls_ctx_t *ctx = w->cfg->tls_ctxs[i];
        if (ctx->recipe == NULL)
            continue;
        for (uint32_t j = 0; j < ctx->n_sources; j++) {
            if (configured)
                watch_dir_of(w, ctx->sources[j].path);
            watch_target_of(w, ctx->sources[j].path);
        }
    }
}

int mp_sds_watch_start(struct ev_loop *loop, mp_config_t *cfg, mp_err_t *err)
{
    bool needed = false;
    for (uint32_t i = 0; i < cfg->n_tls_ctxs; i++)
        needed |= cfg->tls_ctxs[i]->recipe != NULL;
    if (!needed || watch != NULL)
        return 0;
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        return mp_err_set(err, "sds: inotify_init1: %s", strerror(errno));
    sds_watch_t *w = mp_xcalloc(1, sizeof(*w));
    w->loop = loop;
    w->cfg = mp_config_ref(cfg);
    w->fd = fd;
    watch_sources(w, true);
    ev_io_init(&w->io, on_inotify, fd, EV_READ);
    w->io.data = w;
    ev_io_start(loop, &w->io);
    ev_timer_init(&w->debounce, on_debounce, DEBOUNCE_S, 0.0);
    w->debounce.data = w;
    watch = w;
    mp_log_info("sds: watching %u director%s for certificate rotation", w->n_dirs,
                w->n_dirs == 1 ? "y" : "ies");
    return 0;
}

void mp_sds_watch_stop(void)
{
    sds_watch_t *w = watch;
    if (w == NULL)
        return;
    watch = NULL;
    ev_io_stop(w->loop, &w->io);
    ev_timer_stop(w->loop, &w->debounce);
    close(w->fd);
    for (uint32_t i = 0; i < w->n_dirs; i++)
        free(w->dirs[i]);
    free(w->dirs);
    mp_config_unref(w->cfg);
    free(w);
}
