/* envoy.filters.network.rbac at run time: a listener's RBAC filters decide once per connection,
 * when a plain connection is accepted or right after the TLS handshake (so `authenticated` sees
 * the peer certificate).  Envoy's ONE_TIME_ON_FIRST_BYTE decides on the first bytes read; every
 * rule magpie evaluates on a connection is known before then, so deciding earlier gives the same
 * answer and never lets a byte through to the terminal filter. */
#include <openssl/ssl.h>
#include <string.h>

#include "magpie/log.h"
#include "magpie/net.h"
#include "magpie/rbac.h"
#include "magpie/tls_ident.h"
#include "rbac_network.h"

static bool check_filters(const mp_listener_t *l, const mp_filter_chain_t *fc,
                          const mp_rbac_input_t *in, int fd)
{
    for (uint32_t i = 0; i < fc->n_rbac_filters; i++) {
        const mp_rbac_filter_config_t *c = &fc->rbac_filters[i];
        mp_rbac_result_t res = mp_rbac_filter_check(c, in);
        if (res.allowed)
            continue;
        char peer[64];
        mp_net_peer_text(fd, peer, sizeof(peer));
        mp_log_info("listener %s: rbac %s: connection from %s denied (%s)", l->name, c->stat_prefix,
                    peer, res.details);
        return false;
    }
    return true;
}

bool mp_rbac_network_allows(const mp_listener_t *l, const mp_filter_chain_t *fc, int fd,
                            const mp_tls_ident_t *id)
{
    if (fc->n_rbac_filters == 0)
        return true;
    struct sockaddr_storage remote, local;
    socklen_t rlen = sizeof(remote), llen = sizeof(local);
    memset(&remote, 0, sizeof(remote));
    memset(&local, 0, sizeof(local));
    getpeername(fd, (struct sockaddr *)&remote, &rlen);
    getsockname(fd, (struct sockaddr *)&local, &llen);
    mp_rbac_peer_t peer;
    if (id != NULL)
        mp_rbac_peer_from_ident(&peer, id);
    mp_rbac_input_t in = {
        .direct_remote = (const struct sockaddr *)&remote,
        .remote = (const struct sockaddr *)&remote,
        .local = (const struct sockaddr *)&local,
        .sni = id != NULL ? SSL_get_servername(id->ssl, TLSEXT_NAMETYPE_host_name) : NULL,
        .peer = id != NULL ? &peer : NULL,
    };
    return check_filters(l, fc, &in, fd);
}
