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

bool mp_rbac_network_allows(const mp_listener_t *l, const mp_filter_chain_t *fc, int fd, void *ssl)
{
    if (fc->n_rbac_filters == 0)
        return true;
    struct sockaddr_storage peer, local;
    socklen_t plen = sizeof(peer), llen = sizeof(local);
    memset(&peer, 0, sizeof(peer));
    memset(&local, 0, sizeof(local));
    getpeername(fd, (struct sockaddr *)&peer, &plen);
    getsockname(fd, (struct sockaddr *)&local, &llen);
    mp_rbac_peer_buf_t pb;
    mp_rbac_peer_load(&pb, ssl);
    mp_rbac_input_t in = {
        .direct_remote = (const struct sockaddr *)&peer,
        .remote = (const struct sockaddr *)&peer,
        .local = (const struct sockaddr *)&local,
        .sni = ssl != NULL ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL,
        .peer = ssl != NULL ? &pb.peer : NULL,
    };
    bool ok = check_filters(l, fc, &in, fd);
    mp_rbac_peer_free(&pb);
    return ok;
}
