/* Socket helpers shared by listeners, the admin server and upstream connections. */
#ifndef MAGPIE_NET_H
#define MAGPIE_NET_H

#include <stdbool.h>

#include "magpie/common.h"
#include "magpie/config.h"

/* A non-blocking listening socket on addr; reuseport sets SO_REUSEPORT so that each worker binds
 * its own.  Returns the fd or -1 with err set. */
int mp_net_listen(const mp_addr_t *addr, bool reuseport, int backlog, mp_err_t *err);

/* Starts a non-blocking connect to addr.  Returns the fd (connect in progress or done) or -1
 * with errno set. */
int mp_net_connect(const mp_addr_t *addr);

/* Fills out with the peer or local address of fd ("ip:port"). */
void mp_net_peer_text(int fd, char *out, size_t cap);
void mp_net_local_text(int fd, char *out, size_t cap);

int mp_net_set_nonblock(int fd);

#endif
