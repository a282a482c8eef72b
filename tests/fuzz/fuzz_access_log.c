/* libFuzzer target: access-log format strings, which arrive in configuration (bootstrap today,
 * xDS later).  Any string either compiles or is refused with a message; a compiled one renders
 * for a request with and without a response, and with a (hand-filled) TLS identity. */
#include <stdlib.h>
#include <string.h>

#include "magpie/access_log.h"
#include "magpie/tls_ident.h"

static void render(const mp_access_log_format_t *f, const mp_stream_info_t *info)
{
    mp_buf_t out;
    mp_buf_init(&out);
    mp_access_log_format_render(f, info, &out);
    mp_buf_clear(&out);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *fmt = malloc(size + 1);
    memcpy(fmt, data, size);
    fmt[size] = '\0';
    mp_err_t err = {{0}};
    mp_access_log_format_t *f = mp_access_log_format_compile(fmt, &err);
    if (f == NULL && err.msg[0] == '\0')
        abort(); /* a refusal always says why */
    if (f != NULL) {
        mp_http_msg_t *req = mp_http_msg_new();
        req->method = strdup("GET");
        req->path = strdup("/p?q=1");
        req->authority = strdup("example.com");
        mp_headers_add_cstr(&req->headers, "user-agent", "fuzz");
        mp_stream_info_t info = {.request = req,
                                 .protocol = MP_HTTP_11,
                                 .response_code = 200,
                                 .response_flags = MP_RF_UPSTREAM_TIMEOUT,
                                 .upstream_host = "127.0.0.1:80",
                                 .downstream_remote_address = "[::1]:5000"};
        render(f, &info);
        info.request = NULL;
        render(f, &info);
        /* The TLS commands on a TLS connection: the cache is filled, so no SSL is read. */
        int not_an_ssl;
        mp_tls_ident_t id = {.ssl = (SSL *)&not_an_ssl,
                             .loaded = true,
                             .peer_cert = true,
                             .peer_uri_joined = "spiffe://td/ns/a/sa/b",
                             .version = "TLSv1.3",
                             .peer_sha256 = "00ff"};
        info.downstream_tls = &id;
        render(f, &info);
        mp_http_msg_free(req);
        mp_access_log_format_free(f);
    }
    free(fmt);
    return 0;
}
