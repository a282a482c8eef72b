/* The proto3 JSON mapping, driven by protoc-c descriptors (DESIGN.md, "One schema"), and YAML
 * read into the same cJSON tree.  Any type generated from xds/proto/ (and the well-known types)
 * can be read and written; Any is resolved through the generated registry by its "@type".
 *
 * Input rules: keys in snake_case or lowerCamelCase; enums by name or number; 64-bit integers as
 * strings or numbers; Duration "1.5s"; Timestamp RFC 3339; wrappers as bare values; Struct/Value
 * as any JSON; bytes as base64; null = default.  An unknown field, a wrong type, a bad enum name or
 * a bad duration fails with the JSON path of the field, e.g.
 *   static_resources.clusters[1].connect_timeout: invalid duration "5x"
 * Any thread; no global state besides the read-only registry. */
#ifndef MAGPIE_JSON_PB_H
#define MAGPIE_JSON_PB_H

#include <stddef.h>

#include <cjson/cJSON.h>
#include <protobuf-c/protobuf-c.h>

#include "magpie/common.h"

/* JSON -> message.  Returns a message allocated with protobuf-c's default allocator (free it
 * with protobuf_c_message_free_unpacked), or NULL with err set. */
ProtobufCMessage *mp_json_to_pb(const ProtobufCMessageDescriptor *desc, const cJSON *json,
                                mp_err_t *err);

/* Message -> JSON (lowerCamelCase names as protobuf's JSON printer writes them; fields at their
 * default are omitted).  The caller owns the tree (cJSON_Delete).  NULL with err set when an Any
 * holds an unknown type. */
cJSON *mp_pb_to_json(const ProtobufCMessage *msg, mp_err_t *err);

/* YAML text -> the same JSON tree (scalars typed as YAML 1.2 core schema: true/false, null, ints,
 * floats; quoted scalars stay strings).  One document; anchors and aliases resolved.  NULL with
 * err ("line 3, column 5: ...") on bad YAML. */
cJSON *mp_yaml_to_json(const char *text, size_t len, mp_err_t *err);

/* Parses text as JSON when its first non-space byte is '{' or '[', else as YAML. */
cJSON *mp_config_text_to_json(const char *text, size_t len, mp_err_t *err);

/* Descriptor of a message type by full name ("envoy.config.cluster.v3.Cluster") or type URL
 * ("type.googleapis.com/envoy.config.cluster.v3.Cluster"); NULL when magpie does not know it. */
const ProtobufCMessageDescriptor *mp_pb_find_type(const char *name_or_url);

/* Unpacks an Any (a google.protobuf.Any message) into a new message of its type; when expected
 * is non-NULL the type must be that one (or a TypedStruct wrapping it).  NULL with err set. */
ProtobufCMessage *mp_pb_any_unpack(const ProtobufCMessage *any,
                                   const ProtobufCMessageDescriptor *expected, mp_err_t *err);

#endif
