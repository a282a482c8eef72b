"""Python TCP client <-> magpie (envoy.filters.network.tcp_proxy) <-> Python TCP upstreams on
loopback: bytes both ways, half-close in each direction, weighted clusters, idle timeout,
connect failures and retries on another host, backpressure, the tcp.<stat_prefix>.* and
cluster byte counters, the access log and the drain at shutdown (docs/tcp-proxy.md)."""

import hashlib
import os
import socket
import threading
import time

import mp

# ---------------------------------------------------------------- upstreams


class TcpUpstream:
    """A threaded loopback TCP server; handler(conn_socket, server) serves one connection.
    received collects, per connection, what handlers choose to record."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.received = []
        self.gate = threading.Event()  # handlers that wait for the test use it
        self.lock = threading.Lock()
        self._conns = set()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()
        mp.on_cleanup(self.stop)

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self._conns.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(30)
            self.handler(c, self)
        except OSError:
            pass
        finally:
            with self.lock:
                self._conns.discard(c)
            c.close()

    def record(self, data):
        with self.lock:
            self.received.append(data)

    def stop(self):
        self._stop = True
        self.gate.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for c in list(self._conns):
                try:
                    c.close()
                except OSError:
                    pass


def read_all(c, limit=64 << 20):
    out = bytearray()
    while len(out) <= limit:
        d = c.recv(1 << 20)
        if not d:
            break
        out += d
    return bytes(out)


def echo(c, srv):
    """Echoes until the client's FIN, then sends its own FIN."""
    while True:
        d = c.recv(1 << 20)
        if not d:
            break
        c.sendall(d)
    c.shutdown(socket.SHUT_WR)


def reply_after_fin(c, srv):
    """Reads to the client's FIN, then still answers: proves the upstream can send after it."""
    data = read_all(c)
    srv.record(data)
    c.sendall(b"got %d bytes: " % len(data) + data[::-1])
    c.shutdown(socket.SHUT_WR)


def fin_first(c, srv):
    """Sends a greeting and its FIN at once, then reads what the client still sends."""
    c.sendall(b"greeting")
    c.shutdown(socket.SHUT_WR)
    srv.record(read_all(c))


def gated_sink(c, srv):
    """Reads nothing until the test opens the gate, then counts and hashes everything."""
    srv.gate.wait(30)
    data = read_all(c)
    srv.record((len(data), hashlib.sha256(data).hexdigest()))
    c.sendall(b"ok")


def named(tag):
    def handler(c, srv):
        c.sendall(tag)
        c.shutdown(socket.SHUT_WR)
        read_all(c)
    return handler


def silent(c, srv):
    read_all(c)


# ---------------------------------------------------------------- magpie


def endpoints_yaml(ports):
    return "".join("""\
        - endpoint:
            address:
              socket_address: {address: 127.0.0.1, port_value: %d}
""" % p for p in ports)


def cluster(name, ports, extra=""):
    return """\
  - name: %s
    type: STATIC
    connect_timeout: 1s
%s    load_assignment:
      cluster_name: %s
      endpoints:
      - lb_endpoints:
%s""" % (name, extra, name, endpoints_yaml(ports))


ACCESS = "%UPSTREAM_CLUSTER% %BYTES_RECEIVED% %BYTES_SENT% %RESPONSE_FLAGS% %UPSTREAM_HOST%\\n"


def tcp_config(target, clusters, extra="", limit=1048576):
    """One tcp_proxy listener on $port (stat_prefix tp); target is the `cluster: x` or
    `weighted_clusters:` YAML at typed_config level (10 spaces)."""
    return """\
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: $admin}
static_resources:
  listeners:
  - name: tcp
    address:
      socket_address: {address: 127.0.0.1, port_value: $port}
    per_connection_buffer_limit_bytes: %d
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tp
%s
%s
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: $dir/access.log
              log_format:
                text_format_source:
                  inline_string: "%s"
  clusters:
%s""" % (limit, target.rstrip("\n"), extra.rstrip("\n"), ACCESS, clusters)


def start(target, clusters, extra="", limit=1048576, **kw):
    port = mp.free_port()
    m = mp.Magpie(tcp_config(target, clusters, extra, limit), ports={"port": port}, **kw)
    return m, port


def one_cluster(up_port, extra="", limit=1048576, **kw):
    return start("          cluster: c1", cluster("c1", [up_port]), extra, limit, **kw)


def connect(port, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            raise mp.TestFailure("EOF after %d of %d bytes" % (len(out), n))
        out += d
    return bytes(out)


def wait_closed(s, timeout):
    """Seconds until the peer closes s (EOF or reset); fails after timeout."""
    s.settimeout(timeout)
    t0 = time.monotonic()
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise mp.TestFailure("connection still open after %.1fs" % timeout)
    return time.monotonic() - t0


def wait_stat(m, name, pred, what, timeout=5.0):
    try:
        return mp.wait_until(lambda: pred(m.stats().get(name, 0)), timeout, what=what)
    except mp.TestFailure:
        m.fail("%s: %s is %r" % (what, name, m.stats().get(name)))


def finish(m):
    """Stops magpie and checks it exits cleanly: status 0, no sanitizer report (ASan builds
    find leaks and use-after-free of connection objects here)."""
    rc = m.stop()
    log = m.log()
    if rc != 0 or "Sanitizer" in log or "runtime error" in log:
        m.fail("magpie exit status %r or a sanitizer report" % rc)


# ---------------------------------------------------------------- tests


def test_bytes_round_trip_and_counters():
    up = TcpUpstream(echo)
    m, port = one_cluster(up.port)
    payload = os.urandom(100000)
    with connect(port) as s:
        s.sendall(payload)
        got = recv_exact(s, len(payload))
        mp.eq(got == payload, True, "echoed bytes equal what was sent")
        s.shutdown(socket.SHUT_WR)
        mp.eq(read_all(s), b"", "EOF follows the upstream's FIN")
    n = len(payload)
    # Every counter on both sides of the proxy saw exactly the bytes that crossed it.
    for name in ("tcp.tp.downstream_cx_rx_bytes_total", "tcp.tp.downstream_cx_tx_bytes_total",
                 "cluster.c1.upstream_cx_tx_bytes_total", "cluster.c1.upstream_cx_rx_bytes_total"):
        wait_stat(m, name, lambda v: v == n, "%s == %d" % (name, n))
    # The connection ended by FIN both ways: closed, counted, logged.
    wait_stat(m, "listener.127.0.0.1_%d.downstream_cx_active" % port, lambda v: v == 0,
              "listener connection closed")
    st = m.stats()
    mp.eq(st.get("tcp.tp.downstream_cx_total"), 1, "tcp.tp.downstream_cx_total")
    mp.eq(st.get("cluster.c1.upstream_cx_total"), 1, "cluster.c1.upstream_cx_total")
    mp.eq(st.get("cluster.c1.upstream_cx_active"), 0, "cluster.c1.upstream_cx_active")
    mp.eq(st.get("listener.127.0.0.1_%d.downstream_cx_total" % port), 1, "listener cx total")
    line = m.access_lines(1)[-1].split(" ")
    mp.eq(line[:4], ["c1", str(n), str(n), "-"], "access log: cluster, bytes, no flags")
    mp.eq(line[4], "127.0.0.1:%d" % up.port, "access log: upstream host")
    # Prometheus carries the stat_prefix as Envoy's tag.
    samples, _ = mp.parse_prometheus(m.admin("/stats/prometheus")[1])
    mp.eq(mp.prom_value(samples, "envoy_tcp_downstream_cx_total", envoy_tcp_prefix="tp"), 1.0,
          "envoy_tcp_downstream_cx_total{envoy_tcp_prefix=tp}")
    finish(m)


def test_8mib_both_ways_concurrently():
    up = TcpUpstream(echo)
    # A small limit makes backpressure engage on the way, in both directions.
    m, port = one_cluster(up.port, limit=65536)
    size = 8 << 20
    payload = os.urandom(size)
    got = bytearray()
    errors = []

    def reader(s):
        try:
            while len(got) < size:
                d = s.recv(1 << 20)
                if not d:
                    break
                got.extend(d)
        except OSError as e:
            errors.append(e)

    with connect(port, timeout=30) as s:
        t = threading.Thread(target=reader, args=(s,), daemon=True)
        t.start()
        s.sendall(payload)
        t.join(60)
        mp.check(not t.is_alive(), "reader finished")
    mp.eq(errors, [], "reader errors")
    mp.eq(len(got), size, "bytes echoed")
    mp.check(bytes(got) == payload, "8 MiB echoed intact, in order")
    wait_stat(m, "tcp.tp.downstream_cx_rx_bytes_total", lambda v: v == size, "rx == 8 MiB")
    wait_stat(m, "tcp.tp.downstream_cx_tx_bytes_total", lambda v: v == size, "tx == 8 MiB")
    finish(m)


test_8mib_both_ways_concurrently.timeout = 120


def test_backpressure_pauses_and_resumes_client_reads():
    up = TcpUpstream(gated_sink)
    m, port = one_cluster(up.port, limit=65536)
    size = 16 << 20
    payload = os.urandom(size)
    done = threading.Event()

    def sender(s):
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        done.set()

    with connect(port, timeout=30) as s:
        threading.Thread(target=sender, args=(s,), daemon=True).start()
        # The upstream reads nothing: magpie must stop reading the client rather than buffer.
        wait_stat(m, "tcp.tp.downstream_flow_control_paused_reading_total", lambda v: v >= 1,
                  "client reads paused")
        rx = m.stats().get("tcp.tp.downstream_cx_rx_bytes_total", 0)
        mp.check(rx < size // 2, "magpie holds back (read %d of %d bytes)" % (rx, size))
        up.gate.set()
        mp.eq(recv_exact(s, 2), b"ok", "upstream answered after reading everything")
        mp.check(done.wait(30), "sender finished")
    mp.eq(up.received, [(size, hashlib.sha256(payload).hexdigest())], "upstream got all, intact")
    st = m.stats()
    mp.check(st["tcp.tp.downstream_flow_control_resumed_reading_total"] >= 1, "reads resumed")
    finish(m)


test_backpressure_pauses_and_resumes_client_reads.timeout = 120


def test_client_half_close_upstream_still_answers():
    up = TcpUpstream(reply_after_fin)
    m, port = one_cluster(up.port)
    with connect(port) as s:
        s.sendall(b"abcdef")
        s.shutdown(socket.SHUT_WR)  # our FIN must reach the upstream...
        got = read_all(s)  # ...which answers after it and then closes
    mp.eq(got, b"got 6 bytes: fedcba", "answer written after the client's FIN")
    mp.eq(up.received, [b"abcdef"], "upstream saw the bytes then EOF")
    wait_stat(m, "cluster.c1.upstream_cx_active", lambda v: v == 0, "upstream closed")
    finish(m)


def test_upstream_half_close_client_still_sends():
    up = TcpUpstream(fin_first)
    m, port = one_cluster(up.port)
    with connect(port) as s:
        mp.eq(read_all(s), b"greeting", "greeting then EOF (the upstream's FIN forwarded)")
        s.sendall(b"still talking")  # the other direction stays open
        s.shutdown(socket.SHUT_WR)
        mp.wait_until(lambda: up.received, 5, what="upstream read to EOF")
    mp.eq(up.received, [b"still talking"], "bytes sent after the upstream's FIN arrived")
    wait_stat(m, "listener.127.0.0.1_%d.downstream_cx_active" % port, lambda v: v == 0,
              "connection closed after both FINs")
    finish(m)


def test_weighted_clusters_use_both():
    a = TcpUpstream(named(b"A"))
    b = TcpUpstream(named(b"B"))
    target = """\
          weighted_clusters:
            clusters:
            - {name: ca, weight: 1}
            - {name: cb, weight: 1}"""
    m, port = start(target, cluster("ca", [a.port]) + cluster("cb", [b.port]))
    seen = {b"A": 0, b"B": 0}
    for _ in range(100):
        with connect(port) as s:
            tag = read_all(s)
            mp.check(tag in seen, "tag %r" % tag)
            seen[tag] += 1
    # A fair coin 100 times gives fewer than 20 of one side with probability ~1e-9.
    mp.check(seen[b"A"] >= 20 and seen[b"B"] >= 20, "both clusters used: %r" % seen)
    st = m.stats()
    mp.eq(st.get("tcp.tp.downstream_cx_total"), 100, "tcp.tp.downstream_cx_total")
    mp.eq(st.get("cluster.ca.upstream_cx_total", 0) + st.get("cluster.cb.upstream_cx_total", 0),
          100, "one upstream connection per client connection")
    finish(m)


def test_idle_timeout_closes_both():
    up = TcpUpstream(silent)
    m, port = one_cluster(up.port, extra="          idle_timeout: 0.3s")
    with connect(port) as s:
        s.sendall(b"x")
        mp.wait_until(lambda: up.connections == 1, 5, what="upstream connection")
        took = wait_closed(s, 5.0)
    mp.check(0.15 <= took < 3.0, "closed after %.2fs (idle_timeout 0.3s)" % took)
    wait_stat(m, "tcp.tp.idle_timeout", lambda v: v == 1, "tcp.tp.idle_timeout")
    wait_stat(m, "cluster.c1.upstream_cx_active", lambda v: v == 0, "upstream side closed too")
    mp.eq(m.access_lines(1)[-1].split(" ")[3], "SI", "access log: idle timeout flag")
    finish(m)


def test_connect_failure_closes_client():
    m, port = one_cluster(mp.refused_port())
    with connect(port) as s:
        s.sendall(b"hello")
        wait_closed(s, 5.0)
    wait_stat(m, "cluster.c1.upstream_cx_connect_fail", lambda v: v >= 1, "connect_fail counted")
    mp.eq(m.access_lines(1)[-1].split(" ")[3], "UF", "access log: connect failure flag")
    mp.eq(m.stats().get("listener.127.0.0.1_%d.downstream_cx_active" % port), 0, "closed")
    finish(m)


def test_max_connect_attempts_tries_another_host():
    up = TcpUpstream(echo)
    dead = mp.refused_port()
    clusters = cluster("c1", [dead, up.port])
    m, port = start("          cluster: c1", clusters, "          max_connect_attempts: 2")
    # Round robin starts half of the connections on the dead host; each must still get through.
    for i in range(10):
        with connect(port) as s:
            s.sendall(b"n%d" % i)
            mp.eq(recv_exact(s, 2), b"n%d" % i, "connection %d echoed" % i)
    st = m.stats()
    mp.check(st.get("cluster.c1.upstream_cx_connect_fail", 0) >= 4,
             "the dead host was tried (connect_fail %r)" % st.get(
                 "cluster.c1.upstream_cx_connect_fail"))
    mp.eq(up.connections, 10, "every connection reached the live host")
    finish(m)


def test_unknown_cluster_closes_and_counts_no_route():
    m, port = start("          cluster: nope", cluster("c1", [mp.refused_port()]))
    with connect(port) as s:
        wait_closed(s, 5.0)
    wait_stat(m, "tcp.tp.downstream_cx_no_route", lambda v: v == 1, "downstream_cx_no_route")
    mp.eq(m.access_lines(1)[-1].split(" ")[:4], ["nope", "0", "0", "NC"], "access log")
    finish(m)


def test_drain_lets_connections_finish_then_closes():
    up = TcpUpstream(echo)
    m, port = one_cluster(up.port, drain_time_s=1)
    with connect(port) as s:
        s.sendall(b"before")
        mp.eq(recv_exact(s, 6), b"before", "echo before the drain")
        os.kill(m.pid, 15)
        # Draining: new connections are refused, this one keeps working...
        mp.wait_until(lambda: not mp.port_open(port), 5, what="listener closed")
        s.sendall(b"during")
        mp.eq(recv_exact(s, 6), b"during", "echo while draining")
        # ...until the deadline closes it.
        wait_closed(s, 5.0)
    mp.eq(m.proc.wait(10), 0, "magpie exit status after the drain")
    finish(m)


if __name__ == "__main__":
    import run
    run.main([__file__])
