"""magpie <-> raw-socket attacker / Python test upstream: hostile-inputs.md section 4.1, the
HTTP/1.1 cases.  For every rejected request we assert (1) the status, (2) that magpie closed the
connection, (3) that nothing reached the upstream (its request counter stays 0), and (4) that
magpie still serves a good request on a new connection."""

import subprocess
import time

import mp

CONFIG_EXTRA = "          normalize_path: true\n          merge_slashes: true"


def _start(hcm_extra=CONFIG_EXTRA):
    up = mp.TestUpstream()
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up.port, hcm_extra=hcm_extra), ports={"port": port})
    return m, up, port


def _still_serving(m, up, port, before):
    r = mp.get(port, "/echo/after")
    if r.status != 200:
        m.fail("follow-up good request got %d" % r.status)
    mp.eq(up.requests, before + 1, "upstream saw only the good follow-up")


def reject(raw, statuses, body_case=False):
    """raw is sent on a fresh connection; statuses is the set of acceptable answers."""
    m, up, port = _start()
    out, closed = mp.raw_exchange(port, raw, timeout=5)
    st = mp.status_of(out)
    if st not in statuses:
        m.fail("sent %r\ngot status %r (want %s): %r" % (raw[:300], st, sorted(statuses),
                                                         out[:300]))
    # 400+close: magpie must not read further requests from a connection it rejected.
    mp.check(closed, "connection left open after %d" % st)
    mp.check(b"connection: close" in out.lower(), "Connection: close on the rejection")
    if body_case:
        # The head may legitimately have been forwarded before the body error was seen; the
        # request must not have completed upstream.
        mp.eq(up.completed, 0, "requests completed upstream")
    else:
        mp.eq(up.requests, 0, "requests that reached the upstream")
    if not m.alive():
        m.fail("magpie died")
    _still_serving(m, up, port, up.requests)


def req(line="GET / HTTP/1.1", headers=(("Host", "t"),), body=b""):
    return (line + "\r\n" + "".join("%s\r\n" % h if isinstance(h, str) else "%s: %s\r\n" % h
                                    for h in headers) + "\r\n").encode("latin-1") + body


# name -> (raw bytes, acceptable statuses, body_case)
CASES = {
    # 1 malformed request line
    "1_missing_version": (b"GET /\r\nHost: t\r\n\r\n", {400}, False),
    "1_double_space": (req("GET  / HTTP/1.1"), {400}, False),
    "1_tab_separators": (req("GET\t/\tHTTP/1.1"), {400}, False),
    "1_leading_whitespace": (req(" GET / HTTP/1.1"), {400}, False),
    "1_lowercase_version": (req("GET / http/1.1"), {400}, False),
    # 2 method token
    "2_invalid_method": (req("G(T / HTTP/1.1"), {400}, False),
    # 3 version
    "3_http_1_10": (req("GET / HTTP/1.10"), {400, 505}, False),
    "3_http_0_9": (req("GET / HTTP/0.9"), {400, 505}, False),
    "3_http_2_0": (req("GET / HTTP/2.0"), {400, 505}, False),
    "3_http_1_257": (req("GET / HTTP/1.257"), {400, 505}, False),
    # 4 request-target
    "4_ctl_in_target": (req("GET /a\x01b HTTP/1.1"), {400}, False),
    "4_space_in_target": (req("GET /a b HTTP/1.1"), {400}, False),
    "4_non_ascii_target": (req("GET /\xff HTTP/1.1"), {400}, False),
    "4_fragment": (req("GET /a#frag HTTP/1.1"), {400}, False),
    # 5 request line over the limit (16 KiB)
    "5_uri_too_long": (req("GET /" + "a" * (20 * 1024) + " HTTP/1.1"), {414}, False),
    # 6-8 Content-Length
    "6_cl_and_te": (req(headers=[("Host", "t"), ("Content-Length", "5"),
                                 ("Transfer-Encoding", "chunked")],
                        body=b"0\r\n\r\n"), {400}, False),
    "7_two_cl_different": (req(headers=[("Host", "t"), ("Content-Length", "5"),
                                        ("Content-Length", "6")], body=b"hello!"), {400}, False),
    "7_cl_list": (req(headers=[("Host", "t"), ("Content-Length", "5, 6")], body=b"hello!"),
                  {400}, False),
}
for _name, _v in {"plus": "+5", "minus": "-1", "hex": "0x10", "empty": "", "underscore": "5_0",
                  "overflow": "99999999999999999999999", "space_inside": "5 0"}.items():
    CASES["8_cl_" + _name] = (req(headers=[("Host", "t"), ("Content-Length", _v)],
                                  body=b"hello"), {400}, False)
# 9 TE obfuscation (the body is a valid chunked body, so only the header decides)
_CHUNKED = b"5\r\nhello\r\n0\r\n\r\n"
for _name, _h in {"space_before_colon": "Transfer-Encoding : chunked",
                  "leading_comma": "Transfer-Encoding: ,chunked",
                  "twice": "Transfer-Encoding: chunked, chunked",
                  "xchunked": "Transfer-Encoding: xchunked",
                  "vtab_after": "Transfer-Encoding: chunked\x0b",
                  "ctl_in_name": "Transfer-Encoding\x0b: chunked",
                  "two_headers": "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
                  }.items():
    CASES["9_te_" + _name] = (req(headers=["Host: t", _h], body=_CHUNKED), {400, 501}, False)
CASES.update({
    # 10 codings: non-final chunked is a framing error; an unknown coding is 501 (400 tolerated)
    "10_te_chunked_not_final": (req(headers=["Host: t", "Transfer-Encoding: chunked, gzip"],
                                    body=_CHUNKED), {400}, False),
    "10_te_unknown": (req(headers=["Host: t", "Transfer-Encoding: foo"], body=_CHUNKED),
                      {501, 400}, False),
    # 11-15 field syntax
    "11_space_before_colon": (req(headers=["Host: t", "X-A : b"]), {400}, False),
    "12_obs_fold": (req(headers=["Host: t", "X-A: a", " folded"]), {400}, False),
    "13_nul_in_value": (req(headers=["Host: t", "X-A: a\x00b"]), {400}, False),
    "13_nul_in_name": (req(headers=["Host: t", "X-\x00A: b"]), {400}, False),
    "14_bare_cr_in_value": (req(headers=["Host: t", "X-A: a\rb"]), {400}, False),
    "14_bare_lf_line_end": (b"GET / HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n", {400}, False),
    "14_cr_x_terminator": (b"GET / HTTP/1.1\r\nHost: t\r\n\rX\r\n\r\n", {400}, False),
    "15_space_in_name": (req(headers=["Host: t", "X A: b"]), {400}, False),
    "15_high_byte_in_name": (req(headers=["Host: t", "X\x80A: b"]), {400}, False),
    "15_nbsp_in_name": (req(headers=["Host: t", "X\xa0A: b"]), {400}, False),
    "15_empty_name": (req(headers=["Host: t", ": v"]), {400}, False),
    "15_no_colon": (req(headers=["Host: t", "NoColonHere"]), {400}, False),
    # 16-17 limits: 60 KiB of headers, 100 fields
    "16_headers_over_60k": (req(headers=["Host: t"] + ["X-B%d: %s" % (i, "b" * 1000)
                                                      for i in range(64)]), {431}, False),
    "17_more_than_100_headers": (req(headers=["Host: t"] + ["X-C%d: c" % i for i in range(101)]),
                                 {431}, False),
    # 18 Host
    "18_no_host": (req(headers=[]), {400}, False),
    "18_two_hosts": (req(headers=["Host: a", "Host: b"]), {400}, False),
    # 19 malformed chunked bodies (heads are fine, so only completion upstream is forbidden)
    "19_chunk_0x": (req("POST / HTTP/1.1", ["Host: t", "Transfer-Encoding: chunked"],
                        b"0x5\r\nhello\r\n0\r\n\r\n"), {400}, True),
    "19_chunk_plus": (req("POST / HTTP/1.1", ["Host: t", "Transfer-Encoding: chunked"],
                          b"+5\r\nhello\r\n0\r\n\r\n"), {400}, True),
    "19_chunk_space": (req("POST / HTTP/1.1", ["Host: t", "Transfer-Encoding: chunked"],
                           b" 5\r\nhello\r\n0\r\n\r\n"), {400}, True),
    "19_chunk_empty_size": (req("POST / HTTP/1.1", ["Host: t", "Transfer-Encoding: chunked"],
                                b"\r\nhello\r\n0\r\n\r\n"), {400}, True),
    "19_chunk_overflow": (req("POST / HTTP/1.1", ["Host: t", "Transfer-Encoding: chunked"],
                              b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n"), {400}, True),
    "19_chunk_missing_crlf": (req("POST / HTTP/1.1", ["Host: t", "Transfer-Encoding: chunked"],
                                  b"5\r\nhelloXX0\r\n\r\n"), {400}, True),
    "19_chunk_bare_lf": (req("POST / HTTP/1.1", ["Host: t", "Transfer-Encoding: chunked"],
                             b"5\nhello\n0\n\n"), {400}, True),
    "19_chunk_cr_in_ext": (req("POST / HTTP/1.1", ["Host: t", "Transfer-Encoding: chunked"],
                               b"5;a=\rb\r\nhello\r\n0\r\n\r\n"), {400}, True),
    # 20 chunk extensions over the cap (4 KiB per message)
    "20_huge_chunk_ext": (req("POST / HTTP/1.1", ["Host: t", "Transfer-Encoding: chunked"],
                              b"5;" + b"e" * 16384 + b"\r\nhello\r\n0\r\n\r\n"), {400}, True),
    # 23 underscore framing headers: rejected (Envoy's edge advice) -- see also the drop test
    # 26 CONNECT with a body
    "26_connect_with_cl": (req("CONNECT example.com:443 HTTP/1.1",
                               ["Host: example.com:443", "Content-Length: 5"], b"hello"),
                           {400}, False),
    "26_connect_with_te": (req("CONNECT example.com:443 HTTP/1.1",
                               ["Host: example.com:443", "Transfer-Encoding: chunked"],
                               _CHUNKED), {400}, False),
})


def _make(raw, statuses, body_case):
    def t():
        reject(raw, statuses, body_case)
    return t


for _name, (_raw, _st, _body) in CASES.items():
    _fn = _make(_raw, _st, _body)
    _fn.__name__ = "test_reject_" + _name
    globals()[_fn.__name__] = _fn


def _headers_upstream(up):
    return {k.lower(): v for k, v in up.seen[-1][2]}


def test_20_one_byte_chunks_are_fine():
    m, up, port = _start()
    body = b"1\r\nx\r\n" * 50000 + b"0\r\n\r\n"
    with mp.Conn(port) as c:
        r = c.request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")], body=body)
    # 50,000 one-byte chunks are legal: the request succeeds with every byte delivered.
    mp.eq((r.status, r.json()["body_len"]), (200, 50000), "1-byte chunks")


def test_21_forbidden_trailers_dropped():
    m, up, port = _start()
    body = b"5\r\nhello\r\n0\r\nContent-Length: 99\r\nHost: evil\r\nX-Ok: 1\r\n\r\n"
    with mp.Conn(port) as c:
        r = c.request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")], body=body)
    mp.eq(r.status, 200, "status")
    names = [k for k, _ in up.trailers]
    mp.check("content-length" not in names and "host" not in names,
             "forbidden trailers reached upstream: %r" % up.trailers)


def test_22_pipeline_with_bad_request_in_middle():
    m, up, port = _start()
    raw = (mp.build_request("GET", "/echo/1") + b"GET / HTTP/1.1\r\nHost: t\r\nX A: b\r\n\r\n" +
           mp.build_request("GET", "/echo/3"))
    out, closed = mp.raw_exchange(port, raw)
    statuses = [int(x) for x in __import__("re").findall(rb"HTTP/1\.1 (\d{3})", out)]
    # The good first request is answered, the bad one gets 400, nothing after it is read.
    mp.eq(statuses, [200, 400], "statuses in order")
    mp.check(closed, "closed after the bad request")
    mp.eq(up.requests, 1, "only the first request reached upstream")
    _still_serving(m, up, port, up.requests)


def test_23_underscore_framing_headers_never_forwarded():
    m, up, port = _start()
    out, _ = mp.raw_exchange(port, req("POST /echo HTTP/1.1", ["Host: t", "Content-Length: 5",
                                                             "Content_Length: 50",
                                                             "Transfer_Encoding: chunked"],
                                       b"hello"))
    st = mp.status_of(out)
    mp.check(st in (200, 400), "status %r" % st)
    if st == 200:
        h = _headers_upstream(up)
        mp.check("content_length" not in h and "transfer_encoding" not in h,
                 "underscore header forwarded: %r" % h)
    _still_serving(m, up, port, up.requests)


def test_24_connection_cannot_strip_protected_headers():
    m, up, port = _start(CONFIG_EXTRA + "\n          use_remote_address: true")
    r = mp.get(port, "/echo", headers=[("Connection", "keep-alive, X-Forwarded-For, "
                                                      "X-Request-Id, X-Forwarded-Proto")])
    h = {k.lower(): v for k, v in r.json()["headers"]}
    for name in ("x-forwarded-for", "x-request-id", "x-forwarded-proto"):
        mp.check(name in h, "%s stripped via Connection: %r" % (name, h))
    mp.check("connection" not in h or "x-forwarded-for" not in h["connection"].lower(),
             "client's Connection header forwarded verbatim")


H2C_UPGRADE = ["Host: t", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
               "HTTP2-Settings: AAMAAABkAAQAAP__"]


def test_25_h2c_upgrade_not_forwarded():
    # h2csmuggler relies on a proxy that forwards the upgrade and then tunnels.  magpie either
    # takes the upgrade itself (codec AUTO: it speaks HTTP/2 to the client and still routes every
    # stream) or answers over HTTP/1.1 (codec HTTP1); the upstream never sees the upgrade.
    m, up, port = _start()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                          "--http2", "http://127.0.0.1:%d/echo" % port],
                         capture_output=True, text=True, timeout=10).stdout
    mp.eq(out, "200 2", "AUTO takes the h2c upgrade itself")
    h = _headers_upstream(up)
    mp.check("upgrade" not in h and "http2-settings" not in h, "h2c upgrade forwarded: %r" % h)


def test_25_h2c_upgrade_refused_by_http1_codec():
    m, up, port = _start(CONFIG_EXTRA + "\n          codec_type: HTTP1")
    fields = list(H2C_UPGRADE)
    fields[1] = "Connection: Upgrade, HTTP2-Settings, close"
    out, _ = mp.raw_exchange(port, req("GET /echo HTTP/1.1", fields))
    mp.eq(mp.status_of(out), 200, "HTTP1 codec answers over HTTP/1.1")
    h = _headers_upstream(up)
    mp.check("upgrade" not in h and "http2-settings" not in h, "h2c upgrade forwarded: %r" % h)


def test_27_client_internal_headers_stripped():
    m, up, port = _start()
    r = mp.get(port, "/echo", headers=[("X-Forwarded-Client-Cert", "By=spiffe://evil")])
    h = {k.lower(): v for k, v in r.json()["headers"]}
    mp.check("x-forwarded-client-cert" not in h, "client XFCC reached upstream: %r" % h)


def test_28_paths_normalised_before_routing():
    m, up, port = _start()
    # normalize_path + merge_slashes: the upstream must see the normalised form.
    for sent, want in (("/a/../echo/x", "/echo/x"), ("//echo//y", "/echo/y"),
                       ("/%2e%2e/echo/z", "/echo/z"), ("/echo/./w", "/echo/w")):
        r = mp.get(port, sent)
        mp.eq((r.status, r.json()["path"]), (200, want), "path %s" % sent)


def test_28_escaped_slash_rejected():
    m, up, port = _start()
    out, _ = mp.raw_exchange(port, req("GET /echo%2Fx HTTP/1.1"))
    st = mp.status_of(out)
    mp.check(st == 400 or (st is not None and 300 <= st < 400),
             "escaped slash answered %r" % st)
    mp.eq(up.requests, 0, "escaped-slash path reached upstream")


def test_30_expect_100_no_route_gets_final_status_without_100():
    up = mp.TestUpstream()
    port = mp.free_port()
    routes = ('              - match: {prefix: "/only"}\n'
              '                route: {cluster: c1}\n')
    m = mp.Magpie(mp.simple_config(up.port, routes=routes), ports={"port": port})
    with mp.Conn(port) as c:
        c.send(b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.read_response()
        mp.eq((r.status, r.interim), (404, []), "404 without a 100 first")
        mp.check(c.closed_by_peer(), "closed: the announced body was never read")
    mp.eq(up.requests, 0, "upstream untouched")


def test_31_slowloris_headers_time_out():
    m, up, port = _start(CONFIG_EXTRA + "\n          request_timeout: 1s")
    with mp.Conn(port) as c:
        t0 = time.monotonic()
        c.send(b"GET /echo HTTP/1.1\r\n")
        for ch in b"Host: t\r\nX-Slow: aaaa":
            try:
                c.send(bytes([ch]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
        mp.check(c.closed_by_peer(timeout=6), "slow header sender not cut off")
        out = c.buf
    mp.check(time.monotonic() - t0 < 7, "cut off within the timeout")
    st = mp.status_of(out)
    mp.check(st in (408, None), "slowloris answered %r" % st)
    mp.eq(up.requests, 0, "incomplete head reached the upstream")
    _still_serving(m, up, port, 0)


test_31_slowloris_headers_time_out.timeout = 30


def test_32_slow_post_times_out():
    m, up, port = _start(CONFIG_EXTRA + "\n          request_timeout: 1s")
    with mp.Conn(port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        closed = False
        for _ in range(40):
            try:
                c.send(b"x")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
        closed = closed or c.closed_by_peer(timeout=3)
        mp.check(closed, "slow body sender not cut off")
        st = mp.status_of(c.buf)
        mp.check(st in (408, 504, None), "slow POST answered %r" % st)
    mp.eq(up.completed, 0, "slow body completed upstream")
    _still_serving(m, up, port, up.requests)


test_32_slow_post_times_out.timeout = 30


def test_33_slow_reader_memory_bounded():
    m, up, port = _start()
    with mp.Conn(port) as c:
        c.sock.setsockopt(__import__("socket").SOL_SOCKET,
                          __import__("socket").SO_RCVBUF, 4096)
        c.send(mp.build_request("GET", "/bytes/%d" % (300 << 20)))
        time.sleep(2)  # deliberately not reading: the point is what magpie buffers meanwhile
        hwm = m.hwm()
    if not mp.SANITIZED:
        # Watermarks must stop reading upstream: 300 MiB pending may not become 300 MiB of RSS.
        mp.check(hwm < 16 << 20, "VmHWM %.1f MiB with a stalled reader" % (hwm / 2**20))
    _still_serving(m, up, port, up.requests)


if __name__ == "__main__":
    import run
    run.main([__file__])
