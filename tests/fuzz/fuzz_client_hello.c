/* libFuzzer target: the tls_inspector's ClientHello parser and the http_inspector's sniffing,
 * which read the first bytes of every connection on a listener with listener filters.  Beyond
 * "no crash, no leak": what they return is a string that fits its field, and a prefix of an input
 * the parser accepted is never "not TLS" (more bytes may only complete a verdict). */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "magpie/inspect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MP_CH_MAX_PEEK)
        return 0;
    mp_client_hello_t ch;
    mp_inspect_result_t r = mp_inspect_client_hello(data, size, &ch);
    if (r == MP_INSPECT_DONE) {
        assert(strlen(ch.sni) < sizeof(ch.sni));
        assert(ch.n_alpn <= MP_CH_MAX_ALPN);
        for (uint32_t i = 0; i < ch.n_alpn; i++)
            assert(ch.alpn[i][0] != '\0' && strlen(ch.alpn[i]) < sizeof(ch.alpn[i]));
        mp_client_hello_t half;
        assert(mp_inspect_client_hello(data, size / 2, &half) != MP_INSPECT_NO ||
               size / 2 >= MP_CH_MAX_PEEK);
    }
    const char *proto = NULL;
    if (mp_inspect_http(data, size, &proto) == MP_INSPECT_DONE)
        assert(proto != NULL);
    return 0;
}
