/* libFuzzer target: the HTTP/2 downstream codec end to end.  The input is what a client sends
 * after the connection preface; it reaches magpie over a socketpair and runs through the frame
 * scanner, nghttp2, the stream callbacks, routing and local answers (direct responses and 404s,
 * so that no upstream is involved), and whatever magpie writes back is read and dropped. */
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../proxy/http_internal.h"
#include "magpie/bootstrap.h"
#include "magpie/log.h"
#include "magpie/stats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char config_yaml[] =
    "static_resources:\n"
    "  listeners:\n"
    "  - name: l\n"
    "    address: { socket_address: { address: 127.0.0.1, port_value: 1 } }\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.http_connection_manager\n"
    "        typed_config:\n"
    "          '@type': type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager\n"
    "          stat_prefix: fuzz\n"
    "          codec_type: HTTP2\n"
    "          http2_protocol_options: { max_concurrent_streams: 16 }\n"
    "          route_config:\n"
    "            virtual_hosts:\n"
    "            - name: v\n"
    "              domains: ['*']\n"
    "              routes:\n"
    "              - match: { prefix: /big }\n"
    "                direct_response: { status: 200, body: { inline_string: '"
    "0123456789012345678901234567890123456789012345678901234567890123456789' } }\n"
    "              - match: { prefix: /a }\n"
    "                direct_response: { status: 204 }\n"
    "          http_filters:\n"
    "          - name: envoy.filters.http.router\n"
    "            typed_config: { '@type': type.googleapis.com/envoy.extensions.filters.http."
    "router.v3.Router }\n";

static mp_config_t *config;
static struct ev_loop *loop;

static void setup(void)
{
    mp_log_set_level(MP_LOG_ERROR);
    mp_stats_thread_init();
    mp_options_t opts = {.config_yaml = config_yaml, .concurrency = 1};
    bool used_default = false;
    mp_err_t err;
    config = mp_bootstrap_load(&opts, &used_default, &err);
    if (config == NULL)
        __builtin_trap();
    loop = ev_loop_new(EVFLAG_AUTO);
}

static void drain_peer(int fd)
{
    char sink[65536];
    while (read(fd, sink, sizeof(sink)) > 0) {
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (config == NULL)
        setup();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return 0;
    mp_worker_t *w = mp_worker_new_inline(config, loop);
    mp_h2_accept(w, &config->listeners[0], &config->listeners[0].chains[0], sv[0]);
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    (void)!write(sv[1], preface, sizeof(preface) - 1);
    /* In slices, so that frames cross read boundaries as they do on a real socket. */
    for (size_t off = 0; off < size;) {
        size_t n = size - off < 4096 ? size - off : 4096;
        ssize_t wrote = write(sv[1], data + off, n);
        if (wrote > 0)
            off += (size_t)wrote;
        ev_run(loop, EVRUN_NOWAIT);
        drain_peer(sv[1]);
    }
    for (int i = 0; i < 8; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        drain_peer(sv[1]);
    }
    close(sv[1]);
    for (int i = 0; i < 4; i++)
        ev_run(loop, EVRUN_NOWAIT);
    mp_worker_free_inline(w);
    return 0;
}
