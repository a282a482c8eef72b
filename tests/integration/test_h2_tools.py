#!/usr/bin/python3
"""The HTTP/2 and gRPC test tools themselves, against real peers (no magpie needed):

  - h2raw's abuse scenarios against nghttpd (nghttp2-server): each must produce the answer
    recorded in docs/http2-abuse.md, and nghttpd must still serve a fresh request afterwards.
    This is what keeps the client side of test_h2_abuse.py honest.
  - grpc_peer's Echo service through its own client: every method, status codes from
    x-fail-code, initial and trailing metadata (including a -bin trailer), deadlines.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
import grpc_peer  # noqa: E402
import h2raw  # noqa: E402
import mp  # noqa: E402

# nghttpd 1.52 (Debian 12) as observed; "closed" means the server dropped the connection
# while we were still sending, so a GOAWAY may or may not reach us first.
NGHTTPD = {
    "baseline": "status:200",
    "even_stream_id": "goaway:PROTOCOL_ERROR",
    "stream_id_decrease": "nothing",
    "data_idle_stream": "goaway:PROTOCOL_ERROR",
    "headers_stream_zero": "goaway:PROTOCOL_ERROR",
    "hpack_huge_table_update": "goaway:COMPRESSION_ERROR",
    "hpack_late_table_update": "goaway:COMPRESSION_ERROR",
    "hpack_bad_index": "goaway:COMPRESSION_ERROR",
    "hpack_index_bomb": "rst:INTERNAL_ERROR",
    "header_overflow": "rst:INTERNAL_ERROR",
    "continuation_flood": "closed",
    "continuation_flood_empty": "closed",
    "interleaved_header_block": "goaway:PROTOCOL_ERROR",
    "ping_flood": "closed",
    "settings_flood": "closed",
    "priority_flood": "nothing",
    "empty_data_flood": "nothing",
    "rapid_reset": "goaway:INTERNAL_ERROR",
    "provoked_reset_flood": "rst:PROTOCOL_ERROR",
    "pseudo_unknown": "rst:PROTOCOL_ERROR",
    "pseudo_after_regular": "rst:PROTOCOL_ERROR",
    "pseudo_missing_path": "rst:PROTOCOL_ERROR",
    "pseudo_duplicate": "rst:PROTOCOL_ERROR",
    "pseudo_empty_path": "rst:PROTOCOL_ERROR",
    "pseudo_status_in_request": "rst:PROTOCOL_ERROR",
    "uppercase_name": "rst:PROTOCOL_ERROR",
    "crlf_in_value": "rst:PROTOCOL_ERROR",
    "conn_header_connection": "rst:PROTOCOL_ERROR",
    "conn_header_te_gzip": "rst:PROTOCOL_ERROR",
    "conn_header_transfer_encoding": "rst:PROTOCOL_ERROR",
    "conn_header_upgrade": "rst:PROTOCOL_ERROR",
    "conn_header_keep_alive": "rst:PROTOCOL_ERROR",
    "conn_header_proxy_connection": "rst:PROTOCOL_ERROR",
    "te_trailers_allowed": "status:200",
    "content_length_mismatch": "rst:PROTOCOL_ERROR",
    "oversized_frame": "goaway:FRAME_SIZE_ERROR",
    "ping_bad_length": "goaway:FRAME_SIZE_ERROR",
    "window_overflow": "goaway:FLOW_CONTROL_ERROR",
    "client_push_promise": "goaway:PROTOCOL_ERROR",
    "client_reset": "status:200",
}


def start_nghttpd():
    d = mp.tmpdir("mp-nghttpd-")
    with open(os.path.join(d, "index.html"), "w") as f:
        f.write("hello from nghttpd\n")
    port = mp.free_port()
    p = mp._register(subprocess.Popen(["nghttpd", "--no-tls", "-d", d, str(port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      stdin=subprocess.DEVNULL, cwd=d))
    mp.wait_until(lambda: mp.port_open(port) or p.poll() is not None, 10, what="nghttpd")
    mp.check(p.poll() is None, "nghttpd exited with %s" % p.returncode)
    return p, port


def test_h2raw_scenarios_against_nghttpd():
    p, port = start_nghttpd()
    mp.eq(h2raw.good_request("127.0.0.1", port, "/index.html"), 200, "nghttpd baseline")
    mp.eq(sorted(NGHTTPD), sorted(s.name for s in h2raw.SCENARIOS), "scenarios recorded")
    wrong = []
    for sc in h2raw.SCENARIOS:
        o = sc.run("127.0.0.1", port, "/index.html")
        want = NGHTTPD[sc.name]
        got = o.kind()
        if got != want and not (want == "closed" and got.startswith("goaway:")):
            wrong.append("%s: got %s, recorded %s (%r)" % (sc.name, got, want, o))
        after = h2raw.good_request("127.0.0.1", port, "/index.html")
        if after != 200:
            wrong.append("%s: fresh request afterwards got %r" % (sc.name, after))
    mp.check(p.poll() is None, "nghttpd died")
    mp.check(not wrong, "\n".join(wrong))


test_h2raw_scenarios_against_nghttpd.timeout = 400


def test_h2raw_goaway_decoding():
    # The decoded GOAWAY carries the last stream id nghttpd processed (1) and its code.
    p, port = start_nghttpd()
    with h2raw.Conn("127.0.0.1", port).start() as c:
        c.send(h2raw.headers(1, h2raw.hp_block(h2raw.request_fields("/index.html"))))
        c.read_until(lambda o: 1 in o.ended, 5)
        mp.eq(c.outcome.statuses.get(1), 200, "status of stream 1")
        c.send(h2raw.frame(h2raw.PING, 0, 0, b"abc"))
        o = h2raw.verdict(c)
    mp.eq(o.goaway[:2], (1, "FRAME_SIZE_ERROR"), "GOAWAY (last stream, code)")


def test_grpc_peer_methods():
    with grpc_peer.Server() as s:
        t = s.target
        resp, call = grpc_peer.call(t, "Unary", b"hello")
        mp.eq(resp, b"hello", "Unary echo")
        mp.eq(dict(call.initial_metadata()).get("x-echo-initial"), "1", "initial metadata")
        tr = dict(call.trailing_metadata())
        mp.eq((tr.get("x-echo-trailer"), tr.get("x-echo-bin")), ("5", b"\x00\x01\xfe\xff"),
              "trailing metadata")
        try:
            grpc_peer.call(t, "Unary", b"x", metadata=[("x-fail-code", "7")])
            raise mp.TestFailure("x-fail-code 7 did not fail")
        except grpc.RpcError as e:
            mp.eq(e.code(), grpc.StatusCode.PERMISSION_DENIED, "status from x-fail-code")
            mp.eq(e.details(), "x-fail-code 7 requested", "status message")
            mp.eq(dict(e.trailing_metadata()).get("x-echo-trailer"), "1", "trailer on error")
        msgs, _ = grpc_peer.call(t, "ServerStream", b"4:1000")
        mp.eq([len(m) for m in msgs], [1000] * 4, "ServerStream sizes")
        mp.eq(grpc_peer.call(t, "ClientStream", [b"a" * 10, b"b" * 20])[0], b"30", "ClientStream")
        mp.eq(grpc_peer.call(t, "Bidi", [b"1", b"22", b"333"])[0], [b"1", b"22", b"333"],
              "Bidi")
        try:
            grpc_peer.call(t, "Sleep", b"5000", timeout=0.3)
            raise mp.TestFailure("Sleep 5000 with a 0.3 s deadline succeeded")
        except grpc.RpcError as e:
            mp.eq(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, "Sleep past the deadline")
        mp.eq(grpc_peer.call(t, "Sleep", b"10")[0], b"slept 10", "Sleep within the deadline")
        got, msgs, _ = grpc_peer.big_download(t, 10 * 2**20 + 1)
        mp.eq((got, msgs), (10 * 2**20 + 1, 161), "Big: bytes and 64 KiB messages")
        mp.eq(grpc_peer.big_upload(t, 10 * 2**20 + 7), 10 * 2**20 + 7, "BigUp count")
        mp.eq(s.calls.get("Unary"), 2, "Unary calls counted")


def test_grpc_peer_subprocess():
    p, port = grpc_peer.start_subprocess()
    mp.eq(grpc_peer.call("127.0.0.1:%d" % port, "Unary", b"sub")[0], b"sub", "echo")
    mp.eq(mp.stop_process(p), 0, "serve exits 0 on SIGTERM")


if __name__ == "__main__":
    import run
    run.main([__file__])
