/* magpie-cp: REST-JSON discovery (reference §1.2), as go-control-plane's gateway answers it:
 * POST /v3/discovery:<type> with a JSON DiscoveryRequest; 200 with a JSON DiscoveryResponse,
 * 304 when the request's version_info is the current one, 400 for bad JSON, 404 for an unknown
 * path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"

#include "cp.h"
#include "magpie/json_pb.h"
#include "magpie/log.h"

typedef Envoy__Service__Discovery__V3__DiscoveryRequest sotw_req_t;

static uint64_t rest_nonce;

static int rest_type(const char *path)
{
    const char *prefix = "/v3/discovery:";
    if (strncmp(path, prefix, strlen(prefix)) != 0)
        return -1;
    for (int t = 0; t < MP_CP_NTYPES; t++)
        if (strcmp(path + strlen(prefix), mp_cp_type(t)->rest) == 0)
            return t;
    return -1;
}

static bool rest_wants(const sotw_req_t *rq, int t, const char *name)
{
    bool any = false;
    for (size_t i = 0; i < rq->n_resource_names; i++) {
        if (strcmp(rq->resource_names[i], name) == 0 || strcmp(rq->resource_names[i], "*") == 0)
            return true;
        any = true;
    }
    return !any && mp_cp_type(t)->wildcard;
}

static char *rest_response(const mp_cp_store_t *store, int t, const sotw_req_t *rq)
{
    const mp_cp_snapshot_t *live = &store->live;
    Google__Protobuf__Any *anys = mp_xcalloc(live->n + 1, sizeof(*anys));
    Google__Protobuf__Any **ptrs = mp_xcalloc(live->n + 1, sizeof(*ptrs));
    Envoy__Service__Discovery__V3__DiscoveryResponse dr =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    for (size_t i = 0; i < live->n; i++) {
        const mp_cp_resource_t *r = &live->res[i];
        if (r->type != t || !rest_wants(rq, t, r->name))
            continue;
        google__protobuf__any__init(&anys[dr.n_resources]);
        anys[dr.n_resources].type_url = (char *)mp_cp_type(t)->url;
        anys[dr.n_resources].value.data = r->value;
        anys[dr.n_resources].value.len = r->len;
        ptrs[dr.n_resources] = &anys[dr.n_resources];
        dr.n_resources++;
    }
    char nonce[24];
    snprintf(nonce, sizeof(nonce), "%llu", (unsigned long long)++rest_nonce);
    dr.resources = ptrs;
    dr.version_info = (char *)store->version_str[t];
    dr.type_url = (char *)mp_cp_type(t)->url;
    dr.nonce = nonce;
    mp_err_t err;
    cJSON *json = mp_pb_to_json(&dr.base, &err);
    char *out = json ? cJSON_PrintUnformatted(json) : mp_xasprintf("%s", err.msg);
    cJSON_Delete(json);
    free(anys);
    free(ptrs);
    mp_log_info("REST: -> %s version=\"%s\" resources=%zu", mp_cp_type(t)->name, dr.version_info,
                dr.n_resources);
    return out;
}

static void rest_log(int t, const sotw_req_t *rq)
{
    if (rq->error_detail != NULL)
        mp_log_info("REST: NACK %s version=\"%s\" error_detail=(%d) %s", mp_cp_type(t)->name,
                    rq->version_info, rq->error_detail->code,
                    rq->error_detail->message ? rq->error_detail->message : "");
    else
        mp_log_info("REST: request %s version=\"%s\" names=%zu node=\"%s\"", mp_cp_type(t)->name,
                    rq->version_info, rq->n_resource_names,
                    rq->node && rq->node->id ? rq->node->id : "");
}

int mp_cp_rest_handle(const mp_cp_store_t *store, const char *path, const char *body, size_t len,
                      char **out)
{
    int t = rest_type(path);
    if (t < 0) {
        *out = mp_xasprintf("unknown discovery path %.200s\n", path);
        return 404;
    }
    cJSON *json = cJSON_ParseWithLength(body, len);
    mp_err_t err = {{0}};
    ProtobufCMessage *m =
        json ? mp_json_to_pb(&envoy__service__discovery__v3__discovery_request__descriptor, json,
                             &err)
             : NULL;
    bool parsed = json != NULL;
    cJSON_Delete(json);
    if (m == NULL) {
        *out = mp_xasprintf("bad DiscoveryRequest: %s\n", parsed ? err.msg : "invalid JSON");
        return 400;
    }
    const sotw_req_t *rq = (const sotw_req_t *)m;
    rest_log(t, rq);
    int status = 200;
    if (strcmp(rq->version_info, store->version_str[t]) == 0) {
        *out = mp_xstrdup("");
        status = 304;
    } else {
        *out = rest_response(store, t, rq);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return status;
}
