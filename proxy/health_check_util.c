/* Active health checking: the pieces with no I/O (config lifetime, status ranges, TCP payload
 * matching, the gRPC health messages).  Any thread. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "magpie/health_check.h"
#include "magpie/route.h"

/* grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING */
#define GRPC_SERVING 1
/* A health response is one small message; anything bigger is not a health server speaking. */
#define GRPC_MAX_MESSAGE 4096

void mp_health_check_init(mp_health_check_t *hc)
{
    memset(hc, 0, sizeof(*hc));
    hc->reuse_connection = true;
    hc->event_log_fd = -1;
}

static void health_check_clear(mp_health_check_t *hc)
{
    free(hc->host);
    free(hc->path);
    free(hc->statuses);
    mp_header_mutation_free(&hc->headers);
    free(hc->send.data);
    for (uint32_t i = 0; i < hc->n_receive; i++)
        free(hc->receive[i].data);
    free(hc->receive);
    free(hc->service_name);
    free(hc->authority);
    if (hc->event_log_fd >= 0)
        close(hc->event_log_fd);
}

void mp_health_checks_free(mp_health_checks_t *hcs)
{
    if (hcs == NULL)
        return;
    for (uint32_t i = 0; i < hcs->n; i++)
        health_check_clear(&hcs->v[i]);
    free(hcs->v);
    free(hcs);
}

bool mp_hc_status_expected(const mp_health_check_t *hc, int status)
{
    for (uint32_t i = 0; i < hc->n_statuses; i++)
        if (status >= hc->statuses[i][0] && status < hc->statuses[i][1])
            return true;
    return false;
}

bool mp_hc_tcp_match(const mp_health_check_t *hc, const uint8_t *buf, size_t len)
{
    size_t at = 0;
    for (uint32_t i = 0; i < hc->n_receive; i++) {
        const mp_hc_payload_t *p = &hc->receive[i];
        if (p->len == 0)
            continue;
        if (len - at < p->len)
            return false;
        const uint8_t *hit = memmem(buf + at, len - at, p->data, p->len);
        if (hit == NULL)
            return false;
        at = (size_t)(hit - buf) + p->len;
    }
    return true;
}

uint8_t *mp_hc_hex_decode(const char *hex, uint32_t *len)
{
    size_t n = hex ? strlen(hex) : 0;
    if (n % 2 != 0 || n / 2 > UINT32_MAX)
        return NULL;
    uint8_t *out = mp_xmalloc(n / 2 + 1);
    for (size_t i = 0; i < n; i += 2) {
        int hi = mp_hex_digit(hex[i]), lo = mp_hex_digit(hex[i + 1]);
        if (hi < 0 || lo < 0) {
            free(out);
            return NULL;
        }
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    *len = (uint32_t)(n / 2);
    return out;
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v != 0);
    return n;
}

/* HealthCheckRequest { string service = 1; }, behind the gRPC prefix (uncompressed, length). */
uint8_t *mp_hc_grpc_request(const char *service, size_t *len)
{
    size_t slen = strlen(service);
    uint8_t *out = mp_xmalloc(5 + 1 + 10 + slen);
    size_t m = 0;
    if (slen > 0) {
        out[5] = 0x0a; /* field 1, length-delimited */
        m = 1 + put_varint(out + 6, slen);
        memcpy(out + 5 + m, service, slen);
        m += slen;
    }
    out[0] = 0;
    out[1] = (uint8_t)(m >> 24);
    out[2] = (uint8_t)(m >> 16);
    out[3] = (uint8_t)(m >> 8);
    out[4] = (uint8_t)m;
    *len = 5 + m;
    return out;
}

/* Reads a varint at *p (< end); MP_ERROR when truncated or longer than 10 bytes. */
static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (*p >= end)
            return MP_ERROR;
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0)
            return 0;
    }
    return MP_ERROR;
}

/* Skips one field of wire type wt; MP_ERROR when it runs past end or the type is unknown. */
static int skip_field(const uint8_t **p, const uint8_t *end, unsigned wt)
{
    uint64_t v;
    switch (wt) {
    case 0:
        return get_varint(p, end, &v);
    case 1:
        v = 8;
        break;
    case 2:
        if (get_varint(p, end, &v) != 0)
            return MP_ERROR;
        break;
    case 5:
        v = 4;
        break;
    default:
        return MP_ERROR;
    }
    if (v > (uint64_t)(end - *p))
        return MP_ERROR;
    *p += v;
    return 0;
}

/* HealthCheckResponse { ServingStatus status = 1; }: the last status wins, as protobuf says. */
static int decode_response(const uint8_t *p, const uint8_t *end, bool *serving)
{
    uint64_t status = 0, key;
    while (p < end) {
        if (get_varint(&p, end, &key) != 0 || key >> 3 == 0)
            return MP_ERROR;
        if (key == 0x08) {
            if (get_varint(&p, end, &status) != 0)
                return MP_ERROR;
        } else if (skip_field(&p, end, key & 7) != 0) {
            return MP_ERROR;
        }
    }
    *serving = status == GRPC_SERVING;
    return 0;
}

int mp_hc_grpc_response(const uint8_t *buf, size_t len, bool *serving)
{
    *serving = false;
    if (len < 5)
        return MP_AGAIN;
    uint32_t m = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | buf[4];
    if (buf[0] != 0 || m > GRPC_MAX_MESSAGE)
        return MP_ERROR;
    if (len < 5 + (size_t)m)
        return MP_AGAIN;
    if (len > 5 + (size_t)m)
        return MP_ERROR;
    return decode_response(buf + 5, buf + 5 + m, serving);
}
