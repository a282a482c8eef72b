/* Virtual host selection by authority, with Envoy's domain precedence (VirtualHost.domains):
 * exact names, then suffix wildcards "*.a.com" / "*-b.a.com" (longest suffix first), then prefix
 * wildcards "a.*" (longest prefix first), then "*".  Ties go to the first in configuration
 * order.  A wildcard never matches the empty string. */
#include <string.h>
#include <strings.h>

#include "magpie/route.h"

enum domain_tier {
    TIER_EXACT,      /* equals the authority as given, port included */
    TIER_EXACT_HOST, /* equals the authority without its port */
    TIER_SUFFIX,
    TIER_PREFIX,
    TIER_ANY,
    TIER_NONE,
};

/* The authority as two candidates: as given, and without its port.  Both are tried so that a
 * domain "a.com:8080" matches "a.com:8080" exactly while "a.com" matches "A.com:8080" too. */
typedef struct authority_view {
    const char *s;
    size_t len;      /* whole authority */
    size_t host_len; /* without ":port" */
} authority_view_t;

static size_t host_part_len(const char *a, size_t n)
{
    if (n > 0 && a[0] == '[') {
        /* "[v6]:port": the port follows the bracket; a bare "[v6]" has none. */
        const char *close = memchr(a, ']', n);
        return close != NULL ? (size_t)(close - a) + 1 : n;
    }
    const char *colon = memchr(a, ':', n);
    if (colon == NULL)
        return n;
    /* More than one colon without brackets is an IPv6 literal with no port to strip. */
    if (memchr(colon + 1, ':', n - (size_t)(colon - a) - 1) != NULL)
        return n;
    return (size_t)(colon - a);
}

static bool ends_with_ci(const char *s, size_t n, const char *suf, size_t sn)
{
    return n > sn && strncasecmp(s + n - sn, suf, sn) == 0;
}

static bool starts_with_ci(const char *s, size_t n, const char *pre, size_t pn)
{
    return n > pn && strncasecmp(s, pre, pn) == 0;
}

static bool equals_ci(const char *s, size_t n, const char *d, size_t dn)
{
    return n == dn && strncasecmp(s, d, n) == 0;
}

/* Tier of one domain against the authority, and the length that ranks it within the tier. */
static enum domain_tier rank_domain(const char *d, const authority_view_t *a, size_t *score)
{
    size_t dn = strlen(d);
    *score = 0;
    if (dn == 1 && d[0] == '*')
        return TIER_ANY;
    if (dn > 1 && d[0] == '*') {
        *score = dn - 1;
        if (ends_with_ci(a->s, a->len, d + 1, dn - 1) ||
            ends_with_ci(a->s, a->host_len, d + 1, dn - 1))
            return TIER_SUFFIX;
        return TIER_NONE;
    }
    if (dn > 1 && d[dn - 1] == '*') {
        *score = dn - 1;
        if (starts_with_ci(a->s, a->len, d, dn - 1) || starts_with_ci(a->s, a->host_len, d, dn - 1))
            return TIER_PREFIX;
        return TIER_NONE;
    }
    if (equals_ci(a->s, a->len, d, dn))
        return TIER_EXACT;
    if (equals_ci(a->s, a->host_len, d, dn))
        return TIER_EXACT_HOST;
    return TIER_NONE;
}

const mp_vhost_t *mp_route_find_vhost(const mp_route_table_t *t, const char *authority)
{
    if (t == NULL)
        return NULL;
    if (authority == NULL)
        authority = "";
    authority_view_t a = {.s = authority, .len = strlen(authority)};
    a.host_len = host_part_len(a.s, a.len);

    const mp_vhost_t *best = NULL;
    enum domain_tier best_tier = TIER_NONE;
    size_t best_score = 0;
    for (uint32_t i = 0; i < t->n_vhosts; i++) {
        const mp_vhost_t *vh = &t->vhosts[i];
        for (uint32_t j = 0; j < vh->n_domains; j++) {
            size_t score;
            enum domain_tier tier = rank_domain(vh->domains[j], &a, &score);
            if (tier == TIER_EXACT)
                return vh; /* nothing outranks it; the first one wins */
            if (tier < best_tier ||
                (tier == best_tier && tier != TIER_NONE && score > best_score)) {
                best = vh;
                best_tier = tier;
                best_score = score;
            }
        }
    }
    return best;
}
