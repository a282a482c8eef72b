/* The compiled form of an RBAC policy set, shared by its builder (xds/translate_rbac.c) and its
 * evaluator (proxy/rbac.c).  Permissions and principals are both trees of mp_rbac_rule_t: the
 * combinators (and/or/not) are the same and each leaf kind says what it reads. */
#ifndef MAGPIE_RBAC_INTERNAL_H
#define MAGPIE_RBAC_INTERNAL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "magpie/config.h"
#include "magpie/rbac.h"

typedef enum mp_rbac_rule_kind {
    MP_RBAC_AND,              /* and_rules / and_ids: every child (none: true) */
    MP_RBAC_OR,               /* or_rules / or_ids: some child (none: false) */
    MP_RBAC_NOT,              /* not_rule / not_id */
    MP_RBAC_ANY,              /* any: true */
    MP_RBAC_HEADER,           /* header: request header, pseudo-headers included */
    MP_RBAC_URL_PATH,         /* url_path: the path without query */
    MP_RBAC_DESTINATION_IP,   /* destination_ip: local address in a CIDR */
    MP_RBAC_DESTINATION_PORT, /* destination_port and destination_port_range: [lo, hi) */
    MP_RBAC_SNI,              /* requested_server_name */
    MP_RBAC_AUTHENTICATED,    /* authenticated: TLS peer, optionally principal_name */
    MP_RBAC_DIRECT_REMOTE_IP, /* direct_remote_ip and the deprecated source_ip */
    MP_RBAC_REMOTE_IP,        /* remote_ip: after x-forwarded-for */
} mp_rbac_rule_kind_t;

typedef struct mp_rbac_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    uint32_t prefix_len;
} mp_rbac_cidr_t;

typedef struct mp_rbac_rule mp_rbac_rule_t;
struct mp_rbac_rule {
    mp_rbac_rule_kind_t kind;
    mp_rbac_rule_t *children; /* AND, OR: n_children; NOT: exactly one */
    uint32_t n_children;
    mp_header_matcher_t header;
    mp_string_matcher_t str; /* URL_PATH, SNI; AUTHENTICATED when has_str */
    bool has_str;
    mp_rbac_cidr_t cidr;
    uint32_t port_lo, port_hi; /* DESTINATION_PORT: lo <= port < hi */
};

typedef struct mp_rbac_policy {
    char *name;
    char *details; /* "rbac_access_denied_matched_policy[<name>]", for response_code_details */
    mp_rbac_rule_t permissions; /* an OR over the configured list */
    mp_rbac_rule_t principals;  /* an OR over the configured list */
} mp_rbac_policy_t;

struct mp_rbac {
    mp_rbac_action_t action;
    mp_rbac_policy_t *policies; /* sorted by name: the first match is reported */
    uint32_t n_policies;
};

/* Frees what a rule owns (not r itself); accepts a partly built, zeroed rule. */
void mp_rbac__rule_clear(mp_rbac_rule_t *r);

#endif
