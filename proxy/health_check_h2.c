/* Active health checking over HTTP/2: http_health_check with codec_client_type HTTP2, and
 * grpc_health_check (grpc.health.v1.Health/Check; SERVING passes).  One nghttp2 client session
 * per session's connection, one stream per check.  Main thread. */
#include <stdlib.h>
#include <string.h>

#include "health_check_internal.h"
#include "magpie/log.h"
#include "magpie/route.h"

#define MAX_BODY 4096 /* a health answer; HTTP bodies beyond it are counted, not kept */

static bool is_grpc(const mp_hc_session_t *s)
{
    return s->hc->kind == MP_HC_GRPC;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    mp_hc_session_t *s = ud;
    if (f->hd.stream_id != s->stream_id)
        return 0;
    if (nlen == 7 && memcmp(name, ":status", 7) == 0 && vlen == 3)
        s->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
    else if (nlen == 11 && memcmp(name, "grpc-status", 11) == 0)
        s->grpc_status = vlen == 1 && value[0] >= '0' && value[0] <= '9' ? value[0] - '0' : 99;
    else if (nlen == 16 && memcmp(name, "x-envoy-degraded", 16) == 0)
        s->degraded = true;
    else if (nlen == 35 && memcmp(name, "x-envoy-immediate-health-check-fail", 35) == 0)
        s->immediate_fail = true;
    return 0;
}

static int on_data(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    mp_hc_session_t *s = ud;
    if (id != s->stream_id)
        return 0;
    if (is_grpc(s) && s->resp_len + len > MAX_BODY)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (s->resp_len + len <= MAX_BODY) {
        s->resp_body = mp_xrealloc(s->resp_body, s->resp_len + len);
        memcpy(s->resp_body + s->resp_len, data, len);
    }
    s->resp_len += len;
    return 0;
}

static mp_hc_result_t grpc_verdict(const mp_hc_session_t *s)
{
    if (s->status != 200 || s->grpc_status != 0)
        return MP_HC_FAIL;
    bool serving = false;
    int r = mp_hc_grpc_response(s->resp_body, s->resp_len, &serving);
    if (r != 0)
        return MP_HC_NET_FAIL; /* cut short or malformed */
    return serving ? MP_HC_OK : MP_HC_FAIL;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t code, void *ud)
{
    mp_hc_session_t *s = ud;
    if (id != s->stream_id)
        return 0;
    s->stream_id = 0;
    if (code != NGHTTP2_NO_ERROR || s->status == 0)
        s->verdict = MP_HC_NET_FAIL;
    else if (s->immediate_fail)
        s->verdict = MP_HC_IMMEDIATE;
    else if (is_grpc(s))
        s->verdict = grpc_verdict(s);
    else
        s->verdict = mp_hc_status_expected(s->hc, s->status) ? MP_HC_OK : MP_HC_FAIL;
    return 0;
}

static ssize_t read_body(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    mp_hc_session_t *s = ud;
    size_t n = MP_MIN(len, s->req_len - s->req_off);
    memcpy(buf, s->req_body + s->req_off, n);
    s->req_off += n;
    if (s->req_off == s->req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int session_new(mp_hc_session_t *s)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return MP_ERROR;
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    int rc = nghttp2_session_client_new(&s->h2, cbs, s);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0)
        return MP_ERROR;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    return nghttp2_submit_settings(s->h2, NGHTTP2_FLAG_NONE, iv, 1) == 0 ? 0 : MP_ERROR;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE                 \
    }

static int submit(mp_hc_session_t *s)
{
    const mp_health_check_t *hc = s->hc;
    const mp_cluster_t *c = mp_hc__cluster(s);
    const char *scheme = c->tls ? "https" : "http";
    if (is_grpc(s)) {
        free(s->req_body);
        s->req_body = mp_hc_grpc_request(hc->service_name, &s->req_len);
        s->req_off = 0;
        nghttp2_nv nv[] = {
            NV(":method", "POST"),
            NV(":scheme", scheme),
            NV(":path", "/grpc.health.v1.Health/Check"),
            NV(":authority", hc->authority ? hc->authority : c->name),
            NV("content-type", "application/grpc"),
            NV("te", "trailers"),
            NV("user-agent", "magpie/HC"),
        };
        nghttp2_data_provider prd = {.read_callback = read_body};
        return nghttp2_submit_request(s->h2, NULL, nv, MP_ARRAY_SIZE(nv), &prd, s);
    }
    mp_headers_t h;
    mp_headers_init(&h);
    mp_headers_add_cstr(&h, "user-agent", "magpie/HC");
    mp_header_mutation_apply(&hc->headers, &h);
    nghttp2_nv *nv = mp_xcalloc(4 + h.n, sizeof(*nv));
    nghttp2_nv fixed[] = {NV(":method", "GET"), NV(":scheme", scheme), NV(":path", hc->path),
                          NV(":authority", hc->host ? hc->host : c->name)};
    memcpy(nv, fixed, sizeof(fixed));
    size_t n = 4;
    for (uint32_t i = 0; i < h.n; i++)
        if (h.v[i].name[0] != ':' && strcmp(h.v[i].name, "host") != 0)
            nv[n++] = (nghttp2_nv)NV(h.v[i].name, h.v[i].value);
    int32_t id = nghttp2_submit_request(s->h2, NULL, nv, n, NULL, s);
    free(nv);
    mp_headers_free(&h);
    return id;
}

int mp_hc__h2_pump(mp_hc_session_t *s)
{
    for (int i = 0; i < 64 && nghttp2_session_want_write(s->h2); i++) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(s->h2, &data);
        if (n < 0)
            return MP_ERROR;
        if (n == 0)
            break;
        mp_buf_append(&s->out, data, (size_t)n);
    }
    return 0;
}

int mp_hc__h2_start(mp_hc_session_t *s)
{
    if (s->h2 == NULL && session_new(s) != 0)
        return MP_ERROR;
    s->status = 0;
    s->grpc_status = -1;
    s->resp_len = 0;
    s->degraded = s->immediate_fail = false;
    s->stream_id = submit(s);
    if (s->stream_id < 0)
        return MP_ERROR;
    return mp_hc__h2_pump(s);
}

int mp_hc__h2_feed(mp_hc_session_t *s)
{
    while (mp_buf_len(&s->in) > 0) {
        struct iovec iov = {0};
        mp_buf_peek_iov(&s->in, &iov, 1);
        ssize_t n = nghttp2_session_mem_recv(s->h2, iov.iov_base, iov.iov_len);
        if (n < 0)
            return MP_ERROR;
        mp_buf_consume(&s->in, (size_t)n);
    }
    if (mp_hc__h2_pump(s) != 0)
        return MP_ERROR;
    /* A server that said GOAWAY takes no more streams: open a new connection next time. */
    if (!nghttp2_session_want_read(s->h2) && !nghttp2_session_want_write(s->h2))
        s->close_after = true;
    return 0;
}

void mp_hc__h2_free(mp_hc_session_t *s)
{
    if (s->h2 != NULL)
        nghttp2_session_del(s->h2);
    s->h2 = NULL;
    s->stream_id = 0;
    free(s->req_body);
    s->req_body = NULL;
    free(s->resp_body);
    s->resp_body = NULL;
    s->resp_len = 0;
}
