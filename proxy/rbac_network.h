/* The network RBAC filters' check, for the accept paths (worker.c, tls_accept.c). */
#ifndef MAGPIE_RBAC_NETWORK_H
#define MAGPIE_RBAC_NETWORK_H

#include <stdbool.h>

#include "magpie/config.h"

/* Runs the envoy.filters.network.rbac filters of fc (a chain of l) over the connection on fd
 * (id: its TLS identity after the handshake, or NULL for plain TCP); counts and, on a denial,
 * logs.  True when every filter allows (always when there are none).  The caller closes a
 * denied connection.  Worker. */
struct mp_tls_ident;
bool mp_rbac_network_allows(const mp_listener_t *l, const mp_filter_chain_t *fc, int fd,
                            const struct mp_tls_ident *id);

#endif
