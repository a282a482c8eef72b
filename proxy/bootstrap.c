/* The bootstrap loader: -c FILE and --config-yaml, merged as JSON trees, mapped onto
 * envoy.config.bootstrap.v3.Bootstrap and translated into the first snapshot. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

#include "magpie/bootstrap.h"
#include "magpie/json_pb.h"

/* A config larger than this is a mistake (a log file passed to -c), not a config. */
#define CONFIG_FILE_MAX (64u * 1024 * 1024)

const char mp_bootstrap_default_yaml[] =
    "admin:\n"
    "  address:\n"
    "    socket_address: { address: 127.0.0.1, port_value: 15000 }\n"
    "static_resources:\n"
    "  listeners:\n"
    "  - name: default\n"
    "    address:\n"
    "      socket_address: { address: 127.0.0.1, port_value: 15001 }\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.http_connection_manager\n"
    "        typed_config:\n"
    "          \"@type\": type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
    "          stat_prefix: ingress_http\n"
    "          access_log:\n"
    "          - name: envoy.access_loggers.stdout\n"
    "            typed_config:\n"
    "              \"@type\": type.googleapis.com/"
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog\n"
    "          http_filters:\n"
    "          - name: envoy.filters.http.router\n"
    "            typed_config:\n"
    "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n"
    "          route_config:\n"
    "            name: local_route\n"
    "            virtual_hosts:\n"
    "            - name: local_service\n"
    "              domains: [\"*\"]\n"
    "              routes:\n"
    "              - match: { prefix: \"/\" }\n"
    "                route: { cluster: local_service }\n"
    "  clusters:\n"
    "  - name: local_service\n"
    "    type: STATIC\n"
    "    load_assignment:\n"
    "      cluster_name: local_service\n"
    "      endpoints:\n"
    "      - lb_endpoints:\n"
    "        - endpoint:\n"
    "            address:\n"
    "              socket_address: { address: 127.0.0.1, port_value: 8080 }\n";

static char *read_config_file(const char *path, size_t *len, mp_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        mp_err_set(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > CONFIG_FILE_MAX) {
        mp_err_set(err, "%s: not a regular file of at most %u bytes", path, CONFIG_FILE_MAX);
        fclose(f);
        return NULL;
    }
    char *buf = mp_xmalloc((size_t)st.st_size + 1);
    *len = fread(buf, 1, (size_t)st.st_size, f);
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        mp_err_set(err, "%s: read error", path);
        return NULL;
    }
    buf[*len] = '\0';
    return buf;
}

/* Objects merge key by key, recursively; anything else in over replaces what base has (an array
 * replaces an array). */
static void merge_json(cJSON *base, const cJSON *over)
{
    for (const cJSON *item = over->child; item != NULL; item = item->next) {
        cJSON *mine = cJSON_GetObjectItemCaseSensitive(base, item->string);
        if (mine != NULL && cJSON_IsObject(mine) && cJSON_IsObject(item)) {
            merge_json(mine, item);
            continue;
        }
        cJSON *copy = cJSON_Duplicate(item, 1);
        if (mine != NULL)
            cJSON_ReplaceItemInObjectCaseSensitive(base, item->string, copy);
        else
            cJSON_AddItemToObject(base, item->string, copy);
    }
}

static cJSON *parse_text(const char *what, const char *text, size_t len, mp_err_t *err)
{
    cJSON *json = mp_config_text_to_json(text, len, err);
    if (json == NULL) {
        mp_err_prefix(err, "%s: ", what);
        return NULL;
    }
    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        mp_err_set(err, "%s: the bootstrap must be an object", what);
        return NULL;
    }
    return json;
}

static cJSON *load_file(const char *path, mp_err_t *err)
{
    size_t len;
    char *text = read_config_file(path, &len, err);
    if (text == NULL)
        return NULL;
    cJSON *json = parse_text(path, text, len, err);
    free(text);
    return json;
}

/* The JSON tree of the bootstrap: the file, --config-yaml over it, or the default. */
static cJSON *load_tree(const mp_options_t *opts, bool *used_default, mp_err_t *err)
{
    *used_default = opts->config_path == NULL && opts->config_yaml == NULL;
    if (*used_default)
        return parse_text("default config", mp_bootstrap_default_yaml,
                          sizeof(mp_bootstrap_default_yaml) - 1, err);
    cJSON *over = NULL;
    if (opts->config_yaml != NULL && (over = parse_text("--config-yaml", opts->config_yaml,
                                                        strlen(opts->config_yaml), err)) == NULL)
        return NULL;
    if (opts->config_path == NULL)
        return over;
    cJSON *base = load_file(opts->config_path, err);
    if (base != NULL && over != NULL)
        merge_json(base, over);
    cJSON_Delete(over);
    return base;
}

mp_config_t *mp_bootstrap_load(const mp_options_t *opts, bool *used_default, mp_err_t *err)
{
    bool dflt;
    cJSON *json = load_tree(opts, &dflt, err);
    if (used_default != NULL)
        *used_default = dflt;
    if (json == NULL)
        return NULL;
    ProtobufCMessage *msg =
        mp_json_to_pb(&envoy__config__bootstrap__v3__bootstrap__descriptor, json, err);
    cJSON_Delete(json);
    if (msg == NULL)
        return NULL;
    return mp_translate_bootstrap(msg, opts, err);
}
