#!/usr/bin/python3
"""A raw HTTP/2 (h2c, prior knowledge) client for abuse tests, and the abuse scenarios.

Frames the tests send on purpose-broken connections are built by hand here (struct), and so
are their HPACK header blocks (literal fields, no Huffman, exact bytes), because python3-h2
refuses most of what these tests must send.  Only what the server sends back is decoded with a
library (hpack 4.0's Decoder); the well-behaved client in good_request() is python3-h2's
H2Connection.  Every socket operation is bounded by a deadline.

A scenario is a function (host, port) -> Outcome plus the outcomes RFC 9113 allows for it and
the magpie counters it should move.  SCENARIOS lists them; tests/integration/test_h2_abuse.py
runs each against magpie, and the selfcheck mode runs them against any h2c server:

    python3 h2raw.py selfcheck --port P [--host H] [--path /index.html] [-k NAME]

prints one line per scenario: name, observed outcome, whether the RFC allows it, and whether a
fresh normal request still succeeded afterwards.  docs/http2-abuse.md records what nghttpd
answered.
"""

import argparse
import select
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
               "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]
# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# Error codes (RFC 9113 §7).
ERRORS = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
          "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
          "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"]
CANCEL = 8
# Settings ids.
SETTINGS_HEADER_TABLE_SIZE = 1
SETTINGS_ENABLE_PUSH = 2
SETTINGS_INITIAL_WINDOW_SIZE = 4


def error_name(code):
    return ERRORS[code] if 0 <= code < len(ERRORS) else "0x%x" % code


# ---------------------------------------------------------------- building frames

def frame(ftype, flags, stream_id, payload=b""):
    """One frame: 24-bit length, type, flags, 31-bit stream id (the reserved bit is sent as
    given: a test may set it)."""
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags, stream_id) + payload


def settings(pairs=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v)
                                                         for k, v in pairs))


def ping(data=b"\0" * 8, ack=False):
    return frame(PING, ACK if ack else 0, 0, data)


def rst_stream(sid, code=CANCEL):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def window_update(sid, inc):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


def priority(sid, dep=0, weight=15, exclusive=False):
    return frame(PRIORITY, 0, sid, struct.pack(">IB", dep | (0x80000000 if exclusive else 0),
                                               weight))


def goaway(last_sid=0, code=0, debug=b""):
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_sid, code) + debug)


def data(sid, payload=b"", end=False):
    return frame(DATA, END_STREAM if end else 0, sid, payload)


def headers(sid, block, end_stream=True, end_headers=True):
    return frame(HEADERS, (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0),
                 sid, block)


def continuation(sid, block, end_headers=False):
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, sid, block)


# ---------------------------------------------------------------- HPACK by hand (RFC 7541)

def hp_int(value, prefix_bits, first=0):
    """An HPACK integer with an N-bit prefix; first holds the pattern bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hp_str(s):
    if isinstance(s, str):
        s = s.encode("latin-1")
    return hp_int(len(s), 7) + s  # H bit clear: no Huffman


def hp_literal(name, value, indexing=False):
    """A literal field with a literal name: 'without indexing' (0x00) or 'with incremental
    indexing' (0x40), so it enters the dynamic table."""
    return (b"\x40" if indexing else b"\x00") + _hp_str(name) + _hp_str(value)


def hp_indexed(index):
    return hp_int(index, 7, 0x80)


def hp_table_size_update(size):
    return hp_int(size, 5, 0x20)


def hp_block(fields):
    """Literal fields without indexing, in the given order, exactly as given."""
    return b"".join(hp_literal(n, v) for n, v in fields)


def request_fields(path="/", method="GET", authority="test", extra=()):
    return [(":method", method), (":scheme", "http"), (":path", path),
            (":authority", authority)] + list(extra)


# ---------------------------------------------------------------- reading frames

class Frame:
    def __init__(self, ftype, flags, sid, payload):
        self.type, self.flags, self.sid, self.payload = ftype, flags, sid, payload

    @property
    def name(self):
        return FRAME_NAMES[self.type] if self.type < len(FRAME_NAMES) else "0x%x" % self.type

    def __repr__(self):
        return "<%s flags=0x%x sid=%d len=%d>" % (self.name, self.flags, self.sid,
                                                 len(self.payload))


class Outcome:
    """What the server did on one connection: GOAWAY (last stream id, code, debug), RST_STREAM
    codes and response statuses by stream, and whether the connection was closed."""

    def __init__(self):
        self.goaway = None          # (last_stream_id, error code name, debug bytes)
        self.resets = {}            # stream id -> error code name
        self.statuses = {}          # stream id -> :status (int)
        self.ended = set()          # streams whose response ended (END_STREAM seen)
        self.closed = False         # EOF or ECONNRESET
        self.send_error = None      # the server stopped reading (we could not send it all)
        self.frames = 0
        self.counts = {}            # frame name -> count

    def kind(self):
        """One word for the result: goaway:CODE, rst:CODE, status:N, closed or nothing.  A
        GOAWAY wins over what came before it (it is the connection's verdict)."""
        if self.goaway:
            return "goaway:" + self.goaway[1]
        if self.resets:
            return "rst:" + sorted(set(self.resets.values()))[0]
        if self.statuses:
            return "status:%d" % self.statuses[max(self.statuses)]
        return "closed" if self.closed else "nothing"

    def __repr__(self):
        g = ""
        if self.goaway:
            g = " goaway(last=%d, %s, %r)" % (self.goaway[0], self.goaway[1],
                                              self.goaway[2][:60])
        return "<Outcome %s%s resets=%s statuses=%s closed=%s frames=%s%s>" % (
            self.kind(), g, dict(list(self.resets.items())[:4]),
            dict(list(self.statuses.items())[:4]), self.closed, self.counts,
            " send_error=%s" % self.send_error if self.send_error else "")


class Conn:
    """An h2c prior-knowledge connection.  start() sends the preface and our SETTINGS;
    every read and write is bounded by a deadline.  The reader ACKs the server's SETTINGS
    and PINGs (unless auto_ack is False) and decodes response headers with one HPACK decoder
    per connection, as a real client must."""

    def __init__(self, host="127.0.0.1", port=80, timeout=5.0, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # A small receive buffer makes the server's replies back up quickly: flood tests
            # rely on the server noticing a client that sends but does not read.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.decoder = hpack.Decoder(max_header_list_size=1 << 30)
        self.decoder.max_allowed_table_size = 1 << 16
        self.outcome = Outcome()
        self.auto_ack = True
        self._hblock = None  # (sid, flags, bytes) while a header block is being continued

    def start(self, settings_pairs=((SETTINGS_ENABLE_PUSH, 0),)):
        self.send(PREFACE + settings(settings_pairs))
        return self

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data, timeout=None):
        """Sends all of data within timeout; returns False (and records why) when the server
        stopped reading or closed.  Never raises for a peer's doing."""
        deadline = time.monotonic() + (timeout or self.timeout)
        view = memoryview(data)
        self.sock.setblocking(False)
        try:
            while view:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.outcome.send_error = "send timed out with %d bytes left" % len(view)
                    return False
                _, w, _ = select.select([], [self.sock], [], left)
                if not w:
                    continue
                try:
                    n = self.sock.send(view)
                except BlockingIOError:
                    continue
                except OSError as e:
                    self.outcome.send_error = e.__class__.__name__
                    return False
                view = view[n:]
            return True
        finally:
            self.sock.settimeout(self.timeout)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            self.outcome.closed = True
            return False
        if not d:
            self.outcome.closed = True
            return False
        self.buf += d
        return True

    def read_frame(self, timeout=None):
        """The next frame, or None on timeout or when the connection ended."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while len(self.buf) < 9:
            if self.outcome.closed or not self._fill(deadline):
                return None
        n = (self.buf[0] << 16) | (self.buf[1] << 8) | self.buf[2]
        while len(self.buf) < 9 + n:
            if self.outcome.closed or not self._fill(deadline):
                return None
        ftype, flags, sid = self.buf[3], self.buf[4], struct.unpack(">I", self.buf[5:9])[0]
        f = Frame(ftype, flags, sid & 0x7FFFFFFF, self.buf[9:9 + n])
        self.buf = self.buf[9 + n:]
        self._note(f)
        return f

    def _note(self, f):
        o = self.outcome
        o.frames += 1
        o.counts[f.name] = o.counts.get(f.name, 0) + 1
        if f.type == GOAWAY and len(f.payload) >= 8:
            last, code = struct.unpack(">II", f.payload[:8])
            o.goaway = (last & 0x7FFFFFFF, error_name(code), f.payload[8:])
        elif f.type == RST_STREAM and len(f.payload) == 4:
            o.resets[f.sid] = error_name(struct.unpack(">I", f.payload)[0])
        elif f.type == SETTINGS and not f.flags & ACK and self.auto_ack:
            self.send(settings(ack=True), timeout=0.5)
        elif f.type == PING and not f.flags & ACK and self.auto_ack:
            self.send(ping(f.payload, ack=True), timeout=0.5)
        elif f.type in (HEADERS, CONTINUATION):
            self._header_fragment(f)
        elif f.type == DATA and f.flags & END_STREAM:
            o.ended.add(f.sid)

    def _header_fragment(self, f):
        if f.type == HEADERS:
            p = f.payload
            pad = 0
            if f.flags & PADDED:
                pad, p = p[0], p[1:]
            if f.flags & PRIORITY_FLAG:
                p = p[5:]
            self._hblock = (f.sid, f.flags, p[:len(p) - pad])
        elif self._hblock:
            sid, flags, b = self._hblock
            self._hblock = (sid, flags, b + f.payload)
        if self._hblock and f.flags & END_HEADERS:
            sid, flags, block = self._hblock
            self._hblock = None
            try:
                fields = self.decoder.decode(block, raw=False)
            except Exception:
                fields = []
            for k, v in fields:
                if k == ":status":
                    self.outcome.statuses[sid] = int(v)
            if flags & END_STREAM:
                self.outcome.ended.add(sid)

    def read_until(self, pred, timeout=None):
        """Reads frames until pred(outcome) is true, the connection ends or timeout passes.
        Returns the outcome."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not pred(self.outcome):
            f = self.read_frame(max(0.0, deadline - time.monotonic()))
            if f is None:
                break
        return self.outcome

    def drain(self, timeout=None):
        """Reads until GOAWAY plus close, or the timeout: the connection's final verdict."""
        return self.read_until(lambda o: o.closed, timeout)


def verdict(c, sid=None, timeout=3.0):
    """Reads until the connection ends, a GOAWAY arrives, or stream sid got a reset or a
    complete response; then a little more so a GOAWAY that follows a reset is seen too."""
    def done(o):
        return o.closed or o.goaway or (sid is not None and (sid in o.resets or sid in o.ended))
    o = c.read_until(done, timeout)
    if not o.closed and not o.goaway:
        c.read_until(lambda o: o.closed or o.goaway, 0.3)
    return o


# ---------------------------------------------------------------- the well-behaved client

def good_request(host, port, path="/", timeout=5.0, authority="test"):
    """One GET over a fresh h2c prior-knowledge connection with python3-h2, validation on.
    Returns the :status (int), or None when the server does not answer HTTP/2."""
    cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=cfg)
    deadline = time.monotonic() + timeout
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    try:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", path),
                                (":authority", authority)], end_stream=True)
        s.sendall(conn.data_to_send())
        status = None
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                d = s.recv(65536)
            except (socket.timeout, OSError):
                return None
            if not d:
                return None
            try:
                events = conn.receive_data(d)
            except h2.exceptions.ProtocolError:
                return None
            for ev in events:
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    status = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    return status
                elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    return None
            out = conn.data_to_send()
            if out:
                s.sendall(out)
        return None
    finally:
        s.close()


def speaks_h2c(host, port, path="/", timeout=2.0):
    return good_request(host, port, path, timeout) is not None


# ---------------------------------------------------------------- scenarios

class Scenario:
    """name; run(host, port, path) -> Outcome; expect: the outcome kinds RFC 9113 (or, for a
    flood with no RFC rule, the usual mitigation) allows; counters: magpie stats under
    http.<stat_prefix>. of which at least one must grow (first = the primary); rfc: the rule;
    sends: the frames, for the doc table."""

    def __init__(self, name, fn, expect, counters, rfc, sends, timeout=30):
        self.name, self.fn, self.expect = name, fn, tuple(expect)
        self.counters, self.rfc, self.sends, self.timeout = tuple(counters), rfc, sends, timeout

    def run(self, host, port, path="/"):
        return self.fn(host, port, path)

    def allowed(self, outcome):
        return outcome.kind() in self.expect


SCENARIOS = []


def scenario(expect, counters, rfc, sends, timeout=30):
    def reg(fn):
        name = fn.__name__.lstrip("_")
        SCENARIOS.append(Scenario(name, fn, expect, counters, rfc, sends, timeout))
        return fn
    return reg


def _open(host, port, **kw):
    c = Conn(host, port, **kw).start()
    return c


def _one_request(host, port, fields, end_stream=True, sid=1, then=b""):
    with _open(host, port) as c:
        c.send(headers(sid, hp_block(fields), end_stream=end_stream) + then)
        return verdict(c, sid)


GOAWAY_PROTO = ("goaway:PROTOCOL_ERROR",)
STREAM_PROTO = ("rst:PROTOCOL_ERROR", "status:400")
CALM = ("goaway:ENHANCE_YOUR_CALM",)


@scenario(("status:200",), (), "baseline: a valid request on the raw client",
          "HEADERS(END_STREAM) GET path")
def _baseline(host, port, path):
    return _one_request(host, port, request_fields(path))


# -- stream identifiers (RFC 9113 §5.1.1)

@scenario(GOAWAY_PROTO, ("http2.stream_id_misuse",),
          "§5.1.1: a client stream id must be odd; even -> connection error PROTOCOL_ERROR",
          "HEADERS on stream 2")
def _even_stream_id(host, port, path):
    return _one_request(host, port, request_fields(path), sid=2)


@scenario(GOAWAY_PROTO + ("goaway:STREAM_CLOSED",), ("http2.stream_id_misuse",),
          "§5.1.1: stream ids must increase; a lower new id -> connection error PROTOCOL_ERROR "
          "(3 is implicitly closed, so STREAM_CLOSED fits too)",
          "HEADERS on 5, then HEADERS on 3")
def _stream_id_decrease(host, port, path):
    with _open(host, port) as c:
        c.send(headers(5, hp_block(request_fields(path))))
        c.read_until(lambda o: 5 in o.ended or o.closed, 3)
        c.outcome.statuses.clear()  # only the answer to stream 3 counts
        c.send(headers(3, hp_block(request_fields(path))))
        return verdict(c)


@scenario(GOAWAY_PROTO, ("http2.stream_id_misuse",),
          "§6.1/§5.1: DATA on an idle stream -> connection error PROTOCOL_ERROR",
          "DATA on stream 7, never opened")
def _data_idle_stream(host, port, path):
    with _open(host, port) as c:
        c.send(data(7, b"hello", end=True))
        return verdict(c)


@scenario(GOAWAY_PROTO, ("http2.stream_id_misuse",),
          "§6.2: HEADERS on stream 0 -> connection error PROTOCOL_ERROR",
          "HEADERS on stream 0")
def _headers_stream_zero(host, port, path):
    return _one_request(host, port, request_fields(path), sid=0)


# -- HPACK (RFC 7541; RFC 9113 §4.3: a decoding error is a connection error COMPRESSION_ERROR)

@scenario(("goaway:COMPRESSION_ERROR",), ("http2.hpack_error",),
          "RFC 7541 §6.3/§4.2: a table size update above SETTINGS_HEADER_TABLE_SIZE (4096) -> "
          "COMPRESSION_ERROR", "HEADERS: size update to 2^31 then the request")
def _hpack_huge_table_update(host, port, path):
    block = hp_table_size_update(1 << 31) + hp_block(request_fields(path))
    with _open(host, port) as c:
        c.send(headers(1, block))
        return verdict(c, 1)


@scenario(("goaway:COMPRESSION_ERROR",), ("http2.hpack_error",),
          "RFC 7541 §4.2: a size update after the first field -> COMPRESSION_ERROR",
          "HEADERS: :method, size update 0, the rest")
def _hpack_late_table_update(host, port, path):
    f = request_fields(path)
    block = hp_block(f[:1]) + hp_table_size_update(0) + hp_block(f[1:])
    with _open(host, port) as c:
        c.send(headers(1, block))
        return verdict(c, 1)


@scenario(("goaway:COMPRESSION_ERROR",), ("http2.hpack_error",),
          "RFC 7541 §2.3.3: an index past the tables -> COMPRESSION_ERROR",
          "HEADERS: the request plus indexed field 300 (table empty)")
def _hpack_bad_index(host, port, path):
    block = hp_block(request_fields(path)) + hp_indexed(300)
    with _open(host, port) as c:
        c.send(headers(1, block))
        return verdict(c, 1)


@scenario(("status:431", "rst:PROTOCOL_ERROR", "rst:REFUSED_STREAM", "rst:INTERNAL_ERROR",
           "goaway:ENHANCE_YOUR_CALM", "goaway:COMPRESSION_ERROR", "goaway:PROTOCOL_ERROR"),
          ("http2.header_overflow",),
          "RFC 9113 §10.5.1: a header list over the advertised limit may be refused "
          "(431 or a stream/connection error); decoded size is what counts",
          "HEADERS: one 4000-byte field inserted into the dynamic table, then 4000 one-byte "
          "references to it (16 MB decoded from 20 KB)", timeout=30)
def _hpack_index_bomb(host, port, path):
    big = hp_literal("x-bomb", "b" * 4000, indexing=True)
    block = hp_block(request_fields(path)) + big + hp_indexed(62) * 4000
    with _open(host, port) as c:
        c.send(_split_headers(1, block, 16384))
        return verdict(c, 1, timeout=10)


def _split_headers(sid, block, size, end_stream=True):
    parts = [block[i:i + size] for i in range(0, len(block), size)] or [b""]
    out = [headers(sid, parts[0], end_stream=end_stream, end_headers=len(parts) == 1)]
    for i, p in enumerate(parts[1:], 1):
        out.append(continuation(sid, p, end_headers=i == len(parts) - 1))
    return b"".join(out)


@scenario(("status:431", "rst:PROTOCOL_ERROR", "rst:REFUSED_STREAM", "rst:INTERNAL_ERROR",
           "goaway:ENHANCE_YOUR_CALM", "goaway:COMPRESSION_ERROR", "goaway:PROTOCOL_ERROR"),
          ("http2.header_overflow",),
          "RFC 9113 §10.5.1: a 1 MiB header block may be refused (431 or stream/connection "
          "error)", "HEADERS + CONTINUATIONs of 16 KB: 256 fields of 4 KB")
def _header_overflow(host, port, path):
    extra = [("x-big-%d" % i, "v" * 4096) for i in range(256)]
    with _open(host, port) as c:
        c.send(_split_headers(1, hp_block(request_fields(path, extra=extra)), 16384))
        return verdict(c, 1, timeout=10)


# -- CONTINUATION flood (CVE-2024-27316 class): header block that never ends

@scenario(("goaway:ENHANCE_YOUR_CALM", "goaway:PROTOCOL_ERROR", "goaway:COMPRESSION_ERROR",
           "status:431", "closed"),
          ("http2.continuation_flood", "http2.header_overflow"),
          "no RFC limit; §10.5: a server bounds the frames of one header block and closes "
          "the connection (CVE-2024-27316 / CVE-2024-28182)",
          "HEADERS without END_HEADERS, then 10,000 CONTINUATION frames of one small field each,"
          " never END_HEADERS", timeout=30)
def _continuation_flood(host, port, path):
    with _open(host, port) as c:
        c.send(headers(1, hp_block(request_fields(path)), end_headers=False))
        one = continuation(1, hp_literal("x-c", "a" * 10))
        for _ in range(100):
            if not c.send(one * 100, timeout=2.0):
                break
        return verdict(c, 1, timeout=5)


@scenario(("goaway:ENHANCE_YOUR_CALM", "goaway:PROTOCOL_ERROR", "closed"),
          ("http2.continuation_flood",),
          "no RFC limit; empty CONTINUATION frames cost the server work and carry nothing",
          "HEADERS without END_HEADERS, then 20,000 empty CONTINUATION frames", timeout=30)
def _continuation_flood_empty(host, port, path):
    with _open(host, port) as c:
        c.send(headers(1, hp_block(request_fields(path)), end_headers=False))
        one = continuation(1, b"")
        for _ in range(100):
            if not c.send(one * 200, timeout=2.0):
                break
        return verdict(c, 1, timeout=5)


@scenario(GOAWAY_PROTO, ("http2.rx_messaging_error", "http2.stream_id_misuse"),
          "§6.10: a frame other than CONTINUATION on any stream while a header block is open "
          "-> connection error PROTOCOL_ERROR", "HEADERS without END_HEADERS on 1, then PING")
def _interleaved_header_block(host, port, path):
    with _open(host, port) as c:
        c.send(headers(1, hp_block(request_fields(path)), end_headers=False) + ping())
        return verdict(c, 1)


# -- control-frame floods (no RFC limit; nghttp2 / Envoy style mitigation: ENHANCE_YOUR_CALM)

def _flood(host, port, unit, count, prefix=b""):
    # The client never reads while flooding: the replies (ACKs, RSTs) back up in the server.
    with _open(host, port, rcvbuf=4096) as c:
        c.auto_ack = False
        if prefix:
            c.send(prefix)
        batch = 500
        for _ in range(count // batch):
            if not c.send(unit * batch, timeout=2.0):
                break
        return verdict(c, timeout=5)


@scenario(CALM + ("closed",), ("http2.ping_flood", "http2.outbound_control_flood"),
          "no RFC limit; §10.5: PINGs whose ACKs the client never reads -> ENHANCE_YOUR_CALM",
          "500,000 PING frames (8.5 MB of ACKs, more than loopback socket buffers hold), client "
          "not reading, SO_RCVBUF 4 KB", timeout=60)
def _ping_flood(host, port, path):
    return _flood(host, port, ping(), 500000)


@scenario(CALM + ("closed",), ("http2.settings_flood", "http2.outbound_control_flood"),
          "no RFC limit; §10.5: SETTINGS whose ACKs the client never reads -> ENHANCE_YOUR_CALM",
          "500,000 empty SETTINGS frames (4.5 MB of ACKs), client not reading, SO_RCVBUF 4 KB",
          timeout=60)
def _settings_flood(host, port, path):
    return _flood(host, port, settings(), 500000)


@scenario(CALM + ("closed",), ("http2.inbound_priority_frames_flood",),
          "no RFC limit (PRIORITY is deprecated by RFC 9113 §5.3.2 but still parsed); "
          "a flood of PRIORITY frames for idle streams -> ENHANCE_YOUR_CALM",
          "100,000 PRIORITY frames on new odd stream ids", timeout=40)
def _priority_flood(host, port, path):
    unit = b"".join(priority(2 * i + 1, dep=0) for i in range(500))
    with _open(host, port) as c:
        for _ in range(200):
            if not c.send(unit, timeout=2.0):
                break
        return verdict(c, timeout=3)


@scenario(CALM + ("closed",), ("http2.inbound_empty_frames_flood",),
          "no RFC limit; zero-length DATA frames without END_STREAM carry nothing "
          "(CVE-2019-9518) -> ENHANCE_YOUR_CALM", "POST HEADERS on 1, then 20,000 empty DATA "
          "frames without END_STREAM", timeout=40)
def _empty_data_flood(host, port, path):
    with _open(host, port) as c:
        c.send(headers(1, hp_block(request_fields(path, "POST")), end_stream=False))
        unit = data(1) * 500
        for _ in range(40):
            if not c.send(unit, timeout=2.0):
                break
        return verdict(c, timeout=3)


@scenario(CALM + ("goaway:INTERNAL_ERROR", "closed"), ("http2.too_many_resets",),
          "no RFC limit; rapid reset (CVE-2023-44487): streams opened and cancelled at once "
          "-> ENHANCE_YOUR_CALM (libnghttp2's own limit answers INTERNAL_ERROR)", "20,000 x (HEADERS(END_STREAM) on a new stream, "
          "RST_STREAM(CANCEL) on it)", timeout=60)
def _rapid_reset(host, port, path):
    block = hp_block(request_fields(path))
    with _open(host, port) as c:
        sid = 1
        for _ in range(40):
            batch = []
            for _ in range(500):
                batch.append(headers(sid, block) + rst_stream(sid))
                sid += 2
            if not c.send(b"".join(batch), timeout=3.0):
                break
            if c.outcome.goaway or c.outcome.closed:
                break
            # Read what is there without blocking: the server's GOAWAY ends the loop.
            c.read_until(lambda o: False, 0.0)
        return verdict(c, timeout=5)


@scenario(CALM + ("closed", "goaway:PROTOCOL_ERROR"),
          ("http2.outbound_control_flood", "http2.too_many_resets"),
          "no RFC limit; each malformed request is a stream error (§8.1.1) the server "
          "answers with RST_STREAM; the client never reads them (server-provoked reset "
          "flood, 'MadeYouReset' class) -> ENHANCE_YOUR_CALM", "20,000 x HEADERS with "
          "`connection: keep-alive` on new streams, client not reading", timeout=60)
def _provoked_reset_flood(host, port, path):
    block = hp_block(request_fields(path, extra=[("connection", "keep-alive")]))
    with _open(host, port, rcvbuf=4096) as c:
        c.auto_ack = False
        sid = 1
        for _ in range(40):
            batch = []
            for _ in range(500):
                batch.append(headers(sid, block))
                sid += 2
            if not c.send(b"".join(batch), timeout=2.0):
                break
        return verdict(c, timeout=5)


# -- malformed requests (RFC 9113 §8.1.1: malformed -> stream error PROTOCOL_ERROR)

def _malformed(fields_fn, expect=STREAM_PROTO, counters=("http2.invalid_pseudo_header",),
               rfc="", sends=""):
    def reg(fn):
        def run(host, port, path):
            return _one_request(host, port, fields_fn(path))
        run.__name__ = fn.__name__
        return scenario(expect, counters, rfc, sends)(run)
    return reg


@_malformed(lambda p: request_fields(p, extra=[(":foo", "bar")]),
            rfc="§8.3: an undefined pseudo-header -> malformed, stream error PROTOCOL_ERROR",
            sends="HEADERS: request + `:foo: bar`")
def _pseudo_unknown():
    pass


@_malformed(lambda p: [(":method", "GET"), ("x-a", "1"), (":scheme", "http"), (":path", p),
                       (":authority", "test")],
            rfc="§8.3: a pseudo-header after a regular field -> malformed",
            sends="HEADERS: :method, x-a, :scheme, :path, :authority")
def _pseudo_after_regular():
    pass


@_malformed(lambda p: [(":method", "GET"), (":scheme", "http"), (":authority", "test")],
            rfc="§8.3.1: :path missing (not CONNECT) -> malformed",
            sends="HEADERS: :method, :scheme, :authority")
def _pseudo_missing_path():
    pass


@_malformed(lambda p: request_fields(p) + [(":method", "POST")],
            rfc="§8.3: a pseudo-header twice -> malformed",
            sends="HEADERS: request + a second :method")
def _pseudo_duplicate():
    pass


@_malformed(lambda p: [(":method", "GET"), (":scheme", "http"), (":path", ""),
                       (":authority", "test")],
            rfc="§8.3.1: an empty :path (http scheme) -> malformed",
            sends="HEADERS: :path empty")
def _pseudo_empty_path():
    pass


@_malformed(lambda p: request_fields(p) + [(":status", "200")],
            rfc="§8.3.2: a response pseudo-header in a request -> malformed",
            sends="HEADERS: request + :status")
def _pseudo_status_in_request():
    pass


@_malformed(lambda p: request_fields(p, extra=[("X-Upper", "1")]),
            counters=("http2.rx_messaging_error",),
            rfc="§8.2.1: an uppercase field name -> malformed", sends="HEADERS: `X-Upper: 1`")
def _uppercase_name():
    pass


@_malformed(lambda p: request_fields(p, extra=[("x-a", "a\r\nb")]),
            counters=("http2.rx_messaging_error",),
            rfc="§8.2.1: CR or LF in a field value -> malformed", sends="HEADERS: `x-a: a CRLF b`")
def _crlf_in_value():
    pass


@_malformed(lambda p: request_fields(p, extra=[("connection", "keep-alive")]),
            counters=("http2.connection_specific_header",),
            rfc="§8.2.2: a connection-specific field -> malformed",
            sends="HEADERS: `connection: keep-alive`")
def _conn_header_connection():
    pass


@_malformed(lambda p: request_fields(p, extra=[("te", "gzip")]),
            counters=("http2.connection_specific_header",),
            rfc="§8.2.2: TE with any value but `trailers` -> malformed",
            sends="HEADERS: `te: gzip`")
def _conn_header_te_gzip():
    pass


@_malformed(lambda p: request_fields(p, extra=[("transfer-encoding", "chunked")]),
            counters=("http2.connection_specific_header",),
            rfc="§8.2.2: Transfer-Encoding -> malformed",
            sends="HEADERS: `transfer-encoding: chunked`")
def _conn_header_transfer_encoding():
    pass


@_malformed(lambda p: request_fields(p, extra=[("upgrade", "websocket")]),
            counters=("http2.connection_specific_header",),
            rfc="§8.2.2: Upgrade -> malformed", sends="HEADERS: `upgrade: websocket`")
def _conn_header_upgrade():
    pass


@_malformed(lambda p: request_fields(p, extra=[("keep-alive", "timeout=5")]),
            counters=("http2.connection_specific_header",),
            rfc="§8.2.2: Keep-Alive -> malformed", sends="HEADERS: `keep-alive: timeout=5`")
def _conn_header_keep_alive():
    pass


@_malformed(lambda p: request_fields(p, extra=[("proxy-connection", "keep-alive")]),
            counters=("http2.connection_specific_header",),
            rfc="§8.2.2: Proxy-Connection -> malformed",
            sends="HEADERS: `proxy-connection: keep-alive`")
def _conn_header_proxy_connection():
    pass


@_malformed(lambda p: request_fields(p, extra=[("te", "trailers")]),
            expect=("status:200",), counters=(),
            rfc="§8.2.2: `te: trailers` is the one allowed TE -> served normally",
            sends="HEADERS: `te: trailers`")
def _te_trailers_allowed():
    pass


@scenario(STREAM_PROTO, ("http2.rx_messaging_error",),
          "§8.1.1: DATA length differing from content-length -> malformed, stream error "
          "PROTOCOL_ERROR", "POST HEADERS `content-length: 10`, DATA of 5 bytes END_STREAM")
def _content_length_mismatch(host, port, path):
    f = request_fields(path, "POST", extra=[("content-length", "10")])
    return _one_request(host, port, f, end_stream=False, then=data(1, b"12345", end=True))


# -- frame-level errors

@scenario(("goaway:FRAME_SIZE_ERROR",), ("http2.rx_messaging_error",),
          "§4.2: a frame larger than SETTINGS_MAX_FRAME_SIZE (16384) -> FRAME_SIZE_ERROR "
          "(connection error for this DATA)", "POST HEADERS, then one DATA of 20,000 bytes")
def _oversized_frame(host, port, path):
    f = request_fields(path, "POST")
    return _one_request(host, port, f, end_stream=False, then=data(1, b"x" * 20000, end=True))


@scenario(("goaway:FRAME_SIZE_ERROR",), ("http2.rx_messaging_error",),
          "§6.7: a PING whose length is not 8 -> connection error FRAME_SIZE_ERROR",
          "PING with 4 bytes")
def _ping_bad_length(host, port, path):
    with _open(host, port) as c:
        c.send(frame(PING, 0, 0, b"abcd"))
        return verdict(c)


@scenario(("goaway:FLOW_CONTROL_ERROR",), ("http2.rx_messaging_error",),
          "§6.9.1: a WINDOW_UPDATE taking the connection window above 2^31-1 -> connection "
          "error FLOW_CONTROL_ERROR", "WINDOW_UPDATE(0, 2^31-1) twice")
def _window_overflow(host, port, path):
    with _open(host, port) as c:
        c.send(window_update(0, 0x7FFFFFFF) * 2)
        return verdict(c)


@scenario(("goaway:PROTOCOL_ERROR",), ("http2.rx_messaging_error",),
          "§8.4: a client must not send PUSH_PROMISE -> connection error PROTOCOL_ERROR",
          "PUSH_PROMISE on stream 1")
def _client_push_promise(host, port, path):
    with _open(host, port) as c:
        c.send(headers(1, hp_block(request_fields(path)), end_stream=False))
        c.send(frame(PUSH_PROMISE, END_HEADERS, 1,
                     struct.pack(">I", 2) + hp_block(request_fields(path))))
        return verdict(c)


@scenario(("status:200",), ("http2.rx_reset",),
          "§6.4: RST_STREAM by the client ends only that stream; the connection goes on",
          "POST HEADERS on 1, RST_STREAM(CANCEL) on 1, then GET on 3 (same connection)")
def _client_reset(host, port, path):
    with _open(host, port) as c:
        c.send(headers(1, hp_block(request_fields(path, "POST")), end_stream=False))
        c.send(rst_stream(1))
        c.send(headers(3, hp_block(request_fields(path))))
        o = verdict(c, 3)
        o.resets.pop(1, None)  # a server may answer our reset of 1; only stream 3 counts
        return o


def by_name(name):
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise KeyError(name)


# ---------------------------------------------------------------- selfcheck

def selfcheck(host, port, path, pattern=None, out=sys.stdout):
    """Runs every scenario against host:port; one line each: observed outcome, "ok" when it
    is one the scenario expects of magpie or "DIFFERS", and the status of a fresh request
    afterwards.  Returns the number of scenarios that raised or after which a normal request
    failed."""
    bad = 0
    if not speaks_h2c(host, port, path):
        print("%s:%d does not answer an h2c prior-knowledge GET %s" % (host, port, path),
              file=out)
        return 1
    for s in SCENARIOS:
        if pattern and pattern not in s.name:
            continue
        t0 = time.monotonic()
        try:
            o = s.run(host, port, path)
            kind = o.kind()
        except Exception as e:  # a client-side bug: report it as such
            o, kind = None, "client-exception:%r" % e
        after = good_request(host, port, path)
        # A different (legal or merely unmitigated) answer from the peer is information for
        # the doc table; a client exception or a peer that stops serving is a failure.
        bad += 0 if o is not None and after == 200 else 1
        detail = ""
        if o is not None and o.goaway:
            detail += " last_stream=%d" % o.goaway[0]
        if o is not None and o.send_error:
            detail += " (server stopped reading: %s)" % o.send_error
        print("%-30s %-28s %-7s after=%-4s %5.1fs%s" % (
            s.name, kind, "ok" if o is not None and s.allowed(o) else "DIFFERS", after,
            time.monotonic() - t0, detail), file=out, flush=True)
    return bad


def main(argv=None):
    ap = argparse.ArgumentParser(description="raw HTTP/2 abuse client")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("selfcheck", help="run every scenario against an h2c server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--path", default="/")
    s.add_argument("-k", dest="pattern")
    s = sub.add_parser("list", help="the scenarios as a markdown table")
    a = ap.parse_args(argv)
    if a.cmd == "list":
        print("| scenario | frames sent | RFC 9113 rule | expected | magpie counter |")
        print("| --- | --- | --- | --- | --- |")
        for sc in SCENARIOS:
            print("| %s | %s | %s | %s | %s |" % (sc.name, sc.sends, sc.rfc,
                                                  ", ".join(sc.expect),
                                                  ", ".join(sc.counters) or "-"))
        return 0
    return 1 if selfcheck(a.host, a.port, a.path, a.pattern) else 0


if __name__ == "__main__":
    sys.exit(main())
