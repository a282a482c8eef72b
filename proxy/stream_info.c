/* Response flag letters (include/magpie/stream_info.h). */
#include <string.h>

#include "magpie/common.h"
#include "magpie/stream_info.h"

/* Envoy's short codes in Envoy's output order; bit i of the flags is letters[i]. */
static const char *const letters[] = {"UH", "UF",  "UO",  "NR", "URX", "NC", "DC", "UC", "UR", "UT",
                                      "SI", "DPE", "UPE", "LR", "DT",  "DR", "DI", "FI", "RL"};

size_t mp_response_flags_format(uint32_t flags, char *out, size_t cap)
{
    size_t len = 0;
    if (cap == 0)
        return 0;
    out[0] = '\0';
    for (size_t i = 0; i < MP_ARRAY_SIZE(letters); i++) {
        if (!(flags & (1u << i)))
            continue;
        size_t l = strlen(letters[i]);
        size_t need = l + (len ? 1 : 0);
        if (len + need >= cap)
            break; /* truncate at a flag boundary rather than mid-letters */
        if (len)
            out[len++] = ',';
        memcpy(out + len, letters[i], l);
        len += l;
        out[len] = '\0';
    }
    if (len == 0 && cap >= 2) {
        out[0] = '-';
        out[1] = '\0';
        len = 1;
    }
    return len;
}
