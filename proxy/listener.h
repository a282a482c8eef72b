/* What happens to an accepted connection before a network filter has it: the listener filters
 * (tls_inspector, http_inspector) peek at its first bytes when some filter chain needs what they
 * learn, then the filter chain is chosen (proxy/chain_match.c) and the connection handed to its
 * HTTP connection manager or TCP proxy.  Private to proxy/; worker thread only. */
#ifndef MAGPIE_LISTENER_H
#define MAGPIE_LISTENER_H

#include "http_internal.h"

/* Takes ownership of fd, accepted on l.  When no chain matches on SNI, transport protocol or
 * ALPN (or no inspector is configured), the chain is chosen before this returns; otherwise the
 * connection waits (in w->inspecting, not in active_conns) for enough bytes or the listener
 * filters timeout.  A connection no chain takes is closed and counted in
 * listener.<name>.no_filter_chain_match. */
void mp_listener_accept(mp_worker_t *w, const mp_listener_t *l, int fd);

/* Closes every connection still being inspected (drain, shutdown). */
void mp_listener_close_inspecting(mp_worker_t *w);

#endif
