"""Fault injection: envoy.filters.http.fault in front of the router.  Fixed and header-driven
delays and aborts, percentages, header matching, max_active_faults, a client that gives up
during a delay (HTTP/1.1 close and HTTP/2 RST_STREAM), the route timeout starting after the
delay, and gRPC aborts seen by a grpcio client.  Peers: mp.TestUpstream (raw HTTP/1.1), curl,
raw sockets, h2raw (HTTP/2 frames) and grpc_peer (grpcio)."""

import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import grpc_peer  # noqa: E402
import h2raw  # noqa: E402
import mp  # noqa: E402


def _indent(text, n):
    return "".join(" " * n + l + "\n" for l in text.strip("\n").splitlines())


def fault_filter(body):
    return ("          - name: envoy.filters.http.fault\n"
            "            typed_config:\n"
            "              \"@type\": type.googleapis.com/"
            "envoy.extensions.filters.http.fault.v3.HTTPFault\n" + _indent(body, 14))


def start(body, routes=None, cluster_extra="", up=None, concurrency=1):
    up = up or mp.TestUpstream()
    port = mp.free_port()
    cfg = mp.simple_config(up.port, routes=routes, cluster_extra=cluster_extra)
    cfg = cfg.replace("          http_filters:\n", "          http_filters:\n" + fault_filter(body),
                      1)
    return mp.Magpie(cfg, ports={"port": port}, concurrency=concurrency), up, port


def stat(m, name):
    return m.stats().get(name, 0)


def get(port, path="/echo", headers=None):
    return mp.get(port, path, headers=list((headers or {}).items()))


def timed_get(port, path="/echo", headers=None):
    t0 = time.monotonic()
    r = get(port, path, headers=headers)
    return r, time.monotonic() - t0


def wait_stat(m, name, want, timeout=5.0):
    mp.wait_until(lambda: stat(m, name) == want, timeout, what="%s == %d" % (name, want))


FIXED_DELAY = """\
delay:
  fixed_delay: 0.3s
  percentage: {numerator: 100}
"""


def test_fixed_delay_then_forwarded():
    m, up, port = start(FIXED_DELAY)
    r, took = timed_get(port)
    mp.eq(r.status, 200, "a delayed request still reaches the upstream")
    # Loose bounds: at least the delay (less a timer's slack), well under a stall.
    mp.check(0.28 <= took < 3.0, "delay of 0.3s measured %.3fs" % took)
    mp.eq(up.requests, 1, "upstream saw it")
    mp.eq(stat(m, "http.ingress.fault.delays_injected"), 1, "delays_injected")
    wait_stat(m, "http.ingress.fault.active_faults", 0)
    mp.eq(mp.parse_access(m.access_lines(1)[-1])["flags"], "DI", "DI response flag")


def test_delay_does_not_block_the_worker():
    # One worker: while one request waits out a 1 s delay, others without the trigger header
    # are answered at once, so the delay is a timer, not a sleep.
    body = """\
delay:
  fixed_delay: 1s
  percentage: {numerator: 100}
headers:
- name: x-slow
  present_match: true
"""
    m, up, port = start(body)
    c = mp.Conn(port)
    c.send(mp.build_request("GET", "/echo", [("x-slow", "1")]))
    mp.wait_until(lambda: stat(m, "http.ingress.fault.active_faults") == 1, 5, what="delayed")
    r, took = timed_get(port)
    mp.eq(r.status, 200, "undelayed request")
    mp.check(took < 0.5, "an undelayed request took %.3fs behind a delayed one" % took)
    r = c.read_response()
    mp.eq(r.status, 200, "the delayed one completes too")
    c.close()
    mp.eq(stat(m, "http.ingress.fault.delays_injected"), 1, "only the matching request delayed")


def test_delay_with_request_body():
    m, up, port = start(FIXED_DELAY)
    c = mp.Conn(port)
    r = c.request("POST", "/echo", [("content-type", "text/plain")], body=b"x" * 50000)
    mp.eq(r.status, 200, "POST after a delay")
    mp.eq(r.json()["body_len"], 50000, "the body sent during the delay went upstream whole")
    c.close()


def test_route_timeout_starts_after_the_delay():
    # Envoy's router starts the route timeout when it sees the request, after the fault filter
    # let it go: a 0.6 s delay on a 0.4 s route timeout is not a 504.
    routes = ("              - match: {prefix: \"/\"}\n"
              "                route: {cluster: c1, timeout: 0.4s}\n")
    m, up, port = start("delay: {fixed_delay: 0.6s, percentage: {numerator: 100}}", routes=routes)
    r, took = timed_get(port, "/echo")
    mp.eq(r.status, 200, "delay longer than the route timeout")
    r, took = timed_get(port, "/delay/800")
    mp.eq(r.status, 504, "the route timeout still bounds the upstream")
    mp.check(took < 0.6 + 0.4 + 2.0, "timeout counted from the end of the delay (%.3fs)" % took)


def test_abort_fixed_status():
    m, up, port = start("abort: {http_status: 503, percentage: {numerator: 100}}")
    r = mp.get(port, "/echo")
    mp.eq((r.status, r.body), (503, b"fault filter abort"), "aborted locally")
    mp.eq(up.requests, 0, "nothing reached the upstream")
    mp.eq(stat(m, "http.ingress.fault.aborts_injected"), 1, "aborts_injected")
    wait_stat(m, "http.ingress.fault.active_faults", 0)
    mp.eq(mp.parse_access(m.access_lines(1)[-1])["flags"], "FI", "FI response flag")


def test_zero_percent_and_fractional_denominator():
    m, up, port = start("abort: {http_status: 500, percentage: {numerator: 0}}")
    mp.eq(mp.get(port, "/echo").status, 200, "0 % never aborts")
    m.stop()
    # 1 in a million: 20 requests all pass (the chance of a false failure is 2e-5).
    m, up, port = start("abort: {http_status: 500, percentage: {numerator: 1, denominator: MILLION}}")
    codes = [mp.get(port, "/echo").status for _ in range(20)]
    mp.eq(codes, [200] * 20, "MILLION denominator")


HEADER_FAULTS = """\
delay:
  header_delay: {}
  percentage: {numerator: 100}
abort:
  header_abort: {}
  percentage: {numerator: 100}
"""


def test_header_controlled_faults():
    m, up, port = start(HEADER_FAULTS)
    r, took = timed_get(port)
    mp.eq(r.status, 200, "no fault headers: no fault")
    mp.check(took < 0.5, "no header: no delay (%.3fs)" % took)
    r = get(port, "/echo", headers={"x-envoy-fault-abort-request": "418"})
    mp.eq(r.status, 418, "status from x-envoy-fault-abort-request")
    r = get(port, "/echo", headers={"x-envoy-fault-abort-request": "700"})
    mp.eq(r.status, 200, "an out-of-range status is ignored")
    r = get(port, "/echo", headers={"x-envoy-fault-abort-request": "418",
                                       "x-envoy-fault-abort-request-percentage": "0"})
    mp.eq(r.status, 200, "percentage header 0 lowers the configured 100 %")
    r, took = timed_get(port, headers={"x-envoy-fault-delay-request": "300"})
    mp.eq(r.status, 200, "delayed by header")
    mp.check(0.28 <= took < 3.0, "x-envoy-fault-delay-request: 300 took %.3fs" % took)
    r, took = timed_get(port, headers={"x-envoy-fault-delay-request": "300",
                                       "x-envoy-fault-delay-request-percentage": "0"})
    mp.check(took < 0.25, "delay percentage header 0: no delay (%.3fs)" % took)
    r, took = timed_get(port, headers={"x-envoy-fault-delay-request": "200",
                                       "x-envoy-fault-abort-request": "429"})
    mp.eq(r.status, 429, "a delay followed by an abort")
    mp.check(took >= 0.18, "the abort came after the delay (%.3fs)" % took)
    mp.eq(stat(m, "http.ingress.fault.aborts_injected"), 2, "aborts")
    mp.eq(stat(m, "http.ingress.fault.delays_injected"), 2, "delays")
    mp.eq(mp.parse_access(m.access_lines(7)[-1])["flags"], "DI,FI", "both flags")


def test_header_match_and_upstream_cluster():
    body = """\
abort: {http_status: 502, percentage: {numerator: 100}}
upstream_cluster: c1
headers:
- name: x-fault
  string_match: {exact: "yes"}
"""
    m, up, port = start(body)
    mp.eq(mp.get(port, "/echo").status, 200, "no x-fault header")
    mp.eq(get(port, "/echo", headers={"x-fault": "no"}).status, 200, "x-fault: no")
    mp.eq(get(port, "/echo", headers={"x-fault": "yes"}).status, 502, "x-fault: yes")
    m.stop()
    m, up, port = start(body.replace("upstream_cluster: c1", "upstream_cluster: other"))
    mp.eq(get(port, "/echo", headers={"x-fault": "yes"}).status, 200,
          "a route to another cluster is not faulted")


def test_downstream_nodes():
    body = """\
abort: {http_status: 500, percentage: {numerator: 100}}
downstream_nodes: [node-a]
"""
    m, up, port = start(body)
    mp.eq(mp.get(port, "/echo").status, 200, "no node header")
    mp.eq(get(port, "/echo", headers={"x-envoy-downstream-service-node": "node-b"}).status,
          200, "another node")
    mp.eq(get(port, "/echo", headers={"x-envoy-downstream-service-node": "node-a"}).status,
          500, "listed node")


def test_max_active_faults_overflow():
    body = """\
delay: {fixed_delay: 2s, percentage: {numerator: 100}}
max_active_faults: 1
"""
    m, up, port = start(body)
    c = mp.Conn(port)
    c.send(mp.build_request("GET", "/echo"))
    mp.wait_until(lambda: stat(m, "http.ingress.fault.active_faults") == 1, 5, what="delayed")
    r, took = timed_get(port)
    mp.eq(r.status, 200, "second request")
    mp.check(took < 1.0, "over max_active_faults: not delayed (%.3fs)" % took)
    mp.eq(stat(m, "http.ingress.fault.faults_overflow"), 1, "faults_overflow")
    c.close()
    wait_stat(m, "http.ingress.fault.active_faults", 0)


def test_client_gives_up_during_delay_h1():
    m, up, port = start("delay: {fixed_delay: 5s, percentage: {numerator: 100}}")
    for _ in range(3):
        c = mp.Conn(port)
        c.send(mp.build_request("GET", "/echo"))
        mp.wait_until(lambda: stat(m, "http.ingress.fault.active_faults") == 1, 5,
                      what="delayed")
        # An abortive close (RST): magpie's HTTP/1.1 codec keeps answering a complete request
        # after a plain half-close, so the reset is what tells it the client is gone.
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        # The stream ends with the connection: the timer is stopped and the fault released.
        wait_stat(m, "http.ingress.fault.active_faults", 0)
    mp.eq(up.requests, 0, "a cancelled delayed request never reaches the upstream")
    lines = m.access_lines(3)
    mp.eq(mp.parse_access(lines[-1])["flags"], "DC", "logged as downstream closed")
    mp.eq(stat(m, "http.ingress.downstream_rq_active"), 0, "no stream left")
    mp.check(m.alive(), "magpie survived")


def test_client_resets_stream_during_delay_h2():
    m, up, port = start("delay: {fixed_delay: 5s, percentage: {numerator: 100}}")
    with h2raw.Conn(port=port) as c:
        c.start()
        block = h2raw.hp_block(h2raw.request_fields("/echo"))
        c.send(h2raw.headers(1, block, end_stream=True))
        mp.wait_until(lambda: stat(m, "http.ingress.fault.active_faults") == 1, 5,
                      what="delayed")
        c.send(h2raw.rst_stream(1))
        wait_stat(m, "http.ingress.fault.active_faults", 0)
        # The connection stays usable: a second stream (also delayed) is answered after it.
        c.send(h2raw.headers(3, block, end_stream=True))
        mp.wait_until(lambda: stat(m, "http.ingress.fault.active_faults") == 1, 5,
                      what="second stream delayed")
    wait_stat(m, "http.ingress.fault.active_faults", 0)
    mp.eq(up.requests, 0, "no delayed request reached the upstream")
    mp.eq(stat(m, "http.ingress.downstream_rq_active"), 0, "no stream left")


def _grpc_start(body):
    s = grpc_peer.Server()
    m, _, port = start(body, cluster_extra="    http2_protocol_options: {}", up=s)
    return m, s, port


def _grpc_code(port, metadata=None):
    try:
        grpc_peer.call("127.0.0.1:%d" % port, "Unary", b"x", metadata=metadata)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def test_grpc_abort_status():
    m, s, port = _grpc_start("abort: {grpc_status: 8, percentage: {numerator: 100}}")
    code, details = _grpc_code(port)
    mp.eq(code, grpc.StatusCode.RESOURCE_EXHAUSTED, "grpc_status 8 reaches the client")
    mp.eq(details, "fault filter abort", "grpc-message")
    mp.eq(s.calls.get("Unary", 0), 0, "the server was not called")
    s.stop()


def test_grpc_abort_by_http_status_and_header():
    m, s, port = _grpc_start("abort: {header_abort: {}, percentage: {numerator: 100}}")
    code, _ = _grpc_code(port, metadata=[("x-envoy-fault-abort-grpc-request", "5")])
    mp.eq(code, grpc.StatusCode.NOT_FOUND, "gRPC status from the header")
    code, _ = _grpc_code(port, metadata=[("x-envoy-fault-abort-request", "503")])
    mp.eq(code, grpc.StatusCode.UNAVAILABLE, "HTTP 503 maps to UNAVAILABLE")
    code, _ = _grpc_code(port)
    mp.eq(code, grpc.StatusCode.OK, "no header: the call goes through")
    s.stop()


def test_rejected_configs():
    for body, want in [
        ("abort: {http_status: 100}", "abort.http_status"),
        ("delay: {percentage: {numerator: 1}}", "delay: one of"),
        ("response_rate_limit: {fixed_limit: {limit_kbps: 1}}", "response_rate_limit"),
    ]:
        cfg = mp.simple_config(1)
        cfg = cfg.replace("          http_filters:\n",
                          "          http_filters:\n" + fault_filter(body), 1)
        port = mp.free_port()
        m = mp.Magpie(cfg, ports={"port": port}, wait_ready=False)
        try:
            mp.wait_until(lambda: not m.alive(), 10, what="magpie to refuse the config")
        finally:
            m.stop()
        mp.check(want in m.log(), "error names %r: %s" % (want, m.log()[-500:]))
