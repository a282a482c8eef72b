#!/usr/bin/python3
"""A gRPC peer for the integration tests: service magpie.test.Echo, bytes in and bytes out.

No protobuf and no generated stubs: every method is registered through grpcio's generic handler
with no (de)serializer, so a message is the raw bytes of the gRPC frame and a test can reason
about sizes exactly.  Runs with Debian's python3-grpcio (1.51) under /usr/bin/python3.

Methods (full names /magpie.test.Echo/<Method>):

  Unary         unary-unary.  Echoes the request.  Request metadata `x-fail-code: N` makes it
                abort with gRPC status N and the message "x-fail-code N requested".  Always
                sets initial metadata `x-echo-initial: 1` and trailing metadata
                `x-echo-trailer: <request length>` and `x-echo-bin: <4 bytes>` (a -bin key,
                base64 on the wire), so a test can check that trailers pass through a proxy.
  ServerStream  unary-stream.  Request b"n:size": n messages of size bytes each.
  ClientStream  stream-unary.  Answers the decimal sum of the lengths of all requests.
  Bidi          stream-stream.  Echoes each message as it arrives.
  Sleep         unary-unary.  Request: decimal milliseconds.  Sleeps that long (in 10 ms steps,
                stopping early when the call is cancelled or its deadline passes), answers
                b"slept <ms>".  For deadline and cancellation tests: a Sleep that ended early
                because its call was no longer active counts in calls["Sleep.cancelled"].
  Big           unary-stream.  Request: decimal N.  Streams N bytes in total, 64 KiB per
                message (the last may be shorter).  Used for the 1 GiB test.
  BigUp         stream-unary.  Answers the decimal count of bytes received over all requests.

As a module:
    srv = grpc_peer.Server()            # 127.0.0.1, a free port, background threads
    srv.port; srv.calls["Unary"]; srv.stop()
    grpc_peer.call("127.0.0.1:%d" % port, "Unary", b"hi", metadata=[("x-fail-code", "5")])
    grpc_peer.start_subprocess() -> (Popen, port)   # `serve` in a child, waits for READY
    grpc_peer.big_download(target, 2**30) / big_upload(target, 2**30)  # count, keep nothing

From a shell:
    python3 grpc_peer.py serve [--port P] [--host H]        prints "READY <port>", serves
    python3 grpc_peer.py call --target host:port --method Unary [--data TEXT] [--count N]
        [--size S] [--metadata k=v ...] [--timeout S]
"""

import argparse
import os
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "magpie.test.Echo"
CHUNK = 64 * 1024
# Big and BigUp move gibibytes; the other methods keep grpcio's 4 MiB default limits.
_MSG_LIMIT = 16 * 1024 * 1024
_OPTIONS = [("grpc.max_receive_message_length", _MSG_LIMIT),
            ("grpc.max_send_message_length", _MSG_LIMIT)]


def status_code(n):
    """grpc.StatusCode for a numeric gRPC status (ValueError for an unknown one)."""
    for c in grpc.StatusCode:
        if c.value[0] == n:
            return c
    raise ValueError("no gRPC status %d" % n)


def path(method):
    return "/%s/%s" % (SERVICE, method)


class _Echo:
    """The handlers; counts calls per method (the counters are read by tests)."""

    def __init__(self):
        self.calls = {}
        self.lock = threading.Lock()
        self.last_metadata = {}
        self.time_remaining = {}  # method -> context.time_remaining() at arrival (None: none)

    def _count(self, name, context):
        md = tuple(context.invocation_metadata())
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            self.last_metadata[name] = md
            self.time_remaining[name] = context.time_remaining()
        return dict(md)

    def unary(self, request, context):
        md = self._count("Unary", context)
        context.send_initial_metadata((("x-echo-initial", "1"),))
        context.set_trailing_metadata((("x-echo-trailer", str(len(request))),
                                       ("x-echo-bin", b"\x00\x01\xfe\xff")))
        if "x-fail-code" in md:
            n = int(md["x-fail-code"])
            context.abort(status_code(n), "x-fail-code %d requested" % n)
        return request

    def server_stream(self, request, context):
        self._count("ServerStream", context)
        n, _, size = request.decode().partition(":")
        msg = b"s" * int(size or 0)
        for _ in range(int(n)):
            yield msg

    def client_stream(self, request_iterator, context):
        self._count("ClientStream", context)
        return str(sum(len(r) for r in request_iterator)).encode()

    def bidi(self, request_iterator, context):
        self._count("Bidi", context)
        for r in request_iterator:
            yield r

    def sleep(self, request, context):
        self._count("Sleep", context)
        ms = int(request.decode() or 0)
        deadline = time.monotonic() + ms / 1000.0
        while time.monotonic() < deadline and context.is_active():
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        if time.monotonic() < deadline:
            with self.lock:
                self.calls["Sleep.cancelled"] = self.calls.get("Sleep.cancelled", 0) + 1
        return b"slept %d" % ms

    def big(self, request, context):
        self._count("Big", context)
        left = int(request.decode())
        block = bytes(range(256)) * (CHUNK // 256)
        while left > 0 and context.is_active():
            n = min(left, CHUNK)
            yield block if n == CHUNK else block[:n]
            left -= n

    def big_up(self, request_iterator, context):
        self._count("BigUp", context)
        return str(sum(len(r) for r in request_iterator)).encode()

    def handler(self):
        # No serializers: grpcio passes the message bytes through unchanged.
        h = {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Sleep": grpc.unary_unary_rpc_method_handler(self.sleep),
            "Big": grpc.unary_stream_rpc_method_handler(self.big),
            "BigUp": grpc.stream_unary_rpc_method_handler(self.big_up),
        }
        return grpc.method_handlers_generic_handler(SERVICE, h)


class Server:
    """The Echo service on host:port (port 0 = a free one, read back from .port), served by a
    grpcio thread pool in this process.  stop() is idempotent."""

    def __init__(self, port=0, host="127.0.0.1", workers=32):
        self.echo = _Echo()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                                  options=_OPTIONS)
        self.server.add_generic_rpc_handlers((self.echo.handler(),))
        self.port = self.server.add_insecure_port("%s:%d" % (host, port))
        if self.port == 0:
            raise OSError("grpc: could not bind %s:%d" % (host, port))
        self.host = host
        self.server.start()
        try:
            import mp
            mp.on_cleanup(self.stop)
        except ImportError:
            pass

    @property
    def calls(self):
        return self.echo.calls

    @property
    def time_remaining(self):
        return self.echo.time_remaining

    @property
    def target(self):
        return "%s:%d" % (self.host, self.port)

    def stop(self, grace=None):
        self.server.stop(grace).wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


def start_subprocess(port=0, timeout=15.0):
    """`grpc_peer.py serve` in a child process; (Popen, port) once it printed READY.  The
    child is registered with mp's cleanup when mp is importable."""
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", "--port",
                          str(port)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        import mp
        mp._register(p)
    except ImportError:
        pass
    # readline blocks; a watchdog kills the child if READY never comes, which ends the read.
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        line = p.stdout.readline().decode()
    finally:
        timer.cancel()
    if not line.startswith("READY "):
        p.kill()
        p.wait()
        raise RuntimeError("grpc_peer serve did not start: %r" % line)
    return p, int(line.split()[1])


def channel(target, options=()):
    return grpc.insecure_channel(target, options=_OPTIONS + list(options))


def call(target, method, request=b"", metadata=None, timeout=10.0, ch=None):
    """One call of any Echo method with the shape that method has.

    request: bytes for a unary request, an iterable of bytes for a client stream.
    Returns (response, call): response is bytes for unary responses and a list of bytes for
    server streams; call has .code(), .details(), .initial_metadata(), .trailing_metadata().
    Raises grpc.RpcError when the call fails (the error is also a call)."""
    own = ch is None
    ch = ch or channel(target)
    try:
        p = path(method)
        if method in ("Unary", "Sleep"):
            return ch.unary_unary(p).with_call(request, metadata=metadata, timeout=timeout)
        if method in ("ClientStream", "BigUp"):
            return ch.stream_unary(p).with_call(iter(request), metadata=metadata,
                                                timeout=timeout)
        if method in ("ServerStream", "Big"):
            it = ch.unary_stream(p)(request, metadata=metadata, timeout=timeout)
            return list(it), it
        if method == "Bidi":
            it = ch.stream_stream(p)(iter(request), metadata=metadata, timeout=timeout)
            return list(it), it
        raise ValueError("unknown method %s" % method)
    finally:
        if own:
            ch.close()


def big_download(target, nbytes, timeout=300.0, metadata=None):
    """Big without keeping the data: (bytes received, messages, call).  For the 1 GiB test."""
    with channel(target) as ch:
        it = ch.unary_stream(path("Big"))(str(nbytes).encode(), metadata=metadata,
                                          timeout=timeout)
        got = msgs = 0
        for m in it:
            got += len(m)
            msgs += 1
        return got, msgs, it


def big_upload(target, nbytes, timeout=300.0, metadata=None):
    """BigUp with nbytes generated in 64 KiB messages; the server's count (int)."""
    block = b"u" * CHUNK

    def gen():
        left = nbytes
        while left > 0:
            yield block if left >= CHUNK else block[:left]
            left -= CHUNK
    with channel(target) as ch:
        resp = ch.stream_unary(path("BigUp"))(gen(), metadata=metadata, timeout=timeout)
        return int(resp.decode())


def _serve_main(a):
    # Handlers first: a test may send SIGTERM as soon as it reads READY.
    stop = threading.Event()
    import signal
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    srv = Server(port=a.port, host=a.host)
    print("READY %d" % srv.port, flush=True)
    while not stop.wait(1.0):
        pass
    srv.stop(0)


def _call_main(a):
    md = [tuple(kv.split("=", 1)) for kv in a.metadata]
    if a.method in ("ClientStream", "BigUp", "Bidi"):
        req = [a.data.encode() or b"x" * a.size] * a.count
    else:
        req = a.data.encode()
    if a.method in ("Big", "BigUp"):
        n = int(a.data) if a.data.isdigit() else a.size
        got = big_download(a.target, n)[0] if a.method == "Big" else big_upload(a.target, n)
        print("%s: %d bytes" % (a.method, got))
        return 0
    try:
        resp, c = call(a.target, a.method, req, metadata=md, timeout=a.timeout)
    except grpc.RpcError as e:
        print("status: %s %r" % (e.code(), e.details()))
        print("trailing metadata: %r" % (e.trailing_metadata(),))
        return 1
    if isinstance(resp, list):
        print("responses: %d, bytes: %d" % (len(resp), sum(len(r) for r in resp)))
        for r in resp[:5]:
            print("  %r" % r[:80])
    else:
        print("response: %r" % resp[:200])
    print("status: %s" % (c.code(),))
    print("initial metadata: %r" % (c.initial_metadata(),))
    print("trailing metadata: %r" % (c.trailing_metadata(),))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--host", default="127.0.0.1")
    c = sub.add_parser("call")
    c.add_argument("--target", required=True)
    c.add_argument("--method", default="Unary")
    c.add_argument("--data", default="hello")
    c.add_argument("--count", type=int, default=3, help="messages of a client/bidi stream")
    c.add_argument("--size", type=int, default=16, help="message size when --data is empty")
    c.add_argument("--metadata", action="append", default=[], help="key=value, repeatable")
    c.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args(argv)
    return _serve_main(a) if a.cmd == "serve" else _call_main(a)


if __name__ == "__main__":
    sys.exit(main())
