/* HTTP/1.1 head and chunk encoders (include/magpie/h1.h).
 *
 * The encoder owns the framing: Content-Length and Transfer-Encoding fields stored in the message
 * are skipped and written from msg->content_length / body_chunked instead, so that a message that
 * crossed from another codec can never carry two contradicting lengths. */
#include <inttypes.h>
#include <string.h>

#include "magpie/common.h"
#include "magpie/h1.h"

static bool is_framing(const mp_header_t *f)
{
    return (f->name_len == 14 && memcmp(f->name, "content-length", 14) == 0) ||
           (f->name_len == 17 && memcmp(f->name, "transfer-encoding", 17) == 0);
}

static void put_field(mp_buf_t *out, const char *name, size_t nlen, const char *v, size_t vlen)
{
    mp_buf_append(out, name, nlen);
    mp_buf_append(out, ": ", 2);
    mp_buf_append(out, v, vlen);
    mp_buf_append(out, "\r\n", 2);
}

static void put_fields(mp_buf_t *out, const mp_headers_t *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        const mp_header_t *f = &h->v[i];
        if (!is_framing(f))
            put_field(out, f->name, f->name_len, f->value, f->value_len);
    }
}

static void put_framing(mp_buf_t *out, const mp_http_msg_t *m, bool body_chunked)
{
    if (body_chunked)
        mp_buf_append_str(out, "transfer-encoding: chunked\r\n");
    else if (m->content_length >= 0) {
        mp_buf_append(out, "content-length: ", 16);
        mp_buf_append_u64(out, (uint64_t)m->content_length);
        mp_buf_append(out, "\r\n", 2);
    }
    mp_buf_append(out, "\r\n", 2);
}

void mp_h1_encode_request_head(mp_buf_t *out, const mp_http_msg_t *req, bool body_chunked)
{
    const char *target = req->path;
    bool connect = req->method != NULL && strcmp(req->method, "CONNECT") == 0;
    if ((connect || target == NULL || target[0] == '\0') && req->authority != NULL)
        target = req->authority;
    mp_buf_append_str(out, req->method ? req->method : "GET");
    mp_buf_append(out, " ", 1);
    mp_buf_append_str(out, target ? target : "/");
    mp_buf_append(out, " HTTP/1.1\r\n", 11);
    /* A head from HTTP/2 carries :authority but no Host; HTTP/1.1 requires Host (RFC 9112 §3.2). */
    if (req->authority != NULL && mp_headers_get(&req->headers, "host") == NULL)
        put_field(out, "host", 4, req->authority, strlen(req->authority));
    put_fields(out, &req->headers);
    put_framing(out, req, body_chunked);
}

void mp_h1_encode_response_head(mp_buf_t *out, const mp_http_msg_t *resp, bool body_chunked)
{
    mp_buf_append(out, "HTTP/1.1 ", 9);
    mp_buf_append_u64(out, (uint64_t)(resp->status > 0 ? resp->status : 0));
    mp_buf_append(out, " ", 1);
    mp_buf_append_str(out, mp_http_reason(resp->status));
    mp_buf_append(out, "\r\n", 2);
    put_fields(out, &resp->headers);
    put_framing(out, resp, body_chunked);
}

void mp_h1_encode_chunk(mp_buf_t *out, mp_buf_t *body, size_t len)
{
    len = MP_MIN(len, mp_buf_len(body));
    if (len == 0)
        return; /* a zero-size chunk would end the body */
    mp_buf_append_hex(out, len);
    mp_buf_append(out, "\r\n", 2);
    mp_buf_move(out, body, len);
    mp_buf_append(out, "\r\n", 2);
}

void mp_h1_encode_last_chunk(mp_buf_t *out, const mp_headers_t *trailers)
{
    mp_buf_append(out, "0\r\n", 3);
    if (trailers != NULL)
        put_fields(out, trailers);
    mp_buf_append(out, "\r\n", 2);
}
