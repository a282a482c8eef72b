"""x-forwarded-client-cert and the downstream TLS access-log commands: magpie terminating TLS
(and plain HTTP) for curl clients with and without a client certificate, in front of the Python
echo upstream (mp.TestUpstream), which returns the request headers it received.  Each
forward_client_cert_details mode is checked against a spoofed XFCC from the client; the PKI is
made at test time (pki.py)."""

import base64
import hashlib
import json
import re
import ssl
import subprocess
import urllib.parse

import mp
import pki

FRONTEND = pki.spiffe_id("default", "frontend")
MAGPIE_ID = pki.spiffe_id("default", "magpie")
SPOOF = "By=spiffe://evil/sa/x;Hash=0000;URI=spiffe://cluster.local/ns/default/sa/admin"
TLS_FORMAT = ("%DOWNSTREAM_PEER_URI_SAN%|%DOWNSTREAM_LOCAL_URI_SAN%|%DOWNSTREAM_PEER_SUBJECT%|"
              "%DOWNSTREAM_LOCAL_SUBJECT%|%DOWNSTREAM_TLS_VERSION%|%DOWNSTREAM_TLS_CIPHER%|"
              "%DOWNSTREAM_PEER_FINGERPRINT_256%|%DOWNSTREAM_PEER_SERIAL%|"
              "%DOWNSTREAM_TLS_SESSION_ID%|%PROTOCOL%\\n")
TLS_KEYS = ["peer_uri", "local_uri", "peer_subject", "local_subject", "version", "cipher",
            "fingerprint", "serial", "session", "protocol"]

_PKI = {}


def _pki():
    if not _PKI:
        d = mp.tmpdir("mp-xfcc-")
        ca = pki.CA(d)
        inter = ca.intermediate("int")
        _PKI.update(
            dir=d, ca=ca,
            server=ca.issue("server", uri=MAGPIE_ID, dns=["localhost"], serial=0x5E01),
            client=ca.issue("frontend", uri=FRONTEND, dns=["frontend.default.svc", "frontend"],
                            usage="client", serial=0xC11E),
            # Signed by an intermediate, sent with it: Chain carries both.
            chained=inter.issue("chained", uri=pki.spiffe_id("default", "chained"),
                                usage="client"),
            # No URI SAN at all: URI= stays empty, DNS lists the DNS SAN.
            nouri=ca.issue("nouri", dns=["plain.example"], usage="client"))
    return _PKI


def _tls_block(p):
    """A DownstreamTlsContext that asks for, but does not require, a client certificate: the
    same listener then serves mTLS and TLS-only clients."""
    return "\n".join([
        "    - transport_socket:",
        "        name: envoy.transport_sockets.tls",
        "        typed_config:",
        "          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
        "DownstreamTlsContext",
        "          common_tls_context:",
        "            alpn_protocols: [h2, http/1.1]",
        "            tls_certificates:",
        "            - certificate_chain: {filename: %s}" % p["server"].chain,
        "              private_key: {filename: %s}" % p["server"].key,
        "            validation_context:",
        "              trusted_ca: {filename: %s}" % p["ca"].ca_file,
    ]) + "\n      filters:"


def _hcm_extra(mode, details):
    lines = ["          forward_client_cert_details: %s" % mode] if mode else []
    if details:
        lines.append("          set_current_client_cert_details:")
        lines += ["            %s: true" % d for d in details]
    return "\n".join(lines)


def start(mode=None, details=(), tls=True):
    p = _pki()
    up = mp.TestUpstream()
    port = mp.free_port()
    cfg = mp.simple_config(up.port, hcm_extra=_hcm_extra(mode, details))
    cfg = cfg.replace(mp.ACCESS_FORMAT, TLS_FORMAT, 1)
    if tls:
        cfg = cfg.replace("    - filters:", _tls_block(p), 1)
    m = mp.Magpie(cfg, ports={"port": port})
    return m, port, p


def request(port, p, cert=None, xfcc=None, tls=True, extra=()):
    """curl to /echo; returns (status, http version, the upstream's x-forwarded-client-cert
    fields as a list, the upstream's headers as a dict)."""
    args = ["curl", "-s", "-o", "-", "-w", "\n%{http_code} %{http_version}", "--max-time", "20"]
    if tls:
        args += ["--cacert", p["ca"].ca_file, "--resolve", "localhost:%d:127.0.0.1" % port,
                 "https://localhost:%d/echo" % port]
    else:
        args += ["http://127.0.0.1:%d/echo" % port]
    if cert is not None:
        args += ["--cert", cert.chain, "--key", cert.key]
    if xfcc is not None:
        args += ["-H", "x-forwarded-client-cert: " + xfcc]
    r = subprocess.run(args + list(extra), capture_output=True, timeout=30)
    body, _, tail = r.stdout.rpartition(b"\n")
    mp.eq(r.returncode, 0, "curl exit (%s)" % r.stderr.decode(errors="replace")[-300:])
    status, version = tail.decode().split(" ")
    headers = json.loads(body)["headers"]
    got = [v for k, v in headers if k.lower() == "x-forwarded-client-cert"]
    return int(status), version, got, {k.lower(): v for k, v in headers}


def _der(pem_text):
    b64 = re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem_text,
                     re.S)
    return [base64.b64decode("".join(x.split())) for x in b64]


def sha256_hex(leaf):
    with open(leaf.cert) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def subject_2253(leaf):
    out = subprocess.run(["openssl", "x509", "-in", leaf.cert, "-noout", "-subject", "-nameopt",
                          "RFC2253"], capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1].strip()


def pairs(element):
    """'K=v;K="q";...' -> [(K, v)] (no ';' inside our values but in quoted PEM, which has none
    after URL-encoding)."""
    out = []
    for kv in element.split(";"):
        k, _, v = kv.partition("=")
        out.append((k, v[1:-1] if v.startswith('"') and v.endswith('"') else v))
    return out


def test_sanitize_default_drops_spoofed_header():
    m, port, p = start()
    for cert in (p["client"], None):
        for ver in ("--http1.1", "--http2"):
            code, v, got, hd = request(port, p, cert=cert, xfcc=SPOOF, extra=[ver])
            mp.eq(code, 200, "status")
            # SANITIZE is the default: a client cannot plant an identity, mTLS or not.
            mp.eq(got, [], "XFCC under SANITIZE (cert=%s %s)" % (bool(cert), ver))
            mp.eq(hd.get("x-forwarded-proto"), "https", "TLS is https to the upstream")
    m2, port2, _ = start(tls=False)
    code, _, got, hd = request(port2, p, xfcc=SPOOF, tls=False)
    mp.eq((code, got, hd.get("x-forwarded-proto")), (200, [], "http"), "plain: dropped")


def test_forward_only():
    m, port, p = start("FORWARD_ONLY")
    _, _, got, _ = request(port, p, cert=p["client"], xfcc=SPOOF)
    mp.eq(got, [SPOOF], "mTLS: passed on unchanged")
    _, _, got, _ = request(port, p, cert=p["client"], extra=["--http2"])
    mp.eq(got, [], "mTLS, no header from the client: none added")
    _, _, got, _ = request(port, p, xfcc=SPOOF)
    mp.eq(got, [], "TLS without a client certificate: dropped")
    m2, port2, _ = start("FORWARD_ONLY", tls=False)
    _, _, got, _ = request(port2, p, xfcc=SPOOF, tls=False)
    mp.eq(got, [], "plain: dropped")


def test_always_forward_only():
    m, port, p = start("ALWAYS_FORWARD_ONLY", details=["uri"])
    _, _, got, _ = request(port, p, cert=p["client"], xfcc=SPOOF)
    mp.eq(got, [SPOOF], "mTLS: unchanged, nothing of ours added")
    _, _, got, _ = request(port, p, xfcc=SPOOF, extra=["--http2"])
    mp.eq(got, [SPOOF], "TLS only: unchanged")
    m2, port2, _ = start("ALWAYS_FORWARD_ONLY", tls=False)
    _, _, got, _ = request(port2, p, xfcc=SPOOF, tls=False)
    mp.eq(got, [SPOOF], "plain: unchanged")


def test_append_forward():
    m, port, p = start("APPEND_FORWARD", details=["uri"])
    c = p["client"]
    mine = "By=%s;Hash=%s;URI=%s" % (MAGPIE_ID, sha256_hex(c), FRONTEND)
    for ver in ("--http1.1", "--http2"):
        _, _, got, _ = request(port, p, cert=c, xfcc=SPOOF, extra=[ver])
        # The client's element first, this hop's after it, in one field.
        mp.eq(got, [SPOOF + "," + mine], "mTLS %s: appended" % ver)
        _, _, got, _ = request(port, p, cert=c, extra=[ver])
        mp.eq(got, [mine], "mTLS %s without a client header: ours alone" % ver)
    _, _, got, _ = request(port, p, xfcc=SPOOF)
    mp.eq(got, [], "TLS without a client certificate: dropped, nothing to vouch for")
    m2, port2, _ = start("APPEND_FORWARD", tls=False)
    _, _, got, _ = request(port2, p, xfcc=SPOOF, tls=False)
    mp.eq(got, [], "plain: dropped")


def test_sanitize_set_each_detail():
    c = _pki()["client"]
    base = [("By", MAGPIE_ID), ("Hash", sha256_hex(c))]
    cases = [
        ([], []),
        (["subject"], [("Subject", subject_2253(c))]),
        (["uri"], [("URI", FRONTEND)]),
        (["dns"], [("DNS", "frontend.default.svc"), ("DNS", "frontend")]),
        (["dns", "uri", "subject"], [("Subject", subject_2253(c)), ("URI", FRONTEND),
                                     ("DNS", "frontend.default.svc"), ("DNS", "frontend")]),
    ]
    for details, want in cases:
        m, port, p = start("SANITIZE_SET", details=details)
        for ver in ("--http1.1", "--http2"):
            _, _, got, _ = request(port, p, cert=c, xfcc=SPOOF, extra=[ver])
            mp.eq(len(got), 1, "one XFCC field (%s %s)" % (details, ver))
            # The spoofed element is gone: only this hop's, with the details asked for.
            mp.eq(pairs(got[0]), base + want, "SANITIZE_SET %s %s" % (details, ver))
        _, _, got, _ = request(port, p, xfcc=SPOOF)
        mp.eq(got, [], "TLS without a client certificate: dropped")
        m.stop()


def test_sanitize_set_cert_and_chain():
    m, port, p = start("SANITIZE_SET", details=["cert", "chain"])
    c = p["client"]
    _, _, got, _ = request(port, p, cert=c)
    kv = pairs(got[0])
    mp.eq([k for k, _ in kv], ["By", "Hash", "Cert", "Chain"], "keys")
    mp.check("\n" not in kv[2][1] and "%0A" in kv[2][1] and "%20" in kv[2][1],
             "PEM is URL-encoded: %r" % kv[2][1][:80])
    with open(c.cert) as f:
        leaf_der = _der(f.read())
    mp.eq(_der(urllib.parse.unquote(kv[2][1])), leaf_der, "Cert is the client's leaf")
    # Chain is what the client sent, leaf first: curl (OpenSSL) completes a lone leaf with the
    # root from its --cacert store, so the root may follow.
    with open(p["ca"].ca_file) as f:
        root_der = _der(f.read())
    chain = _der(urllib.parse.unquote(kv[3][1]))
    mp.check(chain in (leaf_der, leaf_der + root_der), "Chain: leaf [+ root]: %d" % len(chain))
    # A client that sends leaf + intermediate: Chain carries both, leaf first.
    ch = p["chained"]
    _, _, got, _ = request(port, p, cert=ch, extra=["--http2"])
    kv = pairs(got[0])
    with open(ch.chain) as f:
        chain_der = _der(f.read())
    mp.eq(len(chain_der), 2, "the test chain file holds leaf and intermediate")
    mp.eq(_der(urllib.parse.unquote(kv[3][1])), chain_der, "Chain: leaf then intermediate")
    mp.eq(_der(urllib.parse.unquote(kv[2][1])), chain_der[:1], "Cert: the leaf only")


def test_sanitize_set_without_uri_san():
    m, port, p = start("SANITIZE_SET", details=["uri", "dns", "subject"])
    c = p["nouri"]
    _, _, got, _ = request(port, p, cert=c)
    # Envoy keeps "URI=" when the certificate has no URI SAN.
    mp.eq(pairs(got[0]), [("By", MAGPIE_ID), ("Hash", sha256_hex(c)),
                          ("Subject", subject_2253(c)), ("URI", ""), ("DNS", "plain.example")],
          "no URI SAN")


def parse_tls_line(line):
    return dict(zip(TLS_KEYS, line.split("|")))


def test_access_log_tls_fields():
    m, port, p = start()
    c = p["client"]
    request(port, p, cert=c, extra=["--http1.1"])
    request(port, p, cert=c, extra=["--http2", "--tlsv1.2", "--tls-max", "1.2"])
    request(port, p)
    lines = [parse_tls_line(l) for l in m.access_lines(3)]
    a, b, n = lines
    mp.eq(a["peer_uri"], FRONTEND, "peer URI SAN is the client's SPIFFE ID")
    mp.eq(a["local_uri"], MAGPIE_ID, "local URI SAN is ours")
    mp.eq(a["peer_subject"], subject_2253(c), "peer subject, RFC 2253")
    mp.eq(a["local_subject"], subject_2253(p["server"]), "local subject")
    mp.eq((a["version"], a["protocol"]), ("TLSv1.3", "HTTP/1.1"), "TLS 1.3 by default")
    mp.check(a["cipher"].startswith("TLS_"), "TLS 1.3 cipher name: %r" % a["cipher"])
    mp.eq(a["fingerprint"], sha256_hex(c), "SHA-256 of the client's certificate")
    mp.eq(a["serial"], "c11e", "serial, lower-case hex")
    mp.check(re.fullmatch(r"[0-9a-f]+|-", a["session"]) is not None, "session id: %r" % a)
    mp.eq((b["version"], b["protocol"], b["peer_uri"]), ("TLSv1.2", "HTTP/2", FRONTEND),
          "client held to TLS 1.2, over h2")
    mp.check("-" in b["cipher"] and not b["cipher"].startswith("TLS_"),
             "TLS 1.2 cipher name: %r" % b["cipher"])
    # TLS without a client certificate: the session is known, the peer is not.
    mp.eq([n[k] for k in ("peer_uri", "peer_subject", "fingerprint", "serial")], ["-"] * 4,
          "no client certificate")
    mp.eq((n["version"], n["local_uri"]), ("TLSv1.3", MAGPIE_ID), "TLS-only session facts")
    m2, port2, _ = start(tls=False)
    request(port2, p, tls=False)
    plain = parse_tls_line(m2.access_lines(1)[0])
    mp.eq([plain[k] for k in TLS_KEYS[:-1]], ["-"] * 9, "plain connection: every TLS field -")


def test_identity_cached_per_connection():
    """Several requests on one keep-alive TLS connection, then another connection with another
    certificate: each request carries its own connection's identity."""
    m, port, p = start("SANITIZE_SET", details=["uri"])
    url = "https://localhost:%d/echo" % port
    r = subprocess.run(["curl", "-s", "--cacert", p["ca"].ca_file, "--resolve",
                        "localhost:%d:127.0.0.1" % port, "--cert", p["client"].chain, "--key",
                        p["client"].key, url, url, url], capture_output=True, timeout=30)
    bodies = r.stdout.decode().replace("}{", "}\n{").splitlines()
    mp.eq(len(bodies), 3, "three responses")
    conns = set()
    for b in bodies:
        j = json.loads(b)
        got = [v for k, v in j["headers"] if k.lower() == "x-forwarded-client-cert"]
        mp.eq(got, ["By=%s;Hash=%s;URI=%s" % (MAGPIE_ID, sha256_hex(p["client"]), FRONTEND)],
              "each request on the connection")
    _, _, got, _ = request(port, p, cert=p["chained"])
    mp.eq(pairs(got[0])[2], ("URI", pki.spiffe_id("default", "chained")),
          "a new connection: its own certificate")
