"""magpie's active health checker <-> small Python health servers (HTTP/1.1, TCP, gRPC), a host
that hangs and a refused port: flags in /clusters, stats, traffic only to healthy hosts, and
/ready only after the first round."""

import socket
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mp


class HealthServer:
    """An HTTP/1.1 server: /healthz answers `status` (changeable), anything else 200 `name`.
    Counts health requests and keeps the last Host header they carried."""

    def __init__(self, name, status=200):
        self.name, self.status, self.checks, self.host, self.served = name, status, 0, None, 0
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path == "/healthz":
                    outer.checks += 1
                    outer.host = self.headers.get("Host")
                    outer.hc_header = self.headers.get("x-hc")
                    code, body = outer.status, b"hc"
                else:
                    outer.served += 1
                    code, body = 200, outer.name.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        mp.on_cleanup(self.stop)

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def hanging_port():
    """A listening socket that accepts (by the kernel's backlog) but never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    mp.on_cleanup(s.close)
    return s.getsockname()[1]


def hc_yaml(kind, unhealthy=2, healthy=2, timeout="0.5s", interval="0.1s", extra=""):
    return """\
    health_checks:
    - timeout: %s
      interval: %s
      no_traffic_interval: %s
      unhealthy_threshold: %d
      healthy_threshold: %d
%s
%s""" % (timeout, interval, interval, unhealthy, healthy, kind, extra)


HTTP_HC = """\
      http_health_check:
        path: /healthz
        host: hc.example
        expected_statuses: [{start: 200, end: 300}]
        request_headers_to_add: [{header: {key: x-hc, value: "1"}}]"""


def config(ports, hc):
    eps = "".join("""\
        - endpoint:
            address:
              socket_address: {address: 127.0.0.1, port_value: %d}
""" % p for p in ports[1:])
    return mp.simple_config(ports[0], cluster_extra=hc).rstrip("\n") + "\n" + eps


def flags(m):
    """{host:port: health_flags} from /clusters."""
    out = {}
    for line in m.admin("/clusters")[1].splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == "c1" and parts[2] == "health_flags":
            out[parts[1]] = parts[3]
    return out


def wait_flag(m, port, want, timeout=10.0):
    key = "127.0.0.1:%d" % port
    mp.wait_until(lambda: flags(m).get(key) == want, timeout=timeout,
                  what="%s health_flags %s (now %s)" % (key, want, flags(m).get(key)))


def test_http_unhealthy_host_gets_no_traffic_then_returns():
    a, b = HealthServer("a"), HealthServer("b")
    port = mp.free_port()
    m = mp.Magpie(config([a.port, b.port], hc_yaml(HTTP_HC)), ports={"port": port})
    # /ready waited for the first round: both hosts have been checked and are healthy.
    eq_flags = flags(m)
    mp.eq(eq_flags.get("127.0.0.1:%d" % a.port), "healthy", "a after the first round")
    mp.eq(eq_flags.get("127.0.0.1:%d" % b.port), "healthy", "b after the first round")
    mp.eq(b.host, "hc.example", "Host of the check is http_health_check.host")
    mp.eq(b.hc_header, "1", "request_headers_to_add reach the health server")
    b.status = 503
    wait_flag(m, b.port, "/failed_active_hc")
    s = m.stats()
    mp.check(s["cluster.c1.health_check.failure"] >= 2, "failures counted: %s" % s)
    mp.check(s["cluster.c1.health_check.attempt"] >= s["cluster.c1.health_check.success"] + 2,
             "attempts cover successes and failures")
    mp.eq(s["cluster.c1.health_check.healthy"], 1, "healthy gauge")
    mp.eq(s["cluster.c1.membership_healthy"], 1, "membership_healthy gauge")
    b_served = b.served
    bodies = [mp.get(port, "/x").body for _ in range(10)]
    mp.eq(set(bodies), {b"a"}, "only the healthy host gets traffic")
    mp.eq(b.served, b_served, "the failed host got no request")
    b.status = 200
    wait_flag(m, b.port, "healthy")
    bodies = [mp.get(port, "/x").body for _ in range(10)]
    mp.eq(set(bodies), {b"a", b"b"}, "the host is back in rotation")
    m.stop()


def test_timeout_and_refused_fail_and_startup_waits():
    # Two good hosts of four: 50 % usable is not below the panic threshold, so the failed
    # hosts really are skipped (one good host of three would put the cluster in panic).
    good, good2 = HealthServer("good"), HealthServer("good")
    hang, refused = hanging_port(), mp.refused_port()
    port = mp.free_port()
    t0 = time.monotonic()
    m = mp.Magpie(config([good.port, good2.port, hang, refused],
                         hc_yaml(HTTP_HC, unhealthy=1, timeout="0.6s")), ports={"port": port})
    # The first round ends when the hanging host's check times out (0.6 s): not before.
    mp.check(time.monotonic() - t0 >= 0.5, "/ready waited for the first round of checks")
    f = flags(m)
    mp.eq(f.get("127.0.0.1:%d" % good.port), "healthy", "good host")
    mp.eq(f.get("127.0.0.1:%d" % hang), "/failed_active_hc", "hanging host (timeout)")
    mp.eq(f.get("127.0.0.1:%d" % refused), "/failed_active_hc", "refused port")
    s = m.stats()
    mp.check(s["cluster.c1.health_check.network_failure"] >= 2, "timeouts and refusals are "
             "network failures: %s" % s)
    mp.eq(s["cluster.c1.health_check.passive_failure"], 0, "no passive failures")
    for _ in range(6):
        mp.eq(mp.get(port, "/x").body, b"good", "traffic only to the healthy host")
    m.stop()


def test_pending_until_first_check():
    """A host whose first check cannot finish before /ready is read shows both Envoy flags."""
    hang = hanging_port()
    good = HealthServer("good")
    port = mp.free_port()
    m = mp.Magpie(config([good.port, hang], hc_yaml(HTTP_HC, timeout="3s")), ports={"port": port},
                  wait_ready=False)
    mp.wait_until(lambda: "127.0.0.1:%d" % hang in flags_safe(m), timeout=10, what="/clusters")
    mp.eq(flags_safe(m)["127.0.0.1:%d" % hang], "/failed_active_hc/pending_active_hc",
          "unchecked host is failed and pending")
    mp.check(m.admin("/ready")[0] != 200, "not ready before the first round ends")
    m.wait_ready(timeout=10)
    mp.eq(flags(m)["127.0.0.1:%d" % hang], "/failed_active_hc", "timed out: pending cleared")
    m.stop()


def flags_safe(m):
    try:
        return flags(m)
    except OSError:
        return {}


class TcpServer:
    """Answers `reply` to any bytes it receives."""

    def __init__(self, reply):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        threading.Thread(target=self._run, daemon=True).start()
        mp.on_cleanup(self.sock.close)

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(10)
        try:
            while c.recv(1024):
                c.sendall(self.reply)
        except OSError:
            pass
        c.close()


def test_tcp_send_receive():
    ok, bad = TcpServer(b"xx pong yy"), TcpServer(b"nope")
    tcp = """\
      tcp_health_check:
        send: {text: "70696e67"}
        receive: [{text: "706f"}, {binary: "bmc="}]"""
    port = mp.free_port()
    m = mp.Magpie(config([ok.port, bad.port], hc_yaml(tcp, unhealthy=1)), ports={"port": port})
    wait_flag(m, ok.port, "healthy")
    wait_flag(m, bad.port, "/failed_active_hc")
    mp.check(m.stats()["cluster.c1.health_check.success"] >= 1, "success counted")
    m.stop()


def test_grpc_health():
    try:
        import grpc
    except ImportError:
        raise mp.Skip("python3-grpcio missing")
    state = {"status": 1}

    def check(req, ctx):
        # HealthCheckResponse{status}: field 1, varint.
        return bytes([0x08, state["status"]])

    handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=lambda b: b,
                                                     response_serializer=lambda b: b)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    gport = server.add_insecure_port("127.0.0.1:0")
    server.start()
    mp.on_cleanup(lambda: server.stop(0))
    g = """\
      grpc_health_check: {service_name: "svc"}"""
    port = mp.free_port()
    m = mp.Magpie(config([gport], hc_yaml(g, unhealthy=1, healthy=1)), ports={"port": port})
    wait_flag(m, gport, "healthy")
    state["status"] = 2  # NOT_SERVING
    wait_flag(m, gport, "/failed_active_hc")
    state["status"] = 1
    wait_flag(m, gport, "healthy")
    m.stop()


def test_http2_codec():
    """codec_client_type HTTP2 against the gRPC server: a GET on a path it does not serve gets an
    HTTP/2 answer whose status (200 with grpc-status 12) is in the expected range only when we
    accept 200, so the check passes — and fails when we ask for 204."""
    try:
        import grpc
    except ImportError:
        raise mp.Skip("python3-grpcio missing")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    gport = server.add_insecure_port("127.0.0.1:0")
    server.start()
    mp.on_cleanup(lambda: server.stop(0))
    h2 = """\
      http_health_check:
        path: /nothing
        codec_client_type: HTTP2
        expected_statuses: [{start: %d, end: %d}]"""
    for rng, want in (((200, 201), "healthy"), ((204, 205), "/failed_active_hc")):
        port = mp.free_port()
        m = mp.Magpie(config([gport], hc_yaml(h2 % rng, unhealthy=1, healthy=1)),
                      ports={"port": port})
        wait_flag(m, gport, want)
        m.stop()
