"""magpie terminating TLS for HTTP clients: HTTP/1.1 and h2 by ALPN, mutual TLS with SPIFFE
SANs and the ssl.* counters for each way a client certificate can be refused.  The PKI is made
at test time (pki.py, openssl CLI); clients are curl, nghttp, openssl s_client and Python's
ssl module."""

import hashlib
import ssl
import subprocess

import mp
import pki

_PKI = {}


def _pki():
    if not _PKI:
        d = mp.tmpdir("mp-tls-")
        ca = pki.CA(d)
        other = pki.CA(d, name="other")
        _PKI.update(
            dir=d, ca=ca,
            server=ca.issue("server", uri=pki.spiffe_id("default", "magpie"), dns=["localhost"],
                            ips=["127.0.0.1"], serial=0x5E01),
            foo=ca.issue("foo", uri=pki.spiffe_id("default", "foo"), usage="client"),
            bar=ca.issue("bar", uri=pki.spiffe_id("other", "bar"), usage="client"),
            expired=ca.issue("old", uri=pki.spiffe_id("default", "foo"), usage="client",
                             expired=True),
            untrusted=other.issue("stranger", uri=pki.spiffe_id("default", "foo"),
                                  usage="client"))
    return _PKI


def _tls_block(p, mtls):
    lines = [
        "    - transport_socket:",
        "        name: envoy.transport_sockets.tls",
        "        typed_config:",
        "          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
        "DownstreamTlsContext",
        "          require_client_certificate: %s" % ("true" if mtls else "false"),
        "          common_tls_context:",
        "            alpn_protocols: [h2, http/1.1]",
        "            tls_certificates:",
        "            - certificate_chain: {filename: %s}" % p["server"].chain,
        "              private_key: {filename: %s}" % p["server"].key,
    ]
    if mtls:
        lines += [
            "            validation_context:",
            "              trusted_ca: {filename: %s}" % p["ca"].ca_file,
            "              match_typed_subject_alt_names:",
            "              - san_type: URI",
            "                matcher: {prefix: \"spiffe://cluster.local/ns/default/\"}",
        ]
    return "\n".join(lines) + "\n      filters:"


def start(mtls=False):
    p = _pki()
    up = mp.TestUpstream()
    port = mp.free_port()
    cfg = mp.simple_config(up.port).replace("    - filters:", _tls_block(p, mtls), 1)
    m = mp.Magpie(cfg, ports={"port": port})
    return m, up, port, p


def ssl_stat(m, name):
    for k, v in m.stats().items():
        if k.startswith("listener.") and k.endswith(".ssl." + name):
            return v
    raise mp.TestFailure("no listener ssl.%s stat" % name)


def curl(port, p, *extra):
    r = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code} %{http_version}",
                        "--cacert", p["ca"].ca_file, "https://localhost:%d/echo" % port,
                        "--resolve", "localhost:%d:127.0.0.1" % port] + list(extra),
                       capture_output=True, timeout=20)
    body, _, tail = r.stdout.rpartition(b"\n")
    return r.returncode, tail.decode(), body


def test_https_http11_and_h2_by_alpn():
    m, up, port, p = start()
    rc, tail, _ = curl(port, p, "--http1.1")
    mp.eq((rc, tail), (0, "200 1.1"), "HTTP/1.1 over TLS")
    rc, tail, _ = curl(port, p, "--http2")
    mp.eq((rc, tail), (0, "200 2"), "h2 chosen by ALPN")
    out = subprocess.run(["nghttp", "-nv", "https://127.0.0.1:%d/echo" % port],
                         capture_output=True, text=True, timeout=20).stdout
    mp.check("negotiated protocol: h2" in out and ":status: 200" in out, out[:800])
    mp.check(ssl_stat(m, "handshake") >= 3, "handshakes counted")
    f = m.access_lines()
    mp.check(len(f) >= 3, "access log lines: %r" % f)


def test_server_certificate_and_versions():
    m, up, port, p = start()
    r = pki.tls_probe("127.0.0.1", port, server_name="localhost", ca=p["ca"].ca_file,
                      alpn=["http/1.1"])
    mp.check(r["ok"], "probe: %r" % r)
    mp.eq(r["serial"], 0x5E01, "the configured certificate")
    mp.eq(r["alpn"], "http/1.1", "ALPN")
    mp.eq(r["status"], 200, "HTTP over TLS")
    out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                          "-CAfile", p["ca"].ca_file, "-servername", "localhost"],
                         input="", capture_output=True, text=True, timeout=20).stdout
    mp.check("Verify return code: 0 (ok)" in out, out[-600:])
    r = pki.tls_probe("127.0.0.1", port, server_name="localhost", ca=p["ca"].ca_file,
                      max_version=ssl.TLSVersion.TLSv1_1)
    mp.check(not r["ok"], "TLS 1.1 refused: %r" % r)


def test_large_response_over_tls():
    m, up, port, p = start()
    r = subprocess.run(["curl", "-s", "--cacert", p["ca"].ca_file, "--http2",
                        "--resolve", "localhost:%d:127.0.0.1" % port,
                        "https://localhost:%d/bytes/8388608" % port],
                       capture_output=True, timeout=60)
    mp.eq(len(r.stdout), 8388608, "8 MiB over h2/TLS")
    want = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/bytes/8388608" % up.port],
                          capture_output=True, timeout=60).stdout
    mp.eq(hashlib.sha256(r.stdout).hexdigest(), hashlib.sha256(want).hexdigest(), "content")


def test_mtls_accepts_the_right_spiffe_id():
    m, up, port, p = start(mtls=True)
    rc, tail, _ = curl(port, p, "--cert", p["foo"].cert, "--key", p["foo"].key)
    mp.eq((rc, tail.split()[0]), (0, "200"), "a client of ns default")
    rc, tail, _ = curl(port, p, "--http2", "--cert", p["foo"].cert, "--key", p["foo"].key)
    mp.eq((rc, tail), (0, "200 2"), "h2 with a client certificate")


def _refused(m, port, p, leaf, stat):
    before = ssl_stat(m, stat)
    extra = ["--cert", leaf.cert, "--key", leaf.key] if leaf is not None else []
    rc, tail, _ = curl(port, p, *extra)
    mp.check(rc != 0 and not tail.startswith("2"), "refused: rc=%d %s" % (rc, tail))
    mp.wait_until(lambda: ssl_stat(m, stat) > before, 5, what="ssl.%s to grow" % stat)


def test_mtls_refusals_are_counted():
    m, up, port, p = start(mtls=True)
    _refused(m, port, p, None, "no_certificate")
    _refused(m, port, p, p["expired"], "fail_verify_error")
    _refused(m, port, p, p["untrusted"], "fail_verify_error")
    _refused(m, port, p, p["bar"], "fail_verify_san")
    mp.eq(up.requests, 0, "no refused client reached the upstream")
    # And a good client still gets through afterwards.
    rc, tail, _ = curl(port, p, "--cert", p["foo"].cert, "--key", p["foo"].key)
    mp.eq((rc, tail.split()[0]), (0, "200"), "a good client after the refusals")


def test_plaintext_client_on_tls_listener_is_closed():
    m, up, port, p = start()
    out, _ = mp.raw_exchange(port, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    mp.check(b"HTTP/1.1 200" not in out, "plaintext served on a TLS listener: %r" % out[:80])
    mp.wait_until(lambda: ssl_stat(m, "connection_error") >= 1, 5, what="connection_error")
    mp.eq(up.requests, 0, "nothing reached the upstream")


if __name__ == "__main__":
    import run
    run.main([__file__])
