/* /stats and /stats/prometheus.
 *
 * Prometheus tag extraction follows Envoy's default rules for the stats magpie has (cluster,
 * http, listener, tcp, response codes).  Envoy splits "cluster.<name>.<stat>" at the first dot
 * after "cluster.", which breaks on names that contain dots; magpie first tries the names the
 * current snapshot actually has (longest match wins) and only falls back to Envoy's first-dot rule
 * for stats of names no longer configured. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <pcre2.h>

#include "magpie/admin.h"
#include "magpie/stats.h"

#include "admin_internal.h"

/* ---- /stats ---- */

typedef struct stat_entry {
    const char *name;
    mp_stat_id_t id;
} stat_entry_t;

static int by_name(const void *a, const void *b)
{
    return strcmp(((const stat_entry_t *)a)->name, ((const stat_entry_t *)b)->name);
}

/* All registered stats sorted by name; *n gets the count.  Caller frees. */
static stat_entry_t *sorted_stats(uint32_t *n)
{
    *n = mp_stats_count();
    stat_entry_t *v = mp_xmalloc((*n ? *n : 1) * sizeof(*v));
    for (uint32_t i = 0; i < *n; i++)
        v[i] = (stat_entry_t){mp_stats_name(i), i};
    qsort(v, *n, sizeof(*v), by_name);
    return v;
}

/* The filter is an operator's search, so it is unanchored (Envoy's behaviour), unlike route
 * regexes; the match limit still bounds a pathological pattern. */
static pcre2_code *compile_filter(const char *pattern, mp_admin_reply_t *r)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
    if (re == NULL) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(code, msg, sizeof(msg));
        r->status = 400;
        mp_buf_printf(r->body, "invalid filter regex at offset %zu: %s\n", (size_t)off,
                      (const char *)msg);
    }
    return re;
}

static bool filter_keeps(pcre2_code *re, pcre2_match_data *md, pcre2_match_context *mc,
                         const char *name)
{
    return re == NULL || pcre2_match(re, (PCRE2_SPTR)name, strlen(name), 0, 0, md, mc) >= 0;
}

static void emit_stats(const stat_entry_t *v, uint32_t n, bool json, bool usedonly, pcre2_code *re,
                       mp_buf_t *out)
{
    pcre2_match_data *md = re ? pcre2_match_data_create_from_pattern(re, NULL) : NULL;
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(mc, 100000);
    cJSON *root = json ? cJSON_CreateObject() : NULL;
    cJSON *arr = json ? cJSON_AddArrayToObject(root, "stats") : NULL;
    for (uint32_t i = 0; i < n; i++) {
        int64_t val = mp_stats_value(v[i].id);
        if ((usedonly && val == 0) || !filter_keeps(re, md, mc, v[i].name))
            continue;
        if (!json) {
            mp_buf_printf(out, "%s: %" PRId64 "\n", v[i].name, val);
            continue;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", v[i].name);
        cJSON_AddNumberToObject(o, "value", (double)val);
        cJSON_AddItemToArray(arr, o);
    }
    if (json) {
        mp_admin__json_out(root, out);
    }
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
}

void mp_admin__stats(const char *query, mp_admin_reply_t *r)
{
    char filter[1024], format[16] = "";
    pcre2_code *re = NULL;
    if (mp_admin__query_get(query, "filter", filter, sizeof(filter)) && filter[0]) {
        re = compile_filter(filter, r);
        if (re == NULL)
            return;
    }
    mp_admin__query_get(query, "format", format, sizeof(format));
    bool json = strcmp(format, "json") == 0;
    if (format[0] && !json && strcmp(format, "text") != 0) {
        mp_admin__reply_text(r, 400, "unsupported format; use text or json\n");
        pcre2_code_free(re);
        return;
    }
    uint32_t n;
    stat_entry_t *v = sorted_stats(&n);
    r->status = 200;
    r->content_type = json ? MP_ADMIN_JSON : MP_ADMIN_TEXT;
    emit_stats(v, n, json, mp_admin__query_get(query, "usedonly", NULL, 0), re, r->body);
    free(v);
    pcre2_code_free(re);
}

/* ---- Prometheus ---- */

/* Names the snapshot knows, per stat scope, for splitting dotted stat names. */
typedef struct known_names {
    const char **clusters;
    uint32_t n_clusters;
    const char **prefixes;
    uint32_t n_prefixes;
    char **listeners; /* addresses in stat form, ':' written '_' as Envoy does */
    uint32_t n_listeners;
} known_names_t;

typedef struct sample {
    char *family;
    char *labels; /* "k=\"v\",k2=\"v2\"" or "" */
    int64_t value;
    mp_stat_kind_t kind;
} sample_t;

static char *stat_form_address(const char *text)
{
    char *s = mp_xstrdup(text);
    for (char *p = s; *p; p++)
        *p = *p == ':' ? '_' : *p;
    return s;
}

static void known_names_init(known_names_t *k, const mp_config_t *cfg)
{
    memset(k, 0, sizeof(*k));
    if (cfg == NULL)
        return;
    k->clusters = mp_xcalloc(cfg->n_clusters + 1, sizeof(char *));
    for (uint32_t i = 0; i < cfg->n_clusters; i++)
        k->clusters[k->n_clusters++] = cfg->clusters[i]->name;
    uint32_t n_chains = 0;
    for (uint32_t i = 0; i < cfg->n_listeners; i++)
        n_chains += cfg->listeners[i].n_chains + 1;
    k->prefixes = mp_xcalloc(n_chains + 1, sizeof(char *));
    k->listeners = mp_xcalloc(2 * cfg->n_listeners + 1, sizeof(char *));
    for (uint32_t i = 0; i < cfg->n_listeners; i++) {
        const mp_listener_t *l = &cfg->listeners[i];
        for (uint32_t j = 0; j <= l->n_chains; j++) {
            const mp_filter_chain_t *fc = j < l->n_chains ? &l->chains[j] : l->default_chain;
            if (fc != NULL && fc->hcm && fc->hcm->stat_prefix)
                k->prefixes[k->n_prefixes++] = fc->hcm->stat_prefix;
            if (fc != NULL && fc->tcp_proxy && fc->tcp_proxy->stat_prefix)
                k->prefixes[k->n_prefixes++] = fc->tcp_proxy->stat_prefix;
        }
        /* Both spellings: Envoy's "127.0.0.1_80" and the plain "127.0.0.1:80". */
        k->listeners[k->n_listeners++] = stat_form_address(l->addr.text);
        k->listeners[k->n_listeners++] = mp_xstrdup(l->addr.text);
    }
}

static void known_names_free(known_names_t *k)
{
    for (uint32_t i = 0; i < k->n_listeners; i++)
        free(k->listeners[i]);
    free(k->listeners);
    free(k->clusters);
    free(k->prefixes);
}

/* Length of the longest name in names such that rest starts with "<name>.", or 0. */
static size_t longest_known(const char *rest, const char *const *names, uint32_t n)
{
    size_t best = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t l = strlen(names[i]);
        if (l > best && strncmp(rest, names[i], l) == 0 && rest[l] == '.')
            best = l;
    }
    return best;
}

/* Envoy's fallback for a listener address: the longest run of address characters (v4 form, then
 * v6 form) that a dot follows, as in "0.0.0.0_80.downstream_cx_total".  0 when none. */
static size_t address_run(const char *rest, const char *extra, bool hex)
{
    size_t run = 0;
    while (rest[run] && (isdigit((unsigned char)rest[run]) ||
                         (hex && isxdigit((unsigned char)rest[run])) || strchr(extra, rest[run])))
        run++;
    for (size_t i = run; i > 0; i--) {
        if (rest[i] == '.')
            return i;
    }
    return 0;
}

static size_t address_like(const char *rest)
{
    size_t l = address_run(rest, "_.:", false);
    return l ? l : address_run(rest, "_[]:", true);
}

static void label_append(char **labels, const char *name, const char *value, size_t vlen)
{
    size_t old = *labels ? strlen(*labels) : 0;
    size_t cap = old + strlen(name) + 2 * vlen + 8;
    char *s = mp_xrealloc(*labels, cap);
    size_t o = old;
    if (o)
        s[o++] = ',';
    o += (size_t)sprintf(s + o, "%s=\"", name);
    /* Exposition format escapes: backslash, double quote and line feed. */
    for (size_t i = 0; i < vlen; i++) {
        char c = value[i];
        if (c == '\\' || c == '"' || c == '\n')
            s[o++] = '\\';
        s[o++] = c == '\n' ? 'n' : c;
    }
    s[o++] = '"';
    s[o] = '\0';
    *labels = s;
}

/* "upstream_rq_503" -> code label; "upstream_rq_5xx" -> class label.  Returns the stat's family
 * suffix ("upstream_rq" / "upstream_rq_xx") or NULL when stat is neither. */
static const char *response_code_tag(const char *stat, const char *base, char **labels)
{
    size_t bl = strlen(base);
    if (strncmp(stat, base, bl) != 0 || stat[bl] != '_')
        return NULL;
    const char *c = stat + bl + 1;
    if (strlen(c) != 3 || !isdigit((unsigned char)c[0]))
        return NULL;
    if (isdigit((unsigned char)c[1]) && isdigit((unsigned char)c[2])) {
        label_append(labels, "envoy_response_code", c, 3);
        return "";
    }
    if (c[1] == 'x' && c[2] == 'x') {
        label_append(labels, "envoy_response_code_class", c, 1);
        return "_xx";
    }
    return NULL;
}

static char *family_name(const char *scope, const char *stat, const char *suffix, size_t stat_len)
{
    char *f =
        mp_xasprintf("envoy_%s%s%.*s%s", scope, *scope ? "_" : "", (int)stat_len, stat, suffix);
    for (char *p = f; *p; p++) {
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == ':'))
            *p = '_';
    }
    return f;
}

/* Splits "<scope>.<name>.<stat>" for the scoped stats; fills *name_len (0: no name found). */
static size_t scoped_name_len(const char *rest, const char *scope, const known_names_t *k)
{
    size_t l = 0;
    if (strcmp(scope, "cluster") == 0)
        l = longest_known(rest, k->clusters, k->n_clusters);
    else if (strcmp(scope, "http") == 0 || strcmp(scope, "tcp") == 0)
        l = longest_known(rest, k->prefixes, k->n_prefixes);
    else
        l = longest_known(rest, (const char *const *)k->listeners, k->n_listeners);
    if (l == 0 && strcmp(scope, "listener") == 0)
        l = address_like(rest);
    if (l == 0 && strchr(rest, '.'))
        l = (size_t)(strchr(rest, '.') - rest); /* Envoy's first-dot rule */
    return l;
}

static const char *const scopes[][2] = {
    {"cluster", "envoy_cluster_name"},
    {"http", "envoy_http_conn_manager_prefix"},
    {"listener", "envoy_listener_address"},
    {"tcp", "envoy_tcp_prefix"},
};

static sample_t extract_tags(const char *name, const known_names_t *k)
{
    sample_t s = {0};
    for (size_t i = 0; i < MP_ARRAY_SIZE(scopes); i++) {
        size_t sl = strlen(scopes[i][0]);
        if (strncmp(name, scopes[i][0], sl) != 0 || name[sl] != '.')
            continue;
        const char *rest = name + sl + 1;
        size_t nl = scoped_name_len(rest, scopes[i][0], k);
        if (nl == 0)
            break;
        const char *stat = rest + nl + 1;
        const char *base = i == 0 ? "upstream_rq" : "downstream_rq";
        const char *suffix = i >= 2 ? NULL : response_code_tag(stat, base, &s.labels);
        label_append(&s.labels, scopes[i][1], rest, nl);
        s.family = suffix ? family_name(scopes[i][0], base, suffix, strlen(base))
                          : family_name(scopes[i][0], stat, "", strlen(stat));
        return s;
    }
    s.family = family_name("", name, "", strlen(name));
    s.labels = mp_xstrdup("");
    return s;
}

static int by_family(const void *a, const void *b)
{
    const sample_t *x = a, *y = b;
    int c = strcmp(x->family, y->family);
    if (c == 0)
        c = (int)x->kind - (int)y->kind;
    return c ? c : strcmp(x->labels, y->labels);
}

static void emit_samples(sample_t *v, uint32_t n, mp_buf_t *out)
{
    const char *family = NULL;
    mp_stat_kind_t kind = MP_STAT_COUNTER;
    for (uint32_t i = 0; i < n; i++) {
        if (family == NULL || strcmp(family, v[i].family) != 0) {
            family = v[i].family;
            kind = v[i].kind;
            mp_buf_printf(out, "# TYPE %s %s\n", family,
                          kind == MP_STAT_GAUGE ? "gauge" : "counter");
        } else if (v[i].kind != kind) {
            continue; /* a gauge and a counter mapped to one family: one TYPE line only */
        }
        if (v[i].labels[0])
            mp_buf_printf(out, "%s{%s} %" PRId64 "\n", family, v[i].labels, v[i].value);
        else
            mp_buf_printf(out, "%s %" PRId64 "\n", family, v[i].value);
    }
}

void mp_admin__prometheus(const mp_config_t *cfg, mp_buf_t *out)
{
    known_names_t k;
    known_names_init(&k, cfg);
    uint32_t n = mp_stats_count();
    sample_t *v = mp_xcalloc(n ? n : 1, sizeof(*v));
    for (uint32_t i = 0; i < n; i++) {
        v[i] = extract_tags(mp_stats_name(i), &k);
        v[i].kind = mp_stats_kind(i);
        v[i].value = mp_stats_value(i);
    }
    /* Samples of one family must be contiguous under a single TYPE line. */
    qsort(v, n, sizeof(*v), by_family);
    emit_samples(v, n, out);
    for (uint32_t i = 0; i < n; i++) {
        free(v[i].family);
        free(v[i].labels);
    }
    free(v);
    known_names_free(&k);
}
