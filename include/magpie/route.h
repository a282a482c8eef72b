/* Route selection over a mp_route_table_t (envoy.config.route.v3 semantics): virtual host by
 * authority, first matching route in order, cluster choice, rewrites and header mutations.
 * Pure functions of the table and the request; worker threads, no allocation unless stated. */
#ifndef MAGPIE_ROUTE_H
#define MAGPIE_ROUTE_H

#include <stdint.h>

#include "magpie/config.h"
#include "magpie/http.h"

/* Virtual host for an authority (port stripped, case-insensitive), by Envoy's precedence: exact
 * domain, then the longest "*.suffix" / "*suffix", then the longest "prefix*", then "*".
 * NULL when none matches. */
const mp_vhost_t *mp_route_find_vhost(const mp_route_table_t *t, const char *authority);

/* First route of vh whose match holds for req (path, headers, query parameters).  NULL if none. */
const mp_route_t *mp_route_find(const mp_vhost_t *vh, const mp_http_msg_t *req);

/* Both steps; sets *vh_out (may be NULL) to the virtual host. */
const mp_route_t *mp_route_match(const mp_route_table_t *t, const mp_http_msg_t *req,
                                 const mp_vhost_t **vh_out);

/* Target cluster name of a MP_ACTION_ROUTE route: "cluster", one of weighted_clusters chosen
 * by random (uniform over total_weight), or the value of cluster_header.  Sets *wc_out to the
 * weighted entry (or NULL).  NULL when cluster_header is absent from the request.  A
 * cluster_header name points into req's headers and lives as long as they do. */
const char *mp_route_cluster_name(const mp_route_t *r, const mp_http_msg_t *req, uint64_t random,
                                  const mp_weighted_cluster_t **wc_out);

/* Applies prefix_rewrite, host_rewrite_literal to req (heap strings replaced). auto_host_rewrite
 * is the caller's, since it needs the chosen host. */
void mp_route_rewrite_request(const mp_route_t *r, mp_http_msg_t *req);

/* Location for a redirect route, built from req; heap string owned by the caller. */
char *mp_route_redirect_location(const mp_route_t *r, const mp_http_msg_t *req);

/* Applies a mutation: removes first, then adds per each op's append action. */
void mp_header_mutation_apply(const mp_header_mutation_t *m, mp_headers_t *h);

/* One header matcher against req's headers; ":method", ":path", ":authority" and ":scheme" read
 * the request's fields, so HTTP/1 requests match them too.  Worker or main thread. */
bool mp_header_matcher_match(const mp_header_matcher_t *hm, const mp_http_msg_t *req);

/* String matcher on a length-counted subject. */
bool mp_string_matcher_match(const mp_string_matcher_t *m, const char *s, size_t len);

/* Freeing (main thread, once no worker can see the table).  mp_route_table_free frees t itself
 * and everything it owns: every string, array, regex (mp_regex_free) and mutation; the resolved
 * mp_cluster_t pointers are not owned.  Arrays are freed for their n_* entries, so a partly built
 * table with zeroed entries frees cleanly.  The other two free the contents of a struct that is
 * embedded in something else, leaving it zeroed/empty; all accept NULL. */
void mp_route_table_free(mp_route_table_t *t);
void mp_header_mutation_free(mp_header_mutation_t *m);
void mp_string_matcher_free(mp_string_matcher_t *m);

#endif
