/* envoy.config.listener.v3.Listener -> mp_listener_t: its filter chains (each holding one
 * network filter, http_connection_manager or tcp_proxy, and an optional transport socket), the
 * default chain, and the listener filters (xds/translate_chain_match.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

#include "../proxy/config_internal.h"
#include "magpie/chain_match.h"
#include "magpie/json_pb.h"
#include "magpie/ratelimit.h"
#include "magpie/stats.h"

#define DEFAULT_BUFFER_LIMIT (1024 * 1024)
#define HCM_FILTER "envoy.filters.network.http_connection_manager"
#define HCM_TYPE "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define TCP_PROXY_FILTER "envoy.filters.network.tcp_proxy"
#define TCP_PROXY_TYPE "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

typedef Envoy__Config__Listener__V3__FilterChain pb_filter_chain_t;
typedef Envoy__Config__Listener__V3__Filter pb_filter_t;

/* Envoy names listener stats after the address with ':' made '_' ("listener.127.0.0.1_15001."),
 * or after stat_prefix when the listener sets one. */
static void stat_name(const mp_pb_listener_t *pb, const mp_listener_t *l, char *name, size_t cap)
{
    const char *src = pb->stat_prefix && pb->stat_prefix[0] ? pb->stat_prefix : l->addr.text;
    snprintf(name, cap, "%s", src);
    for (char *p = name; *p; p++)
        if (*p == ':')
            *p = '_';
}

static void register_stats(const mp_pb_listener_t *pb, mp_listener_t *l)
{
    char name[sizeof(l->addr.text)];
    stat_name(pb, l, name, sizeof(name));
    l->stats.downstream_cx_total = mp_stats_counterf("listener.%s.downstream_cx_total", name);
    l->stats.downstream_cx_active = mp_stats_gaugef("listener.%s.downstream_cx_active", name);
    l->stats.downstream_cx_destroy = mp_stats_counterf("listener.%s.downstream_cx_destroy", name);
    l->stats.no_filter_chain_match = mp_stats_counterf("listener.%s.no_filter_chain_match", name);
    l->stats.downstream_pre_cx_timeout =
        mp_stats_counterf("listener.%s.downstream_pre_cx_timeout", name);
}

/* The type inside a typed_config ("type.googleapis.com/x.y.Z" -> "x.y.Z"), or "". */
static const char *filter_type(const pb_filter_t *f)
{
    if (f->config_type_case != ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG ||
        f->typed_config->type_url == NULL)
        return "";
    const char *slash = strrchr(f->typed_config->type_url, '/');
    return slash != NULL ? slash + 1 : f->typed_config->type_url;
}

/* Unpacks the filter's typed_config as desc; NULL with err set ("typed_config: ..."). */
static ProtobufCMessage *unpack_config(const pb_filter_t *f, const ProtobufCMessageDescriptor *desc,
                                       mp_err_t *err)
{
    if (f->config_type_case != ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG) {
        mp_err_set(err, "typed_config: required");
        return NULL;
    }
    ProtobufCMessage *m = mp_pb_any_unpack(&f->typed_config->base, desc, err);
    if (m == NULL)
        mp_err_prefix(err, "typed_config: ");
    return m;
}

static int translate_hcm_filter(const pb_filter_t *f, const mp_config_t *cfg, mp_filter_chain_t *l,
                                mp_err_t *err)
{
    ProtobufCMessage *m = unpack_config(
        f,
        &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
        err);
    if (m == NULL)
        return MP_ERROR;
    l->hcm = mp_translate__hcm((const mp_pb_hcm_t *)m, cfg, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return l->hcm != NULL ? 0 : mp_err_prefix(err, "typed_config.");
}

static int translate_tcp_proxy_filter(const pb_filter_t *f, const mp_config_t *cfg,
                                      mp_filter_chain_t *l, mp_err_t *err)
{
    ProtobufCMessage *m = unpack_config(
        f, &envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor, err);
    if (m == NULL)
        return MP_ERROR;
    l->tcp_proxy = mp_translate__tcp_proxy((const mp_pb_tcp_proxy_t *)m, cfg, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return l->tcp_proxy != NULL ? 0 : mp_err_prefix(err, "typed_config.");
}

/* A network filter is known by the type inside its typed_config, else by its name (Envoy's
 * rule). */
static int translate_filter(const pb_filter_t *f, const mp_config_t *cfg, mp_filter_chain_t *l,
                            mp_err_t *err)
{
    const char *type = filter_type(f);
    const char *name = f->name ? f->name : "";
    if (strcmp(type, HCM_TYPE) == 0 || (type[0] == '\0' && strcmp(name, HCM_FILTER) == 0))
        return translate_hcm_filter(f, cfg, l, err);
    if (strcmp(type, TCP_PROXY_TYPE) == 0 ||
        (type[0] == '\0' && strcmp(name, TCP_PROXY_FILTER) == 0))
        return translate_tcp_proxy_filter(f, cfg, l, err);
    if (type[0] != '\0')
        return mp_err_set(err,
                          "typed_config: unsupported network filter type \"%s\" (only " HCM_FILTER
                          " and " TCP_PROXY_FILTER " are supported)",
                          type);
    return mp_err_set(
        err, "name: only " HCM_FILTER " and " TCP_PROXY_FILTER " are supported, not \"%s\"", name);
}

/* The chain's TLS context; its ssl.* stats sit beside the listener's ("listener.<name>.ssl."),
 * shared by the listener's chains as Envoy's are. */
static int translate_transport(const mp_pb_listener_t *pb, const pb_filter_chain_t *fc,
                               const mp_listener_t *l, mp_filter_chain_t *out, mp_err_t *err)
{
    char name[sizeof(l->addr.text)];
    stat_name(pb, l, name, sizeof(name));
    char prefix[sizeof(name) + 16];
    snprintf(prefix, sizeof(prefix), "listener.%s.", name);
    if (mp_translate__transport_socket(fc->transport_socket, true, prefix, &out->tls, err) != 0)
        return mp_err_prefix(err, "transport_socket.");
    return 0;
}

static int translate_chain(const mp_pb_listener_t *pb, const pb_filter_chain_t *fc,
                           const mp_config_t *cfg, const mp_listener_t *l, mp_filter_chain_t *out,
                           mp_err_t *err)
{
    out->name = mp_xstrdup(fc->name != NULL ? fc->name : "");
    /* The default chain's filter_chain_match is ignored, as Envoy ignores it. */
    const bool is_default = fc == pb->default_filter_chain;
    if (!is_default && mp_translate__chain_match(fc->filter_chain_match, &out->match, err) != 0)
        return mp_err_prefix(err, "filter_chain_match.");
    if (translate_transport(pb, fc, l, out, err) != 0)
        return MP_ERROR;
    if (fc->n_filters == 0)
        return mp_err_set(err, "filters: one terminal filter (" HCM_FILTER " or " TCP_PROXY_FILTER
                               ") is required");
    /* Network RBAC filters may come first (translate_rbac.c); the last filter is terminal. */
    size_t last = fc->n_filters - 1;
    if (mp_translate__network_rbac_list(fc->filters, last, &out->rbac_filters, &out->n_rbac_filters,
                                        err) != 0)
        return MP_ERROR;
    if (mp_net_ratelimit_build_list(fc->filters, last, &out->net_ratelimits, &out->n_net_ratelimits,
                                    err) != 0)
        return MP_ERROR;
    if (translate_filter(fc->filters[last], cfg, out, err) != 0)
        return mp_err_prefix(err, "filters[%zu].", last);
    return 0;
}

static int check_unsupported(const mp_pb_listener_t *pb, mp_err_t *err)
{
    if (pb->n_additional_addresses > 0)
        return mp_err_set(err, "additional_addresses: not supported yet");
    if (pb->api_listener != NULL || pb->udp_listener_config != NULL ||
        pb->listener_specifier_case !=
            ENVOY__CONFIG__LISTENER__V3__LISTENER__LISTENER_SPECIFIER__NOT_SET)
        return mp_err_set(err, "only TCP listeners are supported");
    if (pb->n_filter_chains == 0 && pb->default_filter_chain == NULL)
        return mp_err_set(err, "filter_chains: at least one filter chain (or a "
                               "default_filter_chain) is required");
    return 0;
}

static int translate_chains(const mp_pb_listener_t *pb, const mp_config_t *cfg, mp_listener_t *l,
                            mp_err_t *err)
{
    l->chains = mp_xcalloc(pb->n_filter_chains + 1, sizeof(*l->chains));
    for (size_t i = 0; i < pb->n_filter_chains; i++) {
        l->n_chains = (uint32_t)i + 1;
        if (translate_chain(pb, pb->filter_chains[i], cfg, l, &l->chains[i], err) != 0)
            return mp_err_prefix(err, "filter_chains[%zu].", i);
        l->chain_uses |= mp_chain_match_uses(&l->chains[i].match);
    }
    if (mp_chain_match_check_unique(l->chains, l->n_chains, err) != 0)
        return MP_ERROR;
    if (pb->default_filter_chain == NULL)
        return 0;
    l->default_chain = mp_xcalloc(1, sizeof(*l->default_chain));
    if (translate_chain(pb, pb->default_filter_chain, cfg, l, l->default_chain, err) != 0)
        return mp_err_prefix(err, "default_filter_chain.");
    return 0;
}

int mp_translate__listener(const mp_pb_listener_t *pb, const mp_config_t *cfg, mp_listener_t *l,
                           mp_err_t *err)
{
    if (pb->name == NULL || pb->name[0] == '\0')
        return mp_err_set(err, "name: required");
    l->name = mp_xstrdup(pb->name);
    if (pb->address == NULL)
        return mp_err_set(err, "address: required");
    if (mp_translate__address(pb->address, &l->addr, err) != 0)
        return mp_err_prefix(err, "address.");
    l->per_connection_buffer_limit_bytes =
        mp_translate__u32(pb->per_connection_buffer_limit_bytes, DEFAULT_BUFFER_LIMIT);
    if (check_unsupported(pb, err) != 0)
        return MP_ERROR;
    if (mp_translate__listener_filters(pb, l, err) != 0)
        return MP_ERROR;
    if (translate_chains(pb, cfg, l, err) != 0)
        return MP_ERROR;
    mp_translate__warn_inspectors(l);
    register_stats(pb, l);
    return 0;
}
