/* Building the next DiscoveryRequest / DeltaDiscoveryRequest of an xDS session
 * (docs/xds-protocol.md, "What the client sends"). */
#include <stdlib.h>
#include <string.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"

#include "xds_session_internal.h"

typedef Envoy__Config__Core__V3__Node pb_node_t;
typedef Envoy__Config__Core__V3__Locality pb_locality_t;
typedef Envoy__Service__Discovery__V3__DiscoveryRequest pb_request_t;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest pb_delta_request_t;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry
    pb_version_entry_t;
typedef Google__Rpc__Status pb_status_t;

/* Pointers into the session; nothing here is owned by the message. */
static void fill_node(const mp_xds_session_t *s, pb_node_t *node, pb_locality_t *loc)
{
    node->id = s->node_id;
    node->cluster = s->node_cluster;
    node->metadata = s->metadata;
    if (s->region[0] || s->zone[0] || s->sub_zone[0]) {
        loc->region = s->region;
        loc->zone = s->zone;
        loc->sub_zone = s->sub_zone;
        node->locality = loc;
    }
    node->user_agent_name = "magpie";
    if (s->ua_version != NULL) {
        node->user_agent_version_type_case =
            ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION;
        node->user_agent_version = s->ua_version;
    }
    node->n_client_features = s->n_features;
    node->client_features = s->features;
}

static void pack(const ProtobufCMessage *msg, mp_xds_request_t *out)
{
    out->len = protobuf_c_message_get_packed_size(msg);
    out->data = mp_xmalloc(out->len ? out->len : 1);
    protobuf_c_message_pack(msg, out->data);
}

/* SotW names (§2.4): a wildcard never told otherwise goes as the legacy empty list, which every
 * plane reads as wildcard; once explicit names were sent, the wildcard must be "*" because an
 * empty list would then mean "nothing". */
static char **sotw_names(mp_xds_type_t *t, size_t *n)
{
    bool star = t->wildcard && (t->names.n > 0 || t->sent_explicit);
    char **v = mp_xcalloc(t->names.n + 1, sizeof(char *));
    size_t k = 0;
    if (star)
        v[k++] = (char *)"*";
    for (size_t i = 0; i < t->names.n; i++)
        v[k++] = t->names.v[i].name;
    if (k > 0)
        t->sent_explicit = true;
    *n = k;
    return v;
}

static void build_sotw(mp_xds_session_t *s, mp_xds_type_t *t, mp_xds_request_t *out)
{
    pb_request_t req = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    pb_node_t node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    pb_locality_t loc = ENVOY__CONFIG__CORE__V3__LOCALITY__INIT;
    pb_status_t status = GOOGLE__RPC__STATUS__INIT;
    req.type_url = t->type_url;
    /* version_info is the last *accepted* version, also in a NACK (§2.2). */
    req.version_info = t->version;
    /* Every request echoes the most recent nonce of the type, so a subscription change is not
     * taken for a reply to an older response and dropped as stale (§2.3). */
    req.response_nonce = t->nonce ? t->nonce : "";
    req.resource_names = sotw_names(t, &req.n_resource_names);
    if (!s->node_sent) {
        fill_node(s, &node, &loc);
        req.node = &node;
    }
    if (t->error != NULL) {
        status.code = MP_XDS_NACK_CODE;
        status.message = t->error;
        req.error_detail = &status;
        out->is_nack = true;
    }
    pack(&req.base, out);
    free(req.resource_names);
}

static char **list_names(const mp_xds_names_t *set, size_t *n)
{
    char **v = mp_xcalloc(set->n + 1, sizeof(char *));
    for (size_t i = 0; i < set->n; i++)
        v[i] = set->v[i].name;
    *n = set->n;
    return v;
}

/* The first delta request of a stream names the whole interest (§2.8): "*" only when names are
 * listed beside the wildcard (both lists empty is the legacy wildcard form), plus the versions
 * held so the plane can skip what is unchanged. */
static void delta_initial(mp_xds_type_t *t, pb_delta_request_t *req, pb_version_entry_t **ents)
{
    size_t n;
    req->resource_names_subscribe = sotw_names(t, &n);
    req->n_resource_names_subscribe = n;
    req->n_initial_resource_versions = 0;
    req->initial_resource_versions = ents;
    for (size_t i = 0; i < t->known.n; i++) {
        pb_version_entry_t *e = ents[req->n_initial_resource_versions++];
        e->key = t->known.v[i].name;
        e->value = t->known.v[i].version ? t->known.v[i].version : "";
    }
}

static pb_version_entry_t **alloc_entries(size_t n)
{
    pb_version_entry_t **ents = mp_xcalloc(n + 1, sizeof(*ents));
    pb_version_entry_t init =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
    for (size_t i = 0; i < n; i++) {
        ents[i] = mp_xmalloc(sizeof(**ents));
        *ents[i] = init;
    }
    return ents;
}

static void build_delta(mp_xds_session_t *s, mp_xds_type_t *t, mp_xds_request_t *out)
{
    pb_delta_request_t req = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    pb_node_t node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    pb_locality_t loc = ENVOY__CONFIG__CORE__V3__LOCALITY__INIT;
    pb_status_t status = GOOGLE__RPC__STATUS__INIT;
    pb_version_entry_t **ents = alloc_entries(t->known.n);
    req.type_url = t->type_url;
    if (!t->sent_initial) {
        delta_initial(t, &req, ents);
    } else {
        req.resource_names_subscribe = list_names(&t->delta_sub, &req.n_resource_names_subscribe);
        req.resource_names_unsubscribe =
            list_names(&t->delta_unsub, &req.n_resource_names_unsubscribe);
    }
    /* In delta the nonce only pairs an ACK/NACK with its response; a spontaneous subscription
     * change goes without one. */
    req.response_nonce = t->ack_pending && t->nonce ? t->nonce : "";
    if (!s->node_sent) {
        fill_node(s, &node, &loc);
        req.node = &node;
    }
    if (t->error != NULL && t->ack_pending) {
        status.code = MP_XDS_NACK_CODE;
        status.message = t->error;
        req.error_detail = &status;
        out->is_nack = true;
    }
    pack(&req.base, out);
    free(req.resource_names_subscribe);
    free(req.resource_names_unsubscribe);
    for (size_t i = 0; i < t->known.n; i++)
        free(ents[i]);
    free(ents);
}

/* Whether the type has a request to send now.  A type not yet announced on this stream with
 * nothing to ask for (a named type without names) stays silent. */
static bool has_request(const mp_xds_type_t *t, bool acks)
{
    if (acks)
        return t->ack_pending;
    if (!t->sub_pending)
        return false;
    return t->sent_initial || mp_xds__type_interested(t);
}

static mp_xds_type_t *pick_type(mp_xds_session_t *s)
{
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < s->n_types; i++)
            if (has_request(s->types[i], pass == 0))
                return s->types[i];
    return NULL;
}

int mp_xds_session_next_request(mp_xds_session_t *s, mp_xds_request_t *out)
{
    memset(out, 0, sizeof(*out));
    mp_xds_type_t *t = pick_type(s);
    if (t == NULL)
        return 0;
    if (s->mode == MP_XDS_DELTA)
        build_delta(s, t, out);
    else
        build_sotw(s, t, out);
    out->type_url = t->type_url;
    /* Envoy sends an error_detail once: later requests of the type carry the nonce again but
     * no error, so the plane does not count one rejection twice. */
    free(t->error);
    t->error = NULL;
    s->node_sent = true;
    t->sent_initial = true;
    t->ack_pending = false;
    t->sub_pending = false;
    mp_xds__names_clear(&t->delta_sub);
    mp_xds__names_clear(&t->delta_unsub);
    return 1;
}

void mp_xds_request_clear(mp_xds_request_t *r)
{
    free(r->data);
    memset(r, 0, sizeof(*r));
}
