/* magpie-cp's resource store: a directory of Envoy resource files read through the proxy's own
 * schema code, watched with inotify, published as per-type versions. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"

#include "cp.h"
#include "magpie/json_pb.h"
#include "magpie/log.h"

#define CP_MAX_FILE (64u * 1024 * 1024)
#define TYPE_PREFIX "type.googleapis.com/"

static const mp_cp_type_info_t types[MP_CP_NTYPES] = {
    [MP_CP_CDS] = {TYPE_PREFIX "envoy.config.cluster.v3.Cluster", "Cluster", "clusters",
                   "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters",
                   "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters", true},
    [MP_CP_EDS] = {TYPE_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment",
                   "ClusterLoadAssignment", "endpoints",
                   "/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints",
                   "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints", false},
    [MP_CP_LDS] = {TYPE_PREFIX "envoy.config.listener.v3.Listener", "Listener", "listeners",
                   "/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners",
                   "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners", true},
    [MP_CP_RDS] = {TYPE_PREFIX "envoy.config.route.v3.RouteConfiguration", "RouteConfiguration",
                   "routes", "/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes",
                   "/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes", false},
    [MP_CP_SDS] = {TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.Secret", "Secret",
                   "secrets", "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
                   "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets", false},
};

const mp_cp_type_info_t *mp_cp_type(int type)
{
    return &types[type];
}

int mp_cp_type_by_url(const char *url)
{
    for (int t = 0; url != NULL && t < MP_CP_NTYPES; t++)
        if (strcmp(types[t].url, url) == 0)
            return t;
    return -1;
}

/* FNV-1a over type and bytes: content-derived, so stable across restarts. */
static char *content_version(int type, const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)type;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return mp_xasprintf("%016llx", (unsigned long long)h);
}

static const char *resource_name(int type, const ProtobufCMessage *m)
{
    const char *field = type == MP_CP_EDS ? "cluster_name" : "name";
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, field);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING)
        return NULL;
    return *(char *const *)((const char *)m + f->offset);
}

static void snapshot_push(mp_cp_snapshot_t *s, mp_cp_resource_t r)
{
    s->res = mp_xrealloc(s->res, (s->n + 1) * sizeof(*s->res));
    s->res[s->n++] = r;
}

/* One Any from a file -> a resource, named and typed, or an error naming where. */
static int add_any(mp_cp_snapshot_t *s, const char *file, const char *where,
                   const Google__Protobuf__Any *any, mp_err_t *err)
{
    int type = mp_cp_type_by_url(any->type_url);
    if (type < 0)
        return mp_err_set(err, "%s: %s@type: magpie-cp does not serve \"%.200s\"", file, where,
                          any->type_url ? any->type_url : "");
    ProtobufCMessage *m = mp_pb_any_unpack(&any->base, NULL, err);
    if (m == NULL)
        return mp_err_prefix(err, "%s: %s", file, where);
    const char *name = resource_name(type, m);
    int rc = 0;
    if (name == NULL || name[0] == '\0') {
        rc = mp_err_set(err, "%s: %s%s: a %s needs a name", file, where,
                        type == MP_CP_EDS ? "cluster_name" : "name", types[type].name);
    } else {
        mp_cp_resource_t r = {.type = type, .name = mp_xstrdup(name), .file = mp_xstrdup(file)};
        r.len = any->value.len;
        r.value = mp_xmalloc(r.len ? r.len : 1);
        memcpy(r.value, any->value.data, r.len);
        r.version = content_version(type, r.value, r.len);
        snapshot_push(s, r);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

/* A DiscoveryResponse-like file: {"resources": [ {"@type": ...}, ... ]}. */
static int add_list(mp_cp_snapshot_t *s, const char *file, const cJSON *json, mp_err_t *err)
{
    ProtobufCMessage *m =
        mp_json_to_pb(&envoy__service__discovery__v3__discovery_response__descriptor, json, err);
    if (m == NULL)
        return mp_err_prefix(err, "%s: ", file);
    const Envoy__Service__Discovery__V3__DiscoveryResponse *dr = (const void *)m;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < dr->n_resources; i++) {
        char where[40];
        snprintf(where, sizeof(where), "resources[%zu].", i);
        rc = add_any(s, file, where, dr->resources[i], err);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

static int add_single(mp_cp_snapshot_t *s, const char *file, const cJSON *json, mp_err_t *err)
{
    if (!cJSON_IsObject(json) || !cJSON_IsString(cJSON_GetObjectItem(json, "@type")))
        return mp_err_set(err, "%s: expected an object with \"@type\" or \"resources\"", file);
    ProtobufCMessage *m = mp_json_to_pb(&google__protobuf__any__descriptor, json, err);
    if (m == NULL)
        return mp_err_prefix(err, "%s: ", file);
    int rc = add_any(s, file, "", (const Google__Protobuf__Any *)m, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

static char *read_file(const char *path, size_t *len, mp_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return mp_err_set(err, "%s: %s", path, strerror(errno)), NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 > cap)
            buf = mp_xrealloc(buf, cap = cap ? cap * 2 : 8192);
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0 || n > CP_MAX_FILE)
            break;
    }
    fclose(f);
    if (n > CP_MAX_FILE) {
        free(buf);
        return mp_err_set(err, "%s: larger than %u bytes", path, CP_MAX_FILE), NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int load_file(mp_cp_snapshot_t *s, const char *dir, const char *name, mp_err_t *err)
{
    char *path = mp_xasprintf("%s/%s", dir, name);
    size_t len = 0;
    char *text = read_file(path, &len, err);
    free(path);
    if (text == NULL)
        return MP_ERROR;
    cJSON *json = mp_config_text_to_json(text, len, err);
    free(text);
    if (json == NULL)
        return mp_err_prefix(err, "%s: ", name);
    int rc = cJSON_IsArray(cJSON_GetObjectItem(json, "resources")) &&
                     cJSON_GetObjectItem(json, "@type") == NULL
                 ? add_list(s, name, json, err)
                 : add_single(s, name, json, err);
    cJSON_Delete(json);
    return rc;
}

static bool wanted_file(const char *name)
{
    if (name[0] == '.')
        return false;
    const char *dot = strrchr(name, '.');
    return dot != NULL &&
           (strcmp(dot, ".yaml") == 0 || strcmp(dot, ".yml") == 0 || strcmp(dot, ".json") == 0);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_res(const void *a, const void *b)
{
    const mp_cp_resource_t *x = a, *y = b;
    return x->type != y->type ? x->type - y->type : strcmp(x->name, y->name);
}

/* Sorted names of the files to read: the load order, hence the order of errors, is stable. */
static char **list_dir(const char *dir, size_t *n, mp_err_t *err)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return mp_err_set(err, "%s: %s", dir, strerror(errno)), NULL;
    char **names = mp_xmalloc(sizeof(char *));
    *n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (!wanted_file(e->d_name) ||
            (e->d_type != DT_REG && e->d_type != DT_UNKNOWN && e->d_type != DT_LNK))
            continue;
        names = mp_xrealloc(names, (*n + 1) * sizeof(char *));
        names[(*n)++] = mp_xstrdup(e->d_name);
    }
    closedir(d);
    qsort(names, *n, sizeof(char *), cmp_name);
    return names;
}

static int check_duplicates(const mp_cp_snapshot_t *s, mp_err_t *err)
{
    for (size_t i = 1; i < s->n; i++)
        if (cmp_res(&s->res[i - 1], &s->res[i]) == 0)
            return mp_err_set(err, "%s: %s \"%s\" is also defined in %s", s->res[i].file,
                              types[s->res[i].type].name, s->res[i].name, s->res[i - 1].file);
    return 0;
}

int mp_cp_snapshot_load(const char *dir, mp_cp_snapshot_t *out, mp_err_t *err)
{
    size_t n_files = 0;
    char **files = list_dir(dir, &n_files, err);
    if (files == NULL)
        return MP_ERROR;
    mp_cp_snapshot_t s = {0};
    int rc = 0;
    for (size_t i = 0; i < n_files; i++) {
        if (rc == 0)
            rc = load_file(&s, dir, files[i], err);
        free(files[i]);
    }
    free(files);
    if (rc == 0 && s.n > 1)
        qsort(s.res, s.n, sizeof(*s.res), cmp_res);
    if (rc == 0)
        rc = check_duplicates(&s, err);
    if (rc != 0) {
        mp_cp_snapshot_free(&s);
        return MP_ERROR;
    }
    *out = s;
    return 0;
}

static void resource_free(mp_cp_resource_t *r)
{
    free(r->name);
    free(r->version);
    free(r->file);
    free(r->value);
}

void mp_cp_snapshot_free(mp_cp_snapshot_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        resource_free(&s->res[i]);
    free(s->res);
    s->res = NULL;
    s->n = 0;
}

const mp_cp_resource_t *mp_cp_snapshot_find(const mp_cp_snapshot_t *s, int type, const char *name)
{
    mp_cp_resource_t key = {.type = type, .name = (char *)name};
    return s->n ? bsearch(&key, s->res, s->n, sizeof(*s->res), cmp_res) : NULL;
}
