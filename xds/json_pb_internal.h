/* Privates shared by the files of the JSON <-> protobuf mapping (json_pb.c, json_pb_wkt.c,
 * json_pb_out.c).  Not for use outside xds/json_pb*.c. */
#ifndef MAGPIE_JSON_PB_INTERNAL_H
#define MAGPIE_JSON_PB_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <protobuf-c/protobuf-c.h>

#include "magpie/common.h"

/* Inputs come from control planes and files we do not trust: bound the recursion and the size of
 * any one string before doing work proportional to them. */
#define MP_JPB_MAX_DEPTH 64
#define MP_JPB_MAX_STRING (1024 * 1024)

/* State of one conversion: where we are (the JSON path, as written in the input) and how deep. */
typedef struct mp_jpb_ctx {
    mp_err_t *err;
    int depth;
    size_t path_len;
    char path[768];
} mp_jpb_ctx_t;

/* Sets the error as "<path>: <message>".  Returns MP_ERROR. */
/* Bytes one element of a repeated field of type t takes in protobuf-c's array. */
size_t mp_jpb__element_size(ProtobufCType t);

int mp_jpb__fail(mp_jpb_ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Path bookkeeping: push returns the length to restore with pop. */
size_t mp_jpb__push_key(mp_jpb_ctx_t *c, const char *key);
size_t mp_jpb__push_index(mp_jpb_ctx_t *c, int index);
void mp_jpb__pop(mp_jpb_ctx_t *c, size_t len);

/* Depth guard around every descent into an object or array. */
int mp_jpb__enter(mp_jpb_ctx_t *c);
void mp_jpb__leave(mp_jpb_ctx_t *c);

/* A new message of desc, initialised, from protobuf-c's default allocator. */
ProtobufCMessage *mp_jpb__new(const ProtobufCMessageDescriptor *desc);

/* Reads json into msg (already initialised).  ignore_type_key skips "@type" (Any payloads). */
int mp_jpb__read_message(mp_jpb_ctx_t *c, const cJSON *json, ProtobufCMessage *msg,
                         bool ignore_type_key);

/* Reads one value of field f (never repeated) from json into dst. */
int mp_jpb__read_value(mp_jpb_ctx_t *c, const ProtobufCFieldDescriptor *f, const cJSON *json,
                       void *dst);

/* Well-known types with a special JSON form.  read returns 1 when desc is not one of them. */
int mp_jpb__read_wkt(mp_jpb_ctx_t *c, const cJSON *json, ProtobufCMessage *msg);
bool mp_jpb__is_wkt(const ProtobufCMessageDescriptor *desc);
cJSON *mp_jpb__write_message(mp_jpb_ctx_t *c, const ProtobufCMessage *msg);

/* Map entries as protoc-c generates them: a nested "...Entry" message with key = 1, value = 2. */
bool mp_jpb__is_map(const ProtobufCFieldDescriptor *f);

/* Base64 (standard or URL-safe alphabet, padding optional).  decode returns -1 on bad input. */
int mp_jpb__b64_decode(const char *in, size_t len, ProtobufCBinaryData *out);
char *mp_jpb__b64_encode(const uint8_t *data, size_t len);

/* "connect_timeout" -> "connectTimeout" into buf (truncated to size). */
void mp_jpb__camel(const char *snake, char *buf, size_t size);

/* Name of a JSON node's kind for "expected X, got Y" messages. */
const char *mp_jpb__kind(const cJSON *json);

#endif
