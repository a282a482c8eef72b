/* The gRPC ADS client (include/magpie/ads_client.h).
 *
 * One HTTP/2 (h2c, prior knowledge) connection to the first host of the ads_config cluster,
 * with one bidi call on it.  Bytes move through nghttp2's memory interface: what the socket
 * gives is fed to nghttp2_session_mem_recv, what nghttp2 wants to send is copied to a pending
 * buffer and written as the socket allows.  Requests from the xDS session are gRPC-framed into
 * `out`, which the call's data provider drains (deferring while it is empty; the request side
 * never ends).  Received DATA is reassembled into gRPC messages for the session.
 *
 * Anything that ends the stream (connect failure, GOAWAY, RST, trailers, EOF, an undecodable
 * message) is handled the same way: close everything, mp_xds_session_reset, and try again after
 * mp_xds_backoff_ms.  nghttp2 callbacks only set `broken`; the teardown runs after nghttp2 has
 * returned, never inside it.
 *
 * This is a second, small HTTP/2 client beside the data path's (proxy/h2_upstream*.c): a gap to
 * close by hosting the ADS call on the data path's codec. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

#include "magpie/ads_client.h"
#include "magpie/file_source.h"
#include "magpie/log.h"
#include "magpie/net.h"
#include "magpie/stats.h"
#include "magpie/xds_session.h"

#define ADS_SOTW_PATH                                                                              \
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define ADS_DELTA_PATH                                                                             \
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
/* A gRPC message larger than this ends the stream (Envoy's default max_receive_message_length
 * is unlimited; a bound keeps a broken plane from exhausting memory). */
#define ADS_MAX_MESSAGE (64u << 20)

typedef Envoy__Config__Bootstrap__V3__Bootstrap pb_bootstrap_t;
typedef Envoy__Config__Core__V3__ApiConfigSource pb_api_source_t;
typedef Envoy__Config__Core__V3__ConfigSource pb_source_t;

/* One accepted resource as received (packed). */
typedef struct held {
    char *name;
    uint8_t *data;
    size_t len;
} held_t;

typedef struct held_set {
    held_t *v;
    size_t n;
} held_set_t;

typedef struct bytes {
    uint8_t *p;
    size_t len, off, cap;
} bytes_t;

static struct {
    mp_server_t *s;
    struct ev_loop *loop;
    mp_xds_session_t *session;
    mp_xds_mode_t mode;
    char *cluster, *authority;
    int fd;         /* -1: no connection */
    bool connected; /* TCP connect finished, HTTP/2 session running */
    bool broken;    /* set from nghttp2 callbacks: tear down once they return */
    char why[256];
    ev_io io;
    ev_timer timer; /* connect deadline while connecting, else the reconnect delay */
    nghttp2_session *h2;
    int32_t stream_id;
    bytes_t out;  /* gRPC-framed requests not yet taken by nghttp2 */
    bytes_t wbuf; /* HTTP/2 bytes not yet written to the socket */
    bytes_t in;   /* received DATA not yet a whole gRPC message */
    unsigned attempt;
    bool started;
    held_set_t lds, cds;
    mp_stat_id_t connected_state;
} ads = {.fd = -1};

static void bytes_append(bytes_t *b, const void *p, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 256;
        b->p = mp_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, p, len);
    b->len += len;
}

/* Drops the consumed prefix [0, off). */
static void bytes_compact(bytes_t *b)
{
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
}

static void bytes_free(bytes_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static void mark_broken(const char *why)
{
    if (!ads.broken)
        snprintf(ads.why, sizeof(ads.why), "%s", why);
    ads.broken = true;
}

/* ---- the accepted resources, per type ---- */

static void held_set_free(held_set_t *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->v[i].name);
        free(h->v[i].data);
    }
    free(h->v);
    memset(h, 0, sizeof(*h));
}

static held_t *held_find(held_set_t *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->v[i].name, name) == 0)
            return &h->v[i];
    return NULL;
}

static void held_put(held_set_t *h, const char *name, const uint8_t *data, size_t len)
{
    held_t *e = held_find(h, name);
    if (e == NULL) {
        h->v = mp_xrealloc(h->v, (h->n + 1) * sizeof(*h->v));
        e = &h->v[h->n++];
        e->name = mp_xstrdup(name);
    } else {
        free(e->data);
    }
    e->data = mp_xmalloc(len ? len : 1);
    memcpy(e->data, data, len);
    e->len = len;
}

static void held_remove(held_set_t *h, const char *name)
{
    held_t *e = held_find(h, name);
    if (e == NULL)
        return;
    free(e->name);
    free(e->data);
    *e = h->v[--h->n];
}

/* The set after update u, from cur: complete (SotW LDS/CDS) replaces, else upserts and removes.
 * A TTL heartbeat (no value) keeps the held copy. */
static void held_next(const held_set_t *cur, const mp_xds_update_t *u, held_set_t *next)
{
    memset(next, 0, sizeof(*next));
    for (size_t i = 0; !u->complete && i < cur->n; i++)
        held_put(next, cur->v[i].name, cur->v[i].data, cur->v[i].len);
    for (size_t i = 0; i < u->n_removed; i++)
        held_remove(next, u->removed[i]);
    for (size_t i = 0; i < u->n_resources; i++) {
        const mp_xds_resource_t *r = &u->resources[i];
        const held_t *old = r->value == NULL ? held_find((held_set_t *)cur, r->name) : NULL;
        if (r->value != NULL)
            held_put(next, r->name, r->value, r->len);
        else if (old != NULL)
            held_put(next, old->name, old->data, old->len);
    }
}

static ProtobufCMessage **held_unpack(const held_set_t *h, const ProtobufCMessageDescriptor *d,
                                      mp_err_t *err)
{
    ProtobufCMessage **res = mp_xcalloc(h->n ? h->n : 1, sizeof(*res));
    for (size_t i = 0; i < h->n; i++) {
        res[i] = protobuf_c_message_unpack(d, NULL, h->v[i].len, h->v[i].data);
        if (res[i] != NULL)
            continue;
        mp_err_set(err, "%s: does not decode as %s", h->v[i].name, d->name);
        for (size_t j = 0; j < i; j++)
            protobuf_c_message_free_unpacked(res[j], NULL);
        free(res);
        return NULL;
    }
    return res;
}

/* The session's applier: LDS and CDS go to the file source's rebuild. */
static int on_apply(void *ctx, const char *type_url, const mp_xds_update_t *u, mp_err_t *err)
{
    bool lds = strcmp(type_url, MP_XDS_TYPE_LISTENER) == 0;
    if (!lds && strcmp(type_url, MP_XDS_TYPE_CLUSTER) != 0)
        return mp_err_set(err, "%s is not served over ADS yet", type_url);
    held_set_t *cur = lds ? &ads.lds : &ads.cds;
    held_set_t next;
    held_next(cur, u, &next);
    const ProtobufCMessageDescriptor *d = lds ? &envoy__config__listener__v3__listener__descriptor
                                              : &envoy__config__cluster__v3__cluster__descriptor;
    ProtobufCMessage **res = held_unpack(&next, d, err);
    if (res == NULL || mp_file_source_offer(lds, res, next.n, u->version_info, err) != 0) {
        mp_log_warn("ads: %s update \"%s\" rejected: %s", lds ? "lds" : "cds",
                    u->version_info ? u->version_info : "", err->msg);
        held_set_free(&next);
        return MP_ERROR;
    }
    mp_log_info("ads: %s version \"%s\" applied (%zu resources)", lds ? "lds" : "cds",
                u->version_info ? u->version_info : "", next.n);
    held_set_free(cur);
    *cur = next;
    return 0;
}

/* ---- the HTTP/2 call ---- */

static ssize_t read_out(nghttp2_session *h, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *ud)
{
    size_t have = ads.out.len - ads.out.off;
    if (have == 0)
        return NGHTTP2_ERR_DEFERRED;
    size_t n = have < len ? have : len;
    memcpy(buf, ads.out.p + ads.out.off, n);
    ads.out.off += n;
    if (ads.out.off == ads.out.len)
        ads.out.off = ads.out.len = 0;
    return (ssize_t)n;
}

static void deliver_messages(void)
{
    while (!ads.broken && ads.in.len - ads.in.off >= 5) {
        const uint8_t *p = ads.in.p + ads.in.off;
        uint32_t len = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        if (p[0] != 0)
            return mark_broken("compressed gRPC message (no grpc-encoding was offered)");
        if (len > ADS_MAX_MESSAGE)
            return mark_broken("gRPC message too large");
        if (ads.in.len - ads.in.off - 5 < len)
            break;
        mp_err_t err = {{0}};
        if (mp_xds_session_on_message(ads.session, p + 5, len, mp_now_ms(), &err) != 0)
            return mark_broken(err.msg);
        ads.in.off += 5 + (size_t)len;
        ads.attempt = 0; /* a working stream: the next failure starts the back-off over */
    }
    bytes_compact(&ads.in);
}

static int on_data(nghttp2_session *h, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    if (id != ads.stream_id)
        return 0;
    bytes_append(&ads.in, data, len);
    deliver_messages();
    return 0;
}

static int on_header(nghttp2_session *h, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    if (namelen == 7 && memcmp(name, ":status", 7) == 0 &&
        !(valuelen == 3 && memcmp(value, "200", 3) == 0)) {
        char why[64];
        snprintf(why, sizeof(why), "HTTP status %.*s", (int)(valuelen < 8 ? valuelen : 8),
                 (const char *)value);
        mark_broken(why);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        char why[128];
        snprintf(why, sizeof(why), "grpc-status %.*s", (int)(valuelen < 16 ? valuelen : 16),
                 (const char *)value);
        mark_broken(why);
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        mp_log_warn("ads: grpc-message: %.*s", (int)(valuelen < 200 ? valuelen : 200),
                    (const char *)value);
    }
    return 0;
}

static int on_frame(nghttp2_session *h, const nghttp2_frame *f, void *ud)
{
    if (f->hd.type == NGHTTP2_HEADERS && f->hd.stream_id == ads.stream_id &&
        f->headers.cat == NGHTTP2_HCAT_RESPONSE && !ads.broken) {
        mp_stats_gauge_set(ads.connected_state, 1);
        mp_log_info("ads: stream to cluster %s established", ads.cluster);
    }
    if (f->hd.type == NGHTTP2_GOAWAY)
        mark_broken("GOAWAY");
    return 0;
}

static int on_close(nghttp2_session *h, int32_t id, uint32_t code, void *ud)
{
    if (id == ads.stream_id)
        mark_broken(code ? "stream reset" : "stream ended");
    return 0;
}

static nghttp2_session *new_h2(void)
{
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
    nghttp2_session *h = NULL;
    nghttp2_session_client_new(&h, cb, NULL);
    nghttp2_session_callbacks_del(cb);
    return h;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NO_COPY_NAME     \
    }

static int open_call(void)
{
    ads.h2 = new_h2();
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 24}};
    nghttp2_submit_settings(ads.h2, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(ads.h2, NGHTTP2_FLAG_NONE, 0, 1 << 24);
    const char *path = ads.mode == MP_XDS_DELTA ? ADS_DELTA_PATH : ADS_SOTW_PATH;
    nghttp2_nv nva[] = {NV(":method", "POST"),
                        NV(":scheme", "http"),
                        NV(":path", path),
                        NV(":authority", ads.authority),
                        NV("content-type", "application/grpc"),
                        NV("te", "trailers")};
    nghttp2_data_provider dp = {.read_callback = read_out};
    ads.stream_id =
        nghttp2_submit_request(ads.h2, NULL, nva, sizeof(nva) / sizeof(nva[0]), &dp, NULL);
    return ads.stream_id < 0 ? MP_ERROR : 0;
}

/* Moves the session's pending requests into `out`, gRPC-framed. */
static void take_requests(void)
{
    mp_xds_request_t rq;
    bool any = false;
    while (mp_xds_session_next_request(ads.session, &rq) == 1) {
        uint8_t hdr[5] = {0, (uint8_t)(rq.len >> 24), (uint8_t)(rq.len >> 16),
                          (uint8_t)(rq.len >> 8), (uint8_t)rq.len};
        bytes_append(&ads.out, hdr, 5);
        bytes_append(&ads.out, rq.data, rq.len);
        mp_log_debug("ads: -> %s %s (%zu bytes)", rq.is_nack ? "NACK" : "request", rq.type_url,
                     rq.len);
        mp_xds_request_clear(&rq);
        any = true;
    }
    if (any)
        nghttp2_session_resume_data(ads.h2, ads.stream_id);
}

/* Writes what nghttp2 and the session have to send; arms EV_WRITE for a remainder. */
static void flush(void)
{
    take_requests();
    const uint8_t *data;
    ssize_t n = 0;
    while (ads.wbuf.len < (1u << 20) && (n = nghttp2_session_mem_send(ads.h2, &data)) > 0)
        bytes_append(&ads.wbuf, data, (size_t)n);
    if (n < 0)
        return mark_broken(nghttp2_strerror((int)n));
    while (ads.wbuf.off < ads.wbuf.len) {
        ssize_t w =
            send(ads.fd, ads.wbuf.p + ads.wbuf.off, ads.wbuf.len - ads.wbuf.off, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (w < 0)
            return mark_broken(strerror(errno));
        ads.wbuf.off += (size_t)w;
    }
    bytes_compact(&ads.wbuf);
    int want = EV_READ | (ads.wbuf.len > 0 || nghttp2_session_want_write(ads.h2) ? EV_WRITE : 0);
    if ((ads.io.events & (EV_READ | EV_WRITE)) != want) {
        ev_io_stop(ads.loop, &ads.io);
        ev_io_set(&ads.io, ads.fd, want);
        ev_io_start(ads.loop, &ads.io);
    }
}

/* ---- connecting and reconnecting ---- */

static void close_connection(void)
{
    if (ads.fd >= 0) {
        ev_io_stop(ads.loop, &ads.io);
        close(ads.fd);
    }
    ads.fd = -1;
    if (ads.h2 != NULL)
        nghttp2_session_del(ads.h2);
    ads.h2 = NULL;
    ads.stream_id = -1;
    ads.connected = false;
    bytes_free(&ads.out);
    bytes_free(&ads.wbuf);
    bytes_free(&ads.in);
}

/* The stream is gone: forget it and try again after the back-off. */
static void fail(const char *why)
{
    close_connection();
    ads.broken = false;
    mp_stats_gauge_set(ads.connected_state, 0);
    mp_xds_session_reset(ads.session);
    uint64_t ms = mp_xds_backoff_ms(ads.attempt, MP_XDS_BACKOFF_BASE_MS, MP_XDS_BACKOFF_MAX_MS,
                                    (uint64_t)random());
    if (ads.attempt < 16)
        ads.attempt++;
    mp_log_warn("ads: stream to cluster %s closed (%s); reconnecting in %llu ms", ads.cluster, why,
                (unsigned long long)ms);
    ev_timer_stop(ads.loop, &ads.timer);
    ev_timer_set(&ads.timer, (double)ms / 1000.0, 0.0);
    ev_timer_start(ads.loop, &ads.timer);
}

static void on_connected(void)
{
    int e = 0;
    socklen_t el = sizeof(e);
    getsockopt(ads.fd, SOL_SOCKET, SO_ERROR, &e, &el);
    if (e != 0)
        return mark_broken(strerror(e));
    ev_timer_stop(ads.loop, &ads.timer);
    ads.connected = true;
    if (open_call() != 0)
        return mark_broken("cannot submit the request");
}

static void read_socket(void)
{
    uint8_t buf[16384];
    for (int i = 0; i < 64 && !ads.broken; i++) {
        ssize_t n = recv(ads.fd, buf, sizeof(buf), 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0)
            return mark_broken(n == 0 ? "connection closed" : strerror(errno));
        ssize_t r = nghttp2_session_mem_recv(ads.h2, buf, (size_t)n);
        if (r < 0)
            return mark_broken(nghttp2_strerror((int)r));
    }
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    if (!ads.connected)
        on_connected();
    if (!ads.broken && ads.connected && (revents & EV_READ))
        read_socket();
    if (!ads.broken && ads.connected)
        flush();
    if (ads.broken)
        fail(ads.why);
}

/* The first host of the ADS cluster, or MP_ERROR with err set. */
static int ads_address(mp_addr_t *out, uint64_t *timeout_ms, mp_err_t *err)
{
    mp_config_t *cfg = mp_server_config_acquire(ads.s);
    mp_cluster_t *c = mp_config_find_cluster(cfg, ads.cluster);
    int rc = MP_ERROR;
    if (c == NULL) {
        mp_err_set(err, "cluster %s is not in the configuration", ads.cluster);
    } else {
        mp_hostset_t *hs = mp_cluster_hosts_acquire(c);
        if (hs == NULL || hs->n == 0)
            mp_err_set(err, "cluster %s has no hosts (yet)", ads.cluster);
        else
            *out = hs->hosts[0].addr, rc = 0;
        *timeout_ms = c->connect_timeout_ms;
        if (hs != NULL)
            mp_hostset_release(hs);
    }
    mp_config_unref(cfg);
    return rc;
}

static void connect_plane(void)
{
    mp_addr_t addr;
    uint64_t timeout_ms = 5000;
    mp_err_t err = {{0}};
    if (ads_address(&addr, &timeout_ms, &err) != 0)
        return fail(err.msg);
    ads.fd = mp_net_connect(&addr);
    if (ads.fd < 0)
        return fail(strerror(errno));
    mp_log_debug("ads: connecting to %s (cluster %s)", addr.text, ads.cluster);
    ev_io_set(&ads.io, ads.fd, EV_WRITE);
    ev_io_start(ads.loop, &ads.io);
    ev_timer_stop(ads.loop, &ads.timer);
    ev_timer_set(&ads.timer, (double)timeout_ms / 1000.0, 0.0);
    ev_timer_start(ads.loop, &ads.timer);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    if (ads.fd >= 0 && !ads.connected)
        return fail("connect timeout");
    if (ads.fd < 0)
        connect_plane();
}

/* ---- configuration ---- */

static bool is_ads(const pb_source_t *cs)
{
    return cs != NULL && cs->config_source_specifier_case ==
                             ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS;
}

static int read_ads_config(const pb_api_source_t *a, mp_err_t *err)
{
    if (a->api_type == ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__GRPC ||
        a->api_type == ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__AGGREGATED_GRPC)
        ads.mode = MP_XDS_SOTW;
    else if (a->api_type == ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__DELTA_GRPC ||
             a->api_type ==
                 ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__AGGREGATED_DELTA_GRPC)
        ads.mode = MP_XDS_DELTA;
    else
        return mp_err_set(err, "api_type: only GRPC and DELTA_GRPC are served");
    if (a->transport_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__V3)
        return mp_err_set(err, "transport_api_version: must be V3");
    if (a->n_grpc_services != 1)
        return mp_err_set(err, "grpc_services: exactly one is served");
    const Envoy__Config__Core__V3__GrpcService *g = a->grpc_services[0];
    if (g->target_specifier_case !=
            ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC ||
        g->envoy_grpc->cluster_name == NULL || g->envoy_grpc->cluster_name[0] == '\0')
        return mp_err_set(err, "grpc_services[0]: envoy_grpc.cluster_name is required "
                               "(google_grpc is not served)");
    ads.cluster = mp_xstrdup(g->envoy_grpc->cluster_name);
    const char *auth = g->envoy_grpc->authority;
    ads.authority = mp_xstrdup(auth != NULL && auth[0] ? auth : ads.cluster);
    return 0;
}

static void new_session(const pb_bootstrap_t *b)
{
    mp_xds_node_t node = {0};
    const Envoy__Config__Core__V3__Node *n = b->node;
    if (n != NULL) {
        node.id = n->id;
        node.cluster = n->cluster;
        node.client_features = (const char *const *)n->client_features;
        node.n_client_features = n->n_client_features;
        if (n->locality != NULL) {
            node.region = n->locality->region;
            node.zone = n->locality->zone;
            node.sub_zone = n->locality->sub_zone;
        }
    }
    ads.session = mp_xds_session_new(ads.mode, &node, on_apply, NULL);
    /* CDS before LDS, as Envoy orders them: clusters a listener routes to come first. */
    if (is_ads(b->dynamic_resources->cds_config))
        mp_xds_session_subscribe(ads.session, MP_XDS_TYPE_CLUSTER, NULL, 0);
    if (is_ads(b->dynamic_resources->lds_config))
        mp_xds_session_subscribe(ads.session, MP_XDS_TYPE_LISTENER, NULL, 0);
}

int mp_ads_start(mp_server_t *s, mp_err_t *err)
{
    mp_config_t *cfg = atomic_load(&s->config);
    const pb_bootstrap_t *b = cfg->bootstrap;
    if (b == NULL || b->dynamic_resources == NULL || b->dynamic_resources->ads_config == NULL)
        return 0;
    if (read_ads_config(b->dynamic_resources->ads_config, err) != 0) {
        mp_ads_stop();
        return mp_err_prefix(err, "dynamic_resources.ads_config: ");
    }
    ads.s = s;
    ads.loop = s->loop;
    ads.fd = -1;
    ads.stream_id = -1;
    ads.connected_state = mp_stats_gauge("control_plane.connected_state");
    mp_stats_gauge_set(ads.connected_state, 0);
    new_session(b);
    ev_io_init(&ads.io, on_io, -1, EV_WRITE);
    ev_timer_init(&ads.timer, on_timer, 0.0, 0.0);
    ads.started = true;
    connect_plane();
    return 0;
}

void mp_ads_stop(void)
{
    if (ads.started) {
        close_connection();
        ev_timer_stop(ads.loop, &ads.timer);
        mp_xds_session_free(ads.session);
    }
    held_set_free(&ads.lds);
    held_set_free(&ads.cds);
    free(ads.cluster);
    free(ads.authority);
    memset(&ads, 0, sizeof(ads));
    ads.fd = -1;
}
