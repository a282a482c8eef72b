"""magpie routing (issue 2 item 6) <-> three Python test upstreams (ca, cb, cc).  Each upstream
counts its requests, so which cluster a route chose is observed at the upstream, not inferred."""

import json

import mp

ROUTES = """\
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $admin}}
static_resources:
  listeners:
  - name: l1
    address: {socket_address: {address: 127.0.0.1, port_value: $port}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
%(alog)s
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: r1
            virtual_hosts:
            - name: special
              domains: ["special.example", "*.wild.example"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: cc}
            - name: main
              domains: ["*"]
              routes:
              - match: {path: "/exact"}
                route: {cluster: cb}
              - match: {safe_regex: {regex: "^/re/[0-9]+$$"}}
                route: {cluster: cc}
              - match:
                  prefix: "/h"
                  headers:
                  - name: x-route
                    string_match: {exact: b}
                route: {cluster: cb}
              - match:
                  prefix: "/q"
                  query_parameters:
                  - name: env
                    string_match: {exact: canary}
                route: {cluster: cc}
              - match: {prefix: "/w"}
                route:
                  weighted_clusters:
                    clusters:
                    - {name: ca, weight: 75}
                    - {name: cb, weight: 25}
              - match: {prefix: "/direct"}
                direct_response: {status: 200, body: {inline_string: "direct answer\\n"}}
              - match: {prefix: "/old"}
                redirect: {path_redirect: "/new", response_code: MOVED_PERMANENTLY}
              - match: {prefix: "/ch"}
                route: {cluster_header: x-cluster}
              - match: {prefix: "/rw/"}
                route: {cluster: ca, prefix_rewrite: "/echo/"}
              - match: {prefix: "/hr"}
                route: {cluster: ca, host_rewrite_literal: rewritten.example}
              - match: {prefix: "/a"}
                route: {cluster: ca}
              - match: {prefix: "/h"}
                route: {cluster: ca}
              - match: {prefix: "/q"}
                route: {cluster: ca}
  clusters:
%(clusters)s
"""


def start():
    ups = {n: mp.TestUpstream() for n in ("ca", "cb", "cc")}
    port = mp.free_port()
    clusters = "".join(mp.cluster_yaml(n, u.port) for n, u in ups.items())
    cfg = ROUTES % {"alog": mp.access_log_yaml(), "clusters": clusters.rstrip("\n")}
    m = mp.Magpie(cfg, ports={"port": port})
    return m, ups, port


def counts(ups):
    return {n: u.requests for n, u in ups.items()}


def routed(port, ups, path, headers=None, host="t"):
    """Sends one request; returns (status, the cluster whose upstream saw it, response)."""
    before = counts(ups)
    r = mp.get(port, path, headers=headers, host=host)
    after = counts(ups)
    hit = [n for n in ups if after[n] != before[n]]
    return r.status, (hit[0] if len(hit) == 1 else hit or None), r


def test_prefix_path_regex_header_query():
    m, ups, port = start()
    # Each line: request -> (status, cluster observed at the upstream).
    mp.eq(routed(port, ups, "/a/x")[:2], (200, "ca"), "prefix /a")
    mp.eq(routed(port, ups, "/exact")[:2], (200, "cb"), "path /exact")
    mp.eq(routed(port, ups, "/exact/more")[:2], (404, None), "path is exact, no prefix match")
    mp.eq(routed(port, ups, "/re/123")[:2], (200, "cc"), "regex match")
    mp.eq(routed(port, ups, "/re/12a")[:2], (404, None), "regex is anchored")
    mp.eq(routed(port, ups, "/h", headers=[("X-Route", "b")])[:2], (200, "cb"), "header match")
    mp.eq(routed(port, ups, "/h", headers=[("X-Route", "c")])[:2], (200, "ca"),
          "header mismatch falls through")
    mp.eq(routed(port, ups, "/q?env=canary")[:2], (200, "cc"), "query match")
    mp.eq(routed(port, ups, "/q?env=prod")[:2], (200, "ca"), "query mismatch falls through")


def test_virtual_host_domains():
    m, ups, port = start()
    mp.eq(routed(port, ups, "/a", host="special.example")[:2], (200, "cc"), "exact domain")
    mp.eq(routed(port, ups, "/a", host="x.wild.example")[:2], (200, "cc"), "*.suffix domain")
    mp.eq(routed(port, ups, "/a", host="special.example:8080")[:2], (200, "cc"),
          "port in Host ignored for domain match")
    mp.eq(routed(port, ups, "/a", host="other")[:2], (200, "ca"), "* domain")


def test_weighted_clusters_proportion():
    m, ups, port = start()
    n = 400
    with mp.Conn(port) as c:
        for _ in range(n):
            mp.eq(c.request("GET", "/w").status, 200, "weighted")
    a, b = ups["ca"].requests, ups["cb"].requests
    mp.eq(a + b, n, "all weighted requests reached ca or cb")
    # 75/25 split: with n=400, ca's share is 0.75 +- 0.1 far beyond 4 sigma (sigma ~ 0.022).
    mp.check(0.65 <= a / n <= 0.85, "ca got %d of %d (want ~75%%)" % (a, n))


def test_direct_response_and_redirect():
    m, ups, port = start()
    st, hit, r = routed(port, ups, "/direct")
    mp.eq((st, r.body, hit), (200, b"direct answer\n", None), "direct_response (no upstream)")
    st, hit, r = routed(port, ups, "/old/page")
    mp.eq((st, hit), (301, None), "redirect status")
    loc = r.header("location") or ""
    mp.check(loc.endswith("/new") and (loc.startswith("/") or loc.startswith("http://t")),
             "Location %r" % loc)
    code, body, _ = mp.curl("http://127.0.0.1:%d/old" % port, "-L", "--max-redirs", "1")
    # curl follows to /new, which has no route: 404 proves the Location was usable.
    mp.eq(code, 404, "curl -L follows the redirect")


def test_cluster_header():
    m, ups, port = start()
    mp.eq(routed(port, ups, "/ch", headers=[("X-Cluster", "cb")])[:2], (200, "cb"), "cb")
    mp.eq(routed(port, ups, "/ch", headers=[("X-Cluster", "cc")])[:2], (200, "cc"), "cc")
    st, hit, _ = routed(port, ups, "/ch", headers=[("X-Cluster", "nope")])
    # Envoy answers an unknown cluster_header value with 503 (flag NC) and no upstream.
    mp.eq((st, hit), (503, None), "unknown cluster")
    f = mp.parse_access(m.access_lines(3)[-1])
    mp.eq(f["flags"], "NC", "access-log flag for unknown cluster")


def test_prefix_and_host_rewrite():
    m, ups, port = start()
    st, hit, r = routed(port, ups, "/rw/abc?x=1")
    mp.eq((st, hit, r.json()["path"]), (200, "ca", "/echo/abc?x=1"), "prefix_rewrite")
    st, hit, r = routed(port, ups, "/hr", host="orig.example")
    h = {k.lower(): v for k, v in r.json()["headers"]}
    mp.eq(h.get("host"), "rewritten.example", "host_rewrite_literal")


def test_no_route_is_404_nr():
    m, ups, port = start()
    st, hit, r = routed(port, ups, "/nothing/here")
    mp.eq((st, hit), (404, None), "no route: 404 and no upstream request")
    f = mp.parse_access(m.access_lines(1)[-1])
    # The NR flag is what explains this 404 in the access log.
    mp.eq((f["code"], f["flags"]), ("404", "NR"), "access log")
    s = m.stats()
    mp.eq(s.get("http.ingress.no_route"), 1, "http.ingress.no_route stat")


def test_strict_dns_cluster_on_localhost():
    up = mp.TestUpstream()
    port = mp.free_port()
    cfg = mp.simple_config(up.port, cluster_extra="    dns_lookup_family: V4_ONLY\n"
                           "    dns_refresh_rate: 1s")
    cfg = cfg.replace("type: STATIC", "type: STRICT_DNS").replace(
        "socket_address: {address: 127.0.0.1, port_value: %d}" % up.port,
        "socket_address: {address: localhost, port_value: %d}" % up.port)
    m = mp.Magpie(cfg, ports={"port": port})
    # DNS resolution is asynchronous: the first requests may race it, so poll for success.
    mp.wait_until(lambda: mp.get(port, "/echo").status == 200, 5, what="STRICT_DNS localhost")
    mp.eq(mp.get(port, "/echo").json()["path"], "/echo", "served via localhost")
    f = mp.parse_access(m.access_lines(1)[-1])
    mp.eq(f["host"], "127.0.0.1:%d" % up.port, "upstream host resolved from localhost")


if __name__ == "__main__":
    import run
    run.main([__file__])
