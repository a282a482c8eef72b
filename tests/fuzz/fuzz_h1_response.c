/* libFuzzer target: the upstream HTTP/1 response parser, fed in random splits. */
#include "fuzz_h1_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_h1_run(MP_H1_RESPONSE, data, size);
}
