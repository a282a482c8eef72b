/* libFuzzer target: the HTTP/2 upstream codec (proxy/h2_upstream.c) end to end.  The input is
 * what an upstream server sends after magpie's preface: it reaches magpie's client session over
 * a real loopback TCP connection and runs through nghttp2, the response callbacks, the streams
 * and both downstream codecs; whatever magpie writes either way is read and dropped.
 *
 * Per input: an HTTP/1.1 client (a socketpair) sends a GET followed by a pipelined GET, and an
 * HTTP/2 client a GET and a POST with a body; the cluster speaks HTTP/2 to a listening socket
 * of this harness, so the requests share one upstream connection (streams 1, 3 and 5, then 7
 * for the pipelined GET, which reaches max_requests_per_connection and drains the connection).
 * The input is written as the server's bytes, frame by frame; two frame types are commands
 * instead (a client hangs up; the clients stop or resume reading, against a 1 KiB buffer
 * limit).  The server side is then half-closed (even sizes) or reset (odd sizes), the clients
 * hang up, and the worker is freed: no watcher may stay on the loop. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../proxy/http_internal.h"
#include "magpie/bootstrap.h"
#include "magpie/log.h"
#include "magpie/stats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SLICE 512
#define MAX_SERVER_CONNS 4
/* Harness commands in the input: a 9-byte frame header of one of these types, not sent. */
#define CMD_CLOSE_CLIENT 0xf0 /* flags bit 0: which client hangs up */
#define CMD_PAUSE 0xf1        /* flags bit 0: 1 the clients stop reading, 0 they resume */

/* Listener l1 is HTTP/1.1, l2 HTTP/2; both route everything to cluster c (HTTP/2). */
#define LISTENER(name, port, codec)                                                                \
    "  - name: " name "\n"                                                                         \
    "    address: { socket_address: { address: 127.0.0.1, port_value: " port " } }\n"              \
    "    per_connection_buffer_limit_bytes: 1024\n"                                                \
    "    filter_chains:\n"                                                                         \
    "    - filters:\n"                                                                             \
    "      - name: envoy.filters.network.http_connection_manager\n"                                \
    "        typed_config:\n"                                                                      \
    "          '@type': type.googleapis.com/envoy.extensions.filters.network."                     \
    "http_connection_manager.v3.HttpConnectionManager\n"                                           \
    "          stat_prefix: " name "\n"                                                            \
    "          codec_type: " codec "\n"                                                            \
    "          route_config:\n"                                                                    \
    "            virtual_hosts:\n"                                                                 \
    "            - name: v\n"                                                                      \
    "              domains: ['*']\n"                                                               \
    "              routes:\n"                                                                      \
    "              - match: { prefix: / }\n"                                                       \
    "                route: { cluster: c }\n"                                                      \
    "          http_filters:\n"                                                                    \
    "          - name: envoy.filters.http.router\n"                                                \
    "            typed_config: { '@type': type.googleapis.com/envoy.extensions.filters.http."      \
    "router.v3.Router }\n"

#define CLUSTER                                                                                    \
    "  - name: c\n"                                                                                \
    "    type: STATIC\n"                                                                           \
    "    connect_timeout: 1s\n"                                                                    \
    "    max_requests_per_connection: 4\n"                                                         \
    "    http2_protocol_options: {}\n"                                                             \
    "    load_assignment:\n"                                                                       \
    "      cluster_name: c\n"                                                                      \
    "      endpoints:\n"                                                                           \
    "      - lb_endpoints:\n"                                                                      \
    "        - endpoint:\n"                                                                        \
    "            address: { socket_address: { address: 127.0.0.1, port_value: %d } }\n"

static const char config_fmt[] = "static_resources:\n"
                                 "  listeners:\n" LISTENER("l1", "1", "HTTP1")
                                     LISTENER("l2", "2", "HTTP2") "  clusters:\n" CLUSTER;

static const char req_get[] = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /b HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n";
/* The HTTP/2 client: preface, empty SETTINGS, GET / on stream 1 and POST /p with a 5-byte body
 * on stream 3 (HPACK static indexes, literals not indexed). */
static const char req_h2[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                             "\0\0\0\x04\0\0\0\0\0"
                             "\0\0\x06\x01\x05\0\0\0\x01\x82\x86\x84\x01\x01x"
                             "\0\0\x09\x01\x04\0\0\0\x03\x83\x86\x04\x02/p\x01\x01x"
                             "\0\0\x05\0\x01\0\0\0\x03hello";

static mp_config_t *config;
static struct ev_loop *loop;
static int listen_fd = -1;
static bool debug;

/* The upstream "server": a loopback listener opened once; its port goes into the cluster. */
static int open_listener(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
        __builtin_trap();
    listen_fd = fd;
    return ntohs(sin.sin_port);
}

static void setup(void)
{
    /* Magpie's writes to a reset upstream must fail with EPIPE, as in the binary (server.c). */
    signal(SIGPIPE, SIG_IGN);
    /* FUZZ_DEBUG=1 shows what magpie makes of an input: its debug log and what the clients get. */
    debug = getenv("FUZZ_DEBUG") != NULL;
    mp_log_set_level(debug ? MP_LOG_DEBUG : MP_LOG_ERROR);
    mp_stats_thread_init();
    static char yaml[sizeof(config_fmt) + 16];
    snprintf(yaml, sizeof(yaml), config_fmt, open_listener());
    mp_options_t opts = {.config_yaml = yaml, .concurrency = 1};
    bool used_default = false;
    mp_err_t err;
    config = mp_bootstrap_load(&opts, &used_default, &err);
    if (config == NULL)
        __builtin_trap();
    loop = ev_loop_new(EVFLAG_AUTO);
}

/* Reads and drops what magpie wrote; FUZZ_DEBUG shows it (as text when `text`, else hex). */
static void drain(int fd, bool text)
{
    char sink[65536];
    ssize_t n;
    while (fd >= 0 && (n = read(fd, sink, sizeof(sink))) > 0) {
        if (debug && text)
            fprintf(stderr, "fd %d got: %.*s\n", fd, (int)n, sink);
        for (ssize_t i = 0; debug && !text && i < n; i++)
            fprintf(stderr, "%02x%s", (uint8_t)sink[i], i + 1 == n ? "\n" : "");
    }
}

/* An abortive close (RST): neither side keeps a TIME_WAIT socket, so thousands of inputs per
 * second do not run out of loopback ports. */
static void close_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

typedef struct fuzz_conns {
    int client[2]; /* our ends of the downstream socketpairs */
    int server[MAX_SERVER_CONNS];
    int n_server;
    bool paused; /* the clients stop reading: magpie's downstream buffers fill */
} fuzz_conns_t;

static void accept_all(fuzz_conns_t *fc)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (fc == NULL || fc->n_server == MAX_SERVER_CONNS) {
            close_reset(fd);
            continue;
        }
        /* Without it Nagle holds a small frame until magpie's delayed ACK (40 ms): the next
         * loop pass would not see it. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fc->server[fc->n_server++] = fd;
    }
}

/* One loop pass, then everything magpie wrote is read and dropped. */
static void turn(fuzz_conns_t *fc)
{
    ev_run(loop, EVRUN_NOWAIT);
    accept_all(fc);
    for (int i = 0; i < 2 && !fc->paused; i++)
        drain(fc->client[i], i == 0);
    for (int i = 0; i < fc->n_server; i++)
        drain(fc->server[i], false);
}

/* Client i connects to listener i. */
static void open_client(mp_worker_t *w, fuzz_conns_t *fc, int i, const char *req, size_t len)
{
    int sv[2];
    fc->client[i] = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return;
    /* A small socket buffer, so that a paused client pushes back within a few KiB. */
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    mp_http_accept(w, &config->listeners[i], &config->listeners[i].chains[0], sv[0]);
    (void)!send(sv[1], req, len, MSG_NOSIGNAL);
    fc->client[i] = sv[1];
}

/* Two frame types that a server would not send are commands to the harness instead, so that
 * the input also decides what the clients do while responses arrive. */
static bool run_command(fuzz_conns_t *fc, const uint8_t *hd)
{
    int i = hd[4] & 1;
    if (hd[3] == CMD_CLOSE_CLIENT && fc->client[i] >= 0) {
        close(fc->client[i]);
        fc->client[i] = -1;
    } else if (hd[3] == CMD_PAUSE) {
        fc->paused = (hd[4] & 1) != 0;
    } else {
        return false;
    }
    turn(fc);
    return true;
}

/* Frame by frame (a length field read from the input decides where one ends), in slices of at
 * most SLICE bytes, with a loop pass between writes: like a real server, which answers a
 * request after reading it, and so that frames cross reads. */
static void feed_server(fuzz_conns_t *fc, const uint8_t *data, size_t size)
{
    int fd = fc->server[0];
    for (size_t off = 0; off < size;) {
        size_t frame = 9;
        if (size - off >= 9 && run_command(fc, data + off)) {
            off += 9;
            continue;
        }
        if (size - off >= 3)
            frame += (size_t)data[off] << 16 | (size_t)data[off + 1] << 8 | data[off + 2];
        size_t end = size - off < frame ? size : off + frame;
        while (off < end) {
            size_t n = end - off < SLICE ? end - off : SLICE;
            ssize_t wrote = send(fd, data + off, n, MSG_NOSIGNAL);
            if (wrote <= 0)
                return; /* magpie closed the connection */
            off += (size_t)wrote;
            turn(fc);
        }
    }
}

static void hang_up(fuzz_conns_t *fc, size_t size)
{
    for (int i = 0; i < 4; i++)
        turn(fc);
    /* Even sizes end with a clean EOF from the server, odd ones with a reset. */
    for (int i = 0; i < fc->n_server; i++)
        if (size % 2 == 0)
            shutdown(fc->server[i], SHUT_WR);
    for (int i = 0; i < 4; i++)
        turn(fc);
    for (int i = 0; i < fc->n_server; i++)
        close_reset(fc->server[i]);
    fc->n_server = 0;
    for (int i = 0; i < 2; i++)
        if (fc->client[i] >= 0)
            close(fc->client[i]);
    fc->client[0] = fc->client[1] = -1;
    for (int i = 0; i < 4; i++)
        ev_run(loop, EVRUN_NOWAIT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (config == NULL)
        setup();
    accept_all(NULL); /* a connect left over from the previous input is stale */
    fuzz_conns_t fc = {.n_server = 0};
    mp_worker_t *w = mp_worker_new_inline(config, loop);
    open_client(w, &fc, 0, req_get, sizeof(req_get) - 1);
    open_client(w, &fc, 1, req_h2, sizeof(req_h2) - 1);
    for (int i = 0; i < 16 && fc.n_server == 0; i++)
        turn(&fc);
    for (int i = 0; i < 4; i++)
        turn(&fc); /* magpie's preface and SETTINGS, read and dropped */
    if (fc.n_server > 0)
        feed_server(&fc, data, size);
    hang_up(&fc, size);
    mp_worker_free_inline(w);
    /* Every connection closed with the worker: a watcher left behind would fire on freed
     * memory in the next input. */
    if (ev_run(loop, EVRUN_NOWAIT))
        __builtin_trap();
    return 0;
}
