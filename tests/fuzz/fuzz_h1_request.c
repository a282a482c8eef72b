/* libFuzzer target: the downstream HTTP/1 request parser, fed in random splits. */
#include "fuzz_h1_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_h1_run(MP_H1_REQUEST, data, size);
}
