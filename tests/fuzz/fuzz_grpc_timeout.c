/* libFuzzer target: mp_grpc_timeout_parse, which reads the grpc-timeout header of requests off
 * the network.  Beyond "no crash", it checks the contract: an accepted value is 1 to 8 digits and
 * one unit letter, the result is within what eight digits of hours can give, and a failed parse
 * leaves the output alone. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/grpc.h"

static int well_formed(const char *s, size_t n)
{
    if (n < 2 || n > 9 || strchr("HMSmun", s[n - 1]) == NULL)
        return 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size > 64)
        return 0;
    char *v = malloc(size + 1);
    memcpy(v, data, size);
    v[size] = '\0';
    size_t n = strlen(v); /* the header value ends at the first NUL, as a C string does */
    uint64_t ms = 12345;
    int rc = mp_grpc_timeout_parse(v, &ms);
    if (rc == 0 && (!well_formed(v, n) || ms > 99999999ULL * 3600000ULL))
        abort();
    if (rc != 0 && (well_formed(v, n) || ms != 12345))
        abort();
    free(v);
    return 0;
}
