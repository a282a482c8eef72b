/* Freeing a route table and what it owns.  The translator builds tables with calloc'd arrays
 * whose counts cover the entries it filled in, so a half-built table frees cleanly too. */
#include <stdlib.h>

#include "config_internal.h"
#include "magpie/regex.h"
#include "magpie/retry.h"
#include "magpie/route.h"
#include "magpie/route_hash.h"

void mp_string_matcher_free(mp_string_matcher_t *m)
{
    if (m == NULL)
        return;
    free(m->value);
    mp_regex_free(m->regex);
    m->value = NULL;
    m->regex = NULL;
}

void mp_header_mutation_free(mp_header_mutation_t *m)
{
    if (m == NULL)
        return;
    for (uint32_t i = 0; i < m->n_add; i++) {
        free(m->add[i].name);
        free(m->add[i].value);
    }
    free(m->add);
    for (uint32_t i = 0; i < m->n_remove; i++)
        free(m->remove[i]);
    free(m->remove);
    *m = (mp_header_mutation_t){0};
}

static void free_match(mp_route_t *r)
{
    free(r->path);
    mp_regex_free(r->path_regex);
    for (uint32_t i = 0; i < r->n_headers; i++) {
        free(r->headers[i].name);
        mp_string_matcher_free(&r->headers[i].str);
    }
    free(r->headers);
    for (uint32_t i = 0; i < r->n_query; i++) {
        free(r->query[i].name);
        mp_string_matcher_free(&r->query[i].str);
    }
    free(r->query);
}

/* r->cluster and weighted[].cluster point into the snapshot's cluster list: not ours. */
static void free_action(mp_route_t *r)
{
    free(r->cluster_name);
    for (uint32_t i = 0; i < r->n_weighted; i++) {
        free(r->weighted[i].name);
        mp_header_mutation_free(&r->weighted[i].request_headers);
        mp_header_mutation_free(&r->weighted[i].response_headers);
    }
    free(r->weighted);
    free(r->cluster_header);
    free(r->prefix_rewrite);
    free(r->host_rewrite_literal);
    free(r->redirect.scheme);
    free(r->redirect.host);
    free(r->redirect.path);
    free(r->redirect.prefix_rewrite);
    free(r->direct_body);
    mp_retry_policy_free(r->retry);
    mp_config__upgrades_free(r->upgrades, r->n_upgrades);
    mp_hash_policies_free(r->hash_policies, r->n_hash_policies);
    mp_header_mutation_free(&r->request_headers);
    mp_header_mutation_free(&r->response_headers);
}

static void free_vhost(mp_vhost_t *vh)
{
    free(vh->name);
    mp_retry_policy_free(vh->retry);
    for (uint32_t i = 0; i < vh->n_domains; i++)
        free(vh->domains[i]);
    free(vh->domains);
    for (uint32_t i = 0; i < vh->n_routes; i++) {
        free(vh->routes[i].name);
        free_match(&vh->routes[i]);
        free_action(&vh->routes[i]);
    }
    free(vh->routes);
    mp_header_mutation_free(&vh->request_headers);
    mp_header_mutation_free(&vh->response_headers);
}

void mp_route_table_free(mp_route_table_t *t)
{
    if (t == NULL)
        return;
    for (uint32_t i = 0; i < t->n_vhosts; i++)
        free_vhost(&t->vhosts[i]);
    free(t->vhosts);
    free(t->name);
    mp_header_mutation_free(&t->request_headers);
    mp_header_mutation_free(&t->response_headers);
    free(t);
}
