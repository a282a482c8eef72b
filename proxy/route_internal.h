/* Helpers shared by the proxy/route*.c files; not for other modules. */
#ifndef MAGPIE_ROUTE_INTERNAL_H
#define MAGPIE_ROUTE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "magpie/config.h"
#include "magpie/http.h"

/* A request header's value as route matching sees it.  ":method", ":path", ":authority" and
 * ":scheme" read the request fields (":authority" falls back to a "host" field, "host" to the
 * authority).  A name present several times yields the values joined with ",", which is the
 * one case that allocates: *joined is then set to the heap string to free, otherwise NULL.
 * Returns false when the header is absent. */
bool mp_route__header_value(const mp_http_msg_t *req, const char *name, const char **val,
                            size_t *len, char **joined);

/* True when every header and query-parameter matcher of r holds for req. */
bool mp_route__headers_match(const mp_route_t *r, const mp_http_msg_t *req);

/* The request-kind conditions of r's match: a connect_matcher route takes CONNECT requests only
 * and every other route takes everything but CONNECT (Envoy skips routes that need a :path for a
 * CONNECT, which has none); a route with match_grpc takes gRPC requests only. */
bool mp_route__kind_match(const mp_route_t *r, const mp_http_msg_t *req);

/* Length of the path without its query string and fragment. */
size_t mp_route__path_len(const char *path);

/* Length of the part of path that a route's match consumed and a prefix_rewrite replaces: the
 * prefix for prefix matches, the whole path (without query) for exact and regex matches. */
size_t mp_route__matched_len(const mp_route_t *r, const char *path);

#endif
