"""magpie <-> slow upstreams: the route timeout (504 UT, upstream_rq_timeout), timeout 0, and
the route's idle_timeout replacing the connection manager's stream idle timeout."""

import time

import mp


def start(up_port, action_extra=""):
    routes = ("              - match: {prefix: \"/\"}\n"
              "                route:\n"
              "                  cluster: c1\n" + action_extra)
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up_port, routes=routes), ports={"port": port})
    return m, port


def test_route_timeout_is_504_ut():
    up = mp.TestUpstream()
    m, port = start(up.port, "                  timeout: 0.3s\n")
    t0 = time.monotonic()
    r = mp.get(port, "/delay/3000")
    mp.eq(r.status, 504, "status")
    mp.eq(r.body, b"upstream request timeout", "body")
    mp.check(time.monotonic() - t0 < 2.5, "answered at the timeout, not after the upstream")
    f = mp.parse_access(m.access_lines(1)[-1])
    mp.eq((f["code"], f["flags"]), ("504", "UT"), "access log flag UT")
    mp.eq(m.stats().get("cluster.c1.upstream_rq_timeout", 0), 1, "upstream_rq_timeout")


def test_timeout_zero_disables():
    up = mp.TestUpstream()
    m, port = start(up.port, "                  timeout: 0s\n")
    mp.eq(mp.get(port, "/delay/400").status, 200, "no route timeout")


def test_route_idle_timeout_overrides_hcm():
    up = mp.TestUpstream()
    m, port = start(up.port, "                  idle_timeout: 0.3s\n")
    t0 = time.monotonic()
    r = mp.get(port, "/delay/3000")
    mp.eq(r.status, 504, "stream idle timeout answers")
    mp.check(time.monotonic() - t0 < 2.5, "the route's idle timeout applied")
    f = mp.parse_access(m.access_lines(1)[-1])
    mp.eq(f["flags"], "SI", "stream idle flag")
