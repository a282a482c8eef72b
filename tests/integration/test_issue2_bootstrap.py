"""Issue 2's "Done when" bootstrap: two listeners, three clusters (one STRICT_DNS on localhost),
prefix/regex/header routes, weighted clusters, a direct response and a redirect, all checked with
curl.  magpie <-> three Python test upstreams."""

import json

import mp

BOOTSTRAP = """\
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: $admin}
static_resources:
  listeners:
  - name: public
    address:
      socket_address: {address: 127.0.0.1, port_value: $p1}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: public
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: public_routes
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/api/"}
                route: {cluster: api}
              - match: {safe_regex: {regex: "^/users/[0-9]+$$"}}
                route: {cluster: users}
              - match:
                  prefix: "/"
                  headers:
                  - name: x-canary
                    present_match: true
                route: {cluster: dns_local}
              - match: {prefix: "/split"}
                route:
                  weighted_clusters:
                    clusters:
                    - {name: api, weight: 50}
                    - {name: users, weight: 50}
              - match: {path: "/health"}
                direct_response: {status: 200, body: {inline_string: "ok\\n"}}
              - match: {prefix: "/legacy"}
                redirect: {path_redirect: "/api/v2", response_code: FOUND}
  - name: internal
    address:
      socket_address: {address: 127.0.0.1, port_value: $p2}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: internal
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: internal_routes
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: dns_local}
  clusters:
  - name: api
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: api
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $api}}}
  - name: users
    type: STATIC
    connect_timeout: 1s
    lb_policy: LEAST_REQUEST
    load_assignment:
      cluster_name: users
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $users}}}
  - name: dns_local
    type: STRICT_DNS
    connect_timeout: 1s
    dns_lookup_family: V4_ONLY
    lb_policy: RANDOM
    load_assignment:
      cluster_name: dns_local
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: localhost, port_value: $dns}}}
"""


def test_issue2_bootstrap_with_curl():
    ups = {n: mp.TestUpstream() for n in ("api", "users", "dns")}
    p1, p2 = mp.free_port(), mp.free_port()
    ports = {"p1": p1, "p2": p2, "api": ups["api"].port, "users": ups["users"].port,
             "dns": ups["dns"].port}
    m = mp.Magpie(BOOTSTRAP, ports=ports, concurrency=2)
    base1, base2 = "http://127.0.0.1:%d" % p1, "http://127.0.0.1:%d" % p2

    def via(url, upstream, *args):
        before = ups[upstream].requests
        code, body, err = mp.curl(url, *args)
        mp.eq(code, 200, "%s (%s)" % (url, err))
        mp.eq(ups[upstream].requests, before + 1, "%s reached %s" % (url, upstream))
        return json.loads(body)

    # prefix route -> api; the upstream sees the original path.
    mp.eq(via(base1 + "/api/items", "api")["path"], "/api/items", "prefix route")
    # regex route -> users (and a non-matching regex falls through to no route: 404).
    via(base1 + "/users/42", "users")
    mp.eq(mp.curl(base1 + "/users/abc")[0], 404, "regex mismatch -> 404")
    # header-presence route -> the STRICT_DNS cluster on localhost (resolution may lag start).
    mp.wait_until(lambda: mp.curl(base1 + "/x", "-H", "x-canary: 1")[0] == 200, 5,
                  what="STRICT_DNS cluster ready")
    via(base1 + "/anything", "dns", "-H", "x-canary: yes")
    # the second listener routes everything to the DNS cluster.
    via(base2 + "/internal/thing", "dns")
    # weighted clusters: both sides get traffic.
    a0, u0 = ups["api"].requests, ups["users"].requests
    for _ in range(60):
        mp.eq(mp.curl(base1 + "/split")[0], 200, "/split")
    da, du = ups["api"].requests - a0, ups["users"].requests - u0
    mp.eq(da + du, 60, "split total")
    mp.check(15 <= da <= 45, "50/50 split gave api %d of 60" % da)
    # direct response: no upstream involved.
    before = sum(u.requests for u in ups.values())
    code, body, _ = mp.curl(base1 + "/health")
    mp.eq((code, body), (200, b"ok\n"), "direct_response")
    # redirect: 302 with Location to /api/v2; curl -L then lands on api.
    code, _, err = mp.curl(base1 + "/legacy", "-D", "/dev/stderr")
    mp.eq(code, 302, "redirect status")
    mp.check("/api/v2" in err.lower(), "Location names /api/v2: %r" % err)
    mp.eq(sum(u.requests for u in ups.values()), before, "no upstream for direct/redirect")
    mp.eq(via(base1 + "/legacy", "api", "-L")["path"], "/api/v2", "redirect followed")


test_issue2_bootstrap_with_curl.timeout = 90


def test_issue2_bootstrap_validates():
    import os
    import string
    d = mp.tmpdir()
    path = os.path.join(d, "b.yaml")
    with open(path, "w") as f:
        f.write(string.Template(BOOTSTRAP).substitute(admin=1, p1=2, p2=3, api=4, users=5, dns=6))
    rc, out = mp.run_magpie(["--mode", "validate", "-c", path])
    mp.eq(rc, 0, "validate the issue-2 bootstrap; output:\n" + out)


if __name__ == "__main__":
    import run
    run.main([__file__])
