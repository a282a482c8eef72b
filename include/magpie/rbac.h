/* Role-based access control (Envoy's envoy.config.rbac.v3 model), shared by the HTTP filter
 * (filters/rbac.c) and the network filter (proxy/rbac_network.c).
 *
 * A policy set (mp_rbac_t) is built once on the main thread at translation and is immutable
 * afterwards: workers evaluate it read-only, with no lock.  A policy matches when at least one
 * of its permissions (what is asked: path, method, port, SNI, ...) and at least one of its
 * principals (who asks: peer certificate identity, address, header, ...) match.  The action
 * decides what a match means: ALLOW allows iff some policy matches (so no policies deny
 * everything), DENY denies iff some policy matches, LOG always allows. */
#ifndef MAGPIE_RBAC_H
#define MAGPIE_RBAC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "magpie/common.h"
#include "magpie/http.h"
#include "magpie/stats.h"

typedef struct mp_rbac mp_rbac_t;
struct Envoy__Config__Rbac__V3__RBAC; /* generated from envoy/config/rbac/v3/rbac.proto */

typedef enum mp_rbac_action {
    MP_RBAC_ALLOW,
    MP_RBAC_DENY,
    MP_RBAC_LOG,
} mp_rbac_action_t;

/* The identity a TLS peer presented, as principal_name matching reads it: each URI SAN, then
 * each DNS SAN, then the subject (RFC 2253 form).  All borrowed. */
typedef struct mp_rbac_peer {
    const char *const *uri_sans;
    uint32_t n_uri_sans;
    const char *const *dns_sans;
    uint32_t n_dns_sans;
    const char *subject; /* NULL when the peer sent no certificate */
} mp_rbac_peer_t;

/* What one decision looks at.  Everything is borrowed and may be NULL when unknown; a matcher
 * that needs an absent input does not match (a header rule on a connection, an IP rule without
 * an address). */
typedef struct mp_rbac_input {
    const struct sockaddr *direct_remote; /* the socket's peer */
    const struct sockaddr *remote;        /* after x-forwarded-for when the HCM trusts it */
    const struct sockaddr *local;         /* the address the connection came in on */
    const char *sni;                      /* requested server name; NULL: none */
    const mp_rbac_peer_t *peer;           /* NULL: not a TLS connection */
    const mp_http_msg_t *req;             /* NULL for the network filter */
} mp_rbac_input_t;

typedef struct mp_rbac_result {
    bool allowed;
    const char *policy; /* the matched policy's name (owned by the mp_rbac_t), or NULL */
    /* Envoy's response_code_details for a denial, "rbac_access_denied_matched_policy[<name>]"
     * ("[none]" when no policy matched); static or owned by the mp_rbac_t. */
    const char *details;
} mp_rbac_result_t;

/* Builds a policy set from an envoy.config.rbac.v3.RBAC message.  Main thread.  NULL with err
 * set (a JSON-path-like prefix and the reason) when a field is unsupported or invalid: CEL
 * conditions, metadata, matcher extensions, unknown rule kinds, empty permission or principal
 * lists. */
mp_rbac_t *mp_rbac_build(const struct Envoy__Config__Rbac__V3__RBAC *pb, mp_err_t *err);

/* Frees a set and everything it owns; accepts NULL.  Main thread, once no worker can see it. */
void mp_rbac_free(mp_rbac_t *r);

/* Evaluates in->... against r.  Any thread; no allocation except a header matcher's join of a
 * repeated header.  The first matching policy in name order is reported, as Envoy does. */
mp_rbac_result_t mp_rbac_eval(const mp_rbac_t *r, const mp_rbac_input_t *in);

/* The set's action. */
mp_rbac_action_t mp_rbac_action(const mp_rbac_t *r);

/* ---- a filter's enforced and shadow sets, as both RBAC filters configure them ---- */

typedef struct mp_rbac_stats {
    mp_stat_id_t allowed, denied, shadow_allowed, shadow_denied;
} mp_rbac_stats_t;

/* One RBAC filter's config (HTTP or network), owned by its HCM filter entry or listener. */
typedef struct mp_rbac_filter_config {
    mp_rbac_t *rules;  /* enforced; NULL: the filter allows everything */
    mp_rbac_t *shadow; /* only counted; NULL: none */
    char *stat_prefix; /* the network filter's stat_prefix, for log lines; NULL for HTTP */
    mp_rbac_stats_t stats;
} mp_rbac_filter_config_t;

/* Builds c's two sets from the messages (either may be NULL).  Main thread.  0, or MP_ERROR with
 * err relative to the filter's message ("rules.policies[...]..."); c is then partly built and
 * must be freed with mp_rbac_filter_config_free. */
int mp_rbac_filter_build(const struct Envoy__Config__Rbac__V3__RBAC *rules,
                         const struct Envoy__Config__Rbac__V3__RBAC *shadow,
                         mp_rbac_filter_config_t *c, mp_err_t *err);

/* Registers Envoy's counters: <prefix>rbac.<rules_prefix>{allowed,denied} and
 * <prefix>rbac.<shadow_prefix>shadow_{allowed,denied} (prefix "http.<hcm>." or "<stat_prefix>.";
 * the two others may be NULL).  Main thread. */
void mp_rbac_filter_register_stats(mp_rbac_filter_config_t *c, const char *prefix,
                                   const char *rules_prefix, const char *shadow_prefix);

/* Frees what c owns (not c itself); accepts NULL and a partly built config. */
void mp_rbac_filter_config_free(mp_rbac_filter_config_t *c);

/* Runs the shadow set (counted only) and the enforced set (counted, and decisive).  Returns the
 * enforced result: allowed when there is no enforced set.  Worker. */
mp_rbac_result_t mp_rbac_filter_check(const mp_rbac_filter_config_t *c, const mp_rbac_input_t *in);

/* ---- the peer certificate's identity ---- */

struct mp_tls_ident;

/* The identity of a TLS connection's peer as RBAC reads it, borrowed from the connection's
 * cached facts (include/magpie/tls_ident.h, mp_tls_ident_get), so the certificate is parsed
 * once per connection however many decisions it meets.  out stays valid while id does. */
void mp_rbac_peer_from_ident(mp_rbac_peer_t *out, const struct mp_tls_ident *id);

#endif
