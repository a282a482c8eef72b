/* One HTTP exchange through the connection manager: route it, answer it locally or carry it to
 * an upstream connection and back, time it out, log it and count it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "magpie/access_log.h"
#include "magpie/circuit.h"
#include "magpie/filter.h"
#include "magpie/grpc.h"
#include "magpie/log.h"
#include "magpie/outlier.h"
#include "magpie/route.h"
#include "magpie/route_hash.h"
#include "magpie/router.h"
#include "magpie/stats.h"
#include "stream_internal.h"

typedef enum finish_mode {
    FINISH_DONE,    /* the exchange ended normally */
    FINISH_RESET,   /* we reset the client's stream: the response cannot complete */
    FINISH_ABORTED, /* the client went away */
} finish_mode_t;

static void stream_finish(mp_stream_t *s, finish_mode_t mode);
static void start_upstream(mp_stream_t *s);
static void end_after_response(mp_stream_t *s);

static inline struct ev_loop *loop_of(const mp_stream_t *s)
{
    return s->conn->w->loop;
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

/* The stream idle timeout: the route's idle_timeout when it has one (0 disables), else the
 * connection manager's stream_idle_timeout. */
static uint64_t idle_timeout_ms(const mp_stream_t *s)
{
    if (s->route != NULL && s->route->has_idle_timeout)
        return s->route->idle_timeout_ms;
    return s->conn->hcm->stream_idle_timeout_ms;
}

/* Outlier detection hears how each upstream attempt ended: a status or an MP_OUTLIER_* event. */
static void report_outlier(mp_stream_t *s, mp_outlier_result_t r)
{
    if (s->cluster != NULL && s->hosts != NULL && s->host_idx >= 0 &&
        (uint32_t)s->host_idx < s->hosts->n)
        mp_outlier_report(s->cluster, &s->hosts->hosts[s->host_idx], r);
}

/* Route timeout, stream idle timeout and request timeout all end here. */
static void on_timeout(mp_stream_t *s, uint32_t flag, const char *details)
{
    const mp_hcm_config_t *h = s->conn->hcm;
    if (flag == MP_RF_UPSTREAM_TIMEOUT && s->cluster != NULL)
        mp_stats_inc(s->cluster->stats.upstream_rq_timeout); /* attempt_done told outliers */
    else if (flag == MP_RF_STREAM_IDLE_TIMEOUT)
        mp_stats_inc(h->stats.downstream_rq_idle_timeout);
    else
        mp_stats_inc(h->stats.downstream_rq_timeout);
    int status = (flag == MP_RF_UPSTREAM_TIMEOUT || s->req_complete) ? 504 : 408;
    s->req_timed_out = !s->req_complete; /* a slow request body is not waited for any longer */
    mp_stream_local_reply(
        s, status, flag,
        flag == MP_RF_UPSTREAM_TIMEOUT ? "upstream request timeout" : "stream timeout", details);
}

static void attempt_done(mp_stream_t *s, const mp_attempt_outcome_t *o);

static void on_route_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_stream_t *s = t->data;
    mp_attempt_outcome_t o = {MP_ATTEMPT_TIMEOUT, NULL, MP_RF_UPSTREAM_TIMEOUT, "response_timeout"};
    attempt_done(s, &o);
    ev_timer_stop(loop, &s->backoff_timer);
    on_timeout(s, MP_RF_UPSTREAM_TIMEOUT, "response_timeout");
}

/* Lets go of the current attempt's upstream request, resetting it. */
static void drop_upstream(mp_stream_t *s)
{
    if (s->up == NULL)
        return;
    mp_ustream_t *u = s->up;
    s->up = NULL;
    u->ops->detach(u, true);
}

/* A per-try (or per-try idle) timeout: the attempt is reset, and retried when the policy says
 * so; otherwise the answer is 504 UT, as for the route timeout. */
static void per_try_expired(mp_stream_t *s, const char *details)
{
    drop_upstream(s);
    mp_attempt_outcome_t o = {MP_ATTEMPT_TIMEOUT, NULL, MP_RF_UPSTREAM_TIMEOUT, details};
    attempt_done(s, &o);
    if (mp_stream__retry_decide(s, &o))
        return;
    mp_stream_local_reply(s, 504, MP_RF_UPSTREAM_TIMEOUT, "upstream request timeout", details);
}

static void on_per_try_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_stream_t *s = t->data;
    mp_stats_inc(s->cluster->stats.upstream_rq_per_try_timeout);
    per_try_expired(s, "upstream_per_try_timeout");
}

static void on_per_try_idle_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_stream_t *s = t->data;
    mp_stats_inc(s->cluster->stats.upstream_rq_per_try_idle_timeout);
    per_try_expired(s, "upstream_per_try_idle_timeout");
}

static void on_backoff_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_stream__start_attempt(t->data);
}

static void on_idle_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_stream_t *s = t->data;
    double timeout = (double)idle_timeout_ms(s) / 1000.0;
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

/* max_stream_duration (or the grpc-timeout it allows) ran out.  Envoy answers this locally with
 * 408/504 and DEADLINE_EXCEEDED for gRPC, and sets no response flag; we write DT, Envoy's letter
 * for a duration limit, so that the answer is explained in the access log. */
static void on_duration_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    mp_stream_t *s = t->data;
    mp_stats_inc(s->conn->hcm->stats.downstream_rq_max_duration_reached);
    s->req_timed_out = !s->req_complete;
    mp_stream_local_reply(s, s->req_complete ? 504 : 408, MP_RF_DURATION_TIMEOUT,
                          "downstream duration timeout", "max_duration_timeout");
}

static bool is_grpc_request(const mp_http_msg_t *req)
{
    const mp_header_t *ct = mp_headers_get(&req->headers, "content-type");
    return ct != NULL && strncmp(ct->value, "application/grpc", 16) == 0 &&
           (ct->value[16] == '\0' || ct->value[16] == '+' || ct->value[16] == ';');
}

mp_stream_t *mp_stream_new(mp_hconn_t *c, mp_http_msg_t *req)
{
    mp_stream_t *s = mp_xcalloc(1, sizeof(*s));
    s->conn = c;
    s->config = mp_config_ref(c->config);
    s->req = req;
    s->host_idx = -1;
    s->head_request = req->method != NULL && strcmp(req->method, "HEAD") == 0;
    mp_buf_init(&s->req_pending);
    gettimeofday(&s->info.start_time, NULL);
    s->info.start_ns = mp_now_ns();
    s->info.request = req;
    s->info.protocol = req->version;
    s->info.downstream_remote_address = c->peer;
    s->info.downstream_local_address = c->local;
    s->info.downstream_tls = mp_hconn_ident(c);
    s->grpc = is_grpc_request(req);
    ev_init(&s->route_timer, on_route_timer);
    s->route_timer.data = s;
    ev_init(&s->idle_timer, on_idle_timer);
    s->idle_timer.data = s;
    ev_init(&s->request_timer, on_request_timer);
    s->request_timer.data = s;
    ev_init(&s->duration_timer, on_duration_timer);
    s->duration_timer.data = s;
    ev_init(&s->per_try_timer, on_per_try_timer);
    s->per_try_timer.data = s;
    ev_init(&s->per_try_idle_timer, on_per_try_idle_timer);
    s->per_try_idle_timer.data = s;
    ev_init(&s->backoff_timer, on_backoff_timer);
    s->backoff_timer.data = s;
    mp_buf_init(&s->replay);
    const mp_hcm_config_t *h = c->hcm;
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
    const mp_hcm_config_t *h = s->conn->hcm;
    char *path = s->req->path;
    if (mp_stream__is_connect(s->req) && (path == NULL || path[0] == '\0'))
        return PATH_OK; /* authority-form: no path */
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
    mp_header_mutation_apply(&s->conn->hcm->routes->request_headers, hd);
}

static void apply_response_mutations(mp_stream_t *s, mp_headers_t *hd)
{
    if (s->route == NULL)
        return;
    if (s->wc != NULL)
        mp_header_mutation_apply(&s->wc->response_headers, hd);
    mp_header_mutation_apply(&s->route->response_headers, hd);
    mp_header_mutation_apply(&s->vhost->response_headers, hd);
    mp_header_mutation_apply(&s->conn->hcm->routes->response_headers, hd);
}

static void answer_redirect(mp_stream_t *s)
{
    char *location = mp_route_redirect_location(s->route, s->req);
    mp_stats_inc(s->conn->hcm->stats.rq_redirect);
    int code = s->route->redirect.response_code ? s->route->redirect.response_code : 301;
    mp_http_msg_t *resp = mp_http_msg_new();
    resp->status = code;
    resp->content_length = 0;
    mp_headers_add_cstr(&resp->headers, "location", location);
    free(location);
    mp_stream__send_local(s, resp, NULL, 0);
}

static bool request_grpc_timeout(const mp_stream_t *s, uint64_t *ms)
{
    const mp_header_t *h = mp_headers_get(&s->req->headers, "grpc-timeout");
    return h != NULL && mp_grpc_timeout_parse(h->value, ms) == 0;
}

/* The stream's duration limit, computed as Envoy's connection manager does: the grpc-timeout
 * header counts only when the route sets grpc_timeout_header_max, capped by it unless it is 0,
 * then less the offset (the offset is not applied to 0, and cannot go below 0).  Otherwise the
 * route's max_stream_duration, or the HCM's when the route has none; 0 there means no limit.
 * False when there is no limit; a true limit of 0 (grpc-timeout "0m") expires at once. */
static bool duration_limit(const mp_stream_t *s, bool has_header, uint64_t header_ms, uint64_t *ms)
{
    const mp_route_t *r = s->route;
    if (!has_header || !r->has_grpc_timeout_header_max) {
        *ms = r->has_max_stream_duration ? r->max_stream_duration_ms
                                         : s->conn->hcm->max_stream_duration_ms;
        return *ms != 0;
    }
    uint64_t t = header_ms;
    if (r->grpc_timeout_header_max_ms != 0 && t > r->grpc_timeout_header_max_ms)
        t = r->grpc_timeout_header_max_ms;
    uint64_t off = r->grpc_timeout_header_offset_ms;
    if (t != 0 && off != 0)
        t = off < t ? t - off : 0;
    *ms = t;
    return true;
}

/* Arms the duration timer, counted from the stream's start.  With the route's
 * max_stream_duration message present, a gRPC request's grpc-timeout is lowered to the limit
 * (or added) so that the server gives up no later than we do, as Envoy does. */
static void start_duration_timer(mp_stream_t *s)
{
    uint64_t header_ms = 0, limit;
    bool has_header = request_grpc_timeout(s, &header_ms);
    if (!duration_limit(s, has_header, header_ms, &limit))
        return;
    if (s->route->uses_stream_duration && s->grpc && (!has_header || limit < header_ms)) {
        char v[MP_GRPC_TIMEOUT_BUF];
        size_t n = mp_grpc_timeout_format(limit, v);
        mp_headers_set(&s->req->headers, "grpc-timeout", v, n);
    }
    uint64_t used_ms = (mp_now_ns() - s->info.start_ns) / 1000000;
    double left = limit > used_ms ? (double)(limit - used_ms) / 1000.0 : 0.0;
    ev_timer_set(&s->duration_timer, left, 0.0);
    ev_timer_start(loop_of(s), &s->duration_timer);
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
        mp_stats_inc(s->conn->hcm->stats.no_route);
        mp_stream_local_reply(s, 404, MP_RF_NO_ROUTE, NULL, "route_not_found");
        return;
    }
    s->info.route_name = r->name;
    switch (r->action) {
    case MP_ACTION_DIRECT_RESPONSE: {
        mp_stats_inc(s->conn->hcm->stats.rq_direct_response);
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
    start_duration_timer(s);
    if (s->route->has_idle_timeout)
        start_timer(s, &s->idle_timer, s->route->idle_timeout_ms);
    start_upstream(s);
}

/* Runs the listener's filter chain over the request head, from filter `first` on, until a filter
 * stops it (the terminal router always does). */
static void run_decode_headers(mp_stream_t *s, uint32_t first)
{
    const mp_hcm_config_t *h = s->conn->hcm;
    for (uint32_t i = first; i < h->n_http_filters; i++) {
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
    const mp_hcm_config_t *h = s->conn->hcm;
    for (uint32_t i = h->n_http_filters; i-- > 0;) {
        const mp_http_filter_t *f = &h->http_filters[i];
        if (f->ops->encode_headers != NULL &&
            f->ops->encode_headers(f->config, s, resp) == MP_FILTER_STOP)
            return;
    }
}

void mp_stream_on_request_head(mp_stream_t *s)
{
    path_verdict_t verdict = normalize_request_path(s);
    if (verdict == PATH_INVALID) {
        mp_stream_local_reply(s, 400, MP_RF_DOWNSTREAM_PROTOCOL_ERROR, "Bad Request",
                              "invalid_path");
        return;
    }
    if (verdict == PATH_REDIRECT) {
        redirect_to_own_path(s);
        return;
    }
    mp_stream__upgrade_capture(s);
    mp_stream__prepare_request(s);
    /* The route is found once, before the filters, so that each of them sees the same one. */
    s->route = mp_route_match(s->conn->hcm->routes, s->req, &s->vhost);
    if (!mp_stream__upgrade_decide(s))
        return;
    run_decode_headers(s, 0);
}

void mp_stream_continue_decoding(mp_stream_t *s, const void *filter_config)
{
    const mp_hcm_config_t *h = s->conn->hcm;
    for (uint32_t i = 0; i < h->n_http_filters; i++)
        if (h->http_filters[i].config == filter_config) {
            run_decode_headers(s, i + 1);
            return;
        }
}

/* We answer 100-continue ourselves so that the body starts flowing while we connect.  False
 * when writing it closed the client connection (which freed s). */
static bool answer_expect_continue(mp_stream_t *s)
{
    if (!s->req->expect_continue || s->req_complete)
        return true;
    mp_hconn_t *c = s->conn;
    mp_http_msg_t *cont = mp_http_msg_new();
    cont->status = 100;
    c->ops->send_informational(s, cont);
    mp_http_msg_free(cont);
    return !c->dead;
}

/* Every upstream attempt ends here exactly once, with how it ended (a response head, a failed
 * connect, a reset, a timeout); a downstream abort ends an attempt without an outcome.  Per-host
 * outcome consumers (outlier detection) hook in here: the host is s->hosts->hosts[s->host_idx]. */
static void attempt_done(mp_stream_t *s, const mp_attempt_outcome_t *o)
{
    if (!s->attempt_open)
        return;
    s->attempt_open = false;
    /* Outlier detection hears how every attempt ended, retried or not. */
    if (o->kind == MP_ATTEMPT_RESPONSE && o->resp != NULL)
        report_outlier(s, o->resp->status);
    else
        report_outlier(s, mp_outlier_result_of_flag(o->flag));
    ev_timer_stop(loop_of(s), &s->per_try_timer);
    ev_timer_stop(loop_of(s), &s->per_try_idle_timer);
}

/* The least-request balancer's count for the attempt's host ends with the attempt's upstream
 * request (at a retry) or with the stream. */
static void end_lb_request(mp_stream_t *s)
{
    if (!s->lb_started)
        return;
    mp_pool_t *pool = mp_worker_pool(s->conn->w, s->cluster);
    if (pool != NULL)
        mp_lb_request_end(pool->lb, s->hosts, s->host_idx);
    s->lb_started = false;
}

static bool was_tried(const mp_stream_t *s, int idx)
{
    for (uint32_t i = 0; i < s->n_tried; i++)
        if (s->tried[i] == idx)
            return true;
    return false;
}

/* With previous_hosts, a retry goes to a host not tried yet: the balancer is asked again (at
 * most host_selection_retry_max_attempts more times, each time excluding its last answer), and
 * its last answer is used if every try lands on a tried host. */
static int pick_host(mp_stream_t *s, mp_pool_t *pool)
{
    if (s->hosts->n == 0)
        return -1;
    if (pool == NULL)
        return (int)(mp_random() % s->hosts->n);
    /* The same request hash on every attempt: a hashing cluster walks on past excluded hosts. */
    uint64_t hash = mp_route_hash(s->route, s->req, s->conn->peer);
    int idx = mp_lb_pick_hash(pool->lb, s->hosts, -1, hash);
    if (s->retry == NULL || !s->retry->previous_hosts)
        return idx;
    for (uint32_t i = 0; i < s->retry->host_selection_max_attempts && idx >= 0 && was_tried(s, idx);
         i++)
        idx = mp_lb_pick_hash(pool->lb, s->hosts, idx, hash);
    return idx;
}

static void note_attempt(mp_stream_t *s, int idx)
{
    s->host_idx = idx;
    s->attempt_open = true;
    s->info.attempt_count++;
    if (s->n_tried < MP_ARRAY_SIZE(s->tried))
        s->tried[s->n_tried++] = idx;
    if (s->vhost->include_request_attempt_count) {
        char v[12];
        int n = snprintf(v, sizeof(v), "%u", s->info.attempt_count);
        mp_headers_set(&s->req->headers, "x-envoy-attempt-count", v, (size_t)n);
    }
}

/* Per-try timers run from the end of the request (Envoy's router) until the response head. */
static void arm_per_try(mp_stream_t *s)
{
    if (!s->attempt_open || !s->req_complete || s->tunnel)
        return;
    start_timer(s, &s->per_try_timer, s->per_try_ms);
    start_timer(s, &s->per_try_idle_timer, s->per_try_idle_ms);
}

void mp_stream__start_attempt(mp_stream_t *s)
{
    mp_cluster_t *c = s->cluster;
    mp_stats_inc(c->stats.upstream_rq_total);
    end_lb_request(s);
    mp_pool_t *pool = mp_worker_pool(s->conn->w, c);
    int idx = pick_host(s, pool);
    if (idx < 0) {
        mp_stats_inc(c->stats.upstream_cx_none_healthy);
        mp_stream_local_reply(s, 503, MP_RF_NO_HEALTHY_UPSTREAM, "no healthy upstream",
                              "no_healthy_upstream");
        return;
    }
    note_attempt(s, idx);
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
    if (s->info.attempt_count == 1 && !answer_expect_continue(s))
        return;
    arm_per_try(s);
    mp_upstream_attach(s, host);
}

static void start_upstream(mp_stream_t *s)
{
    mp_stats_inc(s->cluster->stats.upstream_rq_active);
    /* max_requests (circuit breaking): held from here until the stream is freed, across its
     * retries. */
    s->priority = s->route->priority;
    if (!mp_cb_try_acquire(s->cluster, s->priority, MP_CB_REQUESTS)) {
        mp_stream_overflow(s);
        return;
    }
    s->cb_request_held = true;
    s->hosts = mp_cluster_hosts_acquire(s->cluster);
    mp_stream__retry_init(s);
    /* A filter held the request (a fault delay) until after it was complete: the route timeout
     * starts now, when the router sees it, as Envoy's does. */
    if (s->req_complete && !s->route->uses_stream_duration && s->upgrade == NULL)
        start_timer(s, &s->route_timer, s->global_timeout_ms);
    mp_stream__start_attempt(s);
}

static bool upstream_ready(const mp_stream_t *s)
{
    return s->up != NULL && s->up->ready;
}

/* An upgrade awaits its answer: request bytes wait for the tunnel (hostile-inputs 26). */
static bool holding(const mp_stream_t *s)
{
    return s->upgrade != NULL && !s->tunnel;
}

/* Whether request bytes (queued here or at the upstream) passed the connection's limit. */
static void check_request_watermark(mp_stream_t *s)
{
    size_t queued = mp_buf_len(&s->req_pending) + (s->up ? s->up->ops->queued(s->up) : 0);
    if (queued > s->conn->buffer_limit)
        s->conn->ops->block_read(s, true);
}

int mp_stream_on_request_body(mp_stream_t *s, mp_slice_t *slice, const char *data, size_t len)
{
    s->info.bytes_received += len;
    if ((s->resp_complete && !s->tunnel) || s->upgrade_refused ||
        (s->info.response_flags != 0 && s->up == NULL))
        return 0; /* answered already (or meant for a refused tunnel): read and dropped */
    touch(s);
    mp_stream__replay_keep(s, slice, data, len);
    if (upstream_ready(s) && !holding(s))
        s->up->ops->send_data(s->up, slice, data, len);
    else
        mp_buf_append_ref(&s->req_pending, slice, data, len);
    check_request_watermark(s);
    return 0;
}

int mp_stream_on_request_complete(mp_stream_t *s, mp_headers_t *trailers)
{
    if (holding(s) && !s->upgrade_req_ended) {
        /* The upgrade's answer decides whether this was the end of the request. */
        s->upgrade_req_ended = true;
        mp_headers_delete(trailers);
        start_timer(s, &s->route_timer, s->global_timeout_ms);
        return 0;
    }
    s->req_complete = true;
    ev_timer_stop(loop_of(s), &s->request_timer);
    if (s->resp_complete) {
        mp_headers_delete(trailers);
        stream_finish(s, FINISH_DONE);
        return 0;
    }
    if (upstream_ready(s)) {
        s->up->ops->send_end(s->up, trailers);
        if (mp_stream__replayable(s) && trailers != NULL) {
            mp_headers_delete(s->req_trailers);
            s->req_trailers = trailers; /* kept for a retry */
        } else {
            mp_headers_delete(trailers);
        }
    } else if (trailers != NULL) {
        mp_headers_delete(s->req_trailers);
        s->req_trailers = trailers;
    }
    /* A route with a max_stream_duration message uses the duration limit instead of the route
     * timeout (Envoy's router leaves its global timeout unset for such "new timeouts"). */
    if (s->route != NULL && s->route->action == MP_ACTION_ROUTE && s->cluster != NULL &&
        !s->tunnel && !s->route->uses_stream_duration)
        start_timer(s, &s->route_timer, s->global_timeout_ms);
    arm_per_try(s);
    return 0;
}

void mp_stream_on_upstream_ready(mp_stream_t *s)
{
    mp_ustream_t *u = s->up;
    u->ready = true;
    if (holding(s)) {
        u->ops->send_head(u, s->req, false); /* req_pending waits for the tunnel */
        touch(s);
        return;
    }
    /* A retry resends the whole body kept so far, which includes what is pending. */
    mp_buf_t *body = s->info.attempt_count > 1 ? &s->replay : &s->req_pending;
    bool end = s->req_complete && mp_buf_len(body) == 0 && s->req_trailers == NULL;
    u->ops->send_head(u, s->req, end);
    for (mp_buf_seg_t *seg = body->head; seg != NULL; seg = seg->next)
        u->ops->send_data(u, seg->slice, seg->slice->data + seg->off, seg->len);
    mp_buf_clear(&s->req_pending);
    if (s->req_complete && !end) {
        u->ops->send_end(u, s->req_trailers);
        if (!mp_stream__replayable(s)) {
            mp_headers_delete(s->req_trailers);
            s->req_trailers = NULL;
        }
    }
    touch(s);
}

void mp_stream_upstream_drained(mp_stream_t *s)
{
    s->conn->ops->block_read(s, false);
}

void mp_stream_downstream_drained(mp_stream_t *s)
{
    if (s->up != NULL && s->conn->ops->queued(s) <= s->conn->buffer_limit / 2)
        s->up->ops->block_read(s->up, false);
}

static mp_attempt_kind_t failure_kind(uint32_t flag, const char *details)
{
    if (flag == MP_RF_UPSTREAM_CONNECT_FAIL)
        return MP_ATTEMPT_CONNECT_FAILURE;
    if (details != NULL && (strcmp(details, "upstream_refused_stream") == 0 ||
                            strcmp(details, "upstream_goaway_refused") == 0))
        return MP_ATTEMPT_REFUSED_STREAM;
    return MP_ATTEMPT_RESET;
}

void mp_stream_on_upstream_failure(mp_stream_t *s, uint32_t flag, const char *details)
{
    s->up = NULL; /* the upstream side has let go already */
    if (!s->resp_started) {
        mp_attempt_outcome_t o = {failure_kind(flag, details), NULL, flag, details};
        attempt_done(s, &o);
        if (mp_stream__retry_decide(s, &o))
            return;
    }
    if (s->resp_started) {
        /* Never complete a truncated response: reset the client's stream instead. */
        s->info.response_flags |= flag;
        s->info.response_code_details = details;
        stream_finish(s, FINISH_RESET);
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

static void set_service_time(mp_stream_t *s, mp_http_msg_t *resp)
{
    if (s->router_config != NULL && s->router_config->suppress_envoy_headers)
        return;
    uint64_t ms = (mp_now_ns() - s->info.start_ns) / 1000000;
    char t[24];
    int n = snprintf(t, sizeof(t), "%llu", (unsigned long long)ms);
    mp_headers_set(&resp->headers, "x-envoy-upstream-service-time", t, (size_t)n);
}

/* A final response head ends the attempt; when it is retried, it is dropped and the attempt's
 * upstream request reset (the retry starts from the backoff timer). */
static bool retry_response(mp_stream_t *s, mp_http_msg_t *resp)
{
    mp_attempt_outcome_t o = {MP_ATTEMPT_RESPONSE, resp, 0, NULL};
    attempt_done(s, &o);
    if (!mp_stream__retry_decide(s, &o))
        return false;
    mp_http_msg_free(resp);
    drop_upstream(s);
    return true;
}

static void set_attempt_count(mp_stream_t *s, mp_http_msg_t *resp)
{
    if (!s->vhost->include_attempt_count_in_response)
        return;
    char v[12];
    int n = snprintf(v, sizeof(v), "%u", s->info.attempt_count);
    mp_headers_set(&resp->headers, "x-envoy-attempt-count", v, (size_t)n);
}

int mp_stream_on_response_head(mp_stream_t *s, mp_http_msg_t *resp, bool end_stream)
{
    /* Any send below may close an HTTP/1.1 client connection, which frees s at once; the
     * connection itself is freed after the loop iteration, so only it is looked at afterwards. */
    mp_hconn_t *c = s->conn;
    bool tunnel = holding(s) && mp_stream__upgrade_answer(s, resp);
    if (resp->status < 200 && !tunnel) {
        /* 100 answers an Expect we already answered; 101 is never asked for here. */
        if (resp->status != 100 && resp->status != 101)
            c->ops->send_informational(s, resp);
        mp_http_msg_free(resp);
        return c->dead ? MP_ERROR : 0;
    }
    touch(s);
    count_response(s, resp->status);
    if (!tunnel && retry_response(s, resp))
        return 0;
    mp_stream__prepare_response(s, resp);
    if (tunnel) {
        /* The route timeout bounds waiting for the answer, not the tunnel's life. */
        ev_timer_stop(loop_of(s), &s->route_timer);
        ev_timer_stop(loop_of(s), &s->request_timer);
        resp->content_length = -1;
        resp->chunked = false;
    }
    apply_response_mutations(s, &resp->headers);
    set_service_time(s, resp);
    set_attempt_count(s, resp);
    run_encode_headers(s, resp);
    s->resp = resp;
    s->info.response = resp;
    s->info.response_code = resp->status;
    s->resp_started = true;
    s->resp_end_sent = !tunnel && (end_stream || s->head_request);
    c->ops->send_head(s, resp, s->resp_end_sent);
    if (c->dead)
        return MP_ERROR;
    if (tunnel)
        mp_stream__tunnel_begin(s);
    return 0;
}

int mp_stream_on_response_body(mp_stream_t *s, mp_slice_t *slice, const char *data, size_t len)
{
    if (s->resp_end_sent)
        return 0; /* HEAD: the upstream's body (if it sent one) is not for the client */
    s->conn->ops->send_data(s, slice, data, len);
    s->info.bytes_sent += len;
    touch(s);
    if (s->up != NULL && s->conn->ops->queued(s) > s->conn->buffer_limit)
        s->up->ops->block_read(s->up, true);
    return 0;
}

int mp_stream_on_response_complete(mp_stream_t *s, mp_headers_t *trailers)
{
    if (!s->resp_end_sent)
        s->conn->ops->send_end(s, trailers);
    mp_headers_delete(trailers);
    s->resp_complete = true;
    if (!s->req_complete && s->up != NULL && !s->tunnel) {
        /* The upstream answered before the request ended (nginx's `return`, an auth refusal):
         * the rest of the body is not for it, so its connection cannot be reused. */
        mp_ustream_t *u = s->up;
        s->up = NULL;
        u->ops->detach(u, true);
    }
    end_after_response(s);
    return 0;
}

/* The response is complete: end the stream, or, when the request is not, let the codec read
 * and drop the rest of it first (an HTTP/1.1 connection stays usable that way). */
static void end_after_response(mp_stream_t *s)
{
    if (s->tunnel && !s->req_complete)
        return; /* half-closed: the client's end of the tunnel finishes it */
    if (!s->req_complete && s->conn->ops->abandon_request(s))
        return; /* mp_stream_on_request_complete finishes it */
    stream_finish(s, FINISH_DONE);
}

/* Copies body into a buffer and sends it downstream by reference. */
static void send_local_body(mp_stream_t *s, const char *body, size_t len)
{
    mp_buf_t b;
    mp_buf_init(&b);
    mp_buf_append(&b, body, len);
    for (mp_buf_seg_t *seg = b.head; seg != NULL; seg = seg->next)
        s->conn->ops->send_data(s, seg->slice, seg->slice->data + seg->off, seg->len);
    mp_buf_clear(&b);
}

void mp_stream__send_local(mp_stream_t *s, mp_http_msg_t *resp, const char *body, size_t len)
{
    apply_response_mutations(s, &resp->headers);
    run_encode_headers(s, resp);
    s->info.response_code = resp->status;
    mp_stream__prepare_response(s, resp);
    if (!s->head_request && resp->content_length < 0 && !s->grpc)
        resp->content_length = (int64_t)len;
    s->resp = resp;
    s->info.response = resp;
    s->resp_started = true;
    s->resp_complete = true;
    /* The codec decides about the rest of the request before the head goes out: an HTTP/1.1
     * connection that will close says so in the head. */
    bool wait = !s->req_complete && s->conn->ops->abandon_request(s);
    mp_hconn_t *c = s->conn;
    bool body_follows = !s->head_request && len > 0;
    s->resp_end_sent = !body_follows;
    c->ops->send_head(s, resp, !body_follows);
    if (body_follows && !c->dead) {
        send_local_body(s, body, len);
        s->info.bytes_sent += len;
        if (!c->dead)
            c->ops->send_end(s, NULL);
    }
    if (c->dead || wait)
        return; /* freed by the close, or finished when the request completes */
    stream_finish(s, FINISH_DONE);
}

/* gRPC clients read a failure from grpc-status, not from the HTTP status (which is 200). */
static int grpc_status_for(int http_status, uint32_t flags)
{
    if (flags & (MP_RF_UPSTREAM_TIMEOUT | MP_RF_DURATION_TIMEOUT | MP_RF_STREAM_IDLE_TIMEOUT))
        return 4; /* DEADLINE_EXCEEDED */
    switch (http_status) {
    case 400:
        return 13; /* INTERNAL */
    case 401:
        return 16; /* UNAUTHENTICATED */
    case 403:
        return 7; /* PERMISSION_DENIED */
    case 404:
        return 12; /* UNIMPLEMENTED */
    case 429:
    case 502:
    case 503:
    case 504:
        return 14; /* UNAVAILABLE */
    default:
        return 2; /* UNKNOWN */
    }
}

static void send_grpc_local(mp_stream_t *s, int status, uint32_t flags, const char *message)
{
    mp_http_msg_t *resp = mp_http_msg_new();
    resp->status = 200;
    resp->content_length = -1;
    char code[12];
    snprintf(code, sizeof(code), "%d", grpc_status_for(status, flags));
    mp_headers_add_cstr(&resp->headers, "content-type", "application/grpc");
    mp_headers_add_cstr(&resp->headers, "grpc-status", code);
    mp_headers_add_cstr(&resp->headers, "grpc-message", message);
    mp_stream__send_local(s, resp, NULL, 0);
}

void mp_stream_local_reply(mp_stream_t *s, int status, uint32_t flags, const char *body,
                           const char *details)
{
    s->info.response_flags |= flags;
    s->info.response_code_details = details;
    if (s->up != NULL) {
        mp_ustream_t *u = s->up;
        s->up = NULL;
        u->ops->detach(u, true);
    }
    if (s->resp_started) {
        stream_finish(s, FINISH_RESET);
        return;
    }
    if (body == NULL)
        body = mp_http_reason(status);
    if (s->grpc) {
        send_grpc_local(s, status, flags, body);
        return;
    }
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
    mp_stats_inc(s->conn->hcm->stats.downstream_rq_rx_reset);
    stream_finish(s, FINISH_ABORTED);
}

static void count_downstream(mp_stream_t *s)
{
    const mp_http_stats_t *st = &s->conn->hcm->stats;
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
    const mp_hcm_config_t *h = s->conn->hcm;
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
    ev_timer_stop(loop, &s->duration_timer);
    ev_timer_stop(loop, &s->per_try_timer);
    ev_timer_stop(loop, &s->per_try_idle_timer);
    ev_timer_stop(loop, &s->backoff_timer);
    if (s->hosts != NULL) {
        end_lb_request(s);
        mp_hostset_release(s->hosts);
    }
    if (s->cb_request_held)
        mp_cb_release(s->cluster, s->priority, MP_CB_REQUESTS);
    mp_stream__retry_free(s);
    mp_filter_states_destroy(&s->filter_states);
    mp_buf_clear(&s->req_pending);
    mp_headers_delete(s->req_trailers);
    mp_stream__upgrade_free(s);
    mp_http_msg_free(s->req);
    if (s->resp != NULL)
        mp_http_msg_free(s->resp);
    mp_config_unref(s->config);
    free(s);
}

/* Ends the exchange: returns the upstream request, logs, counts, frees the stream and tells
 * the downstream codec, which goes on with its connection (or resets the client's stream). */
static void stream_finish(mp_stream_t *s, finish_mode_t mode)
{
    if (s->up != NULL) {
        mp_ustream_t *u = s->up;
        s->up = NULL;
        u->ops->detach(u, !(s->resp_complete && s->req_complete));
    }
    if (mode == FINISH_RESET)
        mp_stats_inc(s->conn->hcm->stats.downstream_rq_tx_reset);
    write_access_logs(s);
    count_downstream(s);
    mp_hconn_t *c = s->conn;
    void *codec = s->codec;
    stream_free(s);
    c->ops->detach(c, codec, mode == FINISH_RESET);
}
