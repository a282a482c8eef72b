"""magpie <-> TestUpstream under circuit breakers (Cluster.circuit_breakers): requests beyond a
limit are answered 503 UO at once, the limits hold across workers, and every unit taken is given
back (counts return to 0, later requests succeed)."""

import socket
import threading
import time

import mp


class CountingUpstream(mp.TestUpstream):
    """TestUpstream that records how many requests it is serving at once."""

    def __init__(self):
        self.active = 0
        self.max_active = 0
        self._alock = threading.Lock()
        super().__init__()

    def _respond(self, c, rd, method, path, headers, conn_no):
        with self._alock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return super()._respond(c, rd, method, path, headers, conn_no)
        finally:
            with self._alock:
                self.active -= 1


def thresholds(*entries):
    return "    circuit_breakers:\n      thresholds:\n" + "".join(
        "      - {%s}\n" % e for e in entries)


def burst(port, n, path):
    """n requests at once, each on its own connection; [(status, seconds, body)]."""
    out = [None] * n
    go = threading.Event()

    def one(i):
        go.wait(5)
        t0 = time.monotonic()
        try:
            r = mp.get(port, path)
            out[i] = (r.status, time.monotonic() - t0, r.body)
        except OSError as e:
            out[i] = (0, time.monotonic() - t0, str(e).encode())

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    go.set()
    for t in ts:
        t.join(30)
    return out


def flags_count(m, n, flag):
    return sum(1 for l in m.access_lines(n) if mp.parse_access(l)["flags"] == flag)


def stat(m, name):
    return m.stats().get(name, 0)


def test_max_requests_across_two_workers():
    up = CountingUpstream()
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up.port, cluster_extra=thresholds(
        "max_requests: 10, track_remaining: true")), ports={"port": port}, concurrency=2)
    res = burst(port, 50, "/delay/1500")
    ok = [r for r in res if r[0] == 200]
    uo = [r for r in res if r[0] == 503]
    mp.eq(len(ok), 10, "requests that reached the upstream (max_requests 10)")
    mp.eq(len(uo), 40, "requests refused")
    # Refused at once, not after the slow ones: the breaker never queues.
    mp.check(max(r[1] for r in uo) < 1.0, "overflow answered at once: %r" % [r[1] for r in uo])
    mp.eq(uo[0][2], b"upstream connect error or disconnect/reset before headers. reset reason: "
          b"overflow", "Envoy's overflow body")
    mp.eq(up.max_active, 10, "upstream's concurrent maximum")
    mp.eq(flags_count(m, 50, "UO"), 40, "access log: UO on each refusal")
    s = m.stats()
    mp.eq(s.get("cluster.c1.upstream_rq_pending_overflow"), 40, "upstream_rq_pending_overflow")
    # At rest every unit is back: the gauges say closed, all of max_requests remains.
    mp.eq(s.get("cluster.c1.circuit_breakers.default.rq_open"), 0, "rq_open after the burst")
    mp.eq(s.get("cluster.c1.circuit_breakers.default.remaining_rq"), 10, "remaining_rq")
    mp.eq(s.get("cluster.c1.circuit_breakers.default.remaining_pending"), 1024,
          "remaining_pending")
    for r in burst(port, 10, "/echo"):
        mp.eq(r[0], 200, "later requests succeed")
    m.stop()
    mp.check("circuit breaker leak" not in m.log(), "no leaked count at exit")


def test_gauge_open_while_saturated():
    up = CountingUpstream()
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up.port, cluster_extra=thresholds("max_requests: 2")),
                  ports={"port": port})
    t = threading.Thread(target=burst, args=(port, 2, "/delay/1500"))
    t.start()
    mp.wait_until(lambda: up.active == 2, 5, what="two slow requests at the upstream")
    mp.eq(stat(m, "cluster.c1.circuit_breakers.default.rq_open"), 1, "rq_open while full")
    mp.eq(mp.get(port, "/echo").status, 503, "third request refused")
    t.join(10)
    mp.eq(stat(m, "cluster.c1.circuit_breakers.default.rq_open"), 0, "rq_open after")
    mp.eq(mp.get(port, "/echo").status, 200, "served again")


def test_max_connections_http1_pending_then_overflow():
    up = CountingUpstream()
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up.port, cluster_extra=thresholds(
        "max_connections: 2, max_pending_requests: 3")), ports={"port": port})
    # Two requests take both connections (a request is pending while its connection opens, so
    # they must be connected before the rest arrive); then six more find no connection.
    first = []
    t = threading.Thread(target=lambda: first.extend(burst(port, 2, "/delay/800")))
    t.start()
    mp.wait_until(lambda: up.active == 2, 5, what="two requests at the upstream")
    res = burst(port, 6, "/delay/600")
    t.join(10)
    res += first
    ok = [r for r in res if r[0] == 200]
    uo = [r for r in res if r[0] == 503]
    # 2 connected, 3 waited for them (pending), 3 were beyond max_pending_requests.
    mp.eq((len(ok), len(uo)), (5, 3), "served and refused")
    mp.check(max(r[1] for r in uo) < 0.5, "pending overflow refused at once")
    mp.check(max(r[1] for r in ok) > 1.0, "pending requests waited for a connection")
    mp.eq(up.connections, 2, "connections opened (max_connections 2)")
    mp.eq(up.max_active, 2, "upstream concurrency")
    s = m.stats()
    mp.eq(s.get("cluster.c1.upstream_rq_pending_overflow"), 3, "upstream_rq_pending_overflow")
    mp.check(s.get("cluster.c1.upstream_cx_overflow", 0) >= 3, "upstream_cx_overflow counted")
    mp.eq(flags_count(m, 8, "UO"), 3, "access log UO")
    # Every place came back: one at a time, six more requests all succeed.
    for _ in range(6):
        mp.eq(mp.get(port, "/echo").status, 200, "later requests succeed")
    mp.eq(stat(m, "cluster.c1.circuit_breakers.default.rq_pending_open"), 0, "pending closed")
    m.stop()
    mp.check("circuit breaker leak" not in m.log(), "no leaked count at exit")


def test_client_gone_while_pending_releases():
    up = CountingUpstream()
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up.port, cluster_extra=thresholds(
        "max_connections: 1, max_pending_requests: 1")), ports={"port": port})
    t = threading.Thread(target=mp.get, args=(port, "/delay/800"))
    t.start()
    mp.wait_until(lambda: up.active == 1, 5, what="first request at the upstream")
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(mp.build_request("GET", "/echo"))
    time.sleep(0.1)  # give it time to queue; the assertion below does not depend on it
    c.close()  # the pending request's client goes away
    t.join(10)
    # Had the pending unit leaked, max_pending_requests 1 would refuse this one.
    mp.wait_until(lambda: mp.get(port, "/echo").status == 200, 5, what="a request served")
    m.stop()
    mp.check("circuit breaker leak" not in m.log(), "no leaked count at exit")


def test_high_priority_uses_its_own_thresholds():
    up = CountingUpstream()
    port = mp.free_port()
    routes = ('              - match: {prefix: "/high/"}\n'
              '                route: {cluster: c1, priority: HIGH, prefix_rewrite: "/"}\n'
              '              - match: {prefix: "/"}\n'
              '                route: {cluster: c1}\n')
    m = mp.Magpie(mp.simple_config(up.port, routes=routes, cluster_extra=thresholds(
        "max_requests: 1", "priority: HIGH, max_requests: 3")), ports={"port": port})
    res = burst(port, 5, "/high/delay/800")
    mp.eq(sorted(r[0] for r in res), [200, 200, 200, 503, 503], "HIGH: 3 at a time")
    res = burst(port, 3, "/delay/800")
    mp.eq(sorted(r[0] for r in res), [200, 503, 503], "DEFAULT: 1 at a time")
    st, body = m.admin("/clusters")
    mp.check("c1::default_priority::max_requests::1" in body, "/clusters default threshold")
    mp.check("c1::high_priority::max_requests::3" in body, "/clusters high threshold")
    mp.check("c1::high_priority::max_connections::1024" in body, "/clusters default value")


def test_tcp_proxy_max_connections():
    up = socket.socket()
    up.bind(("127.0.0.1", 0))
    up.listen(16)
    mp.on_cleanup(up.close)
    port = mp.free_port()
    cfg = """\
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $admin}}
static_resources:
  listeners:
  - name: t
    address: {socket_address: {address: 127.0.0.1, port_value: $port}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: c1
  clusters:
""" + mp.cluster_yaml("c1", up.getsockname()[1], extra=thresholds("max_connections: 2"))
    m = mp.Magpie(cfg, ports={"port": port})
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    accepted = [up.accept()[0] for _ in range(2)]
    third = socket.create_connection(("127.0.0.1", port))
    third.settimeout(5)
    mp.eq(third.recv(1), b"", "third connection closed by magpie (max_connections 2)")
    mp.eq(stat(m, "cluster.c1.upstream_cx_overflow"), 1, "upstream_cx_overflow")
    for s in held + accepted + [third]:
        s.close()
    # Places come back when connections end.
    mp.wait_until(lambda: stat(m, "cluster.c1.circuit_breakers.default.cx_open") == 0, 5,
                  what="cx_open back to 0")
    again = socket.create_connection(("127.0.0.1", port))
    a, _ = up.accept()
    again.sendall(b"ping")
    mp.eq(a.recv(4), b"ping", "a new connection is proxied")
    a.close()
    again.close()


def test_bad_thresholds_rejected():
    bad = [
        ("priority: HIGH", "priority: HIGH", "given twice"),
        ("retry_budget: {budget_percent: {value: 150}}", None, "budget_percent"),
    ]
    for a, b, want in bad:
        entries = [a] + ([b] if b else [])
        cfg = mp.simple_config(1, cluster_extra=thresholds(*entries))
        path = mp.tmpdir() + "/c.yaml"
        with open(path, "w") as f:
            f.write(string_sub(cfg))
        rc, out = mp.run_magpie(["--mode", "validate", "-c", path])
        mp.check(rc != 0 and want in out, "rejected with %r: %r" % (want, out))


def string_sub(cfg):
    return cfg.replace("$admin", str(mp.free_port())).replace("$port", str(mp.free_port())) \
        .replace("$dir", "/tmp")
