"""The resilience drills of docs/resilience.md, run against the real binary.

Zone failover: endpoints in two localities at two priorities with active health checks; when
every host of the first goes down, traffic moves to the second within one health-check interval,
and moves back when they recover.

Self-healing: three upstream hosts behind magpie and a steady load of at least 200 requests/s
for 20 s; during the run one host starts answering 503 and another is killed.  With
`retry_on: 5xx,reset,connect-failure` (previous_hosts) and outlier detection, every request the
client sent succeeds, the 503 host is ejected within 1 s of its first failure, and it gets
traffic again after it heals."""

import json
import socket
import threading
import time

import mp

LOAD_RPS = 220
LOAD_SECONDS = 20
CLIENTS = 8


class DrillHost:
    """A keep-alive HTTP/1.1 upstream whose answer is set on command: "ok" (200), "503", or
    killed (listening socket and every connection closed, so new connects are refused).
    Counts requests by answer, with the time of the first 503."""

    def __init__(self, name, port=0):
        self.name = name
        self.mode = "ok"
        self.ok = 0
        self.failed = 0
        self.first_503 = None
        self.lock = threading.Lock()
        self.conns = set()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.alive = True
        threading.Thread(target=self._accept, daemon=True).start()
        mp.on_cleanup(self.kill)

    def _accept(self):
        while self.alive:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _answer(self, path):
        if path.startswith(b"/healthz"):
            return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        with self.lock:
            if self.mode == "503":
                self.failed += 1
                if self.first_503 is None:
                    self.first_503 = time.monotonic()
                return b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbad\n"
            self.ok += 1
        body = self.name.encode()
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

    def _serve(self, c):
        buf = b""
        try:
            while self.alive:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")  # GETs only: no body
                c.sendall(self._answer(head.split(b" ", 2)[1]))
        except OSError:
            pass
        finally:
            with self.lock:
                self.conns.discard(c)
            c.close()

    def kill(self):
        self.alive = False
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def drill_config(ports):
    endpoints = "".join(
        "        - endpoint:\n"
        "            address:\n"
        "              socket_address: {address: 127.0.0.1, port_value: %d}\n" % p for p in ports)
    return """\
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: $admin}
static_resources:
  listeners:
  - name: l1
    address:
      socket_address: {address: 127.0.0.1, port_value: $port}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route:
                  cluster: backend
                  timeout: 5s
                  retry_policy:
                    retry_on: "5xx,reset,connect-failure"
                    num_retries: 3
                    retry_host_predicate:
                    - name: envoy.retry_host_predicates.previous_hosts
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate
                    host_selection_retry_max_attempts: 3
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 0.5s
    circuit_breakers:
      thresholds:
      - max_retries: 50
    outlier_detection:
      consecutive_5xx: 3
      interval: 1s
      base_ejection_time: 2s
      max_ejection_percent: 70
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
%s""" % endpoints


class Load:
    """CLIENTS keep-alive clients sending GETs at LOAD_RPS in total for LOAD_SECONDS; every
    answer that is not a 200 (or a broken connection) is an error the client saw."""

    def __init__(self, port):
        self.port = port
        self.sent = 0
        self.ok = 0
        self.errors = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                        for i in range(CLIENTS)]

    def start(self):
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()

    def _client(self, i):
        period = CLIENTS / LOAD_RPS
        n = int(LOAD_RPS * LOAD_SECONDS / CLIENTS) + 1
        conn = None
        for k in range(n):
            due = self.t0 + (k * CLIENTS + i) / LOAD_RPS
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, period))
            with self.lock:
                self.sent += 1
            try:
                if conn is None:
                    conn = mp.Conn(self.port, timeout=10)
                r = conn.request("GET", "/work/%d/%d" % (i, k))
                if r.status != 200:
                    raise RuntimeError("status %d %r" % (r.status, r.body[:60]))
                with self.lock:
                    self.ok += 1
            except Exception as e:  # every failure is what the drill must not see
                with self.lock:
                    self.errors.append((time.monotonic() - self.t0, repr(e)))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def join(self):
        for t in self.threads:
            t.join(LOAD_SECONDS + 30)


def ejected(m, port):
    """Whether /clusters reports the host on port as failed_outlier_check."""
    text = m.admin("/clusters")[1]
    return any(("127.0.0.1:%d::health_flags::" % port) in line and "failed_outlier_check" in line
               for line in text.splitlines())


def test_self_healing_drill():
    hosts = [DrillHost("h%d" % i) for i in range(3)]
    port = mp.free_port()
    m = mp.Magpie(drill_config([h.port for h in hosts]), ports={"port": port}, concurrency=2)
    load = Load(port)
    load.start()
    bad, doomed = hosts[0], hosts[1]
    time.sleep(4)  # the drill's timeline: steady state first
    bad.mode = "503"
    deadline = time.monotonic() + 5
    while not ejected(m, bad.port) and time.monotonic() < deadline:
        time.sleep(0.02)
    ejected_at = time.monotonic()
    mp.check(ejected(m, bad.port), "the 503 host was not ejected within 5 s")
    mp.check(bad.first_503 is not None, "the 503 host saw no request")
    mp.check(ejected_at - bad.first_503 <= 1.0, "ejected %.2f s after its first 503"
             % (ejected_at - bad.first_503))
    time.sleep(3)
    doomed.kill()
    time.sleep(3)
    bad.mode = "ok"  # heals; its ejection (2 s, then 4 s) runs out and it gets traffic again
    healed_ok = bad.ok
    load.join()
    st = m.stats()
    print("    503 host ejected %.3f s after its first 503" % (ejected_at - bad.first_503))
    print("    sent %d ok %d errors %d; hosts ok %s failed %s; retries %s (overflow %s), "
          "ejections %s" % (load.sent, load.ok, len(load.errors), [h.ok for h in hosts],
                            [h.failed for h in hosts], st.get("cluster.backend.upstream_rq_retry"),
                            st.get("cluster.backend.upstream_rq_retry_overflow"),
                            st.get("cluster.backend.outlier_detection.ejections_enforced_total")),
          flush=True)
    mp.eq(load.errors[:5], [], "client-visible errors (%d in all)" % len(load.errors))
    mp.check(load.sent >= LOAD_RPS * LOAD_SECONDS * 0.95, "load sent only %d" % load.sent)
    mp.eq(load.ok, load.sent, "every request succeeded")
    mp.check(load.sent / (time.monotonic() - load.t0) >= 200 * 0.9 or load.sent >= 4000,
             "load rate")
    mp.check(bad.ok > healed_ok, "the healed host got traffic again (%d -> %d)"
             % (healed_ok, bad.ok))
    m.stop()


def failover_config(p0, p1):
    def group(zone, prio, ports):
        eps = "".join("          - endpoint:\n"
                      "              address:\n"
                      "                socket_address: {address: 127.0.0.1, port_value: %d}\n"
                      % p for p in ports)
        return ("      - locality: {region: r1, zone: %s}\n        priority: %d\n"
                "        lb_endpoints:\n%s" % (zone, prio, eps))
    return drill_config([]).replace("""      - lb_endpoints:
""", group("zone-a", 0, p0) + group("zone-b", 1, p1)).replace("""    outlier_detection:
      consecutive_5xx: 3
      interval: 1s
      base_ejection_time: 2s
      max_ejection_percent: 70
""", """    health_checks:
    - timeout: 0.25s
      interval: %s
      no_traffic_interval: %s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: {path: /healthz}
""" % (HC_INTERVAL, HC_INTERVAL))


HC_INTERVAL = "1s"


def served_by(load_port, n=20):
    """Which hosts answered n requests in a row (their names)."""
    seen = set()
    with mp.Conn(load_port) as c:
        for i in range(n):
            r = c.request("GET", "/who/%d" % i)
            mp.eq(r.status, 200, "request during the failover drill")
            seen.add(r.body.decode())
    return seen


def test_zone_failover_drill():
    a = [DrillHost("a0"), DrillHost("a1")]
    b = [DrillHost("b0"), DrillHost("b1")]
    port = mp.free_port()
    m = mp.Magpie(failover_config([h.port for h in a], [h.port for h in b]),
                  ports={"port": port}, concurrency=2)
    mp.eq(served_by(port), {"a0", "a1"}, "zone a (priority 0) takes all traffic")
    down_at = time.monotonic()
    for h in a:
        h.kill()

    def zone_a_failed():
        text = m.admin("/clusters")[1]
        return all(("127.0.0.1:%d::health_flags::/failed_active_hc" % h.port) in text for h in a)

    mp.wait_until(zone_a_failed, 5, interval=0.01, what="zone a marked failed")
    moved = time.monotonic() - down_at
    print("    zone a failed by health checks %.2f s after it went down" % moved, flush=True)
    mp.check(moved <= 1.0 + 0.25 + 0.2, "failover took %.2f s (interval 1 s)" % moved)
    mp.eq(served_by(port), {"b0", "b1"}, "zone b (priority 1) takes all traffic")
    up_at = time.monotonic()
    a = [DrillHost(h.name, h.port) for h in a]  # zone a comes back on the same addresses

    def zone_a_back():
        text = m.admin("/clusters")[1]
        return all(("127.0.0.1:%d::health_flags::healthy" % h.port) in text for h in a)

    mp.wait_until(zone_a_back, 5, interval=0.01, what="zone a healthy again")
    back = time.monotonic() - up_at
    print("    zone a back %.2f s after it recovered" % back, flush=True)
    mp.check(back <= 1.0 + 0.25 + 0.2, "failback took %.2f s" % back)
    mp.eq(served_by(port), {"a0", "a1"}, "traffic moved back to zone a")
    m.stop()
