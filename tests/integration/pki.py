"""Test PKI and TLS client tools, built at test time with the `openssl` CLI and Python's ssl.

Certificates:

    ca = pki.CA(mp.tmpdir())                       # root CA, EC P-256, "magpie test root"
    inter = ca.intermediate("int")                 # optional: a CA under the root
    srv = inter.issue("server", uri="spiffe://cluster.local/ns/default/sa/web",
                      dns=["localhost"], usage="server", serial=0x1001)
    srv.cert, srv.key, srv.chain, srv.pem, srv.serial, srv.ca_file
    old = ca.issue("old", usage="client", expired=True)   # notAfter yesterday
    other = pki.CA(d, name="other")                # a second, untrusted root

Every leaf is signed with `openssl ca` so that notBefore/notAfter can be set exactly: notBefore
is one hour in the past (no clock-skew failures), notAfter `days` ahead, or, with expired=True,
notBefore 30 days and notAfter one day in the past.  Serial numbers are chosen by the caller
(rotation tests identify a certificate by serial) or handed out in order from 0x1000 per CA.
EC P-256 keys by default (a few milliseconds each); key="rsa" gives RSA 2048 (~0.25 s each).

SDS: sds_file(path, {"server": leaf, "ca": ca}) writes a file-based SDS DiscoveryResponse and
replaces the file atomically (temp file + rename, which is what an inotify watcher on the
directory sees as a move), as Envoy's path_config_source expects.  replace_file() does the same
for a certificate or key file.

Clients: tls_probe() makes one TLS connection (optionally with a client certificate, SNI, ALPN)
and reports what was negotiated and the server certificate's serial and SANs, or the handshake
error.  rotation_load() drives a bounded HTTP/1.1-over-TLS load over keep-alive and new
connections while a callback rotates the server certificate, and reports every failure and the
serials seen on new handshakes per rotation.
"""

import datetime
import http.client
import json
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time

SPIFFE_TRUST_DOMAIN = "cluster.local"


def spiffe_id(ns, sa, trust_domain=SPIFFE_TRUST_DOMAIN):
    """The SPIFFE ID Istio-style meshes give a workload: spiffe://<td>/ns/<ns>/sa/<sa>."""
    return "spiffe://%s/ns/%s/sa/%s" % (trust_domain, ns, sa)


class PkiError(RuntimeError):
    pass


def _openssl(args, cwd=None):
    r = subprocess.run(["openssl"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       cwd=cwd, timeout=30)
    if r.returncode != 0:
        raise PkiError("openssl %s failed (%d):\n%s" % (" ".join(args), r.returncode,
                                                       r.stderr.decode("utf-8", "replace")))
    return r.stdout.decode("utf-8", "replace")


def _asn1_time(dt):
    # UTCTime form (YYMMDDHHMMSSZ), which `openssl ca -startdate/-enddate` takes for years < 2050.
    return dt.astimezone(datetime.timezone.utc).strftime("%y%m%d%H%M%SZ")


def _newkey_args(key):
    if key == "ec":
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    if key == "rsa":
        return ["-newkey", "rsa:2048"]
    raise PkiError("key must be 'ec' or 'rsa', not %r" % key)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


CA_CONF = """\
[ca]
default_ca = ca_default
[ca_default]
dir = %(dir)s
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir/issued
certificate = $dir/ca.crt
private_key = $dir/ca.key
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
[policy_any]
commonName = supplied
organizationName = optional
organizationalUnitName = optional
[req]
distinguished_name = req_dn
prompt = no
[req_dn]
CN = unused
[root_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""


class Leaf:
    """An issued certificate.  cert: the leaf alone; key: its private key (PEM, unencrypted);
    chain: leaf then intermediates (what a server or client presents); pem: chain + key in one
    file (HAProxy's `crt`); ca_file: the root that verifies it; serial: an int; uri/dns/ips: the
    SANs it carries."""

    def __init__(self, name, cert, key, chain, pem, ca_file, serial, uri, dns, ips, not_after):
        self.name, self.cert, self.key, self.chain, self.pem = name, cert, key, chain, pem
        self.ca_file, self.serial, self.not_after = ca_file, serial, not_after
        self.uri, self.dns, self.ips = uri, list(dns), list(ips)

    def __repr__(self):
        return "Leaf(%s, serial=%#x, uri=%s)" % (self.name, self.serial, self.uri)


class CA:
    """A certificate authority in dir/<name>/.  A root unless parent is given (then it is an
    intermediate signed by parent; ca_file stays the root's certificate, chain_certs lists the
    intermediates a leaf must carry)."""

    def __init__(self, dir, name="root", cn=None, key="ec", days=3650, parent=None, serial=None):
        self.name = name
        self.dir = os.path.join(dir, name)
        self.parent = parent
        self._next_serial = 0x1000
        self._lock = threading.Lock()
        os.makedirs(os.path.join(self.dir, "issued"), exist_ok=True)
        self.conf = os.path.join(self.dir, "ca.cnf")
        _write(self.conf, (CA_CONF % {"dir": self.dir}).encode())
        self.cert = os.path.join(self.dir, "ca.crt")
        self.key = os.path.join(self.dir, "ca.key")
        cn = cn or "magpie test %s" % name
        if parent is None:
            _openssl(["req", "-x509", "-new", "-nodes"] + _newkey_args(key) +
                     ["-keyout", self.key, "-out", self.cert, "-subj", "/CN=%s" % cn,
                      "-days", str(days), "-config", self.conf, "-extensions", "root_ext",
                      "-set_serial", str(serial or 1)])
            self.ca_file = self.cert
            self.chain_certs = []
        else:
            csr = os.path.join(self.dir, "ca.csr")
            _openssl(["req", "-new", "-nodes"] + _newkey_args(key) +
                     ["-keyout", self.key, "-out", csr, "-subj", "/CN=%s" % cn])
            ext = ("basicConstraints = critical,CA:TRUE,pathlen:0\n"
                   "keyUsage = critical,keyCertSign,cRLSign\n"
                   "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n")
            parent._sign(csr, self.cert, ext, serial, days, expired=False)
            self.ca_file = parent.ca_file
            self.chain_certs = [self.cert] + parent.chain_certs
        # Trust bundle for peers that want root + intermediates in one file.
        self.bundle = os.path.join(self.dir, "bundle.pem")
        _write(self.bundle, b"".join(_read(p) for p in [self.ca_file] + self.chain_certs))

    def intermediate(self, name, cn=None, key="ec", serial=None):
        return CA(os.path.dirname(self.dir), name=name, cn=cn, key=key, parent=self,
                  serial=serial)

    def _take_serial(self, serial):
        with self._lock:
            if serial is None:
                serial = self._next_serial
                self._next_serial += 1
            return serial

    def _sign(self, csr, out, ext, serial, days, expired):
        serial = self._take_serial(serial)
        now = datetime.datetime.now(datetime.timezone.utc)
        if expired:
            start, end = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
        else:
            start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)
        extfile = out + ".ext"
        _write(extfile, ("[ext]\n" + ext).encode())
        with self._lock:
            # A fresh database each time: `openssl ca` refuses a serial already in its index,
            # and tests re-issue on purpose (same serial, different key) in rotation cases.
            _write(os.path.join(self.dir, "index.txt"), b"")
            hexs = "%X" % serial
            _write(os.path.join(self.dir, "serial"), (hexs.zfill(len(hexs) + len(hexs) % 2)
                                                      + "\n").encode())
            _openssl(["ca", "-batch", "-notext", "-config", self.conf, "-in", csr, "-out", out,
                      "-startdate", _asn1_time(start), "-enddate", _asn1_time(end),
                      "-extfile", extfile, "-extensions", "ext"])
        return serial, end

    def issue(self, name, uri=None, dns=(), ips=(), usage="both", serial=None, days=30,
              expired=False, key="ec", cn=None):
        """Signs a leaf for `name` (files dir/<ca>/<name>.crt/.key/.chain.pem/.pem).
        uri: a URI SAN (the SPIFFE ID), dns/ips: DNS and IP SANs; usage: "server", "client" or
        "both" (extendedKeyUsage); serial: an int, or the CA's next; expired: notAfter
        yesterday.  Returns a Leaf."""
        eku = {"server": "serverAuth", "client": "clientAuth",
               "both": "serverAuth,clientAuth"}[usage]
        base = os.path.join(self.dir, name)
        cert, keyf, csr = base + ".crt", base + ".key", base + ".csr"
        _openssl(["req", "-new", "-nodes"] + _newkey_args(key) +
                 ["-keyout", keyf, "-out", csr, "-subj", "/CN=%s" % (cn or name)])
        sans = (["URI:" + uri] if uri else []) + ["DNS:" + d for d in dns] + \
               ["IP:" + i for i in ips]
        ku = "digitalSignature" + (",keyEncipherment" if key == "rsa" else "")
        ext = ("basicConstraints = critical,CA:FALSE\nkeyUsage = critical,%s\n"
               "extendedKeyUsage = %s\nsubjectKeyIdentifier = hash\n"
               "authorityKeyIdentifier = keyid\n" % (ku, eku))
        if sans:
            ext += "subjectAltName = %s\n" % ",".join(sans)
        serial, not_after = self._sign(csr, cert, ext, serial, days, expired)
        chain, pem = base + ".chain.pem", base + ".pem"
        chain_bytes = _read(cert) + b"".join(_read(p) for p in self.chain_certs)
        _write(chain, chain_bytes)
        _write(pem, chain_bytes + _read(keyf))
        return Leaf(name, cert, keyf, chain, pem, self.ca_file, serial, uri, dns, ips,
                    not_after)


# ---------------------------------------------------------------- files that rotate

def replace_file(dst, data_or_path):
    """Atomically replaces dst with bytes (or a file's contents): write a temp file in the same
    directory, fsync, rename.  A reader never sees a half-written file; an inotify watcher on
    the directory sees IN_MOVED_TO."""
    data = data_or_path if isinstance(data_or_path, bytes) else _read(data_or_path)
    d = os.path.dirname(os.path.abspath(dst))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(dst))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _yq(s):
    # A double-quoted YAML scalar; JSON string escaping is valid YAML.
    return json.dumps(str(s))


SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def sds_yaml(secrets, version="1"):
    """The text of a DiscoveryResponse holding one Secret per entry of secrets (a dict name ->
    Leaf (tls_certificate from its chain and key), CA (validation_context trusted_ca = its
    root), or a dict (the Secret's body as given, e.g. {"validation_context": {...}}))."""
    out = ["version_info: %s" % _yq(version), "resources:"]
    for name, s in secrets.items():
        out += ['- "@type": %s' % _yq(SECRET_TYPE), "  name: %s" % _yq(name)]
        if isinstance(s, Leaf):
            out += ["  tls_certificate:",
                    "    certificate_chain: {filename: %s}" % _yq(s.chain),
                    "    private_key: {filename: %s}" % _yq(s.key)]
        elif isinstance(s, CA):
            out += ["  validation_context:",
                    "    trusted_ca: {filename: %s}" % _yq(s.ca_file)]
        elif isinstance(s, dict):
            out += _dict_yaml(s, 1)
        else:
            raise PkiError("secret %r: want a Leaf, a CA or a dict, got %r" % (name, s))
    return "\n".join(out) + "\n"


def _dict_yaml(d, depth):
    lines = []
    for k, v in d.items():
        pad = "  " * depth
        if isinstance(v, dict):
            lines.append("%s%s:" % (pad, k))
            lines += _dict_yaml(v, depth + 1)
        elif isinstance(v, (list, tuple)):
            # JSON is a subset of YAML: a flow sequence keeps nested matchers exact.
            lines.append("%s%s: %s" % (pad, k, json.dumps(v)))
        elif isinstance(v, bool):
            lines.append("%s%s: %s" % (pad, k, "true" if v else "false"))
        elif isinstance(v, int):
            lines.append("%s%s: %d" % (pad, k, v))
        else:
            lines.append("%s%s: %s" % (pad, k, _yq(v)))
    return lines


def sds_file(path, secrets, version="1"):
    """Writes sds_yaml(secrets) to path atomically (see replace_file).  Returns path."""
    replace_file(path, sds_yaml(secrets, version).encode())
    return path


# ---------------------------------------------------------------- DER: serial and SANs

def _der(buf, i):
    """(tag, start of contents, end of contents) of the DER element at buf[i]."""
    tag, n = buf[i], buf[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(buf[i:i + k], "big")
        i += k
    return tag, i, i + n


def _children(buf, start, end):
    while start < end:
        tag, s, e = _der(buf, start)
        yield tag, s, e
        start = e


_OID_SAN = bytes([0x55, 0x1D, 0x11])
_OID_CN = bytes([0x55, 0x04, 0x03])


def _san_list(buf, s, e):
    names = {0x81: "email", 0x82: "DNS", 0x86: "URI"}
    out = []
    _, s, e = _der(buf, s)  # the GeneralNames SEQUENCE
    for tag, gs, ge in _children(buf, s, e):
        if tag in names:
            out.append((names[tag], buf[gs:ge].decode("ascii", "replace")))
        elif tag == 0x87:
            raw = buf[gs:ge]
            ip = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
            out.append(("IP", ip))
    return out


def _name_cn(buf, s, e):
    for _, ss, se in _children(buf, s, e):          # SET
        for _, as_, ae in _children(buf, ss, se):   # AttributeTypeAndValue
            parts = list(_children(buf, as_, ae))
            if buf[parts[0][1]:parts[0][2]] == _OID_CN:
                return buf[parts[1][1]:parts[1][2]].decode("utf-8", "replace")
    return None


def cert_info(der):
    """{serial: int, sans: [(kind, value)], subject_cn, issuer_cn} of a DER certificate."""
    _, s, e = _der(der, 0)
    _, s, e = _der(der, s)  # tbsCertificate
    fields = list(_children(der, s, e))
    if fields[0][0] == 0xA0:
        fields = fields[1:]
    serial = int.from_bytes(der[fields[0][1]:fields[0][2]], "big", signed=True)
    info = {"serial": serial, "sans": [], "issuer_cn": _name_cn(der, *fields[2][1:]),
            "subject_cn": _name_cn(der, *fields[4][1:])}
    for tag, xs, xe in fields[6:]:
        if tag != 0xA3:
            continue
        _, xs, xe = _der(der, xs)
        for _, es, ee in _children(der, xs, xe):
            parts = list(_children(der, es, ee))
            if der[parts[0][1]:parts[0][2]] == _OID_SAN:
                info["sans"] = _san_list(der, parts[-1][1], parts[-1][2])
    return info


# ---------------------------------------------------------------- clients

def client_context(ca=None, cert=None, key=None, alpn=None, server_name=None,
                   check_hostname=None, min_version=None, max_version=None):
    """An ssl.SSLContext for a test client.  ca: a CA file (verify the server) or None (no
    verification); cert/key: the client certificate; alpn: a list of protocol names."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.check_hostname = bool(server_name) if check_hostname is None else check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def _first_exchange(s, alpn, path, host):
    """Proves the connection is usable past the handshake.  Under TLS 1.3 a server that rejects
    the client certificate says so only after the client's handshake has finished, in an alert
    that arrives on the first read."""
    if alpn == "h2":
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        head = s.recv(9)
        if len(head) < 9 or head[3] != 0x04:
            raise ConnectionError("no SETTINGS frame from the h2 server (got %r)" % head)
        return None
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
               % (path, host)).encode())
    data = b""
    while b"\r\n" not in data and len(data) < 4096:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    if not data.startswith(b"HTTP/"):
        raise ConnectionError("no HTTP response (got %r)" % data[:100])
    return int(data.split(b" ", 2)[1])


def tls_probe(host, port, server_name=None, alpn=None, ca=None, cert=None, key=None,
              check_hostname=None, path="/", exchange=True, timeout=5.0, min_version=None,
              max_version=None):
    """One TLS connection to host:port.  Returns a dict:

      ok        True when the handshake (and, with exchange, the first exchange) succeeded
      error     the failure text (verify message, alert, reset) when not ok
      stage     "connect", "handshake" or "exchange": where it failed
      version   "TLSv1.3" ...; alpn: the negotiated protocol or None; cipher: its name
      serial, sans, subject_cn, issuer_cn: of the server's leaf certificate
      status    the HTTP status of GET path (HTTP/1.1), or None for h2 (a SETTINGS frame seen)

    server_name sets SNI (and, with ca, the name checked unless check_hostname=False); ca:
    verify the server against this file (None: accept anything, still report the cert);
    cert/key: client certificate for mTLS."""
    ctx = client_context(ca, cert, key, alpn, server_name, check_hostname, min_version,
                         max_version)
    res = {"ok": False, "error": None, "stage": "connect", "version": None, "alpn": None,
           "cipher": None, "serial": None, "sans": [], "subject_cn": None, "issuer_cn": None,
           "status": None}
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        res["error"] = str(e)
        return res
    try:
        res["stage"] = "handshake"
        s = ctx.wrap_socket(raw, server_hostname=server_name)
        raw = s
        res.update(version=s.version(), alpn=s.selected_alpn_protocol(), cipher=s.cipher()[0])
        der = s.getpeercert(binary_form=True)
        if der:
            res.update(cert_info(der))
        res["stage"] = "exchange"
        if exchange:
            res["status"] = _first_exchange(s, res["alpn"], path, server_name or host)
        res["ok"] = True
        res["stage"] = None
    except ssl.SSLCertVerificationError as e:
        res["error"] = "verify: %s" % (e.verify_message or e)
    except (OSError, ssl.SSLError, ConnectionError) as e:
        res["error"] = str(e) or type(e).__name__
    finally:
        raw.close()
    return res


# ---------------------------------------------------------------- rotation under load

class RotationResult:
    """requests: requests that got a response; failures: [(request index, rotation epoch,
    error)]; retries: reused keep-alive connections the server had closed before the request
    (retried once on a new connection, as an HTTP client does; not failures); handshakes:
    [(epoch, serial, stable)] for every new connection, where epoch is the number of rotations
    whose callback had returned when the handshake began and stable says no rotation callback
    was running at any time during the handshake (only stable handshakes say which certificate
    an epoch serves); connections: new connections made."""

    def __init__(self):
        self.requests = 0
        self.failures = []
        self.retries = 0
        self.handshakes = []
        self.connections = 0
        self.epoch = 0
        self.changes = 0  # 2 per rotation: odd while a rotation callback runs
        self.rotation_errors = []

    def serials(self, epoch=None, stable=True):
        """Serials seen on new handshakes of that epoch (all epochs if None); with stable, only
        handshakes no rotation overlapped."""
        return {s for e, s, st in self.handshakes
                if (epoch is None or e == epoch) and (st or not stable)}

    def __repr__(self):
        return ("RotationResult(requests=%d, connections=%d, retries=%d, failures=%d, "
                "serials by epoch=%r)" % (
                    self.requests, self.connections, self.retries, len(self.failures),
                    {e: sorted(self.serials(e)) for e in range(self.epoch + 1)}))


# Requests per connection, cycled by each worker: one-shot connections (a new handshake each)
# interleaved with keep-alive runs that live across rotations.
_CONN_LENGTHS = (1, 1, 1, 20, 1, 1, 50, 1, 1, 5)


class _TLSConnection(http.client.HTTPConnection):
    """http.client over TLS to an address with its own SNI / verified name (HTTPSConnection
    would send and check the address itself)."""

    def __init__(self, host, port, ctx, server_name, timeout):
        super().__init__(host, port, timeout=timeout)
        self._ctx, self._sni = ctx, server_name

    def connect(self):
        raw = socket.create_connection((self.host, self.port), self.timeout)
        try:
            self.sock = self._ctx.wrap_socket(raw, server_hostname=self._sni)
        except BaseException:
            raw.close()
            raise


class _Worker:
    def __init__(self, load, wid):
        self.load, self.wid, self.conn, self.left = load, wid, None, 0
        self.cycle = wid

    def _connect(self):
        ld = self.load
        changes = ld.res.changes
        c = _TLSConnection(ld.host, ld.port, ld.ctx, ld.server_name, ld.timeout)
        c.connect()
        der = c.sock.getpeercert(binary_form=True)
        with ld.lock:
            ld.res.connections += 1
            stable = changes == ld.res.changes and changes % 2 == 0
            ld.res.handshakes.append((changes // 2, cert_info(der)["serial"], stable))
        self.left = _CONN_LENGTHS[self.cycle % len(_CONN_LENGTHS)]
        self.cycle += 1
        return c

    def _close(self):
        if self.conn:
            self.conn.close()
        self.conn = None

    def one(self):
        """One request; a reused connection closed by the server before it answered is retried
        once on a new connection.  Returns an error string or None."""
        ld = self.load
        reused = self.conn is not None
        try:
            if self.conn is None:
                self.conn = self._connect()
            self.conn.request("GET", ld.path, headers={"Host": ld.server_name or ld.host})
            r = self.conn.getresponse()
            body = r.read()
            if r.status != 200:
                self._close()
                return "status %d %r" % (r.status, body[:80])
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
            self._close()
            if not reused:
                return "%s: %s" % (type(e).__name__, e)
            with ld.lock:
                ld.res.retries += 1
            return self.one()
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            self._close()
            return "%s: %s" % (type(e).__name__, e)
        self.left -= 1
        if self.left <= 0 or r.will_close:
            self._close()
        return None


class _Load:
    def __init__(self, host, port, ctx, path, server_name, timeout):
        self.host, self.port, self.ctx, self.path = host, port, ctx, path
        self.server_name, self.timeout = server_name, timeout
        self.lock = threading.Lock()
        self.res = RotationResult()
        self.issued = 0
        self.stop = threading.Event()


def rotation_load(host, port, rotate, rotations=3, requests=2000, workers=4, ca=None,
                  cert=None, key=None, server_name=None, path="/", tail=100, timeout=5.0,
                  deadline_s=120.0):
    """Runs at least `requests` HTTP/1.1 GETs over TLS from `workers` threads, each cycling
    through one-shot and keep-alive connections, while a controller thread calls rotate(i) for
    i = 1..rotations, each after requests / (rotations + 1) more requests since the previous one
    returned.  rotate must return once the new certificate
    is in force for new handshakes (poll with tls_probe); whatever it raises is recorded in
    rotation_errors.  The load goes on until every rotation has returned and `tail` more
    requests have completed after the last, so the last epoch always sees new handshakes.
    Bounded: at most 3 x requests + tail requests and deadline_s seconds.  Returns a
    RotationResult."""
    ld = _Load(host, port, client_context(ca, cert, key, None, server_name), path, server_name,
               timeout)
    limit = 3 * requests + tail
    t_end = time.monotonic() + deadline_s
    rot_done = threading.Event()
    after_last = [None]  # ld.issued when the last rotation returned

    def controller():
        try:
            since = 0
            for i in range(1, rotations + 1):
                # Each epoch gets its share of the load after the previous rotation returned,
                # however long that rotation took.
                target = since + requests // (rotations + 1)
                while ld.issued < target and not ld.stop.is_set():
                    time.sleep(0.005)
                if ld.stop.is_set():
                    return
                with ld.lock:
                    ld.res.changes += 1
                try:
                    rotate(i)
                except Exception as e:
                    ld.res.rotation_errors.append("rotation %d: %r" % (i, e))
                with ld.lock:
                    ld.res.epoch = i
                    ld.res.changes += 1
                    since = ld.issued
            with ld.lock:
                after_last[0] = ld.issued
        finally:
            rot_done.set()

    def finished():
        if ld.issued >= limit or time.monotonic() > t_end:
            return True
        return (ld.issued >= requests and rot_done.is_set() and
                (after_last[0] is None or ld.issued >= after_last[0] + tail))

    def work(wid):
        w = _Worker(ld, wid)
        while True:
            with ld.lock:
                if finished():
                    break
                ld.issued += 1
                idx, epoch = ld.issued, ld.res.epoch
            err = w.one()
            with ld.lock:
                if err:
                    ld.res.failures.append((idx, epoch, err))
                else:
                    ld.res.requests += 1
        w._close()

    ctl = threading.Thread(target=controller, daemon=True)
    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(workers)]
    ctl.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, t_end - time.monotonic() + timeout + 5))
    ld.stop.set()
    ctl.join(timeout + 5)
    if time.monotonic() > t_end:
        ld.res.failures.append((ld.issued, ld.res.epoch, "deadline of %.0fs reached"
                                % deadline_s))
    return ld.res
