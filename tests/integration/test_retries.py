"""magpie <-> misbehaving upstreams (mp.TestUpstream /fail/<n>/<how>): retry policies as Envoy's
router applies them.  Each test asserts the client's status and the stat, flag or upstream
count that proves how many attempts were made and why."""

import socket
import threading
import time

import mp

LOG = "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_REQUEST_ATTEMPT_COUNT%\\n"


def config(ports, retry="", route_extra="", vhost_extra="", hcm_extra="", lb="ROUND_ROBIN"):
    """One listener, one route to cluster c1 over the given upstream ports.  retry: YAML lines of
    the route's retry_policy (indented 18)."""
    eps = "".join("        - endpoint: {address: {socket_address: {address: 127.0.0.1, "
                  "port_value: %d}}}\n" % p for p in ports)
    rp = ("                  retry_policy:\n" + retry) if retry else ""
    return """\
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $admin}}
static_resources:
  listeners:
  - name: l1
    address: {socket_address: {address: 127.0.0.1, port_value: $port}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
%s
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: $dir/access.log
              log_format: {text_format_source: {inline_string: "%s"}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: vh
              domains: ["*"]
%s
              routes:
              - match: {prefix: "/"}
%s                route:
                  cluster: c1
%s
  clusters:
  - name: c1
    type: STATIC
    connect_timeout: 1s
    lb_policy: %s
    load_assignment:
      cluster_name: c1
      endpoints:
      - lb_endpoints:
%s""" % (hcm_extra, LOG, vhost_extra, route_extra, rp.rstrip("\n"), lb, eps)


def start(ports, **kw):
    port = mp.free_port()
    m = mp.Magpie(config(ports, **kw), ports={"port": port})
    return m, port


def log_fields(m, n=1):
    return m.access_lines(n)[-1].split(" ")


def post(port, path, body):
    with mp.Conn(port) as c:
        return c.request("POST", path, body=body)


def stat(m, name):
    return m.stats().get("cluster.c1." + name, 0)


def test_5xx_retried_then_success():
    up = mp.TestUpstream()
    m, port = start([up.port], retry="                    retry_on: 5xx\n")
    r = mp.get(port, "/fail/1/503")
    mp.eq(r.status, 200, "the retry's answer reaches the client")
    mp.eq(up.fail_counts["/fail/1/503"], 2, "two attempts reached the upstream")
    mp.eq(log_fields(m), ["200", "-", "2"], "access log: code, no flag, 2 attempts")
    mp.eq(stat(m, "upstream_rq_retry"), 1, "upstream_rq_retry")
    mp.eq(stat(m, "upstream_rq_retry_success"), 1, "upstream_rq_retry_success")
    mp.eq(stat(m, "upstream_rq_retry_backoff_exponential"), 1, "backoff counted")


def test_num_retries_exhausted_is_urx():
    up = mp.TestUpstream()
    m, port = start([up.port], retry="                    retry_on: 5xx\n"
                                      "                    num_retries: 2\n")
    r = mp.get(port, "/fail/9/503")
    mp.eq(r.status, 503, "the last upstream answer is passed on")
    mp.eq(up.fail_counts["/fail/9/503"], 3, "1 + num_retries attempts")
    mp.eq(log_fields(m), ["503", "URX", "3"], "URX: retries exhausted")
    mp.eq(stat(m, "upstream_rq_retry_limit_exceeded"), 1, "limit exceeded counted")


def test_default_num_retries_is_one():
    up = mp.TestUpstream()
    m, port = start([up.port], retry="                    retry_on: 5xx\n")
    mp.eq(mp.get(port, "/fail/9/500").status, 500, "status")
    mp.eq(up.fail_counts["/fail/9/500"], 2, "one retry by default")


def test_conditions():
    """Each retry_on class retries what it names and nothing else."""
    up = mp.TestUpstream()
    retry = ("                    retry_on: gateway-error,retriable-4xx,retriable-status-codes,"
             "retriable-headers\n"
             "                    retriable_status_codes: [418]\n"
             "                    retriable_headers: [{name: x-retry-me, present_match: true}]\n")
    m, port = start([up.port], retry=retry)
    cases = [("502", 200), ("503", 200), ("504", 200), ("409", 200), ("418", 200),
             ("500", 500), ("404", 404), ("429", 429)]
    for code, want in cases:
        path = "/fail/1/%s" % code
        mp.eq(mp.get(port, path).status, want, "status for %s" % code)
        mp.eq(up.fail_counts[path], 2 if want == 200 else 1, "attempts for %s" % code)


def test_retriable_headers_matcher():
    up = mp.TestUpstream()
    retry = ("                    retry_on: retriable-headers\n"
             "                    retriable_headers: [{name: x-fail, string_match: {exact: 'yes'}}]\n")
    m, port = start([up.port], retry=retry)
    mp.eq(mp.get(port, "/fail/1/500").status, 200, "x-fail: yes matched, retried")
    mp.eq(up.fail_counts["/fail/1/500"], 2, "attempts")


def test_reset_and_connect_failure():
    up = mp.TestUpstream()
    m, port = start([up.port], retry="                    retry_on: reset\n")
    mp.eq(mp.get(port, "/fail/1/reset").status, 200, "reset retried")
    mp.eq(mp.get(port, "/fail/1/close").status, 200, "close before response retried")
    mp.eq(mp.get(port, "/fail/1/503").status, 503, "reset does not retry a 503")
    # connect-failure: one host refuses; the retry (previous_hosts) goes to the other.
    up2 = mp.TestUpstream()
    m2, port2 = start([mp.refused_port(), up2.port],
                      retry="                    retry_on: connect-failure\n"
                            "                    retry_host_predicate:\n"
                            "                    - name: envoy.retry_host_predicates.previous_hosts\n")
    for i in range(4):
        mp.eq(mp.get(port2, "/echo").status, 200, "request %d served despite the dead host" % i)
    mp.check(stat(m2, "upstream_rq_retry") >= 1, "some request met the refusing host first")


def test_previous_hosts_spreads_over_three():
    ups = [mp.TestUpstream() for _ in range(3)]
    retry = ("                    retry_on: 5xx\n"
             "                    num_retries: 2\n"
             "                    host_selection_retry_max_attempts: 30\n"
             "                    retry_host_predicate:\n"
             "                    - name: envoy.retry_host_predicates.previous_hosts\n")
    m, port = start([u.port for u in ups], retry=retry, lb="RANDOM")
    # Every host fails its first request on this path: three attempts must meet three hosts.
    r = mp.get(port, "/fail/1/503")
    mp.eq(r.status, 503, "all three hosts failed once")
    mp.eq([u.fail_counts.get("/fail/1/503", 0) for u in ups], [1, 1, 1], "one attempt per host")
    r = mp.get(port, "/fail/1/503")
    mp.eq(r.status, 200, "now every host has failed once: the next attempt succeeds")


def test_backoff_bounded():
    up = mp.TestUpstream()
    m, port = start([up.port], retry="                    retry_on: 5xx\n"
                                      "                    num_retries: 3\n"
                                      "                    retry_back_off: {base_interval: 0.1s, "
                                      "max_interval: 0.2s}\n")
    t0 = time.monotonic()
    mp.eq(mp.get(port, "/fail/3/503").status, 200, "fourth attempt succeeds")
    took = time.monotonic() - t0
    # Back-offs are at most 100, 200 and 200 ms (capped): well under 3 s even on a slow box.
    mp.check(took < 3.0, "three back-offs took %.2fs" % took)
    mp.eq(stat(m, "upstream_rq_retry_backoff_exponential"), 3, "three back-offs")


def _silent_server():
    """A listening socket that accepts nothing and answers nothing: attempts to it time out."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    mp.on_cleanup(s.close)
    return s.getsockname()[1]


def test_per_try_timeout_then_other_host():
    up = mp.TestUpstream()
    retry = ("                    retry_on: 5xx\n"
             "                    per_try_timeout: 0.3s\n"
             "                    retry_host_predicate:\n"
             "                    - name: envoy.retry_host_predicates.previous_hosts\n")
    m, port = start([_silent_server(), up.port], retry=retry)
    for i in range(2):  # round robin: one of the two starts at the silent host
        t0 = time.monotonic()
        mp.eq(mp.get(port, "/echo").status, 200, "request %d answered by the live host" % i)
        mp.check(time.monotonic() - t0 < 5.0, "per-try timeout bounded the wait")
    n = stat(m, "upstream_rq_per_try_timeout")
    mp.check(1 <= n <= 2, "per-try timeouts counted (%d)" % n)


def test_per_try_timeout_without_retry_is_504_ut():
    m, port = start([_silent_server()], retry="                    retry_on: connect-failure\n"
                                              "                    per_try_timeout: 0.3s\n")
    r = mp.get(port, "/x")
    mp.eq(r.status, 504, "status")
    mp.eq(r.body, b"upstream request timeout", "body")
    mp.eq(log_fields(m)[:2], ["504", "UT"], "flag UT")


def test_post_body_replayed_under_limit_only():
    up = mp.TestUpstream()
    m, port = start([up.port], retry="                    retry_on: 5xx\n",
                    route_extra="                per_request_buffer_limit_bytes: 4096\n")
    small = bytes(range(256)) * 8  # 2 KiB
    r = post(port, "/fail/1/503/a", small)
    mp.eq(r.status, 200, "small body retried")
    import hashlib
    mp.eq(r.json()["body_sha"], hashlib.sha256(small).hexdigest(), "same body resent")
    big = b"z" * 20000
    r = post(port, "/fail/1/503/b", big)
    mp.eq(r.status, 503, "a body over the buffer limit is not retried")
    mp.eq(up.fail_counts["/fail/1/503/b"], 1, "one attempt")


HCM_REMOTE = "          use_remote_address: true\n"


def test_x_envoy_headers_from_internal_client():
    up = mp.TestUpstream()
    m, port = start([up.port], hcm_extra=HCM_REMOTE)
    # Loopback without x-forwarded-for, use_remote_address: an internal client.
    r = mp.get(port, "/fail/1/503", headers=list({"x-envoy-retry-on": "5xx"}.items()))
    mp.eq(r.status, 200, "x-envoy-retry-on honoured")
    r = mp.get(port, "/fail/2/503/m", headers=list({"x-envoy-retry-on": "5xx",
                                               "x-envoy-max-retries": "2"}.items()))
    mp.eq(r.status, 200, "x-envoy-max-retries honoured")
    r = mp.get(port, "/echo", headers=list({"x-envoy-retry-on": "5xx",
                                       "x-envoy-upstream-rq-timeout-ms": "1234"}.items()))
    names = {k.lower(): v for k, v in r.json()["headers"]}
    mp.check("x-envoy-retry-on" not in names, "retry header not forwarded")
    mp.check("x-envoy-upstream-rq-timeout-ms" not in names, "timeout header not forwarded")
    mp.eq(names.get("x-envoy-expected-rq-timeout-ms"), "1234", "expected timeout told upstream")
    t0 = time.monotonic()
    r = mp.get(port, "/delay/3000", headers=list({"x-envoy-upstream-rq-timeout-ms": "200"}.items()))
    mp.eq(r.status, 504, "x-envoy-upstream-rq-timeout-ms honoured")
    mp.check(time.monotonic() - t0 < 2.5, "timed out early")


def test_x_envoy_headers_from_external_client_ignored():
    up = mp.TestUpstream()
    m, port = start([up.port], hcm_extra=HCM_REMOTE)
    # With use_remote_address, a request that already has x-forwarded-for is external.
    r = mp.get(port, "/fail/1/503", headers=list({"x-envoy-retry-on": "5xx",
                                             "x-forwarded-for": "203.0.113.9"}.items()))
    mp.eq(r.status, 503, "x-envoy-retry-on ignored")
    mp.eq(up.fail_counts["/fail/1/503"], 1, "one attempt")
    r = mp.get(port, "/echo", headers=list({"x-envoy-retry-on": "5xx", "x-forwarded-for": "1.2.3.4",
                                       "x-envoy-upstream-rq-timeout-ms": "1"}.items()))
    mp.eq(r.status, 200, "timeout header ignored")
    names = {k.lower(): v for k, v in r.json()["headers"]}
    mp.check("x-envoy-retry-on" not in names, "stripped before forwarding")
    # Without use_remote_address: no x-forwarded-for means external ...
    up2 = mp.TestUpstream()
    m2, port2 = start([up2.port])
    mp.eq(mp.get(port2, "/fail/1/503", headers=list({"x-envoy-retry-on": "5xx"}.items())).status, 503,
          "external without x-forwarded-for")
    # ... and a single internal address in it means internal.
    mp.eq(mp.get(port2, "/fail/1/503/i", headers=list({"x-envoy-retry-on": "5xx",
                                                  "x-forwarded-for": "10.1.2.3"}.items())).status, 200,
          "internal by x-forwarded-for")


def test_retry_overflow_under_concurrency():
    """The default circuit breaker allows 3 retries at once; a long back-off holds each retry's
    unit, so 10 concurrent failing requests overflow."""
    up = mp.TestUpstream()
    m, port = start([up.port], retry="                    retry_on: 5xx\n"
                                      "                    retry_back_off: {base_interval: 2s, "
                                      "max_interval: 2s}\n")
    results = []

    def one(i):
        results.append(mp.get(port, "/fail/100/503/%d" % i).status)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    mp.eq(sorted(results), [503] * 10, "every request got the upstream's 503")
    over = stat(m, "upstream_rq_retry_overflow")
    mp.check(over >= 1, "overflow counted (%d)" % over)
    flags = [l.split(" ")[1] for l in m.access_lines(10)]
    mp.check(any("UO" in f for f in flags), "UO flag on an overflowed request: %s" % flags)


def test_h2_downstream_retry():
    up = mp.TestUpstream()
    m, port = start([up.port], retry="                    retry_on: 5xx\n")
    code, body, err = mp.curl("http://127.0.0.1:%d/fail/1/503" % port, "--http2-prior-knowledge")
    mp.eq(code, 200, "HTTP/2 client got the retry's answer (%s)" % err)
    mp.eq(up.fail_counts["/fail/1/503"], 2, "two attempts")


def test_attempt_count_headers():
    up = mp.TestUpstream()
    m, port = start([up.port], retry="                    retry_on: 5xx\n",
                    vhost_extra="              include_request_attempt_count: true\n"
                                "              include_attempt_count_in_response: true\n")
    r = mp.get(port, "/fail/1/503")
    names = {k.lower(): v for k, v in r.json()["headers"]}
    mp.eq(names.get("x-envoy-attempt-count"), "2", "upstream sees the attempt number")
    mp.eq(r.header("x-envoy-attempt-count"), "2", "client sees the attempt count")
