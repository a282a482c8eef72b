/* grpc-timeout parsing, the gRPC content-type test and the HTTP-to-gRPC status mapping. */
#include <stddef.h>
#include <stdio.h>
#include <strings.h>

#include "magpie/common.h"
#include "magpie/grpc.h"

#define GRPC_TIMEOUT_MAX_DIGITS 8
#define GRPC_CT "application/grpc"

/* Nanoseconds per unit; ms = ceil(value * ns_per_unit / 1e6).  Eight digits of hours is about
 * 3.6e14 ms, far inside 64 bits, so the product cannot overflow: the saturation below only guards
 * the contract should the digit limit ever grow. */
static bool unit_ns(char unit, uint64_t *ns)
{
    switch (unit) {
    case 'H':
        *ns = 3600ULL * 1000000000ULL;
        return true;
    case 'M':
        *ns = 60ULL * 1000000000ULL;
        return true;
    case 'S':
        *ns = 1000000000ULL;
        return true;
    case 'm':
        *ns = 1000000ULL;
        return true;
    case 'u':
        *ns = 1000ULL;
        return true;
    case 'n':
        *ns = 1ULL;
        return true;
    default:
        return false;
    }
}

int mp_grpc_timeout_parse(const char *value, uint64_t *ms)
{
    if (value == NULL)
        return MP_ERROR;
    uint64_t v = 0;
    size_t i = 0;
    for (; value[i] >= '0' && value[i] <= '9'; i++) {
        if (i == GRPC_TIMEOUT_MAX_DIGITS)
            return MP_ERROR;
        v = v * 10 + (uint64_t)(value[i] - '0');
    }
    uint64_t ns;
    if (i == 0 || !unit_ns(value[i], &ns) || value[i + 1] != '\0')
        return MP_ERROR;
    if (ns >= 1000000ULL) {
        uint64_t per_ms = ns / 1000000ULL;
        *ms = v > UINT64_MAX / per_ms ? UINT64_MAX : v * per_ms;
    } else {
        /* v * ns < 1e8 * 1e3: no overflow; round up so a tiny deadline is not "no deadline". */
        *ms = (v * ns + 999999ULL) / 1000000ULL;
    }
    return 0;
}

size_t mp_grpc_timeout_format(uint64_t ms, char out[MP_GRPC_TIMEOUT_BUF])
{
    static const struct {
        uint64_t per_unit_ms;
        char unit;
    } units[] = {{1, 'm'}, {1000, 'S'}, {60000, 'M'}, {3600000, 'H'}};
    const uint64_t max_value = 99999999ULL; /* GRPC_TIMEOUT_MAX_DIGITS nines */
    uint64_t v = max_value;
    char unit = 'H';
    for (size_t i = 0; i < MP_ARRAY_SIZE(units); i++) {
        if (ms / units[i].per_unit_ms <= max_value) {
            v = ms / units[i].per_unit_ms;
            unit = units[i].unit;
            break;
        }
    }
    int n = snprintf(out, MP_GRPC_TIMEOUT_BUF, "%llu%c", (unsigned long long)v, unit);
    return (size_t)n;
}

int mp_grpc_status_from_http(int http_status)
{
    switch (http_status) {
    case 400:
        return MP_GRPC_INTERNAL;
    case 401:
        return MP_GRPC_UNAUTHENTICATED;
    case 403:
        return MP_GRPC_PERMISSION_DENIED;
    case 404:
        return MP_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return MP_GRPC_UNAVAILABLE;
    default:
        return MP_GRPC_UNKNOWN;
    }
}

bool mp_grpc_is_grpc_content_type(const char *ct)
{
    if (ct == NULL || strncasecmp(ct, GRPC_CT, sizeof(GRPC_CT) - 1) != 0)
        return false;
    char next = ct[sizeof(GRPC_CT) - 1];
    return next == '\0' || next == '+' || next == ';';
}
