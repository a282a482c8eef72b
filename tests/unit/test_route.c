/* proxy/route*.c: virtual host precedence, route matching (path, headers, query), cluster
 * choice, rewrites, redirect locations, header mutations.  Tables are built by hand with heap
 * strings, as the translator builds them, and freed with mp_route_table_free (so ASan checks
 * that the free is complete). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/regex.h"
#include "magpie/route.h"
#include "unit.h"

/* ---- builders ---- */

static mp_route_table_t *table_new(void)
{
    mp_route_table_t *t = mp_xcalloc(1, sizeof(*t));
    t->name = mp_xstrdup("rt");
    return t;
}

/* Appends a virtual host with the NULL-terminated domains; returns its index. */
static uint32_t add_vhost(mp_route_table_t *t, const char *name, ...)
{
    t->vhosts = mp_xrealloc(t->vhosts, (t->n_vhosts + 1) * sizeof(*t->vhosts));
    mp_vhost_t *vh = &t->vhosts[t->n_vhosts];
    memset(vh, 0, sizeof(*vh));
    vh->name = mp_xstrdup(name);
    va_list ap;
    va_start(ap, name);
    for (const char *d; (d = va_arg(ap, const char *)) != NULL;) {
        vh->domains = mp_xrealloc(vh->domains, (vh->n_domains + 1) * sizeof(char *));
        vh->domains[vh->n_domains++] = mp_xstrdup(d);
    }
    va_end(ap);
    return t->n_vhosts++;
}

/* By index after the call: add_vhost reallocates the array. */
static mp_vhost_t *vhost_at(mp_route_table_t *t, uint32_t i)
{
    return &t->vhosts[i];
}

#define MAX_ROUTES 16

/* Appends a route to cluster `cluster`; for MP_PATH_REGEX, path is the pattern. */
static mp_route_t *add_route(mp_vhost_t *vh, mp_path_match_kind_t kind, const char *path,
                             const char *cluster)
{
    /* Fixed capacity, so that a test may hold route pointers while adding more. */
    if (vh->routes == NULL)
        vh->routes = mp_xcalloc(MAX_ROUTES, sizeof(*vh->routes));
    if (vh->n_routes == MAX_ROUTES)
        abort();
    mp_route_t *r = &vh->routes[vh->n_routes++];
    memset(r, 0, sizeof(*r));
    r->name = mp_xstrdup(cluster);
    r->path_kind = kind;
    r->case_sensitive = true;
    if (kind == MP_PATH_REGEX) {
        r->path_regex = mp_regex_compile(path, NULL);
    } else {
        r->path = mp_xstrdup(path);
        r->path_len = (uint32_t)strlen(path);
    }
    r->action = MP_ACTION_ROUTE;
    r->cluster_name = mp_xstrdup(cluster);
    return r;
}

static void set_str(mp_string_matcher_t *m, mp_str_match_kind_t kind, const char *v, bool icase)
{
    memset(m, 0, sizeof(*m));
    m->kind = kind;
    m->ignore_case = icase;
    if (kind == MP_STR_REGEX) {
        m->regex = mp_regex_compile(v, NULL);
        return;
    }
    m->value = mp_xstrdup(v);
    m->len = (uint32_t)strlen(v);
}

static mp_header_matcher_t *add_header(mp_route_t *r, const char *name, mp_header_match_kind_t k)
{
    r->headers = mp_xrealloc(r->headers, (r->n_headers + 1) * sizeof(*r->headers));
    mp_header_matcher_t *hm = &r->headers[r->n_headers++];
    memset(hm, 0, sizeof(*hm));
    hm->name = mp_xstrdup(name);
    hm->kind = k;
    return hm;
}

static mp_query_matcher_t *add_query(mp_route_t *r, const char *name)
{
    r->query = mp_xrealloc(r->query, (r->n_query + 1) * sizeof(*r->query));
    mp_query_matcher_t *qm = &r->query[r->n_query++];
    memset(qm, 0, sizeof(*qm));
    qm->name = mp_xstrdup(name);
    return qm;
}

static void add_op(mp_header_mutation_t *m, const char *name, const char *value,
                   mp_header_append_t action, bool keep_empty)
{
    m->add = mp_xrealloc(m->add, (m->n_add + 1) * sizeof(*m->add));
    m->add[m->n_add++] = (mp_header_op_t){.name = mp_xstrdup(name),
                                          .value = mp_xstrdup(value),
                                          .action = action,
                                          .keep_empty_value = keep_empty};
}

static void add_remove(mp_header_mutation_t *m, const char *name)
{
    m->remove = mp_xrealloc(m->remove, (m->n_remove + 1) * sizeof(char *));
    m->remove[m->n_remove++] = mp_xstrdup(name);
}

static mp_http_msg_t *req_new(const char *method, const char *authority, const char *path)
{
    mp_http_msg_t *m = mp_xcalloc(1, sizeof(*m));
    mp_headers_init(&m->headers);
    m->method = mp_xstrdup(method);
    m->authority = authority ? mp_xstrdup(authority) : NULL;
    m->path = mp_xstrdup(path);
    m->scheme = mp_xstrdup("http");
    m->content_length = -1;
    return m;
}

static void req_free(mp_http_msg_t *m)
{
    mp_headers_free(&m->headers);
    free(m->method);
    free(m->authority);
    free(m->path);
    free(m->scheme);
    free(m);
}

static const char *vhost_for(const mp_route_table_t *t, const char *authority)
{
    const mp_vhost_t *vh = mp_route_find_vhost(t, authority);
    return vh != NULL ? vh->name : "(none)";
}

/* Name of the route matched for (method, path) with optional "name", "value" header pairs. */
static const char *route_for(mp_vhost_t *vh, const char *path, ...)
{
    static char name[64];
    mp_http_msg_t *req = req_new("GET", "h", path);
    va_list ap;
    va_start(ap, path);
    for (const char *n; (n = va_arg(ap, const char *)) != NULL;)
        mp_headers_add_cstr(&req->headers, n, va_arg(ap, const char *));
    va_end(ap);
    const mp_route_t *r = mp_route_find(vh, req);
    snprintf(name, sizeof(name), "%s", r != NULL ? r->name : "(none)");
    req_free(req);
    return name;
}

/* ---- virtual hosts ---- */

static void test_domain_precedence(void)
{
    mp_route_table_t *t = table_new();
    add_vhost(t, "any", "*", NULL);
    add_vhost(t, "prefix", "foo.*", NULL);
    add_vhost(t, "prefix_long", "foo.bar.*", NULL);
    add_vhost(t, "suffix", "*.foo.com", NULL);
    add_vhost(t, "suffix_long", "*.bar.foo.com", NULL);
    add_vhost(t, "dash", "*-bar.foo.com", NULL);
    add_vhost(t, "exact", "www.foo.com", "alias.example", NULL);
    add_vhost(t, "port", "a.com:8080", NULL);
    add_vhost(t, "v6", "[::1]", NULL);

    CHECK_STR(vhost_for(t, "www.foo.com"), "exact");
    CHECK_STR(vhost_for(t, "alias.example"), "exact");
    CHECK_STR(vhost_for(t, "WWW.Foo.COM:443"), "exact"); /* case and port ignored */
    CHECK_STR(vhost_for(t, "x.bar.foo.com"), "suffix_long");
    CHECK_STR(vhost_for(t, "x.foo.com"), "suffix");
    CHECK_STR(vhost_for(t, "bar.foo.com"), "suffix"); /* "*.bar.foo.com" needs a label more */
    CHECK_STR(vhost_for(t, "x-bar.foo.com"), "dash"); /* longer suffix than ".foo.com" */
    CHECK_STR(vhost_for(t, "foo.foo.com"), "suffix"); /* suffix wildcards before prefix ones */
    CHECK_STR(vhost_for(t, "foo.com"), "prefix");     /* "*.foo.com" never matches empty */
    CHECK_STR(vhost_for(t, "foo.bar.baz"), "prefix_long");
    CHECK_STR(vhost_for(t, "Foo.Bar.baz:80"), "prefix_long");
    CHECK_STR(vhost_for(t, "other"), "any");
    CHECK_STR(vhost_for(t, ""), "any");
    CHECK_STR(vhost_for(t, NULL), "any");
    CHECK_STR(vhost_for(t, "a.com:8080"), "port"); /* a domain with a port matches exactly */
    CHECK_STR(vhost_for(t, "A.COM:8080"), "port");
    CHECK_STR(vhost_for(t, "a.com:9090"), "any");
    CHECK_STR(vhost_for(t, "a.com"), "any");
    CHECK_STR(vhost_for(t, "[::1]:80"), "v6");
    CHECK_STR(vhost_for(t, "[::1]"), "v6");
    CHECK_STR(vhost_for(t, "[::2]:80"), "any");
    mp_route_table_free(t);
}

static void test_domain_ties_and_no_default(void)
{
    mp_route_table_t *t = table_new();
    add_vhost(t, "first", "*.a.com", NULL);
    add_vhost(t, "second", "*.a.com", "b.com", NULL);
    add_vhost(t, "v6bare", "::1", NULL);
    add_vhost(t, "host", "p.com", NULL);
    add_vhost(t, "hostport", "p.com:81", NULL);
    CHECK_STR(vhost_for(t, "x.a.com"), "first");
    CHECK_STR(vhost_for(t, "b.com:1"), "second");
    CHECK_STR(vhost_for(t, "c.com"), "(none)");
    CHECK_STR(vhost_for(t, "::1"), "v6bare");        /* unbracketed v6: no port to strip */
    CHECK_STR(vhost_for(t, "p.com:81"), "hostport"); /* with the port beats without */
    CHECK_STR(vhost_for(t, "p.com:82"), "host");
    mp_route_table_free(t);
}

static void test_route_match_uses_host_header(void)
{
    mp_route_table_t *t = table_new();
    uint32_t a = add_vhost(t, "a", "a.com", NULL);
    add_vhost(t, "any", "*", NULL);
    add_route(&t->vhosts[a], MP_PATH_PREFIX, "/", "ca");
    mp_http_msg_t *req = req_new("GET", NULL, "/x");
    mp_headers_add_cstr(&req->headers, "Host", "A.com:80");
    const mp_vhost_t *vh = NULL;
    const mp_route_t *r = mp_route_match(t, req, &vh);
    CHECK(vh == &t->vhosts[a]);
    CHECK(r != NULL && strcmp(r->name, "ca") == 0);
    req_free(req);
    req = req_new("GET", "z.com", "/x");
    CHECK(mp_route_match(t, req, &vh) == NULL); /* "any" has no routes */
    CHECK_STR(vh->name, "any");
    req_free(req);
    mp_route_table_free(t);
}

/* ---- paths ---- */

static void test_path_kinds(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    add_route(vh, MP_PATH_EXACT, "/exact", "exact");
    add_route(vh, MP_PATH_REGEX, "/users/[0-9]+", "regex");
    add_route(vh, MP_PATH_SEPARATED_PREFIX, "/api", "sep");
    add_route(vh, MP_PATH_PREFIX, "/static", "prefix");
    add_route(vh, MP_PATH_PREFIX, "/CI", "ci")->case_sensitive = false;
    add_route(vh, MP_PATH_PREFIX, "/", "root");

    CHECK_STR(route_for(vh, "/exact", NULL), "exact");
    CHECK_STR(route_for(vh, "/exact?a=1", NULL), "exact"); /* query ignored */
    CHECK_STR(route_for(vh, "/exact#frag", NULL), "exact");
    CHECK_STR(route_for(vh, "/exact/", NULL), "root");
    CHECK_STR(route_for(vh, "/EXACT", NULL), "root"); /* case-sensitive by default */
    CHECK_STR(route_for(vh, "/users/42", NULL), "regex");
    CHECK_STR(route_for(vh, "/users/42?x=y", NULL), "regex"); /* regex sees no query */
    CHECK_STR(route_for(vh, "/users/42/x", NULL), "root");    /* whole path must match */
    CHECK_STR(route_for(vh, "/api", NULL), "sep");
    CHECK_STR(route_for(vh, "/api/v1", NULL), "sep");
    CHECK_STR(route_for(vh, "/api?x", NULL), "sep");
    CHECK_STR(route_for(vh, "/apix", NULL), "root");
    CHECK_STR(route_for(vh, "/staticfile", NULL), "prefix");
    CHECK_STR(route_for(vh, "/Static", NULL), "root");
    CHECK_STR(route_for(vh, "/ci/x", NULL), "ci");
    CHECK_STR(route_for(vh, "/cI", NULL), "ci");
    mp_route_table_free(t);

    t = table_new();
    vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    add_route(vh, MP_PATH_PREFIX, "/a", "a");
    CHECK_STR(route_for(vh, "/b", NULL), "(none)");
    CHECK_STR(route_for(vh, "/", NULL), "(none)");
    mp_route_table_free(t);
}

static void test_first_match_wins(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    add_route(vh, MP_PATH_PREFIX, "/", "first");
    add_route(vh, MP_PATH_EXACT, "/x", "second");
    CHECK_STR(route_for(vh, "/x", NULL), "first");
    mp_route_table_free(t);
}

static void test_catastrophic_path_regex(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    add_route(vh, MP_PATH_REGEX, "(a+)+$", "evil");
    add_route(vh, MP_PATH_PREFIX, "", "fallback");
    uint64_t t0 = mp_now_ms();
    CHECK_STR(route_for(vh, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", NULL), "fallback");
    CHECK(mp_now_ms() - t0 < 1000);
    mp_route_table_free(t);
}

/* ---- headers ---- */

static void test_header_string_matchers(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    set_str(&add_header(add_route(vh, MP_PATH_PREFIX, "/", "exact"), "x-a", MP_HDR_STRING)->str,
            MP_STR_EXACT, "Yes", true);
    set_str(&add_header(add_route(vh, MP_PATH_PREFIX, "/", "prefix"), "x-b", MP_HDR_STRING)->str,
            MP_STR_PREFIX, "ab", false);
    set_str(&add_header(add_route(vh, MP_PATH_PREFIX, "/", "suffix"), "x-c", MP_HDR_STRING)->str,
            MP_STR_SUFFIX, "yz", false);
    set_str(&add_header(add_route(vh, MP_PATH_PREFIX, "/", "contains"), "x-d", MP_HDR_STRING)->str,
            MP_STR_CONTAINS, "MID", true);
    set_str(&add_header(add_route(vh, MP_PATH_PREFIX, "/", "regex"), "x-e", MP_HDR_STRING)->str,
            MP_STR_REGEX, "v[0-9]", false);
    add_route(vh, MP_PATH_PREFIX, "/", "none");

    CHECK_STR(route_for(vh, "/", "x-a", "yes", NULL), "exact");
    CHECK_STR(route_for(vh, "/", "x-a", "yess", NULL), "none");
    CHECK_STR(route_for(vh, "/", "x-b", "abc", NULL), "prefix");
    CHECK_STR(route_for(vh, "/", "x-b", "ABc", NULL), "none");
    CHECK_STR(route_for(vh, "/", "x-c", "xyz", NULL), "suffix");
    CHECK_STR(route_for(vh, "/", "x-d", "a-mid-b", NULL), "contains");
    CHECK_STR(route_for(vh, "/", "x-d", "a-mi-d", NULL), "none");
    CHECK_STR(route_for(vh, "/", "x-e", "v7", NULL), "regex");
    CHECK_STR(route_for(vh, "/", "x-e", "v77", NULL), "none");
    CHECK_STR(route_for(vh, "/", "X-A", "YES", NULL), "exact"); /* names are case-insensitive */
    mp_route_table_free(t);
}

static void test_header_present_range_invert_missing(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    add_header(add_route(vh, MP_PATH_PREFIX, "/p", "present"), "x-p", MP_HDR_PRESENT)->present =
        true;
    add_header(add_route(vh, MP_PATH_PREFIX, "/a", "absent"), "x-p", MP_HDR_PRESENT)->present =
        false;
    mp_header_matcher_t *hm =
        add_header(add_route(vh, MP_PATH_PREFIX, "/r", "range"), "x-n", MP_HDR_RANGE);
    hm->range_start = -10;
    hm->range_end = 0;
    hm = add_header(add_route(vh, MP_PATH_PREFIX, "/i", "inv"), "x-v", MP_HDR_STRING);
    set_str(&hm->str, MP_STR_REGEX, "[0-9]{3}", false);
    hm->invert = true;
    hm = add_header(add_route(vh, MP_PATH_PREFIX, "/m", "missing_empty"), "x-m", MP_HDR_RANGE);
    hm->range_start = 0;
    hm->range_end = 10;
    hm->invert = true;
    hm->treat_missing_as_empty = true;
    hm = add_header(add_route(vh, MP_PATH_PREFIX, "/ip", "inv_present"), "x-p", MP_HDR_PRESENT);
    hm->present = true;
    hm->invert = true;
    add_route(vh, MP_PATH_PREFIX, "/", "none");

    CHECK_STR(route_for(vh, "/p", "x-p", "", NULL), "present");
    CHECK_STR(route_for(vh, "/p", NULL), "none");
    CHECK_STR(route_for(vh, "/a", NULL), "absent");
    CHECK_STR(route_for(vh, "/a", "x-p", "1", NULL), "none");
    CHECK_STR(route_for(vh, "/r", "x-n", "-1", NULL), "range");
    CHECK_STR(route_for(vh, "/r", "x-n", "-10", NULL), "range");
    CHECK_STR(route_for(vh, "/r", "x-n", "0", NULL), "none"); /* end is exclusive */
    CHECK_STR(route_for(vh, "/r", "x-n", "-1x", NULL), "none");
    CHECK_STR(route_for(vh, "/r", "x-n", "", NULL), "none");
    /* Inverted: "\d{3}" does not match "1234", so the route matches. */
    CHECK_STR(route_for(vh, "/i", "x-v", "1234", NULL), "inv");
    CHECK_STR(route_for(vh, "/i", "x-v", "123", NULL), "none");
    CHECK_STR(route_for(vh, "/i", NULL), "none"); /* missing never matches, even inverted */
    /* Missing treated as "", which is not in [0,10), so the inverted matcher holds. */
    CHECK_STR(route_for(vh, "/m", NULL), "missing_empty");
    CHECK_STR(route_for(vh, "/m", "x-m", "5", NULL), "none");
    CHECK_STR(route_for(vh, "/m", "x-m", "50", NULL), "missing_empty");
    CHECK_STR(route_for(vh, "/ip", NULL), "inv_present");
    CHECK_STR(route_for(vh, "/ip", "x-p", "1", NULL), "none");
    mp_route_table_free(t);
}

static void test_header_multi_value_and_all_must_hold(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    mp_route_t *r = add_route(vh, MP_PATH_PREFIX, "/", "joined");
    set_str(&add_header(r, "x-l", MP_HDR_STRING)->str, MP_STR_EXACT, "a,b", false);
    r = add_route(vh, MP_PATH_PREFIX, "/", "both");
    set_str(&add_header(r, "x-1", MP_HDR_STRING)->str, MP_STR_EXACT, "1", false);
    set_str(&add_header(r, "x-2", MP_HDR_STRING)->str, MP_STR_EXACT, "2", false);
    add_route(vh, MP_PATH_PREFIX, "/", "none");
    CHECK_STR(route_for(vh, "/", "x-l", "a", "x-l", "b", NULL), "joined");
    CHECK_STR(route_for(vh, "/", "x-l", "a", NULL), "none");
    CHECK_STR(route_for(vh, "/", "x-1", "1", "x-2", "2", NULL), "both");
    CHECK_STR(route_for(vh, "/", "x-1", "1", NULL), "none");
    mp_route_table_free(t);
}

static void test_pseudo_headers(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    mp_route_t *r = add_route(vh, MP_PATH_PREFIX, "/", "post");
    set_str(&add_header(r, ":method", MP_HDR_STRING)->str, MP_STR_EXACT, "POST", false);
    r = add_route(vh, MP_PATH_PREFIX, "/", "path");
    set_str(&add_header(r, ":path", MP_HDR_STRING)->str, MP_STR_SUFFIX, "?debug", false);
    r = add_route(vh, MP_PATH_PREFIX, "/", "authority");
    set_str(&add_header(r, ":authority", MP_HDR_STRING)->str, MP_STR_PREFIX, "api.", false);
    r = add_route(vh, MP_PATH_PREFIX, "/", "scheme");
    set_str(&add_header(r, ":scheme", MP_HDR_STRING)->str, MP_STR_EXACT, "https", false);
    add_route(vh, MP_PATH_PREFIX, "/", "none");

    mp_http_msg_t *req = req_new("POST", "h", "/");
    CHECK_STR(mp_route_find(vh, req)->name, "post");
    free(req->method);
    req->method = mp_xstrdup("GET");
    free(req->path);
    req->path = mp_xstrdup("/x?debug"); /* :path includes the query */
    CHECK_STR(mp_route_find(vh, req)->name, "path");
    free(req->path);
    req->path = mp_xstrdup("/x");
    free(req->authority);
    req->authority = mp_xstrdup("api.example");
    CHECK_STR(mp_route_find(vh, req)->name, "authority");
    free(req->authority);
    req->authority = NULL; /* HTTP/1 without a parsed authority: Host stands in */
    mp_headers_add_cstr(&req->headers, "host", "api.x");
    CHECK_STR(mp_route_find(vh, req)->name, "authority");
    mp_headers_remove(&req->headers, "host");
    free(req->scheme);
    req->scheme = mp_xstrdup("https");
    CHECK_STR(mp_route_find(vh, req)->name, "scheme");
    req_free(req);
    mp_route_table_free(t);
}

/* ---- query parameters ---- */

static void test_query_parameters(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    mp_query_matcher_t *qm = add_query(add_route(vh, MP_PATH_PREFIX, "/s", "string"), "debug");
    qm->has_string = true;
    set_str(&qm->str, MP_STR_EXACT, "true", true);
    add_query(add_route(vh, MP_PATH_PREFIX, "/p", "present"), "flag")->present = true;
    qm = add_query(add_route(vh, MP_PATH_PREFIX, "/raw", "raw"), "q");
    qm->has_string = true;
    set_str(&qm->str, MP_STR_EXACT, "a%20b", false);
    add_route(vh, MP_PATH_PREFIX, "/", "none");

    CHECK_STR(route_for(vh, "/s?debug=true", NULL), "string");
    CHECK_STR(route_for(vh, "/s?x=1&debug=TRUE&y", NULL), "string");
    CHECK_STR(route_for(vh, "/s?debug=false", NULL), "none");
    CHECK_STR(route_for(vh, "/s?debug=true2", NULL), "none");
    CHECK_STR(route_for(vh, "/s?xdebug=true", NULL), "none");
    CHECK_STR(route_for(vh, "/s?debug=false&debug=true", NULL), "none"); /* first value counts */
    CHECK_STR(route_for(vh, "/s", NULL), "none");
    CHECK_STR(route_for(vh, "/s?debug=true#frag", NULL), "string");
    CHECK_STR(route_for(vh, "/p?flag", NULL), "present");
    CHECK_STR(route_for(vh, "/p?a=1&flag=", NULL), "present");
    CHECK_STR(route_for(vh, "/p?flags=1", NULL), "none");
    CHECK_STR(route_for(vh, "/p?", NULL), "none");
    CHECK_STR(route_for(vh, "/raw?q=a%20b", NULL), "raw"); /* matched raw, not decoded */
    CHECK_STR(route_for(vh, "/raw?q=a b", NULL), "none");
    mp_route_table_free(t);
}

/* ---- string matcher ---- */

static bool sm(mp_str_match_kind_t kind, const char *v, bool icase, const char *s)
{
    mp_string_matcher_t m;
    set_str(&m, kind, v, icase);
    bool ok = mp_string_matcher_match(&m, s, strlen(s));
    mp_string_matcher_free(&m);
    return ok;
}

static void test_string_matcher(void)
{
    CHECK(sm(MP_STR_EXACT, "AbC", true, "aBc"));
    CHECK(!sm(MP_STR_EXACT, "AbC", false, "aBc"));
    CHECK(sm(MP_STR_EXACT, "", false, ""));
    CHECK(sm(MP_STR_PREFIX, "AB", true, "abc"));
    CHECK(!sm(MP_STR_PREFIX, "AB", false, "abc"));
    CHECK(!sm(MP_STR_PREFIX, "abcd", false, "abc"));
    CHECK(sm(MP_STR_SUFFIX, "BC", true, "abc"));
    CHECK(!sm(MP_STR_SUFFIX, "BC", false, "abc"));
    CHECK(sm(MP_STR_CONTAINS, "B", true, "abc"));
    CHECK(!sm(MP_STR_CONTAINS, "B", false, "abc"));
    CHECK(sm(MP_STR_CONTAINS, "", false, ""));
    CHECK(!sm(MP_STR_CONTAINS, "abcd", true, "abc"));
    CHECK(sm(MP_STR_REGEX, "a.c", false, "abc"));
    CHECK(!sm(MP_STR_REGEX, "A.C", true, "abc")); /* ignore_case does not apply to regex */
    CHECK(sm(MP_STR_REGEX, "(?i)A.C", false, "abc"));
    mp_string_matcher_t m;
    set_str(&m, MP_STR_EXACT, "ab", false);
    CHECK(mp_string_matcher_match(&m, "abc", 2)); /* length-counted */
    mp_string_matcher_free(&m);
}

/* ---- cluster choice ---- */

static void add_weighted(mp_route_t *r, const char *name, uint32_t w)
{
    r->weighted = mp_xrealloc(r->weighted, (r->n_weighted + 1) * sizeof(*r->weighted));
    mp_weighted_cluster_t *wc = &r->weighted[r->n_weighted++];
    memset(wc, 0, sizeof(*wc));
    wc->name = mp_xstrdup(name);
    wc->weight = w;
    r->total_weight += w;
    add_op(&wc->request_headers, "x-wc", name, MP_OVERWRITE_IF_EXISTS_OR_ADD, false);
}

static void test_cluster_name(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    mp_route_t *plain = add_route(vh, MP_PATH_PREFIX, "/", "c1");
    mp_route_t *hdr = add_route(vh, MP_PATH_PREFIX, "/", "h");
    free(hdr->cluster_name);
    hdr->cluster_name = NULL;
    hdr->cluster_header = mp_xstrdup("x-cluster");
    mp_route_t *redir = add_route(vh, MP_PATH_PREFIX, "/", "r");
    redir->action = MP_ACTION_REDIRECT;

    mp_http_msg_t *req = req_new("GET", "h", "/");
    const mp_weighted_cluster_t *wc = (void *)1;
    CHECK_STR(mp_route_cluster_name(plain, req, 7, &wc), "c1");
    CHECK(wc == NULL);
    CHECK(mp_route_cluster_name(hdr, req, 0, NULL) == NULL); /* header absent */
    mp_headers_add_cstr(&req->headers, "x-cluster", "");
    CHECK(mp_route_cluster_name(hdr, req, 0, NULL) == NULL); /* empty: no cluster either */
    mp_headers_remove(&req->headers, "x-cluster");
    mp_headers_add_cstr(&req->headers, "x-cluster", "backend");
    mp_headers_add_cstr(&req->headers, "x-cluster", "other");
    CHECK_STR(mp_route_cluster_name(hdr, req, 0, NULL), "backend"); /* first value */
    CHECK(mp_route_cluster_name(redir, req, 0, NULL) == NULL);
    req_free(req);
    mp_route_table_free(t);
}

static void test_weighted_clusters(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    mp_route_t *r = add_route(vh, MP_PATH_PREFIX, "/", "w");
    free(r->cluster_name);
    r->cluster_name = NULL;
    add_weighted(r, "a", 10);
    add_weighted(r, "b", 30);
    add_weighted(r, "zero", 0);
    add_weighted(r, "c", 60);
    mp_http_msg_t *req = req_new("GET", "h", "/");

    const mp_weighted_cluster_t *wc;
    CHECK_STR(mp_route_cluster_name(r, req, 9, &wc), "a"); /* the walk's boundaries */
    CHECK(wc == &r->weighted[0]);
    CHECK_STR(mp_route_cluster_name(r, req, 10, &wc), "b");
    CHECK_STR(mp_route_cluster_name(r, req, 39, &wc), "b");
    CHECK_STR(mp_route_cluster_name(r, req, 40, &wc), "c");
    CHECK_STR(mp_route_cluster_name(r, req, 100 + 5, &wc), "a"); /* random is taken mod total */

    int count[4] = {0};
    srand(12345);
    for (int i = 0; i < 10000; i++) {
        uint64_t rnd = ((uint64_t)rand() << 31) ^ (uint64_t)rand();
        mp_route_cluster_name(r, req, rnd, &wc);
        count[wc - r->weighted]++;
    }
    /* Expected 1000 / 3000 / 0 / 6000; binomial sd is at most ~50, allow ~4 sd. */
    CHECK(count[0] > 800 && count[0] < 1200);
    CHECK(count[1] > 2800 && count[1] < 3200);
    CHECK_INT(count[2], 0);
    CHECK(count[3] > 5800 && count[3] < 6200);
    req_free(req);
    mp_route_table_free(t);
}

/* ---- rewrites ---- */

static void test_prefix_rewrite(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    add_route(vh, MP_PATH_PREFIX, "/api/", "p")->prefix_rewrite = mp_xstrdup("/v2/");
    mp_route_t *r = add_route(vh, MP_PATH_PREFIX, "/ci", "ci");
    r->case_sensitive = false;
    r->prefix_rewrite = mp_xstrdup("/x");
    add_route(vh, MP_PATH_SEPARATED_PREFIX, "/svc", "s")->prefix_rewrite = mp_xstrdup("/");
    add_route(vh, MP_PATH_EXACT, "/old", "e")->prefix_rewrite = mp_xstrdup("/new");
    add_route(vh, MP_PATH_REGEX, "/r/[0-9]+", "r")->prefix_rewrite = mp_xstrdup("/num");
    add_route(vh, MP_PATH_PREFIX, "/gone", "g")->prefix_rewrite = mp_xstrdup("");
    mp_route_t *pre = &vh->routes[0], *ci = &vh->routes[1], *sep = &vh->routes[2];
    mp_route_t *exact = &vh->routes[3], *re = &vh->routes[4], *all = &vh->routes[5];

    struct {
        mp_route_t *r;
        const char *in, *out;
    } cases[] = {
        {pre, "/api/users?x=1", "/v2/users?x=1"},
        {ci, "/CI/a", "/x/a"},
        {sep, "/svc/items", "//items"}, /* as Envoy: "/svc" -> "/" keeps the next "/" */
        {sep, "/svc?q", "/?q"},
        {exact, "/old?k=v", "/new?k=v"}, /* exact: the whole path is the matched part */
        {re, "/r/12?z", "/num?z"},       /* regex: likewise */
        {all, "/gone", "/"},             /* never an empty path */
    };
    for (size_t i = 0; i < MP_ARRAY_SIZE(cases); i++) {
        mp_http_msg_t *req = req_new("GET", "h", cases[i].in);
        mp_route_rewrite_request(cases[i].r, req);
        CHECK_STR(req->path, cases[i].out);
        req_free(req);
    }
    mp_route_table_free(t);
}

static void test_host_rewrite(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    mp_route_t *r = add_route(vh, MP_PATH_PREFIX, "/", "h");
    r->host_rewrite_literal = mp_xstrdup("internal.svc");
    mp_http_msg_t *req = req_new("GET", "public.com", "/a?b");
    mp_route_rewrite_request(r, req);
    CHECK_STR(req->authority, "internal.svc");
    CHECK(mp_headers_get(&req->headers, "host") == NULL); /* not added when absent */
    CHECK_STR(req->path, "/a?b");
    req_free(req);

    req = req_new("GET", "public.com", "/");
    mp_headers_add_cstr(&req->headers, "host", "public.com");
    mp_route_rewrite_request(r, req);
    CHECK_STR(mp_headers_get(&req->headers, "host")->value, "internal.svc");
    CHECK_INT(mp_headers_count(&req->headers, "host"), 1);
    req_free(req);
    mp_route_table_free(t);
}

/* ---- redirects ---- */

static mp_route_t *add_redirect(mp_vhost_t *vh, mp_path_match_kind_t kind, const char *path)
{
    mp_route_t *r = add_route(vh, kind, path, "redirect");
    r->action = MP_ACTION_REDIRECT;
    r->redirect.response_code = 301;
    return r;
}

static void check_location(const mp_route_t *r, const char *scheme, const char *authority,
                           const char *path, const char *want, int line)
{
    mp_http_msg_t *req = req_new("GET", authority, path);
    free(req->scheme);
    req->scheme = mp_xstrdup(scheme);
    char *loc = mp_route_redirect_location(r, req);
    if (strcmp(loc, want) != 0) {
        fprintf(stderr, "%s:%d: location %s, want %s\n", __FILE__, line, loc, want);
        unit_failed_checks++;
    }
    free(loc);
    req_free(req);
}
#define LOC(r, scheme, auth, path, want) check_location(r, scheme, auth, path, want, __LINE__)

static void test_redirect_location(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    mp_route_t *https = add_redirect(vh, MP_PATH_PREFIX, "/");
    https->redirect.scheme = mp_xstrdup("https");
    LOC(https, "http", "a.com", "/p?q=1", "https://a.com/p?q=1");
    LOC(https, "http", "a.com:80", "/p", "https://a.com/p"); /* old default port dropped */
    LOC(https, "http", "a.com:8080", "/p", "https://a.com:8080/p");
    LOC(https, "http", "[::1]:80", "/", "https://[::1]/");
    LOC(https, "https", "a.com:443", "/", "https://a.com:443/"); /* scheme kept: port kept */

    mp_route_t *hp = add_redirect(vh, MP_PATH_PREFIX, "/");
    hp->redirect.host = mp_xstrdup("b.com");
    hp->redirect.port = 8443;
    LOC(hp, "http", "a.com:80", "/x", "http://b.com:8443/x");
    hp->redirect.port = 80; /* the scheme's default port is not written */
    LOC(hp, "http", "a.com", "/x", "http://b.com/x");

    mp_route_t *port = add_redirect(vh, MP_PATH_PREFIX, "/");
    port->redirect.port = 9000;
    LOC(port, "http", "a.com:8080", "/x", "http://a.com:9000/x");
    LOC(port, "http", "[::1]:8080", "/x", "http://[::1]:9000/x");
    port->redirect.scheme = mp_xstrdup("https");
    port->redirect.port = 443;
    LOC(port, "http", "a.com:8080", "/x", "https://a.com/x");

    mp_route_t *path = add_redirect(vh, MP_PATH_PREFIX, "/");
    path->redirect.path = mp_xstrdup("/new");
    LOC(path, "http", "a.com", "/old?x=1", "http://a.com/new?x=1"); /* request query kept */
    path->redirect.strip_query = true;
    LOC(path, "http", "a.com", "/old?x=1", "http://a.com/new");
    free(path->redirect.path);
    path->redirect.path = mp_xstrdup("/new?y=2"); /* its own query wins, never stripped */
    LOC(path, "http", "a.com", "/old?x=1", "http://a.com/new?y=2");
    free(path->redirect.path);
    path->redirect.path = mp_xstrdup("rel");
    path->redirect.strip_query = false;
    LOC(path, "http", "a.com", "/old", "http://a.com/rel"); /* always starts with "/" */

    mp_route_t *pre = add_redirect(vh, MP_PATH_PREFIX, "/docs/");
    pre->redirect.prefix_rewrite = mp_xstrdup("/help/");
    LOC(pre, "https", "a.com", "/docs/intro?v=1", "https://a.com/help/intro?v=1");
    pre->redirect.strip_query = true;
    LOC(pre, "https", "a.com", "/docs/intro?v=1", "https://a.com/help/intro");

    mp_route_t *keep = add_redirect(vh, MP_PATH_PREFIX, "/");
    LOC(keep, "https", "a.com:8443", "/k?x", "https://a.com:8443/k?x");
    mp_route_table_free(t);
}

/* ---- header mutation ---- */

static const char *hval(const mp_headers_t *h, const char *name)
{
    static char buf[256];
    buf[0] = '\0';
    for (uint32_t i = 0; i < h->n; i++) {
        if (strcmp(h->v[i].name, name) != 0)
            continue;
        if (buf[0] != '\0')
            strcat(buf, "|");
        strcat(buf, h->v[i].value);
    }
    return mp_headers_get(h, name) != NULL ? buf : "(absent)";
}

static void test_header_mutation(void)
{
    mp_header_mutation_t m = {0};
    add_remove(&m, "x-secret");
    add_remove(&m, "x-append");
    add_op(&m, "x-append", "1", MP_APPEND_IF_EXISTS_OR_ADD, false);
    add_op(&m, "x-keep", "new", MP_ADD_IF_ABSENT, false);
    add_op(&m, "x-fresh", "v", MP_ADD_IF_ABSENT, false);
    add_op(&m, "x-over", "o", MP_OVERWRITE_IF_EXISTS_OR_ADD, false);
    add_op(&m, "x-over-new", "o", MP_OVERWRITE_IF_EXISTS_OR_ADD, false);
    add_op(&m, "x-only", "o", MP_OVERWRITE_IF_EXISTS, false);
    add_op(&m, "x-only-missing", "o", MP_OVERWRITE_IF_EXISTS, false);
    add_op(&m, "x-empty", "", MP_APPEND_IF_EXISTS_OR_ADD, false);
    add_op(&m, "x-empty-kept", "", MP_APPEND_IF_EXISTS_OR_ADD, true);
    add_op(&m, "x-multi", "b", MP_APPEND_IF_EXISTS_OR_ADD, false);

    mp_headers_t h;
    mp_headers_init(&h);
    mp_headers_add_cstr(&h, "x-secret", "s");
    mp_headers_add_cstr(&h, "x-append", "old");
    mp_headers_add_cstr(&h, "x-keep", "old");
    mp_headers_add_cstr(&h, "x-over", "1");
    mp_headers_add_cstr(&h, "x-over", "2");
    mp_headers_add_cstr(&h, "x-only", "1");
    mp_headers_add_cstr(&h, "x-multi", "a");
    mp_header_mutation_apply(&m, &h);

    CHECK_STR(hval(&h, "x-secret"), "(absent)");
    CHECK_STR(hval(&h, "x-append"), "1"); /* removed first, then added */
    CHECK_STR(hval(&h, "x-keep"), "old");
    CHECK_STR(hval(&h, "x-fresh"), "v");
    CHECK_STR(hval(&h, "x-over"), "o"); /* both old values replaced by one */
    CHECK_STR(hval(&h, "x-over-new"), "o");
    CHECK_STR(hval(&h, "x-only"), "o");
    CHECK_STR(hval(&h, "x-only-missing"), "(absent)");
    CHECK_STR(hval(&h, "x-empty"), "(absent)");
    CHECK_STR(hval(&h, "x-empty-kept"), "");
    CHECK_STR(hval(&h, "x-multi"), "a|b");
    mp_headers_free(&h);
    mp_header_mutation_free(&m);
    CHECK(m.add == NULL && m.n_add == 0);
    mp_header_mutation_apply(NULL, &h); /* no-op */
}

static void test_header_mutation_decides_before_applying(void)
{
    /* Both ops see the headers as they were after removals: the ADD_IF_ABSENT still adds,
     * because the overwrite of the same name has not happened yet when it decides. */
    mp_header_mutation_t m = {0};
    add_op(&m, "x-a", "set", MP_OVERWRITE_IF_EXISTS_OR_ADD, false);
    add_op(&m, "x-a", "added", MP_ADD_IF_ABSENT, false);
    add_op(&m, "x-b", "1", MP_OVERWRITE_IF_EXISTS_OR_ADD, false);
    add_op(&m, "x-b", "2", MP_OVERWRITE_IF_EXISTS_OR_ADD, false);
    mp_headers_t h;
    mp_headers_init(&h);
    mp_header_mutation_apply(&m, &h);
    CHECK_STR(hval(&h, "x-a"), "set|added");
    CHECK_STR(hval(&h, "x-b"), "2"); /* last overwrite wins */
    mp_headers_free(&h);
    mp_header_mutation_free(&m);

    /* More ops than the on-stack decision array. */
    for (int i = 0; i < 40; i++)
        add_op(&m, "x-many", "v", MP_APPEND_IF_EXISTS_OR_ADD, false);
    mp_headers_init(&h);
    mp_header_mutation_apply(&m, &h);
    CHECK_INT(mp_headers_count(&h, "x-many"), 40);
    mp_headers_free(&h);
    mp_header_mutation_free(&m);
}

/* ---- request kinds: gRPC and CONNECT ---- */

/* Name of the route matched for a request with this method, path (NULL: none, as a CONNECT
 * has) and optional content-type / :protocol. */
static const char *route_kind_for(mp_vhost_t *vh, const char *method, const char *path,
                                  const char *ct, const char *protocol)
{
    static char name[64];
    mp_http_msg_t *req = req_new(method, "h", path ? path : "");
    if (path == NULL) {
        free(req->path);
        req->path = NULL;
    }
    if (ct != NULL)
        mp_headers_add_cstr(&req->headers, "content-type", ct);
    if (protocol != NULL)
        mp_headers_add_cstr(&req->headers, ":protocol", protocol);
    const mp_route_t *r = mp_route_find(vh, req);
    snprintf(name, sizeof(name), "%s", r != NULL ? r->name : "(none)");
    req_free(req);
    return name;
}

static void test_grpc_match(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    add_route(vh, MP_PATH_PREFIX, "/svc", "grpc")->match_grpc = true;
    add_route(vh, MP_PATH_PREFIX, "/", "other");
    /* Only a gRPC content-type takes the gRPC route; everything else falls through to the next. */
    CHECK_STR(route_kind_for(vh, "POST", "/svc/M", "application/grpc", NULL), "grpc");
    CHECK_STR(route_kind_for(vh, "POST", "/svc/M", "application/grpc+proto", NULL), "grpc");
    CHECK_STR(route_kind_for(vh, "POST", "/svc/M", "application/grpc;x=y", NULL), "grpc");
    CHECK_STR(route_kind_for(vh, "POST", "/svc/M", "application/grpc-web", NULL), "other");
    CHECK_STR(route_kind_for(vh, "POST", "/svc/M", "application/json", NULL), "other");
    CHECK_STR(route_kind_for(vh, "POST", "/svc/M", NULL, NULL), "other");
    /* the path still has to match as well */
    CHECK_STR(route_kind_for(vh, "POST", "/x", "application/grpc", NULL), "other");
    /* a non-gRPC route takes gRPC requests too */
    CHECK_STR(route_kind_for(vh, "POST", "/y", "application/grpc", NULL), "other");
    /* the first content-type field decides */
    mp_http_msg_t *req = req_new("POST", "h", "/svc/M");
    mp_headers_add_cstr(&req->headers, "content-type", "text/plain");
    mp_headers_add_cstr(&req->headers, "content-type", "application/grpc");
    CHECK_STR(mp_route_find(vh, req)->name, "other");
    req_free(req);
    mp_route_table_free(t);
}

/* A connect_matcher route as the translator builds it: an empty prefix plus the flag. */
static mp_route_t *add_connect_route(mp_vhost_t *vh, const char *cluster)
{
    mp_route_t *r = add_route(vh, MP_PATH_PREFIX, "", cluster);
    r->connect_matcher = true;
    return r;
}

static void test_connect_match(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    add_route(vh, MP_PATH_PREFIX, "/", "catchall");
    add_connect_route(vh, "tunnel");
    /* CONNECT skips the catch-all prefix route (Envoy: a route that needs :path never takes a
     * CONNECT) and lands on the connect_matcher route listed after it. */
    CHECK_STR(route_kind_for(vh, "CONNECT", NULL, NULL, NULL), "tunnel");
    CHECK_STR(route_kind_for(vh, "CONNECT", "example.com:443", NULL, NULL), "tunnel");
    /* and the connect_matcher route takes nothing else */
    CHECK_STR(route_kind_for(vh, "GET", "/", NULL, NULL), "catchall");
    CHECK_STR(route_kind_for(vh, "POST", "/x", NULL, NULL), "catchall");
    /* Methods are case-sensitive: "connect" is an unknown method, not CONNECT. */
    CHECK_STR(route_kind_for(vh, "connect", "/", NULL, NULL), "catchall");
    /* Extended CONNECT (RFC 8441, :protocol websocket) is an upgrade, routed by its path. */
    CHECK_STR(route_kind_for(vh, "CONNECT", "/chat", NULL, "websocket"), "catchall");
    mp_route_table_free(t);

    /* With no connect_matcher route, a CONNECT matches nothing at all. */
    t = table_new();
    vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    add_route(vh, MP_PATH_PREFIX, "/", "catchall");
    add_route(vh, MP_PATH_REGEX, ".*", "regex");
    CHECK_STR(route_kind_for(vh, "CONNECT", "example.com:443", NULL, NULL), "(none)");
    mp_route_table_free(t);
}

static void test_connect_route_headers_still_apply(void)
{
    mp_route_table_t *t = table_new();
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "*", NULL));
    mp_route_t *r = add_connect_route(vh, "tunnel-a");
    set_str(&add_header(r, ":authority", MP_HDR_STRING)->str, MP_STR_SUFFIX, ":443", false);
    add_connect_route(vh, "tunnel-any");
    mp_http_msg_t *req = req_new("CONNECT", "a.example:443", "");
    free(req->path);
    req->path = NULL;
    CHECK_STR(mp_route_find(vh, req)->name, "tunnel-a");
    free(req->authority);
    req->authority = mp_xstrdup("a.example:80");
    CHECK_STR(mp_route_find(vh, req)->name, "tunnel-any");
    req_free(req);
    mp_route_table_free(t);
}

static void test_free_full_table(void)
{
    /* Every owned field set once, so ASan reports anything mp_route_table_free misses. */
    mp_route_table_t *t = table_new();
    add_op(&t->request_headers, "a", "b", MP_APPEND_IF_EXISTS_OR_ADD, false);
    add_remove(&t->response_headers, "c");
    mp_vhost_t *vh = vhost_at(t, add_vhost(t, "v", "a.com", "*", NULL));
    add_op(&vh->response_headers, "a", "b", MP_APPEND_IF_EXISTS_OR_ADD, false);
    mp_route_t *r = add_route(vh, MP_PATH_PREFIX, "/", "c");
    set_str(&add_header(r, "x", MP_HDR_STRING)->str, MP_STR_REGEX, "a+", false);
    set_str(&add_query(r, "q")->str, MP_STR_EXACT, "v", false);
    add_weighted(r, "w", 1);
    add_op(&r->weighted[0].response_headers, "a", "b", MP_APPEND_IF_EXISTS_OR_ADD, false);
    r->cluster_header = mp_xstrdup("x-c");
    r->prefix_rewrite = mp_xstrdup("/p");
    r->host_rewrite_literal = mp_xstrdup("h");
    r->redirect = (mp_redirect_t){.scheme = mp_xstrdup("https"),
                                  .host = mp_xstrdup("h"),
                                  .path = mp_xstrdup("/p"),
                                  .prefix_rewrite = mp_xstrdup("/q")};
    r->direct_body = mp_xstrdup("body");
    r->upgrades = mp_xcalloc(2, sizeof(*r->upgrades));
    r->upgrades[0] =
        (mp_upgrade_config_t){.upgrade_type = mp_xstrdup("websocket"), .enabled = true};
    r->upgrades[1] =
        (mp_upgrade_config_t){.upgrade_type = mp_xstrdup("connect"), .connect_config = true};
    r->n_upgrades = 2;
    add_op(&r->request_headers, "a", "b", MP_APPEND_IF_EXISTS_OR_ADD, false);
    add_route(vh, MP_PATH_REGEX, "/r", "r");
    mp_route_table_free(t);
    mp_route_table_free(NULL);
    mp_header_mutation_free(NULL);
    mp_string_matcher_free(NULL);
}

int main(void)
{
    RUN(test_domain_precedence);
    RUN(test_domain_ties_and_no_default);
    RUN(test_route_match_uses_host_header);
    RUN(test_path_kinds);
    RUN(test_first_match_wins);
    RUN(test_catastrophic_path_regex);
    RUN(test_header_string_matchers);
    RUN(test_header_present_range_invert_missing);
    RUN(test_header_multi_value_and_all_must_hold);
    RUN(test_pseudo_headers);
    RUN(test_query_parameters);
    RUN(test_string_matcher);
    RUN(test_cluster_name);
    RUN(test_weighted_clusters);
    RUN(test_prefix_rewrite);
    RUN(test_host_rewrite);
    RUN(test_redirect_location);
    RUN(test_header_mutation);
    RUN(test_header_mutation_decides_before_applying);
    RUN(test_grpc_match);
    RUN(test_connect_match);
    RUN(test_connect_route_headers_still_apply);
    RUN(test_free_full_table);
    UNIT_DONE();
}
