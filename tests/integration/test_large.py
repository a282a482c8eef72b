"""magpie streaming (issue 2 item 8) <-> nginx (1 GiB sparse file download) and the Python
upstream (1 GiB upload, discarded on arrival).  Bodies are generated and dropped on the fly, so
the only large memory in play would be magpie's: its VmHWM must stay under 16 MiB.  Under the
sanitizer build the size drops to 64 MiB and the RSS bound is not asserted (ASan's shadow memory
is not ours); the stream integrity checks still run."""

import socket
import time

import mp

SIZE = (64 << 20) if mp.SANITIZED else (1 << 30)
HWM_LIMIT = 16 << 20


def _magpie(up_port):
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up_port), ports={"port": port}, concurrency=2)
    return m, port


def _check_hwm(m, what):
    hwm = m.hwm()
    if not mp.SANITIZED:
        mp.check(hwm < HWM_LIMIT, "%s: magpie VmHWM %.1f MiB >= 16 MiB" % (what, hwm / 2**20))
    print("    %s: %d MiB in, VmHWM %.1f MiB" % (what, SIZE >> 20, hwm / 2**20))


def _read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise mp.TestFailure("closed before the response head: %r" % buf[:200])
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def test_download_1gib_via_nginx():
    ng = mp.Nginx(files={"big": SIZE})
    m, port = _magpie(ng.port)
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"GET /files/big HTTP/1.1\r\nHost: t\r\n\r\n")
    head, rest = _read_head(s)
    mp.check(head.startswith("HTTP/1.1 200"), "head %r" % head[:200])
    got = len(rest)
    buf = bytearray(1 << 20)
    t0 = time.monotonic()
    while got < SIZE:
        n = s.recv_into(buf)
        if not n:
            break
        got += n
    s.close()
    mp.eq(got, SIZE, "bytes received")
    _check_hwm(m, "download %.1fs" % (time.monotonic() - t0))


test_download_1gib_via_nginx.timeout = 300


def test_upload_1gib_to_python_upstream():
    up = mp.TestUpstream()
    m, port = _magpie(up.port)
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % SIZE)
    block = memoryview(b"u" * (1 << 20))
    t0 = time.monotonic()
    left = SIZE
    while left:
        n = min(left, len(block))
        s.sendall(block[:n])
        left -= n
    head, rest = _read_head(s)
    mp.check(head.startswith("HTTP/1.1 200"), "head %r" % head[:200])
    s.close()
    # The upstream counted every byte: nothing lost or duplicated in the stream.
    mp.eq(up.body_bytes, SIZE, "bytes the upstream received")
    _check_hwm(m, "upload %.1fs" % (time.monotonic() - t0))


test_upload_1gib_to_python_upstream.timeout = 300


def test_chunked_download_64mib():
    up = mp.TestUpstream()
    m, port = _magpie(up.port)
    code, body, err = mp.curl("http://127.0.0.1:%d/bytes/%d?chunked=1" % (port, 64 << 20))
    mp.eq((code, len(body)), (200, 64 << 20), "chunked 64 MiB " + err)


if __name__ == "__main__":
    import run
    run.main([__file__])
