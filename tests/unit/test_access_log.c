/* proxy/access_log.c: compiling Envoy format strings and rendering every command. */
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "magpie/access_log.h"
#include "magpie/tls_ident.h"
#include "stubs_buf_http.h"
#include "unit.h"

static mp_http_msg_t req, resp;
static mp_stream_info_t info;

/* A finished request: GET /api?x=1 over HTTP/1.1, 200 after 35 ms, retried once after a
 * connect failure. */
static void setup(void)
{
    memset(&req, 0, sizeof(req));
    memset(&resp, 0, sizeof(resp));
    memset(&info, 0, sizeof(info));
    req.method = "GET";
    req.path = "/api?x=1";
    req.authority = "example.com";
    req.scheme = "http";
    mp_headers_add_cstr(&req.headers, "User-Agent", "curl/8.0");
    mp_headers_add_cstr(&req.headers, "x-request-id", "req-1");
    mp_headers_add_cstr(&req.headers, "x-forwarded-for", "1.2.3.4");
    resp.status = 200;
    mp_headers_add_cstr(&resp.headers, "x-envoy-upstream-service-time", "7");
    mp_headers_add_cstr(&resp.headers, "content-type", "text/plain");
    struct tm tm = {
        .tm_year = 124, .tm_mon = 2, .tm_mday = 5, .tm_hour = 6, .tm_min = 7, .tm_sec = 8};
    info.start_time.tv_sec = timegm(&tm);
    info.start_time.tv_usec = 123456;
    info.start_ns = 1000000000ull;
    info.end_ns = info.start_ns + 35999999ull; /* 35.99 ms: truncated to 35 as Envoy does */
    info.request = &req;
    info.response = &resp;
    info.protocol = MP_HTTP_11;
    info.response_code = 200;
    info.response_flags = MP_RF_UPSTREAM_CONNECT_FAIL | MP_RF_UPSTREAM_RETRY_LIMIT;
    info.bytes_received = 10;
    info.bytes_sent = 20;
    info.upstream_host = "10.0.0.1:80";
    info.upstream_cluster = "backend";
    info.downstream_remote_address = "192.168.1.9:40000";
    info.downstream_local_address = "[::1]:15001";
    info.route_name = "default";
    info.response_code_details = "via_upstream";
}

static void teardown(void)
{
    mp_headers_free(&req.headers);
    mp_headers_free(&resp.headers);
}

/* Compiles fmt, renders the fixed info and returns the line (heap). */
static char *render(const char *fmt)
{
    mp_err_t err = {{0}};
    mp_access_log_format_t *f = mp_access_log_format_compile(fmt, &err);
    if (f == NULL) {
        fprintf(stderr, "compile \"%s\": %s\n", fmt, err.msg);
        return mp_xstrdup("<compile error>");
    }
    mp_buf_t b;
    mp_buf_init(&b);
    mp_access_log_format_render(f, &info, &b);
    char *s = buf_to_str(&b);
    mp_buf_clear(&b);
    mp_access_log_format_free(f);
    return s;
}

#define CHECK_RENDER(fmt, want)                                                                    \
    do {                                                                                           \
        char *got_ = render(fmt);                                                                  \
        CHECK_STR(got_, want);                                                                     \
        free(got_);                                                                                \
    } while (0)

static void test_default_format(void)
{
    setup();
    CHECK_RENDER(mp_access_log_default_format,
                 "[2024-03-05T06:07:08.123Z] \"GET /api?x=1 HTTP/1.1\" 200 UF,URX 10 20 35 7 "
                 "\"1.2.3.4\" \"curl/8.0\" \"req-1\" \"example.com\" \"10.0.0.1:80\"\n");
    /* x-envoy-original-path wins over :path when present. */
    mp_headers_add_cstr(&req.headers, "x-envoy-original-path", "/orig");
    CHECK_RENDER("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/orig");
    teardown();
}

static void test_default_format_bare_request(void)
{
    /* A request that got no response and carried no optional headers: every gap is "-". */
    setup();
    info.response = NULL;
    info.response_code = 0;
    info.response_flags = MP_RF_DOWNSTREAM_CONN_TERM;
    info.upstream_host = NULL;
    info.end_ns = 0;
    info.protocol = MP_HTTP_2;
    mp_headers_free(&req.headers);
    CHECK_RENDER(mp_access_log_default_format,
                 "[2024-03-05T06:07:08.123Z] \"GET /api?x=1 HTTP/2\" 0 DC 10 20 - - \"-\" \"-\" "
                 "\"-\" \"example.com\" \"-\"\n");
    teardown();
}

static void test_every_command(void)
{
    setup();
    CHECK_RENDER("%REQ(:METHOD)% %REQ(:path)% %REQ(:AUTHORITY)% %REQ(HOST)% %REQ(:SCHEME)%",
                 "GET /api?x=1 example.com example.com http");
    CHECK_RENDER("%REQ(USER-AGENT):4%|%REQ(X-MISSING?USER-AGENT):2%|%REQ(X-MISSING)%", "curl|cu|-");
    CHECK_RENDER("%RESP(CONTENT-TYPE)% %RESP(:STATUS)% %RESP(NOPE?CONTENT-TYPE)% %RESP(NOPE)%",
                 "text/plain 200 text/plain -");
    CHECK_RENDER("%PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%",
                 "HTTP/1.1 200 UF,URX via_upstream");
    CHECK_RENDER("%BYTES_RECEIVED% %BYTES_SENT% %DURATION%", "10 20 35");
    CHECK_RENDER("%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %ROUTE_NAME%", "10.0.0.1:80 backend default");
    CHECK_RENDER("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                 "192.168.1.9:40000 192.168.1.9");
    CHECK_RENDER("%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%",
                 "[::1]:15001 ::1");
    CHECK_RENDER("%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%", "192.168.1.9:40000");
    CHECK_RENDER("%REQUEST_DURATION% %RESPONSE_DURATION% %UPSTREAM_TRANSPORT_FAILURE_REASON%",
                 "- - -");
    CHECK_RENDER("100%% done %%%PROTOCOL%%%", "100% done %HTTP/1.1%");
    CHECK_RENDER("plain text, no commands", "plain text, no commands");
    CHECK_RENDER("", "");
    info.protocol = MP_HTTP_10;
    info.route_name = NULL;
    info.upstream_cluster = NULL;
    info.response_code_details = NULL;
    CHECK_RENDER("%PROTOCOL% %ROUTE_NAME% %UPSTREAM_CLUSTER% %RESPONSE_CODE_DETAILS%",
                 "HTTP/1.0 - - -");
    info.request = NULL;
    CHECK_RENDER("%REQ(:METHOD)% %REQ(USER-AGENT)%", "- -");
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    CHECK_RENDER("%HOSTNAME%", host);
    teardown();
}

/* The downstream TLS commands: "-" on a plain connection, the cached facts on a TLS one.  The
 * cache is filled by hand (loaded), so no handshake is needed; its ssl only has to be set. */
static void test_tls_commands(void)
{
    static const char fmt[] = "%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_LOCAL_URI_SAN% "
                              "%DOWNSTREAM_PEER_SUBJECT% %DOWNSTREAM_LOCAL_SUBJECT% "
                              "%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER% "
                              "%DOWNSTREAM_PEER_FINGERPRINT_256% %DOWNSTREAM_PEER_SERIAL% "
                              "%DOWNSTREAM_TLS_SESSION_ID%";
    setup();
    CHECK_RENDER(fmt, "- - - - - - - - -");
    int dummy;
    mp_tls_ident_t id = {.ssl = (SSL *)&dummy,
                         .loaded = true,
                         .version = "TLSv1.3",
                         .cipher = "TLS_AES_128_GCM_SHA256",
                         .local_subject = "CN=server"};
    info.downstream_tls = &id;
    /* TLS without a client certificate: only the session and our own side are known. */
    CHECK_RENDER(fmt, "- - - CN=server TLSv1.3 TLS_AES_128_GCM_SHA256 - - -");
    id.peer_cert = true;
    id.peer_uri_joined = "spiffe://td/ns/a/sa/x,spiffe://td/other";
    id.local_uri_joined = "spiffe://td/ns/b/sa/y";
    id.peer_subject = "CN=client,O=acme";
    memcpy(id.peer_sha256, "ab01", 5);
    id.peer_serial = "1f";
    id.session_id = "00ff";
    CHECK_RENDER(fmt, "spiffe://td/ns/a/sa/x,spiffe://td/other spiffe://td/ns/b/sa/y "
                      "CN=client,O=acme CN=server TLSv1.3 TLS_AES_128_GCM_SHA256 ab01 1f 00ff");
    CHECK_RENDER("%DOWNSTREAM_PEER_URI_SAN:9%", "spiffe://");
    info.downstream_tls = NULL;
    teardown();
}

static void test_start_time_formats(void)
{
    setup();
    CHECK_RENDER("%START_TIME%", "2024-03-05T06:07:08.123Z");
    CHECK_RENDER("%START_TIME()%", "2024-03-05T06:07:08.123Z");
    CHECK_RENDER("%START_TIME(%Y/%m/%d %H:%M:%S)%", "2024/03/05 06:07:08");
    CHECK_RENDER("%START_TIME(%s.%3f)%", "1709618828.123");
    CHECK_RENDER("%START_TIME(%E6S|%f|%1f|%E0S)%", "08.123456|123456000|1|08");
    CHECK_RENDER("%START_TIME(%%f %%E3S)%", "%f %E3S");
    CHECK_RENDER("%START_TIME(%Y):4%", "2024");
    CHECK_RENDER("%START_TIME(%Y):2%", "20");
    teardown();
}

static void test_compile_errors(void)
{
    static const char *const bad[] = {
        "%NOPE%",    "%REQ%",     "%REQ()%",    "%REQ(X?)%", "%PROTOCOL(x)%", "%REQ(X",
        "%REQ(X):%", "%PROTOCOL", "trailing %", "%lower%",   "%REQ(X):12",    "%DURATION:x%",
    };
    for (size_t i = 0; i < MP_ARRAY_SIZE(bad); i++) {
        mp_err_t err = {{0}};
        mp_access_log_format_t *f = mp_access_log_format_compile(bad[i], &err);
        if (f != NULL)
            fprintf(stderr, "accepted bad format \"%s\"\n", bad[i]);
        CHECK(f == NULL);
        CHECK(err.msg[0] != '\0');
        mp_access_log_format_free(f);
    }
}

static void test_write_one_line(void)
{
    setup();
    char path[] = "/tmp/magpie-alog-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    mp_err_t err;
    mp_access_log_t log = {.sink = MP_ALOG_FILE, .path = path, .fd = fd};
    log.format = mp_access_log_format_compile("%RESPONSE_CODE% %UPSTREAM_CLUSTER%\n", &err);
    mp_access_log_write(&log, &info);
    mp_access_log_write(&log, &info);
    char got[64] = {0};
    CHECK_INT(pread(fd, got, sizeof(got) - 1, 0), 24);
    CHECK_STR(got, "200 backend\n200 backend\n");
    mp_access_log_format_free(log.format);
    close(fd);
    unlink(path);
    teardown();
}

static void test_long_line(void)
{
    /* Lines past the builder's inline space move to the heap and stay whole. */
    setup();
    size_t n = 10000;
    char *big = mp_xmalloc(n + 1);
    memset(big, 'a', n);
    big[n] = '\0';
    mp_headers_add_cstr(&req.headers, "x-big", big);
    char *got = render("%REQ(X-BIG)%%REQ(X-BIG)%");
    CHECK_INT(strlen(got), 2 * n);
    free(got);
    free(big);
    teardown();
}

int main(void)
{
    RUN(test_default_format);
    RUN(test_default_format_bare_request);
    RUN(test_every_command);
    RUN(test_start_time_formats);
    RUN(test_tls_commands);
    RUN(test_compile_errors);
    RUN(test_write_one_line);
    RUN(test_long_line);
    UNIT_DONE();
}
