/* YAML (libyaml events) -> the cJSON tree the JSON mapping reads, and the JSON/YAML switch for
 * configuration text.  Plain scalars are typed by the YAML 1.2 core schema; quoted ones stay
 * strings.  Anchors are resolved by copying; the total node count is bounded so that aliases of
 * aliases ("billion laughs") cannot blow up memory. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "magpie/json_pb.h"
#include "json_pb_internal.h"

#define YAML_MAX_NODES (1u << 20)

typedef struct anchor {
    char *name;
    cJSON *node; /* a copy owned by this table (see add_anchor) */
    size_t count;
} anchor_t;

typedef struct yctx {
    yaml_parser_t parser;
    mp_err_t *err;
    anchor_t *anchors;
    size_t n_anchors;
    size_t nodes;
    int depth;
} yctx_t;

static cJSON *fail_at(yctx_t *y, const yaml_mark_t *m, const char *msg)
{
    mp_err_set(y->err, "line %zu, column %zu: %s", m->line + 1, m->column + 1, msg);
    return NULL;
}

static int next_event(yctx_t *y, yaml_event_t *ev)
{
    if (yaml_parser_parse(&y->parser, ev))
        return 0;
    const yaml_mark_t *m = &y->parser.problem_mark;
    mp_err_set(y->err, "line %zu, column %zu: %s", m->line + 1, m->column + 1,
               y->parser.problem ? y->parser.problem : "invalid YAML");
    return MP_ERROR;
}

static size_t count_nodes(const cJSON *j)
{
    size_t n = 1;
    for (const cJSON *c = j->child; c != NULL; c = c->next)
        n += count_nodes(c);
    return n;
}

/* ---- scalars (YAML 1.2 core schema) ---- */

static bool is_int(const char *s, int *base)
{
    const char *p = s + (*s == '-' || *s == '+');
    *base = 10;
    if (p == s && p[0] == '0' && (p[1] == 'o' || p[1] == 'x')) {
        *base = p[1] == 'o' ? 8 : 16;
        p += 2;
    }
    if (*p == '\0')
        return false;
    for (; *p; p++) {
        bool ok = *base == 16 ? strchr("0123456789abcdefABCDEF", *p) != NULL
                              : (*p >= '0' && *p <= (*base == 8 ? '7' : '9'));
        if (!ok)
            return false;
    }
    return true;
}

static bool is_float(const char *s)
{
    const char *p = s + (*s == '-' || *s == '+');
    bool digits = false;
    while (*p >= '0' && *p <= '9')
        p++, digits = true;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            digits = true;
    if (!digits)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        p += (*p == '-' || *p == '+');
        if (*p < '0' || *p > '9')
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p == '\0';
}

static cJSON *special_float(const char *s)
{
    const char *p = s + (*s == '-' || *s == '+');
    if (strcmp(p, ".inf") == 0 || strcmp(p, ".Inf") == 0 || strcmp(p, ".INF") == 0)
        return cJSON_CreateString(*s == '-' ? "-Infinity" : "Infinity");
    if (p == s && (strcmp(s, ".nan") == 0 || strcmp(s, ".NaN") == 0 || strcmp(s, ".NAN") == 0))
        return cJSON_CreateString("NaN");
    return NULL;
}

static cJSON *plain_scalar(const char *s)
{
    int base;
    if (*s == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
        strcmp(s, "NULL") == 0)
        return cJSON_CreateNull();
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
        return cJSON_CreateTrue();
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
        return cJSON_CreateFalse();
    if (is_int(s, &base)) {
        const char *digits = base == 10 ? s : s + 2;
        double d = (double)strtoll(digits, NULL, base);
        /* Beyond 2^53 a double loses digits: keep the text, which 64-bit fields accept. */
        if (base == 10 && fabs(d) > 9007199254740992.0)
            return cJSON_CreateString(s);
        return cJSON_CreateNumber(d);
    }
    if (is_float(s))
        return cJSON_CreateNumber(strtod(s, NULL));
    cJSON *f = special_float(s);
    return f ? f : cJSON_CreateString(s);
}

static cJSON *make_scalar(const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    const char *tag = (const char *)ev->data.scalar.tag;
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || (tag && strcmp(tag, YAML_STR_TAG) == 0))
        return cJSON_CreateString(s);
    return plain_scalar(s);
}

/* ---- nodes ---- */

static cJSON *parse_node(yctx_t *y, yaml_event_t *ev);

static void add_anchor(yctx_t *y, const yaml_char_t *name, cJSON *node)
{
    if (name == NULL)
        return;
    y->anchors = mp_xrealloc(y->anchors, (y->n_anchors + 1) * sizeof(*y->anchors));
    /* A copy, not the node itself: the node may be freed before the document ends (a "<<"
     * merge source is, once merged), while aliases to it may still follow. */
    y->anchors[y->n_anchors++] =
        (anchor_t){mp_xstrdup((const char *)name), cJSON_Duplicate(node, 1), count_nodes(node)};
}

static cJSON *resolve_alias(yctx_t *y, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    /* The latest definition wins: YAML lets an anchor be redefined. */
    for (size_t i = y->n_anchors; i-- > 0;) {
        if (strcmp(y->anchors[i].name, name) != 0)
            continue;
        y->nodes += y->anchors[i].count;
        if (y->nodes > YAML_MAX_NODES)
            return fail_at(y, &ev->start_mark, "document too large after alias expansion");
        return cJSON_Duplicate(y->anchors[i].node, 1);
    }
    return fail_at(y, &ev->start_mark, "unknown anchor");
}

/* "<<: *base" merges the aliased mapping's keys that the mapping does not set itself. */
static void merge_keys(cJSON *obj, const cJSON *src)
{
    if (cJSON_IsArray(src)) {
        for (const cJSON *c = src->child; c; c = c->next)
            merge_keys(obj, c);
        return;
    }
    for (const cJSON *c = cJSON_IsObject(src) ? src->child : NULL; c; c = c->next)
        if (!cJSON_HasObjectItem(obj, c->string))
            cJSON_AddItemToObject(obj, c->string, cJSON_Duplicate(c, 1));
}

/* Merge sources are applied when the mapping ends: its own keys win wherever they appear. */
static int add_pair(yctx_t *y, cJSON *obj, cJSON *merges, const yaml_event_t *kev, cJSON *key,
                    cJSON *val)
{
    /* A plain key like 200 or true still names a JSON member: use its text. */
    const char *k = cJSON_IsString(key) ? key->valuestring : (const char *)kev->data.scalar.value;
    if (strcmp(k, "<<") == 0 && kev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        cJSON_AddItemToArray(merges, val);
        return 0;
    }
    if (cJSON_GetObjectItemCaseSensitive(obj, k) != NULL) {
        cJSON_Delete(val);
        return fail_at(y, &kev->start_mark, "duplicate key"), MP_ERROR;
    }
    cJSON_AddItemToObject(obj, k, val);
    return 0;
}

static int parse_pair(yctx_t *y, cJSON *obj, cJSON *merges, yaml_event_t *kev)
{
    if (kev->type != YAML_SCALAR_EVENT)
        return fail_at(y, &kev->start_mark, "mapping key must be a scalar"), MP_ERROR;
    cJSON *key = make_scalar(kev);
    yaml_event_t vev;
    cJSON *val = next_event(y, &vev) == 0 ? parse_node(y, &vev) : NULL;
    int rc = val ? add_pair(y, obj, merges, kev, key, val) : MP_ERROR;
    cJSON_Delete(key);
    return rc;
}

static cJSON *parse_children(yctx_t *y, bool mapping)
{
    cJSON *node = mapping ? cJSON_CreateObject() : cJSON_CreateArray();
    cJSON *merges = cJSON_CreateArray();
    yaml_event_t ev;
    for (;;) {
        if (next_event(y, &ev) < 0)
            break;
        if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            merge_keys(node, merges);
            cJSON_Delete(merges);
            return node;
        }
        int rc = 0;
        if (mapping) {
            rc = parse_pair(y, node, merges, &ev);
            yaml_event_delete(&ev);
        } else {
            cJSON *child = parse_node(y, &ev);
            rc = child ? (cJSON_AddItemToArray(node, child), 0) : MP_ERROR;
        }
        if (rc < 0)
            break;
    }
    cJSON_Delete(merges);
    cJSON_Delete(node);
    return NULL;
}

static cJSON *parse_container(yctx_t *y, const yaml_event_t *ev, bool mapping)
{
    if (++y->depth > MP_JPB_MAX_DEPTH)
        return fail_at(y, &ev->start_mark, "nesting deeper than 64");
    cJSON *node = parse_children(y, mapping);
    y->depth--;
    return node;
}

/* Consumes ev (and the node's other events); returns the node or NULL with the error set. */
static cJSON *parse_node(yctx_t *y, yaml_event_t *ev)
{
    cJSON *node = NULL;
    const yaml_char_t *anchor = NULL;
    if (++y->nodes > YAML_MAX_NODES) {
        fail_at(y, &ev->start_mark, "document has too many nodes");
    } else if (ev->type == YAML_SCALAR_EVENT) {
        node = make_scalar(ev);
        anchor = ev->data.scalar.anchor;
    } else if (ev->type == YAML_SEQUENCE_START_EVENT || ev->type == YAML_MAPPING_START_EVENT) {
        bool mapping = ev->type == YAML_MAPPING_START_EVENT;
        anchor = mapping ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
        node = parse_container(y, ev, mapping);
    } else if (ev->type == YAML_ALIAS_EVENT) {
        node = resolve_alias(y, ev);
    } else {
        fail_at(y, &ev->start_mark, "unexpected YAML event");
    }
    if (node != NULL)
        add_anchor(y, anchor, node);
    yaml_event_delete(ev);
    return node;
}

/* ---- documents ---- */

static int expect_event(yctx_t *y, yaml_event_type_t type, const char *what)
{
    yaml_event_t ev;
    if (next_event(y, &ev) < 0)
        return MP_ERROR;
    int rc = 0;
    if (ev.type != type) {
        fail_at(y, &ev.start_mark, what);
        rc = MP_ERROR;
    }
    yaml_event_delete(&ev);
    return rc;
}

static cJSON *parse_stream(yctx_t *y)
{
    yaml_event_t ev;
    if (expect_event(y, YAML_STREAM_START_EVENT, "expected stream start") < 0 ||
        next_event(y, &ev) < 0)
        return NULL;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        return cJSON_CreateNull(); /* an empty file: every field at its default */
    }
    yaml_event_delete(&ev);
    if (next_event(y, &ev) < 0)
        return NULL;
    cJSON *root = parse_node(y, &ev);
    if (root != NULL &&
        (expect_event(y, YAML_DOCUMENT_END_EVENT, "expected end of document") < 0 ||
         expect_event(y, YAML_STREAM_END_EVENT, "only one YAML document is allowed") < 0)) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

cJSON *mp_yaml_to_json(const char *text, size_t len, mp_err_t *err)
{
    yctx_t y = {.err = err};
    if (!yaml_parser_initialize(&y.parser)) {
        mp_err_set(err, "cannot initialise the YAML parser");
        return NULL;
    }
    yaml_parser_set_input_string(&y.parser, (const unsigned char *)text, len);
    cJSON *root = parse_stream(&y);
    for (size_t i = 0; i < y.n_anchors; i++) {
        free(y.anchors[i].name);
        cJSON_Delete(y.anchors[i].node);
    }
    free(y.anchors);
    yaml_parser_delete(&y.parser);
    return root;
}

static void line_col(const char *text, const char *at, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (const char *p = text; p < at; p++) {
        if (*p == '\n')
            (*line)++, *col = 1;
        else
            (*col)++;
    }
}

static cJSON *parse_json(const char *text, size_t len, mp_err_t *err)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (root != NULL) {
        while (end < text + len && strchr(" \t\r\n", *end) != NULL && *end != '\0')
            end++;
        if (end == text + len)
            return root;
        cJSON_Delete(root);
    }
    size_t line, col;
    if (end == NULL || end < text || end > text + len)
        end = text;
    line_col(text, end, &line, &col);
    mp_err_set(err, "line %zu, column %zu: invalid JSON", line, col);
    return NULL;
}

cJSON *mp_config_text_to_json(const char *text, size_t len, mp_err_t *err)
{
    size_t i = 0;
    while (i < len && strchr(" \t\r\n", text[i]) != NULL && text[i] != '\0')
        i++;
    if (i < len && (text[i] == '{' || text[i] == '['))
        return parse_json(text, len, err);
    return mp_yaml_to_json(text, len, err);
}
