/* Request and response header policy of the connection manager: hop-by-hop removal, the
 * x-forwarded-* (client certificate included) and x-request-id headers, and response framing
 * decisions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "magpie/lb.h"
#include "magpie/xfcc.h"
#include "stream_internal.h"

/* Headers that a client may name in Connection but that we set or rely on: stripping them
 * would let a client remove our own annotations (hostile-inputs 24). */
static bool is_protected(const char *name, size_t len)
{
    static const char *const protected_names[] = {
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-request-id",
        "host",
        "authorization",
        "content-length",
        "x-envoy-expected-rq-timeout-ms",
        "cookie",
    };
    for (size_t i = 0; i < MP_ARRAY_SIZE(protected_names); i++)
        if (mp_strieq(name, len, protected_names[i]))
            return true;
    return false;
}

/* Fields that never cross the proxy: hop-by-hop ones, h2c's settings, and the length, which the
 * encoder writes from the message's own framing. */
static bool is_hop_field(const mp_header_t *f, const void *unused)
{
    return mp_http_is_hop_by_hop(f->name, f->name_len) ||
           (f->name_len == 14 && memcmp(f->name, "http2-settings", 14) == 0) ||
           (f->name_len == 14 && memcmp(f->name, "content-length", 14) == 0);
}

static bool te_is_trailers(const mp_headers_t *h)
{
    const mp_header_t *te = mp_headers_get(h, "te");
    return te != NULL && mp_headers_count(h, "te") == 1 &&
           mp_strieq(te->value, te->value_len, "trailers");
}

/* Removes the fields listed in every Connection header, then the hop-by-hop fields; `te:
 * trailers` is kept (RFC 9113 8.2.2 allows it, and gRPC servers insist on it). */
static void strip_hop_by_hop(mp_headers_t *h)
{
    bool keep_te = te_is_trailers(h);
    mp_header_t *c;
    while ((c = mp_headers_get(h, "connection")) != NULL) {
        char *list = mp_xstrdup(c->value);
        mp_headers_remove(h, "connection");
        char *save = NULL;
        for (char *tok = strtok_r(list, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
            size_t len = strlen(tok);
            if (is_protected(tok, len) || mp_http_is_hop_by_hop(tok, len))
                continue;
            for (char *p = tok; *p; p++)
                *p = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
            mp_headers_remove(h, tok);
        }
        free(list);
    }
    mp_headers_remove_if(h, is_hop_field, NULL);
    if (keep_te)
        mp_headers_add_cstr(h, "te", "trailers");
}

void mp_stream__uuid4(char out[37])
{
    uint64_t a = mp_random(), b = mp_random();
    a = (a & ~0xf000ull) | 0x4000ull;                        /* version 4 */
    b = (b & 0x3fffffffffffffffull) | 0x8000000000000000ull; /* RFC 4122 variant */
    static const char hex[] = "0123456789abcdef";
    uint64_t words[2] = {a, b};
    size_t o = 0;
    for (int i = 0; i < 32; i++) {
        if (i == 8 || i == 12 || i == 16 || i == 20)
            out[o++] = '-';
        out[o++] = hex[(words[i / 16] >> (60 - 4 * (i % 16))) & 15];
    }
    out[o] = '\0';
}

static void append_xff(mp_headers_t *h, const char *peer)
{
    char ip[64];
    snprintf(ip, sizeof(ip), "%s", peer);
    /* "ip:port" or "[v6]:port": keep the address only. */
    char *colon = strrchr(ip, ':');
    if (colon != NULL)
        *colon = '\0';
    const char *addr = ip;
    if (ip[0] == '[') {
        addr = ip + 1;
        char *end = strchr(ip, ']');
        if (end != NULL)
            *end = '\0';
    }
    mp_header_t *x = mp_headers_get(h, "x-forwarded-for");
    if (x == NULL) {
        mp_headers_add_cstr(h, "x-forwarded-for", addr);
        return;
    }
    char *joined = mp_xasprintf("%s,%s", x->value, addr);
    mp_headers_set(h, "x-forwarded-for", joined, strlen(joined));
    free(joined);
}

/* Envoy's notion of an internal peer (RFC 1918, loopback, unique-local v6): such a client's
 * x-request-id is trusted even at the edge. */
static bool peer_is_internal(const char *peer)
{
    static const char *const prefixes[] = {"127.", "10.", "192.168.", "[::1]", "[fc", "[fd"};
    for (size_t i = 0; i < MP_ARRAY_SIZE(prefixes); i++)
        if (strncmp(peer, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    unsigned a, b;
    return sscanf(peer, "%u.%u.", &a, &b) == 2 && a == 172 && b >= 16 && b <= 31;
}

/* forward_client_cert_details.  SANITIZE (the default) and ALWAYS_FORWARD_ONLY need nothing from
 * the certificates; the other modes read the connection's cached identity, and only Cert and
 * Chain make it encode PEM. */
static void apply_xfcc(mp_stream_t *s, mp_headers_t *hd)
{
    const mp_hcm_config_t *h = s->conn->hcm;
    const mp_tls_ident_t *id = NULL;
    if (h->xfcc_mode != MP_XFCC_SANITIZE && h->xfcc_mode != MP_XFCC_ALWAYS_FORWARD_ONLY) {
        mp_tls_ident_t *cache = mp_hconn_ident(s->conn);
        id = (h->xfcc_details & (MP_XFCC_CERT | MP_XFCC_CHAIN)) ? mp_tls_ident_get_pem(cache)
                                                                : mp_tls_ident_get(cache);
    }
    mp_xfcc_apply(hd, h->xfcc_mode, h->xfcc_details, id);
}

/* The x-envoy-* request headers only a trusted client may send (Envoy's cleanInternalHeaders):
 * they steer retries and timeouts, so an external client's are removed. */
static const char *const internal_only[] = {
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-internal",
};

/* Envoy's rule for an internal request.  With use_remote_address, the request must carry no
 * x-forwarded-for and come from an internal peer address.  Without it, the peer is not looked
 * at: x-forwarded-for must hold exactly one address, and that address must be internal (no
 * x-forwarded-for at all means external). */
bool mp_stream__is_internal(const mp_stream_t *s)
{
    const mp_header_t *xff = mp_headers_get(&s->req->headers, "x-forwarded-for");
    if (s->conn->hcm->use_remote_address)
        return xff == NULL && peer_is_internal(s->conn->peer);
    if (xff == NULL || mp_headers_count(&s->req->headers, "x-forwarded-for") != 1 ||
        strchr(xff->value, ',') != NULL)
        return false;
    char addr[64];
    const char *v = xff->value;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strcspn(v, " \t");
    if (n == 0 || n >= sizeof(addr) - 2)
        return false;
    /* peer_is_internal reads "ip:port" / "[v6]:port" text: give v6 its brackets. */
    if (strchr(v, ':') != NULL && v[0] != '[')
        snprintf(addr, sizeof(addr), "[%.*s]", (int)n, v);
    else
        snprintf(addr, sizeof(addr), "%.*s", (int)n, v);
    return peer_is_internal(addr);
}

static void apply_trust(mp_stream_t *s, mp_headers_t *hd)
{
    s->internal = mp_stream__is_internal(s);
    if (s->internal) {
        mp_headers_set(hd, "x-envoy-internal", "true", 4);
        return;
    }
    for (size_t i = 0; i < MP_ARRAY_SIZE(internal_only); i++)
        mp_headers_remove(hd, internal_only[i]);
}

void mp_stream__prepare_request(mp_stream_t *s)
{
    const mp_hcm_config_t *h = s->conn->hcm;
    mp_headers_t *hd = &s->req->headers;
    strip_hop_by_hop(hd);
    mp_headers_remove(hd, "host");
    apply_xfcc(s, hd);
    if (s->req->expect_continue)
        mp_headers_remove(hd, "expect");
    apply_trust(s, hd);
    append_xff(hd, s->conn->peer);
    if (h->use_remote_address || mp_headers_get(hd, "x-forwarded-proto") == NULL)
        mp_headers_set(hd, "x-forwarded-proto", s->conn->tp.tls ? "https" : "http",
                       s->conn->tp.tls ? 5 : 4);
    mp_header_t *rid = mp_headers_get(hd, "x-request-id");
    bool keep = rid != NULL && (!h->use_remote_address || h->preserve_external_request_id ||
                                peer_is_internal(s->conn->peer));
    if (keep) {
        snprintf(s->request_id, sizeof(s->request_id), "%s", rid->value);
    } else if (h->generate_request_id) {
        mp_stream__uuid4(s->request_id);
        mp_headers_set(hd, "x-request-id", s->request_id, strlen(s->request_id));
    }
}

void mp_stream__prepare_response(mp_stream_t *s, mp_http_msg_t *resp)
{
    strip_hop_by_hop(&resp->headers);
    if (resp->status == 204 || resp->status == 304)
        resp->content_length = -1;
    const mp_hcm_config_t *h = s->conn->hcm;
    if (h->server_header == MP_SERVER_HEADER_OVERWRITE ||
        (h->server_header == MP_SERVER_HEADER_APPEND_IF_ABSENT &&
         mp_headers_get(&resp->headers, "server") == NULL))
        mp_headers_set(&resp->headers, "server", h->server_name, strlen(h->server_name));
}
