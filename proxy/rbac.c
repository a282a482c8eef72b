/* Evaluation of a compiled RBAC policy set (include/magpie/rbac.h), with Envoy's semantics. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/route.h"
#include "magpie/tls_ident.h"
#include "rbac_internal.h"

/* An IPv4-mapped IPv6 peer ("::ffff:10.0.0.1", a dual-stack listener) matches IPv4 ranges. */
static bool addr_bytes(const struct sockaddr *sa, int *family, const uint8_t **bytes)
{
    if (sa->sa_family == AF_INET) {
        *family = AF_INET;
        *bytes = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        return true;
    }
    if (sa->sa_family != AF_INET6)
        return false;
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6)) {
        *family = AF_INET;
        *bytes = a6->s6_addr + 12;
    } else {
        *family = AF_INET6;
        *bytes = a6->s6_addr;
    }
    return true;
}

static bool cidr_match(const mp_rbac_cidr_t *c, const struct sockaddr *sa)
{
    int family;
    const uint8_t *b;
    if (sa == NULL || !addr_bytes(sa, &family, &b) || family != c->family)
        return false;
    uint32_t full = c->prefix_len / 8, rest = c->prefix_len % 8;
    if (memcmp(b, c->addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (b[full] & mask) == (c->addr[full] & mask);
}

static int addr_port(const struct sockaddr *sa)
{
    if (sa == NULL)
        return -1;
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return -1;
}

static bool str_match(const mp_string_matcher_t *m, const char *s)
{
    return s != NULL && mp_string_matcher_match(m, s, strlen(s));
}

/* Envoy's AuthenticatedMatcher: any TLS connection when no principal_name is given; otherwise
 * each URI SAN, then each DNS SAN, then the subject. */
static bool authenticated_match(const mp_rbac_rule_t *r, const mp_rbac_peer_t *p)
{
    if (p == NULL)
        return false;
    if (!r->has_str)
        return true;
    for (uint32_t i = 0; i < p->n_uri_sans; i++)
        if (str_match(&r->str, p->uri_sans[i]))
            return true;
    for (uint32_t i = 0; i < p->n_dns_sans; i++)
        if (str_match(&r->str, p->dns_sans[i]))
            return true;
    return str_match(&r->str, p->subject);
}

static bool path_match(const mp_string_matcher_t *m, const mp_http_msg_t *req)
{
    if (req == NULL || req->path == NULL)
        return false;
    return mp_string_matcher_match(m, req->path, strcspn(req->path, "?#"));
}

static bool rule_match(const mp_rbac_rule_t *r, const mp_rbac_input_t *in);

static bool set_match(const mp_rbac_rule_t *r, const mp_rbac_input_t *in, bool all)
{
    for (uint32_t i = 0; i < r->n_children; i++)
        if (rule_match(&r->children[i], in) != all)
            return !all;
    return all;
}

static bool rule_match(const mp_rbac_rule_t *r, const mp_rbac_input_t *in)
{
    switch (r->kind) {
    case MP_RBAC_AND:
        return set_match(r, in, true);
    case MP_RBAC_OR:
        return set_match(r, in, false);
    case MP_RBAC_NOT:
        return !rule_match(&r->children[0], in);
    case MP_RBAC_ANY:
        return true;
    case MP_RBAC_HEADER:
        return in->req != NULL && mp_header_matcher_match(&r->header, in->req);
    case MP_RBAC_URL_PATH:
        return path_match(&r->str, in->req);
    case MP_RBAC_DESTINATION_IP:
        return cidr_match(&r->cidr, in->local);
    case MP_RBAC_DESTINATION_PORT: {
        int port = addr_port(in->local);
        return port >= 0 && (uint32_t)port >= r->port_lo && (uint32_t)port < r->port_hi;
    }
    case MP_RBAC_SNI:
        /* Envoy matches an absent SNI as the empty string. */
        return str_match(&r->str, in->sni != NULL ? in->sni : "");
    case MP_RBAC_AUTHENTICATED:
        return authenticated_match(r, in->peer);
    case MP_RBAC_DIRECT_REMOTE_IP:
        return cidr_match(&r->cidr, in->direct_remote);
    case MP_RBAC_REMOTE_IP:
        return cidr_match(&r->cidr, in->remote);
    }
    return false;
}

mp_rbac_result_t mp_rbac_eval(const mp_rbac_t *r, const mp_rbac_input_t *in)
{
    mp_rbac_result_t res = {.details = "rbac_access_denied_matched_policy[none]"};
    for (uint32_t i = 0; i < r->n_policies && res.policy == NULL; i++) {
        const mp_rbac_policy_t *p = &r->policies[i];
        if (rule_match(&p->permissions, in) && rule_match(&p->principals, in)) {
            res.policy = p->name;
            res.details = p->details;
        }
    }
    const char *matched = res.policy;
    switch (r->action) {
    case MP_RBAC_ALLOW:
        res.allowed = matched != NULL;
        break;
    case MP_RBAC_DENY:
        res.allowed = matched == NULL;
        break;
    case MP_RBAC_LOG:
        res.allowed = true;
        break;
    }
    return res;
}

mp_rbac_action_t mp_rbac_action(const mp_rbac_t *r)
{
    return r->action;
}

void mp_rbac__rule_clear(mp_rbac_rule_t *r)
{
    for (uint32_t i = 0; i < r->n_children; i++)
        mp_rbac__rule_clear(&r->children[i]);
    free(r->children);
    free(r->header.name);
    mp_string_matcher_free(&r->header.str);
    mp_string_matcher_free(&r->str);
    memset(r, 0, sizeof(*r));
}

void mp_rbac_free(mp_rbac_t *r)
{
    if (r == NULL)
        return;
    for (uint32_t i = 0; i < r->n_policies; i++) {
        free(r->policies[i].name);
        free(r->policies[i].details);
        mp_rbac__rule_clear(&r->policies[i].permissions);
        mp_rbac__rule_clear(&r->policies[i].principals);
    }
    free(r->policies);
    free(r);
}

mp_rbac_result_t mp_rbac_filter_check(const mp_rbac_filter_config_t *c, const mp_rbac_input_t *in)
{
    if (c->shadow != NULL) {
        mp_rbac_result_t s = mp_rbac_eval(c->shadow, in);
        mp_stats_inc(s.allowed ? c->stats.shadow_allowed : c->stats.shadow_denied);
    }
    mp_rbac_result_t res = {.allowed = true, .details = ""};
    if (c->rules != NULL) {
        res = mp_rbac_eval(c->rules, in);
        mp_stats_inc(res.allowed ? c->stats.allowed : c->stats.denied);
    }
    return res;
}

void mp_rbac_filter_config_free(mp_rbac_filter_config_t *c)
{
    if (c == NULL)
        return;
    mp_rbac_free(c->rules);
    mp_rbac_free(c->shadow);
    free(c->stat_prefix);
    memset(c, 0, sizeof(*c));
}

void mp_rbac_peer_from_ident(mp_rbac_peer_t *out, const mp_tls_ident_t *id)
{
    *out = (mp_rbac_peer_t){
        .uri_sans = (const char *const *)id->peer_uri_sans,
        .n_uri_sans = id->n_peer_uri_sans,
        .dns_sans = (const char *const *)id->peer_dns_sans,
        .n_dns_sans = id->n_peer_dns_sans,
        .subject = id->peer_subject,
    };
}
