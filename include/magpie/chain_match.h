/* Filter chain matching (Envoy's FilterChainMatch): which of a listener's chains serves a
 * connection, from what the socket and the listener filters learned about it.  Pure functions
 * over the chains and the facts; any thread. */
#ifndef MAGPIE_CHAIN_MATCH_H
#define MAGPIE_CHAIN_MATCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "magpie/common.h"
#include "magpie/config.h"

/* What is known about a connection when its chain is chosen.  Strings are borrowed; sni is ""
 * when the client sent none (or no inspector ran), transport is "raw_buffer" unless the TLS
 * inspector saw a ClientHello ("tls"); alpn is the client's ALPN list in its order (or the HTTP
 * inspector's "h2c" / "http/1.1" / "http/1.0"). */
typedef struct mp_conn_facts {
    mp_ip_t dst_ip, src_ip, direct_src_ip;
    uint16_t dst_port, src_port;
    const char *sni;
    const char *transport;
    const char *const *alpn;
    uint32_t n_alpn;
} mp_conn_facts_t;

/* The chain Envoy would pick among chains[0..n): criterion by criterion (destination port,
 * destination IP, server name, transport protocol, application protocols, direct source IP,
 * source type, source IP, source port), keeping at each step only the chains with the most
 * specific matching value, chains that leave the criterion empty being the fallback.  A later
 * step that leaves nothing does not go back to an earlier one.  NULL when nothing matches (the
 * caller then uses the default chain or closes). */
const mp_filter_chain_t *mp_chain_match_find(const mp_filter_chain_t *chains, uint32_t n,
                                             const mp_conn_facts_t *f);

/* mp_chain_match_find over the listener's chains, then its default_chain; NULL: close. */
const mp_filter_chain_t *mp_chain_match_listener(const mp_listener_t *l, const mp_conn_facts_t *f);

/* Refuses two chains with the same criteria (Envoy's "multiple filter chains with the same
 * matching rules are defined").  0, or MP_ERROR with err naming both chains. */
int mp_chain_match_check_unique(const mp_filter_chain_t *chains, uint32_t n, mp_err_t *err);

/* MP_CHAIN_USES_* for one chain's criteria. */
unsigned mp_chain_match_uses(const mp_chain_match_t *m);

/* Fills ip from a socket address (IPv4-mapped IPv6 becomes IPv4); returns the port. */
uint16_t mp_ip_from_sockaddr(mp_ip_t *ip, const struct sockaddr_storage *ss);

/* Parses "10.0.0.0" / "::1" with a prefix length into r, clearing host bits.  0 or MP_ERROR. */
int mp_cidr_parse(mp_cidr_t *r, const char *prefix, uint32_t len);

/* Whether ip lies in r. */
bool mp_cidr_contains(const mp_cidr_t *r, const mp_ip_t *ip);

#endif
