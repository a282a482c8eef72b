/* Route matching within a virtual host: the first route, in order, whose path match, header
 * matchers and query-parameter matchers all hold.  Paths are matched without their query string
 * and fragment, as Envoy does for prefix, path, safe_regex and path_separated_prefix. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "magpie/regex.h"
#include "magpie/route.h"
#include "route_internal.h"

size_t mp_route__path_len(const char *path)
{
    return path != NULL ? strcspn(path, "?#") : 0;
}

size_t mp_route__matched_len(const mp_route_t *r, const char *path)
{
    if (r->path_kind == MP_PATH_PREFIX || r->path_kind == MP_PATH_SEPARATED_PREFIX)
        return r->path_len;
    return mp_route__path_len(path);
}

static bool head_eq(const char *path, size_t plen, const mp_route_t *r)
{
    if (plen < r->path_len)
        return false;
    if (r->path_len == 0)
        return true;
    return r->case_sensitive ? memcmp(path, r->path, r->path_len) == 0
                             : strncasecmp(path, r->path, r->path_len) == 0;
}

static bool path_matches(const mp_route_t *r, const char *path)
{
    size_t plen = mp_route__path_len(path);
    if (path == NULL)
        path = "";
    switch (r->path_kind) {
    case MP_PATH_PREFIX:
        return head_eq(path, plen, r);
    case MP_PATH_EXACT:
        return plen == r->path_len && head_eq(path, plen, r);
    case MP_PATH_REGEX:
        /* case_sensitive does not apply to safe_regex (Envoy); the pattern decides. */
        return mp_regex_match(r->path_regex, path, plen);
    case MP_PATH_SEPARATED_PREFIX:
        /* "/api" matches "/api" and "/api/x" but not "/apix". */
        return head_eq(path, plen, r) && (plen == r->path_len || path[r->path_len] == '/');
    default:
        return false;
    }
}

const mp_route_t *mp_route_find(const mp_vhost_t *vh, const mp_http_msg_t *req)
{
    if (vh == NULL)
        return NULL;
    for (uint32_t i = 0; i < vh->n_routes; i++) {
        const mp_route_t *r = &vh->routes[i];
        if (mp_route__kind_match(r, req) && path_matches(r, req->path) &&
            mp_route__headers_match(r, req))
            return r;
    }
    return NULL;
}

const mp_route_t *mp_route_match(const mp_route_table_t *t, const mp_http_msg_t *req,
                                 const mp_vhost_t **vh_out)
{
    const char *authority = "";
    size_t len;
    char *joined;
    mp_route__header_value(req, ":authority", &authority, &len, &joined);
    const mp_vhost_t *vh = mp_route_find_vhost(t, authority);
    free(joined); /* only set for a request with several Host fields, which then match none */
    if (vh_out != NULL)
        *vh_out = vh;
    return mp_route_find(vh, req);
}
