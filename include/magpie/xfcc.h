/* x-forwarded-client-cert (XFCC): what a hop tells the next about the client certificate it saw,
 * in Envoy's format.  One element per hop, elements separated by ',', each a ';'-separated list
 * of Key=value pairs:
 *
 *   By=<URI SAN of our certificate>;Hash=<hex SHA-256 of the client's leaf>;Subject="<RFC 2253>";
 *   URI=<client URI SAN>;Cert="<URL-encoded PEM>";Chain="<URL-encoded PEM>";DNS=<client DNS SAN>
 *
 * By repeats once per URI SAN of ours (absent without one); Hash is always present; the others
 * follow set_current_client_cert_details, in that order, URI and DNS once per SAN.  Subject,
 * Cert and Chain are always double-quoted; any other value holding ',', ';', '=' or '"' is
 * quoted, with '"' and '\' escaped by '\'.  Pure functions: no connection, no I/O; any thread. */
#ifndef MAGPIE_XFCC_H
#define MAGPIE_XFCC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "magpie/config.h"
#include "magpie/http.h"
#include "magpie/tls_ident.h"

typedef enum mp_xfcc_action {
    MP_XFCC_KEEP,   /* pass the client's XFCC on untouched */
    MP_XFCC_REMOVE, /* drop it */
    MP_XFCC_APPEND, /* add this hop's element after the client's elements */
    MP_XFCC_SET,    /* replace the client's XFCC with this hop's element */
} mp_xfcc_action_t;

/* Envoy's decision table: ALWAYS_FORWARD_ONLY keeps; SANITIZE, and every other mode on a
 * connection that is not mutual TLS (no TLS, or no client certificate), removes; FORWARD_ONLY
 * keeps; APPEND_FORWARD appends; SANITIZE_SET sets. */
mp_xfcc_action_t mp_xfcc_decide(mp_xfcc_mode_t mode, bool mtls);

/* This hop's element for id's client certificate with the MP_XFCC_* details; mp_xmalloc'd, the
 * caller frees.  Cert and Chain come from id->peer_cert_url / peer_chain_url (load them with
 * mp_tls_ident_get_pem) and are left out when absent.  id must have a peer certificate. */
char *mp_xfcc_element(const mp_tls_ident_t *id, uint32_t details);

/* Applies mode to the request headers h: id is the connection's loaded identity (NULL when the
 * connection is not TLS), details the MP_XFCC_* bits.  Appending joins the client's XFCC fields
 * (there may be several) and the new element with ',' into one field. */
void mp_xfcc_apply(mp_headers_t *h, mp_xfcc_mode_t mode, uint32_t details,
                   const mp_tls_ident_t *id);

/* Percent-encodes every byte but RFC 3986's unreserved ones (A-Z a-z 0-9 - . _ ~), as Envoy
 * encodes PEM for XFCC; mp_xmalloc'd, NUL-terminated. */
char *mp_xfcc_url_encode(const char *s, size_t n);

#endif
