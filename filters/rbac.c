/* envoy.filters.http.rbac: allows or denies each request by the policies of
 * include/magpie/rbac.h, before the router sees it.  A denial is a local 403 "RBAC: access
 * denied" (gRPC requests get grpc-status 7, PERMISSION_DENIED, as every local reply does) with
 * response_code_details rbac_access_denied_matched_policy[<policy>|none].  Shadow rules are
 * evaluated and counted only.  Counters: http.<stat_prefix>.rbac.<rules_stat_prefix>allowed,
 * ...denied, http.<stat_prefix>.rbac.<shadow_rules_stat_prefix>shadow_allowed, ...shadow_denied. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "../proxy/http_internal.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "magpie/filter.h"
#include "magpie/rbac.h"

typedef Envoy__Extensions__Filters__Http__Rbac__V3__RBAC pb_http_rbac_t;

static void *rbac_create_config(const ProtobufCMessage *msg, const mp_http_filter_context_t *ctx,
                                mp_err_t *err)
{
    mp_rbac_filter_config_t *c = mp_xcalloc(1, sizeof(*c));
    const pb_http_rbac_t *pb = (const pb_http_rbac_t *)msg;
    /* An empty config (no rules) allows everything, as Envoy's does. */
    if (pb != NULL && mp_rbac_filter_build(pb->rules, pb->shadow_rules, c, err) != 0) {
        mp_rbac_filter_config_free(c);
        free(c);
        return NULL;
    }
    mp_rbac_filter_register_stats(c, ctx->stat_prefix, pb ? pb->rules_stat_prefix : NULL,
                                  pb ? pb->shadow_rules_stat_prefix : NULL);
    return c;
}

static void rbac_free_config(void *config)
{
    mp_rbac_filter_config_free(config);
    free(config);
}

/* "1.2.3.4", "1.2.3.4:80", "[::1]:80" or "::1" -> *out (port 0 when absent). */
static bool parse_ip(const char *s, size_t len, struct sockaddr_storage *out)
{
    char buf[64];
    while (len > 0 && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    char *host = buf, *port = NULL;
    if (buf[0] == '[') {
        host = buf + 1;
        char *end = strchr(host, ']');
        if (end == NULL)
            return false;
        *end = '\0';
        port = end[1] == ':' ? end + 2 : NULL;
    } else if (strchr(buf, ':') == strrchr(buf, ':') && strchr(buf, ':') != NULL) {
        port = strchr(buf, ':');
        *port++ = '\0';
    }
    uint16_t p = port != NULL ? (uint16_t)atoi(port) : 0;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(p);
        return true;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(p);
        return true;
    }
    return false;
}

/* The client address as the HCM trusts it (Envoy: the x-forwarded-for entry xff_num_trusted_hops
 * from the right; without use_remote_address the entry the proxy itself appended does not count).
 * False when there is no such entry: the caller uses the connection's peer. */
static bool trusted_remote(const mp_stream_t *s, struct sockaddr_storage *out)
{
    const mp_hcm_config_t *h = s->conn->hcm;
    uint32_t skip = h->xff_num_trusted_hops + (h->use_remote_address ? 0 : 1);
    if (skip == 0)
        return false;
    const mp_header_t *x = mp_headers_get(&s->req->headers, "x-forwarded-for");
    if (x == NULL)
        return false;
    const char *end = x->value + x->value_len;
    for (uint32_t i = 0; end > x->value; i++) {
        const char *start = end;
        while (start > x->value && start[-1] != ',')
            start--;
        if (i == skip)
            return parse_ip(start, (size_t)(end - start), out);
        end = start > x->value ? start - 1 : start;
    }
    return false;
}

static mp_filter_status_t rbac_decode_headers(const void *config, mp_stream_t *s,
                                              mp_http_msg_t *req)
{
    const mp_rbac_filter_config_t *c = config;
    if (c->rules == NULL && c->shadow == NULL)
        return MP_FILTER_CONTINUE;
    struct sockaddr_storage direct, remote, local;
    bool have_direct = parse_ip(s->conn->peer, strlen(s->conn->peer), &direct);
    bool have_local = parse_ip(s->conn->local, strlen(s->conn->local), &local);
    bool have_remote = trusted_remote(s, &remote);
    SSL *ssl = s->conn->tp.tls;
    const mp_tls_ident_t *id = mp_tls_ident_get(mp_hconn_ident(s->conn));
    mp_rbac_peer_t peer;
    if (id != NULL)
        mp_rbac_peer_from_ident(&peer, id);
    mp_rbac_input_t in = {
        .direct_remote = have_direct ? (const struct sockaddr *)&direct : NULL,
        .remote = have_remote   ? (const struct sockaddr *)&remote
                  : have_direct ? (const struct sockaddr *)&direct
                                : NULL,
        .local = have_local ? (const struct sockaddr *)&local : NULL,
        .sni = ssl != NULL ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL,
        .peer = id != NULL ? &peer : NULL,
        .req = req,
    };
    mp_rbac_result_t res = mp_rbac_filter_check(c, &in);
    if (res.allowed)
        return MP_FILTER_CONTINUE;
    mp_stream_local_reply(s, 403, 0, "RBAC: access denied", res.details);
    return MP_FILTER_STOP;
}

const mp_http_filter_ops_t mp_filter_rbac_ops = {
    .name = "envoy.filters.http.rbac",
    .type_name = "envoy.extensions.filters.http.rbac.v3.RBAC",
    .create_config_ctx = rbac_create_config,
    .free_config = rbac_free_config,
    .decode_headers = rbac_decode_headers,
};
