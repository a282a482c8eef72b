"""RBAC: envoy.filters.http.rbac (by SPIFFE ID over mutual TLS, path, method, address; ALLOW,
DENY and shadow rules; 403 "RBAC: access denied"; gRPC PERMISSION_DENIED) and
envoy.filters.network.rbac in front of tcp_proxy and http_connection_manager.  Clients: curl,
Python sockets and grpcio; the PKI is made at test time (pki.py)."""

import socket
import subprocess
import sys
import os

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import grpc_peer  # noqa: E402
import mp  # noqa: E402
import pki  # noqa: E402

_PKI = {}

FOO = pki.spiffe_id("default", "foo")
BAR = pki.spiffe_id("other", "bar")


def _pki():
    if not _PKI:
        d = mp.tmpdir("mp-rbac-")
        ca = pki.CA(d)
        _PKI.update(
            ca=ca,
            server=ca.issue("server", uri=pki.spiffe_id("default", "magpie"), dns=["localhost"],
                            ips=["127.0.0.1"]),
            foo=ca.issue("foo", uri=FOO, usage="client"),
            bar=ca.issue("bar", uri=BAR, usage="client"))
    return _PKI


def _indent(text, n):
    return "".join(" " * n + l + "\n" for l in text.strip("\n").splitlines())


def _tls_block(p):
    return _indent("""\
- transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      require_client_certificate: true
      common_tls_context:
        alpn_protocols: [h2, http/1.1]
        tls_certificates:
        - certificate_chain: {filename: %s}
          private_key: {filename: %s}
        validation_context:
          trusted_ca: {filename: %s}
""" % (p["server"].chain, p["server"].key, p["ca"].ca_file), 4) + "      filters:"


def http_rbac(rules, extra=""):
    """An envoy.filters.http.rbac entry (YAML for the typed_config body, at 2-space depth)."""
    body = _indent(rules, 14) + (_indent(extra, 14) if extra else "")
    return ("          - name: envoy.filters.http.rbac\n"
            "            typed_config:\n"
            "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\n"
            + body)


def net_rbac(rules, stat_prefix="net"):
    return ("      - name: envoy.filters.network.rbac\n"
            "        typed_config:\n"
            "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC\n"
            "          stat_prefix: %s\n" % stat_prefix + _indent(rules, 10))


def config(up_port, http_filter="", tls=False, net="", cluster_extra="", hcm_extra=""):
    cfg = mp.simple_config(up_port, cluster_extra=cluster_extra, hcm_extra=hcm_extra)
    if http_filter:
        cfg = cfg.replace("          http_filters:\n", "          http_filters:\n" + http_filter, 1)
    if tls:
        cfg = cfg.replace("    - filters:", _tls_block(_pki()), 1)
    if net:
        cfg = cfg.replace("      - name: envoy.filters.network.http_connection_manager",
                          net + "      - name: envoy.filters.network.http_connection_manager", 1)
    return cfg


def start(**kw):
    up = mp.TestUpstream()
    port = mp.free_port()
    m = mp.Magpie(config(up.port, **kw), ports={"port": port})
    return m, up, port


def curl(port, path="/echo", *extra, tls=False, leaf=None, method=None):
    args = ["curl", "-s", "-o", "-", "-w", "\n%{http_code} %{http_version}"]
    if tls:
        p = _pki()
        args += ["--cacert", p["ca"].ca_file, "--resolve", "localhost:%d:127.0.0.1" % port]
        if leaf is not None:
            args += ["--cert", p[leaf].cert, "--key", p[leaf].key]
        url = "https://localhost:%d%s" % (port, path)
    else:
        url = "http://127.0.0.1:%d%s" % (port, path)
    if method:
        args += ["-X", method]
    r = subprocess.run(args + list(extra) + [url], capture_output=True, timeout=20)
    body, _, tail = r.stdout.rpartition(b"\n")
    parts = tail.decode().split()
    return (int(parts[0]) if parts else 0), body


def stat(m, name):
    return m.stats().get(name, 0)


SPIFFE_FOO_ONLY = """\
rules:
  action: ALLOW
  policies:
    foo-only:
      permissions: [{any: true}]
      principals:
      - authenticated:
          principal_name: {exact: "%s"}
""" % FOO


def test_allow_by_spiffe_id_over_mtls_h1_and_h2():
    m, up, port = start(http_filter=http_rbac(SPIFFE_FOO_ONLY), tls=True)
    code, _ = curl(port, tls=True, leaf="foo")
    mp.eq(code, 200, "foo allowed (HTTP/1.1)")
    code, _ = curl(port, "/echo", "--http2", tls=True, leaf="foo")
    mp.eq(code, 200, "foo allowed (h2)")
    code, body = curl(port, tls=True, leaf="bar")
    mp.eq((code, body), (403, b"RBAC: access denied"), "bar denied")
    code, body = curl(port, "/echo", "--http2", tls=True, leaf="bar")
    mp.eq((code, body), (403, b"RBAC: access denied"), "bar denied over h2")
    mp.eq(stat(m, "http.ingress.rbac.allowed"), 2, "allowed counter")
    mp.eq(stat(m, "http.ingress.rbac.denied"), 2, "denied counter")
    mp.eq(up.requests, 2, "only allowed requests reached the upstream")
    mp.eq(mp.parse_access(m.access_lines(4)[-1])["code"], "403", "denial logged")


def test_path_and_method_permissions_plain_http():
    rules = """\
rules:
  action: ALLOW
  policies:
    read-public:
      permissions:
      - and_rules:
          rules:
          - header: {name: ":method", string_match: {exact: GET}}
          - url_path: {path: {prefix: "/public/"}}
      principals: [{any: true}]
"""
    m, up, port = start(http_filter=http_rbac(rules))
    mp.eq(curl(port, "/public/a?q=/private")[0], 200, "GET /public/ allowed (query ignored)")
    mp.eq(curl(port, "/private/a")[0], 403, "other path denied")
    mp.eq(curl(port, "/public/a", method="POST")[0], 403, "POST denied")
    mp.eq(curl(port, "/public/a", "--http2-prior-knowledge")[0], 200, "h2c GET allowed")


def test_deny_action_and_direct_remote_ip():
    rules = """\
rules:
  action: DENY
  policies:
    no-loopback-admin:
      permissions: [{url_path: {path: {prefix: "/admin"}}}]
      principals: [{direct_remote_ip: {address_prefix: 127.0.0.0, prefix_len: 8}}]
"""
    m, up, port = start(http_filter=http_rbac(rules))
    mp.eq(curl(port, "/admin/x")[0], 403, "DENY policy matched")
    mp.eq(curl(port, "/echo")[0], 200, "no DENY policy matched")
    mp.eq(stat(m, "http.ingress.rbac.denied"), 1, "denied")
    mp.eq(stat(m, "http.ingress.rbac.allowed"), 1, "allowed")


DETAILS_FORMAT = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n"


def start_with_details(http_filter):
    up = mp.TestUpstream()
    port = mp.free_port()
    cfg = config(up.port, http_filter=http_filter).replace(mp.ACCESS_FORMAT, DETAILS_FORMAT, 1)
    return mp.Magpie(cfg, ports={"port": port}), up, port


def test_no_policies_with_allow_denies_everything():
    m, up, port = start_with_details(http_rbac("rules: {action: ALLOW}"))
    mp.eq(curl(port, "/echo")[0], 403, "no policies: denied")
    mp.eq(up.requests, 0, "nothing reached the upstream")
    mp.eq(m.access_lines(1)[-1], "403 - rbac_access_denied_matched_policy[none]", "details")


def test_log_action_allows_and_details_name_the_policy():
    rules = """\
rules:
  action: DENY
  policies:
    block-post:
      permissions: [{header: {name: ":method", string_match: {exact: POST}}}]
      principals: [{any: true}]
"""
    m, up, port = start_with_details(http_rbac(rules))
    mp.eq(curl(port, "/echo", method="POST")[0], 403, "POST denied")
    mp.eq(m.access_lines(1)[-1], "403 - rbac_access_denied_matched_policy[block-post]",
          "details name the policy")
    m2, up2, port2 = start_with_details(http_rbac(rules.replace("DENY", "LOG")))
    mp.eq(curl(port2, "/echo", method="POST")[0], 200, "LOG allows")
    mp.eq(stat(m2, "http.ingress.rbac.allowed"), 1, "LOG counts as allowed")


def test_shadow_rules_count_without_denying():
    rules = """\
shadow_rules:
  action: ALLOW
  policies:
    only-foo:
      permissions: [{any: true}]
      principals: [{authenticated: {principal_name: {exact: "%s"}}}]
shadow_rules_stat_prefix: "dry_"
""" % FOO
    m, up, port = start(http_filter=http_rbac(rules), tls=True)
    mp.eq(curl(port, tls=True, leaf="bar")[0], 200, "bar not denied by shadow rules")
    mp.eq(curl(port, tls=True, leaf="foo")[0], 200, "foo")
    mp.eq(stat(m, "http.ingress.rbac.dry_shadow_denied"), 1, "shadow_denied")
    mp.eq(stat(m, "http.ingress.rbac.dry_shadow_allowed"), 1, "shadow_allowed")
    mp.eq(stat(m, "http.ingress.rbac.denied"), 0, "nothing enforced")


def test_grpc_denied_is_permission_denied():
    s = grpc_peer.Server()
    rules = """\
rules:
  action: DENY
  policies:
    no-echo:
      permissions: [{url_path: {path: {exact: "/magpie.test.Echo/Unary"}}}]
      principals: [{any: true}]
"""
    port = mp.free_port()
    m = mp.Magpie(config(s.port, http_filter=http_rbac(rules),
                         cluster_extra="    http2_protocol_options: {}"),
                  ports={"port": port})
    try:
        grpc_peer.call("127.0.0.1:%d" % port, "Unary", b"x")
    except grpc.RpcError as e:
        mp.eq(e.code(), grpc.StatusCode.PERMISSION_DENIED, "grpc status")
    else:
        raise mp.TestFailure("the gRPC call was not denied")
    mp.eq(stat(m, "http.ingress.rbac.denied"), 1, "denied counter")


NET_FOO_ONLY = """\
rules:
  action: ALLOW
  policies:
    foo:
      permissions: [{any: true}]
      principals: [{authenticated: {principal_name: {exact: "%s"}}}]
""" % FOO


def test_network_rbac_on_hcm_listener_by_spiffe_id():
    m, up, port = start(tls=True, net=net_rbac(NET_FOO_ONLY))
    mp.eq(curl(port, tls=True, leaf="foo")[0], 200, "foo's connection allowed")
    code, _ = curl(port, tls=True, leaf="bar")
    mp.check(code != 200, "bar's connection closed (got %d)" % code)
    mp.wait_until(lambda: stat(m, "net.rbac.denied") == 1, 5, what="net.rbac.denied")
    mp.eq(stat(m, "net.rbac.allowed"), 1, "net.rbac.allowed")
    mp.eq(up.requests, 1, "only foo reached the upstream")


def test_network_rbac_on_plain_hcm_listener_by_port():
    rules = """\
rules:
  action: DENY
  policies:
    this-port:
      permissions: [{destination_port: $port}]
      principals: [{any: true}]
"""
    up = mp.TestUpstream()
    port = mp.free_port()
    m = mp.Magpie(config(up.port, net=net_rbac(rules.replace("$port", str(port)))),
                  ports={"port": port})
    with mp.Conn(port) as c:
        mp.check(c.closed_by_peer(), "denied connection closed")
    mp.wait_until(lambda: stat(m, "net.rbac.denied") == 1, 5, what="net.rbac.denied")
    mp.eq(up.requests, 0, "nothing reached the upstream")


def _tcp_config(up_port, rules):
    return """\
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: $admin}
static_resources:
  listeners:
  - name: tcp
    address:
      socket_address: {address: 127.0.0.1, port_value: $port}
    filter_chains:
    - filters:
%s      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tp
          cluster: c1
  clusters:
%s""" % (net_rbac(rules, "tcpnet"), mp.cluster_yaml("c1", up_port))


def _echo_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    mp.on_cleanup(srv.close)
    import threading

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                data = c.recv(100)
                c.sendall(data)
    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1]


def test_network_rbac_on_tcp_proxy():
    up_port = _echo_server()
    allow = """\
rules:
  action: ALLOW
  policies:
    loopback:
      permissions: [{any: true}]
      principals: [{remote_ip: {address_prefix: 127.0.0.1, prefix_len: 32}}]
"""
    port = mp.free_port()
    m = mp.Magpie(_tcp_config(up_port, allow), ports={"port": port})
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"ping")
        mp.eq(c.recv(100), b"ping", "allowed connection proxied")
    mp.eq(stat(m, "tcpnet.rbac.allowed"), 1, "allowed")
    m.stop()
    deny = allow.replace("127.0.0.1, prefix_len: 32", "10.0.0.0, prefix_len: 8")
    port = mp.free_port()
    m = mp.Magpie(_tcp_config(up_port, deny), ports={"port": port})
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.settimeout(5)
        try:
            c.sendall(b"ping")
            got = c.recv(100)
        except OSError:
            got = b""
        mp.eq(got, b"", "denied connection closed without data")
    mp.wait_until(lambda: stat(m, "tcpnet.rbac.denied") == 1, 5, what="tcpnet.rbac.denied")


def _validate(cfg):
    d = mp.tmpdir("mp-rbac-cfg-")
    path = os.path.join(d, "c.yaml")
    with open(path, "w") as f:
        f.write(cfg.replace("$admin", str(mp.free_port())).replace("$port", str(mp.free_port()))
                .replace("$dir", d))
    return mp.run_magpie(["--mode", "validate", "-c", path])


def test_config_errors_are_clear():
    bad_condition = """\
rules:
  policies:
    p:
      permissions: [{any: true}]
      principals: [{any: true}]
      condition: {call_expr: {function: "_==_"}}
"""
    rc, out = _validate(config(1, http_filter=http_rbac(bad_condition)))
    mp.check(rc != 0 and "condition: CEL conditions are not supported" in out, out[-400:])
    bad_kind = """\
rules:
  policies:
    p:
      permissions: [{metadata: {filter: x}}]
      principals: [{any: true}]
"""
    rc, out = _validate(config(1, http_filter=http_rbac(bad_kind)))
    mp.check(rc != 0 and 'policies["p"].permissions[0].metadata' in out, out[-400:])
    unknown = bad_kind.replace("{metadata: {filter: x}}", "{uri_template: {}}")
    rc, out = _validate(config(1, http_filter=http_rbac(unknown)))
    mp.check(rc != 0 and "uri_template" in out, out[-400:])
    rc, out = _validate(config(1, net=net_rbac("rules: {}").replace("          stat_prefix: net\n", "")))
    mp.check(rc != 0 and "stat_prefix: required" in out, out[-400:])


if __name__ == "__main__":
    import run
    run.main([__file__])
