/* JSON -> protobuf-c message, driven by the message descriptors (proto3 JSON mapping).  The
 * special forms of the well-known types live in json_pb_wkt.c, the other direction in
 * json_pb_out.c. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/json_pb.h"
#include "json_pb_internal.h"

int mp_jpb__fail(mp_jpb_ctx_t *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->path_len == 0)
        return mp_err_set(c->err, "%s", msg);
    return mp_err_set(c->err, "%s: %s", c->path, msg);
}

static size_t push_text(mp_jpb_ctx_t *c, const char *text)
{
    /* A path that no longer fits is cut; the message still says what went wrong.  The bounds
     * are spelt out so that the compiler can see them too (GCC's LTO otherwise warns about a
     * huge memcpy on an underflow that the path_len invariant rules out). */
    size_t old = c->path_len < sizeof(c->path) ? c->path_len : sizeof(c->path) - 1;
    size_t n = strlen(text);
    size_t room = sizeof(c->path) - 1 - old;
    if (n > room)
        n = room;
    memcpy(c->path + old, text, n);
    c->path_len = old + n;
    c->path[old + n] = '\0';
    return old;
}

size_t mp_jpb__push_key(mp_jpb_ctx_t *c, const char *key)
{
    size_t old = c->path_len;
    if (old > 0)
        push_text(c, ".");
    push_text(c, key);
    return old;
}

/* A map entry reads as map["key"]: keys such as extension names hold dots, which as path
 * segments would be ambiguous, and the translators name map entries the same way. */
static size_t push_map_key(mp_jpb_ctx_t *c, const char *key)
{
    char *seg = mp_xasprintf("[\"%s\"]", key);
    size_t old = push_text(c, seg);
    free(seg);
    return old;
}

size_t mp_jpb__push_index(mp_jpb_ctx_t *c, int index)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "[%d]", index);
    return push_text(c, buf);
}

void mp_jpb__pop(mp_jpb_ctx_t *c, size_t len)
{
    c->path_len = len;
    c->path[len] = '\0';
}

int mp_jpb__enter(mp_jpb_ctx_t *c)
{
    if (++c->depth > MP_JPB_MAX_DEPTH) {
        c->depth--;
        return mp_jpb__fail(c, "nesting deeper than %d", MP_JPB_MAX_DEPTH);
    }
    return 0;
}

void mp_jpb__leave(mp_jpb_ctx_t *c)
{
    c->depth--;
}

ProtobufCMessage *mp_jpb__new(const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = mp_xmalloc(desc->sizeof_message);
    protobuf_c_message_init(desc, m);
    return m;
}

const char *mp_jpb__kind(const cJSON *json)
{
    if (cJSON_IsObject(json))
        return "object";
    if (cJSON_IsArray(json))
        return "array";
    if (cJSON_IsString(json))
        return "string";
    if (cJSON_IsNumber(json))
        return "number";
    if (cJSON_IsBool(json))
        return "boolean";
    if (cJSON_IsNull(json))
        return "null";
    return "invalid value";
}

void mp_jpb__camel(const char *snake, char *buf, size_t size)
{
    size_t o = 0;
    bool upper = false;
    for (const char *p = snake; *p && o + 1 < size; p++) {
        if (*p == '_') {
            upper = true;
            continue;
        }
        buf[o++] = upper && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
        upper = false;
    }
    buf[o] = '\0';
}

bool mp_jpb__is_map(const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return false;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    size_t n = strlen(e->short_name);
    return n > 5 && strcmp(e->short_name + n - 5, "Entry") == 0 && e->n_fields == 2 &&
           e->fields[0].id == 1 && strcmp(e->fields[0].name, "key") == 0 && e->fields[1].id == 2 &&
           strcmp(e->fields[1].name, "value") == 0;
}

/* ---- base64 ---- */

int mp_jpb__b64_decode(const char *in, size_t len, ProtobufCBinaryData *out)
{
    uint8_t *buf = mp_xmalloc(len * 3 / 4 + 1);
    ssize_t n = mp_base64_decode(in, len, buf, len * 3 / 4 + 1);
    if (n < 0) {
        free(buf);
        return -1;
    }
    out->data = buf;
    out->len = (size_t)n;
    return 0;
}

/* ---- scalars ---- */

static int expect(mp_jpb_ctx_t *c, const cJSON *json, const char *want)
{
    return mp_jpb__fail(c, "expected %s, got %s", want, mp_jpb__kind(json));
}

/* Integers come as JSON numbers or as decimal strings (64-bit values are strings in proto3
 * JSON).  Fractions, exponents in strings and out-of-range values are errors, never truncated. */
static int read_signed(mp_jpb_ctx_t *c, const cJSON *json, int64_t min, int64_t max, int64_t *out)
{
    if (cJSON_IsNumber(json)) {
        double d = json->valuedouble;
        if (!isfinite(d) || d != floor(d))
            return mp_jpb__fail(c, "invalid integer %g", d);
        if (d < (double)min || d >= -(double)INT64_MIN || (int64_t)d > max)
            return mp_jpb__fail(c, "integer %.0f out of range", d);
        *out = (int64_t)d;
        return 0;
    }
    if (!cJSON_IsString(json))
        return expect(c, json, "integer");
    const char *s = json->valuestring;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *s == ' ' || *s == '+' || *end != '\0')
        return mp_jpb__fail(c, "invalid integer \"%.64s\"", s);
    if (errno == ERANGE || v < min || v > max)
        return mp_jpb__fail(c, "integer \"%.64s\" out of range", s);
    *out = v;
    return 0;
}

static int read_unsigned(mp_jpb_ctx_t *c, const cJSON *json, uint64_t max, uint64_t *out)
{
    if (cJSON_IsNumber(json)) {
        double d = json->valuedouble;
        if (!isfinite(d) || d != floor(d))
            return mp_jpb__fail(c, "invalid integer %g", d);
        if (d < 0 || d >= 18446744073709551616.0 || (uint64_t)d > max)
            return mp_jpb__fail(c, "integer %.0f out of range", d);
        *out = (uint64_t)d;
        return 0;
    }
    if (!cJSON_IsString(json))
        return expect(c, json, "integer");
    const char *s = json->valuestring;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9' || *end != '\0')
        return mp_jpb__fail(c, "invalid integer \"%.64s\"", s);
    if (errno == ERANGE || v > max)
        return mp_jpb__fail(c, "integer \"%.64s\" out of range", s);
    *out = v;
    return 0;
}

static int read_double(mp_jpb_ctx_t *c, const cJSON *json, bool is_float, double *out)
{
    double d;
    if (cJSON_IsNumber(json)) {
        d = json->valuedouble;
    } else if (cJSON_IsString(json)) {
        const char *s = json->valuestring;
        char *end;
        if (strcmp(s, "NaN") == 0)
            d = NAN;
        else if (strcmp(s, "Infinity") == 0)
            d = INFINITY;
        else if (strcmp(s, "-Infinity") == 0)
            d = -INFINITY;
        else if (*s == '\0' || (d = strtod(s, &end), *end != '\0') || !isfinite(d))
            return mp_jpb__fail(c, "invalid number \"%.64s\"", s);
    } else {
        return expect(c, json, "number");
    }
    if (is_float && isfinite(d) && fabs(d) > FLT_MAX)
        return mp_jpb__fail(c, "number %g out of range for float", d);
    *out = d;
    return 0;
}

static int read_enum(mp_jpb_ctx_t *c, const ProtobufCEnumDescriptor *ed, const cJSON *json,
                     int *out)
{
    const ProtobufCEnumValue *v = NULL;
    if (cJSON_IsString(json)) {
        v = protobuf_c_enum_descriptor_get_value_by_name(ed, json->valuestring);
        if (v == NULL)
            return mp_jpb__fail(c, "unknown enum value \"%.64s\"", json->valuestring);
    } else if (cJSON_IsNumber(json)) {
        int64_t n;
        if (read_signed(c, json, INT32_MIN, INT32_MAX, &n) < 0)
            return MP_ERROR;
        v = protobuf_c_enum_descriptor_get_value(ed, (int)n);
        if (v == NULL)
            return mp_jpb__fail(c, "unknown enum value %lld", (long long)n);
    } else {
        return expect(c, json, "enum name");
    }
    *out = v->value;
    return 0;
}

static int read_string(mp_jpb_ctx_t *c, const cJSON *json, char **out)
{
    if (!cJSON_IsString(json))
        return expect(c, json, "string");
    size_t n = strlen(json->valuestring);
    if (n > MP_JPB_MAX_STRING)
        return mp_jpb__fail(c, "string longer than %d bytes", MP_JPB_MAX_STRING);
    *out = mp_xstrndup(json->valuestring, n);
    return 0;
}

static int read_bytes(mp_jpb_ctx_t *c, const cJSON *json, ProtobufCBinaryData *out)
{
    if (!cJSON_IsString(json))
        return expect(c, json, "base64 string");
    size_t n = strlen(json->valuestring);
    if (n > MP_JPB_MAX_STRING)
        return mp_jpb__fail(c, "string longer than %d bytes", MP_JPB_MAX_STRING);
    if (mp_jpb__b64_decode(json->valuestring, n, out) < 0)
        return mp_jpb__fail(c, "invalid base64");
    return 0;
}

static int read_integer(mp_jpb_ctx_t *c, ProtobufCType t, const cJSON *json, void *dst)
{
    int64_t s;
    uint64_t u;
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (read_signed(c, json, INT32_MIN, INT32_MAX, &s) < 0)
            return MP_ERROR;
        *(int32_t *)dst = (int32_t)s;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return read_signed(c, json, INT64_MIN, INT64_MAX, (int64_t *)dst);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (read_unsigned(c, json, UINT32_MAX, &u) < 0)
            return MP_ERROR;
        *(uint32_t *)dst = (uint32_t)u;
        return 0;
    default:
        return read_unsigned(c, json, UINT64_MAX, (uint64_t *)dst);
    }
}

static int read_submessage(mp_jpb_ctx_t *c, const ProtobufCMessageDescriptor *desc,
                           const cJSON *json, ProtobufCMessage **dst)
{
    ProtobufCMessage *m = mp_jpb__new(desc);
    if (mp_jpb__read_message(c, json, m, false) < 0) {
        protobuf_c_message_free_unpacked(m, NULL);
        return MP_ERROR;
    }
    *dst = m;
    return 0;
}

int mp_jpb__read_value(mp_jpb_ctx_t *c, const ProtobufCFieldDescriptor *f, const cJSON *json,
                       void *dst)
{
    double d;
    switch (f->type) {
    case PROTOBUF_C_TYPE_FLOAT:
        if (read_double(c, json, true, &d) < 0)
            return MP_ERROR;
        *(float *)dst = (float)d;
        return 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return read_double(c, json, false, (double *)dst);
    case PROTOBUF_C_TYPE_BOOL:
        if (!cJSON_IsBool(json))
            return expect(c, json, "boolean");
        *(protobuf_c_boolean *)dst = cJSON_IsTrue(json);
        return 0;
    case PROTOBUF_C_TYPE_ENUM:
        return read_enum(c, f->descriptor, json, (int *)dst);
    case PROTOBUF_C_TYPE_STRING:
        return read_string(c, json, (char **)dst);
    case PROTOBUF_C_TYPE_BYTES:
        return read_bytes(c, json, (ProtobufCBinaryData *)dst);
    case PROTOBUF_C_TYPE_MESSAGE:
        return read_submessage(c, f->descriptor, json, (ProtobufCMessage **)dst);
    default:
        return read_integer(c, f->type, json, dst);
    }
}

/* ---- repeated fields and maps ---- */

size_t mp_jpb__element_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default:
        return 4;
    }
}

/* The array is allocated for every element up front; the count grows only as elements are
 * read, so a failure half-way leaves a message protobuf_c_message_free_unpacked can free. */
static int read_repeated(mp_jpb_ctx_t *c, const ProtobufCFieldDescriptor *f, const cJSON *json,
                         ProtobufCMessage *msg)
{
    if (!cJSON_IsArray(json))
        return expect(c, json, "array");
    size_t count = (size_t)cJSON_GetArraySize(json), esz = mp_jpb__element_size(f->type);
    size_t *n = (size_t *)((char *)msg + f->quantifier_offset);
    char *arr = mp_xcalloc(count ? count : 1, esz);
    *(void **)((char *)msg + f->offset) = arr;
    int i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, json)
    {
        size_t mark = mp_jpb__push_index(c, i);
        if (cJSON_IsNull(item) && f->type != PROTOBUF_C_TYPE_MESSAGE)
            return mp_jpb__fail(c, "null in a list");
        if (mp_jpb__read_value(c, f, item, arr + (size_t)i * esz) < 0)
            return MP_ERROR;
        mp_jpb__pop(c, mark);
        *n = (size_t)++i;
    }
    return 0;
}

/* Map keys are always JSON strings; they are converted to the key field's type. */
static int read_map_key(mp_jpb_ctx_t *c, const ProtobufCFieldDescriptor *kf, const char *key,
                        void *dst)
{
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
        *(char **)dst = mp_xstrdup(key);
        return 0;
    }
    if (kf->type == PROTOBUF_C_TYPE_BOOL) {
        if (strcmp(key, "true") != 0 && strcmp(key, "false") != 0)
            return mp_jpb__fail(c, "invalid boolean map key");
        *(protobuf_c_boolean *)dst = key[0] == 't';
        return 0;
    }
    cJSON tmp = {.type = cJSON_String, .valuestring = (char *)key};
    return read_integer(c, kf->type, &tmp, dst);
}

static int read_map_entry(mp_jpb_ctx_t *c, const ProtobufCMessageDescriptor *ed, const cJSON *item,
                          ProtobufCMessage **out)
{
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    ProtobufCMessage *e = mp_jpb__new(ed);
    *out = e;
    if (read_map_key(c, kf, item->string, (char *)e + kf->offset) < 0)
        return MP_ERROR;
    bool null_ok = vf->type == PROTOBUF_C_TYPE_MESSAGE &&
                   strcmp(((const ProtobufCMessageDescriptor *)vf->descriptor)->name,
                          "google.protobuf.Value") == 0;
    if (cJSON_IsNull(item) && !null_ok)
        return mp_jpb__fail(c, "null map value");
    return mp_jpb__read_value(c, vf, item, (char *)e + vf->offset);
}

static int read_map(mp_jpb_ctx_t *c, const ProtobufCFieldDescriptor *f, const cJSON *json,
                    ProtobufCMessage *msg)
{
    if (!cJSON_IsObject(json))
        return expect(c, json, "object");
    if (mp_jpb__enter(c) < 0)
        return MP_ERROR;
    size_t count = (size_t)cJSON_GetArraySize(json);
    size_t *n = (size_t *)((char *)msg + f->quantifier_offset);
    ProtobufCMessage **arr = mp_xcalloc(count ? count : 1, sizeof(*arr));
    *(void **)((char *)msg + f->offset) = arr;
    const cJSON *item;
    cJSON_ArrayForEach(item, json)
    {
        size_t mark = push_map_key(c, item->string);
        int rc = read_map_entry(c, f->descriptor, item, &arr[*n]);
        (*n)++;
        if (rc < 0) {
            mp_jpb__leave(c);
            return MP_ERROR;
        }
        mp_jpb__pop(c, mark);
    }
    mp_jpb__leave(c);
    return 0;
}

/* ---- fields of a message ---- */

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *desc,
                                                  const char *key)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, key);
    if (f != NULL)
        return f;
    char camel[128];
    for (unsigned i = 0; i < desc->n_fields; i++) {
        mp_jpb__camel(desc->fields[i].name, camel, sizeof(camel));
        if (strcmp(camel, key) == 0)
            return &desc->fields[i];
    }
    return NULL;
}

static const char *field_name_by_id(const ProtobufCMessageDescriptor *desc, uint32_t id)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(desc, id);
    return f ? f->name : "?";
}

/* Marks presence: the oneof case, or proto3 `optional`'s has_ flag.  Two members of one oneof
 * are a configuration error, as in Envoy. */
static int mark_present(mp_jpb_ctx_t *c, const ProtobufCFieldDescriptor *f, ProtobufCMessage *msg)
{
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *cs = (uint32_t *)((char *)msg + f->quantifier_offset);
        if (*cs != 0 && *cs != f->id)
            return mp_jpb__fail(c, "only one of \"%s\" and \"%s\" may be set",
                                field_name_by_id(msg->descriptor, *cs), f->name);
        *cs = f->id;
        return 0;
    }
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
        f->type != PROTOBUF_C_TYPE_STRING)
        *(protobuf_c_boolean *)((char *)msg + f->quantifier_offset) = 1;
    return 0;
}

static bool null_is_value(const ProtobufCFieldDescriptor *f)
{
    if (f->type == PROTOBUF_C_TYPE_MESSAGE)
        return strcmp(((const ProtobufCMessageDescriptor *)f->descriptor)->name,
                      "google.protobuf.Value") == 0;
    if (f->type == PROTOBUF_C_TYPE_ENUM)
        return strcmp(((const ProtobufCEnumDescriptor *)f->descriptor)->name,
                      "google.protobuf.NullValue") == 0;
    return false;
}

static int read_field(mp_jpb_ctx_t *c, const ProtobufCFieldDescriptor *f, const cJSON *item,
                      ProtobufCMessage *msg)
{
    if (cJSON_IsNull(item) && !(null_is_value(f) && f->label != PROTOBUF_C_LABEL_REPEATED))
        return 0; /* null means "leave at default" */
    if (mp_jpb__is_map(f))
        return read_map(c, f, item, msg);
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return read_repeated(c, f, item, msg);
    if (mark_present(c, f, msg) < 0)
        return MP_ERROR;
    return mp_jpb__read_value(c, f, item, (char *)msg + f->offset);
}

static int read_fields(mp_jpb_ctx_t *c, const cJSON *json, ProtobufCMessage *msg,
                       bool ignore_type_key, uint8_t *seen)
{
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    const cJSON *item;
    cJSON_ArrayForEach(item, json)
    {
        if (ignore_type_key && strcmp(item->string, "@type") == 0)
            continue;
        size_t mark = mp_jpb__push_key(c, item->string);
        const ProtobufCFieldDescriptor *f = find_field(desc, item->string);
        if (f == NULL)
            return mp_jpb__fail(c, "unknown field");
        size_t idx = (size_t)(f - desc->fields);
        if (seen[idx])
            return mp_jpb__fail(c, "field \"%s\" set twice", f->name);
        seen[idx] = 1;
        if (read_field(c, f, item, msg) < 0)
            return MP_ERROR;
        mp_jpb__pop(c, mark);
    }
    return 0;
}

int mp_jpb__read_message(mp_jpb_ctx_t *c, const cJSON *json, ProtobufCMessage *msg,
                         bool ignore_type_key)
{
    int rc = mp_jpb__read_wkt(c, json, msg);
    if (rc <= 0)
        return rc;
    if (!cJSON_IsObject(json))
        return expect(c, json, "object");
    if (mp_jpb__enter(c) < 0)
        return MP_ERROR;
    uint8_t *seen = mp_xcalloc(msg->descriptor->n_fields + 1, 1);
    rc = read_fields(c, json, msg, ignore_type_key, seen);
    free(seen);
    mp_jpb__leave(c);
    return rc;
}

ProtobufCMessage *mp_json_to_pb(const ProtobufCMessageDescriptor *desc, const cJSON *json,
                                mp_err_t *err)
{
    mp_jpb_ctx_t c = {.err = err};
    ProtobufCMessage *m = mp_jpb__new(desc);
    if (mp_jpb__read_message(&c, json, m, false) < 0) {
        protobuf_c_message_free_unpacked(m, NULL);
        return NULL;
    }
    return m;
}
