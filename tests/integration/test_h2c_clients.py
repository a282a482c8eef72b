#!/usr/bin/python3
"""Real HTTP/2 clients over h2c prior knowledge (codec AUTO sniffs the preface) -> magpie ->
HTTP/1.1 upstreams (nginx, mp.TestUpstream) and an HTTP/2 upstream (h2_upstream_peer):

  - nghttp -m 100: a hundred concurrent streams on one connection, each answered by nginx;
  - curl --http2-prior-knowledge: a body upload to an HTTP/1.1 upstream, a large download;
  - response trailers from an HTTP/2 upstream reach an HTTP/2 client as a trailing HEADERS
    frame with END_STREAM (nghttpd cannot send trailers, hence the python3-h2 peer)."""

import hashlib
import json
import os
import re
import subprocess

import mp
from h2_upstream_peer import H2Peer


def start(up_port, cluster_extra=""):
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up_port, cluster_extra=cluster_extra), ports={"port": port})
    return m, port


def sh(cmd, timeout=60):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout, r.stderr.decode("utf-8", "replace")


def test_nghttp_100_streams_to_nginx():
    ng = mp.Nginx()
    m, port = start(ng.port)
    rc, out, err = sh(["nghttp", "-n", "-s", "-m", "100", "http://127.0.0.1:%d/small" % port])
    mp.eq(rc, 0, "nghttp exit status (stderr %r)" % err)
    # nghttp's statistics: one row per stream, "... code size path".
    rows = re.findall(r"^\s*(\d+)\s.*\s(\d{3})\s+(\d+)\s+/small\s*$", out.decode(), re.M)
    mp.eq(len(rows), 100, "streams in nghttp's statistics")
    mp.eq({(code, size) for _, code, size in rows}, {("200", "17")},
          "every stream: 200 and nginx's 17-byte body")
    mp.eq(len({sid for sid, _, _ in rows}), 100, "distinct stream ids")
    lines = m.access_lines(100)
    mp.eq(sorted({(f["code"], f["flags"], f["path"]) for f in map(mp.parse_access, lines)}),
          [("200", "-", "/small")], "access log")
    st = m.stats()
    # All of it on one client connection, taken as HTTP/2 by the preface.
    mp.eq(st.get("http.ingress.downstream_cx_http2_total"), 1, "one HTTP/2 client connection")
    mp.eq(st.get("cluster.c1.upstream_rq_2xx"), 100, "upstream 2xx")


def test_curl_h2_upload_to_http1_upstream():
    up = mp.TestUpstream()
    m, port = start(up.port)
    d = mp.tmpdir("mp-h2c-up-")
    body = os.urandom(3 << 20) * 3  # 9 MiB, more than any window or buffer limit
    path = os.path.join(d, "body")
    with open(path, "wb") as f:
        f.write(body)
    rc, out, err = sh(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "30",
                        "--data-binary", "@" + path, "-H", "content-type: application/x-test",
                        "-w", "\n%{http_version} %{http_code}",
                        "http://127.0.0.1:%d/echo/upload" % port])
    mp.eq(rc, 0, "curl exit status (%s)" % err)
    text, _, tail = out.decode().rpartition("\n")
    mp.eq(tail, "2 200", "HTTP version and status seen by curl")
    echo = json.loads(text)
    # The HTTP/1.1 upstream got every byte, framed with a content-length or chunked.
    mp.eq((echo["method"], echo["body_len"]), ("POST", len(body)), "upstream saw the body")
    mp.eq(up.body_bytes, len(body), "bytes the upstream counted")
    f = mp.parse_access(m.access_lines(1)[-1])
    mp.eq((f["code"], f["flags"], f["rx"]), ("200", "-", str(len(body))), "access log")


def test_curl_h2_download_from_nginx():
    size = 64 << 20
    ng = mp.Nginx(files={"big": size})
    m, port = start(ng.port)
    rc, out, err = sh(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "60",
                        "-o", "/dev/null", "-w", "%{http_version} %{http_code} %{size_download}",
                        "http://127.0.0.1:%d/files/big" % port])
    mp.eq(rc, 0, "curl exit status (%s)" % err)
    mp.eq(out.decode(), "2 200 %d" % size, "version, status, bytes")
    rc, out, err = sh(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "60",
                        "http://127.0.0.1:%d/files/big" % port])
    mp.eq(hashlib.sha256(out).hexdigest(), hashlib.sha256(bytes(size)).hexdigest(),
          "content (nginx's sparse file reads as zeros)")


def test_trailers_from_h2_upstream_reach_nghttp():
    p = H2Peer()
    mp.on_cleanup(p.stop)
    m, port = start(p.port, cluster_extra="    http2_protocol_options: {}")
    rc, out, err = sh(["nghttp", "-v", "http://127.0.0.1:%d/trailers" % port])
    mp.eq(rc, 0, "nghttp exit status (%s)" % err)
    text = out.decode()
    # Frames as nghttp prints them: the response HEADERS, DATA "data\n", then a second HEADERS
    # frame carrying the trailer fields and END_STREAM.
    tr = re.search(r"recv \(stream_id=(\d+)\) x-trailer: yes", text)
    mp.check(tr, "trailer field x-trailer:\n%s" % text[-2500:])
    i_data = text.find("recv DATA frame <length=5")
    i_tr = tr.start()
    i_end = text.find("recv HEADERS frame", i_tr)
    mp.check(0 <= i_data < i_tr, "DATA before the trailers:\n%s" % text[-2500:])
    mp.check("recv (stream_id=%s) x-count: 2" % tr.group(1) in text, "second trailer field")
    mp.check(i_end > i_tr and "END_STREAM | END_HEADERS" in text[i_end:i_end + 120],
             "trailers in a HEADERS frame that ends the stream:\n%s" % text[-1500:])
    mp.check(re.search(r"\ndata\n", text), "body")
    f = mp.parse_access(m.access_lines(1)[-1])
    mp.eq((f["code"], f["flags"]), ("200", "-"), "access log")


if __name__ == "__main__":
    import run
    run.main([__file__])
