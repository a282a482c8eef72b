/* What a matched route does to a request: the cluster it goes to, the rewrites applied before
 * forwarding, and the Location of a redirect (Envoy's RouteAction and RedirectAction). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "magpie/route.h"
#include "route_internal.h"

/* First field named name, as Envoy reads cluster_header and x-forwarded-proto. */
static const char *first_header(const mp_http_msg_t *req, const char *name)
{
    for (uint32_t i = 0; i < req->headers.n; i++)
        if (strcmp(req->headers.v[i].name, name) == 0)
            return req->headers.v[i].value;
    return NULL;
}

static const mp_weighted_cluster_t *pick_weighted(const mp_route_t *r, uint64_t random)
{
    uint64_t total = r->total_weight;
    if (total == 0)
        for (uint32_t i = 0; i < r->n_weighted; i++)
            total += r->weighted[i].weight;
    if (total == 0)
        return &r->weighted[0];
    uint64_t pick = random % total, acc = 0;
    for (uint32_t i = 0; i < r->n_weighted; i++) {
        acc += r->weighted[i].weight;
        if (pick < acc)
            return &r->weighted[i];
    }
    return &r->weighted[r->n_weighted - 1]; /* total_weight larger than the sum */
}

const char *mp_route_cluster_name(const mp_route_t *r, const mp_http_msg_t *req, uint64_t random,
                                  const mp_weighted_cluster_t **wc_out)
{
    if (wc_out != NULL)
        *wc_out = NULL;
    if (r == NULL || r->action != MP_ACTION_ROUTE)
        return NULL;
    if (r->cluster_name != NULL)
        return r->cluster_name;
    if (r->n_weighted > 0) {
        const mp_weighted_cluster_t *wc = pick_weighted(r, random);
        if (wc_out != NULL)
            *wc_out = wc;
        return wc->name;
    }
    if (r->cluster_header != NULL) {
        const char *v = first_header(req, r->cluster_header);
        return v != NULL && v[0] != '\0' ? v : NULL;
    }
    return NULL;
}

/* path with its first `matched` bytes replaced by repl; the rest (query included) is kept. */
static char *replace_head(const char *path, size_t matched, const char *repl)
{
    char *p = mp_xasprintf("%s%s", repl, path + matched);
    if (p[0] != '\0')
        return p;
    free(p);
    return mp_xstrdup("/"); /* "/a" rewritten by "" from prefix "/a" would leave no path */
}

static char *rewritten_path(const mp_route_t *r, const char *path, const char *repl)
{
    size_t matched = mp_route__matched_len(r, path);
    if (matched > mp_route__path_len(path))
        matched = mp_route__path_len(path); /* the route did not match this path; be safe */
    return replace_head(path, matched, repl);
}

void mp_route_rewrite_request(const mp_route_t *r, mp_http_msg_t *req)
{
    if (r->prefix_rewrite != NULL && req->path != NULL) {
        char *p = rewritten_path(r, req->path, r->prefix_rewrite);
        free(req->path);
        req->path = p;
    }
    if (r->host_rewrite_literal != NULL) {
        free(req->authority);
        req->authority = mp_xstrdup(r->host_rewrite_literal);
        if (first_header(req, "host") != NULL)
            mp_headers_set(&req->headers, "host", r->host_rewrite_literal,
                           strlen(r->host_rewrite_literal));
    }
}

static unsigned default_port(const char *scheme)
{
    if (strcasecmp(scheme, "http") == 0)
        return 80;
    if (strcasecmp(scheme, "https") == 0)
        return 443;
    return 0;
}

static const char *request_scheme(const mp_http_msg_t *req)
{
    if (req->scheme != NULL)
        return req->scheme;
    const char *xfp = first_header(req, "x-forwarded-proto");
    return xfp != NULL ? xfp : "http";
}

/* Envoy's processRequestHost: the request's host keeps its port unless a port_redirect replaces
 * it, or the scheme changes and the port was the default of the scheme the client used (so
 * "http://a:80" -> "https://a", while "http://a:8080" -> "https://a:8080"). */
static size_t request_host_len(const mp_http_msg_t *req, const char *host, const char *scheme,
                               bool port_redirect)
{
    size_t n = strlen(host);
    const char *colon;
    if (host[0] == '[') {
        const char *close = strstr(host, "]:");
        colon = close != NULL ? close + 1 : NULL;
    } else {
        colon = strrchr(host, ':');
    }
    if (colon == NULL)
        return n;
    const char *xfp = first_header(req, "x-forwarded-proto");
    const char *proto = xfp != NULL ? xfp : (req->scheme != NULL ? req->scheme : "http");
    bool remove = port_redirect;
    if (strcasecmp(scheme, proto) != 0) {
        remove |= strcasecmp(proto, "https") == 0 && strcmp(colon, ":443") == 0;
        remove |= strcasecmp(proto, "http") == 0 && strcmp(colon, ":80") == 0;
    }
    return remove ? (size_t)(colon - host) : n;
}

/* Path and query of the Location (heap string). */
static char *redirect_path(const mp_route_t *r, const char *path)
{
    const mp_redirect_t *rd = &r->redirect;
    char *out;
    bool path_has_query = false;
    if (rd->path != NULL) {
        /* A path_redirect with its own query replaces the request's and is never stripped. */
        path_has_query = strchr(rd->path, '?') != NULL;
        const char *q = strchr(path, '?');
        out = mp_xasprintf("%s%s", rd->path, path_has_query || q == NULL ? "" : q);
    } else if (rd->prefix_rewrite != NULL) {
        out = rewritten_path(r, path, rd->prefix_rewrite);
    } else {
        out = mp_xstrdup(path);
    }
    if (out[0] != '/') {
        char *slashed = mp_xasprintf("/%s", out);
        free(out);
        out = slashed;
    }
    if (rd->strip_query && !path_has_query)
        out[strcspn(out, "?")] = '\0';
    return out;
}

char *mp_route_redirect_location(const mp_route_t *r, const mp_http_msg_t *req)
{
    const mp_redirect_t *rd = &r->redirect;
    const char *scheme = rd->scheme != NULL ? rd->scheme : request_scheme(req);
    char port[16] = "";
    if (rd->port != 0 && rd->port != default_port(scheme))
        snprintf(port, sizeof(port), ":%u", (unsigned)rd->port);

    const char *host = rd->host;
    size_t host_len = host != NULL ? strlen(host) : 0;
    if (host == NULL) {
        host = req->authority != NULL ? req->authority : first_header(req, "host");
        host = host != NULL ? host : "";
        host_len = request_host_len(req, host, scheme, rd->port != 0);
    }
    char *path = redirect_path(r, req->path != NULL ? req->path : "/");
    char *loc = mp_xasprintf("%s://%.*s%s%s", scheme, (int)host_len, host, port, path);
    free(path);
    return loc;
}
