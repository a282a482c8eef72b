"""TLS on both sides of the TCP proxy (docs/tcp-proxy.md, "TLS"):

- a TLS listener in front of envoy.filters.network.tcp_proxy terminates TLS (Python's ssl and
  `openssl s_client` as clients) and proxies the plaintext to a plain Python upstream: bytes both
  ways, 32 MiB checked by hash with bounded memory, close_notify as a half-close in each
  direction; with require_client_certificate a client without one is refused and counted;
- a tcp_proxy whose cluster has an UpstreamTlsContext originates TLS to `openssl s_server` and a
  Python ssl upstream, checks the server's SAN (a wrong one is refused and counted, and
  max_connect_attempts moves on to another host as for a failed connect);
- sidecar to sidecar: client -> magpie A (TLS cluster, client certificate) -> magpie B (mTLS
  listener, tcp_proxy) -> plain upstream."""

import hashlib
import os
import select
import socket
import ssl
import subprocess
import threading
import time

import mp
import pki
from test_tcp_proxy import (TcpUpstream, echo, endpoints_yaml, fin_first, finish, read_all,
                            recv_exact, reply_after_fin, wait_closed, wait_stat)

_PKI = {}
A_ID = pki.spiffe_id("default", "a")
B_ID = pki.spiffe_id("default", "b")


def _pki():
    if not _PKI:
        d = mp.tmpdir("mp-tptls-")
        ca = pki.CA(d)
        other = pki.CA(d, name="other")
        _PKI.update(
            dir=d, ca=ca,
            server=ca.issue("server", dns=["localhost"], ips=["127.0.0.1"], usage="server"),
            origin=ca.issue("origin", dns=["origin.local"], usage="server"),
            stranger=other.issue("stranger", dns=["origin.local"], usage="server"),
            a=ca.issue("a", uri=A_ID),
            b=ca.issue("b", uri=B_ID),
            evil=ca.issue("evil", uri=pki.spiffe_id("other", "evil")))
    return _PKI


# ---------------------------------------------------------------- configs

def downstream_tls(leaf, ca=None, require=False, peer_id=None):
    """A filter chain's DownstreamTlsContext (6 spaces: under `- `), ending before `filters:`."""
    lines = [
        "    - transport_socket:",
        "        name: envoy.transport_sockets.tls",
        "        typed_config:",
        "          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
        "DownstreamTlsContext",
        "          require_client_certificate: %s" % ("true" if require else "false"),
        "          common_tls_context:",
        "            tls_certificates:",
        "            - certificate_chain: {filename: %s}" % leaf.chain,
        "              private_key: {filename: %s}" % leaf.key,
    ]
    if ca is not None:
        lines += ["            validation_context:",
                  "              trusted_ca: {filename: %s}" % ca.ca_file]
        if peer_id:
            lines += ["              match_typed_subject_alt_names:",
                      "              - san_type: URI",
                      "                matcher: {exact: \"%s\"}" % peer_id]
    return "\n".join(lines) + "\n      filters:"


def upstream_tls(ca, leaf=None, san_type="DNS", san="origin.local", sni=None):
    lines = [
        "    transport_socket:",
        "      name: envoy.transport_sockets.tls",
        "      typed_config:",
        "        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
        "UpstreamTlsContext",
    ]
    if sni:
        lines.append("        sni: %s" % sni)
    lines.append("        common_tls_context:")
    if leaf is not None:
        lines += ["          tls_certificates:",
                  "          - certificate_chain: {filename: %s}" % leaf.chain,
                  "            private_key: {filename: %s}" % leaf.key]
    lines += ["          validation_context:",
              "            trusted_ca: {filename: %s}" % ca.ca_file,
              "            match_typed_subject_alt_names:",
              "            - san_type: %s" % san_type,
              "              matcher: {exact: \"%s\"}" % san]
    return "\n".join(lines) + "\n"


ACCESS = ("%UPSTREAM_CLUSTER% %BYTES_RECEIVED% %BYTES_SENT% %RESPONSE_FLAGS% %UPSTREAM_HOST% "
          "%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_TLS_VERSION%\\n")


def config(ports, listener_tls="", cluster_tls="", limit=1048576, tp_extra=""):
    chain = listener_tls if listener_tls else "    - filters:"
    return """\
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: $admin}
static_resources:
  listeners:
  - name: tcp
    address:
      socket_address: {address: 127.0.0.1, port_value: $port}
    per_connection_buffer_limit_bytes: %d
    filter_chains:
%s
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tp
          cluster: c1
%s
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: $dir/access.log
              log_format:
                text_format_source:
                  inline_string: "%s"
  clusters:
  - name: c1
    type: STATIC
    connect_timeout: 2s
%s    load_assignment:
      cluster_name: c1
      endpoints:
      - lb_endpoints:
%s""" % (limit, chain, tp_extra.rstrip("\n"), ACCESS, cluster_tls, endpoints_yaml(ports))


def start(ports, **kw):
    port = mp.free_port()
    m = mp.Magpie(config(ports, **kw), ports={"port": port})
    return m, port


def listener_ssl(m, name):
    for k, v in m.stats().items():
        if k.startswith("listener.") and k.endswith(".ssl." + name):
            return v
    raise mp.TestFailure("no listener ssl.%s stat" % name)


def cluster_ssl(m, name):
    return m.stats().get("cluster.c1.ssl.%s" % name, 0)


# ---------------------------------------------------------------- a TLS client with half-close

class TlsClient:
    """TLS over a non-blocking socket through memory BIOs, driven by one select loop, so that
    sending and receiving run at once without two threads in one SSL object, and so that
    close_notify can be sent alone (SSLObject.unwrap() once, with nothing buffered to read:
    a second SSL_shutdown would read, and drop, the data still on its way)."""

    def __init__(self, port, ctx, server_name=None, timeout=30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setblocking(False)
        self.inc, self.outg = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.outg, server_hostname=server_name)
        self.wbuf = b""
        self.sock_eof = False
        self.deadline = time.monotonic() + timeout
        self._until(self._try_handshake)

    def close(self):
        self.sock.close()

    def _try_handshake(self):
        try:
            self.obj.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def _io(self, want_read=True):
        self.wbuf += self.outg.read()
        if time.monotonic() > self.deadline:
            raise mp.TestFailure("TLS client timed out")
        r, w, _ = select.select([self.sock] if want_read else [],
                                [self.sock] if self.wbuf else [], [], 0.5)
        if w:
            try:
                n = self.sock.send(self.wbuf)
                self.wbuf = self.wbuf[n:]
            except BlockingIOError:
                pass
        if r:
            try:
                d = self.sock.recv(1 << 18)
            except BlockingIOError:
                return
            except ConnectionResetError:
                d = b""
            if d:
                self.inc.write(d)
            else:
                self.sock_eof = True
                self.inc.write_eof()

    def _until(self, done):
        while not done():
            if self.sock_eof:
                raise ConnectionError("connection closed")
            self._io()
        while self.wbuf or self.outg.pending:
            self._io(want_read=False)

    def _read_some(self, got):
        """Plaintext available now into got; True at close_notify."""
        while True:
            try:
                d = self.obj.read(1 << 18)
            except ssl.SSLWantReadError:
                return False
            except ssl.SSLZeroReturnError:
                return True
            if not d:
                return True
            got += d

    def exchange(self, payload=b"", half_close=False, want=None, to_eof=False):
        """Sends payload (then close_notify with half_close) while reading; returns what was
        read once want bytes arrived, or (to_eof) at the server's close_notify."""
        data = memoryview(payload)
        got = bytearray()
        shut = not half_close
        eof = False
        while True:
            while data and self.outg.pending < (1 << 20):
                n = self.obj.write(data[:65536])
                data = data[n:]
            if not data and not shut and self.inc.pending == 0:
                try:
                    self.obj.unwrap()
                except ssl.SSLWantReadError:
                    pass
                shut = True
            eof = eof or self._read_some(got)
            if (want is not None and len(got) >= want) or (to_eof and eof and shut):
                break
            if eof and not to_eof:
                raise ConnectionError("close_notify after %d bytes" % len(got))
            if self.sock_eof and self.inc.pending == 0 and not eof:
                raise ConnectionError("EOF without close_notify after %d bytes" % len(got))
            self._io()
        while self.wbuf or self.outg.pending:
            self._io(want_read=False)
        return bytes(got)


def client_ctx(p, cert=None):
    return pki.client_context(ca=p["ca"].ca_file, server_name="localhost",
                              cert=cert.chain if cert else None, key=cert.key if cert else None)


# ---------------------------------------------------------------- upstreams

class TlsUpstream(TcpUpstream):
    """A Python ssl server presenting leaf; the handler gets the TLS socket."""

    def __init__(self, handler, leaf, ca=None):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(leaf.chain, leaf.key)
        if ca is not None:
            self.ctx.load_verify_locations(ca.ca_file)
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.handshakes = 0
        self.peer_certs = []
        super().__init__(self._wrap(handler))

    def _wrap(self, handler):
        def serve(c, srv):
            try:
                t = self.ctx.wrap_socket(c, server_side=True)
            except (ssl.SSLError, OSError):
                return
            with self.lock:
                self.handshakes += 1
                self.peer_certs.append(t.getpeercert())
            handler(t, srv)
            try:
                t.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass
        return serve


def tls_echo(t, srv):
    """Echoes until the client's close_notify; unwrap (in TlsUpstream) answers with its own."""
    while True:
        d = t.recv(1 << 16)
        if not d:
            return
        t.sendall(d)


def s_server(leaf):
    """`openssl s_server -rev`: answers each line reversed."""
    port = mp.free_port()
    proc = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", leaf.chain,
                             "-key", leaf.key, "-rev", "-quiet"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    mp.on_cleanup(lambda: mp.stop_process(proc))
    mp.wait_until(lambda: mp.port_open(port), 10, what="openssl s_server listening")
    return port


def line_upstream(c, srv):
    """Reads one line, answers it upper-cased, and closes (a FIN, which magpie passes on as
    close_notify)."""
    data = b""
    while not data.endswith(b"\n"):
        d = c.recv(4096)
        if not d:
            break
        data += d
    srv.record(data)
    c.sendall(data.upper())
    c.shutdown(socket.SHUT_WR)


# ---------------------------------------------------------------- TLS terminated by the proxy

def test_tls_terminated_round_trip_python_client():
    p = _pki()
    up = TcpUpstream(echo)
    m, port = start([up.port], listener_tls=downstream_tls(p["server"]))
    payload = os.urandom(200000)
    c = TlsClient(port, client_ctx(p), "localhost")
    got = c.exchange(payload, half_close=True, to_eof=True)
    c.close()
    mp.check(got == payload, "200 kB echoed intact through TLS (%d bytes)" % len(got))
    n = len(payload)
    # Plaintext counts on both sides: the proxy counts decrypted bytes, not TLS records.
    for name in ("tcp.tp.downstream_cx_rx_bytes_total", "tcp.tp.downstream_cx_tx_bytes_total",
                 "cluster.c1.upstream_cx_tx_bytes_total", "cluster.c1.upstream_cx_rx_bytes_total"):
        wait_stat(m, name, lambda v: v == n, "%s == %d" % (name, n))
    wait_stat(m, "listener.127.0.0.1_%d.downstream_cx_active" % port, lambda v: v == 0,
              "connection closed by close_notify/FIN both ways")
    st = m.stats()
    mp.eq(st.get("listener.127.0.0.1_%d.downstream_cx_total" % port), 1, "listener cx counted once")
    mp.eq(st.get("tcp.tp.downstream_cx_total"), 1, "tcp.tp.downstream_cx_total")
    mp.eq(listener_ssl(m, "handshake"), 1, "listener ssl.handshake")
    line = m.access_lines(1)[-1].split(" ")
    mp.eq(line[:4], ["c1", str(n), str(n), "-"], "access log: cluster, bytes, no flags")
    mp.eq(line[5], "-", "access log: no client certificate, no peer URI SAN")
    mp.check(line[6].startswith("TLSv1."), "access log: TLS version, got %r" % line[6])
    finish(m)


def test_tls_terminated_openssl_s_client():
    p = _pki()
    up = TcpUpstream(line_upstream)
    m, port = start([up.port], listener_tls=downstream_tls(p["server"]))
    # -ign_eof: s_client keeps reading after its input ends, until magpie's close_notify (sent
    # when the upstream's FIN arrives) ends the session.
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile",
                        p["ca"].ca_file, "-servername", "localhost", "-verify_return_error",
                        "-quiet", "-ign_eof"],
                       input=b"hello through magpie\n", capture_output=True, timeout=20)
    mp.eq(r.stdout, b"HELLO THROUGH MAGPIE\n", "the upstream's answer, decrypted by s_client "
          "(stderr: %r)" % r.stderr[-300:])
    mp.eq(r.returncode, 0, "s_client verified the certificate and ended cleanly")
    mp.eq(up.received, [b"hello through magpie\n"], "the upstream got plaintext")
    finish(m)


def test_32mib_over_tls_both_ways_bounded_memory():
    p = _pki()
    up = TcpUpstream(echo)
    # A small limit: backpressure engages in both directions on the way.
    m, port = start([up.port], listener_tls=downstream_tls(p["server"]), limit=65536)
    size = 32 << 20
    payload = os.urandom(size)
    c = TlsClient(port, client_ctx(p), "localhost", timeout=120)
    got = c.exchange(payload, half_close=True, to_eof=True)
    c.close()
    mp.eq(len(got), size, "bytes echoed")
    mp.eq(hashlib.sha256(got).hexdigest(), hashlib.sha256(payload).hexdigest(),
          "32 MiB intact and in order")
    wait_stat(m, "tcp.tp.downstream_cx_tx_bytes_total", lambda v: v == size, "tx == 32 MiB")
    st = m.stats()
    mp.check(st.get("tcp.tp.downstream_flow_control_paused_reading_total", 0) >= 1,
             "backpressure engaged on the TLS side")
    if not mp.SANITIZED:
        # Buffers stay near the limit: the transfer must not be held in memory.
        hwm = mp.proc_status(m.pid, "VmHWM")
        mp.check(hwm < 40 << 20, "peak RSS %d MiB for a 32 MiB transfer" % (hwm >> 20))
    finish(m)


test_32mib_over_tls_both_ways_bounded_memory.timeout = 180


def test_tls_client_half_close_upstream_still_answers():
    p = _pki()
    up = TcpUpstream(reply_after_fin)
    m, port = start([up.port], listener_tls=downstream_tls(p["server"]))
    c = TlsClient(port, client_ctx(p), "localhost")
    # close_notify from the client becomes a FIN to the upstream, which answers after it.
    got = c.exchange(b"abcdef", half_close=True, to_eof=True)
    c.close()
    mp.eq(got, b"got 6 bytes: fedcba", "answer written after the client's close_notify")
    mp.eq(up.received, [b"abcdef"], "upstream saw the bytes then EOF")
    finish(m)


def test_tls_upstream_half_close_client_still_sends():
    p = _pki()
    up = TcpUpstream(fin_first)
    m, port = start([up.port], listener_tls=downstream_tls(p["server"]))
    c = TlsClient(port, client_ctx(p), "localhost")
    # The upstream's FIN reaches the client as close_notify; the client's direction stays open.
    mp.eq(c.exchange(to_eof=True), b"greeting", "greeting, then close_notify")
    c.exchange(b"still talking", half_close=True, to_eof=True)
    c.close()
    mp.wait_until(lambda: up.received, 5, what="upstream read to EOF")
    mp.eq(up.received, [b"still talking"], "bytes sent after magpie's close_notify")
    wait_stat(m, "listener.127.0.0.1_%d.downstream_cx_active" % port, lambda v: v == 0,
              "connection closed after both ends finished")
    finish(m)


def test_mtls_required_refuses_a_client_without_certificate():
    p = _pki()
    up = TcpUpstream(echo)
    m, port = start([up.port], listener_tls=downstream_tls(p["server"], p["ca"], require=True,
                                                           peer_id=A_ID))
    # Without a certificate: refused (in TLS 1.3 the alert may only show on the first read).
    refused = False
    try:
        c = TlsClient(port, client_ctx(p), "localhost", timeout=10)
        c.exchange(b"x", want=1)
    except (ssl.SSLError, ConnectionError, OSError):
        refused = True
    mp.check(refused, "a client without a certificate was served")
    mp.wait_until(lambda: listener_ssl(m, "no_certificate") >= 1, 5, what="ssl.no_certificate")
    # With the wrong identity: refused by SAN.
    try:
        c = TlsClient(port, client_ctx(p, p["evil"]), "localhost", timeout=10)
        c.exchange(b"x", want=1)
        mp.check(False, "a client with the wrong SPIFFE ID was served")
    except (ssl.SSLError, ConnectionError, OSError):
        pass
    mp.wait_until(lambda: listener_ssl(m, "fail_verify_san") >= 1, 5, what="ssl.fail_verify_san")
    mp.eq(up.connections, 0, "no refused client reached the upstream")
    # The right one gets through.
    c = TlsClient(port, client_ctx(p, p["a"]), "localhost")
    mp.eq(c.exchange(b"ping", half_close=True, to_eof=True), b"ping", "mTLS client echoed")
    c.close()
    line = m.access_lines(1)[-1].split(" ")
    mp.eq(line[5], A_ID, "access log: the client's SPIFFE ID (%DOWNSTREAM_PEER_URI_SAN%)")
    finish(m)


# ---------------------------------------------------------------- TLS originated by the proxy

def test_tls_to_openssl_s_server_verified_by_san():
    p = _pki()
    origin = s_server(p["origin"])
    m, port = start([origin], cluster_tls=upstream_tls(p["ca"], sni="origin.local"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"hello magpie\n")
        mp.eq(recv_exact(s, 13), b"eipgam olleh\n", "s_server -rev's answer over TLS")
    wait_stat(m, "cluster.c1.ssl.handshake", lambda v: v == 1, "cluster ssl.handshake")
    mp.eq(cluster_ssl(m, "fail_verify_san"), 0, "the SAN matched")
    finish(m)


def test_tls_sessions_resumed_per_upstream_connection():
    # Each downstream connection makes a new upstream one; every one after the first resumes
    # the session the origin issued before (max_session_keys defaults to 1).
    p = _pki()
    origin = s_server(p["origin"])
    m, port = start([origin], cluster_tls=upstream_tls(p["ca"], sni="origin.local"))
    for i in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"abc\n")
            mp.eq(recv_exact(s, 4), b"cba\n", "answer %d" % i)
        # s_server serves one connection at a time: wait for this one to be over.
        wait_stat(m, "cluster.c1.upstream_cx_destroy", lambda v, n=i + 1: v >= n,
                  "upstream connection %d closed" % i)
    mp.eq(cluster_ssl(m, "handshake"), 3, "handshakes")
    mp.eq(cluster_ssl(m, "session_reused"), 2, "resumed sessions")
    finish(m)


def test_tls_to_python_upstream_with_client_certificate():
    p = _pki()
    up = TlsUpstream(tls_echo, p["origin"], ca=p["ca"])
    m, port = start([up.port], cluster_tls=upstream_tls(p["ca"], leaf=p["a"],
                                                        sni="origin.local"))
    payload = os.urandom(3 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        got = bytearray()

        def reader():
            got.extend(read_all(s))
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)  # becomes close_notify to the upstream, which ends too
        t.join(60)
    mp.check(bytes(got) == payload, "3 MiB echoed through upstream TLS (%d bytes)" % len(got))
    uri = [v for k, v in up.peer_certs[0].get("subjectAltName", ()) if k == "URI"]
    mp.eq(uri, [A_ID], "the upstream saw magpie's client certificate")
    wait_stat(m, "cluster.c1.upstream_cx_active", lambda v: v == 0, "upstream closed")
    finish(m)


def test_wrong_san_is_refused_and_counted():
    p = _pki()
    up = TlsUpstream(tls_echo, p["origin"])
    m, port = start([up.port], cluster_tls=upstream_tls(p["ca"], san="elsewhere.local"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"secret")
        wait_closed(s, 10)
    wait_stat(m, "cluster.c1.ssl.fail_verify_san", lambda v: v >= 1, "ssl.fail_verify_san")
    st = m.stats()
    mp.check(st.get("cluster.c1.ssl.connection_error", 0) >= 1, "ssl.connection_error")
    mp.check(st.get("cluster.c1.upstream_cx_connect_fail", 0) >= 1, "counted as a connect fail")
    mp.eq(st.get("cluster.c1.ssl.handshake", 0), 0, "no handshake completed")
    line = m.access_lines(1)[-1].split(" ")
    mp.eq(line[3], "UF", "access log: upstream connect failure")
    finish(m)


def test_handshake_failure_retries_another_host():
    p = _pki()
    bad = TlsUpstream(tls_echo, p["stranger"])  # a chain magpie does not trust
    good = TlsUpstream(tls_echo, p["origin"])
    m, port = start([bad.port, good.port], cluster_tls=upstream_tls(p["ca"]),
                    tp_extra="          max_connect_attempts: 2")
    for i in range(6):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        msg = b"attempt %d" % i
        c.sendall(msg)
        c.shutdown(socket.SHUT_WR)
        mp.eq(read_all(c), msg, "connection %d served (by the trusted host)" % i)
        c.close()
    mp.check(bad.connections >= 1, "the untrusted host was tried")
    st = m.stats()
    mp.eq(st.get("cluster.c1.ssl.fail_verify_error", 0), bad.connections,
          "each attempt on the untrusted host refused and counted")
    mp.eq(st.get("cluster.c1.upstream_cx_connect_fail", 0), bad.connections,
          "each refused handshake counted as a connect failure")
    mp.eq(good.handshakes, 6, "every connection ended on the trusted host")
    finish(m)


# ---------------------------------------------------------------- sidecar to sidecar

def test_sidecar_to_sidecar_mtls_for_raw_tcp():
    p = _pki()
    up = TcpUpstream(reply_after_fin)
    echo_up = TcpUpstream(echo)
    # B: mTLS listener (only A's identity) -> tcp_proxy -> plain upstream.
    b, b_port = start([up.port], listener_tls=downstream_tls(p["b"], p["ca"], require=True,
                                                            peer_id=A_ID))
    # A: plain listener -> tcp_proxy -> TLS to B with A's certificate, B's identity checked.
    a, a_port = start([b_port], cluster_tls=upstream_tls(p["ca"], leaf=p["a"], san_type="URI",
                                                         san=B_ID))
    with socket.create_connection(("127.0.0.1", a_port), timeout=10) as s:
        s.sendall(b"abcdef")
        s.shutdown(socket.SHUT_WR)  # FIN -> close_notify A->B -> FIN B->upstream
        mp.eq(read_all(s), b"got 6 bytes: fedcba", "answer after the half-close, across mTLS")
    mp.eq(up.received, [b"abcdef"], "plain upstream behind B got the bytes")
    mp.eq(a.stats().get("cluster.c1.ssl.handshake"), 1, "A's handshake to B")
    mp.eq(listener_ssl(b, "handshake"), 1, "B's handshake from A")
    # A larger exchange both ways through a second pair of hops.
    b2, b2_port = start([echo_up.port], listener_tls=downstream_tls(p["b"], p["ca"],
                                                                   require=True, peer_id=A_ID))
    a2, a2_port = start([b2_port], cluster_tls=upstream_tls(p["ca"], leaf=p["a"],
                                                           san_type="URI", san=B_ID))
    payload = os.urandom(4 << 20)
    with socket.create_connection(("127.0.0.1", a2_port), timeout=30) as s:
        got = bytearray()

        def reader():
            got.extend(read_all(s))
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        t.join(60)
    mp.check(bytes(got) == payload, "4 MiB echoed across two sidecars (%d bytes)" % len(got))
    for m in (a, b, a2, b2):
        finish(m)


def test_sidecar_refuses_the_wrong_identity():
    p = _pki()
    up = TcpUpstream(echo)
    b, b_port = start([up.port], listener_tls=downstream_tls(p["b"], p["ca"], require=True,
                                                            peer_id=A_ID))
    evil, e_port = start([b_port], cluster_tls=upstream_tls(p["ca"], leaf=p["evil"],
                                                            san_type="URI", san=B_ID))
    with socket.create_connection(("127.0.0.1", e_port), timeout=10) as s:
        s.sendall(b"let me in")
        s.shutdown(socket.SHUT_WR)
        got = b""
        try:
            got = read_all(s)
        except OSError:
            pass
    mp.eq(got, b"", "nothing came back to the wrong identity")
    mp.wait_until(lambda: listener_ssl(b, "fail_verify_san") >= 1, 5,
                  what="B's listener ssl.fail_verify_san")
    mp.eq(up.connections, 0, "B never connected its upstream")
    finish(b)
    finish(evil)


if __name__ == "__main__":
    import run
    run.main([__file__])
