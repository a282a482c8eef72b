/* Handling one DiscoveryResponse / DeltaDiscoveryResponse of an xDS session: decode (bounded),
 * unwrap, validate, hand the applier one update, queue the ACK or NACK
 * (docs/xds-protocol.md, "What the client does with a response"). */
#include <stdlib.h>
#include <string.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"

#include "xds_session_internal.h"

typedef Envoy__Service__Discovery__V3__DiscoveryResponse pb_response_t;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse pb_delta_response_t;
typedef Envoy__Service__Discovery__V3__Resource pb_resource_t;

/* What one response hands the applier, plus what must be freed after the callback. */
typedef struct batch {
    mp_xds_resource_t *res;
    size_t n;
    mp_xds_names_t seen; /* names in this response, for duplicate detection */
    const char **removed;
    size_t n_removed;
    char **owned; /* names scanned from resource bytes */
    size_t n_owned;
    pb_resource_t **wrappers; /* unpacked SotW Resource wrappers the entries point into */
    size_t n_wrappers;
} batch_t;

static void batch_init(batch_t *b, size_t n_res, size_t n_removed)
{
    memset(b, 0, sizeof(*b));
    b->res = mp_xcalloc(n_res + 1, sizeof(*b->res));
    b->removed = mp_xcalloc(n_removed + 1, sizeof(*b->removed));
    b->owned = mp_xcalloc(n_res + 1, sizeof(*b->owned));
    b->wrappers = mp_xcalloc(n_res + 1, sizeof(*b->wrappers));
}

static void batch_free(batch_t *b)
{
    for (size_t i = 0; i < b->n_owned; i++)
        free(b->owned[i]);
    for (size_t i = 0; i < b->n_wrappers; i++)
        protobuf_c_message_free_unpacked(&b->wrappers[i]->base, NULL);
    mp_xds__names_clear(&b->seen);
    free(b->owned);
    free(b->wrappers);
    free(b->removed);
    free(b->res);
}

static int64_t ttl_ms(const Google__Protobuf__Duration *d)
{
    if (d == NULL)
        return -1;
    if (d->seconds < 0 || d->nanos < 0)
        return 0;
    if (d->seconds > INT64_MAX / 1000 - 1)
        return INT64_MAX / 1000;
    return d->seconds * 1000 + d->nanos / 1000000;
}

/* Adds one resource; a name already in the response is an error (§2.5: NACK the whole). */
static int batch_add(batch_t *b, const char *name, const char *version,
                     const Google__Protobuf__Any *any, int64_t ttl, mp_err_t *err)
{
    if (!mp_xds__names_put(&b->seen, name, NULL))
        return mp_err_set(err, "duplicate resource name \"%s\" in one response", name);
    mp_xds_resource_t *r = &b->res[b->n++];
    r->name = name;
    r->version = version;
    r->value = any ? any->value.data : NULL;
    r->len = any ? any->value.len : 0;
    r->ttl_ms = ttl;
    return 0;
}

static int check_type(const Google__Protobuf__Any *any, const char *type_url, mp_err_t *err)
{
    if (strcmp(any->type_url, type_url) == 0)
        return 0;
    return mp_err_set(err, "resource type \"%s\" does not match the response's type_url \"%s\"",
                      any->type_url, type_url);
}

/* The name inside a resource's bytes; kept in the batch until the callback is over. */
static const char *scan_name(batch_t *b, const Google__Protobuf__Any *any, mp_err_t *err)
{
    char *name = mp_xds__scan_name(any->value.data, any->value.len);
    if (name == NULL || name[0] == '\0') {
        free(name);
        mp_err_set(err, "resource of type \"%s\" has no name", any->type_url);
        return NULL;
    }
    b->owned[b->n_owned++] = name;
    return name;
}

/* A SotW resource wrapped in envoy.service.discovery.v3.Resource (go-control-plane does this
 * whenever a resource has a TTL): the wrapper's name wins, else the inner resource's. */
static int add_wrapped(batch_t *b, mp_xds_type_t *t, const Google__Protobuf__Any *any,
                       const char *version, mp_err_t *err)
{
    const uint8_t *p = any->value.data;
    size_t len = any->value.len;
    if (mp_xds__check_depth(&envoy__service__discovery__v3__resource__descriptor, p, len,
                            MP_XDS_MAX_DEPTH) != 0)
        return mp_err_set(err, "undecodable envoy.service.discovery.v3.Resource");
    pb_resource_t *w = envoy__service__discovery__v3__resource__unpack(NULL, len, p);
    if (w == NULL)
        return mp_err_set(err, "undecodable envoy.service.discovery.v3.Resource");
    b->wrappers[b->n_wrappers++] = w;
    const char *name = w->name;
    if (w->resource != NULL) {
        if (check_type(w->resource, t->type_url, err) != 0)
            return MP_ERROR;
        if (name[0] == '\0' && (name = scan_name(b, w->resource, err)) == NULL)
            return MP_ERROR;
    } else if (name[0] == '\0') {
        return mp_err_set(err, "TTL heartbeat without a name");
    }
    if (!mp_xds__type_wants(t, name))
        return 0; /* not asked for: ignored, as Envoy's watch map does */
    return batch_add(b, name, version, w->resource, ttl_ms(w->ttl), err);
}

static int collect_sotw(mp_xds_type_t *t, const pb_response_t *resp, batch_t *b, mp_err_t *err)
{
    for (size_t i = 0; i < resp->n_resources; i++) {
        const Google__Protobuf__Any *any = resp->resources[i];
        int rc;
        if (strcmp(any->type_url, MP_XDS_TYPE_RESOURCE) == 0) {
            rc = add_wrapped(b, t, any, resp->version_info, err);
        } else if ((rc = check_type(any, t->type_url, err)) == 0) {
            const char *name = scan_name(b, any, err);
            if (name == NULL)
                rc = MP_ERROR;
            else if (mp_xds__type_wants(t, name))
                rc = batch_add(b, name, resp->version_info, any, -1, err);
        }
        if (rc != 0)
            return mp_err_prefix(err, "resources[%zu]: ", i);
    }
    /* Full-state types: what was accepted before and is absent now is removed (§2.5). */
    for (size_t i = 0; t->complete_sets && i < t->known.n; i++)
        if (mp_xds__names_find(&b->seen, t->known.v[i].name) < 0)
            b->removed[b->n_removed++] = t->known.v[i].name;
    return 0;
}

static void commit_sotw(mp_xds_type_t *t, const char *version, const batch_t *b)
{
    if (t->complete_sets)
        mp_xds__names_clear(&t->known);
    for (size_t i = 0; i < b->n; i++)
        mp_xds__names_put(&t->known, b->res[i].name, version);
    free(t->version);
    t->version = mp_xstrdup(version);
}

/* The applier decides; a rejection is NACKed with its text and nothing is committed. */
static void run_apply(mp_xds_session_t *s, mp_xds_type_t *t, mp_xds_update_t *u, batch_t *b,
                      int collect_rc, mp_err_t *aerr)
{
    u->resources = b->res;
    u->n_resources = b->n;
    u->removed = b->removed;
    u->n_removed = b->n_removed;
    int rc = collect_rc;
    if (rc == 0 && s->apply != NULL) {
        aerr->msg[0] = '\0';
        rc = s->apply(s->ctx, t->type_url, u, aerr);
        if (rc != 0 && aerr->msg[0] == '\0')
            mp_err_set(aerr, "rejected");
    }
    free(t->error);
    t->error = rc != 0 ? mp_xstrdup(aerr->msg) : NULL;
}

/* The type a response is for, or NULL when no one subscribed to it: Envoy ignores such a
 * response without an ACK. */
static mp_xds_type_t *take_response(mp_xds_session_t *s, const char *type_url, const char *nonce)
{
    mp_xds_type_t *t = mp_xds__type_find(s, type_url);
    if (t == NULL || !mp_xds__type_interested(t))
        return NULL;
    free(t->nonce);
    t->nonce = mp_xstrdup(nonce);
    t->ack_pending = true;
    t->got_response = true;
    return t;
}

static int on_sotw(mp_xds_session_t *s, const uint8_t *data, size_t len, mp_err_t *err)
{
    const ProtobufCMessageDescriptor *d =
        &envoy__service__discovery__v3__discovery_response__descriptor;
    pb_response_t *resp = NULL;
    if (mp_xds__check_depth(d, data, len, MP_XDS_MAX_DEPTH) == 0)
        resp = envoy__service__discovery__v3__discovery_response__unpack(NULL, len, data);
    if (resp == NULL)
        return mp_err_set(err, "undecodable DiscoveryResponse (%zu bytes)", len);
    mp_xds_type_t *t = take_response(s, resp->type_url, resp->nonce);
    if (t != NULL) {
        batch_t b;
        mp_err_t aerr;
        batch_init(&b, resp->n_resources, t->known.n);
        int rc = collect_sotw(t, resp, &b, &aerr);
        mp_xds_update_t u = {
            .mode = MP_XDS_SOTW, .version_info = resp->version_info, .complete = t->complete_sets};
        run_apply(s, t, &u, &b, rc, &aerr);
        if (t->error == NULL)
            commit_sotw(t, resp->version_info, &b);
        batch_free(&b);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

static const char *delta_name(const pb_resource_t *r)
{
    if (r->name[0] != '\0')
        return r->name;
    return r->resource_name ? r->resource_name->name : "";
}

static int collect_added(mp_xds_type_t *t, const pb_delta_response_t *resp, batch_t *b,
                         mp_err_t *err)
{
    for (size_t i = 0; i < resp->n_resources; i++) {
        const pb_resource_t *r = resp->resources[i];
        const char *name = delta_name(r);
        int rc = 0;
        if (name[0] == '\0')
            rc = mp_err_set(err, "resource without a name");
        else if (r->resource != NULL)
            rc = check_type(r->resource, t->type_url, err);
        if (rc == 0 && mp_xds__type_wants(t, name))
            rc = batch_add(b, name, r->version, r->resource, ttl_ms(r->ttl), err);
        if (rc != 0)
            return mp_err_prefix(err, "resources[%zu]: ", i);
    }
    return 0;
}

/* A name both added and removed is an error, as in Envoy's delta subscription state. */
static int add_removed(mp_xds_type_t *t, batch_t *b, const char *name, mp_err_t *err)
{
    if (!mp_xds__names_put(&b->seen, name, NULL))
        return mp_err_set(err, "resource name \"%s\" both updated and removed", name);
    if (mp_xds__type_wants(t, name) || mp_xds__names_find(&t->known, name) >= 0)
        b->removed[b->n_removed++] = name;
    return 0;
}

static int collect_delta(mp_xds_type_t *t, const pb_delta_response_t *resp, batch_t *b,
                         mp_err_t *err)
{
    if (collect_added(t, resp, b, err) != 0)
        return MP_ERROR;
    for (size_t i = 0; i < resp->n_removed_resources; i++)
        if (add_removed(t, b, resp->removed_resources[i], err) != 0)
            return MP_ERROR;
    for (size_t i = 0; i < resp->n_removed_resource_names; i++) {
        const char *name = resp->removed_resource_names[i]->name;
        if (add_removed(t, b, name, err) != 0)
            return MP_ERROR;
    }
    return 0;
}

static void commit_delta(mp_xds_type_t *t, const batch_t *b)
{
    for (size_t i = 0; i < b->n; i++)
        mp_xds__names_put(&t->known, b->res[i].name, b->res[i].version);
    for (size_t i = 0; i < b->n_removed; i++)
        mp_xds__names_del(&t->known, b->removed[i]);
}

static int on_delta(mp_xds_session_t *s, const uint8_t *data, size_t len, mp_err_t *err)
{
    const ProtobufCMessageDescriptor *d =
        &envoy__service__discovery__v3__delta_discovery_response__descriptor;
    pb_delta_response_t *resp = NULL;
    if (mp_xds__check_depth(d, data, len, MP_XDS_MAX_DEPTH) == 0)
        resp = envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, len, data);
    if (resp == NULL)
        return mp_err_set(err, "undecodable DeltaDiscoveryResponse (%zu bytes)", len);
    mp_xds_type_t *t = take_response(s, resp->type_url, resp->nonce);
    if (t != NULL) {
        batch_t b;
        mp_err_t aerr;
        batch_init(&b, resp->n_resources,
                   resp->n_removed_resources + resp->n_removed_resource_names);
        int rc = collect_delta(t, resp, &b, &aerr);
        mp_xds_update_t u = {.mode = MP_XDS_DELTA, .version_info = resp->system_version_info};
        run_apply(s, t, &u, &b, rc, &aerr);
        if (t->error == NULL)
            commit_delta(t, &b);
        batch_free(&b);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int mp_xds_session_on_message(mp_xds_session_t *s, const uint8_t *data, size_t len, uint64_t now,
                              mp_err_t *err)
{
    if (data == NULL && len > 0)
        return mp_err_set(err, "no data");
    static const uint8_t empty[1];
    if (data == NULL)
        data = empty;
    return s->mode == MP_XDS_DELTA ? on_delta(s, data, len, err) : on_sotw(s, data, len, err);
}
