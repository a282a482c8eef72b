/* magpie-cp: the server side of one xDS stream, SotW or delta, ADS or per type.  The rules are
 * those of reference §2 as go-control-plane and istiod apply them: a response per subscribed type
 * only when its content for this client moved on; stale nonces ignored (SotW); NACKs logged and
 * not answered; delta answers only with what the client does not hold. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/rpc/status.pb-c.h"

#include "cp.h"
#include "magpie/log.h"

/* What one stream asked for of one type, and what it was sent.  known holds name -> version of
 * what the client holds as far as we know ("" = told it does not exist). */
struct mp_cp_sub {
    bool active;
    bool wildcard;
    bool named_ever; /* SotW: a non-empty name list was sent once (legacy wildcard rule) */
    char **names;
    size_t n_names;
    char **known;
    char **known_ver;
    size_t n_known;
    char nonce[24]; /* last nonce sent for this type */
};

typedef Envoy__Service__Discovery__V3__DiscoveryRequest sotw_req_t;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest delta_req_t;

static long find_str(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return (long)i;
    return -1;
}

static void names_clear(mp_cp_sub_t *s)
{
    for (size_t i = 0; i < s->n_names; i++)
        free(s->names[i]);
    free(s->names);
    s->names = NULL;
    s->n_names = 0;
}

static bool names_add(mp_cp_sub_t *s, const char *name)
{
    if (find_str(s->names, s->n_names, name) >= 0)
        return false;
    s->names = mp_xrealloc(s->names, (s->n_names + 1) * sizeof(char *));
    s->names[s->n_names++] = mp_xstrdup(name);
    return true;
}

static void names_remove(mp_cp_sub_t *s, const char *name)
{
    long i = find_str(s->names, s->n_names, name);
    if (i < 0)
        return;
    free(s->names[i]);
    s->names[i] = s->names[--s->n_names];
}

static const char *known_get(const mp_cp_sub_t *s, const char *name)
{
    long i = find_str(s->known, s->n_known, name);
    return i < 0 ? NULL : s->known_ver[i];
}

static void known_set(mp_cp_sub_t *s, const char *name, const char *version)
{
    long i = find_str(s->known, s->n_known, name);
    if (i >= 0) {
        free(s->known_ver[i]);
        s->known_ver[i] = mp_xstrdup(version);
        return;
    }
    s->known = mp_xrealloc(s->known, (s->n_known + 1) * sizeof(char *));
    s->known_ver = mp_xrealloc(s->known_ver, (s->n_known + 1) * sizeof(char *));
    s->known[s->n_known] = mp_xstrdup(name);
    s->known_ver[s->n_known++] = mp_xstrdup(version);
}

static void known_remove(mp_cp_sub_t *s, const char *name)
{
    long i = find_str(s->known, s->n_known, name);
    if (i < 0)
        return;
    free(s->known[i]);
    free(s->known_ver[i]);
    s->n_known--;
    s->known[i] = s->known[s->n_known];
    s->known_ver[i] = s->known_ver[s->n_known];
}

static void known_clear(mp_cp_sub_t *s)
{
    while (s->n_known > 0)
        known_remove(s, s->known[0]);
    free(s->known);
    free(s->known_ver);
    s->known = s->known_ver = NULL;
}

void mp_cp_xds_init(mp_cp_xds_t *x, const mp_cp_store_t *store, bool delta, int fixed_type,
                    const char *label, mp_cp_send_cb send, void *arg)
{
    memset(x, 0, sizeof(*x));
    x->store = store;
    x->delta = delta;
    x->fixed_type = fixed_type;
    x->label = mp_xstrdup(label);
    x->node_id = mp_xstrdup("");
    x->sub = mp_xcalloc(MP_CP_NTYPES, sizeof(*x->sub));
    x->send = send;
    x->arg = arg;
}

void mp_cp_xds_free(mp_cp_xds_t *x)
{
    for (int t = 0; x->sub != NULL && t < MP_CP_NTYPES; t++) {
        names_clear(&x->sub[t]);
        known_clear(&x->sub[t]);
    }
    free(x->sub);
    free(x->label);
    free(x->node_id);
    x->sub = NULL;
}

static bool wanted(const mp_cp_sub_t *s, const char *name)
{
    return s->wildcard || find_str(s->names, s->n_names, name) >= 0;
}

/* "[a,b]" for logs, truncated. */
static void join(char *buf, size_t size, char *const *v, size_t n)
{
    size_t off = (size_t)snprintf(buf, size, "[");
    for (size_t i = 0; i < n && off < size; i++)
        off += (size_t)snprintf(buf + off, size - off, "%s%s", i ? "," : "", v[i]);
    if (off < size)
        snprintf(buf + off, size - off, "]");
}

static void next_nonce(mp_cp_xds_t *x, mp_cp_sub_t *s)
{
    snprintf(s->nonce, sizeof(s->nonce), "%llu", (unsigned long long)++x->nonce_seq);
}

static void send_msg(mp_cp_xds_t *x, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = mp_xmalloc(n ? n : 1);
    protobuf_c_message_pack(m, buf);
    x->send(x->arg, buf, n);
    free(buf);
}

/* ---- state of the world ---- */

/* The resources this stream gets for type t, as Anys pointing into the live snapshot. */
static size_t sotw_select(const mp_cp_xds_t *x, int t, Google__Protobuf__Any *anys,
                          Google__Protobuf__Any **ptrs)
{
    const mp_cp_snapshot_t *live = &x->store->live;
    size_t n = 0;
    for (size_t i = 0; i < live->n; i++) {
        const mp_cp_resource_t *r = &live->res[i];
        if (r->type != t || !wanted(&x->sub[t], r->name))
            continue;
        google__protobuf__any__init(&anys[n]);
        anys[n].type_url = (char *)mp_cp_type(t)->url;
        anys[n].value.data = r->value;
        anys[n].value.len = r->len;
        ptrs[n] = &anys[n];
        n++;
    }
    return n;
}

/* Whether the selection differs from what was last sent (names and versions). */
static bool sotw_moved_on(const mp_cp_xds_t *x, int t)
{
    const mp_cp_sub_t *s = &x->sub[t];
    const mp_cp_snapshot_t *live = &x->store->live;
    size_t n = 0;
    for (size_t i = 0; i < live->n; i++) {
        const mp_cp_resource_t *r = &live->res[i];
        if (r->type != t || !wanted(s, r->name))
            continue;
        const char *v = known_get(s, r->name);
        if (v == NULL || strcmp(v, r->version) != 0)
            return true;
        n++;
    }
    return n != s->n_known;
}

static void sotw_send(mp_cp_xds_t *x, int t)
{
    mp_cp_sub_t *s = &x->sub[t];
    size_t cap = x->store->live.n + 1;
    Google__Protobuf__Any *anys = mp_xcalloc(cap, sizeof(*anys));
    Google__Protobuf__Any **ptrs = mp_xcalloc(cap, sizeof(*ptrs));
    Envoy__Service__Discovery__V3__DiscoveryResponse dr =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    dr.n_resources = sotw_select(x, t, anys, ptrs);
    dr.resources = ptrs;
    dr.version_info = (char *)x->store->version_str[t];
    dr.type_url = (char *)mp_cp_type(t)->url;
    next_nonce(x, s);
    dr.nonce = s->nonce;
    known_clear(s);
    for (size_t i = 0; i < x->store->live.n; i++) {
        const mp_cp_resource_t *r = &x->store->live.res[i];
        if (r->type == t && wanted(s, r->name))
            known_set(s, r->name, r->version);
    }
    mp_log_info("%s: -> %s version=\"%s\" nonce=\"%s\" resources=%zu", x->label,
                mp_cp_type(t)->name, dr.version_info, dr.nonce, dr.n_resources);
    send_msg(x, &dr.base);
    free(anys);
    free(ptrs);
}

/* Applies the request's name list (reference §2.4).  Returns true when names were added. */
static bool sotw_subscribe(mp_cp_sub_t *s, int t, const sotw_req_t *rq)
{
    bool star = find_str(rq->resource_names, rq->n_resource_names, "*") >= 0;
    bool added = false;
    char **old = s->names;
    size_t n_old = s->n_names;
    s->names = NULL;
    s->n_names = 0;
    for (size_t i = 0; i < rq->n_resource_names; i++)
        if (strcmp(rq->resource_names[i], "*") != 0 && names_add(s, rq->resource_names[i]))
            added |= find_str(old, n_old, rq->resource_names[i]) < 0;
    for (size_t i = 0; i < n_old; i++)
        free(old[i]);
    free(old);
    bool was_wildcard = s->wildcard;
    if (mp_cp_type(t)->wildcard)
        s->wildcard = star || (rq->n_resource_names == 0 && !s->named_ever);
    else
        s->wildcard = false;
    s->named_ever |= rq->n_resource_names > 0;
    return added || (s->wildcard && !was_wildcard);
}

static void sotw_log(const mp_cp_xds_t *x, int t, const sotw_req_t *rq)
{
    char names[512];
    join(names, sizeof(names), rq->resource_names, rq->n_resource_names);
    const char *kind = rq->response_nonce[0] == '\0' ? "request" : "ACK";
    if (rq->error_detail != NULL)
        mp_log_info("%s: NACK %s version=\"%s\" nonce=\"%s\" names=%s node=\"%s\" "
                    "error_detail=(%d) %s",
                    x->label, mp_cp_type(t)->name, rq->version_info, rq->response_nonce, names,
                    x->node_id, rq->error_detail->code,
                    rq->error_detail->message ? rq->error_detail->message : "");
    else
        mp_log_info("%s: %s %s version=\"%s\" nonce=\"%s\" names=%s node=\"%s\"", x->label, kind,
                    mp_cp_type(t)->name, rq->version_info, rq->response_nonce, names, x->node_id);
}

static int request_type(const mp_cp_xds_t *x, const char *url, mp_err_t *err)
{
    if (x->fixed_type >= 0) {
        if (url[0] != '\0' && strcmp(url, mp_cp_type(x->fixed_type)->url) != 0)
            return mp_err_set(err, "type URL \"%.200s\" on a %s stream", url,
                              mp_cp_type(x->fixed_type)->name);
        return x->fixed_type;
    }
    if (url[0] == '\0')
        return mp_err_set(err, "type URL is required for ADS");
    int t = mp_cp_type_by_url(url);
    if (t < 0)
        return mp_err_set(err, "magpie-cp does not serve type \"%.200s\"", url);
    return t;
}

static void remember_node(mp_cp_xds_t *x, const Envoy__Config__Core__V3__Node *node)
{
    if (node != NULL && node->id != NULL && node->id[0] != '\0') {
        free(x->node_id);
        x->node_id = mp_xstrdup(node->id);
    }
}

static int sotw_on_request(mp_cp_xds_t *x, const sotw_req_t *rq, mp_err_t *err)
{
    remember_node(x, rq->node);
    int t = request_type(x, rq->type_url, err);
    if (t < 0)
        return 3;
    sotw_log(x, t, rq);
    mp_cp_sub_t *s = &x->sub[t];
    bool initial = rq->response_nonce[0] == '\0';
    if (!initial && strcmp(rq->response_nonce, s->nonce) != 0) {
        mp_log_info("%s: stale nonce \"%s\" for %s (last sent \"%s\"), ignored", x->label,
                    rq->response_nonce, mp_cp_type(t)->name, s->nonce);
        return 0;
    }
    if (rq->error_detail != NULL)
        return 0; /* the client keeps its previous config; nothing to answer */
    bool added = sotw_subscribe(s, t, rq);
    if (!mp_cp_type(t)->wildcard && s->n_names == 0) {
        s->active = false; /* istiod's rule: empty names on a named type = unsubscribe */
        known_clear(s);
        return 0;
    }
    s->active = true;
    if (initial || added || sotw_moved_on(x, t))
        sotw_send(x, t);
    return 0;
}

/* ---- delta ---- */

typedef struct delta_out {
    Envoy__Service__Discovery__V3__Resource *res;
    Envoy__Service__Discovery__V3__Resource **res_ptrs;
    Google__Protobuf__Any *anys;
    size_t n_res;
    char **removed;
    size_t n_removed;
} delta_out_t;

static void delta_add(delta_out_t *o, int t, const mp_cp_resource_t *r)
{
    Envoy__Service__Discovery__V3__Resource *res = &o->res[o->n_res];
    Google__Protobuf__Any *any = &o->anys[o->n_res];
    envoy__service__discovery__v3__resource__init(res);
    google__protobuf__any__init(any);
    any->type_url = (char *)mp_cp_type(t)->url;
    any->value.data = r->value;
    any->value.len = r->len;
    res->name = r->name;
    res->version = r->version;
    res->resource = any;
    o->res_ptrs[o->n_res++] = res;
}

/* Names the client holds (or was told are absent) that it must now be told are gone. */
static void delta_removals(mp_cp_xds_t *x, int t, delta_out_t *o)
{
    mp_cp_sub_t *s = &x->sub[t];
    for (size_t i = 0; i < s->n_names; i++) {
        const char *v = known_get(s, s->names[i]);
        if (mp_cp_snapshot_find(&x->store->live, t, s->names[i]) == NULL &&
            (v == NULL || v[0] != '\0')) {
            o->removed[o->n_removed++] = mp_xstrdup(s->names[i]);
            known_set(s, s->names[i], "");
        }
    }
    for (size_t i = 0; i < s->n_known;) {
        const char *name = s->known[i];
        bool named = find_str(s->names, s->n_names, name) >= 0;
        if (!named && mp_cp_snapshot_find(&x->store->live, t, name) == NULL) {
            if (s->known_ver[i][0] != '\0')
                o->removed[o->n_removed++] = mp_xstrdup(name);
            known_remove(s, name);
            continue;
        }
        i++;
    }
}

static void delta_send(mp_cp_xds_t *x, int t, delta_out_t *o)
{
    mp_cp_sub_t *s = &x->sub[t];
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse dr =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
    dr.system_version_info = (char *)x->store->version_str[t];
    dr.type_url = (char *)mp_cp_type(t)->url;
    dr.resources = o->res_ptrs;
    dr.n_resources = o->n_res;
    dr.removed_resources = o->removed;
    dr.n_removed_resources = o->n_removed;
    next_nonce(x, s);
    dr.nonce = s->nonce;
    char removed[512];
    join(removed, sizeof(removed), o->removed, o->n_removed);
    mp_log_info("%s: -> %s delta system_version=\"%s\" nonce=\"%s\" resources=%zu removed=%s",
                x->label, mp_cp_type(t)->name, dr.system_version_info, dr.nonce, dr.n_resources,
                removed);
    send_msg(x, &dr.base);
}

/* Sends what the client does not hold yet of what it asked for, and what went away. */
static void delta_sync(mp_cp_xds_t *x, int t)
{
    mp_cp_sub_t *s = &x->sub[t];
    const mp_cp_snapshot_t *live = &x->store->live;
    size_t cap = live->n + 1;
    delta_out_t o = {.res = mp_xcalloc(cap, sizeof(*o.res)),
                     .res_ptrs = mp_xcalloc(cap, sizeof(*o.res_ptrs)),
                     .anys = mp_xcalloc(cap, sizeof(*o.anys)),
                     .removed = mp_xcalloc(s->n_names + s->n_known + 1, sizeof(char *))};
    for (size_t i = 0; i < live->n; i++) {
        const mp_cp_resource_t *r = &live->res[i];
        if (r->type != t || !wanted(s, r->name))
            continue;
        const char *v = known_get(s, r->name);
        if (v == NULL || strcmp(v, r->version) != 0) {
            delta_add(&o, t, r);
            known_set(s, r->name, r->version);
        }
    }
    delta_removals(x, t, &o);
    if (o.n_res > 0 || o.n_removed > 0)
        delta_send(x, t, &o);
    for (size_t i = 0; i < o.n_removed; i++)
        free(o.removed[i]);
    free(o.res), free(o.res_ptrs), free(o.anys), free(o.removed);
}

static void delta_log(const mp_cp_xds_t *x, int t, const delta_req_t *rq)
{
    char sub[512], unsub[256];
    join(sub, sizeof(sub), rq->resource_names_subscribe, rq->n_resource_names_subscribe);
    join(unsub, sizeof(unsub), rq->resource_names_unsubscribe, rq->n_resource_names_unsubscribe);
    const char *kind = rq->error_detail ? "NACK" : rq->response_nonce[0] ? "ACK" : "request";
    mp_log_info("%s: %s %s delta nonce=\"%s\" subscribe=%s unsubscribe=%s initial_versions=%zu "
                "node=\"%s\"%s%s",
                x->label, kind, mp_cp_type(t)->name, rq->response_nonce, sub, unsub,
                rq->n_initial_resource_versions, x->node_id,
                rq->error_detail ? " error_detail=" : "",
                rq->error_detail && rq->error_detail->message ? rq->error_detail->message : "");
}

static void delta_subscribe(mp_cp_sub_t *s, int t, const delta_req_t *rq, bool first)
{
    if (first) {
        for (size_t i = 0; i < rq->n_initial_resource_versions; i++)
            known_set(s, rq->initial_resource_versions[i]->key,
                      rq->initial_resource_versions[i]->value);
        /* Legacy wildcard: a first request naming nothing (reference §2.8). */
        if (mp_cp_type(t)->wildcard && rq->n_resource_names_subscribe == 0 &&
            rq->n_resource_names_unsubscribe == 0)
            s->wildcard = true;
    }
    for (size_t i = 0; i < rq->n_resource_names_subscribe; i++) {
        const char *n = rq->resource_names_subscribe[i];
        if (strcmp(n, "*") == 0) {
            s->wildcard = true;
            continue;
        }
        names_add(s, n);
        /* A name subscribed again must be sent again, unless the client just told us (on its
         * first request) which version it holds. */
        if (!first || find_str(s->known, s->n_known, n) < 0 || known_get(s, n)[0] == '\0')
            known_remove(s, n);
    }
    for (size_t i = 0; i < rq->n_resource_names_unsubscribe; i++) {
        const char *n = rq->resource_names_unsubscribe[i];
        if (strcmp(n, "*") == 0)
            s->wildcard = false;
        names_remove(s, n);
        if (!s->wildcard)
            known_remove(s, n);
    }
}

static int delta_on_request(mp_cp_xds_t *x, const delta_req_t *rq, mp_err_t *err)
{
    remember_node(x, rq->node);
    int t = request_type(x, rq->type_url, err);
    if (t < 0)
        return 3;
    delta_log(x, t, rq);
    mp_cp_sub_t *s = &x->sub[t];
    bool first = !s->active;
    s->active = true;
    delta_subscribe(s, t, rq, first);
    /* Delta honours subscription changes whatever the nonce (reference §2.3); an ACK or NACK
     * without changes finds nothing new to send. */
    delta_sync(x, t);
    return 0;
}

/* ---- entry points ---- */

int mp_cp_xds_on_message(mp_cp_xds_t *x, const uint8_t *msg, size_t len, mp_err_t *err)
{
    const ProtobufCMessageDescriptor *d =
        x->delta ? &envoy__service__discovery__v3__delta_discovery_request__descriptor
                 : &envoy__service__discovery__v3__discovery_request__descriptor;
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, msg);
    if (m == NULL) {
        mp_err_set(err, "cannot decode %s (%zu bytes)", d->name, len);
        return 3;
    }
    int rc = x->delta ? delta_on_request(x, (const delta_req_t *)m, err)
                      : sotw_on_request(x, (const sotw_req_t *)m, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

void mp_cp_xds_push(mp_cp_xds_t *x)
{
    for (int t = 0; t < MP_CP_NTYPES; t++) {
        if (!x->sub[t].active)
            continue;
        if (x->delta)
            delta_sync(x, t);
        else if (sotw_moved_on(x, t))
            sotw_send(x, t);
    }
}
