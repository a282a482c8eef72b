"""docs/security.md's worked examples, run as written: the YAML blocks of "Worked example: two
sidecars" and of RBAC's "Worked example" are read from the document itself, their `{...}` /
`[...]` placeholders and /etc/certs paths filled in, and two magpies are started from them
(frontend's sidecar -> web's sidecar -> the application).  If the document's config stops
loading or stops doing what the text says, this fails."""

import json
import os
import re
import shutil
import subprocess

import yaml

import mp
import pki

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "security.md")
FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
WEB = "spiffe://cluster.local/ns/default/sa/web"
OTHER = "spiffe://cluster.local/ns/default/sa/other"
OUTSIDER = "spiffe://cluster.local/ns/prod/sa/outsider"


def _section_blocks(title):
    """The ```yaml blocks between the heading `title` and the next heading of its level."""
    text = open(DOC).read()
    start = text.index(title)
    level = text.rfind("\n", 0, start)
    hashes = re.match(r"#+", text[level + 1:]).group(0)
    nxt = re.search(r"\n%s [^#]" % hashes, text[start + len(title):])
    body = text[start:start + len(title) + (nxt.start() if nxt else len(text))]
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", body, re.S)]


def _certs(ca, d, leaf):
    """/etc/certs as the platform would mount it for one workload: PEM files and sds.yaml."""
    os.makedirs(d, exist_ok=True)
    shutil.copy(leaf.chain, os.path.join(d, "cert-chain.pem"))
    shutil.copy(leaf.key, os.path.join(d, "key.pem"))
    shutil.copy(ca.ca_file, os.path.join(d, "root-cert.pem"))
    return d


def _at(text_obj, certs_dir):
    return json.loads(json.dumps(text_obj).replace("/etc/certs", certs_dir))


def _bootstrap(listeners, clusters):
    return json.dumps({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": listeners, "clusters": clusters}}).replace(
            '"port_value": 0', '"port_value": $admin', 1)


def _route_to(cluster):
    return {"virtual_hosts": [{"name": "all", "domains": ["*"],
                               "routes": [{"match": {"prefix": "/"},
                                           "route": {"cluster": cluster}}]}]}


def _static_cluster(name, port):
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                             "port_value": port}}}}]}]}}


def _web_sidecar(blocks, rbac_chain, certs, web_port, app_port):
    listener = _at(blocks[2]["listeners"][0], certs)
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": web_port}
    chain = listener["filter_chains"][0]
    hcm = chain["filters"][0]["typed_config"]
    hcm["route_config"] = _route_to("app")
    # RBAC's worked example supplies the filters: network RBAC first, then its HTTP filters.
    rbac_filters = rbac_chain["filters"]
    hcm["http_filters"] = rbac_filters[1]["typed_config"]["http_filters"]
    chain["filters"] = [rbac_filters[0], chain["filters"][0]]
    return _bootstrap([listener], [_static_cluster("app", app_port)])


def _frontend_sidecar(blocks, certs, out_port, web_port):
    cluster = _at(blocks[1]["clusters"][0], certs)
    cluster.update(_static_cluster("web", web_port))
    cluster["type"] = "STRICT_DNS"  # as written; an IP literal resolves to itself
    listener = {
        "name": "outbound",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": out_port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network."
                         "http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "outbound", "route_config": _route_to("web"),
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                             "Router"}}]}}]}]}
    return _bootstrap([listener], [cluster])


def _start_mesh():
    d = mp.tmpdir("mp-secdoc-")
    ca = pki.CA(d)
    leaves = {n: ca.issue(n, uri=u, dns=["%s.default.svc" % n])
              for n, u in (("frontend", FRONTEND), ("web", WEB), ("other", OTHER),
                           ("outsider", OUTSIDER))}
    blocks = _section_blocks("## Worked example: two sidecars")
    mp.eq(len(blocks), 3, "the two-sidecar example's YAML blocks (sds, cluster, listener)")
    rbac = _section_blocks("### Worked example")
    mp.eq(len(rbac), 1, "RBAC's worked example block")
    for name in ("frontend", "web"):
        certs = _certs(ca, os.path.join(d, name), leaves[name])
        with open(os.path.join(certs, "sds.yaml"), "w") as f:
            f.write(json.dumps(_at(blocks[0], certs)))
    app = mp.TestUpstream()
    web_port, out_port = mp.free_port(), mp.free_port()
    web = mp.Magpie(_web_sidecar(blocks, rbac[0]["filter_chains"][0], os.path.join(d, "web"),
                                 web_port, app.port))
    front = mp.Magpie(_frontend_sidecar(blocks, os.path.join(d, "frontend"), out_port,
                                        web_port))
    return dict(ca=ca, leaves=leaves, app=app, web=web, front=front, web_port=web_port,
                out_port=out_port)


def _request(port, method, path):
    with mp.Conn(port) as c:
        return c.request(method, path, host="web")


def _direct(m, leaf, method, path):
    """curl straight to web's sidecar as workload `leaf` (mTLS, SNI web.default.svc)."""
    r = subprocess.run(
        ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", method,
         "--cert", leaf.chain, "--key", leaf.key, "--resolve",
         "web.default.svc:%d:127.0.0.1" % m["web_port"],
         "https://web.default.svc:%d%s" % (m["web_port"], path)],
        capture_output=True, text=True, timeout=20)
    return r.stdout


def test_two_sidecars_as_documented():
    m = _start_mesh()
    try:
        # frontend's application -> frontend's sidecar -> mTLS -> web's sidecar -> application.
        r = _request(m["out_port"], "GET", "/api/orders")
        if r.status != 200:
            m["front"].fail("through both sidecars: %d %r\n--- web's log ---\n%s"
                            % (r.status, r.body, m["web"].log()[-3000:]))
        xfcc = dict((k.lower(), v) for k, v in r.json()["headers"]).get("x-forwarded-client-cert", "")
        mp.check(xfcc.startswith("By=%s;Hash=" % WEB) and xfcc.endswith(";URI=" + FRONTEND),
                 "XFCC as the document shows it, got %r" % xfcc)
        mp.check(m["front"].stats().get("cluster.web.upstream_cx_http2_total", 0) >= 1,
                 "the sidecars speak HTTP/2 to each other, as the document says")
        st = m["web"].stats()
        mp.check(any(k.endswith(".ssl.handshake") and v >= 1 for k, v in st.items()
                     if k.startswith("listener.")), "web's listener counted the handshake")
        mp.eq(st.get("web_tcp.rbac.allowed"), 1, "network RBAC allowed namespace default")
        # The RBAC example's rules, as its text says: POST /admin refused for everyone.
        r = _request(m["out_port"], "POST", "/admin/users")
        mp.eq(r.status, 403, "POST /admin denied (DENY policy)")
        mp.eq(r.body, b"RBAC: access denied", "the 403 body")
    finally:
        m["front"].stop()
        m["web"].stop()
        m["app"].stop()


def test_rbac_example_as_documented():
    m = _start_mesh()
    try:
        other, outsider = m["leaves"]["other"], m["leaves"]["outsider"]
        mp.eq(_direct(m, other, "GET", "/public/logo.png"), "200", "any default workload reads "
              "/public/")
        mp.eq(_direct(m, other, "GET", "/private"), "403", "other workloads only read /public/")
        mp.eq(_direct(m, m["leaves"]["frontend"], "GET", "/private"), "200",
              "frontend may do anything but POST /admin")
        mp.eq(_direct(m, outsider, "GET", "/public/logo.png"), "000",
              "another namespace's connection is closed by network RBAC")
        st = m["web"].stats()
        mp.check(st.get("web_tcp.rbac.denied", 0) >= 1, "web_tcp.rbac.denied counted")
        mp.check(st.get("http.web.rbac.denied", 0) >= 1 or st.get("http.inbound.rbac.denied", 0)
                 >= 1, "http rbac.denied counted")
        mp.check(st.get("http.inbound.rbac.strict_shadow_denied", 0) >= 1,
                 "the shadow rule counted what it would refuse, got %r"
                 % {k: v for k, v in st.items() if "rbac" in k})
    finally:
        m["front"].stop()
        m["web"].stop()
        m["app"].stop()
