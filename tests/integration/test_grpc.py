#!/usr/bin/python3
"""gRPC end to end: grpcio client (python3-grpcio) -> magpie (h2c, codec AUTO) -> grpcio server
(grpc_peer.Server, cluster over HTTP/2).  Every call shape, metadata and trailers, status codes
from the server, deadlines and cancellation, magpie's own gRPC answers (UF, NR, UT, DT) with
their grpc-status, grpc-timeout and max_stream_duration, and many calls on one channel."""

import concurrent.futures
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
import grpc_peer  # noqa: E402
import mp  # noqa: E402

H2 = "    http2_protocol_options: {}"
SVC = "/magpie.test.Echo/"


def start(up_port, routes=None, hcm_extra="", concurrency=1):
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up_port, routes=routes, cluster_extra=H2,
                                   hcm_extra=hcm_extra),
                  ports={"port": port}, concurrency=concurrency)
    return m, "127.0.0.1:%d" % port


def server():
    return grpc_peer.Server()


def route(extra="", prefix="/"):
    """One route to c1; extra is YAML inside `route:` (indented 18)."""
    r = ("              - match: {prefix: \"%s\"}\n"
         "                route:\n"
         "                  cluster: c1\n" % prefix)
    return r + "".join("                  %s\n" % l for l in extra.splitlines() if l)


def fails(fn, code, what):
    """Runs fn, which must raise a grpc.RpcError with code; returns the error."""
    try:
        fn()
    except grpc.RpcError as e:
        mp.eq(e.code(), code, what)
        return e
    raise mp.TestFailure("%s: the call succeeded, want %s" % (what, code))


def last_access(m, n):
    return mp.parse_access(m.access_lines(n)[-1])


def test_unary_metadata_and_trailers():
    s = server()
    m, t = start(s.port)
    md = [("x-custom", "abc"), ("x-custom-bin", b"\x00\xffbin")]
    resp, call = grpc_peer.call(t, "Unary", b"hello grpc", metadata=md)
    mp.eq(resp, b"hello grpc", "echoed request bytes")
    mp.eq(call.code(), grpc.StatusCode.OK, "status")
    # Request metadata, including a binary (-bin, base64 on the wire) entry, reached the server.
    seen = dict(s.echo.last_metadata["Unary"])
    mp.eq((seen.get("x-custom"), seen.get("x-custom-bin")), ("abc", b"\x00\xffbin"),
          "request metadata at the server")
    mp.eq(dict(call.initial_metadata()).get("x-echo-initial"), "1", "initial metadata")
    tr = dict(call.trailing_metadata())
    # Trailers are an HTTP/2 HEADERS frame after the data: magpie relays them as trailers.
    mp.eq(tr.get("x-echo-trailer"), "10", "text trailer")
    mp.eq(tr.get("x-echo-bin"), b"\x00\x01\xfe\xff", "binary -bin trailer decoded intact")
    f = last_access(m, 1)
    mp.eq((f["code"], f["flags"], f["path"]), ("200", "-", SVC + "Unary"), "access log")


def test_server_streaming_100_messages():
    s = server()
    m, t = start(s.port)
    msgs, call = grpc_peer.call(t, "ServerStream", b"100:1000")
    mp.eq(len(msgs), 100, "messages")
    mp.check(all(x == b"s" * 1000 for x in msgs), "every message intact")
    mp.eq(call.code(), grpc.StatusCode.OK, "status")


def test_client_streaming():
    s = server()
    m, t = start(s.port)
    reqs = [bytes([65 + i % 26]) * (i * 37 % 5000) for i in range(200)]
    resp, call = grpc_peer.call(t, "ClientStream", reqs)
    mp.eq(resp, str(sum(len(r) for r in reqs)).encode(), "sum of request lengths")


def test_bidi_interleaved():
    """Send one, read one, 50 times: each reply must arrive before the next request is sent,
    so magpie may not hold back a message until the stream ends in either direction."""
    s = server()
    m, t = start(s.port)
    import queue
    q = queue.Queue()

    def reqs():
        for i in range(50):
            yield b"msg-%d" % i
            # Bounded wait for the echo of this message before sending the next.
            q.get(timeout=5)
    with grpc_peer.channel(t) as ch:
        it = ch.stream_stream(grpc_peer.path("Bidi"))(reqs(), timeout=20)
        got = []
        for r in it:
            got.append(r)
            q.put(1)
        mp.eq(got, [b"msg-%d" % i for i in range(50)], "echoes in order")
        mp.eq(it.code(), grpc.StatusCode.OK, "status")


def test_server_error_status_passes_through():
    s = server()
    m, t = start(s.port)
    e = fails(lambda: grpc_peer.call(t, "Unary", b"x", metadata=[("x-fail-code", "5")]),
              grpc.StatusCode.NOT_FOUND, "x-fail-code 5")
    mp.eq(e.details(), "x-fail-code 5 requested", "grpc-message")
    # The server set trailers before failing: they arrive with the error.
    mp.eq(dict(e.trailing_metadata()).get("x-echo-bin"), b"\x00\x01\xfe\xff", "trailer on error")
    f = last_access(m, 1)
    mp.eq((f["code"], f["flags"]), ("200", "-"), "an upstream gRPC error is not magpie's")


def test_client_deadline_cancels_upstream():
    s = server()
    m, t = start(s.port)
    t0 = time.monotonic()
    fails(lambda: grpc_peer.call(t, "Sleep", b"3000", timeout=0.3),
          grpc.StatusCode.DEADLINE_EXCEEDED, "client deadline")
    took = time.monotonic() - t0
    mp.check(took < 1.5, "DEADLINE_EXCEEDED after %.2fs, want about 0.3s" % took)
    # The client reset its stream; magpie reset the upstream one, so the server saw its call
    # cancelled long before the 3 s sleep was over.
    mp.wait_until(lambda: s.calls.get("Sleep.cancelled"), timeout=2.5,
                  what="the upstream Sleep cancelled")
    mp.wait_until(lambda: m.stats().get("cluster.c1.upstream_rq_active") == 0, timeout=2,
                  what="no active upstream request")


def test_no_upstream_is_unavailable_uf():
    m, t = start(mp.refused_port())
    e = fails(lambda: grpc_peer.call(t, "Unary", b"x"), grpc.StatusCode.UNAVAILABLE,
              "closed port")
    mp.check(e.details(), "a grpc-message explains it: %r" % e.details())
    f = last_access(m, 1)
    # gRPC local replies are HTTP 200 with grpc-status 14; the flag says why.
    mp.eq((f["code"], f["flags"]), ("200", "UF"), "access log")


def test_no_route_is_unimplemented_nr():
    s = server()
    m, t = start(s.port, routes=route(prefix="/other.Service/"))
    fails(lambda: grpc_peer.call(t, "Unary", b"x"), grpc.StatusCode.UNIMPLEMENTED, "no route")
    f = last_access(m, 1)
    mp.eq((f["code"], f["flags"]), ("200", "NR"), "access log")
    mp.eq(s.calls.get("Unary"), None, "the server never saw it")


def test_route_timeout_is_deadline_exceeded_ut():
    s = server()
    m, t = start(s.port, routes=route("timeout: 0.2s"))
    t0 = time.monotonic()
    fails(lambda: grpc_peer.call(t, "Sleep", b"2000", timeout=10),
          grpc.StatusCode.DEADLINE_EXCEEDED, "route timeout")
    took = time.monotonic() - t0
    mp.check(0.15 < took < 1.5, "answered after %.2fs, want about 0.2s" % took)
    f = last_access(m, 1)
    mp.eq((f["code"], f["flags"]), ("200", "UT"), "access log")
    mp.wait_until(lambda: s.calls.get("Sleep.cancelled"), timeout=2.5,
                  what="the upstream Sleep cancelled")
    mp.eq(m.stats().get("cluster.c1.upstream_rq_timeout"), 1, "upstream_rq_timeout")


def test_many_concurrent_calls_one_channel():
    s = server()
    m, t = start(s.port)
    with grpc_peer.channel(t) as ch:
        stub = ch.unary_unary(grpc_peer.path("Unary"))

        def one(i):
            body = b"call-%d-" % i + b"z" * (i % 300)
            return stub(body, timeout=20) == body
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            ok = list(ex.map(one, range(200)))
    mp.eq(sum(ok), 200, "calls echoed")
    mp.eq(s.calls.get("Unary"), 200, "calls at the server")
    st = m.stats()
    # One worker multiplexes everything: the HTTP/2 pool opens few connections.
    mp.check(st.get("cluster.c1.upstream_cx_total", 99) <= 2,
             "upstream connections: %r" % st.get("cluster.c1.upstream_cx_total"))
    mp.eq(st.get("cluster.c1.upstream_rq_2xx"), 200, "upstream 2xx")


test_many_concurrent_calls_one_channel.timeout = 120


# ---------------------------------------------------------------- grpc-timeout, max_stream_duration

# With the route's max_stream_duration message, magpie lowers the grpc-timeout it forwards to its
# own limit, so the server's deadline and magpie's expire at (nearly) the same moment: either may
# answer first.  Those tests accept DT (magpie answered) or "-" (the server's DEADLINE_EXCEEDED
# came first) and check the rewritten header instead; the HCM-level test below, where nothing is
# rewritten, requires DT.
RACING = ("DT", "-")


def test_grpc_timeout_header_honoured_with_cap_and_offset():
    """grpc_timeout_header_max set: the limit is min(grpc-timeout, max) - offset.  The client
    asks 5 s, the cap is 0.5 s and the offset 0.1 s: the call ends DEADLINE_EXCEEDED after about
    0.4 s, before the client's own deadline, and the server is told 0.4 s in grpc-timeout."""
    s = server()
    m, t = start(s.port, routes=route(
        "max_stream_duration: {grpc_timeout_header_max: 0.5s, grpc_timeout_header_offset: 0.1s}"))
    t0 = time.monotonic()
    fails(lambda: grpc_peer.call(t, "Sleep", b"3000", timeout=5),
          grpc.StatusCode.DEADLINE_EXCEEDED, "capped grpc-timeout")
    took = time.monotonic() - t0
    mp.check(0.3 < took < 1.5, "answered after %.2fs, want about 0.4s" % took)
    f = last_access(m, 1)
    mp.check((f["code"], f["flags"]) in [("200", x) for x in RACING], "access log %r" % f)
    rem = s.time_remaining.get("Sleep")
    mp.check(rem is not None and 0.2 < rem < 0.45, "server's time_remaining %r" % rem)
    mp.wait_until(lambda: s.calls.get("Sleep.cancelled"), timeout=2.5,
                  what="the upstream Sleep ended early")
    # A call within the limit is untouched.
    mp.eq(grpc_peer.call(t, "Sleep", b"10", timeout=5)[0], b"slept 10", "short call")
    # Without a grpc-timeout header the cap is no limit (Envoy: max_stream_duration, absent
    # here, would apply instead): a 0.7 s call outlives the 0.5 s cap.
    mp.eq(grpc_peer.call(t, "Sleep", b"700", timeout=None)[0], b"slept 700", "no header")


def test_grpc_timeout_uncapped_and_ignored():
    s = server()
    # max 0: no cap, the header alone decides (client 0.3 s, offset 0).
    m, t = start(s.port, routes=route("max_stream_duration: {grpc_timeout_header_max: 0s}"))
    fails(lambda: grpc_peer.call(t, "Sleep", b"2000", timeout=0.3),
          grpc.StatusCode.DEADLINE_EXCEEDED, "uncapped header")
    rem = s.time_remaining.get("Sleep")
    mp.check(rem is not None and rem < 0.35, "server's time_remaining %r" % rem)
    m.stop()
    # Without grpc_timeout_header_max the header is ignored: max_stream_duration (0.3 s)
    # limits a call whose client allows 5 s, and the forwarded grpc-timeout says 0.3 s.
    s2 = server()
    m, t = start(s2.port, routes=route("max_stream_duration: {max_stream_duration: 0.3s}"))
    t0 = time.monotonic()
    fails(lambda: grpc_peer.call(t, "Sleep", b"2000", timeout=5),
          grpc.StatusCode.DEADLINE_EXCEEDED, "max_stream_duration")
    took = time.monotonic() - t0
    mp.check(0.2 < took < 1.5, "answered after %.2fs, want about 0.3s" % took)
    f = last_access(m, 1)
    mp.check((f["code"], f["flags"]) in [("200", x) for x in RACING], "access log %r" % f)
    rem = s2.time_remaining.get("Sleep")
    mp.check(rem is not None and rem < 0.35, "server's time_remaining %r" % rem)


def test_route_with_stream_duration_drops_route_timeout():
    """Envoy's "new timeouts": a route with a max_stream_duration message has no route timeout,
    so `timeout: 0.2s` does not end a 0.6 s call (max_stream_duration 0s: no limit either)."""
    s = server()
    m, t = start(s.port, routes=route("timeout: 0.2s\n"
                                      "max_stream_duration: {max_stream_duration: 0s}"))
    mp.eq(grpc_peer.call(t, "Sleep", b"600", timeout=5)[0], b"slept 600", "call completes")
    f = last_access(m, 1)
    mp.eq((f["code"], f["flags"]), ("200", "-"), "access log")


def test_hcm_max_stream_duration_grpc_is_dt():
    """The HCM's max_stream_duration applies to a route without the message; grpc-timeout is
    forwarded as the client sent it (5 s), so magpie's 0.3 s limit answers: DEADLINE_EXCEEDED
    with magpie's message, flag DT, the upstream call cancelled."""
    s = server()
    m, t = start(s.port, hcm_extra="          common_http_protocol_options: "
                                   "{max_stream_duration: 0.3s}")
    t0 = time.monotonic()
    e = fails(lambda: grpc_peer.call(t, "Sleep", b"3000", timeout=5),
              grpc.StatusCode.DEADLINE_EXCEEDED, "HCM max_stream_duration")
    took = time.monotonic() - t0
    mp.check(0.2 < took < 1.5, "answered after %.2fs, want about 0.3s" % took)
    mp.eq(e.details(), "downstream duration timeout", "magpie's grpc-message")
    f = last_access(m, 1)
    mp.eq((f["code"], f["flags"]), ("200", "DT"), "access log")
    rem = s.time_remaining.get("Sleep")
    mp.check(rem is not None and rem > 4, "grpc-timeout forwarded unchanged: %r" % rem)
    mp.wait_until(lambda: s.calls.get("Sleep.cancelled"), timeout=2.5,
                  what="the upstream Sleep cancelled")
    mp.eq(m.stats().get("http.ingress.downstream_rq_max_duration_reached"), 1,
          "downstream_rq_max_duration_reached")


def test_hcm_max_stream_duration_plain_http():
    """The HCM's common_http_protocol_options.max_stream_duration applies to every stream; a
    plain HTTP request gets 504 (request complete) with flag DT, and the upstream stream is reset."""
    from h2_upstream_peer import H2Peer
    p = H2Peer()
    mp.on_cleanup(p.stop)
    port = mp.free_port()
    cfg = mp.simple_config(p.port, cluster_extra=H2,
                           hcm_extra="          common_http_protocol_options: "
                                     "{max_stream_duration: 0.3s}")
    m = mp.Magpie(cfg, ports={"port": port})
    t0 = time.monotonic()
    r = mp.get(port, "/delay/3000")
    took = time.monotonic() - t0
    mp.eq(r.status, 504, "status")
    mp.check(took < 1.5, "answered after %.2fs" % took)
    f = last_access(m, 1)
    mp.eq((f["code"], f["flags"]), ("504", "DT"), "access log")
    mp.wait_until(lambda: any(e == 8 for c, sid, e in p.resets), timeout=3,
                  what="RST_STREAM(CANCEL) at the upstream")
    mp.eq(mp.get(port, "/echo").status, 200, "a quick request is unaffected")


if __name__ == "__main__":
    import run
    run.main([__file__])
