/* protobuf-c message -> proto3 JSON (lowerCamelCase names, defaults omitted, Any with "@type"),
 * as protobuf's own printer writes it.  Used by /config_dump and for TypedStruct. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "magpie/json_pb.h"
#include "json_pb_internal.h"

char *mp_jpb__b64_encode(const uint8_t *data, size_t len)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = mp_xmalloc((len + 2) / 3 * 4 + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < len)
            v |= data[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

/* ---- scalars ---- */

static cJSON *write_double(double d)
{
    /* cJSON would print NaN and infinities as null; proto3 JSON spells them as strings. */
    if (isnan(d))
        return cJSON_CreateString("NaN");
    if (isinf(d))
        return cJSON_CreateString(d > 0 ? "Infinity" : "-Infinity");
    return cJSON_CreateNumber(d);
}

static cJSON *write_enum(const ProtobufCEnumDescriptor *ed, int v)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(ed, v);
    return ev ? cJSON_CreateString(ev->name) : cJSON_CreateNumber(v);
}

static cJSON *write_bytes(const ProtobufCBinaryData *b)
{
    char *s = mp_jpb__b64_encode(b->data, b->len);
    cJSON *j = cJSON_CreateString(s);
    free(s);
    return j;
}

static cJSON *write_int64(ProtobufCType t, const void *p)
{
    char buf[32];
    if (t == PROTOBUF_C_TYPE_UINT64 || t == PROTOBUF_C_TYPE_FIXED64)
        snprintf(buf, sizeof(buf), "%" PRIu64, *(const uint64_t *)p);
    else
        snprintf(buf, sizeof(buf), "%" PRId64, *(const int64_t *)p);
    return cJSON_CreateString(buf);
}

static cJSON *write_value(mp_jpb_ctx_t *c, const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return cJSON_CreateNumber(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return cJSON_CreateNumber(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        return write_double(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return write_double(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return cJSON_CreateBool(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM:
        return write_enum(f->descriptor, *(const int *)p);
    case PROTOBUF_C_TYPE_STRING:
        return cJSON_CreateString(*(char *const *)p ? *(char *const *)p : "");
    case PROTOBUF_C_TYPE_BYTES:
        return write_bytes(p);
    case PROTOBUF_C_TYPE_MESSAGE:
        return mp_jpb__write_message(c, *(ProtobufCMessage *const *)p);
    default:
        return write_int64(f->type, p);
    }
}

/* ---- presence ---- */

static bool scalar_is_zero(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        return *(char *const *)p == NULL || **(char *const *)p == '\0';
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(void *const *)p == NULL;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)p == 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)p == 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return *(const uint64_t *)p == 0;
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)p == 0;
    default:
        return *(const uint32_t *)p == 0;
    }
}

static bool field_present(const ProtobufCFieldDescriptor *f, const ProtobufCMessage *msg)
{
    const char *base = (const char *)msg;
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return *(const size_t *)(base + f->quantifier_offset) > 0;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
        f->type != PROTOBUF_C_TYPE_STRING)
        return *(const protobuf_c_boolean *)(base + f->quantifier_offset);
    return !scalar_is_zero(f, base + f->offset);
}

/* ---- repeated and maps ---- */

static char *map_key_text(const ProtobufCFieldDescriptor *kf, const void *p)
{
    if (kf->type == PROTOBUF_C_TYPE_STRING)
        return mp_xstrdup(*(char *const *)p ? *(char *const *)p : "");
    if (kf->type == PROTOBUF_C_TYPE_BOOL)
        return mp_xstrdup(*(const protobuf_c_boolean *)p ? "true" : "false");
    cJSON *j = write_value(NULL, kf, p);
    char *s = cJSON_IsString(j) ? mp_xstrdup(j->valuestring)
                                : mp_xasprintf("%.0f", cJSON_GetNumberValue(j));
    cJSON_Delete(j);
    return s;
}

static cJSON *write_map(mp_jpb_ctx_t *c, const ProtobufCFieldDescriptor *f, size_t n,
                        ProtobufCMessage *const *entries)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    cJSON *obj = cJSON_CreateObject();
    for (size_t i = 0; i < n; i++) {
        const char *e = (const char *)entries[i];
        cJSON *v = write_value(c, &ed->fields[1], e + ed->fields[1].offset);
        if (v == NULL) {
            cJSON_Delete(obj);
            return NULL;
        }
        char *key = map_key_text(&ed->fields[0], e + ed->fields[0].offset);
        cJSON_AddItemToObject(obj, key, v);
        free(key);
    }
    return obj;
}

static cJSON *write_field(mp_jpb_ctx_t *c, const ProtobufCFieldDescriptor *f,
                          const ProtobufCMessage *msg)
{
    const char *base = (const char *)msg;
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
        return write_value(c, f, base + f->offset);
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    const char *arr = *(char *const *)(base + f->offset);
    if (mp_jpb__is_map(f))
        return write_map(c, f, n, (ProtobufCMessage *const *)arr);
    cJSON *list = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        cJSON *v = write_value(c, f, arr + i * mp_jpb__element_size(f->type));
        if (v == NULL) {
            cJSON_Delete(list);
            return NULL;
        }
        cJSON_AddItemToArray(list, v);
    }
    return list;
}

static int write_fields(mp_jpb_ctx_t *c, const ProtobufCMessage *msg, cJSON *obj)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    char camel[128];
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (!field_present(f, msg))
            continue;
        cJSON *v = write_field(c, f, msg);
        if (v == NULL)
            return MP_ERROR;
        mp_jpb__camel(f->name, camel, sizeof(camel));
        cJSON_AddItemToObject(obj, camel, v);
    }
    return 0;
}

/* ---- well-known types ---- */

static void format_nanos(char *buf, size_t size, int32_t nanos)
{
    if (nanos == 0)
        buf[0] = '\0';
    else if (nanos % 1000000 == 0)
        snprintf(buf, size, ".%03d", nanos / 1000000);
    else if (nanos % 1000 == 0)
        snprintf(buf, size, ".%06d", nanos / 1000);
    else
        snprintf(buf, size, ".%09d", nanos);
}

static cJSON *write_duration(const Google__Protobuf__Duration *d)
{
    char frac[16], buf[64];
    bool neg = d->seconds < 0 || d->nanos < 0;
    int64_t s = d->seconds < 0 ? -d->seconds : d->seconds;
    format_nanos(frac, sizeof(frac), d->nanos < 0 ? -d->nanos : d->nanos);
    snprintf(buf, sizeof(buf), "%s%" PRId64 "%ss", neg ? "-" : "", s, frac);
    return cJSON_CreateString(buf);
}

static cJSON *write_timestamp(const Google__Protobuf__Timestamp *t)
{
    char frac[16], buf[80];
    struct tm tm;
    time_t secs = (time_t)t->seconds;
    if (gmtime_r(&secs, &tm) == NULL)
        return NULL;
    format_nanos(frac, sizeof(frac), t->nanos);
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    return cJSON_CreateString(buf);
}

static cJSON *write_struct_value(mp_jpb_ctx_t *c, const Google__Protobuf__Value *v)
{
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        return write_double(v->number_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        return cJSON_CreateString(v->string_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        return cJSON_CreateBool(v->bool_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        return mp_jpb__write_message(c, &v->struct_value->base);
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
        return mp_jpb__write_message(c, &v->list_value->base);
    default:
        return cJSON_CreateNull();
    }
}

static cJSON *write_struct(mp_jpb_ctx_t *c, const Google__Protobuf__Struct *s)
{
    cJSON *obj = cJSON_CreateObject();
    for (size_t i = 0; i < s->n_fields; i++) {
        const Google__Protobuf__Value *v = s->fields[i]->value;
        cJSON *j = v ? write_struct_value(c, v) : cJSON_CreateNull();
        if (j == NULL) {
            cJSON_Delete(obj);
            return NULL;
        }
        cJSON_AddItemToObject(obj, s->fields[i]->key, j);
    }
    return obj;
}

static cJSON *write_list(mp_jpb_ctx_t *c, const Google__Protobuf__ListValue *l)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < l->n_values; i++) {
        cJSON *j = l->values[i] ? write_struct_value(c, l->values[i]) : cJSON_CreateNull();
        if (j == NULL) {
            cJSON_Delete(arr);
            return NULL;
        }
        cJSON_AddItemToArray(arr, j);
    }
    return arr;
}

static cJSON *write_any_inner(mp_jpb_ctx_t *c, const char *url, const ProtobufCMessage *inner)
{
    cJSON *obj = cJSON_CreateObject();
    cJSON_AddStringToObject(obj, "@type", url);
    if (mp_jpb__is_wkt(inner->descriptor)) {
        cJSON *v = mp_jpb__write_message(c, inner);
        if (v != NULL) {
            cJSON_AddItemToObject(obj, "value", v);
            return obj;
        }
    } else if (write_fields(c, inner, obj) == 0) {
        return obj;
    }
    cJSON_Delete(obj);
    return NULL;
}

static cJSON *write_any(mp_jpb_ctx_t *c, const Google__Protobuf__Any *any)
{
    if (any->type_url == NULL || any->type_url[0] == '\0')
        return cJSON_CreateObject();
    const ProtobufCMessageDescriptor *desc = mp_pb_find_type(any->type_url);
    if (desc == NULL)
        return mp_jpb__fail(c, "unknown type \"%.200s\"", any->type_url), NULL;
    ProtobufCMessage *inner =
        protobuf_c_message_unpack(desc, NULL, any->value.len, any->value.data);
    if (inner == NULL)
        return mp_jpb__fail(c, "malformed %s", desc->name), NULL;
    cJSON *obj = write_any_inner(c, any->type_url, inner);
    protobuf_c_message_free_unpacked(inner, NULL);
    return obj;
}

static cJSON *write_wkt(mp_jpb_ctx_t *c, const ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    if (d == &google__protobuf__duration__descriptor)
        return write_duration((const Google__Protobuf__Duration *)msg);
    if (d == &google__protobuf__timestamp__descriptor)
        return write_timestamp((const Google__Protobuf__Timestamp *)msg);
    if (d == &google__protobuf__struct__descriptor)
        return write_struct(c, (const Google__Protobuf__Struct *)msg);
    if (d == &google__protobuf__value__descriptor)
        return write_struct_value(c, (const Google__Protobuf__Value *)msg);
    if (d == &google__protobuf__list_value__descriptor)
        return write_list(c, (const Google__Protobuf__ListValue *)msg);
    if (d == &google__protobuf__any__descriptor)
        return write_any(c, (const Google__Protobuf__Any *)msg);
    return write_value(c, &d->fields[0], (const char *)msg + d->fields[0].offset);
}

cJSON *mp_jpb__write_message(mp_jpb_ctx_t *c, const ProtobufCMessage *msg)
{
    /* Messages decoded from the wire can nest without bound (Struct in Struct ...). */
    if (mp_jpb__enter(c) < 0)
        return NULL;
    cJSON *out;
    if (mp_jpb__is_wkt(msg->descriptor)) {
        out = write_wkt(c, msg);
    } else {
        out = cJSON_CreateObject();
        if (write_fields(c, msg, out) < 0) {
            cJSON_Delete(out);
            out = NULL;
        }
    }
    mp_jpb__leave(c);
    return out;
}

cJSON *mp_pb_to_json(const ProtobufCMessage *msg, mp_err_t *err)
{
    mp_jpb_ctx_t c = {.err = err};
    return mp_jpb__write_message(&c, msg);
}
