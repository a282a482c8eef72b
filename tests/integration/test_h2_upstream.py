"""HTTP/1.1 clients (curl, mp.Conn) -> magpie -> HTTP/2 upstreams (nghttpd, and h2_upstream_peer, a
python3-h2 server in this process): translation, bodies, multiplexing, GOAWAY, resets, trailers,
cancellation.  The cluster speaks HTTP/2 through `http2_protocol_options: {}`."""

import hashlib
import json
import os
import socket
import subprocess
import threading
import time

import mp
from h2_upstream_peer import H2Peer

H2 = "    http2_protocol_options: {}"


def start(up_port, **kw):
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up_port, cluster_extra=H2, **kw), ports={"port": port})
    return m, port


def last_access(m, n):
    return mp.parse_access(m.access_lines(n)[-1])


def peer():
    p = H2Peer()
    mp.on_cleanup(p.stop)
    return p


def test_nghttpd_files():
    d = mp.tmpdir("mp-h2-www-")
    big = os.urandom(1 << 20) * 20  # 20 MiB
    with open(os.path.join(d, "big"), "wb") as f:
        f.write(big)
    with open(os.path.join(d, "small.txt"), "w") as f:
        f.write("hello h2\n")
    up_port = mp.free_port()
    nghttpd = mp._register(subprocess.Popen(["nghttpd", "--no-tls", "-d", d, str(up_port)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    mp.wait_until(lambda: mp.port_open(up_port), what="nghttpd listening")
    m, port = start(up_port)
    st, body, err = mp.curl("http://127.0.0.1:%d/small.txt" % port)
    mp.eq((st, body), (200, b"hello h2\n"), "small file through HTTP/2")
    st, body, err = mp.curl("http://127.0.0.1:%d/big" % port, timeout=60)
    mp.eq(st, 200, "20 MiB status")
    mp.eq(hashlib.sha256(body).hexdigest(), hashlib.sha256(big).hexdigest(), "20 MiB sha256")
    # A client slower than the upstream: magpie withholds the stream's window while the client's
    # queue is over the limit and returns it as the queue drains; the bytes still arrive exact.
    st, body, err = mp.curl("http://127.0.0.1:%d/big" % port, "--limit-rate", "40M", timeout=60)
    mp.eq((st, hashlib.sha256(body).hexdigest()), (200, hashlib.sha256(big).hexdigest()),
          "20 MiB to a rate-limited client")
    st, body, err = mp.curl("http://127.0.0.1:%d/missing" % port)
    mp.eq(st, 404, "nghttpd's 404 passes through")
    s = m.stats()
    # One worker, sequential requests: one multiplexed connection carried all three.
    mp.eq(s.get("cluster.c1.upstream_cx_http2_total"), 1, "one HTTP/2 connection")
    mp.eq(s.get("cluster.c1.upstream_rq_2xx"), 3, "2xx counted")
    mp.stop_process(nghttpd)


def test_header_translation():
    p = peer()
    m, port = start(p.port)
    r = mp.get(port, "/echo?q=1", host="example.com:8080",
               headers=[("Connection", "keep-alive, x-drop"), ("Keep-Alive", "timeout=5"),
                        ("X-Drop", "1"), ("Cookie", "a=1; b=2;c=3"), ("TE", "trailers"),
                        ("X-Custom", "v")])
    mp.eq(r.status, 200, "status")
    j = r.json()
    mp.eq(j["authority"], "example.com:8080", "Host became :authority")
    mp.eq(j["path"], "/echo?q=1", ":path")
    mp.eq(j["scheme"], "http", ":scheme")
    names = [k for k, v in j["headers"]]
    for bad in ("connection", "keep-alive", "host", "transfer-encoding", "x-drop", "upgrade"):
        mp.check(bad not in names, "%s must not reach an HTTP/2 upstream: %r" % (bad, names))
    cookies = [v for k, v in j["headers"] if k == "cookie"]
    mp.eq(cookies, ["a=1", "b=2", "c=3"], "cookie split into crumbs (RFC 9113 8.2.3)")
    mp.check(["te", "trailers"] in j["headers"], "te: trailers kept")
    mp.check(["x-custom", "v"] in j["headers"], "ordinary header forwarded")
    mp.eq(r.header("content-type"), "application/json", "response header back to HTTP/1.1")


def test_request_bodies():
    p = peer()
    m, port = start(p.port)
    d = mp.tmpdir("mp-h2-body-")
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = os.path.join(d, "body")
    with open(path, "wb") as f:
        f.write(data)
    want = hashlib.sha256(data).hexdigest()
    url = "http://127.0.0.1:%d/echo" % port
    st, body, err = mp.curl(url, "--data-binary", "@" + path, "-H",
                            "Transfer-Encoding: chunked", "-H", "Expect:", timeout=60)
    mp.eq(st, 200, "chunked upload status (%s)" % err)
    j = json.loads(body)
    mp.eq((j["body_len"], j["body_sha256"]), (len(data), want), "chunked upload arrived exact")
    mp.check(["content-length", str(len(data))] not in j["headers"], "no invented length")
    st, body, err = mp.curl(url, "--data-binary", "@" + path, "-H", "Expect:", timeout=60)
    j = json.loads(body)
    mp.eq((st, j["body_len"], j["body_sha256"]), (200, len(data), want),
          "content-length upload arrived exact")
    mp.check(["content-length", str(len(data))] in j["headers"], "content-length forwarded")


def test_multiplexed_on_one_connection():
    p = peer()
    m, port = start(p.port)
    results, errors = [], []

    def client():
        try:
            with mp.Conn(port) as c:
                for _ in range(3):
                    r = c.request("GET", "/delay/100")
                    results.append((r.status, r.json()["conn"]))
        except Exception as e:  # reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=client) for _ in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    mp.eq(errors, [], "client errors")
    mp.eq(len(results), 60, "responses")
    mp.check(all(s == 200 for s, c in results), "all 200")
    # 20 concurrent streams fit the server's limit (100): one connection carries them all.
    mp.eq(p.connections, 1, "upstream connections")
    mp.eq(m.stats().get("cluster.c1.upstream_cx_total"), 1, "magpie opened one connection")


def test_server_stream_limit_opens_more_connections():
    p = H2Peer(max_streams=1)
    mp.on_cleanup(p.stop)
    m, port = start(p.port)
    results = []

    def client():
        r = mp.get(port, "/delay/400")
        results.append((r.status, r.json()["conn"]))

    ts = [threading.Thread(target=client) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    mp.eq(sorted(s for s, c in results), [200, 200, 200], "statuses")
    # SETTINGS_MAX_CONCURRENT_STREAMS=1: three concurrent requests need three connections.
    mp.eq(len(set(c for s, c in results)), 3, "distinct upstream connections")
    mp.eq(p.connections, 3, "accepted connections")


def test_goaway_refuses_later_streams_and_finishes_earlier_ones():
    p = peer()
    m, port = start(p.port)
    first = []
    t = threading.Thread(target=lambda: first.append(mp.get(port, "/delay/600")))
    t.start()
    mp.wait_until(lambda: p.requests >= 1, what="first request at the upstream")
    r = mp.get(port, "/goaway")
    # Stream 3 is above GOAWAY's last_stream_id 1: never processed, answered 503 UC.
    mp.eq(r.status, 503, "stream refused by GOAWAY")
    t.join(10)
    mp.eq(first[0].status, 200, "stream at or below last_stream_id completes")
    r = mp.get(port, "/echo")
    mp.eq(r.status, 200, "next request after GOAWAY")
    mp.eq(r.json()["conn"], 2, "the draining connection took no new stream")
    lines = [mp.parse_access(l) for l in m.access_lines(3)]
    refused = [l for l in lines if l["path"] == "/goaway"][0]
    mp.eq((refused["code"], refused["flags"]), ("503", "UC"), "access log of the refused stream")
    # The draining connection closes once its last stream is done.
    mp.wait_until(lambda: m.stats().get("cluster.c1.upstream_cx_destroy", 0) >= 1,
                  what="drained connection closed")


def test_rst_stream_before_headers_is_503_uc():
    p = peer()
    m, port = start(p.port)
    mp.eq(mp.get(port, "/rst_before").status, 503, "RST_STREAM before headers")
    f = last_access(m, 1)
    mp.eq((f["code"], f["flags"]), ("503", "UC"), "access log")
    mp.eq(mp.get(port, "/refuse").status, 503, "REFUSED_STREAM")
    f = last_access(m, 2)
    mp.eq((f["code"], f["flags"]), ("503", "UC"), "access log (refused)")
    r = mp.get(port, "/echo")
    mp.eq((r.status, r.json()["conn"]), (200, 1), "the connection survives stream resets")


def test_rst_stream_after_headers_truncates():
    p = peer()
    m, port = start(p.port)
    st, body, err = mp.curl("http://127.0.0.1:%d/rst_after" % port)
    # The head went out as 200: the client must see a truncated response, never a complete one.
    mp.eq(st, 200, "status line already sent")
    mp.check(len(body) < 100000, "body truncated (%d bytes)" % len(body))
    mp.check(err != "", "curl reports the truncation")
    f = last_access(m, 1)
    mp.eq((f["code"], f["flags"]), ("200", "UC"), "access log")


def test_connect_failure_is_503_uf():
    m, port = start(mp.refused_port())
    mp.eq(mp.get(port, "/x").status, 503, "status")
    f = last_access(m, 1)
    mp.eq((f["code"], f["flags"]), ("503", "UF"), "access log")
    mp.check(m.stats().get("cluster.c1.upstream_cx_connect_fail", 0) >= 1, "connect_fail")


def test_trailers_reach_chunked_client():
    p = peer()
    m, port = start(p.port)
    r = subprocess.run(["curl", "-s", "--raw", "-H", "TE: trailers", "--max-time", "10",
                        "http://127.0.0.1:%d/trailers" % port], stdout=subprocess.PIPE,
                       timeout=15)
    out = r.stdout.decode()
    mp.check("data\n" in out, "body: %r" % out)
    mp.check("x-trailer: yes\r\n" in out and "x-count: 2\r\n" in out, "trailers: %r" % out)
    mp.check(out.endswith("\r\n\r\n"), "chunked framing ends properly: %r" % out)


def test_client_disconnect_cancels_upstream_stream():
    p = peer()
    m, port = start(p.port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    got = b""
    while len(got) < 40000:
        d = s.recv(65536)
        mp.check(d, "response ended early")
        got += d
    s.close()
    # The downstream went away mid-response: the upstream stream is cancelled (CANCEL = 8).
    mp.wait_until(lambda: any(e == 8 for c, sid, e in p.resets), timeout=5,
                  what="RST_STREAM(CANCEL) at the upstream")
    r = mp.get(port, "/echo")
    mp.eq((r.status, r.json()["conn"]), (200, 1), "connection still used after the cancel")


if __name__ == "__main__":
    import run
    run.main([__file__])
