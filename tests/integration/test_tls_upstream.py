"""magpie speaking TLS to its upstreams (UpstreamTlsContext): to an `openssl s_server -www`
origin with the server certificate checked against trusted_ca and a DNS SAN matcher, and
sidecar to sidecar (client -> magpie A -> mutual TLS with SPIFFE IDs -> magpie B -> plain
upstream) over HTTP/1.1 and h2.  Refusals are counted in cluster.<name>.ssl.* at A (server
refused) or listener ssl.* at B (client refused) and answered 503 at A."""

import subprocess

import mp
import pki

_PKI = {}
A_ID = pki.spiffe_id("default", "a")
B_ID = pki.spiffe_id("default", "b")


def _pki():
    if not _PKI:
        d = mp.tmpdir("mp-utls-")
        ca = pki.CA(d)
        other = pki.CA(d, name="other")
        _PKI.update(
            ca=ca,
            origin=ca.issue("origin", dns=["origin.local"], usage="server"),
            stranger=other.issue("stranger", dns=["origin.local"], usage="server"),
            a=ca.issue("a", uri=A_ID),
            b=ca.issue("b", uri=B_ID),
            evil=ca.issue("evil", uri=pki.spiffe_id("other", "evil")))
    return _PKI


def _upstream_tls(ca, leaf=None, san_type="DNS", san="origin.local", sni=None, extra=(),
                  top=()):
    lines = [
        "    transport_socket:",
        "      name: envoy.transport_sockets.tls",
        "      typed_config:",
        "        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
        "UpstreamTlsContext",
    ]
    if sni:
        lines.append("        sni: %s" % sni)
    lines += ["        " + t for t in top]
    lines.append("        common_tls_context:")
    lines += ["          " + e for e in extra]
    if leaf is not None:
        lines += ["          tls_certificates:",
                  "          - certificate_chain: {filename: %s}" % leaf.chain,
                  "            private_key: {filename: %s}" % leaf.key]
    lines += ["          validation_context:",
              "            trusted_ca: {filename: %s}" % ca.ca_file,
              "            match_typed_subject_alt_names:",
              "            - san_type: %s" % san_type,
              "              matcher: {exact: \"%s\"}" % san]
    return "\n".join(lines)


def _downstream_mtls(p, expect_id):
    lines = [
        "    - transport_socket:",
        "        name: envoy.transport_sockets.tls",
        "        typed_config:",
        "          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
        "DownstreamTlsContext",
        "          require_client_certificate: true",
        "          common_tls_context:",
        "            alpn_protocols: [h2, http/1.1]",
        "            tls_certificates:",
        "            - certificate_chain: {filename: %s}" % p["b"].chain,
        "              private_key: {filename: %s}" % p["b"].key,
        "            validation_context:",
        "              trusted_ca: {filename: %s}" % p["ca"].ca_file,
        "              match_typed_subject_alt_names:",
        "              - san_type: URI",
        "                matcher: {exact: \"%s\"}" % expect_id,
    ]
    return "\n".join(lines) + "\n      filters:"


def _s_server(leaf):
    port = mp.free_port()
    proc = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", leaf.chain,
                             "-key", leaf.key, "-www", "-quiet"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    mp.on_cleanup(lambda: mp.stop_process(proc))
    mp.wait_until(lambda: mp.port_open(port), 10, what="openssl s_server listening")
    return port


def cluster_stat(m, cluster, name):
    return m.stats().get("cluster.%s.ssl.%s" % (cluster, name), 0)


def listener_ssl(m, name):
    for k, v in m.stats().items():
        if k.startswith("listener.") and k.endswith(".ssl." + name):
            return v
    raise mp.TestFailure("no listener ssl.%s stat" % name)


def _last_flags(m, n):
    return mp.parse_access(m.access_lines(n)[n - 1])


def _magpie_to_origin(origin_port, **tls):
    p = _pki()
    cfg = mp.simple_config(origin_port, cluster_extra=_upstream_tls(p["ca"], **tls))
    port = mp.free_port()
    return mp.Magpie(cfg, ports={"port": port}), port


def test_origin_over_tls_verified_by_dns_san():
    p = _pki()
    origin = _s_server(p["origin"])
    m, port = _magpie_to_origin(origin, sni="origin.local")
    r = mp.get(port, "/")
    mp.eq(r.status, 200, "GET through TLS to s_server")
    mp.check(b"Ciphers" in r.body, "s_server's status page: %r" % r.body[:200])
    mp.check(cluster_stat(m, "c1", "handshake") >= 1, "cluster ssl.handshake counted")
    # Again, on a fresh connection (s_server -www closes after each answer).
    mp.eq(mp.get(port, "/").status, 200, "second request")


def _refused_by_a(m, port, stat):
    before = cluster_stat(m, "c1", stat)
    r = mp.get(port, "/")
    mp.eq(r.status, 503, "refused upstream answered 503")
    line = _last_flags(m, 1)
    mp.eq(line["flags"], "UF", "response flags: %r" % line)
    mp.check(cluster_stat(m, "c1", stat) > before, "cluster ssl.%s grows" % stat)
    mp.check(cluster_stat(m, "c1", "connection_error") >= 1, "ssl.connection_error counted")


def test_origin_with_wrong_san_is_refused():
    p = _pki()
    origin = _s_server(p["origin"])
    m, port = _magpie_to_origin(origin, san="someone-else.local")
    _refused_by_a(m, port, "fail_verify_san")


def test_untrusted_origin_is_refused():
    p = _pki()
    origin = _s_server(p["stranger"])
    m, port = _magpie_to_origin(origin)
    _refused_by_a(m, port, "fail_verify_error")


# ---------------------------------------------------------------- session resumption

def _fresh_connections(m, port, n):
    """n requests, each on a new upstream connection (s_server -www closes after answering);
    returns (handshakes, resumed) as the cluster counted them."""
    for i in range(n):
        mp.eq(mp.get(port, "/").status, 200, "request %d" % i)
    return cluster_stat(m, "c1", "handshake"), cluster_stat(m, "c1", "session_reused")


def test_sessions_resumed_tls12():
    origin = _s_server(_pki()["origin"])
    m, port = _magpie_to_origin(origin, sni="origin.local")
    hs, reused = _fresh_connections(m, port, 4)
    mp.eq(hs, 4, "one full handshake per connection")
    mp.eq(reused, 3, "every connection after the first resumed its session")


def test_sessions_resumed_tls13_tickets_single_use():
    # TLS 1.3 tickets arrive after the handshake; each is offered once, and each resumed
    # connection brings a new one.
    origin = _s_server(_pki()["origin"])
    m, port = _magpie_to_origin(origin, sni="origin.local",
                                extra=["tls_params: {tls_maximum_protocol_version: TLSv1_3}"])
    hs, reused = _fresh_connections(m, port, 4)
    mp.eq(hs, 4, "handshakes")
    mp.eq(reused, 3, "resumed with tickets")


def test_max_session_keys_zero_disables_resumption():
    origin = _s_server(_pki()["origin"])
    m, port = _magpie_to_origin(origin, sni="origin.local", top=["max_session_keys: 0"])
    hs, reused = _fresh_connections(m, port, 3)
    mp.eq(hs, 3, "handshakes")
    mp.eq(reused, 0, "no session offered")


def test_sessions_kept_per_host():
    # Two origins (separate s_server processes, so neither would accept the other's session)
    # behind one cluster: each connection resumes a session from its own host, never from the
    # other, so only the first connection to each host is a full handshake.
    p = _pki()
    o1, o2 = _s_server(p["origin"]), _s_server(p["origin"])
    cfg = mp.simple_config(o1, cluster_extra=_upstream_tls(p["ca"], sni="origin.local"))
    second = ("port_value: %d}\n        - endpoint:\n            address:\n"
              "              socket_address: {address: 127.0.0.1, port_value: %d}" % (o1, o2))
    cfg = cfg.replace("port_value: %d}" % o1, second, 1)
    port = mp.free_port()
    m = mp.Magpie(cfg, ports={"port": port})
    n = 6
    hs, reused = _fresh_connections(m, port, n)
    hosts = {mp.parse_access(l)["host"] for l in m.access_lines(n)}
    mp.eq(hs, n, "handshakes")
    mp.eq(reused, n - len(hosts), "resumed on every connection but the first to each host %r"
          % sorted(hosts))


# ---------------------------------------------------------------- sidecar to sidecar

def _sidecars(client_leaf, h2=False, extra=()):
    """B: mTLS listener accepting only A's SPIFFE ID, to a TestUpstream.  A: plain listener,
    cluster to B with client_leaf and B's ID expected."""
    p = _pki()
    up = mp.TestUpstream()
    b_port, a_port = mp.free_port(), mp.free_port()
    b_cfg = mp.simple_config(up.port).replace("    - filters:", _downstream_mtls(p, A_ID), 1)
    b = mp.Magpie(b_cfg, ports={"port": b_port})
    tls = _upstream_tls(p["ca"], leaf=client_leaf, san_type="URI", san=B_ID, extra=extra)
    if h2:
        tls = "    http2_protocol_options: {}\n" + tls
    a = mp.Magpie(mp.simple_config(b_port, cluster_extra=tls), ports={"port": a_port})
    return a, a_port, b, up


def test_sidecar_to_sidecar_http11():
    a, a_port, b, up = _sidecars(_pki()["a"])
    for i in range(3):
        r = mp.get(a_port, "/echo")
        mp.eq(r.status, 200, "request %d through A -> mTLS -> B" % i)
    mp.check(up.requests >= 3, "the upstream behind B saw the requests")
    mp.check(cluster_stat(a, "c1", "handshake") >= 1, "A counted its handshake")
    mp.check(listener_ssl(b, "handshake") >= 1, "B counted its handshake")
    mp.eq(_last_flags(a, 3)["flags"], "-", "A's flags")


def test_sidecar_to_sidecar_h2():
    a, a_port, b, up = _sidecars(_pki()["a"], h2=True)
    for i in range(3):
        r = mp.get(a_port, "/echo")
        mp.eq(r.status, 200, "request %d through A -> h2 over mTLS -> B" % i)
    mp.eq(a.stats().get("cluster.c1.upstream_cx_http2_total"), 1, "one h2 connection, reused")
    mp.check(cluster_stat(a, "c1", "handshake") == 1, "one handshake at A")
    # B took the connection as h2 (ALPN): its HCM counts HTTP/2 connections.
    h2 = sum(v for k, v in b.stats().items() if k.endswith("downstream_cx_http2_total"))
    mp.check(h2 >= 1, "B served h2: %r" % h2)


def test_client_identity_refused_by_b_tls12():
    # TLS 1.2: the client's handshake ends only after the server has checked its certificate,
    # so the refusal is a connect failure (UF) at A.
    a, a_port, b, up = _sidecars(_pki()["evil"], extra=[
        "tls_params: {tls_maximum_protocol_version: TLSv1_2}"])
    r = mp.get(a_port, "/echo")
    mp.eq(r.status, 503, "refused at B, 503 at A")
    mp.eq(_last_flags(a, 1)["flags"], "UF", "A's flags")
    mp.wait_until(lambda: listener_ssl(b, "fail_verify_san") >= 1, 5, what="B fail_verify_san")
    mp.eq(up.requests, 0, "nothing reached the upstream")


def test_client_identity_refused_by_b_tls13():
    # TLS 1.3: the client's handshake is done before the server reads its certificate; the
    # refusal arrives as an alert on the first read: still 503 at A, as UF or UC.
    a, a_port, b, up = _sidecars(_pki()["evil"])
    r = mp.get(a_port, "/echo")
    mp.eq(r.status, 503, "refused at B, 503 at A")
    mp.check(_last_flags(a, 1)["flags"] in ("UF", "UC"), "A's flags: %r" % _last_flags(a, 1))
    mp.wait_until(lambda: listener_ssl(b, "fail_verify_san") >= 1, 5, what="B fail_verify_san")
    mp.eq(up.requests, 0, "nothing reached the upstream")


if __name__ == "__main__":
    import run
    run.main([__file__])
