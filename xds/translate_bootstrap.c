/* envoy.config.bootstrap.v3.Bootstrap -> mp_config_t: node, admin, and static_resources
 * (clusters first, so that routes can resolve them). */
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

#include "../proxy/config_internal.h"
#include "magpie/bootstrap.h"
#include "magpie/log.h"
#include "magpie/resource_store.h"

typedef Envoy__Config__Bootstrap__V3__Bootstrap pb_bootstrap_t;

/* Snapshots are numbered in the order they are built, for logs and /config_dump. */
static _Atomic uint64_t last_generation;

static void translate_node(const pb_bootstrap_t *pb, const mp_options_t *opts, mp_config_t *cfg)
{
    const char *id = pb->node && pb->node->id ? pb->node->id : "";
    const char *cluster = pb->node && pb->node->cluster ? pb->node->cluster : "";
    /* --service-node / --service-cluster win over the file, as in Envoy. */
    if (opts != NULL && opts->service_node != NULL)
        id = opts->service_node;
    if (opts != NULL && opts->service_cluster != NULL)
        cluster = opts->service_cluster;
    cfg->node_id = mp_xstrdup(id);
    cfg->node_cluster = mp_xstrdup(cluster);
    const Envoy__Config__Core__V3__Locality *loc = pb->node ? pb->node->locality : NULL;
    cfg->node_locality.region = mp_xstrdup(loc && loc->region ? loc->region : "");
    cfg->node_locality.zone = mp_xstrdup(loc && loc->zone ? loc->zone : "");
    cfg->node_locality.sub_zone = mp_xstrdup(loc && loc->sub_zone ? loc->sub_zone : "");
    const char *lc = pb->cluster_manager ? pb->cluster_manager->local_cluster_name : NULL;
    if (lc != NULL && lc[0] != '\0')
        cfg->local_cluster_name = mp_xstrdup(lc);
}

/* After all clusters exist: Envoy refuses a local_cluster_name that names none. */
static int link_localities(mp_config_t *cfg, mp_err_t *err)
{
    if (cfg->local_cluster_name != NULL &&
        mp_config_find_cluster(cfg, cfg->local_cluster_name) == NULL)
        return mp_err_set(err, "cluster_manager.local_cluster_name: no cluster named \"%s\"",
                          cfg->local_cluster_name);
    /* A shared cluster was linked when it was built, and the same bytes link the same way. */
    for (uint32_t i = 0; i < cfg->n_clusters; i++)
        if (atomic_load(&cfg->clusters[i]->refs) == 1)
            mp_translate__cluster_locality(cfg->clusters[i], cfg);
    return 0;
}

static int translate_admin(const pb_bootstrap_t *pb, mp_config_t *cfg, mp_err_t *err)
{
    if (pb->admin == NULL || pb->admin->address == NULL)
        return 0;
    if (mp_translate__address(pb->admin->address, &cfg->admin_addr, err) != 0)
        return mp_err_prefix(err, "admin.address.");
    cfg->has_admin = true;
    return 0;
}

/* The snapshot a new one may share clusters with (mp_translate_bootstrap_next); main thread. */
static const mp_config_t *reuse_from;

static uint8_t *pack_message(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = mp_xmalloc(*len ? *len : 1);
    protobuf_c_message_pack(m, b);
    return b;
}

/* The previous snapshot's cluster of the same name when its Cluster packs to the same bytes.
 * Not with a local cluster: zone-aware clusters borrow a pointer into their own snapshot. */
static mp_cluster_t *reusable_cluster(const mp_config_t *cfg, const uint8_t *pb, size_t len,
                                      const char *name)
{
    if (reuse_from == NULL || name == NULL || cfg->local_cluster_name != NULL ||
        reuse_from->local_cluster_name != NULL)
        return NULL;
    mp_cluster_t *old = mp_config_find_cluster(reuse_from, name);
    if (old == NULL || old->pb_len != len || memcmp(old->pb, pb, len) != 0)
        return NULL;
    return old;
}

/* A shared cluster's TLS context rotates with the new snapshot's watcher too. */
static void register_shared_tls(mp_config_t *cfg, mp_cluster_t *c)
{
    if (c->tls == NULL)
        return;
    cfg->tls_ctxs = mp_xrealloc(cfg->tls_ctxs, (cfg->n_tls_ctxs + 1) * sizeof(*cfg->tls_ctxs));
    cfg->tls_ctxs[cfg->n_tls_ctxs++] = c->tls;
}

/* An EDS cluster's object is kept while its Cluster bytes and the localities of its stored
 * assignment stay the same: its hosts index its localities (mp_translate_eds_hosts). */
static uint8_t *append_eds_key(const Envoy__Config__Cluster__V3__Cluster *pb, uint8_t *b,
                               size_t *len)
{
    if (pb->type != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS ||
        pb->eds_cluster_config == NULL)
        return b;
    const char *sn = pb->eds_cluster_config->service_name;
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la = (const void *)mp_rstore_get(
        &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
        sn != NULL && sn[0] != '\0' ? sn : pb->name);
    if (la == NULL)
        return b;
    char *key = mp_xasprintf("|%u", la->policy && la->policy->overprovisioning_factor
                                        ? la->policy->overprovisioning_factor->value
                                        : 140u);
    for (size_t i = 0; i < la->n_endpoints; i++) {
        const Envoy__Config__Core__V3__Locality *l = la->endpoints[i]->locality;
        char *k = mp_xasprintf("%s|%s/%s/%s", key, l && l->region ? l->region : "",
                               l && l->zone ? l->zone : "", l && l->sub_zone ? l->sub_zone : "");
        free(key);
        key = k;
    }
    size_t kl = strlen(key);
    b = mp_xrealloc(b, *len + kl);
    memcpy(b + *len, key, kl);
    *len += kl;
    free(key);
    return b;
}

static mp_cluster_t *translate_one_cluster(const Envoy__Config__Cluster__V3__Cluster *pb,
                                           mp_config_t *cfg, uint32_t i, mp_err_t *err)
{
    size_t len;
    uint8_t *bytes = append_eds_key(pb, pack_message(&pb->base, &len), &len);
    mp_cluster_t *c = reusable_cluster(cfg, bytes, len, pb->name);
    if (c != NULL) {
        free(bytes);
        register_shared_tls(cfg, c);
        return mp_cluster_ref(c);
    }
    c = mp_translate__cluster(pb, i, err);
    if (c == NULL) {
        free(bytes);
        return NULL;
    }
    c->pb = bytes;
    c->pb_len = len;
    return c;
}

static int translate_clusters(const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr,
                              mp_config_t *cfg, mp_err_t *err)
{
    cfg->clusters = mp_xcalloc(sr->n_clusters, sizeof(*cfg->clusters));
    for (size_t i = 0; i < sr->n_clusters; i++) {
        const char *name = sr->clusters[i]->name;
        if (name != NULL && mp_config_find_cluster(cfg, name) != NULL)
            return mp_err_set(err, "clusters[%zu].name: duplicate cluster \"%s\"", i, name);
        mp_cluster_t *c = translate_one_cluster(sr->clusters[i], cfg, (uint32_t)i, err);
        if (c == NULL)
            return mp_err_prefix(err, "clusters[%zu].", i);
        cfg->clusters[cfg->n_clusters++] = c;
    }
    return 0;
}

/* Envoy refuses two listeners with one name or one address. */
static int check_listener_unique(const mp_config_t *cfg, uint32_t i, mp_err_t *err)
{
    const mp_listener_t *l = &cfg->listeners[i];
    for (uint32_t j = 0; j < i; j++) {
        if (strcmp(cfg->listeners[j].name, l->name) == 0)
            return mp_err_set(err, "listeners[%u].name: duplicate listener \"%s\"", i, l->name);
        if (strcmp(cfg->listeners[j].addr.text, l->addr.text) == 0)
            return mp_err_set(err, "listeners[%u].address: %s is already used by listener \"%s\"",
                              i, l->addr.text, cfg->listeners[j].name);
    }
    return 0;
}

static int translate_listeners(const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr,
                               mp_config_t *cfg, mp_err_t *err)
{
    cfg->listeners = mp_xcalloc(sr->n_listeners, sizeof(*cfg->listeners));
    cfg->n_listeners = (uint32_t)sr->n_listeners;
    for (size_t i = 0; i < sr->n_listeners; i++) {
        if (mp_translate__listener(sr->listeners[i], cfg, &cfg->listeners[i], err) != 0)
            return mp_err_prefix(err, "listeners[%zu].", i);
        cfg->listeners[i].pb = pack_message(&sr->listeners[i]->base, &cfg->listeners[i].pb_len);
        if (check_listener_unique(cfg, (uint32_t)i, err) != 0)
            return MP_ERROR;
    }
    return 0;
}

static int translate_fields(const pb_bootstrap_t *pb, const mp_options_t *opts, mp_config_t *cfg,
                            mp_err_t *err)
{
    translate_node(pb, opts, cfg);
    if (translate_admin(pb, cfg, err) != 0)
        return MP_ERROR;
    if (pb->static_resources != NULL && (translate_clusters(pb->static_resources, cfg, err) != 0 ||
                                         translate_listeners(pb->static_resources, cfg, err) != 0))
        return mp_err_prefix(err, "static_resources.");
    return link_localities(cfg, err);
}

mp_config_t *mp_translate_bootstrap(ProtobufCMessage *msg, const mp_options_t *opts, mp_err_t *err)
{
    if (msg == NULL || msg->descriptor != &envoy__config__bootstrap__v3__bootstrap__descriptor) {
        if (msg != NULL)
            protobuf_c_message_free_unpacked(msg, NULL);
        mp_err_set(err, "not an envoy.config.bootstrap.v3.Bootstrap message");
        return NULL;
    }
    mp_config_t *cfg = mp_xcalloc(1, sizeof(*cfg));
    atomic_init(&cfg->refs, 1);
    cfg->bootstrap = msg;
    mp_translate__tls_register_into(cfg);
    int rc = translate_fields((const pb_bootstrap_t *)msg, opts, cfg, err);
    mp_translate__tls_register_into(NULL);
    if (rc != 0) {
        mp_config_unref(cfg);
        return NULL;
    }
    cfg->generation = atomic_fetch_add(&last_generation, 1) + 1;
    return cfg;
}

mp_config_t *mp_translate_bootstrap_next(ProtobufCMessage *msg, const mp_options_t *opts,
                                         const mp_config_t *prev, mp_err_t *err)
{
    reuse_from = prev;
    mp_config_t *cfg = mp_translate_bootstrap(msg, opts, err);
    reuse_from = NULL;
    return cfg;
}
