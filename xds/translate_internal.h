/* Private to the translators (xds/translate_*.c): one function per message kind, each turning a
 * validated Envoy v3 message into the runtime structures of include/magpie/config.h.
 *
 * Error paths: every function sets err to "<path relative to the message it was given>: what",
 * and its caller prepends its own segment with mp_err_prefix, so the final text reads from the
 * bootstrap root (static_resources.listeners[0].filter_chains[0]...).  Main thread. */
#ifndef MAGPIE_TRANSLATE_INTERNAL_H
#define MAGPIE_TRANSLATE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

/* Envoy's deprecated fields (HeaderMatcher.exact_match, HeaderValueOption.append, ...) are still
 * what most configs use, so the translators read them; keep protobuf-c from flagging each read. */
#define PROTOBUF_C__NO_DEPRECATED

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/address.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

#include "magpie/common.h"
#include "magpie/config.h"

typedef Envoy__Config__Listener__V3__Listener mp_pb_listener_t;
typedef Envoy__Config__Cluster__V3__Cluster mp_pb_cluster_t;
typedef Envoy__Config__Route__V3__RouteConfiguration mp_pb_route_config_t;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager
    mp_pb_hcm_t;
typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy mp_pb_tcp_proxy_t;
typedef Envoy__Config__Core__V3__Address mp_pb_address_t;
typedef Envoy__Config__Core__V3__HeaderValueOption mp_pb_header_option_t;
typedef Envoy__Config__Core__V3__DataSource mp_pb_data_source_t;

/* ---- small field helpers (translate_common.c) ---- */

/* A Duration in milliseconds (rounded down), def when d is NULL.  Negative durations are an
 * error ("<no path>: negative duration"); the caller prefixes the field name. */
int mp_translate__duration_ms(const Google__Protobuf__Duration *d, uint64_t def, uint64_t *out,
                              mp_err_t *err);
static inline uint32_t mp_translate__u32(const Google__Protobuf__UInt32Value *w, uint32_t def)
{
    return w != NULL ? w->value : def;
}
static inline bool mp_translate__bool(const Google__Protobuf__BoolValue *w, bool def)
{
    return w != NULL ? w->value : def;
}

/* An Address holding a socket_address with an IP literal and a port_value.  Named ports, pipes
 * and internal addresses are rejected with a path error relative to the Address. */
int mp_translate__address(const mp_pb_address_t *a, mp_addr_t *out, mp_err_t *err);

/* A lower-cased heap copy of s. */
char *mp_translate__lower_dup(const char *s);

/* Reads a DataSource (inline_string, inline_bytes, filename) into a heap buffer of at most cap
 * bytes (*len set; NUL-terminated).  NULL with err for a larger or unreadable source, or an
 * unsupported specifier. */
char *mp_translate__data_source(const mp_pb_data_source_t *ds, size_t cap, uint32_t *len,
                                mp_err_t *err);

/* ---- protocol options (translate_protocol.c) ---- */

/* Http2ProtocolOptions -> *out: defaults (mp_h2_options_default) for what pb leaves out, or for
 * everything when pb is NULL; out-of-range values and options magpie refuses are errors relative
 * to pb ("initial_stream_window_size: must be between 65535 and 2147483647").  hcm_stream_error
 * is the HCM's stream_error_on_invalid_http_message (NULL upstream), used when pb has no
 * override_stream_error_on_invalid_http_message. */
int mp_translate__h2_options(const Envoy__Config__Core__V3__Http2ProtocolOptions *pb,
                             const Google__Protobuf__BoolValue *hcm_stream_error,
                             mp_h2_options_t *out, mp_err_t *err);

/* An UpgradeConfig's upgrade_type -> *out, a lower-cased heap copy, after checking that it is
 * not empty and not already among prev[0..n_prev) (Envoy rejects a repeated type).  Errors are
 * relative to the UpgradeConfig ("upgrade_type: ..."). */
int mp_translate__upgrade_type(const char *type, const mp_upgrade_config_t *prev, uint32_t n_prev,
                               char **out, mp_err_t *err);

/* HeaderMatcher -> *h (zeroed by the caller; free h->name and mp_string_matcher_free(&h->str)).
 * Errors are relative to the HeaderMatcher.  (translate_route.c) */
/* RetryPolicy (translate_retry.c); *out is NULL when pb is, and owned by the caller even when
 * translation fails. */
int mp_translate__retry_policy(const Envoy__Config__Route__V3__RetryPolicy *pb,
                               mp_retry_policy_t **out, mp_err_t *err);
int mp_translate__header_matcher(const Envoy__Config__Route__V3__HeaderMatcher *pb,
                                 mp_header_matcher_t *h, mp_err_t *err);
/* StringMatcher -> *m (zeroed by the caller; free with mp_string_matcher_free); safe_regex is
 * compiled.  Errors are relative to the StringMatcher.  (translate_route.c) */
int mp_translate__string_matcher(const Envoy__Type__Matcher__V3__StringMatcher *pb,
                                 mp_string_matcher_t *m, mp_err_t *err);

/* ---- RBAC (translate_rbac.c) ---- */

struct mp_rbac_filter_config;
/* A listener filter envoy.filters.network.rbac -> *c (zeroed by the caller; free with
 * mp_rbac_filter_config_free), its <stat_prefix>.rbac.* counters registered.  Errors are
 * relative to the Filter ("typed_config.rules..."). */
int mp_translate__network_rbac(const Envoy__Config__Listener__V3__Filter *f,
                               struct mp_rbac_filter_config *c, mp_err_t *err);

/* The filters a chain lists before its terminal one: each must be envoy.filters.network.rbac
 * (by typed_config type, else by name).  *out gets n configs (NULL when n is 0).  Errors are
 * relative to the FilterChain ("filters[0].typed_config..."); *out is then still set and
 * freed with the listener. */
int mp_translate__network_rbac_list(Envoy__Config__Listener__V3__Filter *const *filters, size_t n,
                                    struct mp_rbac_filter_config **out, uint32_t *n_out,
                                    mp_err_t *err);

/* ---- circuit breakers (translate_circuit.c) ---- */

/* Cluster.circuit_breakers -> c->cb_limits (defaults for a priority not listed).  Errors are
 * relative to the Cluster ("circuit_breakers.thresholds[0].retry_budget...."). */
int mp_translate__circuit_breakers(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err);
/* Registers the cluster.<stat_name>.circuit_breakers.<priority>.* gauges into c->cb_limits. */
void mp_translate__circuit_stats(mp_cluster_t *c, const char *stat_name);

/* ---- transport sockets (translate_tls.c) ---- */

/* A filter chain's (server) or a cluster's (!server) transport_socket -> *out: NULL for
 * envoy.transport_sockets.raw_buffer, else a finished mp_tls_ctx_t with its ssl.* stats
 * registered under stat_prefix ("listener.<addr>." / "cluster.<name>.").  Errors are relative
 * to the TransportSocket ("typed_config.common_tls_context...."). */
int mp_translate__transport_socket(const Envoy__Config__Core__V3__TransportSocket *pb, bool server,
                                   const char *stat_prefix, mp_tls_ctx_t **out, mp_err_t *err);

/* Every context mp_translate__transport_socket makes from now on is appended to cfg->tls_ctxs
 * (the registry the SDS watcher and /certs read); NULL stops.  Contexts register as they are
 * created, so no one walks listeners or filter chains to find them.  (translate_tls.c) */
void mp_translate__tls_register_into(mp_config_t *cfg);

/* ---- per message kind ---- */

/* Cluster.health_checks -> c->health_checks (NULL when none), health_check.* stats registered.
 * Errors are relative to the Cluster ("health_checks[0].timeout: ...").
 * (translate_health_check.c) */
int mp_translate__health_checks(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err);

/* Cluster -> a new mp_cluster_t at position index, stats registered, host set published. */
mp_cluster_t *mp_translate__cluster(const mp_pb_cluster_t *pb, uint32_t index, mp_err_t *err);
/* Ties c to the node: which of its localities is local (cfg->node_locality), and the local
 * cluster (cfg->local_cluster_name, already translated into cfg), which also switches zone aware
 * routing on unless locality_weighted_lb_config chose otherwise.  Main thread. */
void mp_translate__cluster_locality(mp_cluster_t *c, const mp_config_t *cfg);
/* Cluster.outlier_detection into c->outlier (left NULL when absent); stats are named after
 * stat_name.  Returns 0 or MP_ERROR with err ("outlier_detection.<field>: ..."). */
int mp_translate__outlier(const mp_pb_cluster_t *pb, mp_cluster_t *c, const char *stat_name,
                          mp_err_t *err);

/* Listener -> *out (zeroed by the caller).  cfg supplies the clusters that routes resolve. */
/* FilterChainMatch -> m (NULL: every criterion empty).  0 or MP_ERROR with err set
 * (xds/translate_chain_match.c). */
int mp_translate__chain_match(const Envoy__Config__Listener__V3__FilterChainMatch *pb,
                              mp_chain_match_t *m, mp_err_t *err);

/* listener_filters, listener_filters_timeout and continue_on_listener_filters_timeout -> l. */
int mp_translate__listener_filters(const mp_pb_listener_t *pb, mp_listener_t *l, mp_err_t *err);

/* Logs Envoy's warning when chains match on what only an inspector can tell (SNI, transport
 * protocol, ALPN) and no inspector is configured. */
void mp_translate__warn_inspectors(const mp_listener_t *l);

int mp_translate__listener(const mp_pb_listener_t *pb, const mp_config_t *cfg, mp_listener_t *out,
                           mp_err_t *err);

/* HttpConnectionManager -> a new mp_hcm_config_t. */
mp_hcm_config_t *mp_translate__hcm(const mp_pb_hcm_t *pb, const mp_config_t *cfg, mp_err_t *err);

/* TcpProxy -> a new mp_tcp_proxy_config_t; cluster names are resolved against cfg (an unknown one
 * stays NULL: Envoy accepts it and refuses the connections). */
mp_tcp_proxy_config_t *mp_translate__tcp_proxy(const mp_pb_tcp_proxy_t *pb, const mp_config_t *cfg,
                                               mp_err_t *err);

/* RouteConfiguration -> a new mp_route_table_t; cluster names are resolved against cfg and an
 * unknown one is an error (Envoy's validate_clusters default for static route tables). */
mp_route_table_t *mp_translate__route_config(const mp_pb_route_config_t *pb, const mp_config_t *cfg,
                                             mp_err_t *err);

/* <what>_to_add (HeaderValueOption[]) and <what>_to_remove -> *out (zeroed by the caller);
 * what is "request_headers" or "response_headers" and names the fields in errors. */
int mp_translate__header_mutation(const char *what, mp_pb_header_option_t *const *add, size_t n_add,
                                  char *const *remove, size_t n_remove, mp_header_mutation_t *out,
                                  mp_err_t *err);

/* AccessLog[] -> *out / *n_out (the access_log field of an HCM). */
int mp_translate__access_logs(Envoy__Config__Accesslog__V3__AccessLog *const *pb, size_t n,
                              mp_access_log_t **out, uint32_t *n_out, mp_err_t *err);

/* RING_HASH / MAGLEV: c->lb_policy and c->hash_lb from lb_policy, ring_hash_lb_config,
 * maglev_lb_config and common_lb_config.consistent_hashing_lb_config (xds/translate_hash.c). */
int mp_translate__hash_lb(const mp_pb_cluster_t *pb, mp_cluster_t *c, mp_err_t *err);

/* RouteAction.hash_policy[0..n) -> r->hash_policies (xds/translate_hash.c). */
int mp_translate__hash_policies(Envoy__Config__Route__V3__RouteAction__HashPolicy *const *pb,
                                size_t n, mp_route_t *r, mp_err_t *err);

#endif
