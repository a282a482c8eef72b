/* Upgrades through the connection manager (Envoy's upgrade_configs): WebSocket over HTTP/1.1,
 * RFC 8441 extended CONNECT over HTTP/2, and CONNECT, forwarded or terminated here.  An allowed
 * upgrade holds the request's bytes until the upstream answers; a 101 (a 2xx for CONNECT) turns
 * the stream into a tunnel whose request and response bodies are the two byte directions. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "magpie/stats.h"
#include "stream_internal.h"

static bool is_method(const mp_http_msg_t *req, const char *m)
{
    return req->method != NULL && strcmp(req->method, m) == 0;
}

bool mp_stream__is_connect(const mp_http_msg_t *req)
{
    return is_method(req, "CONNECT") && req->protocol == NULL;
}

void mp_stream__upgrade_capture(mp_stream_t *s)
{
    mp_http_msg_t *req = s->req;
    if (is_method(req, "CONNECT") && req->protocol != NULL) {
        /* RFC 8441: the HTTP/2 form of an HTTP/1.1 upgrade.  Like Envoy's codec, we turn it
         * into that upgrade (GET + Upgrade) before routing, so both route alike. */
        free(req->method);
        req->method = mp_xstrdup("GET");
        s->upgrade = req->protocol;
        req->protocol = NULL;
        s->upgrade_req_ended = false;
        s->connect_terminate = true; /* provisional: "must tunnel", see upgrade_decide */
        return;
    }
    if (mp_stream__is_connect(req)) {
        s->upgrade = mp_xstrdup("CONNECT");
        return;
    }
    const mp_header_t *up = mp_headers_get(&req->headers, "upgrade");
    if (req->upgrade && up != NULL && mp_headers_count(&req->headers, "upgrade") == 1)
        s->upgrade = mp_xstrdup(up->value);
}

/* Envoy's createUpgradeFilterChain: a route's entry for the type decides (disabled wins,
 * enabled allows even when the listener does not name it); otherwise the listener's. */
static const mp_upgrade_config_t *find_upgrade(const mp_upgrade_config_t *v, uint32_t n,
                                               const char *type)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcasecmp(v[i].upgrade_type, type) == 0)
            return &v[i];
    return NULL;
}

static bool upgrade_allowed(const mp_stream_t *s, bool *terminate)
{
    const mp_route_t *r = s->route;
    *terminate = false;
    const mp_upgrade_config_t *rc = find_upgrade(r->upgrades, r->n_upgrades, s->upgrade);
    if (rc != NULL && !rc->enabled)
        return false;
    if (rc != NULL) {
        *terminate = rc->connect_config;
        return true;
    }
    const mp_hcm_config_t *h = s->conn->hcm;
    const mp_upgrade_config_t *hc = find_upgrade(h->upgrades, h->n_upgrades, s->upgrade);
    return hc != NULL && hc->enabled;
}

static void drop_upgrade(mp_stream_t *s)
{
    free(s->upgrade);
    s->upgrade = NULL;
    s->connect_terminate = false;
}

bool mp_stream__upgrade_decide(mp_stream_t *s)
{
    if (s->upgrade == NULL)
        return true;
    /* A CONNECT, classic or extended, cannot fall back to plain HTTP: Envoy refuses it (403). */
    bool must_tunnel = s->connect_terminate || mp_stream__is_connect(s->req);
    if (s->route == NULL || s->route->action != MP_ACTION_ROUTE) {
        drop_upgrade(s); /* no route (404) or a local answer: the router says so */
        return true;
    }
    bool terminate = false;
    if (!upgrade_allowed(s, &terminate)) {
        drop_upgrade(s); /* hop-by-hop removal took Upgrade away: plain HTTP */
        if (!must_tunnel)
            return true;
        mp_stream_local_reply(s, 403, 0, NULL, "upgrade_failed");
        return false;
    }
    s->connect_terminate = terminate && mp_stream__is_connect(s->req);
    mp_http_msg_t *req = s->req;
    req->chunked = false; /* the tunnel's bytes are not an HTTP body */
    req->content_length = -1;
    if (!mp_stream__is_connect(req)) {
        mp_headers_set(&req->headers, "connection", "upgrade", 7);
        mp_headers_set(&req->headers, "upgrade", s->upgrade, strlen(s->upgrade));
    }
    const mp_http_stats_t *st = &s->conn->hcm->stats;
    mp_stats_inc(st->downstream_cx_upgrades_total);
    mp_stats_inc(st->downstream_cx_upgrades_active);
    s->upgrade_counted = true;
    return true;
}

bool mp_stream__upgrade_answer(mp_stream_t *s, const mp_http_msg_t *resp)
{
    bool connect = mp_stream__is_connect(s->req);
    if (connect ? resp->status / 100 == 2 : resp->status == 101) {
        s->tunnel = true;
        return true;
    }
    if (resp->status < 200)
        return false; /* a 100 before the answer */
    /* Refused (any other final response): a normal exchange.  What the client sent early was
     * meant for the tunnel, not as a body: forwarding it raw would smuggle it onto the upstream
     * connection, and parsing it here would turn it into requests (hostile-inputs 26).  It is
     * dropped, as is anything more the client sends on this stream, and an HTTP/1.1 connection
     * closes after the response. */
    drop_upgrade(s);
    s->upgrade_refused = true;
    mp_ustream_t *u = s->up;
    mp_buf_clear(&s->req_pending);
    if (s->upgrade_req_ended) {
        s->upgrade_req_ended = false;
        s->req_complete = true;
        u->ops->send_end(u, NULL);
    }
    return false;
}

void mp_stream__tunnel_begin(mp_stream_t *s)
{
    mp_ustream_t *u = s->up;
    for (mp_buf_seg_t *seg = s->req_pending.head; seg != NULL; seg = seg->next)
        u->ops->send_data(u, seg->slice, seg->slice->data + seg->off, seg->len);
    mp_buf_clear(&s->req_pending);
    /* HTTP/1.1's request ended with its head; the raw bytes follow now.  An HTTP/2 stream that
     * ended (END_STREAM) before the answer has half-closed the tunnel already. */
    bool ended = s->upgrade_req_ended && s->req->version == MP_HTTP_2;
    s->upgrade_req_ended = false;
    if (ended) {
        s->req_complete = true;
        u->ops->send_end(u, NULL);
    }
}

void mp_stream__upgrade_free(mp_stream_t *s)
{
    if (s->upgrade_counted)
        mp_stats_dec(s->conn->hcm->stats.downstream_cx_upgrades_active);
    free(s->upgrade);
}
