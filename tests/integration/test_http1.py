"""magpie (HTTP/1.1 downstream) <-> Python test upstream / nginx: issue 2 item 5's normal paths.
Each test starts its own magpie on free ports with an inline config and polls /ready."""

import re
import socket
import time

import mp


def start(up_port, hcm_extra="", concurrency=1, **kw):
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up_port, hcm_extra=hcm_extra, **kw), ports={"port": port},
                  concurrency=concurrency)
    return m, port


def test_curl_get_through_magpie():
    up = mp.TestUpstream()
    m, port = start(up.port)
    code, body, err = mp.curl("http://127.0.0.1:%d/echo/hello?q=1" % port)
    # 200 and the echoed path prove the request went through unchanged.
    mp.eq(code, 200, "status (%s)" % err)
    mp.eq(__import__("json").loads(body)["path"], "/echo/hello?q=1", "path seen upstream")
    # The access log names the cluster and shows no response flag.
    f = mp.parse_access(m.access_lines(1)[-1])
    mp.eq((f["code"], f["flags"], f["cluster"]), ("200", "-", "c1"), "access log")


def test_raw_socket_get_and_post():
    up = mp.TestUpstream()
    m, port = start(up.port)
    with mp.Conn(port) as c:
        r = c.request("GET", "/echo")
        mp.eq((r.status, r.header("x-upstream")), (200, "test"), "GET")
        r = c.request("POST", "/echo", body=b"z" * 12345)
        mp.eq(r.json()["body_len"], 12345, "POST body length upstream")
        mp.eq(r.json()["method"], "POST", "method upstream")


def test_keepalive_reuses_both_connections():
    up = mp.TestUpstream()
    m, port = start(up.port)
    with mp.Conn(port) as c:
        for i in range(10):
            mp.eq(c.request("GET", "/echo/%d" % i).status, 200, "request %d" % i)
    # One downstream connection, ten requests: the per-worker pool reused one upstream conn.
    mp.eq(up.requests, 10, "upstream requests")
    mp.eq(up.connections, 1, "upstream connections (pool reuse)")


def test_pipelining_answers_in_order():
    up = mp.TestUpstream()
    m, port = start(up.port)
    with mp.Conn(port) as c:
        c.send(b"".join(mp.build_request("GET", "/delay/%d?i=%d" % (d, i))
                        for i, d in enumerate((100, 0, 50, 0))))
        paths = [c.read_response().json()["path"] for _ in range(4)]
    mp.eq(paths, ["/delay/100?i=0", "/delay/0?i=1", "/delay/50?i=2", "/delay/0?i=3"], "order")


def test_chunked_request_body_streams_upstream():
    up = mp.TestUpstream()
    m, port = start(up.port)
    body = b"".join(b"%x\r\n%s\r\n" % (n, b"a" * n) for n in (1, 100, 5000, 70000)) + b"0\r\n\r\n"
    with mp.Conn(port) as c:
        r = c.request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")], body=body)
    mp.eq((r.status, r.json()["body_len"]), (200, 75101), "chunked upload")


def test_chunked_response_passes_through():
    up = mp.TestUpstream()
    m, port = start(up.port)
    with mp.Conn(port) as c:
        r = c.request("GET", "/chunked/20")
        mp.eq(r.body, b"".join(b"chunk%d\n" % i for i in range(20)), "chunked body")
        # The connection is still usable after a chunked response (framing kept).
        mp.eq(c.request("GET", "/echo").status, 200, "follow-up on same connection")
    code, body, _ = mp.curl("http://127.0.0.1:%d/bytes/3000000?chunked=1" % port)
    mp.eq((code, len(body)), (200, 3000000), "large chunked via curl")


def test_expect_100_continue():
    up = mp.TestUpstream()
    m, port = start(up.port)
    with mp.Conn(port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
               b"Expect: 100-continue\r\n\r\n")
        # A 100 must arrive before we send the body (otherwise curl-like clients stall 1 s).
        c.sock.settimeout(3)
        head = c.sock.recv(100)
        mp.check(head.startswith(b"HTTP/1.1 100"), "100 Continue first, got %r" % head)
        c.buf = head.split(b"\r\n\r\n", 1)[1]
        c.send(b"q" * 5000)
        r = c.read_response()
        mp.eq((r.status, r.json()["body_len"]), (200, 5000), "final response")
    code, body, err = mp.curl("http://127.0.0.1:%d/echo" % port, "-H", "Expect: 100-continue",
                              "--data-binary", "@/etc/services")
    mp.eq(code, 200, "curl with Expect " + err)


def test_head_has_no_body_and_keeps_framing():
    up = mp.TestUpstream()
    m, port = start(up.port)
    with mp.Conn(port) as c:
        r = c.request("HEAD", "/bytes/1000")
        mp.eq((r.status, r.header("content-length")), (200, "1000"), "HEAD headers")
        # If magpie wrongly sent or expected a body, this next response would be garbled.
        r = c.request("GET", "/bytes/10")
        mp.eq((r.status, len(r.body)), (200, 10), "GET after HEAD")
    code, body, _ = mp.curl("http://127.0.0.1:%d/bytes/1000" % port, "-I")
    mp.eq(code, 200, "curl -I")


def test_connection_close_closes_after_response():
    up = mp.TestUpstream()
    m, port = start(up.port)
    with mp.Conn(port) as c:
        r = c.request("GET", "/echo", headers=[("Connection", "close")])
        mp.eq(r.status, 200, "status")
        mp.check(c.closed_by_peer(), "magpie closed the connection after Connection: close")


def test_http10_client_gets_close():
    up = mp.TestUpstream()
    m, port = start(up.port)
    out, closed = mp.raw_exchange(port, b"GET /echo HTTP/1.0\r\nHost: t\r\n\r\n")
    mp.eq(mp.status_of(out), 200, "HTTP/1.0 status")
    mp.check(closed, "HTTP/1.0 without keep-alive is closed after the response")


def test_1xx_from_upstream_then_final():
    up = mp.TestUpstream()
    m, port = start(up.port)
    with mp.Conn(port) as c:
        r = c.request("GET", "/1xx")
        # 103 may be forwarded or dropped; the final 200 must arrive intact either way.
        mp.eq(r.status, 200, "final status after 1xx")
        mp.check(set(r.interim) <= {103}, "interim statuses %r" % r.interim)
        mp.eq(c.request("GET", "/echo").status, 200, "connection usable after 1xx")


def test_forwarding_headers_added():
    up = mp.TestUpstream()
    m, port = start(up.port, hcm_extra="          use_remote_address: true")
    r = mp.get(port, "/echo")
    h = {k.lower(): v for k, v in r.json()["headers"]}
    # use_remote_address: the peer address becomes x-forwarded-for, as in Envoy.
    mp.eq(h.get("x-forwarded-for"), "127.0.0.1", "x-forwarded-for")
    mp.eq(h.get("x-forwarded-proto"), "http", "x-forwarded-proto")
    mp.check(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                          h.get("x-request-id", "")), "generated x-request-id %r"
             % h.get("x-request-id"))
    r2 = mp.get(port, "/echo")
    h2 = {k.lower(): v for k, v in r2.json()["headers"]}
    mp.check(h2["x-request-id"] != h["x-request-id"], "x-request-id unique per request")
    r3 = mp.get(port, "/echo", headers=[("X-Request-Id", "abc-123")])
    h3 = {k.lower(): v for k, v in r3.json()["headers"]}
    mp.eq(h3.get("x-request-id"), "abc-123", "client x-request-id kept")


def test_long_uri_under_limit_is_served():
    up = mp.TestUpstream()
    m, port = start(up.port)
    path = "/echo?" + "a" * (12 * 1024)
    r = mp.get(port, path)
    # 12 KiB is below the 16 KiB request-line limit, so it must pass unchanged.
    mp.eq((r.status, r.json()["path"]), (200, path), "12 KiB URI")


def test_many_headers_under_limits_are_served():
    up = mp.TestUpstream()
    m, port = start(up.port)
    hs = [("X-H%d" % i, "v" * 100) for i in range(90)]
    r = mp.get(port, "/echo", headers=hs)
    mp.eq(r.status, 200, "90 headers (limit 100)")
    mp.check(["X-H89", "v" * 100] in r.json()["headers"] or
             ["x-h89", "v" * 100] in r.json()["headers"], "last header forwarded")


def test_nginx_upstream_through_magpie():
    ng = mp.Nginx()
    m, port = start(ng.port)
    code, body, err = mp.curl("http://127.0.0.1:%d/small" % port)
    mp.eq((code, body), (200, b"hello from nginx\n"), "via magpie to nginx " + err)


def test_server_header_transformation():
    # Envoy's default (OVERWRITE) puts server_name on every response; PASS_THROUGH keeps the
    # upstream's own; APPEND_IF_ABSENT keeps it too, since nginx always sends one.
    ng = mp.Nginx()
    cases = (("", "magpie"),
             ("          server_name: edge-1", "edge-1"),
             ("          server_header_transformation: PASS_THROUGH", "nginx/"),
             ("          server_header_transformation: APPEND_IF_ABSENT", "nginx/"))
    for extra, want in cases:
        m, port = start(ng.port, hcm_extra=extra)
        r = mp.get(port, "/small")
        mp.check((r.header("server") or "").startswith(want),
                 "%r: server header %r, want %r" % (extra, r.header("server"), want))
        m.stop()


def test_idle_timeout_closes_connection():
    up = mp.TestUpstream()
    m, port = start(up.port, hcm_extra="          common_http_protocol_options: "
                    "{idle_timeout: 0.5s}")
    with mp.Conn(port) as c:
        mp.eq(c.request("GET", "/echo").status, 200, "first")
        t0 = time.monotonic()
        mp.check(c.closed_by_peer(timeout=5), "idle connection closed")
        mp.check(time.monotonic() - t0 < 4, "closed near the 0.5 s idle timeout")


if __name__ == "__main__":
    import run
    run.main([__file__])
