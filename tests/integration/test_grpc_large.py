#!/usr/bin/python3
"""1 GiB through magpie over gRPC, HTTP/2 on both sides (issue 3 "Done when": magpie's peak RSS
stays under 16 MiB).  grpcio client in this process -> magpie (h2c) -> grpc_peer serving in a
child process (so client and server do not share a GIL).  Big streams 1 GiB down in 64 KiB
messages, BigUp counts 1 GiB sent up; nothing is kept, so the only large memory would be
magpie's, read as VmHWM from /proc.  Under the sanitizer build the size drops to 64 MiB and the
RSS bound is not asserted (ASan's shadow memory is not ours); the byte counts still are."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
import grpc_peer  # noqa: E402
import mp  # noqa: E402

SIZE = (64 << 20) if mp.SANITIZED else (1 << 30)
HWM_LIMIT = 16 << 20
H2 = "    http2_protocol_options: {}"


def _magpie():
    _, up_port = grpc_peer.start_subprocess()
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up_port, cluster_extra=H2), ports={"port": port},
                  concurrency=2)
    return m, "127.0.0.1:%d" % port


def _check_hwm(m, what, secs):
    hwm = m.hwm()
    print("    %s: %d MiB in %.1fs (%.0f MiB/s), magpie VmHWM %.1f MiB"
          % (what, SIZE >> 20, secs, (SIZE >> 20) / secs, hwm / 2**20))
    if not mp.SANITIZED:
        mp.check(hwm < HWM_LIMIT, "%s: magpie VmHWM %.1f MiB >= 16 MiB" % (what, hwm / 2**20))


def test_grpc_server_stream_1gib():
    m, t = _magpie()
    t0 = time.monotonic()
    got, msgs, call = grpc_peer.big_download(t, SIZE, timeout=240)
    secs = time.monotonic() - t0
    mp.eq(call.code(), grpc.StatusCode.OK, "status")
    mp.eq(got, SIZE, "bytes received")
    mp.eq(msgs, (SIZE + grpc_peer.CHUNK - 1) // grpc_peer.CHUNK, "messages received")
    _check_hwm(m, "gRPC server stream", secs)
    f = mp.parse_access(m.access_lines(1)[-1])
    mp.eq((f["code"], f["flags"]), ("200", "-"), "access log")
    # Each message carries a 5-byte gRPC frame header on the wire.
    mp.eq(int(f["tx"]), SIZE + 5 * msgs, "bytes sent to the client, with gRPC framing")


test_grpc_server_stream_1gib.timeout = 300


def test_grpc_client_stream_1gib():
    m, t = _magpie()
    t0 = time.monotonic()
    counted = grpc_peer.big_upload(t, SIZE, timeout=240)
    secs = time.monotonic() - t0
    mp.eq(counted, SIZE, "bytes the server counted")
    _check_hwm(m, "gRPC client stream", secs)
    msgs = (SIZE + grpc_peer.CHUNK - 1) // grpc_peer.CHUNK
    f = mp.parse_access(m.access_lines(1)[-1])
    mp.eq((f["code"], f["flags"]), ("200", "-"), "access log")
    mp.eq(int(f["rx"]), SIZE + 5 * msgs, "bytes received from the client, with gRPC framing")


test_grpc_client_stream_1gib.timeout = 300


def test_grpc_stalled_client_bounds_magpie():
    """The client stops reading for a second after its first message while the server could
    send a gibibyte: the client's window fills, magpie's queue toward it passes the limit and
    magpie stops granting the upstream stream window, so its memory stays flat; then the rest
    arrives intact."""
    m, t = _magpie()
    t0 = time.monotonic()
    with grpc_peer.channel(t) as ch:
        it = ch.unary_stream(grpc_peer.path("Big"))(str(SIZE).encode(), timeout=240)
        got = len(next(it))
        # A deliberate stall of the consumer (not a wait for a server): sample magpie meanwhile.
        stall_end = time.monotonic() + 1.0
        rss = []
        while time.monotonic() < stall_end:
            rss.append(m.rss())
            time.sleep(0.05)
        for msg in it:
            got += len(msg)
        mp.eq(it.code(), grpc.StatusCode.OK, "status")
    mp.eq(got, SIZE, "bytes received after the stall")
    print("    stalled: RSS during the stall %.1f..%.1f MiB" % (min(rss) / 2**20, max(rss) / 2**20))
    _check_hwm(m, "gRPC server stream, stalled client", time.monotonic() - t0)


test_grpc_stalled_client_bounds_magpie.timeout = 300


if __name__ == "__main__":
    import run
    run.main([__file__])
