/* One HTTP exchange through the connection manager: route it, answer it locally or carry it to
 * an upstream connection and back, time it out, log it and count it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "magpie/access_log.h"
#include "magpie/filter.h"
#include "magpie/log.h"
#include "magpie/route.h"
#include "magpie/router.h"
#include "magpie/stats.h"
#include "stream_internal.h"

static void stream_finish(mp_stream_t *s, bool downstream_alive);
static void start_upstream(mp_stream_t *s);
static void discard_rest_of_request(mp_stream_t *s);

static inline struct ev_loop *loop_of(const mp_stream_t *s)
{
    return s->dc->w->loop;
}

static void start_timer(mp_stream_t *s, ev_timer *t, uint64_t ms)
{
    ev_timer_stop(loop_of(s), t);
    if (ms == 0)
        return;
    ev_timer_set(t, (double)ms / 1000.0, 0.0);
    ev_timer_start(loop_of(s), t);
}

/* Activity only stamps the time; the idle timer, armed once, re-arms itself for what is left
 * when it fires early.  Re-arming on every read and write would cost a heap update each. */
static void touch(mp_stream_t *s)
{
    s->last_activity = ev_now(loop_of(s));
}

/* Route timeout, stream idle timeout and request timeout all end here. */
static void on_timeout(mp_stream_t *s, uint32_t flag, const char *details)
{
    const mp_hcm_config_t *h = s->dc->hcm;
    if (flag == MP_RF_UPSTREAM_TIMEOUT && s->cluster != NULL)
        mp_stats_inc(s->cluster->stats.upstream_rq_timeout);
    else if (flag == MP_RF_STREAM_IDLE_TIMEOUT)
        mp_stats_inc(h->stats.downstream_rq_idle_timeout);
    else
        mp_stats_inc(h->stats.downstream_rq_timeout);
    int status = (flag == MP_RF_UPSTREAM_TIMEOUT || s->req_complete) ? 504 : 408;
    if (!s->req_complete)
        s->dc->close_after_write = true; /* a slow request body is not waited for any longer */
    mp_stream_local_reply(
        s, status, flag,
        flag == MP_RF_UPSTREAM_TIMEOUT ? "upstream request timeout" : "stream timeout", details);
}

static void on_route_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    on_timeout(t->data, MP_RF_UPSTREAM_TIMEOUT, "response_timeout");
}

static void on_idle_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_stream_t *s = t->data;
    double timeout = (double)s->dc->hcm->stream_idle_timeout_ms / 1000.0;
    double left = s->last_activity + timeout - ev_now(loop);
    if (left > 0.001) {
        ev_timer_set(t, left, 0.0);
        ev_timer_start(loop, t);
        return;
    }
    on_timeout(s, MP_RF_STREAM_IDLE_TIMEOUT, "stream_idle_timeout");
}

static void on_request_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    on_timeout(t->data, MP_RF_DURATION_TIMEOUT, "request_overall_timeout");
}

mp_stream_t *mp_stream_new(mp_dconn_t *dc, mp_http_msg_t *req)
{
    mp_stream_t *s = mp_xcalloc(1, sizeof(*s));
    s->dc = dc;
    s->config = mp_config_ref(dc->config);
    s->req = req;
    s->host_idx = -1;
    s->head_request = req->method != NULL && strcmp(req->method, "HEAD") == 0;
    mp_buf_init(&s->req_pending);
    gettimeofday(&s->info.start_time, NULL);
    s->info.start_ns = mp_now_ns();
    s->info.request = req;
    s->info.protocol = req->version;
    s->info.downstream_remote_address = dc->peer;
    s->info.downstream_local_address = dc->local;
    ev_init(&s->route_timer, on_route_timer);
    s->route_timer.data = s;
    ev_init(&s->idle_timer, on_idle_timer);
    s->idle_timer.data = s;
    ev_init(&s->request_timer, on_request_timer);
    s->request_timer.data = s;
    dc->stream = s;
    const mp_hcm_config_t *h = dc->hcm;
    mp_stats_inc(h->stats.downstream_rq_total);
    mp_stats_inc(h->stats.downstream_rq_active);
    touch(s);
    start_timer(s, &s->idle_timer, h->stream_idle_timeout_ms);
    start_timer(s, &s->request_timer, h->request_timeout_ms);
    return s;
}

static bool escaped_slash_at(const char *p)
{
    return p[0] == '%' && ((p[1] == '2' && (p[2] == 'f' || p[2] == 'F')) ||
                           (p[1] == '5' && (p[2] == 'c' || p[2] == 'C')));
}

/* True when the path part (before '?') holds an escaped '/' or '\\'. */
static bool has_escaped_slash(const char *path)
{
    for (const char *p = path; *p != '\0' && *p != '?'; p++)
        if (escaped_slash_at(p))
            return true;
    return false;
}

/* Replaces %2F/%5C (either case) in the path part by '/' and '\\'. */
static void unescape_slashes(char *path)
{
    char *w = path;
    const char *r = path;
    bool in_query = false;
    while (*r != '\0') {
        if (*r == '?')
            in_query = true;
        if (!in_query && escaped_slash_at(r)) {
            *w++ = r[1] == '2' ? '/' : '\\';
            r += 3;
            continue;
        }
        *w++ = *r++;
    }
    *w = '\0';
}

typedef enum path_verdict { PATH_OK, PATH_INVALID, PATH_REDIRECT } path_verdict_t;

/* Applies path_with_escaped_slashes_action, normalize_path and merge_slashes to req->path. */
static path_verdict_t normalize_request_path(mp_stream_t *s)
{
    const mp_hcm_config_t *h = s->dc->hcm;
    char *path = s->req->path;
    if (path == NULL || path[0] != '/')
        return path != NULL && strcmp(path, "*") == 0 ? PATH_OK : PATH_INVALID;
    path_verdict_t verdict = PATH_OK;
    if (h->escaped_slashes != MP_ESCAPED_SLASHES_KEEP && has_escaped_slash(path)) {
        if (h->escaped_slashes == MP_ESCAPED_SLASHES_REJECT)
            return PATH_INVALID;
        unescape_slashes(path);
        if (h->escaped_slashes == MP_ESCAPED_SLASHES_UNESCAPE_REDIRECT)
            verdict = PATH_REDIRECT;
    }
    if (!h->normalize_path && !h->merge_slashes)
        return verdict;
    const char *why = NULL;
    char *norm = mp_path_normalize(path, h->normalize_path, h->merge_slashes, &why);
    if (norm == NULL)
        return PATH_INVALID;
    free(s->req->path);
    s->req->path = norm;
    return verdict;
}

static void redirect_to_own_path(mp_stream_t *s)
{
    mp_http_msg_t *resp = mp_http_msg_new();
    resp->status = 307;
    resp->content_length = 0;
    mp_headers_add_cstr(&resp->headers, "location", s->req->path);
    mp_stream__send_local(s, resp, NULL, 0);
}

static void apply_request_mutations(mp_stream_t *s)
{
    mp_headers_t *hd = &s->req->headers;
    if (s->wc != NULL)
        mp_header_mutation_apply(&s->wc->request_headers, hd);
    mp_header_mutation_apply(&s->route->request_headers, hd);
    mp_header_mutation_apply(&s->vhost->request_headers, hd);
    mp_header_mutation_apply(&s->dc->hcm->routes->request_headers, hd);
}

static void apply_response_mutations(mp_stream_t *s, mp_headers_t *hd)
{
    if (s->route == NULL)
        return;
    if (s->wc != NULL)
        mp_header_mutation_apply(&s->wc->response_headers, hd);
    mp_header_mutation_apply(&s->route->response_headers, hd);
    mp_header_mutation_apply(&s->vhost->response_headers, hd);
    mp_header_mutation_apply(&s->dc->hcm->routes->response_headers, hd);
}

static void answer_redirect(mp_stream_t *s)
{
    char *location = mp_route_redirect_location(s->route, s->req);
    mp_stats_inc(s->dc->hcm->stats.rq_redirect);
    int code = s->route->redirect.response_code ? s->route->redirect.response_code : 301;
    mp_http_msg_t *resp = mp_http_msg_new();
    resp->status = code;
    resp->content_length = 0;
    mp_headers_add_cstr(&resp->headers, "location", location);
    free(location);
    mp_stream__send_local(s, resp, NULL, 0);
}

/* Picks the cluster for a MP_ACTION_ROUTE route; answers 503 NC itself when there is none. */
static bool choose_cluster(mp_stream_t *s)
{
    const mp_route_t *r = s->route;
    const char *name = mp_route_cluster_name(r, s->req, mp_random(), &s->wc);
    mp_cluster_t *c = NULL;
    if (s->wc != NULL)
        c = s->wc->cluster;
    else if (r->cluster != NULL && r->cluster_header == NULL)
        c = r->cluster;
    else if (name != NULL)
        c = mp_config_find_cluster(s->config, name);
    if (c == NULL) {
        mp_stream_local_reply(s, 503, MP_RF_NO_CLUSTER, "cluster not found", "cluster_not_found");
        return false;
    }
    s->cluster = c;
    s->info.upstream_cluster = c->name;
    return true;
}

void mp_stream_route(mp_stream_t *s, const mp_router_config_t *config)
{
    s->router_config = config;
    const mp_route_t *r = s->route;
    if (r == NULL) {
        mp_stats_inc(s->dc->hcm->stats.no_route);
        mp_stream_local_reply(s, 404, MP_RF_NO_ROUTE, NULL, "route_not_found");
        return;
    }
    s->info.route_name = r->name;
    switch (r->action) {
    case MP_ACTION_DIRECT_RESPONSE: {
        mp_stats_inc(s->dc->hcm->stats.rq_direct_response);
        mp_http_msg_t *resp = mp_http_msg_new();
        resp->status = r->direct_status;
        resp->content_length = r->direct_body_len;
        if (r->direct_body_len > 0)
            mp_headers_add_cstr(&resp->headers, "content-type", "text/plain");
        mp_stream__send_local(s, resp, r->direct_body, r->direct_body_len);
        return;
    }
    case MP_ACTION_REDIRECT:
        answer_redirect(s);
        return;
    case MP_ACTION_ROUTE:
        break;
    }
    if (!choose_cluster(s))
        return;
    mp_route_rewrite_request(r, s->req);
    apply_request_mutations(s);
    start_upstream(s);
}

/* Runs the listener's filter chain over the request head until a filter stops it (the terminal
 * router always does). */
static void run_decode_headers(mp_stream_t *s)
{
    const mp_hcm_config_t *h = s->dc->hcm;
    for (uint32_t i = 0; i < h->n_http_filters; i++) {
        const mp_http_filter_t *f = &h->http_filters[i];
        if (f->ops->decode_headers == NULL)
            continue;
        if (f->ops->decode_headers(f->config, s, s->req) == MP_FILTER_STOP)
            return;
    }
}

/* The response head passes the chain in reverse order; a filter may change it. */
static void run_encode_headers(mp_stream_t *s, mp_http_msg_t *resp)
{
    const mp_hcm_config_t *h = s->dc->hcm;
    for (uint32_t i = h->n_http_filters; i-- > 0;) {
        const mp_http_filter_t *f = &h->http_filters[i];
        if (f->ops->encode_headers != NULL &&
            f->ops->encode_headers(f->config, s, resp) == MP_FILTER_STOP)
            return;
    }
}

int mp_stream_on_request_head(mp_dconn_t *dc, mp_http_msg_t *req)
{
    mp_stream_t *s = mp_stream_new(dc, req);
    if (!req->keep_alive || dc->w->draining)
        dc->close_after_write = true;
    path_verdict_t verdict = normalize_request_path(s);
    if (verdict == PATH_INVALID) {
        mp_stream_local_reply(s, 400, MP_RF_DOWNSTREAM_PROTOCOL_ERROR, "Bad Request",
                              "invalid_path");
        return 0;
    }
    if (verdict == PATH_REDIRECT) {
        redirect_to_own_path(s);
        return 0;
    }
    mp_stream__prepare_request(s);
    /* The route is found once, before the filters, so that each of them sees the same one. */
    s->route = mp_route_match(dc->hcm->routes, req, &s->vhost);
    run_decode_headers(s);
    return 0;
}

static void start_upstream(mp_stream_t *s)
{
    mp_cluster_t *c = s->cluster;
    mp_stats_inc(c->stats.upstream_rq_total);
    mp_stats_inc(c->stats.upstream_rq_active);
    s->hosts = mp_cluster_hosts_acquire(c);
    mp_pool_t *pool = mp_worker_pool(s->dc->w, c);
    int idx = -1;
    if (s->hosts->n > 0)
        idx = pool != NULL ? mp_lb_pick(pool->lb, s->hosts, -1) : (int)(mp_random() % s->hosts->n);
    if (idx < 0) {
        mp_stats_inc(c->stats.upstream_cx_none_healthy);
        mp_stream_local_reply(s, 503, MP_RF_NO_HEALTHY_UPSTREAM, "no healthy upstream",
                              "no_healthy_upstream");
        return;
    }
    s->host_idx = idx;
    if (pool != NULL) {
        mp_lb_request_start(pool->lb, s->hosts, idx);
        s->lb_started = true;
    }
    const mp_host_t *host = &s->hosts->hosts[idx];
    snprintf(s->upstream_host, sizeof(s->upstream_host), "%s", host->addr.text);
    s->info.upstream_host = s->upstream_host;
    if (s->route->auto_host_rewrite && host->hostname != NULL) {
        free(s->req->authority);
        s->req->authority = mp_xstrdup(host->hostname);
    }
    /* We answer 100-continue ourselves so that the body starts flowing while we connect. */
    if (s->req->expect_continue && !s->req_complete) {
        /* A failed flush closes the connection, which frees s; dc itself is freed later. */
        mp_dconn_t *dc = s->dc;
        mp_buf_append_str(&dc->out, "HTTP/1.1 100 Continue\r\n\r\n");
        s->sent_100 = true;
        mp_dconn_flush(dc);
        if (dc->dead)
            return;
    }
    s->req_chunked_up = s->req->content_length < 0 && s->req->chunked;
    mp_upstream_attach(s, host);
}

/* Appends body bytes for the upstream, chunk-framed when the request goes chunked.  data lives
 * in the downstream's current input slice, referenced rather than copied. */
static void append_request_body(mp_stream_t *s, mp_buf_t *dst, const char *data, size_t len)
{
    mp_slice_t *slice = s->dc->in.head->slice;
    if (s->req_chunked_up) {
        mp_buf_append_hex(dst, len);
        mp_buf_append(dst, "\r\n", 2);
    }
    mp_buf_append_ref(dst, slice, data, len);
    if (s->req_chunked_up)
        mp_buf_append(dst, "\r\n", 2);
}

static bool upstream_ready(const mp_stream_t *s)
{
    return s->up != NULL && s->up->state == MP_UCONN_ACTIVE;
}

int mp_stream_on_request_body(mp_stream_t *s, const char *data, size_t len)
{
    s->info.bytes_received += len;
    if (s->resp_complete || (s->info.response_flags != 0 && s->up == NULL))
        return 0; /* answered already: the rest of the body is read and dropped */
    touch(s);
    mp_buf_t *dst = upstream_ready(s) ? &s->up->out : &s->req_pending;
    append_request_body(s, dst, data, len);
    if (upstream_ready(s))
        mp_uconn_write(s->up);
    size_t queued = mp_buf_len(&s->req_pending) + (s->up ? mp_buf_len(&s->up->out) : 0);
    if (queued > s->dc->buffer_limit)
        mp_dconn_block_read(s->dc, true);
    return 0;
}

static void append_request_end(mp_stream_t *s, mp_buf_t *dst, mp_headers_t *trailers)
{
    if (s->req_chunked_up)
        mp_h1_encode_last_chunk(dst, trailers);
}

int mp_stream_on_request_complete(mp_stream_t *s, mp_headers_t *trailers)
{
    s->req_complete = true;
    ev_timer_stop(loop_of(s), &s->request_timer);
    if (s->resp_complete) {
        if (trailers != NULL) {
            mp_headers_free(trailers);
            free(trailers);
        }
        stream_finish(s, true);
        return 0;
    }
    if (upstream_ready(s)) {
        append_request_end(s, &s->up->out, trailers);
        mp_uconn_write(s->up);
    } else {
        append_request_end(s, &s->req_pending, trailers);
    }
    if (trailers != NULL) {
        mp_headers_free(trailers);
        free(trailers);
    }
    if (s->route != NULL && s->route->action == MP_ACTION_ROUTE && s->cluster != NULL)
        start_timer(s, &s->route_timer, s->route->has_timeout ? s->route->timeout_ms : 15000);
    return 0;
}

void mp_stream_on_upstream_ready(mp_stream_t *s)
{
    mp_uconn_t *u = s->up;
    mp_stream__encode_request_head(s, &u->out);
    mp_buf_move(&u->out, &s->req_pending, mp_buf_len(&s->req_pending));
    mp_uconn_write(u);
    touch(s);
}

void mp_stream_upstream_drained(mp_stream_t *s)
{
    if (s->dc->read_blocked)
        mp_dconn_block_read(s->dc, false);
}

void mp_stream_downstream_drained(mp_stream_t *s)
{
    if (s->up != NULL && s->up->read_blocked && mp_buf_len(&s->dc->out) <= s->dc->buffer_limit / 2)
        mp_uconn_block_read(s->up, false);
}

void mp_stream_on_upstream_failure(mp_stream_t *s, uint32_t flag, const char *details)
{
    s->up = NULL; /* the connection is closing itself */
    if (s->resp_started) {
        /* Never complete a truncated response: close the client without the final chunk. */
        s->info.response_flags |= flag;
        mp_dconn_close(s->dc, details);
        return;
    }
    mp_stream_local_reply(s, 503, flag, "upstream connect error or disconnect/reset before headers",
                          details);
}

static void count_response(mp_stream_t *s, int status)
{
    if (s->cluster == NULL)
        return;
    const mp_cluster_stats_t *cs = &s->cluster->stats;
    mp_stat_id_t by_class[] = {
        0, 0, cs->upstream_rq_2xx, cs->upstream_rq_3xx, cs->upstream_rq_4xx, cs->upstream_rq_5xx};
    int cls = status / 100;
    if (cls >= 2 && cls <= 5)
        mp_stats_inc(by_class[cls]);
}

int mp_stream_on_response_head(mp_stream_t *s, mp_http_msg_t *resp)
{
    /* Every flush below may close dc, which frees s at once; dc itself is freed after the loop
     * iteration, so only dc is looked at afterwards. */
    mp_dconn_t *dc = s->dc;
    if (resp->status < 200) {
        /* 100 answers an Expect we already answered; other 1xx go to HTTP/1.1 clients. */
        if (resp->status != 100 && resp->status != 101 && s->req->version == MP_HTTP_11) {
            resp->content_length = -1;
            mp_h1_encode_response_head(&dc->out, resp, false);
            mp_dconn_flush(dc);
        }
        mp_http_msg_free(resp);
        return dc->dead ? MP_ERROR : 0;
    }
    touch(s);
    count_response(s, resp->status);
    mp_stream__prepare_response(s, resp);
    apply_response_mutations(s, &resp->headers);
    if (s->router_config == NULL || !s->router_config->suppress_envoy_headers) {
        uint64_t ms = (mp_now_ns() - s->info.start_ns) / 1000000;
        char t[24];
        int n = snprintf(t, sizeof(t), "%llu", (unsigned long long)ms);
        mp_headers_set(&resp->headers, "x-envoy-upstream-service-time", t, (size_t)n);
    }
    run_encode_headers(s, resp);
    s->resp = resp;
    s->info.response = resp;
    s->info.response_code = resp->status;
    s->resp_started = true;
    resp->version = MP_HTTP_11;
    /* Written with the first body bytes, by the upstream read handler's flush. */
    mp_h1_encode_response_head(&dc->out, resp, s->resp_chunked_down);
    return 0;
}

int mp_stream_on_response_body(mp_stream_t *s, const char *data, size_t len)
{
    if (s->head_request)
        return 0;
    mp_buf_t *out = &s->dc->out;
    if (s->resp_chunked_down) {
        mp_buf_append_hex(out, len);
        mp_buf_append(out, "\r\n", 2);
    }
    mp_buf_append_ref(out, s->up->in.head->slice, data, len);
    if (s->resp_chunked_down)
        mp_buf_append(out, "\r\n", 2);
    s->info.bytes_sent += len;
    touch(s);
    if (mp_buf_len(out) > s->dc->buffer_limit)
        mp_uconn_block_read(s->up, true);
    return 0;
}

int mp_stream_on_response_complete(mp_stream_t *s, mp_headers_t *trailers)
{
    if (s->resp_chunked_down)
        mp_h1_encode_last_chunk(&s->dc->out, trailers);
    if (trailers != NULL) {
        mp_headers_free(trailers);
        free(trailers);
    }
    s->resp_complete = true;
    if (!s->req_complete && s->up != NULL) {
        /* The upstream answered before the request ended (nginx's `return`, an auth refusal):
         * the rest of the body is not for it, so its connection cannot be reused. */
        mp_uconn_t *u = s->up;
        s->up = NULL;
        u->stream = NULL;
        u->reusable = false;
        mp_uconn_release(u);
    }
    if (!s->req_complete)
        discard_rest_of_request(s);
    stream_finish(s, true);
    return 0;
}

/* The response is complete before the request: a small known rest of the body is read and
 * dropped so that the connection stays usable for the next request; a large or unknown one, or
 * one the client waits to send until it sees a 100 that will never come, is not worth waiting
 * for: the connection closes after the response. */
static void discard_rest_of_request(mp_stream_t *s)
{
    const mp_http_msg_t *r = s->req;
    int64_t rest = r->content_length - (int64_t)s->info.bytes_received;
    bool waits_for_100 = r->expect_continue && !s->sent_100;
    if (r->chunked || rest > 65536 || waits_for_100)
        s->dc->close_after_write = true;
    else if (s->dc->read_blocked)
        mp_dconn_block_read(s->dc, false); /* the rest is dropped, not queued: read it */
}

void mp_stream__send_local(mp_stream_t *s, mp_http_msg_t *resp, const char *body, size_t len)
{
    apply_response_mutations(s, &resp->headers);
    run_encode_headers(s, resp);
    s->info.response_code = resp->status;
    if (!s->req_complete)
        discard_rest_of_request(s);
    mp_stream__prepare_response(s, resp);
    resp->version = MP_HTTP_11;
    if (!s->head_request && resp->content_length < 0)
        resp->content_length = (int64_t)len;
    mp_h1_encode_response_head(&s->dc->out, resp, false);
    if (!s->head_request && len > 0)
        mp_buf_append(&s->dc->out, body, len);
    s->info.bytes_sent += s->head_request ? 0 : len;
    s->resp = resp;
    s->info.response = resp;
    s->resp_started = true;
    s->resp_complete = true;
    stream_finish(s, true);
}

void mp_stream_local_reply(mp_stream_t *s, int status, uint32_t flags, const char *body,
                           const char *details)
{
    s->info.response_flags |= flags;
    s->info.response_code_details = details;
    if (s->up != NULL) {
        s->up->stream = NULL;
        s->up->reusable = false;
        mp_uconn_release(s->up);
        s->up = NULL;
    }
    if (s->resp_started) {
        mp_dconn_close(s->dc, details);
        return;
    }
    if (body == NULL)
        body = mp_http_reason(status);
    mp_http_msg_t *resp = mp_http_msg_new();
    resp->status = status;
    mp_headers_add_cstr(&resp->headers, "content-type", "text/plain");
    size_t len = strlen(body);
    resp->content_length = (int64_t)len;
    mp_stream__send_local(s, resp, body, len);
}

void mp_stream_abort(mp_stream_t *s, uint32_t flag)
{
    s->info.response_flags |= flag;
    if (s->up != NULL) {
        s->up->stream = NULL;
        s->up->reusable = false;
        mp_uconn_release(s->up);
        s->up = NULL;
    }
    mp_stats_inc(s->dc->hcm->stats.downstream_rq_rx_reset);
    stream_finish(s, false);
}

static void count_downstream(mp_stream_t *s)
{
    const mp_http_stats_t *st = &s->dc->hcm->stats;
    mp_stats_dec(st->downstream_rq_active);
    if (s->cluster != NULL)
        mp_stats_dec(s->cluster->stats.upstream_rq_active);
    if (s->info.response_code == 0)
        return;
    mp_stats_inc(st->downstream_rq_completed);
    mp_stat_id_t by_class[] = {0,
                               st->downstream_rq_1xx,
                               st->downstream_rq_2xx,
                               st->downstream_rq_3xx,
                               st->downstream_rq_4xx,
                               st->downstream_rq_5xx};
    int cls = s->info.response_code / 100;
    if (cls >= 1 && cls <= 5)
        mp_stats_inc(by_class[cls]);
}

static void write_access_logs(mp_stream_t *s)
{
    const mp_hcm_config_t *h = s->dc->hcm;
    s->info.end_ns = mp_now_ns();
    for (uint32_t i = 0; i < h->n_access_logs; i++)
        mp_access_log_write(&h->access_logs[i], &s->info);
}

static void stream_free(mp_stream_t *s)
{
    struct ev_loop *loop = loop_of(s);
    ev_timer_stop(loop, &s->route_timer);
    ev_timer_stop(loop, &s->idle_timer);
    ev_timer_stop(loop, &s->request_timer);
    if (s->hosts != NULL) {
        mp_pool_t *pool = s->cluster ? mp_worker_pool(s->dc->w, s->cluster) : NULL;
        if (pool != NULL && s->lb_started)
            mp_lb_request_end(pool->lb, s->hosts, s->host_idx);
        mp_hostset_release(s->hosts);
    }
    mp_buf_clear(&s->req_pending);
    mp_http_msg_free(s->req);
    if (s->resp != NULL)
        mp_http_msg_free(s->resp);
    mp_config_unref(s->config);
    free(s);
}

/* Ends the exchange: logs, counts, returns the upstream connection, frees the stream and lets
 * the downstream connection go on (downstream_alive) or not. */
static void stream_finish(mp_stream_t *s, bool downstream_alive)
{
    mp_dconn_t *dc = s->dc;
    if (downstream_alive && !s->req_complete && !dc->close_after_write)
        return; /* wait for the rest of the request */
    if (s->up != NULL) {
        mp_uconn_t *u = s->up;
        s->up = NULL;
        u->stream = NULL;
        mp_uconn_release(u);
    }
    write_access_logs(s);
    count_downstream(s);
    dc->stream = NULL;
    stream_free(s);
    if (downstream_alive)
        mp_dconn_stream_done(dc);
}
