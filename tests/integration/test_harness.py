"""Self-tests of the harness (mp.py) with no magpie: the Python test upstream and nginx driven
directly by curl and raw sockets, and the strict Prometheus parser on good and bad input.  If
these fail, a magpie failure elsewhere may be the harness's fault."""

import socket
import time

import mp


def test_upstream_echo_with_curl():
    up = mp.TestUpstream()
    code, body, _ = mp.curl("http://127.0.0.1:%d/echo/x?y=1" % up.port, "-H", "X-A: b")
    mp.eq(code, 200, "status")
    j = __import__("json").loads(body)
    mp.eq(j["path"], "/echo/x?y=1", "echoed path")
    mp.check(["X-A", "b"] in j["headers"], "echoed header: %r" % j["headers"])
    mp.eq(up.requests, 1, "upstream request count")


def test_upstream_keepalive_pipelining_chunked_upload():
    up = mp.TestUpstream()
    with mp.Conn(up.port) as c:
        # Two pipelined requests in one write, answered in order on one connection.
        c.send(mp.build_request("GET", "/a") + mp.build_request("GET", "/b"))
        mp.eq(c.read_response().json()["path"], "/a", "first")
        mp.eq(c.read_response().json()["path"], "/b", "second")
        r = c.request("POST", "/up", headers=[("Transfer-Encoding", "chunked")],
                      body=b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
        mp.eq(r.json()["body_len"], 8, "chunked upload length")
        r = c.request("GET", "/chunked/3")
        mp.eq(r.body, b"chunk0\nchunk1\nchunk2\n", "chunked response")
        r = c.request("GET", "/1xx")
        mp.eq((r.interim, r.status), ([103], 200), "1xx then 200")
        r = c.request("HEAD", "/bytes/100")
        mp.eq((r.status, r.header("content-length"), r.body), (200, "100", b""), "HEAD")
        r = c.request("POST", "/e", headers=[("Expect", "100-continue")], body=b"x" * 10)
        mp.eq((r.interim, r.json()["body_len"]), ([100], 10), "expect 100-continue")
    mp.eq(up.connections, 1, "all on one connection")


def test_upstream_failure_shapes():
    up = mp.TestUpstream()
    out, closed = mp.raw_exchange(up.port, mp.build_request("GET", "/close"))
    mp.check(out == b"" and closed, "close without response")
    with mp.Conn(up.port) as c:
        c.send(mp.build_request("GET", "/reset_mid_body"))
        try:
            c.read_response()
            raise mp.TestFailure("reset_mid_body completed")
        except mp.TestFailure as e:
            mp.check("closed after" in str(e), str(e))
    t0 = time.monotonic()
    mp.eq(mp.get(up.port, "/delay/200").status, 200, "delay status")
    mp.check(time.monotonic() - t0 >= 0.2, "delay honoured")
    code, body, _ = mp.curl("http://127.0.0.1:%d/bytes/10000000?chunked=1" % up.port)
    mp.eq((code, len(body)), (200, 10000000), "generated chunked body")
    mp.eq(mp.get(up.port, "/status/503").status, 503, "status")


def test_nginx_upstream_small_and_large():
    ng = mp.Nginx(files={"big": 100 << 20})
    code, body, err = mp.curl("http://127.0.0.1:%d/small" % ng.port)
    mp.eq((code, body), (200, b"hello from nginx\n"), "nginx /small " + err)
    code, body, _ = mp.curl("http://127.0.0.1:%d/files/big" % ng.port)
    mp.eq((code, len(body)), (200, 100 << 20), "nginx large file")
    pid = ng.pid
    ng.stop()
    mp.check(not mp.port_open(ng.port), "nginx stopped (pid %d)" % pid)


def test_free_port_is_bindable():
    p = mp.free_port()
    s = socket.socket()
    s.bind(("127.0.0.1", p))
    s.close()


def test_missing_binary_fails_loudly():
    old = mp.MAGPIE_BIN
    mp.MAGPIE_BIN = "/nonexistent/magpie"
    try:
        mp.Magpie("admin: {}\n")
        raise AssertionError("Magpie() did not fail")
    except mp.TestFailure as e:
        mp.check("missing" in str(e), str(e))
    finally:
        mp.MAGPIE_BIN = old


GOOD_PROM = """\
# HELP envoy_cluster_upstream_rq_total total
# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="c1"} 7
envoy_cluster_upstream_rq_total{envoy_cluster_name="c\\"2\\\\"} 0
# TYPE envoy_server_live gauge
envoy_server_live 1
# TYPE envoy_http_downstream_rq_time histogram
envoy_http_downstream_rq_time_bucket{le="0.5"} 1
envoy_http_downstream_rq_time_bucket{le="+Inf"} 2
envoy_http_downstream_rq_time_sum 3.5e0
envoy_http_downstream_rq_time_count 2
untyped_thing NaN 1700000000
"""

BAD_PROM = {
    "no final newline": "a 1",
    "bad name": "1a 1\n",
    "bad value": "a one\n",
    "bad escape": 'a{l="\\x"} 1\n',
    "unterminated": 'a{l="x} 1\n',
    "dup series": "a 1\na 2\n",
    "dup label": 'a{l="1",l="2"} 1\n',
    "split family": "a 1\nb 1\na{x=\"1\"} 1\n",
    "type after samples": "a 1\n# TYPE a counter\n",
    "bad type": "# TYPE a meter\na 1\n",
    "negative counter": "# TYPE a counter\na -1\n",
    "no +Inf": "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
    "missing space": "a{}1\n",
}


def test_prometheus_parser_accepts_valid_text():
    s, t = mp.parse_prometheus(GOOD_PROM)
    mp.eq(mp.prom_value(s, "envoy_cluster_upstream_rq_total", envoy_cluster_name="c1"), 7.0,
          "c1 counter")
    mp.eq(mp.prom_value(s, "envoy_cluster_upstream_rq_total", envoy_cluster_name='c"2\\'), 0.0,
          "escaped label")
    mp.eq(t["envoy_http_downstream_rq_time"], "histogram", "type")


def test_prometheus_parser_rejects_invalid_text():
    for what, text in BAD_PROM.items():
        try:
            mp.parse_prometheus(text)
        except mp.PromError:
            continue
        raise mp.TestFailure("parser accepted %s: %r" % (what, text))


if __name__ == "__main__":
    import run
    run.main([__file__])
