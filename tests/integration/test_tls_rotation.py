"""magpie rotating certificates from file-based SDS while it serves: the SDS file (a
DiscoveryResponse with Secret resources) is replaced by rename, rewritten in place, or swapped
the Kubernetes way (a `..data` symlink); magpie watches the directory with inotify, rebuilds the
TLS context and new handshakes get the new certificate while existing connections go on.
Clients: Python's ssl/http.client (pki.rotation_load, keep-alive and new connections), curl
(new connections and keep-alive runs, and the serial it was shown), and pki.tls_probe.  The PKI
is made at test time (pki.py)."""

import json
import os
import re
import subprocess
import threading
import time

import mp
import pki

_PKI = {}


def _pki():
    if not _PKI:
        d = mp.tmpdir("mp-rot-")
        ca = pki.CA(d)
        newca = pki.CA(d, name="newroot")
        leaves = [ca.issue("srv%d" % i, uri=pki.spiffe_id("default", "magpie"),
                           dns=["localhost"], usage="server", serial=0x7000 + i, days=30)
                  for i in range(1, 7)]
        _PKI.update(dir=d, ca=ca, newca=newca, leaves=leaves,
                    old_client=ca.issue("oldclient", uri=pki.spiffe_id("default", "a"),
                                        usage="client"),
                    new_client=newca.issue("newclient", uri=pki.spiffe_id("default", "b"),
                                           usage="client"))
    return _PKI


def _sds_block(cert_path, trust_path=None):
    lines = [
        "    - transport_socket:",
        "        name: envoy.transport_sockets.tls",
        "        typed_config:",
        "          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
        "DownstreamTlsContext",
        "          require_client_certificate: %s" % ("true" if trust_path else "false"),
        "          common_tls_context:",
        "            alpn_protocols: [http/1.1]",
        "            tls_certificate_sds_secret_configs:",
        "            - name: server",
        "              sds_config: {path_config_source: {path: %s}}" % cert_path,
    ]
    if trust_path:
        lines += [
            "            validation_context_sds_secret_config:",
            "              name: trust",
            "              sds_config: {path_config_source: {path: %s}}" % trust_path,
        ]
    return "\n".join(lines) + "\n      filters:"


def start(cert_path, trust_path=None):
    up = mp.TestUpstream()
    port = mp.free_port()
    cfg = mp.simple_config(up.port).replace("    - filters:", _sds_block(cert_path, trust_path), 1)
    m = mp.Magpie(cfg, ports={"port": port}, concurrency=2)
    return m, up, port


def serial_now(port, p):
    r = pki.tls_probe("127.0.0.1", port, server_name="localhost", ca=p["ca"].ca_file,
                      exchange=False)
    return r["serial"] if r["ok"] else None


def wait_serial(m, port, p, want, timeout=10.0):
    """Polls new handshakes until they present serial `want` (bounded)."""
    try:
        mp.wait_until(lambda: serial_now(port, p) == want, timeout,
                      what="serial %#x on new handshakes" % want)
    except mp.TestFailure:
        m.fail("new handshakes still present %r, want %#x" % (serial_now(port, p), want))


def stat(m, name):
    return m.stats().get(name, 0)


def curl_serial(port, p):
    """(exit code, status, serial) of one curl request on a new connection."""
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}\n%{certs}",
                        "--cacert", p["ca"].ca_file, "--http1.1",
                        "--resolve", "localhost:%d:127.0.0.1" % port,
                        "https://localhost:%d/echo" % port],
                       capture_output=True, text=True, timeout=20)
    status, _, certs = r.stdout.partition("\n")
    m = re.search(r"Serial Number:\s*([0-9a-fA-F:]+)", certs)
    serial = int(m.group(1).replace(":", ""), 16) if m else None
    return r.returncode, status, serial


class CurlLoad:
    """A thread running curl over and over until stopped (at most `limit` runs): each run
    fetches 10 URLs over one keep-alive connection, so there are new connections and reused
    ones.  Records every status that is not 200."""

    def __init__(self, port, p, limit=400):
        self.port, self.p, self.limit = port, p, limit
        self.runs, self.ok, self.bad = 0, 0, []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        urls = ["https://localhost:%d/echo?n=%d" % (self.port, i) for i in range(10)]
        while not self.stop.is_set() and self.runs < self.limit:
            outs = ["-o", "/dev/null"] * len(urls)  # one per URL: curl pairs them in order
            r = subprocess.run(["curl", "-s", "-w", "%{http_code}\n",
                                "--cacert", self.p["ca"].ca_file, "--http1.1",
                                "--resolve", "localhost:%d:127.0.0.1" % self.port] + outs + urls,
                               capture_output=True, text=True, timeout=30)
            self.runs += 1
            codes = r.stdout.split()
            self.ok += codes.count("200")
            if r.returncode != 0 or codes != ["200"] * 10:
                self.bad.append((r.returncode, codes[:12], r.stderr[-200:]))

    def finish(self):
        self.stop.set()
        self.t.join(40)


def test_rotation_under_load():
    """2,000+ requests over keep-alive and new connections (Python) plus curl runs, while the
    SDS file is replaced three times: every request succeeds and, after each rotation, new
    handshakes present the new serial."""
    p = _pki()
    d = mp.tmpdir("mp-rot-sds-")
    path = pki.sds_file(os.path.join(d, "sds.yaml"), {"server": p["leaves"][0]})
    m, up, port = start(path)
    wait_serial(m, port, p, 0x7001)
    leaves = p["leaves"]

    def rotate(i):
        pki.sds_file(path, {"server": leaves[i]}, version=str(i + 1))
        wait_serial(m, port, p, leaves[i].serial)

    cl = CurlLoad(port, p)
    res = pki.rotation_load("127.0.0.1", port, rotate, rotations=3, requests=2000, workers=4,
                            ca=p["ca"].ca_file, server_name="localhost", deadline_s=150)
    cl.finish()
    print("    %r; curl runs %d" % (res, cl.runs), flush=True)
    mp.eq(res.rotation_errors + [f[2] for f in res.failures[:3]], [], "rotation errors/failures")
    mp.check(res.requests >= 2000, "requests: %r" % res)
    mp.eq(res.epoch, 3, "rotations done")
    for e in range(4):
        seen = res.serials(e)
        # Each epoch's stable handshakes saw exactly that epoch's certificate.
        mp.check(seen <= {leaves[e].serial}, "epoch %d served %r (want %#x): %r"
                 % (e, [hex(s) for s in seen], leaves[e].serial, res))
    mp.eq(res.serials(3), {leaves[3].serial}, "the last epoch's new handshakes")
    # magpie closes no keep-alive connection for a rotation: not one request needed a retry.
    mp.eq(res.retries, 0, "keep-alive requests retried on a new connection (%r)" % res)
    mp.eq(cl.bad, [], "curl runs that failed")
    mp.check(cl.runs >= 2 and cl.ok >= 20, "curl ran: %d runs" % cl.runs)
    rc, status, serial = curl_serial(port, p)
    mp.eq((rc, status, serial), (0, "200", leaves[3].serial), "curl sees the last certificate")
    mp.eq(stat(m, "sds.server.update_success"), 3, "sds.server.update_success")
    mp.eq(stat(m, "sds.server.update_rejected"), 0, "nothing rejected")
    mp.check(m.log().count("sds: rotated TLS context") == 3, "one info line per rotation")
    mp.check("serial 7004" in m.log(), "the log names the new serial")


test_rotation_under_load.timeout = 200


def test_broken_replacement_is_rejected():
    """Bad YAML, a missing secret, a key that does not match, an unreadable file: each is
    rejected with a log line naming the file, counted, and the old certificate stays."""
    p = _pki()
    d = mp.tmpdir("mp-rot-bad-")
    path = pki.sds_file(os.path.join(d, "sds.yaml"), {"server": p["leaves"][0]})
    m, up, port = start(path)
    wait_serial(m, port, p, 0x7001)
    mismatched = {"tls_certificate": {
        "certificate_chain": {"filename": p["leaves"][1].chain},
        "private_key": {"filename": p["leaves"][2].key}}}
    broken = [
        (lambda: pki.replace_file(path, b"resources: [unclosed\n"), "sds.yaml"),
        (lambda: pki.sds_file(path, {"other": p["leaves"][1]}), "no secret named"),
        (lambda: pki.sds_file(path, {"server": mismatched}), "does not match"),
        (lambda: pki.sds_file(path, {"server": {"tls_certificate": {
            "certificate_chain": {"filename": os.path.join(d, "absent.pem")},
            "private_key": {"filename": p["leaves"][1].key}}}}), "absent.pem"),
    ]
    for n, (write, needle) in enumerate(broken, 1):
        write()
        mp.wait_until(lambda: stat(m, "sds.server.update_rejected") >= n, 10,
                      what="rejection %d (%s)" % (n, needle))
        lines = [l for l in m.log().splitlines() if "sds: rejected" in l]
        mp.check(len(lines) == n and path in lines[-1] and needle in lines[-1],
                 "rejection %d logged with the file and %r: %r" % (n, needle, lines[-1:]))
        mp.eq(serial_now(port, p), 0x7001, "old certificate still served after %r" % needle)
    rc, status, serial = curl_serial(port, p)
    mp.eq((rc, status, serial), (0, "200", 0x7001), "curl after the rejections")
    mp.eq(stat(m, "sds.server.update_success"), 0, "no success counted")
    # A good file afterwards rotates as usual.
    pki.sds_file(path, {"server": p["leaves"][1]})
    wait_serial(m, port, p, 0x7002)
    mp.eq(stat(m, "sds.server.update_success"), 1, "then a success")


def _certs(m):
    st, body = m.admin("/certs")
    mp.eq(st, 200, "/certs status")
    return json.loads(body)["certificates"]


def test_in_place_rewrite_symlink_swap_and_certs():
    """An in-place rewrite and a Kubernetes-style `..data` symlink swap are both seen; /certs
    shows the certificate new handshakes get, with days_until_expiration."""
    p = _pki()
    d = mp.tmpdir("mp-rot-k8s-")
    # The projected-volume layout: sds.yaml -> ..data/sds.yaml, ..data -> ..v1.
    os.mkdir(os.path.join(d, "..v1"))
    pki.sds_file(os.path.join(d, "..v1", "sds.yaml"), {"server": p["leaves"][0]})
    os.symlink("..v1", os.path.join(d, "..data"))
    path = os.path.join(d, "sds.yaml")
    os.symlink("..data/sds.yaml", path)
    m, up, port = start(path)
    wait_serial(m, port, p, 0x7001)
    certs = _certs(m)
    mp.eq(len(certs), 1, "one TLS context")
    leaf = certs[0]["cert_chain"][0]
    mp.eq(int(leaf["serial_number"], 16), 0x7001, "/certs serial before")

    # Kubernetes swap: new directory, new symlink renamed over ..data.
    os.mkdir(os.path.join(d, "..v2"))
    pki.sds_file(os.path.join(d, "..v2", "sds.yaml"), {"server": p["leaves"][4]})
    os.symlink("..v2", os.path.join(d, "..data_tmp"))
    os.rename(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
    wait_serial(m, port, p, 0x7005)

    # In place: the same inode truncated and rewritten.
    target = os.path.join(d, "..v2", "sds.yaml")
    ino = os.stat(target).st_ino
    with open(target, "w") as f:
        f.write(pki.sds_yaml({"server": p["leaves"][5]}, version="3"))
    mp.eq(os.stat(target).st_ino, ino, "rewritten in place")
    wait_serial(m, port, p, 0x7006)

    leaf = _certs(m)[0]["cert_chain"][0]
    mp.eq(int(leaf["serial_number"], 16), 0x7006, "/certs shows the rotated serial")
    days = int(leaf["days_until_expiration"])
    mp.check(28 <= days <= 30, "days_until_expiration %r for a 30-day leaf" % days)
    mp.eq(leaf["subject_alt_names"][0], {"uri": pki.spiffe_id("default", "magpie")}, "URI SAN")
    mp.check({"dns": "localhost"} in leaf["subject_alt_names"], "DNS SAN")
    mp.check(leaf["expiration_time"].endswith("Z") and leaf["valid_from"] < leaf[
        "expiration_time"], "timestamps: %r" % leaf)
    mp.eq(leaf["path"], p["leaves"][5].chain, "path of the certificate")
    mp.eq(stat(m, "sds.server.update_success"), 2, "two rotations")


def test_trusted_ca_rotation_for_client_verification():
    """mTLS: the validation context comes from SDS too.  A client certificate from a new CA is
    refused before the trust file names that CA and accepted after; /certs lists the CA."""
    p = _pki()
    d = mp.tmpdir("mp-rot-ca-")
    cert_path = pki.sds_file(os.path.join(d, "cert.yaml"), {"server": p["leaves"][0]})
    trust_path = pki.sds_file(os.path.join(d, "trust.yaml"), {"trust": p["ca"]})
    m, up, port = start(cert_path, trust_path)

    def client(leaf):
        r = pki.tls_probe("127.0.0.1", port, server_name="localhost", ca=p["ca"].ca_file,
                          cert=leaf.cert, key=leaf.key)
        return r["ok"] and r["status"] == 200

    mp.check(client(p["old_client"]), "a client of the old CA before")
    mp.check(not client(p["new_client"]), "a client of the new CA refused before")
    pki.sds_file(trust_path, {"trust": p["newca"]})
    mp.wait_until(lambda: client(p["new_client"]), 10, what="new CA trusted")
    mp.check(not client(p["old_client"]), "the old CA is no longer trusted")
    mp.eq(stat(m, "sds.trust.update_success"), 1, "sds.trust.update_success")
    mp.eq(stat(m, "sds.server.update_attempt"), 0, "the certificate secret did not change")
    ca_certs = _certs(m)[0]["ca_cert"]
    mp.eq(len(ca_certs), 1, "one trusted CA")
    mp.eq(ca_certs[0]["path"], p["newca"].ca_file, "the new CA's file")
    mp.check(any(l for l in m.log().splitlines()
                 if "sds: rotated" in l and "trust" in l and "1 trusted CA" in l),
             "rotation of the trust secret logged")


if __name__ == "__main__":
    import run
    run.main([__file__])
