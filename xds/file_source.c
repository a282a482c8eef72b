/* LDS and CDS from files (include/magpie/file_source.h).
 *
 * Each update rebuilds the whole snapshot from the bootstrap (kept packed, as loaded) with the
 * accepted Listener and Cluster messages appended to its static_resources, so that one
 * translator, with its checks for duplicate names and addresses, serves both.  What must not be
 * rebuilt is shared instead: a Cluster that packs to the same bytes as before keeps its object
 * (mp_translate_bootstrap_next), and a worker keeps the sockets of a Listener that packs to the
 * same bytes (proxy/worker.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"

#include "magpie/apply.h"
#include "magpie/bootstrap.h"
#include "magpie/dir_watch.h"
#include "magpie/file_source.h"
#include "magpie/json_pb.h"
#include "magpie/health_check.h"
#include "magpie/log.h"
#include "magpie/resource_store.h"
#include "magpie/stats.h"

#define FILE_MAX (16u << 20)

typedef Envoy__Config__Bootstrap__V3__Bootstrap pb_bootstrap_t;
typedef Envoy__Config__Core__V3__ConfigSource pb_source_t;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse pb_response_t;

/* One watched file: its last contents' digest and the resources last accepted from it. */
typedef struct fsrc {
    const char *kind; /* "lds" or "cds" */
    const ProtobufCMessageDescriptor *type;
    char *path; /* NULL: not configured */
    uint8_t digest[32];
    ProtobufCMessage **res; /* accepted resources, owned */
    size_t n_res;
    char *version;
    uint64_t last_ms;
    mp_stat_id_t attempt, success, rejected;
} fsrc_t;

static struct {
    mp_server_t *s;
    mp_dir_watch_t *dw;
    uint8_t *bootstrap; /* packed, as loaded */
    size_t bootstrap_len;
    fsrc_t lds, cds;
    struct eds_file *eds; /* every EDS file a cluster of the current snapshot names */
    size_t n_eds;
} fs;

/* One EDS file (a DiscoveryResponse of ClusterLoadAssignment) and the names it last gave. */
typedef struct eds_file {
    char *path;
    uint8_t digest[32];
    char **names;
    size_t n_names;
} eds_file_t;

static void free_resources(ProtobufCMessage **res, size_t n)
{
    for (size_t i = 0; i < n; i++)
        protobuf_c_message_free_unpacked(res[i], NULL);
    free(res);
}

static bool source_is_ads(const pb_source_t *cs)
{
    return cs != NULL && cs->config_source_specifier_case ==
                             ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS;
}

static const char *source_path(const pb_source_t *cs, mp_err_t *err)
{
    if (cs == NULL || source_is_ads(cs))
        return NULL;
    if (cs->config_source_specifier_case ==
        ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH)
        return cs->path;
    if (cs->config_source_specifier_case ==
            ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH_CONFIG_SOURCE &&
        cs->path_config_source != NULL)
        return cs->path_config_source->path;
    mp_err_set(err, "only path_config_source (or path) config sources are served by files");
    return NULL;
}

static char *read_all(const char *path, size_t *len, mp_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        mp_err_set(err, "%s: cannot open", path);
        return NULL;
    }
    char *buf = mp_xmalloc(FILE_MAX + 1);
    *len = fread(buf, 1, FILE_MAX + 1, f);
    fclose(f);
    if (*len > FILE_MAX) {
        free(buf);
        mp_err_set(err, "%s: larger than %u bytes", path, FILE_MAX);
        return NULL;
    }
    buf[*len] = '\0';
    return buf;
}

static pb_response_t *parse_response(const char *path, mp_err_t *err)
{
    size_t len = 0;
    char *text = read_all(path, &len, err);
    if (text == NULL)
        return NULL;
    cJSON *json = mp_config_text_to_json(text, len, err);
    free(text);
    if (json == NULL)
        return NULL;
    ProtobufCMessage *m =
        mp_json_to_pb(&envoy__service__discovery__v3__discovery_response__descriptor, json, err);
    cJSON_Delete(json);
    return (pb_response_t *)m;
}

/* The file's resources, each unpacked to f->type.  Returns 0 with *out filled, or MP_ERROR. */
static int read_source(fsrc_t *f, ProtobufCMessage ***out, size_t *n, char **version, mp_err_t *err)
{
    pb_response_t *r = parse_response(f->path, err);
    if (r == NULL)
        return MP_ERROR;
    ProtobufCMessage **res = mp_xcalloc(r->n_resources ? r->n_resources : 1, sizeof(*res));
    for (size_t i = 0; i < r->n_resources; i++) {
        res[i] = mp_pb_any_unpack(&r->resources[i]->base, f->type, err);
        if (res[i] == NULL) {
            mp_err_prefix(err, "resources[%zu]: ", i);
            free_resources(res, i);
            protobuf_c_message_free_unpacked(&r->base, NULL);
            return MP_ERROR;
        }
    }
    *out = res;
    *n = r->n_resources;
    *version = mp_xstrdup(r->version_info ? r->version_info : "");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static ProtobufCMessage *copy_message(const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = mp_xmalloc(len ? len : 1);
    protobuf_c_message_pack(m, b);
    ProtobufCMessage *c = protobuf_c_message_unpack(m->descriptor, NULL, len, b);
    free(b);
    return c;
}

static void append(void ***arr, size_t *n, ProtobufCMessage **res, size_t n_res)
{
    /* protobuf-c frees these arrays with free(): mp_xrealloc is realloc that aborts on OOM. */
    *arr = mp_xrealloc(*arr, (*n + n_res + 1) * sizeof(void *));
    for (size_t i = 0; i < n_res; i++)
        (*arr)[(*n)++] = copy_message(res[i]);
}

/* The bootstrap as loaded, with lds's and cds's resources appended to its static resources. */
static ProtobufCMessage *merged_bootstrap(ProtobufCMessage **lds, size_t n_lds,
                                          ProtobufCMessage **cds, size_t n_cds)
{
    pb_bootstrap_t *b = (pb_bootstrap_t *)protobuf_c_message_unpack(
        &envoy__config__bootstrap__v3__bootstrap__descriptor, NULL, fs.bootstrap_len, fs.bootstrap);
    if (b->static_resources == NULL) {
        b->static_resources = mp_xmalloc(sizeof(*b->static_resources));
        envoy__config__bootstrap__v3__bootstrap__static_resources__init(b->static_resources);
    }
    Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = b->static_resources;
    append((void ***)&sr->listeners, &sr->n_listeners, lds, n_lds);
    append((void ***)&sr->clusters, &sr->n_clusters, cds, n_cds);
    return &b->base;
}

/* Builds and applies a snapshot from the given resources; 0, or MP_ERROR with err set. */
static int build_and_apply(ProtobufCMessage **lds, size_t n_lds, ProtobufCMessage **cds,
                           size_t n_cds, mp_err_t *err)
{
    ProtobufCMessage *msg = merged_bootstrap(lds, n_lds, cds, n_cds);
    mp_config_t *prev = atomic_load(&fs.s->config);
    mp_config_t *next = mp_translate_bootstrap_next(msg, &fs.s->opts, prev, err);
    if (next == NULL)
        return MP_ERROR;
    mp_server_apply(fs.s, next);
    return 0;
}

/* A file whose contents changed: its new resources, or NULL-free *changed false. */
typedef struct candidate {
    bool changed;
    ProtobufCMessage **res;
    size_t n;
    char *version;
} candidate_t;

static int read_candidate(fsrc_t *f, candidate_t *c)
{
    memset(c, 0, sizeof(*c));
    if (f->path == NULL)
        return 0;
    uint8_t d[32];
    mp_file_digest(f->path, d);
    if (memcmp(d, f->digest, sizeof(d)) == 0)
        return 0;
    memcpy(f->digest, d, sizeof(d));
    c->changed = true;
    mp_stats_inc(f->attempt);
    mp_err_t err = {{0}};
    if (read_source(f, &c->res, &c->n, &c->version, &err) != 0) {
        mp_log_warn("%s: %s: update rejected: %s", f->kind, f->path, err.msg);
        mp_stats_inc(f->rejected);
        c->changed = false;
        return MP_ERROR;
    }
    return 0;
}

static void accept_candidate(fsrc_t *f, candidate_t *c)
{
    free_resources(f->res, f->n_res);
    free(f->version);
    f->res = c->res;
    f->n_res = c->n;
    f->version = c->version;
    f->last_ms = mp_now_ms();
    mp_stats_inc(f->success);
    mp_log_info("%s: %s: version \"%s\" applied (%zu resources)", f->kind, f->path, f->version,
                f->n_res);
}

static void reject_candidate(fsrc_t *f, candidate_t *c, const char *why)
{
    mp_log_warn("%s: %s: update rejected: %s", f->kind, f->path, why);
    mp_stats_inc(f->rejected);
    free_resources(c->res, c->n);
    free(c->version);
}

/* ---- EDS ---- */

static eds_file_t *eds_file(const char *path)
{
    for (size_t i = 0; i < fs.n_eds; i++)
        if (strcmp(fs.eds[i].path, path) == 0)
            return &fs.eds[i];
    fs.eds = mp_xrealloc(fs.eds, (fs.n_eds + 1) * sizeof(*fs.eds));
    eds_file_t *e = &fs.eds[fs.n_eds++];
    memset(e, 0, sizeof(*e));
    e->path = mp_xstrdup(path);
    return e;
}

static void count_clusters_of(const mp_config_t *cfg, const char *path, bool ok)
{
    for (uint32_t i = 0; i < cfg->n_clusters; i++) {
        const mp_cluster_t *c = cfg->clusters[i];
        if (c->type == MP_CLUSTER_EDS && c->eds_path != NULL && strcmp(c->eds_path, path) == 0)
            mp_stats_inc(ok ? c->stats.update_success : c->stats.update_rejected);
    }
}

static const char *cla_name(const ProtobufCMessage *m)
{
    return ((const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)m)->cluster_name;
}

/* Every cluster of cfg fed by this file must accept its assignment, else the file is refused. */
static int check_eds_hosts(const mp_config_t *cfg, const char *path, ProtobufCMessage **res,
                           size_t n, mp_err_t *err)
{
    for (uint32_t i = 0; i < cfg->n_clusters; i++) {
        const mp_cluster_t *c = cfg->clusters[i];
        if (c->type != MP_CLUSTER_EDS || c->eds_path == NULL || strcmp(c->eds_path, path) != 0)
            continue;
        for (size_t j = 0; j < n; j++) {
            if (cla_name(res[j]) == NULL || strcmp(cla_name(res[j]), c->eds_name) != 0)
                continue;
            bool fits;
            mp_hostset_t *hs = mp_translate_eds_hosts(c, res[j], &fits, err);
            if (hs == NULL)
                return mp_err_prefix(err, "cluster %s: ", c->name);
            mp_hostset_release(hs);
        }
    }
    return 0;
}

/* Replaces the names e gave in the store with res (taken). */
static void store_eds(eds_file_t *e, ProtobufCMessage **res, size_t n)
{
    for (size_t i = 0; i < e->n_names; i++) {
        mp_rstore_set(&envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
                      e->names[i], NULL);
        free(e->names[i]);
    }
    free(e->names);
    e->names = mp_xcalloc(n ? n : 1, sizeof(*e->names));
    e->n_names = 0;
    for (size_t i = 0; i < n; i++) {
        if (cla_name(res[i]) == NULL || cla_name(res[i])[0] == '\0') {
            protobuf_c_message_free_unpacked(res[i], NULL);
            continue;
        }
        e->names[e->n_names++] = mp_xstrdup(cla_name(res[i]));
        mp_rstore_set(&envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
                      cla_name(res[i]), res[i]);
    }
    free(res);
}

static void set_membership(mp_cluster_t *c)
{
    mp_hostset_t *hs = mp_cluster_hosts_acquire(c);
    mp_stats_gauge_set(c->stats.membership_total, hs->n);
    mp_stats_gauge_set(c->stats.membership_healthy, mp_hostset_count_usable(hs));
    mp_hostset_release(hs);
}

/* Publishes c's new hosts in place: hosts that stay keep their health, outlier state and (in
 * each worker's pool) their connections.  false when the localities changed. */
static bool publish_eds(mp_cluster_t *c)
{
    const ProtobufCMessage *la = mp_rstore_get(
        &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, c->eds_name);
    mp_err_t err = {{0}};
    bool fits = false;
    mp_hostset_t *hs = la != NULL ? mp_translate_eds_hosts(c, la, &fits, &err) : mp_hostset_new(0);
    if (hs == NULL || (la != NULL && !fits)) {
        mp_hostset_release(hs);
        return false;
    }
    mp_hostset_t *cur = atomic_load_explicit(&c->hosts, memory_order_acquire);
    mp_hostset_adopt_health_flags(hs, cur, mp_hc_initial_flags(c));
    mp_cluster_hosts_publish(c, hs);
    set_membership(c);
    mp_log_info("eds: cluster %s now has %u hosts", c->name, hs->n);
    return true;
}

/* After a file changed: each EDS cluster it feeds gets its new hosts; a change of localities
 * needs new cluster objects, so the snapshot is rebuilt (from the same accepted resources). */
static void apply_eds(const char *path)
{
    mp_config_t *cfg = atomic_load(&fs.s->config);
    bool rebuild = false;
    for (uint32_t i = 0; i < cfg->n_clusters; i++) {
        mp_cluster_t *c = cfg->clusters[i];
        if (c->type == MP_CLUSTER_EDS && c->eds_path != NULL && strcmp(c->eds_path, path) == 0 &&
            !publish_eds(c))
            rebuild = true;
    }
    mp_err_t err = {{0}};
    if (!rebuild)
        return;
    if (build_and_apply(fs.lds.res, fs.lds.n_res, fs.cds.res, fs.cds.n_res, &err) != 0)
        mp_log_warn("eds: %s: snapshot rebuild failed: %s", path, err.msg);
    cfg = atomic_load(&fs.s->config);
    for (uint32_t i = 0; i < cfg->n_clusters; i++)
        if (cfg->clusters[i]->type == MP_CLUSTER_EDS)
            set_membership(cfg->clusters[i]);
}

static void check_eds_file(eds_file_t *e)
{
    uint8_t d[32];
    mp_file_digest(e->path, d);
    if (memcmp(d, e->digest, sizeof(d)) == 0)
        return;
    memcpy(e->digest, d, sizeof(d));
    fsrc_t f = {.path = e->path,
                .type = &envoy__config__endpoint__v3__cluster_load_assignment__descriptor};
    ProtobufCMessage **res = NULL;
    size_t n = 0;
    char *version = NULL;
    mp_err_t err = {{0}};
    mp_config_t *cfg = atomic_load(&fs.s->config);
    if (read_source(&f, &res, &n, &version, &err) != 0 ||
        check_eds_hosts(cfg, e->path, res, n, &err) != 0) {
        mp_log_warn("eds: %s: update rejected: %s", e->path, err.msg);
        free_resources(res, n);
        free(version);
        count_clusters_of(cfg, e->path, false);
        return;
    }
    mp_log_info("eds: %s: version \"%s\" accepted (%zu assignments)", e->path, version, n);
    free(version);
    store_eds(e, res, n);
    apply_eds(e->path);
    count_clusters_of(atomic_load(&fs.s->config), e->path, true);
}

/* The EDS files of the current snapshot's clusters, read when changed, and watched. */
static void check_eds(void)
{
    if (fs.s == NULL)
        return;
    mp_config_t *cfg = atomic_load(&fs.s->config);
    for (uint32_t i = 0; i < cfg->n_clusters; i++)
        if (cfg->clusters[i]->type == MP_CLUSTER_EDS && cfg->clusters[i]->eds_path != NULL)
            eds_file(cfg->clusters[i]->eds_path);
    for (size_t i = 0; i < fs.n_eds; i++) {
        check_eds_file(&fs.eds[i]);
        mp_dir_watch_add(fs.dw, fs.eds[i].path);
    }
}

void mp_file_source_check(void)
{
    candidate_t l, c;
    read_candidate(&fs.lds, &l);
    read_candidate(&fs.cds, &c);
    if (!l.changed && !c.changed)
        goto rewatch;
    mp_err_t err = {{0}};
    int rc = build_and_apply(l.changed ? l.res : fs.lds.res, l.changed ? l.n : fs.lds.n_res,
                             c.changed ? c.res : fs.cds.res, c.changed ? c.n : fs.cds.n_res, &err);
    /* Both files changed and together they do not translate: both are refused, as an ADS
     * update of both would be. */
    if (l.changed && rc == 0)
        accept_candidate(&fs.lds, &l);
    else if (l.changed)
        reject_candidate(&fs.lds, &l, err.msg);
    if (c.changed && rc == 0)
        accept_candidate(&fs.cds, &c);
    else if (c.changed)
        reject_candidate(&fs.cds, &c, err.msg);
rewatch:
    check_eds();
    if (fs.lds.path != NULL)
        mp_dir_watch_add(fs.dw, fs.lds.path);
    if (fs.cds.path != NULL)
        mp_dir_watch_add(fs.dw, fs.cds.path);
}

static void on_files_changed(void *ctx)
{
    mp_file_source_check();
}

static void init_source(fsrc_t *f, const char *kind, const ProtobufCMessageDescriptor *type,
                        const char *path, const char *stat_scope)
{
    f->kind = kind;
    f->type = type;
    f->path = path != NULL ? mp_xstrdup(path) : NULL;
    f->attempt = mp_stats_counterf("%s.%s.update_attempt", stat_scope, kind);
    f->success = mp_stats_counterf("%s.%s.update_success", stat_scope, kind);
    f->rejected = mp_stats_counterf("%s.%s.update_rejected", stat_scope, kind);
    memset(f->digest, 0, sizeof(f->digest));
}

static int configure(const pb_bootstrap_t *b, mp_err_t *err)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources *dr = b->dynamic_resources;
    const char *lds = source_path(dr->lds_config, err);
    if (lds == NULL && dr->lds_config != NULL && !source_is_ads(dr->lds_config))
        return mp_err_prefix(err, "dynamic_resources.lds_config: ");
    const char *cds = source_path(dr->cds_config, err);
    if (cds == NULL && dr->cds_config != NULL && !source_is_ads(dr->cds_config))
        return mp_err_prefix(err, "dynamic_resources.cds_config: ");
    if ((source_is_ads(dr->lds_config) || source_is_ads(dr->cds_config)) && dr->ads_config == NULL)
        return mp_err_set(err, "dynamic_resources: a config source says ads but there is no "
                               "ads_config");
    /* An ADS-fed type has no file (path NULL) but the same accepted set and stats; the ADS
     * client hands its resources in through mp_file_source_offer. */
    if (lds != NULL || source_is_ads(dr->lds_config))
        init_source(&fs.lds, "lds", &envoy__config__listener__v3__listener__descriptor, lds,
                    "listener_manager");
    if (cds != NULL || source_is_ads(dr->cds_config))
        init_source(&fs.cds, "cds", &envoy__config__cluster__v3__cluster__descriptor, cds,
                    "cluster_manager");
    return 0;
}

static bool has_eds_files(const mp_config_t *cfg)
{
    for (uint32_t i = 0; i < cfg->n_clusters; i++)
        if (cfg->clusters[i]->type == MP_CLUSTER_EDS && cfg->clusters[i]->eds_path != NULL)
            return true;
    return false;
}

int mp_file_source_start(mp_server_t *s, mp_err_t *err)
{
    mp_config_t *cfg = atomic_load(&s->config);
    const pb_bootstrap_t *b = cfg->bootstrap;
    if (b == NULL || (b->dynamic_resources == NULL && !has_eds_files(cfg)))
        return 0;
    fs.s = s;
    if (b->dynamic_resources != NULL && configure(b, err) != 0)
        return MP_ERROR;
    fs.bootstrap_len = protobuf_c_message_get_packed_size(&b->base);
    fs.bootstrap = mp_xmalloc(fs.bootstrap_len ? fs.bootstrap_len : 1);
    protobuf_c_message_pack(&b->base, fs.bootstrap);
    fs.dw = mp_dir_watch_new(s->loop, on_files_changed, NULL, "dynamic resources", err);
    if (fs.dw == NULL)
        return MP_ERROR;
    mp_file_source_check();
    return 0;
}

void mp_file_source_stop(void)
{
    mp_dir_watch_free(fs.dw);
    fsrc_t *srcs[] = {&fs.lds, &fs.cds};
    for (int i = 0; i < 2; i++) {
        free_resources(srcs[i]->res, srcs[i]->n_res);
        free(srcs[i]->version);
        free(srcs[i]->path);
    }
    for (size_t i = 0; i < fs.n_eds; i++) {
        for (size_t j = 0; j < fs.eds[i].n_names; j++)
            free(fs.eds[i].names[j]);
        free(fs.eds[i].names);
        free(fs.eds[i].path);
    }
    free(fs.eds);
    mp_rstore_clear();
    free(fs.bootstrap);
    memset(&fs, 0, sizeof(fs));
}

int mp_file_source_offer(bool lds, ProtobufCMessage **res, size_t n, const char *version,
                         mp_err_t *err)
{
    fsrc_t *f = lds ? &fs.lds : &fs.cds;
    if (fs.s == NULL || f->kind == NULL) {
        free_resources(res, n);
        return mp_err_set(err, "%s is not configured as an ADS source", lds ? "LDS" : "CDS");
    }
    mp_stats_inc(f->attempt);
    int rc = build_and_apply(lds ? res : fs.lds.res, lds ? n : fs.lds.n_res, lds ? fs.cds.res : res,
                             lds ? fs.cds.n_res : n, err);
    if (rc != 0) {
        mp_stats_inc(f->rejected);
        free_resources(res, n);
        return MP_ERROR;
    }
    free_resources(f->res, f->n_res);
    free(f->version);
    f->res = res;
    f->n_res = n;
    f->version = mp_xstrdup(version != NULL ? version : "");
    f->last_ms = mp_now_ms();
    mp_stats_inc(f->success);
    return 0;
}

const char *mp_file_source_version(bool lds, uint64_t *last_updated_ms)
{
    const fsrc_t *f = lds ? &fs.lds : &fs.cds;
    *last_updated_ms = f->last_ms;
    return f->version;
}
