"""Issue 4, configuration half: TLS on a listener (DownstreamTlsContext) and a cluster
(UpstreamTlsContext) with a CA and SPIFFE-style leaves made by the openssl CLI here.
`--mode validate` accepts it and rejects a broken one naming the field and the file; a TCP proxy
with TLS on both sides and an HTTP route to a TLS cluster start and are served."""

import os
import subprocess

import mp

SPIFFE = "spiffe://cluster.local/ns/default/sa/foo"


def _openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30)


def _pki():
    """ca.pem/ca.key, and leaves server (DNS server.local) and foo (SPIFFE URI) signed by it."""
    d = mp.tmpdir("mp-tls-")
    p = lambda n: os.path.join(d, n)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "2", "-subj", "/CN=test CA")
    for name, san in (("server", "DNS:server.local"), ("foo", "URI:" + SPIFFE)):
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", p(name + ".key"), "-out", p(name + ".csr"), "-subj", "/CN=" + name)
        with open(p(name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\n" % san)
        _openssl("x509", "-req", "-in", p(name + ".csr"), "-CA", p("ca.pem"), "-CAkey",
                 p("ca.key"), "-CAcreateserial", "-out", p(name + ".pem"), "-days", "2",
                 "-extfile", p(name + ".ext"))
    return d


CONFIG = """\
static_resources:
  listeners:
  - name: mtls_in
    address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_params: {tls_minimum_protocol_version: TLSv1_2, ecdh_curves: [X25519, P-256]}
            tls_certificates:
            - certificate_chain: {filename: %(dir)s/server.pem}
              private_key: {filename: %(dir)s/%(server_key)s}
            validation_context:
              trusted_ca: {filename: %(dir)s/ca.pem}
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: {prefix: "spiffe://cluster.local/ns/default/"}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: in
          cluster: backend
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8443}}}}]}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: server.local
        common_tls_context:
          tls_certificates:
          - certificate_chain: {filename: %(dir)s/foo.pem}
            private_key: {filename: %(dir)s/foo.key}
          validation_context:
            trusted_ca: {filename: %(dir)s/ca.pem}
            match_subject_alt_names: [{exact: server.local}]
"""


def _config(d, server_key="server.key"):
    path = os.path.join(d, "c-%s.yaml" % server_key.replace("/", "_"))
    with open(path, "w") as f:
        f.write(CONFIG % {"dir": d, "port": mp.free_port(), "server_key": server_key})
    return path


def test_validate_accepts_tls_listener_and_cluster():
    d = _pki()
    rc, out = mp.run_magpie(["--mode", "validate", "-c", _config(d)])
    mp.eq(rc, 0, "validate exit status with TLS on a listener and a cluster; output:\n" + out)


def test_validate_rejects_missing_key_file_with_path():
    d = _pki()
    rc, out = mp.run_magpie(["--mode", "validate", "-c", _config(d, "missing.key")])
    mp.check(rc != 0, "validate must fail on a missing private key file")
    # the message names the field (JSON path) and the file
    mp.check("static_resources.listeners[0].filter_chains[0].transport_socket.typed_config."
             "common_tls_context.tls_certificates[0].private_key.filename" in out, out)
    mp.check(os.path.join(d, "missing.key") in out, out)


def test_validate_rejects_key_of_another_certificate():
    d = _pki()
    rc, out = mp.run_magpie(["--mode", "validate", "-c", _config(d, "foo.key")])
    mp.check(rc != 0, "validate must fail when the key does not match the certificate")
    mp.check("does not match the certificate" in out, out)


def test_tcp_proxy_with_tls_on_both_sides_starts():
    # Once refused at start (TLS around a TCP proxy was not served); now served
    # (test_tcp_proxy_tls.py carries bytes through it).
    d = _pki()
    text = CONFIG % {"dir": d, "port": mp.free_port(), "server_key": "server.key"}
    admin = "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: $admin}}\n"
    m = mp.Magpie(admin + text)
    st = m.stats()
    mp.check("cluster.backend.ssl.handshake" in st, "the cluster's ssl.* stats exist")
    mp.check(any(k.startswith("listener.") and k.endswith(".ssl.handshake") for k in st),
             "the listener's ssl.* stats exist")


def test_http_route_to_a_tls_cluster_starts():
    d = _pki()
    tls = CONFIG[CONFIG.index("    transport_socket:\n      name"):] % {"dir": d}
    cfg = mp.simple_config(mp.free_port(), cluster_extra=tls.rstrip("\n"))
    m = mp.Magpie(cfg, ports={"port": mp.free_port()})
    mp.check(m.alive(), "magpie serves an HTTP listener routing to a TLS cluster")
    mp.check("cluster.c1.ssl.handshake" in m.stats(), "the cluster's ssl.* stats exist")


if __name__ == "__main__":
    import run
    run.main([__file__])
