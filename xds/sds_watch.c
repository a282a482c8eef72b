/* Certificate rotation: inotify on the directories of SDS files and the files their secrets
 * name, a short debounce, then a content check per context (include/magpie/sds.h).
 *
 * Directories, not files, are watched: Kubernetes and cert-manager replace a file by renaming a
 * new one over it (or by swapping the `..data` symlink of a projected volume), and a watch on
 * the old inode would see neither.  Any event in a watched directory schedules one check; the
 * check compares file contents (SHA-256), so temporary files and unrelated neighbours cost a
 * read and nothing else.  Main thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "translate_tls_internal.h"

#include "magpie/dir_watch.h"
#include "magpie/log.h"
#include "magpie/sds.h"
#include "magpie/stats.h"
#include "magpie/tls.h"

typedef struct sds_watch {
    mp_config_t *cfg; /* a ref */
    mp_dir_watch_t *dw;
} sds_watch_t;

static sds_watch_t *watch;

/* ---- contents ---- */

void mp_sds__digest_sources(mp_tls_ctx_t *ctx)
{
    for (uint32_t i = 0; i < ctx->n_sources; i++)
        mp_file_digest(ctx->sources[i].path, ctx->sources[i].digest);
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
        mp_file_digest(ctx->sources[i].path, d);
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

/* ---- inotify (include/magpie/dir_watch.h) ---- */

static void watch_sources(sds_watch_t *w)
{
    for (uint32_t i = 0; i < w->cfg->n_tls_ctxs; i++) {
        mp_tls_ctx_t *ctx = w->cfg->tls_ctxs[i];
        if (ctx->recipe == NULL)
            continue;
        for (uint32_t j = 0; j < ctx->n_sources; j++)
            mp_dir_watch_add(w->dw, ctx->sources[j].path);
    }
}

static void on_change(void *arg)
{
    sds_watch_t *w = arg;
    mp_sds_check(w->cfg);
    watch_sources(w); /* a symlink swap moved the targets */
}

int mp_sds_watch_start(struct ev_loop *loop, mp_config_t *cfg, mp_err_t *err)
{
    bool needed = false;
    for (uint32_t i = 0; i < cfg->n_tls_ctxs; i++)
        needed |= cfg->tls_ctxs[i]->recipe != NULL;
    if (!needed || watch != NULL)
        return 0;
    sds_watch_t *w = mp_xcalloc(1, sizeof(*w));
    w->dw = mp_dir_watch_new(loop, on_change, w, "sds", err);
    if (w->dw == NULL) {
        free(w);
        return MP_ERROR;
    }
    w->cfg = mp_config_ref(cfg);
    watch_sources(w);
    watch = w;
    uint32_t n = mp_dir_watch_count(w->dw);
    mp_log_info("sds: watching %u director%s for certificate rotation", n, n == 1 ? "y" : "ies");
    return 0;
}

void mp_sds_watch_stop(void)
{
    sds_watch_t *w = watch;
    if (w == NULL)
        return;
    watch = NULL;
    mp_dir_watch_free(w->dw);
    mp_config_unref(w->cfg);
    free(w);
}
