/* libFuzzer target: configuration text (JSON or YAML) -> cJSON -> Bootstrap -> JSON again.
 * Everything allocated is freed, so leaks show up under the fuzzer's leak checker. */
#include <stddef.h>
#include <stdint.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "magpie/json_pb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mp_err_t err;
    cJSON *json = mp_config_text_to_json((const char *)data, size, &err);
    if (json == NULL)
        return 0;
    ProtobufCMessage *msg =
        mp_json_to_pb(&envoy__config__bootstrap__v3__bootstrap__descriptor, json, &err);
    cJSON_Delete(json);
    if (msg == NULL)
        return 0;
    /* The writer must accept whatever the reader produced. */
    cJSON *back = mp_pb_to_json(msg, &err);
    cJSON_Delete(back);
    protobuf_c_message_free_unpacked(msg, NULL);
    return 0;
}
