"""magpie <-> failing upstreams (hostile-inputs.md 4.3, issue 2 item 7): every failure becomes
the right status AND the access log shows the flag that explains it (STYLE.md rule 15)."""

import time

import mp


def start(up_port, routes=None, **kw):
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up_port, routes=routes, **kw), ports={"port": port})
    return m, port


def last_flags(m, n):
    f = mp.parse_access(m.access_lines(n)[-1])
    return f["code"], f["flags"]


def test_connect_refused_is_503_uf():
    m, port = start(mp.refused_port())
    r = mp.get(port, "/x")
    mp.eq(r.status, 503, "status")
    mp.eq(last_flags(m, 1), ("503", "UF"), "access log: connect failure")
    s = m.stats()
    mp.check(s.get("cluster.c1.upstream_cx_connect_fail", 0) >= 1,
             "cluster.c1.upstream_cx_connect_fail counted")
    mp.eq(mp.get(port, "/x").status, 503, "still answering after the failure")


def test_upstream_closes_without_response_is_503_uc():
    up = mp.TestUpstream()
    m, port = start(up.port)
    r = mp.get(port, "/close")
    # A non-idempotent-safe retry is not configured, so exactly one attempt reached upstream.
    mp.eq(r.status, 503, "status")
    mp.eq(last_flags(m, 1), ("503", "UC"), "access log: upstream closed")
    mp.eq(mp.get(port, "/echo").status, 200, "next request served")


def test_upstream_reset_before_headers_is_503():
    up = mp.TestUpstream()
    m, port = start(up.port)
    mp.eq(mp.get(port, "/reset").status, 503, "status")
    code, flags = last_flags(m, 1)
    mp.check(flags in ("UC", "UR"), "flag %r" % flags)


def test_route_timeout_is_504_ut():
    up = mp.TestUpstream()
    routes = ('              - match: {prefix: "/"}\n'
              '                route: {cluster: c1, timeout: 0.3s}\n')
    m, port = start(up.port, routes=routes)
    t0 = time.monotonic()
    r = mp.get(port, "/delay/3000")
    took = time.monotonic() - t0
    mp.eq(r.status, 504, "status")
    mp.check(took < 2.0, "504 after %.2fs, route timeout is 0.3s" % took)
    mp.eq(last_flags(m, 1), ("504", "UT"), "access log: upstream timeout")
    mp.eq(mp.get(port, "/echo").status, 200, "next request served")


def test_stream_idle_timeout_is_504_si():
    # The upstream stays silent for 3 s; with stream_idle_timeout 0.5 s the stream must end after
    # about half a second, with the idle-timeout flag (not the route's UT).
    up = mp.TestUpstream()
    m, port = start(up.port, hcm_extra="          stream_idle_timeout: 0.5s")
    t0 = time.monotonic()
    r = mp.get(port, "/delay/3000")
    took = time.monotonic() - t0
    mp.eq(r.status, 504, "status")
    mp.check(0.4 < took < 2.0, "504 after %.2fs, stream idle timeout is 0.5s" % took)
    mp.eq(last_flags(m, 1), ("504", "SI"), "access log: stream idle timeout")
    mp.eq(mp.get(port, "/echo").status, 200, "next request served")


def test_unsolicited_101_is_a_protocol_error():
    # magpie never forwards Upgrade, so a 101 is one nobody asked for: no tunnel, an immediate
    # 503 with the upstream-protocol-error flag, and the connection is not reused.
    up = mp.TestUpstream()
    m, port = start(up.port)
    t0 = time.monotonic()
    r = mp.get(port, "/unsolicited_101")
    mp.eq(r.status, 503, "status")
    mp.check(time.monotonic() - t0 < 1.0, "answered at once, not after a timeout")
    mp.eq(last_flags(m, 1), ("503", "UPE"), "access log: upstream protocol error")
    mp.eq(mp.get(port, "/echo").status, 200, "next request served")


def test_reset_mid_body_is_not_completed():
    up = mp.TestUpstream()
    m, port = start(up.port)
    with mp.Conn(port) as c:
        c.send(mp.build_request("GET", "/reset_mid_body"))
        try:
            r = c.read_response()
            raise mp.TestFailure("truncated response delivered as complete: %r" % r)
        except mp.TestFailure as e:
            # Never "complete" a truncated response: the downstream must see a short body + close.
            mp.check("closed" in str(e), str(e))
    mp.eq(mp.get(port, "/echo").status, 200, "next request served")


def test_no_healthy_upstream_is_503_uh():
    up = mp.TestUpstream()
    port = mp.free_port()
    cfg = mp.simple_config(up.port)
    # A cluster with no endpoints at all: UH, immediately.
    cfg = cfg.replace("""      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: 127.0.0.1, port_value: %d}""" % up.port,
                      "      endpoints: []")
    m = mp.Magpie(cfg, ports={"port": port})
    mp.eq(mp.get(port, "/").status, 503, "status")
    mp.eq(last_flags(m, 1), ("503", "UH"), "access log: no healthy upstream")


def test_upstream_5xx_passes_through_and_counts():
    up = mp.TestUpstream()
    m, port = start(up.port)
    mp.eq(mp.get(port, "/status/502").status, 502, "upstream's own 502 passes through")
    mp.eq(last_flags(m, 1), ("502", "-"), "no flag: magpie did not generate it")
    s = m.stats()
    mp.eq(s.get("cluster.c1.upstream_rq_5xx"), 1, "upstream_rq_5xx")


if __name__ == "__main__":
    import run
    run.main([__file__])
