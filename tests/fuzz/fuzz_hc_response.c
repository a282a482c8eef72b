/* libFuzzer target: the active health checker's readers of bytes from upstream hosts — the gRPC
 * health response (mp_hc_grpc_response: a length-prefixed grpc.health.v1.HealthCheckResponse)
 * and the TCP payload matcher (mp_hc_tcp_match).  Beyond "no crash", it checks the contract: a
 * verdict (0) only for a complete uncompressed message of exactly the input's length, and
 * every prefix of a complete message asks for more. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/health_check.h"

static void check_grpc(const uint8_t *data, size_t size)
{
    bool serving = true;
    int rc = mp_hc_grpc_response(data, size, &serving);
    if (rc != 0 && serving)
        abort(); /* no verdict, no SERVING */
    if (rc == 0) {
        if (size < 5 || data[0] != 0)
            abort();
        uint32_t m =
            (uint32_t)data[1] << 24 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 8 | data[4];
        if ((size_t)m + 5 != size)
            abort();
        for (size_t i = 0; i < size; i++)
            if (mp_hc_grpc_response(data, i, &serving) != MP_AGAIN)
                abort();
    } else if (rc != MP_AGAIN && rc != MP_ERROR) {
        abort();
    }
}

/* The first byte splits the input into a receive block and a response. */
static void check_tcp(const uint8_t *data, size_t size)
{
    if (size < 1)
        return;
    size_t k = data[0] % size;
    mp_health_check_t hc;
    mp_health_check_init(&hc);
    mp_hc_payload_t p = {(uint8_t *)data + 1, (uint32_t)(k > 0 ? k - 1 : 0)};
    hc.receive = &p;
    hc.n_receive = 1;
    bool hit = mp_hc_tcp_match(&hc, data + k, size - k);
    if (hit && p.len > 0 && memmem(data + k, size - k, p.data, p.len) == NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size > 8192)
        return 0;
    check_grpc(data, size);
    check_tcp(data, size);
    return 0;
}
