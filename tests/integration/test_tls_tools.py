#!/usr/bin/python3
"""The TLS test tools themselves (pki.py), against real TLS peers; no magpie needed.

  - the PKI: leaves verify (through an intermediate) with `openssl verify`, the expired and
    untrusted ones do not, and `openssl x509 -text` shows the SPIFFE URI SAN, DNS SANs, the
    extended key usage and the chosen serial;
  - sds_file: a DiscoveryResponse with Secret resources that parses as YAML, replaced by rename;
  - mTLS refusals against `openssl s_server -Verify` (the server refuses in the handshake) and
    nginx (`ssl_verify_client on`: the handshake completes and nginx answers 400): curl with the
    good client certificate gets through, with none, an expired one or one from an untrusted CA
    it does not; s_client shows the expected serial;
  - tls_probe: ALPN h2 and http/1.1, the TLS version, the server certificate's serial and SANs,
    SNI choosing nginx's certificate, verification errors (unknown CA, wrong name);
  - rotation_load: 2,000+ requests over keep-alive and new connections while nginx's
    certificate is replaced three times (nginx -s reload as the rotation), every request
    answered and new handshakes showing each new serial.

When magpie serves TLS, the same calls point at magpie's listener instead.
"""

import os
import re
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
import pki  # noqa: E402
import yaml  # noqa: E402

_PKI = None


class Pki:
    """One PKI for the whole module (built once, well under a second)."""

    def __init__(self):
        self.dir = mp.tmpdir("mp-pki-")
        t0 = time.monotonic()
        self.ca = pki.CA(self.dir)
        self.inter = self.ca.intermediate("int")
        self.server = self.inter.issue("server", uri=pki.spiffe_id("default", "web"),
                                       dns=["localhost", "web.test"], ips=["127.0.0.1"],
                                       usage="server", serial=0x5E01)
        self.client = self.ca.issue("client", uri=pki.spiffe_id("default", "curl"),
                                    usage="client", serial=0xC11E)
        self.expired = self.ca.issue("expired", uri=pki.spiffe_id("default", "curl"),
                                     usage="client", serial=0xDEAD, expired=True)
        self.other = pki.CA(self.dir, name="other")
        self.rogue = self.other.issue("rogue", uri=pki.spiffe_id("default", "curl"),
                                      usage="client", serial=0xBAD)
        self.wrong_san = self.ca.issue("wrongsan", uri=pki.spiffe_id("evil", "mallory"),
                                       dns=["evil.test"], usage="both", serial=0x0E11)
        self.alt = self.ca.issue("alt", uri=pki.spiffe_id("default", "alt"), dns=["alt.test"],
                                 usage="server", serial=0xA17)
        self.build_s = time.monotonic() - t0


def the_pki():
    global _PKI
    if _PKI is None:
        _PKI = Pki()
    return _PKI


def openssl(*args, input=None):
    return subprocess.run(["openssl"] + list(args), input=input, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=20)


# ---------------------------------------------------------------- the certificates

def test_pki_builds_fast_and_verifies():
    p = the_pki()
    mp.check(p.build_s < 1.0, "the module PKI took %.2fs, want < 1s" % p.build_s)
    for leaf in (p.server, p.client, p.wrong_san, p.alt):
        r = openssl("verify", "-CAfile", p.ca.cert, "-untrusted", p.inter.cert, leaf.cert)
        mp.check(r.returncode == 0 and b": OK" in r.stdout,
                 "%s does not verify: %s" % (leaf, r.stdout.decode()))
    r = openssl("verify", "-CAfile", p.ca.cert, p.expired.cert)
    mp.check(r.returncode != 0 and b"certificate has expired" in r.stdout,
             "expired leaf: %s" % r.stdout.decode())
    r = openssl("verify", "-CAfile", p.ca.cert, p.rogue.cert)
    mp.check(r.returncode != 0 and b"unable to get local issuer certificate" in r.stdout,
             "untrusted leaf: %s" % r.stdout.decode())
    # The server's chain file carries the intermediate, so the root alone verifies it.
    r = openssl("verify", "-CAfile", p.ca.cert, "-untrusted", p.server.chain, p.server.cert)
    mp.eq(r.returncode, 0, "verify through the chain file")
    mp.eq(p.server.ca_file, p.ca.cert, "an intermediate's leaf is trusted through the root")


def test_pki_sans_usage_and_serial_in_x509_text():
    p = the_pki()
    text = openssl("x509", "-in", p.server.cert, "-noout", "-text").stdout.decode()
    for want in ("URI:spiffe://cluster.local/ns/default/sa/web", "DNS:localhost",
                 "DNS:web.test", "IP Address:127.0.0.1", "TLS Web Server Authentication",
                 "Serial Number: 24065 (0x5e01)", "ASN1 OID: prime256v1", "CA:FALSE"):
        mp.check(want in text, "%r missing from x509 -text:\n%s" % (want, text))
    text = openssl("x509", "-in", p.client.cert, "-noout", "-text").stdout.decode()
    mp.check("TLS Web Client Authentication" in text and "Server Authentication" not in text,
             "client leaf EKU:\n%s" % text)
    dates = openssl("x509", "-in", p.expired.cert, "-noout", "-checkend", "0")
    mp.check(dates.returncode != 0, "expired leaf passes -checkend 0")
    rsa = p.ca.issue("rsa", dns=["rsa.test"], key="rsa", serial=0x125A)
    text = openssl("x509", "-in", rsa.cert, "-noout", "-text").stdout.decode()
    mp.check("Public-Key: (2048 bit)" in text and "rsaEncryption" in text, "RSA leaf:\n" + text)


def test_pki_cert_info_matches_openssl():
    p = the_pki()
    with open(p.client.cert) as f:
        info = pki.cert_info(ssl.PEM_cert_to_DER_cert(f.read()))
    mp.eq(info["serial"], 0xC11E, "serial")
    mp.eq(info["sans"], [("URI", "spiffe://cluster.local/ns/default/sa/curl")], "sans")
    mp.eq((info["subject_cn"], info["issuer_cn"]), ("client", "magpie test root"), "names")


def test_sds_file_is_a_discovery_response_replaced_by_rename():
    p = the_pki()
    path = os.path.join(p.dir, "sds.yaml")
    pki.sds_file(path, {"server_cert": p.server, "trust": p.ca})
    ino = os.stat(path).st_ino
    with open(path) as f:
        doc = yaml.safe_load(f)
    mp.eq([r["name"] for r in doc["resources"]], ["server_cert", "trust"], "secret names")
    mp.eq({r["@type"] for r in doc["resources"]}, {pki.SECRET_TYPE}, "resource type")
    tc = doc["resources"][0]["tls_certificate"]
    mp.eq((tc["certificate_chain"]["filename"], tc["private_key"]["filename"]),
          (p.server.chain, p.server.key), "tls_certificate files")
    mp.eq(doc["resources"][1]["validation_context"]["trusted_ca"]["filename"], p.ca.cert,
          "trusted_ca")
    matcher = {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/ns/default/"}}
    pki.sds_file(path, {"vc": {"validation_context": {
        "trusted_ca": {"filename": p.ca.cert}, "match_typed_subject_alt_names": [matcher]}}},
        version="2")
    mp.check(os.stat(path).st_ino != ino, "sds_file rewrote in place instead of renaming")
    with open(path) as f:
        doc = yaml.safe_load(f)
    mp.eq(doc["version_info"], "2", "version_info")
    mp.eq(doc["resources"][0]["validation_context"]["match_typed_subject_alt_names"],
          [matcher], "nested matcher survives")
    mp.eq([n for n in os.listdir(p.dir) if n.startswith(".tmp")], [], "temp files left")


# ---------------------------------------------------------------- openssl s_server

def start_s_server(p, verify=True, alpn="http/1.1"):
    port = mp.free_port()
    cmd = ["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-cert", p.server.cert,
           "-key", p.server.key, "-cert_chain", p.inter.cert, "-www", "-alpn", alpn]
    if verify:
        cmd += ["-CAfile", p.ca.cert, "-Verify", "2", "-verify_return_error"]
    proc = mp._register(subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, stdin=subprocess.PIPE))
    mp.wait_until(lambda: mp.port_open(port) or proc.poll() is not None, 10, what="s_server")
    mp.check(proc.poll() is None, "s_server exited with %s" % proc.returncode)
    return proc, port


def curl_tls(port, leaf, p, host="localhost", path="/"):
    args = ["--cacert", p.ca.cert, "--resolve", "%s:%d:127.0.0.1" % (host, port)]
    if leaf:
        args += ["--cert", leaf.cert, "--key", leaf.key]
    return mp.curl("https://%s:%d%s" % (host, port, path), *args, timeout=10)


def test_s_server_mtls_accepts_good_client_refuses_others():
    p = the_pki()
    proc, port = start_s_server(p)
    code, body, err = curl_tls(port, p.client, p)
    mp.eq(code, 200, "good client cert through s_server (%s)" % err)
    mp.check(b"s_server" in body or b"Ciphers" in body, "s_server -www page: %r" % body[:200])
    for leaf, what in ((None, "no certificate"), (p.expired, "expired certificate"),
                       (p.rogue, "untrusted CA")):
        code, body, err = curl_tls(port, leaf, p)
        mp.eq(code, 0, "%s: curl got a response (%r)" % (what, body[:100]))
        mp.check(re.search(r"alert|SSL", err), "%s: curl error %r" % (what, err))
        mp.check(proc.poll() is None, "s_server died after %s" % what)
    # The same refusals through tls_probe, which sees them on the first read under TLS 1.3.
    good = pki.tls_probe("127.0.0.1", port, server_name="localhost", ca=p.ca.cert,
                         cert=p.client.cert, key=p.client.key)
    mp.check(good["ok"], "tls_probe with the good client cert: %r" % good)
    mp.eq((good["version"], good["alpn"], good["serial"], good["status"]),
          ("TLSv1.3", None, 0x5E01, 200), "tls_probe result")
    for leaf, alert in ((None, "certificate required"), (p.expired, "certificate expired"),
                        (p.rogue, "unknown ca")):
        r = pki.tls_probe("127.0.0.1", port, server_name="localhost", ca=p.ca.cert,
                          cert=leaf and leaf.cert, key=leaf and leaf.key)
        mp.check(not r["ok"] and alert in (r["error"] or "").lower(),
                 "tls_probe with %s: %r" % (leaf, r))
    tls12 = pki.tls_probe("127.0.0.1", port, server_name="localhost", ca=p.ca.cert,
                          max_version=ssl.TLSVersion.TLSv1_2, alpn=["http/1.1"])
    mp.check(not tls12["ok"] and tls12["stage"] == "handshake",
             "TLS 1.2 without a cert fails in the handshake: %r" % tls12)


def test_s_client_shows_serial_and_sans():
    p = the_pki()
    proc, port = start_s_server(p, verify=False)
    r = openssl("s_client", "-connect", "127.0.0.1:%d" % port, "-servername", "localhost",
                "-CAfile", p.ca.cert, "-verify_return_error", input=b"")
    out = r.stdout.decode("utf-8", "replace")
    mp.check("Verify return code: 0 (ok)" in out, "s_client verify:\n" + out[-2000:])
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    mp.check(pem, "no certificate in s_client output")
    x = openssl("x509", "-noout", "-serial", "-ext", "subjectAltName",
                input=pem.group(0).encode()).stdout.decode()
    mp.check("serial=5E01" in x and "spiffe://cluster.local/ns/default/sa/web" in x,
             "s_client's server cert: " + x)


# ---------------------------------------------------------------- nginx

NGINX_MTLS = """
    server {
        listen 127.0.0.1:$port ssl http2;
        server_name localhost web.test;
        ssl_certificate %(chain)s;
        ssl_certificate_key %(key)s;
        ssl_client_certificate %(ca)s;
        ssl_verify_client on;
        ssl_verify_depth 2;
        location / { return 200 "serial=$$ssl_client_serial verify=$$ssl_client_verify\\n"; }
    }
    server {
        listen 127.0.0.1:$port ssl http2;
        server_name alt.test;
        ssl_certificate %(alt_chain)s;
        ssl_certificate_key %(alt_key)s;
        location / { return 200 "alt\\n"; }
    }
"""


def nginx_mtls(p):
    conf = NGINX_MTLS % {"chain": p.server.chain, "key": p.server.key, "ca": p.ca.cert,
                         "alt_chain": p.alt.chain, "alt_key": p.alt.key}
    return mp.Nginx(http_conf=conf)


def test_nginx_mtls_with_curl_and_tls_probe():
    p = the_pki()
    ng = nginx_mtls(p)
    code, body, err = curl_tls(ng.port, p.client, p)
    mp.eq((code, body), (200, b"serial=C11E verify=SUCCESS\n"), "good client via nginx (%s)"
          % err)
    # nginx finishes the handshake and refuses at the HTTP layer (400) instead of an alert.
    for leaf, what in ((None, b"No required SSL certificate"),
                       (p.expired, b"SSL certificate error"), (p.rogue, b"SSL certificate error")):
        code, body, err = curl_tls(ng.port, leaf, p)
        mp.eq(code, 400, "nginx with %s (%s)" % (leaf, err))
        mp.check(what in body, "nginx refusal page for %s: %r" % (leaf, body[:300]))
    for alpn, want in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        r = pki.tls_probe("127.0.0.1", ng.port, server_name="web.test", alpn=alpn,
                          ca=p.ca.cert, cert=p.client.cert, key=p.client.key)
        mp.check(r["ok"], "tls_probe %s: %r" % (alpn, r))
        mp.eq((r["alpn"], r["serial"]), (want, 0x5E01), "ALPN and serial")
        mp.eq(r["status"], None if want == "h2" else 200, "first exchange")
        mp.check(("URI", "spiffe://cluster.local/ns/default/sa/web") in r["sans"],
                 "SANs %r" % r["sans"])
    alt = pki.tls_probe("127.0.0.1", ng.port, server_name="alt.test", ca=p.ca.cert)
    mp.check(alt["ok"], "SNI alt.test: %r" % alt)
    mp.eq((alt["serial"], alt["subject_cn"]), (0xA17, "alt"), "SNI picks the alt chain")
    bad = pki.tls_probe("127.0.0.1", ng.port, server_name="alt.test", ca=p.other.cert)
    mp.check(not bad["ok"] and "unable to get local issuer" in bad["error"],
             "unknown server CA: %r" % bad)
    bad = pki.tls_probe("127.0.0.1", ng.port, server_name="web.test", ca=p.ca.cert,
                        check_hostname=True, exchange=False)
    mp.check(bad["ok"], "web.test is in the server cert: %r" % bad)
    bad = pki.tls_probe("127.0.0.1", ng.port, server_name="nope.test", ca=p.ca.cert)
    mp.check(not bad["ok"] and "hostname mismatch" in bad["error"].lower(),
             "wrong name: %r" % bad)
    mp.check(not mp.port_open(mp.refused_port()) and
             pki.tls_probe("127.0.0.1", mp.refused_port())["stage"] == "connect",
             "refused port reports the connect stage")


# ---------------------------------------------------------------- rotation under load

NGINX_ROTATE = """
    server {
        listen 127.0.0.1:$port ssl;
        keepalive_requests 100000;
        ssl_certificate $dir/live/cert.pem;
        ssl_certificate_key $dir/live/key.pem;
        ssl_session_tickets off;
        location / { return 200 "ok\\n"; }
    }
"""


def nginx_workers_settled(master, want):
    """True when nginx's master has exactly `want` children, none of them shutting down."""
    with open("/proc/%d/task/%d/children" % (master, master)) as f:
        kids = [int(x) for x in f.read().split()]
    for k in kids:
        try:
            with open("/proc/%d/cmdline" % k, "rb") as f:
                if b"shutting down" in f.read():
                    return False
        except OSError:
            return False
    return len(kids) == want


def test_rotation_load_against_nginx_reload():
    p = the_pki()
    # The nginx dir is created by mp.Nginx; the first certificate must exist before it starts.
    live = mp.tmpdir("mp-rotate-")
    leaves = [p.inter.issue("rot%d" % i, uri=pki.spiffe_id("default", "web"),
                            dns=["localhost"], usage="server", serial=0x2000 + i)
              for i in range(4)]
    pki.replace_file(os.path.join(live, "cert.pem"), leaves[0].chain)
    pki.replace_file(os.path.join(live, "key.pem"), leaves[0].key)
    # workers=2 runs a master process: reload (SIGHUP) starts new workers with the new
    # certificate and lets the old ones finish; single-process nginx does not reload cleanly.
    ng = mp.Nginx(http_conf=NGINX_ROTATE.replace("$dir/live", live), workers=2)

    def rotate(i):
        pki.replace_file(os.path.join(live, "cert.pem"), leaves[i].chain)
        pki.replace_file(os.path.join(live, "key.pem"), leaves[i].key)
        r = subprocess.run(["nginx", "-p", ng.dir, "-c", ng.conf_path, "-s", "reload"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        mp.check(r.returncode == 0, "nginx -s reload: %s" % r.stdout.decode())
        mp.wait_until(lambda: pki.tls_probe("127.0.0.1", ng.port, server_name="localhost",
                                            ca=p.ca.cert, exchange=False)["serial"]
                      == leaves[i].serial, 10, what="nginx serving serial %#x"
                      % leaves[i].serial)
        # The new workers are up.  A reload is not atomic: old workers may still accept from
        # the shared listen socket until they exit, so the rotation is done when only new
        # workers are left.
        mp.wait_until(lambda: nginx_workers_settled(ng.pid, 2), 10,
                      what="old nginx workers to exit")

    res = pki.rotation_load("127.0.0.1", ng.port, rotate, rotations=3, requests=2000,
                            ca=p.ca.cert, server_name="localhost")
    print("    %r" % res, flush=True)
    mp.eq(res.rotation_errors + [f[2] for f in res.failures[:3]], [], "rotation errors")
    mp.eq(res.failures[:5], [], "failed requests (%d of them; first 5 shown)" % len(res.failures))
    mp.check(res.requests >= 2000, "only %d requests" % res.requests)
    mp.eq(res.epoch, 3, "rotations done")
    mp.check(res.connections >= 250, "only %d new connections" % res.connections)
    for i, leaf in enumerate(leaves):
        mp.eq(res.serials(i), {leaf.serial}, "serials on stable new handshakes, epoch %d" % i)
    mp.check(ng.proc.poll() is None, "nginx died")


test_rotation_load_against_nginx_reload.timeout = 120


def test_rotation_load_reports_what_went_wrong():
    """Negative controls: the helper must not make a broken rotation look good.  A rotation
    that only replaces the files (no reload) leaves the old serial on new handshakes; a
    rotation that stops the server turns into failures and a rotation error, within bounds."""
    p = the_pki()
    live = mp.tmpdir("mp-rotate-")
    pki.replace_file(os.path.join(live, "cert.pem"), p.server.chain)
    pki.replace_file(os.path.join(live, "key.pem"), p.server.key)
    ng = mp.Nginx(http_conf=NGINX_ROTATE.replace("$dir/live", live))

    def files_only(i):
        pki.replace_file(os.path.join(live, "cert.pem"), p.alt.chain)
        pki.replace_file(os.path.join(live, "key.pem"), p.alt.key)

    # tail: enough requests after the rotation that new handshakes happen in that epoch (about
    # one per 8 requests); with 20 there were sometimes none to look at.
    res = pki.rotation_load("127.0.0.1", ng.port, files_only, rotations=1, requests=200,
                            tail=160, ca=p.ca.cert, server_name="localhost")
    mp.eq((res.failures, res.rotation_errors), ([], []), "files-only rotation")
    mp.eq(res.serials(1), {p.server.serial}, "without a reload nginx keeps the old serial")

    def kill(i):
        ng.stop()
        raise RuntimeError("server stopped")

    t0 = time.monotonic()
    res = pki.rotation_load("127.0.0.1", ng.port, kill, rotations=1, requests=200, tail=20,
                            ca=p.ca.cert, server_name="localhost", deadline_s=20)
    mp.check(res.failures and "Connection refused" in res.failures[-1][2],
             "requests after the server died: %r" % res.failures[-3:])
    mp.check(res.rotation_errors and "server stopped" in res.rotation_errors[0],
             "rotation error: %r" % res.rotation_errors)
    mp.check(res.requests + len(res.failures) <= 3 * 200 + 20 + 4,
             "load not bounded: %r" % res)
    mp.check(time.monotonic() - t0 < 20, "load overran its deadline")


if __name__ == "__main__":
    import run
    run.main([os.path.abspath(__file__)])
