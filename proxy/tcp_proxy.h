/* The TCP proxy's data path (envoy.filters.network.tcp_proxy), private to proxy/: the worker
 * hands it accepted connections of listeners whose filter chain is a tcp_proxy and asks it to
 * close what is left at the drain deadline.  Worker thread only. */
#ifndef MAGPIE_TCP_PROXY_H
#define MAGPIE_TCP_PROXY_H

#include "http_internal.h"

/* Takes ownership of fd, accepted on l, whose filter chain fc is a TCP proxy
 * (fc->tcp_proxy != NULL): picks a cluster and a host and
 * starts connecting.  The connection is tracked in w->tcp_conns and w->active_conns until it
 * ends; it may end (and be queued for freeing) before this returns.  On a TLS chain (fc->tls)
 * the server handshake runs first (mp_tls_accept), which hands the connection back through
 * mp_tcp_proxy_accept_tport. */
void mp_tcp_proxy_accept(mp_worker_t *w, const mp_listener_t *l, const mp_filter_chain_t *fc,
                         int fd);

/* Takes over a connection whose server TLS handshake just finished (tls_accept.c), on a listener
 * with a tcp_proxy: its transport (socket and SSL) moves here (mp_hconn_give_tport), and from is
 * left dead for its owner to bury.  From here on as mp_tcp_proxy_accept, with the decrypted
 * bytes proxied. */
void mp_tcp_proxy_accept_tport(mp_hconn_t *from);

/* Closes every TCP proxy connection of w now (drain deadline, shutdown). */
void mp_tcp_proxy_close_all(mp_worker_t *w, const char *why);

#endif
