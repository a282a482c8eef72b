#!/usr/bin/python3
"""Upgrades through magpie: WebSocket over HTTP/1.1, RFC 8441 extended CONNECT over HTTP/2, and
CONNECT (terminated at magpie, or refused), all governed by upgrade_configs.

The upstream is a small WebSocket echo server written here (handshake and framing by hand, RFC
6455), which also answers plain HTTP requests so that a request whose upgrade was stripped gets an
ordinary response telling what the server saw."""

import base64
import hashlib
import os
import socket
import struct
import threading
import time

import mp

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ---------------------------------------------------------------- a WebSocket echo server


def _recv_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        b = sock.recv(n - len(out))
        if not b:
            raise EOFError("peer closed after %d of %d bytes" % (len(out), n))
        out += b
    return bytes(out)


def ws_frame(opcode, payload, mask):
    head = bytearray([0x80 | opcode])
    mbit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if n < 4096 else \
        _mask_fast(payload, key)
    return bytes(head) + key + masked


def _mask_fast(payload, key):
    n = len(payload)
    k = int.from_bytes((key * ((n + 3) // 4))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def ws_read(sock):
    """(opcode, payload) of one frame, unmasked."""
    b0, b1 = _recv_exact(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", _recv_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", _recv_exact(sock, 8))[0]
    key = _recv_exact(sock, 4) if b1 & 0x80 else None
    payload = _recv_exact(sock, n)
    if key is not None:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if n < 4096 else \
            _mask_fast(payload, key)
    return b0 & 0x0F, payload


def read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = sock.recv(1)
        if not b:
            raise EOFError("closed inside a head: %r" % buf)
        buf += b
    lines = buf.decode("latin-1").split("\r\n")
    headers = {}
    for l in lines[1:]:
        if l:
            k, _, v = l.partition(":")
            headers.setdefault(k.strip().lower(), v.strip())
    return lines[0], headers


class WsEcho:
    """Echoes WebSocket messages; answers other requests with 200 and the headers it saw.
    `seen` holds the header dicts of the requests, `reply_101` makes it answer 101 to anything."""

    def __init__(self, reply_101=False, refuse=False):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.seen = []
        self.closed_cleanly = 0
        self.reply_101 = reply_101
        # refuse: answer upgrades 403, then record every byte that still arrives on that
        # connection until magpie closes it (`after_refusal`, `refusals_done`).
        self.refuse = refuse
        self.after_refusal = b""
        self.refusals_done = 0
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()
        mp.on_cleanup(self.stop)

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(20)
            line, h = read_head(c)
            self.seen.append(dict(h, _line=line))
            if self.refuse and h.get("upgrade"):
                c.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno")
                self._record_rest(c)
            elif h.get("upgrade", "").lower() == "websocket" or self.reply_101:
                key = h.get("sec-websocket-key", "x").encode()
                accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
                c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                           % accept).encode())
                self._echo(c)
            else:
                body = ("upgrade=%s" % h.get("upgrade", "-")).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        except (OSError, EOFError):
            pass
        finally:
            c.close()

    def _record_rest(self, c):
        try:
            while len(self.after_refusal) < 65536:
                data = c.recv(65536)
                if not data:
                    break
                self.after_refusal += data
        except OSError:
            pass
        self.refusals_done += 1

    def _echo(self, c):
        while True:
            op, payload = ws_read(c)
            if op == 8:
                c.sendall(ws_frame(8, payload, False))
                self.closed_cleanly += 1
                return
            c.sendall(ws_frame(op, payload, False))


class TcpEcho:
    """Echoes bytes; on the client's half-close sends "bye" and closes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.got_eof = 0
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
            c.settimeout(20)
            while True:
                b = c.recv(65536)
                if not b:
                    self.got_eof += 1
                    c.sendall(b"bye")
                    return
                c.sendall(b)
        except OSError:
            pass
        finally:
            c.close()


# ---------------------------------------------------------------- magpie configs

WS_HCM = "          upgrade_configs:\n          - upgrade_type: websocket\n"


def start(up_port, hcm_extra=WS_HCM, routes=None, clusters_extra=""):
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up_port, hcm_extra=hcm_extra, routes=routes,
                                   clusters_extra=clusters_extra), ports={"port": port})
    mp.on_cleanup(m.stop)
    return m, port


def ws_handshake(port, extra=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /chat HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n" + extra)
    return s, key


def expect_101(s, key):
    line, h = read_head(s)
    mp.check(line.startswith("HTTP/1.1 101"), "status line: %r" % line)
    mp.eq(h.get("upgrade", "").lower(), "websocket", "Upgrade in the 101")
    mp.eq(h.get("connection", "").lower(), "upgrade", "Connection in the 101")
    want = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    mp.eq(h.get("sec-websocket-accept"), want, "Sec-WebSocket-Accept passed untouched")


def echo(s, payload):
    s.sendall(ws_frame(1 if isinstance(payload, str) else 2,
                       payload.encode() if isinstance(payload, str) else payload, True))
    op, got = ws_read(s)
    return got


def close_ws(s):
    s.sendall(ws_frame(8, b"\x03\xe8", True))
    op, payload = ws_read(s)
    mp.eq(op, 8, "close frame echoed")
    # The upstream closes after its close frame: magpie half-closes us; we close.
    s.settimeout(5)
    mp.eq(s.recv(10), b"", "EOF after the close handshake")
    s.close()


# ---------------------------------------------------------------- tests


def test_websocket_over_http1():
    up = WsEcho()
    m, port = start(up.port)
    s, key = ws_handshake(port)
    expect_101(s, key)
    mp.eq(m.access_lines(), [], "no access-log line while the tunnel is open")
    for i in range(5):
        mp.eq(echo(s, "message %d" % i), b"message %d" % i, "echo %d" % i)
    big = os.urandom(1 << 20)
    mp.check(echo(s, big) == big, "1 MiB message echoed intact")
    close_ws(s)
    line = m.access_lines(1)[0]
    f = mp.parse_access(line)
    mp.eq(f["code"], "101", "access log status")
    mp.check(int(f["rx"]) > (1 << 20) and int(f["tx"]) > (1 << 20), "bytes counted: %s" % line)
    seen = up.seen[0]
    mp.eq(seen.get("upgrade"), "websocket", "upstream saw Upgrade")
    mp.eq(seen.get("connection", "").lower(), "upgrade", "upstream saw Connection: upgrade")
    mp.check("sec-websocket-key" in seen, "Sec-WebSocket-Key forwarded")
    st = mp.wait_until(lambda: (lambda d: d if d.get(
        "http.ingress.downstream_cx_upgrades_active") == 0 else None)(m.stats()),
        what="upgrades_active back to 0")
    mp.eq(st.get("http.ingress.downstream_cx_upgrades_total"), 1, "upgrades_total")


def test_websocket_without_upgrade_configs_is_plain_http():
    up = WsEcho()
    m, port = start(up.port, hcm_extra="")
    s, key = ws_handshake(port)
    line, h = read_head(s)
    mp.check(line.startswith("HTTP/1.1 200"), "normal response: %r" % line)
    mp.eq(_recv_exact(s, int(h["content-length"])), b"upgrade=-", "upstream saw no Upgrade")
    s.close()
    mp.eq(up.seen[0].get("upgrade"), None, "no Upgrade header upstream")


def test_route_disables_websocket():
    up = WsEcho()
    routes = ("              - match: {prefix: \"/\"}\n"
              "                route:\n"
              "                  cluster: c1\n"
              "                  upgrade_configs:\n"
              "                  - {upgrade_type: websocket, enabled: false}\n")
    m, port = start(up.port, routes=routes)
    s, key = ws_handshake(port)
    line, h = read_head(s)
    mp.check(line.startswith("HTTP/1.1 200"), "normal response: %r" % line)
    mp.eq(_recv_exact(s, int(h["content-length"])), b"upgrade=-", "upstream saw no Upgrade")
    s.close()


def test_route_enables_websocket_without_listener():
    up = WsEcho()
    routes = ("              - match: {prefix: \"/\"}\n"
              "                route:\n"
              "                  cluster: c1\n"
              "                  upgrade_configs:\n"
              "                  - {upgrade_type: websocket}\n")
    m, port = start(up.port, hcm_extra="", routes=routes)
    s, key = ws_handshake(port)
    expect_101(s, key)
    mp.eq(echo(s, "hi"), b"hi", "echo")
    close_ws(s)


def test_frames_sent_before_101_are_held():
    up = WsEcho()
    m, port = start(up.port)
    early = ws_frame(1, b"early bird", True) + ws_frame(1, b"second", True)
    s, key = ws_handshake(port, extra=early)
    expect_101(s, key)
    mp.eq(ws_read(s), (1, b"early bird"), "first early frame echoed after the 101")
    mp.eq(ws_read(s), (1, b"second"), "second early frame echoed")
    close_ws(s)


def test_unsolicited_101_is_upstream_protocol_error():
    up = WsEcho(reply_101=True)
    m, port = start(up.port)
    r = mp.get(port, "/plain")
    mp.eq(r.status, 503, "status")
    f = mp.parse_access(m.access_lines(1)[0])
    mp.eq((f["code"], f["flags"]), ("503", "UPE"), "access log")


def test_tunnel_idle_timeout():
    up = WsEcho()
    m, port = start(up.port, hcm_extra=WS_HCM + "          stream_idle_timeout: 0.5s\n")
    s, key = ws_handshake(port)
    expect_101(s, key)
    mp.eq(echo(s, "x"), b"x", "echo")
    t0 = time.monotonic()
    s.settimeout(5)
    mp.eq(s.recv(10), b"", "closed by the stream idle timeout")
    mp.check(time.monotonic() - t0 < 3, "closed within the idle timeout")
    f = mp.parse_access(m.access_lines(1)[0])
    mp.eq(f["flags"], "SI", "access log flag")


H2_HCM = WS_HCM + ("          codec_type: HTTP2\n"
                   "          http2_protocol_options: {allow_connect: true}\n")


def test_extended_connect_over_http2():
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings
    up = WsEcho()
    m, port = start(up.port, hcm_extra=H2_HCM)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    events = []

    def pump(until, what):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for e in events:
                if until(e):
                    return e
            data = s.recv(65536)
            mp.check(data, "connection closed waiting for %s" % what)
            events.extend(conn.receive_data(data))
            s.sendall(conn.data_to_send())
        raise mp.TestFailure("timed out waiting for %s" % what)

    pump(lambda e: isinstance(e, h2.events.RemoteSettingsChanged) and
         h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL in e.changed_settings,
         "SETTINGS_ENABLE_CONNECT_PROTOCOL")
    key = base64.b64encode(os.urandom(16))
    conn.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"),
                          (":scheme", "http"), (":path", "/chat"), (":authority", "test"),
                          ("sec-websocket-version", "13"), ("sec-websocket-key", key.decode())])
    s.sendall(conn.data_to_send())
    resp = pump(lambda e: isinstance(e, h2.events.ResponseReceived), "response")
    hd = dict((k.decode(), v.decode()) for k, v in resp.headers)
    mp.eq(hd[":status"], "200", "101 became 200")
    mp.check("upgrade" not in hd and "connection" not in hd, "no HTTP/1.1 upgrade fields")
    buf = bytearray()
    for i in range(3):
        msg = b"h2 message %d" % i
        conn.send_data(1, ws_frame(1, msg, True))
        s.sendall(conn.data_to_send())
        want = ws_frame(1, msg, False)
        deadline = time.monotonic() + 10
        while len(buf) < len(want) and time.monotonic() < deadline:
            for e in conn.receive_data(s.recv(65536)):
                if isinstance(e, h2.events.DataReceived):
                    buf += e.data
                    conn.acknowledge_received_data(e.flow_controlled_length, 1)
            s.sendall(conn.data_to_send())
        mp.eq(bytes(buf[:len(want)]), want, "echo over DATA frames")
        del buf[:len(want)]
    mp.eq(up.seen[0]["_line"], "GET /chat HTTP/1.1", "upstream saw a GET")
    mp.eq(up.seen[0].get("upgrade"), "websocket", "upstream saw Upgrade: websocket")
    s.close()


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n"


def test_refused_upgrade_drops_early_bytes_http1():
    # The client pipelines a request behind its upgrade; the upstream refuses the upgrade.
    # Those bytes were meant for a tunnel that never opened: magpie neither forwards them nor
    # parses them as a request, and closes the client connection after the 403.
    up = WsEcho(refuse=True)
    m, port = start(up.port)
    s, key = ws_handshake(port, extra=SMUGGLED)
    line, h = read_head(s)
    mp.check(line.startswith("HTTP/1.1 403"), "status line: %r" % line)
    mp.eq(h.get("connection"), "close", "the connection closes after a refused upgrade")
    mp.eq(_recv_exact(s, 2), b"no", "the upstream's body")
    s.settimeout(5)
    mp.eq(s.recv(100), b"", "closed, with no answer to the pipelined bytes")
    s.close()
    # The upstream exchange itself was clean (a GET answered 403), so its connection may go
    # back to the pool; stopping magpie closes it, and then we see all it ever received.
    m.stop()
    mp.wait_until(lambda: up.refusals_done == 1, 5, what="upstream connection closed")
    mp.eq(up.after_refusal, b"", "nothing reached the upstream after the refused upgrade")
    mp.eq([x["_line"] for x in up.seen], ["GET /chat HTTP/1.1"], "upstream requests")


def test_refused_upgrade_drops_early_bytes_http2():
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    up = WsEcho(refuse=True)
    m, port = start(up.port, hcm_extra=H2_HCM)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    events = []
    deadline = time.monotonic() + 10
    while conn.remote_settings.enable_connect_protocol != 1 and time.monotonic() < deadline:
        events.extend(conn.receive_data(s.recv(65536)))
        s.sendall(conn.data_to_send())
    conn.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"),
                          (":scheme", "http"), (":path", "/chat"), (":authority", "test"),
                          ("sec-websocket-version", "13"), ("sec-websocket-key", "eA==")])
    conn.send_data(1, SMUGGLED)
    s.sendall(conn.data_to_send())
    status = None
    while status is None and time.monotonic() < deadline:
        for e in conn.receive_data(s.recv(65536)):
            if isinstance(e, h2.events.ResponseReceived):
                status = dict(e.headers)[b":status"]
        s.sendall(conn.data_to_send())
    mp.eq(status, b"403", "the upstream's refusal reaches the client")
    try:
        conn.send_data(1, SMUGGLED)  # and more after the answer: dropped as well
        s.sendall(conn.data_to_send())
    except h2.exceptions.StreamClosedError:
        pass  # magpie reset the stream after its answer (RST_STREAM NO_ERROR): also fine
    mp.wait_until(lambda: up.refusals_done == 1, 5, what="upstream connection closed")
    mp.eq(up.after_refusal, b"", "nothing reached the upstream after the refused upgrade")
    s.close()


CONNECT_ROUTES = ("              - match: {connect_matcher: {}}\n"
                  "                route:\n"
                  "                  cluster: tgt\n"
                  "                  upgrade_configs:\n"
                  "                  - {upgrade_type: CONNECT, connect_config: {}}\n"
                  "              - match: {prefix: \"/\"}\n"
                  "                route: {cluster: c1}\n")


def test_connect_terminated_at_magpie():
    echo_srv = TcpEcho()
    up = WsEcho()
    m, port = start(up.port, hcm_extra="", routes=CONNECT_ROUTES,
                    clusters_extra=mp.cluster_yaml("tgt", echo_srv.port))
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\nearly" %
              (echo_srv.port, echo_srv.port))
    line, h = read_head(s)
    mp.check(line.startswith("HTTP/1.1 200"), "CONNECT answered 200: %r" % line)
    mp.check("content-length" not in h and "transfer-encoding" not in h, "no framing: %r" % h)
    mp.eq(_recv_exact(s, 5), b"early", "bytes sent with the CONNECT arrive after the 200")
    payload = os.urandom(300000)
    threading.Thread(target=s.sendall, args=(payload,), daemon=True).start()
    mp.check(_recv_exact(s, len(payload)) == payload, "300 kB echoed through the tunnel")
    s.shutdown(socket.SHUT_WR)
    mp.eq(_recv_exact(s, 3), b"bye", "upstream saw our half-close and could still answer")
    s.settimeout(5)
    mp.eq(s.recv(10), b"", "EOF after the upstream closed")
    s.close()
    f = mp.parse_access(m.access_lines(1)[0])
    mp.eq((f["code"], f["method"], f["cluster"]), ("200", "CONNECT", "tgt"), "access log")


def status_for(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        line, h = read_head(s)
        return int(line.split(" ")[1])


class ConnectProxy(TcpEcho):
    """Answers one CONNECT with 200, then echoes; records the request line."""

    def _serve(self, c):
        try:
            c.settimeout(20)
            self.line, _ = read_head(c)
            c.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            TcpEcho._serve(self, c)
        except (OSError, EOFError):
            c.close()


def test_connect_forwarded_without_connect_config():
    proxy = ConnectProxy()
    routes = CONNECT_ROUTES.replace(", connect_config: {}", "")
    m, port = start(proxy.port, hcm_extra="", routes=routes,
                    clusters_extra=mp.cluster_yaml("tgt", proxy.port))
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n")
    line, h = read_head(s)
    mp.check(line.startswith("HTTP/1.1 200"), "2xx passed on: %r" % line)
    mp.eq(proxy.line, "CONNECT example.test:443 HTTP/1.1", "CONNECT forwarded as is")
    s.sendall(b"ping")
    mp.eq(_recv_exact(s, 4), b"ping", "tunnel echo")
    s.shutdown(socket.SHUT_WR)
    mp.eq(_recv_exact(s, 3), b"bye", "half-close reached the upstream")
    s.close()


def test_connect_without_connect_matcher_route_is_404():
    up = WsEcho()
    m, port = start(up.port, hcm_extra="")
    st = status_for(port, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n")
    mp.eq(st, 404, "no connect_matcher route")


def test_connect_not_allowed_is_403():
    up = WsEcho()
    routes = ("              - match: {connect_matcher: {}}\n"
              "                route: {cluster: c1}\n")
    m, port = start(up.port, hcm_extra="", routes=routes)
    st = status_for(port, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n")
    mp.eq(st, 403, "CONNECT not in upgrade_configs")


def test_connect_with_body_is_400():
    echo_srv = TcpEcho()
    up = WsEcho()
    m, port = start(up.port, hcm_extra="", routes=CONNECT_ROUTES,
                    clusters_extra=mp.cluster_yaml("tgt", echo_srv.port))
    st = status_for(port, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"
                                b"Content-Length: 3\r\n\r\nabc")
    mp.eq(st, 400, "CONNECT with Content-Length")


if __name__ == "__main__":
    import run
    run.main(__file__)
