"""HTTP/2 clients (nghttp, curl, h2load, python3-h2, h2raw's raw frames) -> magpie's downstream
HTTP/2 codec -> HTTP/1.1 (mp.TestUpstream) or HTTP/2 (h2_upstream_peer) upstreams.

Covers how a connection becomes HTTP/2 (prior knowledge, AUTO preface detection, h2c upgrade,
codec_type HTTP1/HTTP2), many streams per connection, bodies and header translation, trailers
both ways, flow control tied to the watermarks (memory stays bounded with a slow upstream or a
slow client), the SETTINGS magpie offers, max_concurrent_streams, GOAWAY on drain and idle,
resets in both directions, and a short mixed soak that must leave nothing behind."""

import hashlib
import os
import random
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

import h2raw
import mp
from h2_upstream_peer import H2Peer

ST = "http.ingress."
MIB = 1 << 20


def start(up_port, hcm_extra="", cluster_extra="", concurrency=1, **kw):
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up_port, hcm_extra=hcm_extra, cluster_extra=cluster_extra),
                  ports={"port": port}, concurrency=concurrency, **kw)
    return m, port


def hcm(*lines):
    return "\n".join("          " + l for l in lines)


def stat(m, name):
    return m.stats().get(name, 0)


def pattern_sha(n):
    """sha256 of what TestUpstream's /bytes/<n> sends."""
    blk = b"0123456789abcdef" * 4096
    h = hashlib.sha256()
    left = n
    while left > 0:
        d = blk if left >= len(blk) else blk[:left]
        h.update(d)
        left -= len(d)
    return h.hexdigest()


class Stream:
    def __init__(self):
        self.status = None
        self.headers = []
        self.trailers = []
        self.body = bytearray()
        self.nbytes = 0
        self.sha = hashlib.sha256()
        self.ended = False
        self.reset = None


class H2:
    """A python3-h2 client on an h2c prior-knowledge connection.  pump() reads what the server
    sent; every wait is bounded.  auto_ack=False leaves window updates to the test (a slow
    reader); keep_body=False only hashes DATA (large downloads)."""

    def __init__(self, port, window=None, auto_ack=True, keep_body=True, timeout=10.0,
                 rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.c = h2.connection.H2Connection(config=cfg)
        if window is not None:
            self.c.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.c.initiate_connection()
        self.auto_ack = auto_ack
        self.keep_body = keep_body
        self.streams = {}
        self.goaway = None  # (last_stream_id, error_code)
        self.closed = False
        self.remote_settings = {}
        self.conn_window_updates = 0  # WINDOW_UPDATE increments on stream 0
        self.flush()

    def flush(self):
        d = self.c.data_to_send()
        if d:
            self.sock.sendall(d)

    def request(self, path, method="GET", body=None, headers=(), end=True, authority="test"):
        sid = self.c.get_next_available_stream_id()
        self.streams[sid] = Stream()
        hs = [(":method", method), (":scheme", "http"), (":path", path),
              (":authority", authority)] + list(headers)
        self.c.send_headers(sid, hs, end_stream=end and body is None)
        if body is not None:
            self.c.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def _event(self, ev):
        s = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived):
            s.headers = ev.headers
            s.status = int(dict(ev.headers)[":status"])
        elif isinstance(ev, h2.events.TrailersReceived):
            s.trailers = ev.headers
        elif isinstance(ev, h2.events.DataReceived):
            if s is not None:
                s.nbytes += len(ev.data)
                s.sha.update(ev.data)
                if self.keep_body:
                    s.body += ev.data
            if self.auto_ack:
                self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded) and s is not None:
            s.ended = True
        elif isinstance(ev, h2.events.StreamReset) and s is not None:
            s.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = (ev.last_stream_id, ev.error_code)
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            for k, v in ev.changed_settings.items():
                self.remote_settings[int(k)] = v.new_value
        elif isinstance(ev, h2.events.WindowUpdated) and ev.stream_id == 0:
            self.conn_window_updates += ev.delta

    def pump(self, timeout=1.0):
        """Reads once (up to timeout); False when nothing came or the connection ended."""
        if self.closed:
            return False
        self.sock.settimeout(max(0.001, timeout))
        try:
            d = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except OSError:
            d = b""
        if not d:
            self.closed = True
            return False
        for ev in self.c.receive_data(d):
            self._event(ev)
        try:
            self.flush()
        except OSError:
            self.closed = True
        return True

    def wait(self, pred, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise mp.TestFailure("timed out waiting for %s" % what)
            if not self.pump(min(left, 0.5)) and self.closed and not pred():
                raise mp.TestFailure("connection closed waiting for %s" % what)
        return True

    def done(self, sid):
        s = self.streams[sid]
        return s.ended or s.reset is not None

    def get(self, path, timeout=10.0, **kw):
        sid = self.request(path, **kw)
        self.wait(lambda: self.done(sid), timeout, "stream %d (%s)" % (sid, path))
        return self.streams[sid]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def client(port, **kw):
    c = H2(port, **kw)
    mp.on_cleanup(c.close)
    return c


def run(cmd, timeout=60):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout.decode("utf-8", "replace")


# ---------------------------------------------------------------- 1. how a connection becomes h2

def test_prior_knowledge_and_auto_detection():
    up = mp.TestUpstream()
    m, port = start(up.port)
    st, body, err = mp.curl("http://127.0.0.1:%d/echo" % port, "--http2-prior-knowledge")
    mp.eq(st, 200, "curl --http2-prior-knowledge: " + err)
    # The same AUTO listener serves a plain HTTP/1.1 client on another connection.
    r = mp.get(port, "/echo")
    mp.eq(r.status, 200, "HTTP/1.1 on the AUTO listener")
    c = client(port)
    s = c.get("/echo")
    mp.eq(s.status, 200, "python3-h2 prior knowledge")
    st = m.stats()
    mp.eq(st.get(ST + "downstream_cx_http2_total"), 2, "two HTTP/2 connections counted")
    mp.check(st.get(ST + "downstream_cx_http1_total", 1) >= 1, "one HTTP/1.1 connection")
    # The access log's protocol says HTTP/2 for the h2 streams.
    lines = m.access_lines(3)
    mp.check(all(mp.parse_access(l)["code"] == "200" for l in lines), "all logged 200: %r" % lines)


def test_access_log_protocol_is_http2():
    up = mp.TestUpstream()
    cfg = mp.simple_config(up.port).replace("%RESPONSE_CODE% ", "%RESPONSE_CODE% %PROTOCOL% ")
    port = mp.free_port()
    m = mp.Magpie(cfg, ports={"port": port})
    mp.eq(mp.curl("http://127.0.0.1:%d/echo" % port, "--http2-prior-knowledge")[0], 200, "h2")
    mp.eq(mp.get(port, "/echo").status, 200, "h1")
    lines = m.access_lines(2)
    mp.eq(sorted(l.split(" ")[1] for l in lines), ["HTTP/1.1", "HTTP/2"], "%PROTOCOL%")


def test_codec_http2_prior_knowledge_only():
    up = mp.TestUpstream()
    m, port = start(up.port, hcm_extra=hcm("codec_type: HTTP2"))
    mp.eq(mp.curl("http://127.0.0.1:%d/echo" % port, "--http2-prior-knowledge")[0], 200,
          "prior knowledge on codec HTTP2")
    # An HTTP/1.1 request there is not HTTP/2's preface: the connection ends (nghttp2 answers
    # a GOAWAY, which an HTTP/1.1 client sees as garbage), and nothing reaches the upstream.
    before = up.requests
    out, closed = mp.raw_exchange(port, mp.build_request("GET", "/echo"), timeout=3)
    mp.check(closed, "HTTP/1.1 on codec HTTP2: connection closed (got %r)" % out[:100])
    mp.check(not out.startswith(b"HTTP/1.1 200"), "no HTTP/1.1 answer: %r" % out[:100])
    mp.eq(up.requests, before, "nothing forwarded")
    mp.check(m.alive(), "magpie alive")
    mp.check(stat(m, ST + "downstream_cx_protocol_error") >= 1, "counted as a protocol error")
    mp.eq(mp.curl("http://127.0.0.1:%d/echo" % port, "--http2-prior-knowledge")[0], 200,
          "still serving")


def test_h2c_upgrade_with_curl_then_more_streams():
    up = mp.TestUpstream()
    m, port = start(up.port)
    url = "http://127.0.0.1:%d/echo" % port
    # curl --http2 upgrades on the first request and reuses the connection for the next two.
    r = subprocess.run(["curl", "-sv", "--http2", "--max-time", "10", url, url + "?2", url + "?3",
                        "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    err = r.stderr.decode("utf-8", "replace")
    mp.eq(r.returncode, 0, "curl exit: " + err[-1500:])
    mp.check("101 Switching Protocols" in err, "101 seen: " + err[-1500:])
    mp.eq(err.count("< HTTP/2 200"), 3, "three responses over HTTP/2:\n" + err[-2000:])
    mp.check("Re-using existing connection" in err or "Reusing existing" in err,
             "the second request reused the upgraded connection:\n" + err[-1500:])
    st = m.stats()
    mp.eq(st.get(ST + "downstream_cx_upgrades_total"), 1, "one upgrade")
    mp.eq(st.get(ST + "downstream_cx_http2_total"), 1, "one HTTP/2 connection")
    mp.eq(up.requests, 3, "three requests upstream")
    # The upstream never sees the Upgrade: h2c request headers.
    for _, _, hs in up.seen:
        names = [k.lower() for k, _ in hs]
        mp.check("upgrade" not in names and "http2-settings" not in names,
                 "upgrade headers must not be forwarded: %r" % names)


def test_codec_http1_ignores_h2c_upgrade():
    up = mp.TestUpstream()
    m, port = start(up.port, hcm_extra=hcm("codec_type: HTTP1"))
    r = subprocess.run(["curl", "-sv", "--http2", "--max-time", "10",
                        "http://127.0.0.1:%d/echo" % port, "-o", "/dev/null"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    err = r.stderr.decode("utf-8", "replace")
    mp.eq(r.returncode, 0, "curl exit")
    mp.check("< HTTP/1.1 200" in err and "101" not in err, "answered over HTTP/1.1:\n" + err)
    # HTTP/2's preface is not an HTTP/1.1 request: curl's prior knowledge fails, nothing is
    # forwarded, and magpie stays up.
    before = up.requests
    st, body, err = mp.curl("http://127.0.0.1:%d/echo" % port, "--http2-prior-knowledge",
                            timeout=5)
    mp.check(st != 200, "prior knowledge on codec HTTP1 must not succeed: %d" % st)
    mp.eq(up.requests, before, "nothing forwarded")
    mp.check(m.alive(), "magpie alive")
    mp.eq(stat(m, ST + "downstream_cx_http2_total"), 0, "no HTTP/2 connection")


# ---------------------------------------------------------------- 2. streams, bodies, headers

def test_nghttp_100_concurrent_streams():
    up = mp.TestUpstream()
    m, port = start(up.port)
    rc, out = run(["nghttp", "-ns", "-m", "100", "http://127.0.0.1:%d/delay/20" % port], 60)
    mp.eq(rc, 0, "nghttp exit:\n" + out[-2000:])
    mp.eq(up.requests, 100, "100 requests upstream")
    mp.eq(stat(m, ST + "downstream_rq_2xx"), 100, "100 2xx")
    mp.eq(stat(m, ST + "downstream_cx_http2_total"), 1, "on one connection")


def test_h2load_2000_requests():
    # nginx upstream: 200 concurrent streams become 200 upstream connections at once, more than
    # the TestUpstream's accept backlog absorbs within the 1 s connect timeout.
    ng = mp.Nginx()
    m, port = start(ng.port)
    rc, out = run(["h2load", "-n", "2000", "-c", "4", "-m", "50",
                   "http://127.0.0.1:%d/small" % port], 120)
    mp.eq(rc, 0, "h2load exit:\n" + out)
    mo = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    mp.check(mo is not None, "h2load summary:\n" + out)
    mp.eq(int(mo.group(1)), 2000, "2xx:\n" + out)
    mp.eq(stat(m, ST + "downstream_rq_2xx"), 2000, "magpie counted 2000 2xx")


test_h2load_2000_requests.timeout = 150


def test_post_several_mib_exact_bytes():
    up = mp.TestUpstream()
    m, port = start(up.port)
    d = mp.tmpdir()
    path = os.path.join(d, "body")
    data = os.urandom(5 * MIB + 123)
    with open(path, "wb") as f:
        f.write(data)
    st, body, err = mp.curl("http://127.0.0.1:%d/echo" % port, "--http2-prior-knowledge",
                            "--data-binary", "@" + path, timeout=60)
    mp.eq(st, 200, "POST status: " + err)
    import json
    mp.eq(json.loads(body)["body_len"], len(data), "upstream got every byte")
    # Without a content-length (python3-h2, no length field): sent chunked upstream.
    c = client(port)
    sid = c.request("/echo", method="POST", end=False)
    upload(c, sid, 300000)
    c.wait(lambda: c.done(sid), 10, "POST without content-length")
    s = c.streams[sid]
    mp.eq(s.status, 200, "POST without content-length")
    import json as _j
    j = _j.loads(bytes(s.body))
    mp.eq(j["body_len"], 300000, "chunked upstream body length")
    hd = {k.lower(): v for k, v in j["headers"]}
    mp.eq(hd.get("transfer-encoding"), "chunked", "no length: chunked to HTTP/1.1")


def test_response_framing_head_204_304_chunked():
    up = mp.TestUpstream()
    m, port = start(up.port)
    c = client(port)
    s = c.get("/bytes/100000")
    mp.eq((s.status, len(s.body)), (200, 100000), "content-length response")
    mp.eq(dict(s.headers).get("content-length"), "100000", "content-length forwarded")
    s = c.get("/bytes/70000?chunked=1")
    mp.eq((s.status, len(s.body)), (200, 70000), "chunked upstream response")
    mp.check("content-length" not in dict(s.headers), "no length invented")
    mp.check("transfer-encoding" not in dict(s.headers), "no transfer-encoding in HTTP/2")
    s = c.get("/chunked/5")
    mp.eq(bytes(s.body), b"".join(b"chunk%d\n" % i for i in range(5)), "chunked body")
    s = c.get("/bytes/5000", method="HEAD")
    mp.eq((s.status, len(s.body), s.ended), (200, 0, True), "HEAD: no body")
    mp.eq(dict(s.headers).get("content-length"), "5000", "HEAD keeps the length")
    for code in (204, 304):
        s = c.get("/status/%d" % code)
        mp.eq((s.status, len(s.body), s.ended), (code, 0, True), "%d without body" % code)
    s = c.get("/echo")
    mp.eq(s.status, 200, "connection still serving")


def test_header_translation_to_http1():
    up = mp.TestUpstream()
    m, port = start(up.port)
    c = client(port)
    s = c.get("/echo?q=1", authority="example.com:8080",
              headers=[("cookie", "a=1"), ("cookie", "b=2"), ("te", "trailers"),
                       ("x-custom", "v")])
    mp.eq(s.status, 200, "status")
    method, path, hs = up.seen[-1]
    hd = {}
    for k, v in hs:
        hd.setdefault(k.lower(), []).append(v)
    mp.eq(path, "/echo?q=1", "path")
    mp.eq(hd.get("host"), ["example.com:8080"], ":authority became Host")
    mp.eq(hd.get("cookie"), ["a=1; b=2"], "cookie crumbs joined")
    mp.eq(hd.get("te"), ["trailers"], "te: trailers passes")
    mp.eq(hd.get("x-custom"), ["v"], "custom header")
    mp.eq(hd.get("x-forwarded-proto"), ["http"], "x-forwarded-proto")
    mp.eq(hd.get("x-forwarded-for"), ["127.0.0.1"], "x-forwarded-for")
    mp.check("x-request-id" in hd, "x-request-id added")
    # HTTP/1.1's connection-specific fields from the upstream never reach the h2 client.
    names = [k for k, v in s.headers]
    mp.check(all(n == n.lower() for n in names), "lower-case names: %r" % names)
    mp.check("connection" not in names and "keep-alive" not in names, "%r" % names)


# ---------------------------------------------------------------- 3. trailers

def test_request_trailers_reach_chunked_upstream():
    up = mp.TestUpstream()
    m, port = start(up.port)
    c = client(port)
    sid = c.request("/echo", method="POST", end=False)
    c.c.send_data(sid, b"a" * 1000)
    c.c.send_data(sid, b"b" * 2000)
    c.c.send_headers(sid, [("x-checksum", "abc"), ("x-n", "2")], end_stream=True)
    c.flush()
    c.wait(lambda: c.done(sid), 10, "response")
    s = c.streams[sid]
    mp.eq(s.status, 200, "status")
    import json
    mp.eq(json.loads(bytes(s.body))["body_len"], 3000, "body")
    mp.eq(sorted(map(tuple, up.trailers)), [("x-checksum", "abc"), ("x-n", "2")],
          "trailers at the HTTP/1.1 upstream")


def test_response_trailers_from_h2_upstream():
    p = H2Peer()
    mp.on_cleanup(p.stop)
    m, port = start(p.port, cluster_extra="    http2_protocol_options: {}")
    c = client(port)
    s = c.get("/trailers")
    mp.eq((s.status, bytes(s.body)), (200, b"data\n"), "response")
    t = dict(s.trailers)
    mp.eq((t.get("x-trailer"), t.get("x-count")), ("yes", "2"), "trailers reach the h2 client")


# ---------------------------------------------------------------- 4. flow control and memory

def settings_of(port, **kw):
    c = client(port, **kw)
    c.wait(lambda: c.remote_settings and c.conn_window_updates > 0, 5, "SETTINGS and WINDOW_UPDATE")
    return c.remote_settings, c.conn_window_updates


def test_settings_defaults_and_configured():
    up = mp.TestUpstream()
    m, port = start(up.port)
    s, wu = settings_of(port)
    mp.eq(s.get(3), 1024, "default max_concurrent_streams")
    mp.eq(s.get(4), 256 * 1024, "default initial stream window")
    mp.eq(65535 + wu, MIB, "default connection window (65535 + WINDOW_UPDATE)")
    m.stop()
    m, port = start(up.port, hcm_extra=hcm(
        "http2_protocol_options:",
        "  max_concurrent_streams: 77",
        "  initial_stream_window_size: 131072",
        "  initial_connection_window_size: 4194304"))
    s, wu = settings_of(port)
    mp.eq(s.get(3), 77, "configured max_concurrent_streams")
    mp.eq(s.get(4), 131072, "configured initial stream window")
    mp.eq(65535 + wu, 4 * MIB, "configured connection window")


def upload(c, sid, total, chunk=16384):
    """Sends total bytes on sid as the window allows; returns when all are sent."""
    payload = b"u" * chunk
    sent = 0
    deadline = time.monotonic() + 120
    while sent < total:
        mp.check(time.monotonic() < deadline, "upload stalled at %d" % sent)
        win = min(c.c.local_flow_control_window(sid), c.c.max_outbound_frame_size)
        if win <= 0:
            c.pump(0.5)
            continue
        n = min(win, total - sent, chunk)
        c.c.send_data(sid, payload[:n], end_stream=(sent + n == total))
        sent += n
        c.flush()
    return sent


def test_slow_upstream_reader_bounds_memory():
    total = (16 if mp.SANITIZED else 64) * MIB
    up = mp.TestUpstream()
    m, port = start(up.port)
    c = client(port)
    sid = c.request("/slow_read", method="POST", end=False,
                    headers=[("content-length", str(total))])
    upload(c, sid, total)
    # Held back by the window: when the client has sent its last byte, the upstream has taken
    # all but what the windows (256 KiB stream, 1 MiB connection), magpie's buffer limit and
    # the loopback socket buffers hold -- far from the whole body.
    # Loopback socket buffers alone can hold ~10 MiB, so the check needs the full 64 MiB body
    # to mean something; the sanitized run's 16 MiB only checks the bytes arrive.
    behind = total - up.body_progress
    if not mp.SANITIZED:
        mp.check(behind < 12 * MIB,
                 "client finished %d MiB ahead of the upstream" % (behind // MIB))
    c.wait(lambda: c.done(sid), 120, "response to the slow upload")
    mp.eq(c.streams[sid].status, 200, "status")
    mp.eq(up.body_bytes, total, "upstream got every byte")
    if not mp.SANITIZED:
        hwm = m.hwm()
        print("    VmHWM %.2f MiB after a %d MiB upload to a slow reader" % (hwm / MIB,
                                                                            total // MIB))
        mp.check(hwm < 16 * MIB, "VmHWM %.2f MiB (limit 16)" % (hwm / MIB))


test_slow_upstream_reader_bounds_memory.timeout = 150


def test_slow_client_reader_bounds_memory():
    total = (16 if mp.SANITIZED else 64) * MIB
    up = mp.TestUpstream()
    m, port = start(up.port)
    c = client(port, window=65535, auto_ack=False, keep_body=False, rcvbuf=65536)
    sid = c.request("/bytes/%d" % total)
    s = c.streams[sid]
    pending = 0
    deadline = time.monotonic() + 120
    while not c.done(sid):
        mp.check(time.monotonic() < deadline, "download stalled at %d" % s.nbytes)
        before = s.nbytes
        c.pump(1.0)
        pending += s.nbytes - before
        # A slow reader: acknowledge only what was read, in 32 KiB steps, after a pause.
        if pending >= 32768 or (pending and c.done(sid)):
            time.sleep(0.0005)
            c.c.acknowledge_received_data(pending, sid)
            pending = 0
            c.flush()
    mp.eq((s.status, s.nbytes), (200, total), "all bytes arrived")
    mp.eq(s.sha.hexdigest(), pattern_sha(total), "bytes intact")
    if not mp.SANITIZED:
        hwm = m.hwm()
        print("    VmHWM %.2f MiB after a %d MiB download by a slow reader" % (hwm / MIB,
                                                                              total // MIB))
        mp.check(hwm < 16 * MIB, "VmHWM %.2f MiB (limit 16)" % (hwm / MIB))


test_slow_client_reader_bounds_memory.timeout = 150


def test_unread_streams_share_one_buffer_limit():
    """Many streams the client does not read hold one buffer limit per connection, not one per
    stream; and one unread stream does not hold back another that the client reads."""
    n, size = 20, 2 * MIB
    up = mp.TestUpstream()
    m, port = start(up.port)
    c = client(port, window=65535, auto_ack=False, keep_body=False)
    sids = [c.request("/bytes/%d" % size) for _ in range(n)]
    c.wait(lambda: all(c.streams[s].status == 200 for s in sids), 10, "every response head")
    # Give the upstreams time to push what magpie lets them (bounded, then measured).
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        c.pump(0.1)
    if not mp.SANITIZED:
        hwm = m.hwm()
        print("    VmHWM %.2f MiB with %d unread %d MiB responses" % (hwm / MIB, n, size // MIB))
        # Before the fix each stream kept its own 1 MiB queue: over 20 MiB here.
        mp.check(hwm < 12 * MIB, "VmHWM %.2f MiB (limit 12)" % (hwm / MIB))
    # Read only the first stream (the connection's window is kept open for all of them).
    first = c.streams[sids[0]]
    seen = {s: 0 for s in sids}  # credit what already arrived, too
    deadline = time.monotonic() + 60
    while not c.done(sids[0]):
        mp.check(time.monotonic() < deadline, "first stream stalled at %d" % first.nbytes)
        c.pump(0.5)
        for s in sids:
            got = c.streams[s].nbytes - seen[s]
            seen[s] = c.streams[s].nbytes
            if got:
                c.c.increment_flow_control_window(got)
                if s == sids[0] and not c.done(s):
                    c.c.increment_flow_control_window(got, stream_id=s)
        c.flush()
    mp.eq((first.status, first.nbytes, first.reset), (200, size, None), "the read stream")
    mp.eq(first.sha.hexdigest(), pattern_sha(size), "its bytes")
    mp.check(all(not c.done(s) for s in sids[1:]), "the unread streams are still waiting")


# ---------------------------------------------------------------- 5. max_concurrent_streams

def test_max_concurrent_streams_refuses_the_third():
    up = mp.TestUpstream()
    m, port = start(up.port, hcm_extra=hcm("http2_protocol_options: {max_concurrent_streams: 2}"))
    with h2raw.Conn(port=port, timeout=5) as c:
        # A client that opens three streams at once, as clients do right after the preface,
        # before magpie's SETTINGS (and its limit of 2) could reach it.
        c.auto_ack = False
        c.start()
        for sid in (1, 3, 5):
            c.send(h2raw.headers(sid, h2raw.hp_block(h2raw.request_fields("/delay/300"))))
        o = c.read_until(lambda o: 5 in o.resets and {1, 3} <= o.ended, 10)
        mp.eq(o.resets.get(5), "REFUSED_STREAM", "the third stream is refused: %r" % o)
        mp.eq((o.statuses.get(1), o.statuses.get(3)), (200, 200), "the others proceed: %r" % o)
        mp.check(o.goaway is None, "no GOAWAY: %r" % (o,))
        # And the connection serves again once streams are free.
        c.send(h2raw.headers(7, h2raw.hp_block(h2raw.request_fields("/echo"))))
        o = c.read_until(lambda o: 7 in o.ended, 5)
        mp.eq(o.statuses.get(7), 200, "a new stream after the others ended")
    mp.eq(up.requests, 3, "the refused stream never reached the upstream")


def test_max_concurrent_streams_refuses_after_settings_ack():
    # Once the client has acknowledged the limit, a stream beyond it is still only that
    # stream's error (RFC 9113 5.1.2), not the connection's.
    up = mp.TestUpstream()
    m, port = start(up.port, hcm_extra=hcm("http2_protocol_options: {max_concurrent_streams: 2}"))
    with h2raw.Conn(port=port, timeout=5) as c:
        c.start()
        # The server's SETTINGS arrive first and are ACKed by the reader; a PING answered
        # afterwards proves magpie has read that ACK before the streams below.
        c.send(h2raw.ping(b"ackfirst"))
        c.read_until(lambda o: o.counts.get("PING", 0) >= 1, 5)
        for sid in (1, 3, 5):
            c.send(h2raw.headers(sid, h2raw.hp_block(h2raw.request_fields("/delay/300"))))
        o = c.read_until(lambda o: 5 in o.resets and {1, 3} <= o.ended, 10)
        mp.eq(o.resets.get(5), "REFUSED_STREAM", "the third stream is refused: %r" % o)
        mp.eq((o.statuses.get(1), o.statuses.get(3)), (200, 200), "the others proceed: %r" % o)
        mp.check(o.goaway is None, "no GOAWAY: %r" % (o,))
    mp.eq(up.requests, 2, "the refused stream never reached the upstream")


# ---------------------------------------------------------------- 6. GOAWAY on drain, idle

def test_sigterm_goaway_lets_inflight_finish():
    up = mp.TestUpstream()
    m, port = start(up.port, drain_time_s=5)
    with h2raw.Conn(port=port, timeout=5) as c:
        c.start()
        for sid in (1, 3):
            c.send(h2raw.headers(sid, h2raw.hp_block(h2raw.request_fields("/delay/800"))))
        mp.wait_until(lambda: up.requests == 2, 5, what="two requests at the upstream")
        os.kill(m.pid, signal.SIGTERM)
        o = c.read_until(lambda o: o.goaway, 3)
        mp.check(o.goaway is not None, "GOAWAY after SIGTERM: %r" % o)
        mp.eq(o.goaway[1], "NO_ERROR", "graceful GOAWAY")
        mp.check(o.goaway[0] >= 3, "last_stream_id %d covers streams 1 and 3" % o.goaway[0])
        # A stream opened after the GOAWAY is not processed (RFC 9113 6.8).
        c.send(h2raw.headers(5, h2raw.hp_block(h2raw.request_fields("/echo"))))
        o = c.read_until(lambda o: {1, 3} <= o.ended and o.closed, 8)
        mp.eq((o.statuses.get(1), o.statuses.get(3)), (200, 200), "in-flight finished: %r" % o)
        mp.check(5 not in o.statuses, "stream 5 not answered: %r" % o)
        mp.check(o.closed, "connection closed after its streams: %r" % o)
    mp.eq(up.requests, 2, "stream 5 never reached the upstream")
    mp.eq(m.proc.wait(10), 0, "exit status after drain")


test_sigterm_goaway_lets_inflight_finish.timeout = 40


def test_idle_timeout_sends_goaway():
    up = mp.TestUpstream()
    m, port = start(up.port, hcm_extra=hcm("common_http_protocol_options: {idle_timeout: 0.3s}"))
    with h2raw.Conn(port=port, timeout=5) as c:
        c.start()
        c.send(h2raw.headers(1, h2raw.hp_block(h2raw.request_fields("/echo"))))
        t0 = time.monotonic()
        o = c.read_until(lambda o: o.closed, 5)
        took = time.monotonic() - t0
        mp.eq(o.statuses.get(1), 200, "served first")
        mp.check(o.goaway is not None and o.goaway[1] == "NO_ERROR", "GOAWAY(NO_ERROR): %r" % o)
        mp.eq(o.goaway[0], 1, "last_stream_id")
        mp.check(o.closed and took < 3, "closed after idling (%.2fs)" % took)
    mp.check(stat(m, ST + "downstream_cx_idle_timeout") >= 1, "idle timeout counted")


# ---------------------------------------------------------------- 7. resets

def test_client_cancel_mid_response_cancels_upstream():
    up = mp.TestUpstream()
    m, port = start(up.port)
    c = client(port, keep_body=False)
    sid = c.request("/bytes/%d" % (200 * MIB))
    c.wait(lambda: c.streams[sid].nbytes > 100000, 10, "some of the body")
    mp.eq(len(up._conns), 1, "one upstream connection busy")
    c.c.reset_stream(sid, 8)  # CANCEL
    c.flush()
    # The upstream request is cancelled: magpie closes that upstream connection.
    mp.wait_until(lambda: len(up._conns) == 0, 10, what="upstream connection closed")
    s = c.get("/echo")
    mp.eq(s.status, 200, "the connection keeps serving")
    mp.check(c.streams[sid].nbytes < 200 * MIB, "the body was cut short")
    lines = m.access_lines(2)
    mp.check(any("DR" in mp.parse_access(l)["flags"] for l in lines),
             "downstream reset logged: %r" % lines)


def test_upstream_failure_after_headers_resets_only_that_stream():
    up = mp.TestUpstream()
    m, port = start(up.port)
    c = client(port)
    slow = c.request("/delay/300")
    sid = c.request("/reset_mid_body")
    c.wait(lambda: c.done(sid), 10, "reset of the broken stream")
    s = c.streams[sid]
    mp.eq(s.status, 200, "headers went out first")
    mp.eq(s.reset, 2, "RST_STREAM(INTERNAL_ERROR)")
    c.wait(lambda: c.done(slow), 10, "the other stream")
    mp.eq((c.streams[slow].status, c.streams[slow].reset), (200, None), "other stream fine")
    mp.eq(c.get("/echo").status, 200, "a new stream on the same connection")
    mp.check(c.goaway is None, "no GOAWAY")


# ---------------------------------------------------------------- 8. mixed soak

def _resetter(port, stop, errors):
    rnd = random.Random(7)
    try:
        while not stop.is_set():
            c = H2(port, keep_body=False, timeout=5)
            try:
                for _ in range(20):
                    sid = c.request(rnd.choice(["/echo", "/delay/20", "/bytes/300000"]))
                    c.pump(rnd.random() * 0.01)
                    if rnd.random() < 0.6:
                        if not c.done(sid):
                            c.c.reset_stream(sid, 8)
                            c.flush()
                    else:
                        c.wait(lambda: c.done(sid), 10, "soak stream")
            finally:
                c.close()
    except Exception as e:  # surfaced by the test
        errors.append(repr(e))


def soak_round(m, port, seconds):
    """h2load for `seconds` while a python client opens streams and cancels most of them."""
    stop, errors = threading.Event(), []
    t = threading.Thread(target=_resetter, args=(port, stop, errors))
    t.start()
    try:
        rc, out = run(["h2load", "-D", str(seconds), "-c", "4", "-m", "20",
                       "http://127.0.0.1:%d/echo" % port], 60)
    finally:
        stop.set()
        t.join(30)
    mp.eq(rc, 0, "h2load exit:\n" + out)
    mo = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    mp.check(mo and int(mo.group(1)) > 0 and int(mo.group(4)) == 0, "h2load:\n" + out)
    mp.eq(errors, [], "reset client errors")
    # Everything let go: no stream, no connection, no slice outlives the load.
    mp.wait_until(lambda: stat(m, ST + "downstream_rq_active") == 0, 10,
                  what="downstream_rq_active back to 0")
    mp.wait_until(lambda: stat(m, ST + "downstream_cx_active") == 0, 10,
                  what="downstream_cx_active back to 0")
    # server.live_slices is refreshed every second; idle upstream connections hold none.
    mp.wait_until(lambda: m.stats().get("server.live_slices", -1) == 0, 5,
                  what="server.live_slices back to 0 (%s)" % m.stats().get("server.live_slices"))
    mp.check(m.alive(), "magpie alive")
    return m.rss()


def test_mixed_soak_leaves_nothing_behind():
    up = mp.TestUpstream()
    m, port = start(up.port)
    # Rounds of 2 s and 3 s: the first sets the allocator's high water, the second must not move
    # it (a per-stream leak at thousands of streams a second would).
    rss1 = soak_round(m, port, 2)
    rss2 = soak_round(m, port, 3)
    if not mp.SANITIZED:
        print("    VmRSS after round 1 %.2f MiB, after round 2 %.2f MiB" % (rss1 / MIB,
                                                                          rss2 / MIB))
        mp.check(rss2 - rss1 < 1.5 * MIB, "RSS grew %.2f MiB" % ((rss2 - rss1) / MIB))


test_mixed_soak_leaves_nothing_behind.timeout = 90


if __name__ == "__main__":
    import run as _run
    _run.main([os.path.abspath(__file__)])
