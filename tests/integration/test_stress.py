"""Stress and fault regressions of the HTTP/1.1 data path: clients and upstreams that break off
at awkward moments, under concurrency.  Each test ends by stopping magpie and requiring a clean
exit (status 0, no sanitizer report) and, where it applies, that the /stats gauges of active
connections and requests come back to 0.  Every loop is bounded in count and in time."""

import socket
import subprocess
import threading
import time

import mp

GAUGES = ("downstream_cx_active", "downstream_rq_active", "upstream_rq_active",
          "upstream_cx_active")
# Pooled upstream connections close after this idle time, so upstream_cx_active can reach 0.
SHORT_POOL = "    common_http_protocol_options: {idle_timeout: 0.2s}"


def start(up_port, **kw):
    port = mp.free_port()
    kw.setdefault("cluster_extra", SHORT_POOL)
    m = mp.Magpie(mp.simple_config(up_port, **kw), ports={"port": port}, concurrency=2)
    return m, port


def active_gauges(m):
    return {k: v for k, v in m.stats().items() if k.endswith(GAUGES) and v != 0}


def gauges_settle(m, timeout=5.0):
    try:
        mp.wait_until(lambda: not active_gauges(m), timeout, what="active gauges to reach 0")
    except mp.TestFailure:
        m.fail("gauges still active after the load: %r" % active_gauges(m))


def clean_exit(m):
    """SIGTERM; the exit must be 0 with nothing from the sanitizers in the log."""
    mp.check(m.alive(), "magpie died during the test:\n" + m.log()[-4000:])
    rc = m.stop()
    log = m.log()
    if rc != 0 or "Sanitizer" in log or "runtime error" in log:
        raise mp.TestFailure("magpie exit %r\n%s" % (rc, log[-6000:]))


def rst_close(s):
    # SO_LINGER 0: close() sends RST, as a client that crashes or gives up does.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()


def run_clients(fn, n, parallel=20, timeout=30.0):
    """Runs fn(i) for i in range(n), `parallel` at a time, all joined within timeout."""
    deadline = time.monotonic() + timeout
    threads = []
    for i in range(n):
        t = threading.Thread(target=fn, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        if len(threads) >= parallel:
            threads.pop(0).join(max(0.1, deadline - time.monotonic()))
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    mp.check(time.monotonic() < deadline, "clients did not finish in %.0fs" % timeout)


class RawUpstream:
    """A loopback server that hands each accepted connection to self._serve on its own thread."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        mp.on_cleanup(self.sock.close)

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()


class ResetAfterHead(RawUpstream):
    """An upstream that reads a request head and resets the connection without answering."""

    def _serve(self, c):
        try:
            c.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                d = c.recv(4096)
                if not d:
                    break
                data += d
            rst_close(c)
        except OSError:
            c.close()


def test_client_reset_mid_response():
    """A client that resets while its response streams: the failed downstream write closes the
    connection and frees the stream inside the body callback (was a use-after-free)."""
    up = mp.TestUpstream()
    m, port = start(up.port)

    def client(i):
        path = "/bytes/2000000" + ("?chunked=1" if i % 2 else "")
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(mp.build_request("GET", path))
            got = 0
            while got < 1000 * (i % 7 + 1):
                d = s.recv(4096)
                if not d:
                    break
                got += len(d)
            rst_close(s)
        except OSError:
            pass

    run_clients(client, 60)
    mp.eq(mp.get(port, "/echo").status, 200, "still serving after the resets")
    gauges_settle(m)
    clean_exit(m)


def test_upstream_reset_while_request_body_is_written():
    """The upstream resets after the head while the body is still going out, on new and on pooled
    connections: the write error used to fail and free the stream under the caller."""
    up = ResetAfterHead()
    m, port = start(up.port)
    body = b"z" * 300000

    def client(i):
        try:
            with mp.Conn(port, timeout=5) as c:
                # Many small sends: many reads in magpie, one of which meets the reset.
                if i % 2:
                    c.send(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for _ in range(30):
                        c.send(b"2000\r\n" + body[:0x2000] + b"\r\n")
                    c.send(b"0\r\n\r\n")
                else:
                    c.send(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
                           % len(body))
                    for k in range(0, len(body), 10000):
                        c.send(body[k:k + 10000])
                r = c.read_response()
                mp.eq(r.status, 503, "status")
        except (OSError, mp.TestFailure):
            pass  # a reset or close while our body is still going out is acceptable too

    run_clients(client, 300, parallel=30)
    gauges_settle(m)
    clean_exit(m)


def test_keepalive_requests_are_not_delayed_by_nagle():
    """Head and body leave in separate writes; without TCP_NODELAY on the client socket every
    response waited ~40 ms for the client's delayed ACK."""
    up = mp.TestUpstream()
    m, port = start(up.port)
    with mp.Conn(port) as c:
        mp.eq(c.request("GET", "/echo").status, 200, "warm-up")
        t0 = time.monotonic()
        for _ in range(40):
            mp.eq(c.request("GET", "/echo").status, 200, "status")
        took = time.monotonic() - t0
    mp.check(took < 1.2, "40 sequential keep-alive requests took %.2fs (Nagle?)" % took)
    clean_exit(m)



def test_half_closed_client_gets_whole_response():
    """A client that sends its request, shuts down its write side and reads slowly: the end of
    the stream used to close the connection with the response's tail still queued."""
    up = mp.TestUpstream()
    m, port = start(up.port)
    for n in (4000000, 8000000):
        # A small receive window: the tail of the response waits in magpie, not in the kernel.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(mp.build_request("GET", "/bytes/%d" % n))
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.3)  # a slow reader: the upstream side completes meanwhile
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        got = b""
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            got += d
        s.close()
        head, _, body = got.partition(b"\r\n\r\n")
        mp.eq(mp.status_of(head), 200, "status")
        mp.eq(len(body), n, "body bytes before the close")
    gauges_settle(m)
    clean_exit(m)



class Misbehaving(RawUpstream):
    """An upstream whose answer depends on the path: early answers, stray bytes after a response,
    close-delimited bodies, chunked with trailers, 204/304, 1xx, resets, truncated bodies."""

    def _serve(self, c):
        rd = mp._Reader(c)
        try:
            c.settimeout(5)
            while self._one(c, rd):
                pass
        except (OSError, ValueError):
            pass
        c.close()

    @staticmethod
    def _body(rd, hd):
        if "chunked" in hd.get("transfer-encoding", ""):
            return rd.chunked_body()[0]
        return rd.discard(int(hd.get("content-length", "0") or 0))

    def _one(self, c, rd):
        head = rd.head()
        if head is None:
            return False
        method, path, headers = head
        hd = {k.lower(): v for k, v in headers}
        p = path.split("?")[0]
        tag = path.encode()
        if p == "/early":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(tag), tag))
            self._body(rd, hd)
            return True
        self._body(rd, hd)
        replies = {
            "/stray": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%sSTRAY" % (len(tag), tag),
            "/trailers": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"%x\r\n%s\r\n0\r\nx-t: 1\r\n\r\n" % (len(tag), tag),
            "/204": b"HTTP/1.1 204 No Content\r\n\r\n",
            "/304": b"HTTP/1.1 304 Not Modified\r\n\r\n",
            "/1xx": b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(tag), tag),
        }
        if p in replies:
            c.sendall(replies[p])
            return True
        if p == "/closedelim":
            c.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + tag * 50)
            return False
        if p == "/rst":
            rst_close(c)
            return False
        if p == "/cut":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
            return False
        body = b"" if method == "HEAD" else tag
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(tag), body))
        return True


def test_pipelined_bodies_against_misbehaving_upstream():
    """Pipelined requests with bodies (sized, chunked, HTTP/1.0), some clients resetting, against
    every misbehaviour at once: in-order answers, no crash, nothing left active."""
    up = Misbehaving()
    m, port = start(up.port)
    paths = ["/echo", "/early", "/stray", "/trailers", "/204", "/304", "/1xx", "/closedelim",
             "/rst", "/cut"]
    errors = []

    def request(rnd, i, k, v10):
        p = "%s?i=%d&k=%d" % (rnd.choice(paths), i, k)
        meth = rnd.choice(["GET", "POST", "POST", "HEAD"])
        body = b"b" * rnd.choice([0, 7, 30000]) if meth == "POST" else None
        hdrs = [("Connection", "keep-alive")] if v10 else []
        if body and rnd.random() < 0.3:
            hdrs.append(("Transfer-Encoding", "chunked"))
            body = b"%x\r\n%s\r\n0\r\nx-rt: 1\r\n\r\n" % (len(body), body)
        raw = mp.build_request(meth, p, hdrs, body)
        if v10:
            raw = raw.replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)
        return meth, p, raw

    def client(i):
        import random
        rnd = random.Random(i)
        v10 = rnd.random() < 0.2
        reqs = [request(rnd, i, k, v10) for k in range(rnd.randrange(1, 5))]
        try:
            with mp.Conn(port, timeout=5) as c:
                c.send(b"".join(r[2] for r in reqs))
                for meth, p, _ in reqs:
                    r = c.read_response(head=(meth == "HEAD"))
                    plain = p.split("?")[0] in ("/echo", "/early", "/stray", "/1xx")
                    if r.status == 200 and meth != "HEAD" and plain and r.body != p.encode():
                        errors.append("%s answered with %r" % (p, r.body[:60]))
                    if r.header("connection") == "close":
                        break
                if rnd.random() < 0.3:
                    rst_close(c.sock)
        except mp.TestFailure as e:
            if "closed" not in str(e):  # /rst and /cut end connections by design
                errors.append(str(e)[:200])
        except OSError:
            pass

    run_clients(client, 250, parallel=30, timeout=40)
    mp.check(not errors, "%d wrong answers, e.g. %r" % (len(errors), errors[:3]))
    gauges_settle(m)
    clean_exit(m)


test_pipelined_bodies_against_misbehaving_upstream.timeout = 60


def wrk(port, path, seconds, conns, script=None):
    args = ["wrk", "-t", "2", "-c", str(conns), "-d", "%ds" % seconds]
    if script:
        args += ["-s", script]
    return subprocess.Popen(args + ["http://127.0.0.1:%d%s" % (port, path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_wrk_load_then_sigterm_under_load():
    """wrk against nginx and the Python upstream (GET and POST): every gauge back to 0 after the
    load, then SIGTERM in the middle of another load exits 0 without a sanitizer report."""
    ng = mp.Nginx()
    up = mp.TestUpstream()
    routes = ('              - match: {prefix: "/py/"}\n'
              '                route: {cluster: py, prefix_rewrite: "/"}\n'
              '              - match: {prefix: "/"}\n'
              '                route: {cluster: c1}\n')
    m, port = start(ng.port, routes=routes,
                    clusters_extra=mp.cluster_yaml("py", up.port, extra=SHORT_POOL))
    script = mp.tmpdir() + "/post.lua"
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = string.rep("a", 3000)\n')
    loads = [wrk(port, "/small", 2, 100), wrk(port, "/py/echo", 2, 30, script)]
    for w in loads:
        out = w.communicate(timeout=20)[0].decode()
        mp.check("requests in" in out, "wrk output: %s" % out)
    mp.check(m.stats().get("cluster.c1.upstream_rq_2xx", 0) > 100, "nginx answered the load")
    gauges_settle(m)
    w = wrk(port, "/py/delay/20", 3, 60, script)
    mp.wait_until(lambda: m.stats().get("cluster.py.upstream_rq_active", 0) > 0, 5,
                  what="requests in flight")
    clean_exit(m)
    w.communicate(timeout=20)


test_wrk_load_then_sigterm_under_load.timeout = 60


if __name__ == "__main__":
    import run
    run.main([__file__])


def test_early_upstream_answer_keeps_client_connection():
    # nginx's `return 200` answers a POST without reading its body.  magpie must drop the rest of
    # a small body and keep serving the same client connection (pipelined requests included);
    # the upstream connection, left mid-body, must not be reused.
    ng = mp.Nginx()
    m, port = start(ng.port)
    body = b"b" * 20000
    with mp.Conn(port) as c:
        c.send(b"".join(mp.build_request("POST", "/small", body=body) for _ in range(5)))
        for i in range(5):
            r = c.read_response()
            mp.eq((r.status, r.body), (200, b"hello from nginx\n"), "pipelined POST %d" % i)
        mp.eq(c.request("GET", "/small").status, 200, "same connection still serves")
    gauges_settle(m)
    clean_exit(m)


def test_refused_large_body_response_arrives_intact():
    # A 404 for a 4 MiB upload that is still arriving: magpie closes after the response, but
    # lingers reading what the client sends, so the client reads the whole 404 rather than a
    # reset caused by unread bytes.
    up = mp.TestUpstream()
    routes = ('              - match: {prefix: "/only"}\n'
              '                route: {cluster: c1}\n')
    m, port = start(up.port, routes=routes)
    with mp.Conn(port, timeout=10) as c:
        c.send(b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 4194304\r\n\r\n")
        c.send(b"x" * 65536)
        r = c.read_response()
        mp.eq(r.status, 404, "status")
        try:
            for _ in range(16):
                c.send(b"x" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
    mp.eq(up.requests, 0, "nothing reached the upstream")
    clean_exit(m)


def test_local_reply_to_expect_does_not_wait_for_body():
    # A client that sent Expect: 100-continue waits for a 100 before its body; a local 404
    # never sends one, so magpie must answer and close rather than wait for that body.
    up = mp.TestUpstream()
    routes = ('              - match: {prefix: "/only"}\n'
              '                route: {cluster: c1}\n')
    m, port = start(up.port, routes=routes)
    with mp.Conn(port, timeout=5) as c:
        t0 = time.monotonic()
        c.send(b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.read_response()
        mp.eq((r.status, r.interim), (404, []), "404 without a 100 first")
        mp.check(c.closed_by_peer(timeout=3), "closed instead of waiting for the body")
        mp.check(time.monotonic() - t0 < 2.5, "answered and closed promptly")
    clean_exit(m)
