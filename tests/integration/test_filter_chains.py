"""Filter chain matching and the tls_inspector / http_inspector listener filters: curl, openssl
s_client and Python sockets against magpie listeners with several chains, each answering with a
direct response that names it (so the body proves which chain served the connection, and for TLS
the certificate subject proves which chain's context did the handshake)."""

import json
import socket
import ssl
import subprocess

import mp
import pki

_PKI = {}

TLS_INSPECTOR = """\
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
    - name: envoy.filters.listener.http_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector
"""


def _pki():
    if not _PKI:
        d = mp.tmpdir("mp-chains-")
        ca = pki.CA(d)
        _PKI.update(
            dir=d, ca=ca,
            a=ca.issue("a", dns=["a.example.com"]),
            wild=ca.issue("wild", dns=["*.b.example.com"]),
            exact=ca.issue("exact", dns=["exact.b.example.com"]),
            plain=ca.issue("any", dns=["localhost"], ips=["127.0.0.1"]))
    return _PKI


def chain(body, match=None, leaf=None, default=False):
    """One filter chain (or, default=True, the default_filter_chain mapping) whose HCM answers
    every request with 200 and body."""
    ind = "      "
    out = ["    default_filter_chain:" if default else "    - name: %s" % body]
    if match:
        out.append(ind + "filter_chain_match: %s" % match)
    if leaf is not None:
        out += [ind + l for l in [
            "transport_socket:",
            "  name: envoy.transport_sockets.tls",
            "  typed_config:",
            "    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
            "DownstreamTlsContext",
            "    common_tls_context:",
            "      alpn_protocols: [h2, http/1.1]",
            "      tls_certificates:",
            "      - certificate_chain: {filename: %s}" % leaf.chain,
            "        private_key: {filename: %s}" % leaf.key]]
    out += [ind + l for l in [
        "filters:",
        "- name: envoy.filters.network.http_connection_manager",
        "  typed_config:",
        "    \"@type\": type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "    stat_prefix: %s" % body,
        "    http_filters:",
        "    - name: envoy.filters.http.router",
        "      typed_config:",
        "        \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        "    route_config:",
        "      virtual_hosts:",
        "      - name: vh",
        "        domains: [\"*\"]",
        "        routes:",
        "        - match: {prefix: /}",
        "          direct_response: {status: 200, body: {inline_string: %s}}" % body]]
    return "\n".join(out) + "\n"


def config(chains, listener_extra="", default=None):
    text = """\
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: $admin}
static_resources:
  listeners:
  - name: l1
    address:
      socket_address: {address: 127.0.0.1, port_value: $port}
""" + listener_extra + "    filter_chains:\n" + "".join(chains)
    if default:
        text += default
    return text


def start(chains, listener_extra=TLS_INSPECTOR, default=None):
    port = mp.free_port()
    m = mp.Magpie(config(chains, listener_extra, default), ports={"port": port}, log_level="debug")
    return m, port


def curl(url, *extra):
    """(body, exit code) of one curl request."""
    r = subprocess.run(["curl", "-s", "-m", "10", "-o", "-"] + list(extra) + [url],
                       capture_output=True, timeout=20)
    return r.stdout, r.returncode


def curl_tls(port, host, *extra):
    p = _pki()
    return curl("https://%s:%d/" % (host, port), "--cacert", p["ca"].ca_file,
                "--resolve", "%s:%d:127.0.0.1" % (host, port), *extra)


def lstat(m, port, name):
    return m.stats().get("listener.127.0.0.1_%d.%s" % (port, name), 0)


def s_client_subject(port, name):
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-servername", name, "-CAfile", _pki()["ca"].ca_file],
                       input=b"", capture_output=True, timeout=20)
    for line in r.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("subject="):
            return line
    return ""


def sni_chains(p):
    return [chain("chain-a", "{server_names: [a.example.com]}", p["a"]),
            chain("chain-wild", "{server_names: [\"*.b.example.com\"]}", p["wild"]),
            chain("chain-exact", "{server_names: [exact.b.example.com]}", p["exact"]),
            chain("chain-tls", "{transport_protocol: tls}", p["plain"]),
            chain("chain-plain", "{transport_protocol: raw_buffer}")]


def test_sni_picks_chain_and_certificate():
    p = _pki()
    m, port = start(sni_chains(p))
    with m:
        # The body proves the chain (its route); the certificate proves the chain's context.
        mp.eq(curl_tls(port, "a.example.com"), (b"chain-a", 0), "SNI a.example.com")
        mp.eq(curl_tls(port, "x.b.example.com"), (b"chain-wild", 0), "wildcard server name")
        mp.eq(curl_tls(port, "exact.b.example.com"), (b"chain-exact", 0),
              "exact server name beats the wildcard")
        # A wildcard covers several labels in Envoy's matching (TLS hostname checks would not).
        r = pki.tls_probe("127.0.0.1", port, server_name="x.y.b.example.com", ca=p["ca"].ca_file,
                          check_hostname=False)
        mp.eq((r["ok"], r["subject_cn"]), (True, "wild"),
              "the wildcard chain's certificate for a deeper name")
        subject = s_client_subject(port, "a.example.com").replace(" ", "")
        mp.check(subject.endswith("CN=a"), "openssl s_client sees chain-a's certificate: %r"
                 % subject)
        r = pki.tls_probe("127.0.0.1", port, server_name="exact.b.example.com",
                          ca=p["ca"].ca_file)
        mp.eq((r["ok"], r["subject_cn"], r["status"]), (True, "exact", 200),
              "exact chain's certificate and a response")
        # No SNI at all: the chain that only asks for TLS.
        r = pki.tls_probe("127.0.0.1", port, ca=p["ca"].ca_file, check_hostname=False)
        mp.eq((r["ok"], r["subject_cn"]), (True, "any"), "no SNI: the transport_protocol chain")
        # Plain HTTP on the same port.
        mp.eq(curl("http://127.0.0.1:%d/" % port), (b"chain-plain", 0),
              "plaintext on the TLS port goes to the raw_buffer chain")
        mp.eq(lstat(m, port, "no_filter_chain_match"), 0, "nothing unmatched")


def test_alpn_and_http_inspector():
    p = _pki()
    chains = [chain("tls-h2", "{transport_protocol: tls, application_protocols: [h2]}", p["a"]),
              chain("tls-h1", "{transport_protocol: tls, application_protocols: [http/1.1]}",
                    p["a"]),
              chain("plain-h2c", "{application_protocols: [h2c]}"),
              chain("plain-h1", "{application_protocols: [http/1.1, http/1.0]}")]
    m, port = start(chains)
    with m:
        mp.eq(curl_tls(port, "a.example.com", "--http2"), (b"tls-h2", 0), "ALPN h2")
        mp.eq(curl_tls(port, "a.example.com", "--http1.1"), (b"tls-h1", 0), "ALPN http/1.1")
        url = "http://127.0.0.1:%d/" % port
        mp.eq(curl(url, "--http2-prior-knowledge"), (b"plain-h2c", 0),
              "http_inspector: the HTTP/2 preface is h2c")
        mp.eq(curl(url), (b"plain-h1", 0), "http_inspector: an HTTP/1.1 request line")
        mp.eq(curl(url, "--http1.0"), (b"plain-h1", 0), "http_inspector: HTTP/1.0")


def test_source_prefix_and_destination_port():
    chains = [chain("from-two", "{source_prefix_ranges: [{address_prefix: 127.0.0.2, "
                                "prefix_len: 32}]}"),
              chain("loopback", "{source_prefix_ranges: [{address_prefix: 127.0.0.0, "
                                "prefix_len: 8}]}")]
    m, port = start(chains, listener_extra="")
    with m:
        url = "http://127.0.0.1:%d/" % port
        mp.eq(curl(url, "--interface", "127.0.0.2"), (b"from-two", 0), "longest source prefix")
        mp.eq(curl(url, "--interface", "127.0.0.3"), (b"loopback", 0), "the /8")
    # The destination port is decided before the source: a chain naming another port never
    # wins, however specific its source range.
    chains = [chain("by-port", "{destination_port: $port}"),
              chain("wrong-port", "{destination_port: 1, source_prefix_ranges: "
                                  "[{address_prefix: 127.0.0.2, prefix_len: 32}]}")]
    m, port = start(chains, listener_extra="")
    with m:
        mp.eq(curl("http://127.0.0.1:%d/" % port, "--interface", "127.0.0.2"), (b"by-port", 0),
              "destination_port")


def test_default_chain_and_no_match():
    only_two = [chain("from-two", "{source_prefix_ranges: [{address_prefix: 127.0.0.2, "
                                  "prefix_len: 32}]}")]
    m, port = start(only_two, listener_extra="")
    with m:
        body, rc = curl("http://127.0.0.1:%d/" % port, "--interface", "127.0.0.1")
        mp.check(rc != 0 and body == b"", "no chain: the connection is closed (curl rc %d)" % rc)
        mp.wait_until(lambda: lstat(m, port, "no_filter_chain_match") == 1,
                      what="listener.<addr>.no_filter_chain_match == 1")
        mp.check("no filter chain matches" in m.log(), "a log line says why")
    m, port = start(only_two, listener_extra="", default=chain("the-default", default=True))
    with m:
        mp.eq(curl("http://127.0.0.1:%d/" % port, "--interface", "127.0.0.1"),
              (b"the-default", 0), "default_filter_chain takes what nothing matched")
        mp.eq(lstat(m, port, "no_filter_chain_match"), 0, "the default is not a failed match")


def _client_hello():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="a.example.com")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def _closed_by_peer(s, timeout=5.0):
    s.settimeout(timeout)
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _send_and_wait_close(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        mp.check(_closed_by_peer(s), "no chain for %r: closed" % data[:16])


def test_inspector_stats():
    # Envoy's counters, global (no listener prefix), counted once per inspected connection.
    p = _pki()
    chains = [chain("tls-h2", "{transport_protocol: tls, application_protocols: [h2]}", p["a"]),
              chain("plain-h2c", "{application_protocols: [h2c]}"),
              chain("plain-h1", "{application_protocols: [http/1.1, http/1.0]}")]
    m, port = start(chains)
    with m:
        url = "http://127.0.0.1:%d/" % port
        mp.eq(curl_tls(port, "a.example.com", "--http2"), (b"tls-h2", 0), "TLS, SNI and ALPN")
        mp.eq(curl(url, "--http2-prior-knowledge"), (b"plain-h2c", 0), "h2c")
        mp.eq(curl(url), (b"plain-h1", 0), "HTTP/1.1")
        mp.eq(curl(url, "--http1.0"), (b"plain-h1", 0), "HTTP/1.0")
        _send_and_wait_close(port, _client_hello())  # SNI, no ALPN
        _send_and_wait_close(port, b"SSH-2.0-OpenSSH_9.0\r\n")
        # A handshake record announcing a 20 KiB ClientHello: over the 16 KiB cap.
        _send_and_wait_close(port, bytes([22, 3, 1, 0, 4, 1, 0, 0x50, 0]))
        want = {"tls_inspector.tls_found": 2, "tls_inspector.tls_not_found": 4,
                "tls_inspector.client_hello_too_large": 1,
                "tls_inspector.sni_found": 2, "tls_inspector.sni_not_found": 0,
                "tls_inspector.alpn_found": 1, "tls_inspector.alpn_not_found": 1,
                "http_inspector.http2_found": 1, "http_inspector.http11_found": 1,
                "http_inspector.http10_found": 1, "http_inspector.http_not_found": 2}

        def got():
            st = m.stats()
            return {k: st.get(k) for k in want}
        try:
            mp.wait_until(lambda: got() == want, 5, what="inspector counters")
        except mp.TestFailure:
            mp.eq(got(), want, "inspector counters")
        mp.check(not any(k.startswith("listener.") and "inspector" in k for k in m.stats()),
                 "no per-listener inspector stats")


def test_admin_listeners_lists_chains():
    p = _pki()
    chains = [chain("sni-a", "{server_names: [a.example.com, \"*.b.example.com\"], "
                             "transport_protocol: tls}", p["a"]),
              chain("from-two", "{source_prefix_ranges: [{address_prefix: 127.0.0.2, "
                                "prefix_len: 32}], destination_port: $port}")]
    m, port = start(chains, default=chain("the-default", default=True))
    with m:
        st, body = m.admin("/listeners?format=json")
        mp.eq(st, 200, "/listeners?format=json")
        l1 = json.loads(body)["listener_statuses"][0]
        got = [(c["name"], c["match"], c["transport"], c["filter"]) for c in l1["filter_chains"]]
        hcm = "envoy.filters.network.http_connection_manager"
        mp.eq(got, [("sni-a", "server_names=[a.example.com,*.b.example.com] "
                              "transport_protocol=tls", "tls", hcm),
                    ("from-two", "destination_port=%d source_prefix_ranges=[127.0.0.2/32]"
                                 % port, "raw", hcm)], "chains in /listeners")
        d = l1.get("default_filter_chain") or {}
        mp.eq((d.get("match"), d.get("transport")), ("any", "raw"), "the default chain")


def test_listener_filters_timeout():
    p = _pki()
    extra = TLS_INSPECTOR + "    listener_filters_timeout: 0.3s\n"
    m, port = start(sni_chains(p), listener_extra=extra)
    with m:
        # Connects and says nothing: closed at the timeout, counted.
        s = socket.create_connection(("127.0.0.1", port))
        mp.check(_closed_by_peer(s), "a silent client is closed after listener_filters_timeout")
        s.close()
        # Half a ClientHello, then silence: the same.
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(_client_hello()[:40])
        mp.check(_closed_by_peer(s), "a partial ClientHello is closed at the timeout")
        s.close()
        mp.wait_until(lambda: lstat(m, port, "downstream_pre_cx_timeout") == 2,
                      what="downstream_pre_cx_timeout == 2")
        # Half a ClientHello, then the client closes: nothing is left behind.
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(_client_hello()[:60])
            s.close()
        mp.wait_until(lambda: lstat(m, port, "downstream_cx_destroy") >= 7,
                      what="the abandoned connections are destroyed")
        mp.eq(curl_tls(port, "a.example.com"), (b"chain-a", 0), "still serving")
    extra += "    continue_on_listener_filters_timeout: true\n"
    m, port = start(sni_chains(p), listener_extra=extra)
    with m:
        s = socket.create_connection(("127.0.0.1", port))
        mp.wait_until(lambda: lstat(m, port, "downstream_pre_cx_timeout") == 1,
                      what="the timeout fired")
        # After the timeout the connection went on as raw_buffer: plain HTTP is answered.
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.settimeout(5)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        mp.check(data.startswith(b"HTTP/1.1 200") and data.endswith(b"chain-plain"),
                 "continue_on_listener_filters_timeout: the raw_buffer chain answers (%r)"
                 % data[:200])


def _validate(text):
    d = mp.tmpdir("mp-chains-cfg-")
    path = d + "/c.yaml"
    with open(path, "w") as f:
        f.write(text.replace("$admin", str(mp.free_port())).replace("$port",
                                                                    str(mp.free_port())))
    return mp.run_magpie(["--mode", "validate", "-c", path])


def test_config_errors():
    rc, out = _validate(config([chain("one", "{destination_port: 80}"),
                                chain("two", "{destination_port: 80}")]))
    mp.check(rc != 0 and "multiple filter chains with the same matching rules" in out,
             "duplicate matches are refused: %s" % out)
    bad = ("    listener_filters:\n"
           "    - name: envoy.filters.listener.original_dst\n")
    rc, out = _validate(config([chain("one")], listener_extra=bad))
    mp.check(rc != 0 and "listener_filters[0]" in out and
             "unsupported listener filter \"envoy.filters.listener.original_dst\"" in out,
             "an unknown listener filter is refused by name: %s" % out)
    rc, out = _validate(config([chain("one", "{server_names: [\"a.*.com\"]}")],
                               listener_extra=TLS_INSPECTOR))
    mp.check(rc != 0 and "server_names[0]" in out and "wildcard" in out,
             "a partial wildcard is refused: %s" % out)
    rc, out = _validate(config([chain("one", "{server_names: [a.com]}")]))
    mp.check(rc == 0 and "no envoy.filters.listener.tls_inspector" in out,
             "server_names without tls_inspector loads with a warning: %s" % out)
