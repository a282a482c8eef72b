/* envoy.config.bootstrap.v3.Bootstrap -> mp_config_t: node, admin, and static_resources
 * (clusters first, so that routes can resolve them). */
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

#include "../proxy/config_internal.h"
#include "magpie/bootstrap.h"
#include "magpie/log.h"

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
    for (uint32_t i = 0; i < cfg->n_clusters; i++)
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

static int translate_clusters(const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr,
                              mp_config_t *cfg, mp_err_t *err)
{
    cfg->clusters = mp_xcalloc(sr->n_clusters, sizeof(*cfg->clusters));
    for (size_t i = 0; i < sr->n_clusters; i++) {
        const char *name = sr->clusters[i]->name;
        if (name != NULL && mp_config_find_cluster(cfg, name) != NULL)
            return mp_err_set(err, "clusters[%zu].name: duplicate cluster \"%s\"", i, name);
        mp_cluster_t *c = mp_translate__cluster(sr->clusters[i], (uint32_t)i, err);
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
    if (pb->dynamic_resources != NULL)
        mp_log_warn("dynamic_resources: xDS is not implemented yet; ignoring it and serving the "
                    "static resources only");
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
