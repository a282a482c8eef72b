/* The xDS session: node, per-type interest, reset and the initial_fetch_timeout bookkeeping
 * (include/magpie/xds_session.h, docs/xds-protocol.md).  Requests are built in
 * xds_session_request.c and responses handled in xds_session_response.c. */
#include <stdlib.h>
#include <string.h>

#include "magpie/json_pb.h"

#include "xds_session_internal.h"

static char *dup_or_empty(const char *s)
{
    return mp_xstrdup(s ? s : "");
}

/* The metadata travels as a google.protobuf.Struct built once through the JSON mapping; a
 * value it cannot map (not an object) is dropped rather than failing the whole session. */
static void copy_node(mp_xds_session_t *s, const mp_xds_node_t *node)
{
    mp_xds_node_t none = {0};
    if (node == NULL)
        node = &none;
    s->node_id = dup_or_empty(node->id);
    s->node_cluster = dup_or_empty(node->cluster);
    s->region = dup_or_empty(node->region);
    s->zone = dup_or_empty(node->zone);
    s->sub_zone = dup_or_empty(node->sub_zone);
    s->ua_version = node->user_agent_version ? mp_xstrdup(node->user_agent_version) : NULL;
    s->n_features = node->n_client_features;
    s->features = mp_xcalloc(s->n_features + 1, sizeof(char *));
    for (size_t i = 0; i < s->n_features; i++)
        s->features[i] = dup_or_empty(node->client_features[i]);
    if (node->metadata != NULL && cJSON_IsObject(node->metadata)) {
        mp_err_t err;
        s->metadata = (Google__Protobuf__Struct *)mp_json_to_pb(
            &google__protobuf__struct__descriptor, node->metadata, &err);
    }
}

mp_xds_session_t *mp_xds_session_new(mp_xds_mode_t mode, const mp_xds_node_t *node,
                                     mp_xds_apply_cb apply, void *ctx)
{
    mp_xds_session_t *s = mp_xcalloc(1, sizeof(*s));
    s->mode = mode;
    s->apply = apply;
    s->ctx = ctx;
    copy_node(s, node);
    return s;
}

static void clear_stream_state(mp_xds_type_t *t)
{
    free(t->nonce);
    t->nonce = NULL;
    free(t->error);
    t->error = NULL;
    t->sent_initial = false;
    t->sent_explicit = false;
    t->ack_pending = false;
    mp_xds__names_clear(&t->delta_sub);
    mp_xds__names_clear(&t->delta_unsub);
}

static void free_type(mp_xds_type_t *t)
{
    clear_stream_state(t);
    mp_xds__names_clear(&t->names);
    mp_xds__names_clear(&t->known);
    free(t->version);
    free(t->type_url);
    free(t);
}

void mp_xds_session_free(mp_xds_session_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_types; i++)
        free_type(s->types[i]);
    free(s->types);
    for (size_t i = 0; i < s->n_features; i++)
        free(s->features[i]);
    free(s->features);
    if (s->metadata)
        protobuf_c_message_free_unpacked(&s->metadata->base, NULL);
    free(s->node_id);
    free(s->node_cluster);
    free(s->region);
    free(s->zone);
    free(s->sub_zone);
    free(s->ua_version);
    free(s);
}

mp_xds_type_t *mp_xds__type_find(const mp_xds_session_t *s, const char *type_url)
{
    for (size_t i = 0; type_url != NULL && i < s->n_types; i++)
        if (strcmp(s->types[i]->type_url, type_url) == 0)
            return s->types[i];
    return NULL;
}

bool mp_xds__type_interested(const mp_xds_type_t *t)
{
    return t->wildcard || t->names.n > 0;
}

bool mp_xds__type_wants(const mp_xds_type_t *t, const char *name)
{
    return t->wildcard || mp_xds__names_find(&t->names, name) >= 0;
}

/* Envoy treats Listener and Cluster as the wildcard-capable, full-state types (§2.4, §2.5). */
static bool is_complete_type(const char *type_url)
{
    return strcmp(type_url, MP_XDS_TYPE_LISTENER) == 0 ||
           strcmp(type_url, MP_XDS_TYPE_CLUSTER) == 0;
}

static mp_xds_type_t *add_type(mp_xds_session_t *s, const char *type_url)
{
    mp_xds_type_t *t = mp_xcalloc(1, sizeof(*t));
    t->type_url = mp_xstrdup(type_url);
    t->version = mp_xstrdup("");
    t->complete_sets = is_complete_type(type_url);
    s->types = mp_xrealloc(s->types, (s->n_types + 1) * sizeof(*s->types));
    s->types[s->n_types++] = t;
    return t;
}

/* Records one interest change for the delta lists: a name added cancels its pending removal
 * and the other way round, so the next request carries only the net change. */
static void note_delta(mp_xds_type_t *t, const char *name, bool add)
{
    mp_xds__names_del(add ? &t->delta_unsub : &t->delta_sub, name);
    mp_xds__names_put(add ? &t->delta_sub : &t->delta_unsub, name, NULL);
}

static bool add_name(mp_xds_type_t *t, const char *name)
{
    bool changed;
    if (strcmp(name, "*") == 0) {
        changed = !t->wildcard;
        t->wildcard = true;
    } else {
        changed = mp_xds__names_put(&t->names, name, NULL);
    }
    if (changed)
        note_delta(t, name, true);
    return changed;
}

/* Leaving a name forgets the resource too (unless the wildcard still covers it), so that a
 * reconnect does not offer its version in initial_resource_versions. */
static bool remove_name(mp_xds_type_t *t, const char *name)
{
    bool changed;
    if (strcmp(name, "*") == 0) {
        changed = t->wildcard;
        t->wildcard = false;
    } else {
        changed = mp_xds__names_del(&t->names, name);
        if (changed && !t->wildcard)
            mp_xds__names_del(&t->known, name);
    }
    if (changed)
        note_delta(t, name, false);
    return changed;
}

int mp_xds_session_subscribe(mp_xds_session_t *s, const char *type_url, const char *const *names,
                             size_t n)
{
    mp_xds_type_t *t = mp_xds__type_find(s, type_url);
    bool changed = false;
    if (t == NULL) {
        t = add_type(s, type_url);
        if (n == 0 && t->complete_sets)
            changed = add_name(t, "*");
    }
    for (size_t i = 0; i < n; i++)
        changed |= add_name(t, names[i]);
    if (changed)
        t->sub_pending = true;
    return 0;
}

int mp_xds_session_unsubscribe(mp_xds_session_t *s, const char *type_url, const char *const *names,
                               size_t n)
{
    mp_xds_type_t *t = mp_xds__type_find(s, type_url);
    if (t == NULL)
        return MP_ERROR;
    bool changed = false;
    for (size_t i = 0; i < n; i++)
        changed |= remove_name(t, names[i]);
    if (changed)
        t->sub_pending = true;
    return 0;
}

static bool in_list(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

int mp_xds_session_set_names(mp_xds_session_t *s, const char *type_url, const char *const *names,
                             size_t n)
{
    mp_xds_type_t *t = mp_xds__type_find(s, type_url);
    if (t == NULL)
        t = add_type(s, type_url);
    bool changed = false;
    /* Walk backwards: remove_name shifts the entries after the one it drops. */
    for (size_t i = t->names.n; i-- > 0;) {
        if (in_list(names, n, t->names.v[i].name))
            continue;
        char *gone = mp_xstrdup(t->names.v[i].name);
        changed |= remove_name(t, gone);
        free(gone);
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], "*") != 0)
            changed |= add_name(t, names[i]);
    if (changed)
        t->sub_pending = true;
    return 0;
}

void mp_xds_session_reset(mp_xds_session_t *s)
{
    s->node_sent = false;
    for (size_t i = 0; i < s->n_types; i++) {
        mp_xds_type_t *t = s->types[i];
        clear_stream_state(t);
        t->sub_pending = mp_xds__type_interested(t);
    }
}

int mp_xds_session_set_fetch_timeout(mp_xds_session_t *s, const char *type_url, uint64_t timeout_ms,
                                     uint64_t now)
{
    mp_xds_type_t *t = mp_xds__type_find(s, type_url);
    if (t == NULL)
        return MP_ERROR;
    t->deadline_armed = timeout_ms > 0;
    t->deadline = now + timeout_ms;
    return 0;
}

bool mp_xds_session_fetch_pending(const mp_xds_session_t *s, const char *type_url, uint64_t now)
{
    const mp_xds_type_t *t = mp_xds__type_find(s, type_url);
    if (t == NULL || t->got_response)
        return false;
    return !t->deadline_armed || now < t->deadline;
}

uint64_t mp_xds_session_next_deadline(const mp_xds_session_t *s)
{
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < s->n_types; i++) {
        const mp_xds_type_t *t = s->types[i];
        if (!t->got_response && t->deadline_armed && t->deadline < next)
            next = t->deadline;
    }
    return next;
}

const char *mp_xds_session_version(const mp_xds_session_t *s, const char *type_url)
{
    const mp_xds_type_t *t = mp_xds__type_find(s, type_url);
    return t ? t->version : NULL;
}

const char *mp_xds_session_resource_version(const mp_xds_session_t *s, const char *type_url,
                                            const char *name)
{
    const mp_xds_type_t *t = mp_xds__type_find(s, type_url);
    ssize_t i = t ? mp_xds__names_find(&t->known, name) : -1;
    return i >= 0 ? t->known.v[i].version : NULL;
}
