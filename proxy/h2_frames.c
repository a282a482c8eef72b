/* Header blocks for the HTTP/2 downstream codec: messages to nghttp2 name/value lists. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h2_internal.h"

static nghttp2_nv nv_of(const char *name, size_t nl, const char *value, size_t vl)
{
    nghttp2_nv nv = {(uint8_t *)name, (uint8_t *)value, nl, vl, NGHTTP2_NV_FLAG_NONE};
    return nv;
}

/* Fields that HTTP/2 forbids (RFC 9113 8.2.2) never reach the encoder, whatever the upstream
 * sent; content-length is written from the message's own framing. */
static bool skip_field(const mp_header_t *f)
{
    if (f->name_len > 0 && f->name[0] == ':')
        return true;
    return mp_http_is_connection_specific(f->name, f->name_len) ||
           strcmp(f->name, "content-length") == 0 || strcmp(f->name, "host") == 0 ||
           strcmp(f->name, "te") == 0;
}

/* nv holds room for fields->n + 2; status and length are rendered into the caller's buffers. */
static size_t build_nva(nghttp2_nv *nv, const mp_http_msg_t *msg, const mp_headers_t *fields,
                        char status[4], char length[24])
{
    size_t n = 0;
    if (msg != NULL) {
        snprintf(status, 4, "%03d", msg->status % 1000);
        nv[n++] = nv_of(":status", 7, status, 3);
    }
    for (uint32_t i = 0; i < fields->n; i++) {
        const mp_header_t *f = &fields->v[i];
        if (!skip_field(f))
            nv[n++] = nv_of(f->name, f->name_len, f->value, f->value_len);
    }
    bool bodiless = msg != NULL && (msg->status == 204 || msg->status == 304 || msg->status < 200);
    if (msg != NULL && msg->content_length >= 0 && !bodiless) {
        int len = snprintf(length, 24, "%lld", (long long)msg->content_length);
        nv[n++] = nv_of("content-length", 14, length, (size_t)len);
    }
    return n;
}

/* Most header blocks fit on the stack; nghttp2 copies the fields at submit. */
#define NV_LOCAL 32

static nghttp2_nv *nv_array(nghttp2_nv *local, size_t n)
{
    return n <= NV_LOCAL ? local : mp_xcalloc(n, sizeof(nghttp2_nv));
}

int h2_submit_response(nghttp2_session *ss, int32_t id, const mp_http_msg_t *resp,
                       const nghttp2_data_provider *body)
{
    char status[4], length[24];
    nghttp2_nv local[NV_LOCAL];
    nghttp2_nv *nv = nv_array(local, resp->headers.n + 2);
    size_t n = build_nva(nv, resp, &resp->headers, status, length);
    int rv = nghttp2_submit_response(ss, id, nv, n, body);
    if (nv != local)
        free(nv);
    return rv;
}

int h2_submit_headers(nghttp2_session *ss, int32_t id, const mp_http_msg_t *msg,
                      const mp_headers_t *fields, bool end_stream)
{
    char status[4], length[24];
    nghttp2_nv local[NV_LOCAL];
    nghttp2_nv *nv = nv_array(local, fields->n + 2);
    size_t n = build_nva(nv, msg, fields, status, length);
    uint8_t flags = end_stream ? NGHTTP2_FLAG_END_STREAM : NGHTTP2_FLAG_NONE;
    int rv = nghttp2_submit_headers(ss, flags, id, NULL, nv, n, NULL);
    if (nv != local)
        free(nv);
    return rv;
}

int h2_decode_settings(const char *b64, uint8_t *out, size_t cap)
{
    return (int)mp_base64_decode(b64, strlen(b64), out, cap);
}
