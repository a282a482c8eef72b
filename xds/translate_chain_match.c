/* FilterChainMatch -> mp_chain_match_t, and a listener's listener filters (tls_inspector,
 * http_inspector) with their timeout.  Values are checked as Envoy checks them at load: a bad
 * CIDR, a partial wildcard or a bare "*" in server_names refuse the listener. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

#include "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.pb-c.h"
#include "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.pb-c.h"
#include "magpie/chain_match.h"
#include "magpie/json_pb.h"
#include "magpie/log.h"
#include "magpie/stats.h"

#define TLS_INSPECTOR "envoy.filters.listener.tls_inspector"
#define TLS_INSPECTOR_TYPE "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
#define HTTP_INSPECTOR "envoy.filters.listener.http_inspector"
#define HTTP_INSPECTOR_TYPE "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
#define DEFAULT_LISTENER_FILTERS_TIMEOUT_MS 15000

typedef Envoy__Config__Core__V3__CidrRange pb_cidr_t;
typedef Envoy__Config__Listener__V3__ListenerFilter pb_listener_filter_t;
typedef Envoy__Extensions__Filters__Listener__TlsInspector__V3__TlsInspector pb_tls_inspector_t;

static int translate_cidrs(pb_cidr_t *const *pb, size_t n, mp_cidr_t **out, uint32_t *n_out,
                           const char *field, mp_err_t *err)
{
    *out = mp_xcalloc(n + 1, sizeof(**out));
    *n_out = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        const char *prefix = pb[i]->address_prefix != NULL ? pb[i]->address_prefix : "";
        uint32_t len = mp_translate__u32(pb[i]->prefix_len, 0);
        if (mp_cidr_parse(&(*out)[i], prefix, len) != 0)
            return mp_err_set(err, "%s[%zu]: invalid CIDR range \"%s/%u\"", field, i, prefix, len);
    }
    return 0;
}

/* Exact names, or "*." followed by a suffix; Envoy refuses "*" alone and partial wildcards. */
static int translate_server_name(const char *in, char **out, mp_err_t *err)
{
    const char *star = strchr(in, '*');
    if (in[0] == '\0')
        return mp_err_set(err, "empty server name");
    if (star != NULL && (star != in || in[1] != '.' || in[2] == '\0' || strchr(in + 1, '*')))
        return mp_err_set(err, "\"%s\": only a leading \"*.\" wildcard is supported", in);
    char *s = mp_xstrdup(in);
    for (char *p = s; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    *out = s;
    return 0;
}

static int translate_names(const Envoy__Config__Listener__V3__FilterChainMatch *pb,
                           mp_chain_match_t *m, mp_err_t *err)
{
    m->server_names = mp_xcalloc(pb->n_server_names + 1, sizeof(char *));
    for (size_t i = 0; i < pb->n_server_names; i++) {
        m->n_server_names = (uint32_t)i;
        if (translate_server_name(pb->server_names[i], &m->server_names[i], err) != 0)
            return mp_err_prefix(err, "server_names[%zu]: ", i);
        m->n_server_names = (uint32_t)i + 1;
    }
    m->application_protocols = mp_xcalloc(pb->n_application_protocols + 1, sizeof(char *));
    m->n_application_protocols = (uint32_t)pb->n_application_protocols;
    for (size_t i = 0; i < pb->n_application_protocols; i++)
        m->application_protocols[i] = mp_xstrdup(pb->application_protocols[i]);
    if (pb->transport_protocol != NULL && pb->transport_protocol[0] != '\0')
        m->transport_protocol = mp_xstrdup(pb->transport_protocol);
    return 0;
}

static int translate_source(const Envoy__Config__Listener__V3__FilterChainMatch *pb,
                            mp_chain_match_t *m, mp_err_t *err)
{
    switch (pb->source_type) {
    case ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN_MATCH__CONNECTION_SOURCE_TYPE__ANY:
        m->source_type = MP_SOURCE_ANY;
        break;
    case ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN_MATCH__CONNECTION_SOURCE_TYPE__SAME_IP_OR_LOOPBACK:
        m->source_type = MP_SOURCE_LOCAL;
        break;
    case ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN_MATCH__CONNECTION_SOURCE_TYPE__EXTERNAL:
        m->source_type = MP_SOURCE_EXTERNAL;
        break;
    default:
        return mp_err_set(err, "source_type: unknown value %d", (int)pb->source_type);
    }
    m->source_ports = mp_xcalloc(pb->n_source_ports + 1, sizeof(uint32_t));
    m->n_source_ports = (uint32_t)pb->n_source_ports;
    for (size_t i = 0; i < pb->n_source_ports; i++) {
        if (pb->source_ports[i] == 0 || pb->source_ports[i] > 65535)
            return mp_err_set(err, "source_ports[%zu]: %u is not a port", i, pb->source_ports[i]);
        m->source_ports[i] = pb->source_ports[i];
    }
    if (translate_cidrs(pb->direct_source_prefix_ranges, pb->n_direct_source_prefix_ranges,
                        &m->direct_source_prefix_ranges, &m->n_direct_source_prefix_ranges,
                        "direct_source_prefix_ranges", err) != 0)
        return MP_ERROR;
    return translate_cidrs(pb->source_prefix_ranges, pb->n_source_prefix_ranges,
                           &m->source_prefix_ranges, &m->n_source_prefix_ranges,
                           "source_prefix_ranges", err);
}

int mp_translate__chain_match(const Envoy__Config__Listener__V3__FilterChainMatch *pb,
                              mp_chain_match_t *m, mp_err_t *err)
{
    if (pb == NULL)
        return 0;
    if ((pb->address_suffix != NULL && pb->address_suffix[0] != '\0') || pb->suffix_len != NULL)
        return mp_err_set(err, "address_suffix/suffix_len: not implemented (nor by Envoy)");
    if (pb->destination_port != NULL) {
        uint32_t port = pb->destination_port->value;
        if (port == 0 || port > 65535)
            return mp_err_set(err, "destination_port: %u is not a port", port);
        m->destination_port = port;
    }
    if (translate_cidrs(pb->prefix_ranges, pb->n_prefix_ranges, &m->prefix_ranges,
                        &m->n_prefix_ranges, "prefix_ranges", err) != 0)
        return MP_ERROR;
    if (translate_names(pb, m, err) != 0)
        return MP_ERROR;
    return translate_source(pb, m, err);
}

/* ---- listener filters ---- */

static const char *listener_filter_type(const pb_listener_filter_t *f)
{
    if (f->config_type_case !=
            ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_TYPED_CONFIG ||
        f->typed_config->type_url == NULL)
        return "";
    const char *slash = strrchr(f->typed_config->type_url, '/');
    return slash != NULL ? slash + 1 : f->typed_config->type_url;
}

/* JA3/JA4 fingerprints are not computed: refuse rather than silently produce none. */
static int check_tls_inspector(const pb_listener_filter_t *f, mp_err_t *err)
{
    if (f->config_type_case !=
        ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_TYPED_CONFIG)
        return 0;
    ProtobufCMessage *m = mp_pb_any_unpack(
        &f->typed_config->base,
        &envoy__extensions__filters__listener__tls_inspector__v3__tls_inspector__descriptor, err);
    if (m == NULL)
        return mp_err_prefix(err, "typed_config: ");
    const pb_tls_inspector_t *t = (const pb_tls_inspector_t *)m;
    bool fp = (t->enable_ja3_fingerprinting && t->enable_ja3_fingerprinting->value) ||
              (t->enable_ja4_fingerprinting && t->enable_ja4_fingerprinting->value);
    protobuf_c_message_free_unpacked(m, NULL);
    if (fp)
        return mp_err_set(err, "typed_config: JA3/JA4 fingerprinting is not supported");
    return 0;
}

static void register_tls_inspector_stats(mp_inspector_stats_t *st)
{
    st->client_hello_too_large = mp_stats_counter("tls_inspector.client_hello_too_large");
    st->tls_found = mp_stats_counter("tls_inspector.tls_found");
    st->tls_not_found = mp_stats_counter("tls_inspector.tls_not_found");
    st->alpn_found = mp_stats_counter("tls_inspector.alpn_found");
    st->alpn_not_found = mp_stats_counter("tls_inspector.alpn_not_found");
    st->sni_found = mp_stats_counter("tls_inspector.sni_found");
    st->sni_not_found = mp_stats_counter("tls_inspector.sni_not_found");
}

static void register_http_inspector_stats(mp_inspector_stats_t *st)
{
    st->http10_found = mp_stats_counter("http_inspector.http10_found");
    st->http11_found = mp_stats_counter("http_inspector.http11_found");
    st->http2_found = mp_stats_counter("http_inspector.http2_found");
    st->http_not_found = mp_stats_counter("http_inspector.http_not_found");
}

static int translate_listener_filter(const pb_listener_filter_t *f, mp_listener_t *l, mp_err_t *err)
{
    const char *type = listener_filter_type(f);
    const char *name = f->name ? f->name : "";
    if (f->filter_disabled != NULL)
        return mp_err_set(err, "filter_disabled: not supported");
    if (f->config_type_case ==
        ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_CONFIG_DISCOVERY)
        return mp_err_set(err, "config_discovery: not supported");
    if (strcmp(type, TLS_INSPECTOR_TYPE) == 0 ||
        (type[0] == '\0' && strcmp(name, TLS_INSPECTOR) == 0)) {
        l->tls_inspector = true;
        register_tls_inspector_stats(&l->inspector_stats);
        return check_tls_inspector(f, err);
    }
    if (strcmp(type, HTTP_INSPECTOR_TYPE) == 0 ||
        (type[0] == '\0' && strcmp(name, HTTP_INSPECTOR) == 0)) {
        l->http_inspector = true;
        register_http_inspector_stats(&l->inspector_stats);
        return 0;
    }
    return mp_err_set(err,
                      "unsupported listener filter \"%s\"%s%s%s (only " TLS_INSPECTOR
                      " and " HTTP_INSPECTOR " are supported)",
                      name, type[0] ? " (type " : "", type, type[0] ? ")" : "");
}

int mp_translate__listener_filters(const mp_pb_listener_t *pb, mp_listener_t *l, mp_err_t *err)
{
    for (size_t i = 0; i < pb->n_listener_filters; i++)
        if (translate_listener_filter(pb->listener_filters[i], l, err) != 0)
            return mp_err_prefix(err, "listener_filters[%zu].", i);
    if (mp_translate__duration_ms(pb->listener_filters_timeout, DEFAULT_LISTENER_FILTERS_TIMEOUT_MS,
                                  &l->listener_filters_timeout_ms, err) != 0)
        return mp_err_prefix(err, "listener_filters_timeout: ");
    l->continue_on_listener_filters_timeout = pb->continue_on_listener_filters_timeout;
    return 0;
}

void mp_translate__warn_inspectors(const mp_listener_t *l)
{
    if ((l->chain_uses & MP_CHAIN_USES_TLS) && !l->tls_inspector)
        mp_log_warn("listener %s: a filter chain matches on server_names or transport_protocol "
                    "but no " TLS_INSPECTOR " is configured: those chains see no SNI and "
                    "transport_protocol \"raw_buffer\"",
                    l->name);
    if ((l->chain_uses & MP_CHAIN_USES_ALPN) && !l->tls_inspector && !l->http_inspector)
        mp_log_warn("listener %s: a filter chain matches on application_protocols but "
                    "neither " TLS_INSPECTOR " nor " HTTP_INSPECTOR " is configured",
                    l->name);
}
