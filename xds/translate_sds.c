/* SdsSecretConfig -> the Secret it names, for the file form only: sds_config.path_config_source
 * (or the deprecated sds_config.path) names a file holding a DiscoveryResponse (YAML or JSON)
 * whose resources are envoy.extensions.transport_sockets.tls.v3.Secret.  The file is read at
 * translation and again by the rotation watcher (xds/sds_watch.c), which rebuilds the context;
 * SDS over ADS comes later (docs/security.md). */
#include <stdlib.h>
#include <string.h>

#include "translate_tls_internal.h"

#include "envoy/service/discovery/v3/discovery.pb-c.h"

#include "magpie/json_pb.h"

#define SDS_FILE_MAX (4u << 20)

static const char *sds_path(const pb_sds_config_t *sc, mp_err_t *err)
{
    const Envoy__Config__Core__V3__ConfigSource *cs = sc->sds_config;
    if (cs == NULL) {
        mp_err_set(err, "sds_config: required (static secrets by name are not supported yet)");
        return NULL;
    }
    switch (cs->config_source_specifier_case) {
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH:
        if (cs->path != NULL && cs->path[0] != '\0')
            return cs->path;
        mp_err_set(err, "sds_config.path: required");
        return NULL;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH_CONFIG_SOURCE:
        if (cs->path_config_source->path != NULL && cs->path_config_source->path[0] != '\0')
            return cs->path_config_source->path;
        mp_err_set(err, "sds_config.path_config_source.path: required");
        return NULL;
    default:
        mp_err_set(err, "sds_config: only a file (path_config_source or path) is supported yet");
        return NULL;
    }
}

static ProtobufCMessage *read_response(const char *path, mp_err_t *err)
{
    Envoy__Config__Core__V3__DataSource ds = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT;
    ds.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME;
    ds.filename = (char *)path;
    uint32_t len = 0;
    char *text = mp_translate__data_source(&ds, SDS_FILE_MAX, &len, err);
    if (text == NULL)
        return NULL;
    cJSON *json = mp_config_text_to_json(text, len, err);
    free(text);
    if (json == NULL) {
        mp_err_prefix(err, "\"%s\": ", path);
        return NULL;
    }
    ProtobufCMessage *m =
        mp_json_to_pb(&envoy__service__discovery__v3__discovery_response__descriptor, json, err);
    cJSON_Delete(json);
    if (m == NULL)
        mp_err_prefix(err, "\"%s\": ", path);
    return m;
}

static pb_secret_t *find_secret(const Envoy__Service__Discovery__V3__DiscoveryResponse *r,
                                const char *name, const char *path, mp_err_t *err)
{
    for (size_t i = 0; i < r->n_resources; i++) {
        ProtobufCMessage *m = mp_pb_any_unpack(
            &r->resources[i]->base,
            &envoy__extensions__transport_sockets__tls__v3__secret__descriptor, err);
        if (m == NULL) {
            mp_err_prefix(err, "\"%s\": resources[%zu]: ", path, i);
            return NULL;
        }
        pb_secret_t *s = (pb_secret_t *)m;
        if (s->name != NULL && strcmp(s->name, name) == 0)
            return s;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    mp_err_set(err, "no secret named \"%s\" in \"%s\"", name, path);
    return NULL;
}

pb_secret_t *mp_translate__sds_secret(const pb_sds_config_t *sc, mp_tls_ctx_t *ctx, mp_err_t *err)
{
    if (sc->name == NULL || sc->name[0] == '\0') {
        mp_err_set(err, "name: required");
        return NULL;
    }
    const char *path = sds_path(sc, err);
    if (path == NULL)
        return NULL;
    mp_tls_ctx_add_source(ctx, path, sc->name);
    ProtobufCMessage *resp = read_response(path, err);
    if (resp == NULL) {
        mp_err_prefix(err, "sds_config: ");
        return NULL;
    }
    pb_secret_t *s =
        find_secret((Envoy__Service__Discovery__V3__DiscoveryResponse *)resp, sc->name, path, err);
    protobuf_c_message_free_unpacked(resp, NULL);
    if (s == NULL)
        mp_err_prefix(err, "sds_config: ");
    return s;
}
