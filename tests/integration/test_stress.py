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


class ResetAfterHead:
    """An upstream that reads a request head and resets the connection without answering."""

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


if __name__ == "__main__":
    import run
    run.main([__file__])
