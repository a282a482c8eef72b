"""Local rate limiting: envoy.filters.http.local_ratelimit (a bucket shared by all workers, or
one per downstream connection; enabled/enforced percentages; 429 local_rate_limited with RL and
the configured headers; x-ratelimit-* headers; gRPC UNAVAILABLE) and
envoy.filters.network.local_ratelimit (connections over the limit are closed at accept).
Peers: mp.TestUpstream, raw sockets (mp.Conn), curl, grpc_peer (grpcio)."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import grpc_peer  # noqa: E402
import mp  # noqa: E402


def _indent(text, n):
    return "".join(" " * n + l + "\n" for l in text.strip("\n").splitlines())


ALWAYS = """\
filter_enabled:
  runtime_key: rl_enabled
  default_value: {numerator: 100, denominator: HUNDRED}
filter_enforced:
  runtime_key: rl_enforced
  default_value: {numerator: 100, denominator: HUNDRED}
"""


def rl_filter(body):
    return ("          - name: envoy.filters.http.local_ratelimit\n"
            "            typed_config:\n"
            "              \"@type\": type.googleapis.com/"
            "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n"
            + _indent(body, 14))


def bucket(max_tokens, per_fill=None, interval="60s"):
    tb = "token_bucket:\n  max_tokens: %d\n  fill_interval: %s\n" % (max_tokens, interval)
    if per_fill is not None:
        tb += "  tokens_per_fill: %d\n" % per_fill
    return tb


def start(body, concurrency=1, up=None, cluster_extra=""):
    up = up or mp.TestUpstream()
    port = mp.free_port()
    cfg = mp.simple_config(up.port, cluster_extra=cluster_extra)
    cfg = cfg.replace("          http_filters:\n", "          http_filters:\n" + rl_filter(body), 1)
    return mp.Magpie(cfg, ports={"port": port}, concurrency=concurrency), up, port


def stat(m, name):
    return m.stats().get(name, 0)


def test_limit_then_429_with_headers_and_stats():
    body = "stat_prefix: rl\n" + bucket(3) + ALWAYS + """\
response_headers_to_add:
- append_action: OVERWRITE_IF_EXISTS_OR_ADD
  header: {key: x-local-rate-limit, value: "true"}
"""
    m, up, port = start(body)
    codes = [mp.get(port, "/echo").status for _ in range(5)]
    mp.eq(codes, [200, 200, 200, 429, 429], "3 tokens, then refused")
    r = mp.get(port, "/echo")
    mp.eq((r.status, r.body), (429, b"local_rate_limited"), "the refusal")
    mp.eq(r.header("x-envoy-ratelimited"), "true", "x-envoy-ratelimited")
    mp.eq(r.header("x-local-rate-limit"), "true", "response_headers_to_add")
    mp.eq(up.requests, 3, "refused requests never reach the upstream")
    mp.eq(stat(m, "rl.http_local_rate_limit.enabled"), 6, "enabled")
    mp.eq(stat(m, "rl.http_local_rate_limit.ok"), 3, "ok")
    mp.eq(stat(m, "rl.http_local_rate_limit.rate_limited"), 3, "rate_limited")
    mp.eq(stat(m, "rl.http_local_rate_limit.enforced"), 3, "enforced")
    mp.eq(mp.parse_access(m.access_lines(6)[-1])["flags"], "RL", "RL response flag")


def test_refill_after_interval():
    m, up, port = start("stat_prefix: rl\n" + bucket(2, per_fill=2, interval="0.5s") + ALWAYS)
    first = [mp.get(port, "/echo").status for _ in range(3)]
    mp.check(first.count(200) == 2 and first[-1] == 429,
             "two tokens then a refusal (a fill may land in between): %r" % first)
    # Poll (bounded) until the next fill lets a request through again.
    mp.wait_until(lambda: mp.get(port, "/echo").status == 200, 3, what="a refill")


def test_not_enforced_only_counts():
    body = "stat_prefix: rl\n" + bucket(1) + """\
filter_enabled:
  runtime_key: rl_enabled
  default_value: {numerator: 100}
request_headers_to_add_when_not_enforced:
- header: {key: x-would-be-limited, value: "yes"}
"""
    m, up, port = start(body)
    codes = [mp.get(port, "/echo").status for _ in range(3)]
    mp.eq(codes, [200, 200, 200], "filter_enforced absent: 0 %, nothing refused")
    mp.eq(stat(m, "rl.http_local_rate_limit.rate_limited"), 2, "but counted")
    mp.eq(stat(m, "rl.http_local_rate_limit.enforced"), 0, "not enforced")
    hs = [dict(h) for _, _, h in up.seen]
    mp.eq([h.get("x-would-be-limited") for h in hs], [None, "yes", "yes"],
          "request_headers_to_add_when_not_enforced on the over-limit requests")


def test_disabled_by_default():
    m, up, port = start("stat_prefix: rl\n" + bucket(1))
    codes = [mp.get(port, "/echo").status for _ in range(3)]
    mp.eq(codes, [200] * 3, "filter_enabled absent: 0 %")
    mp.eq(stat(m, "rl.http_local_rate_limit.enabled"), 0, "never consulted")


def test_shared_bucket_across_workers():
    # Two workers, many connections (SO_REUSEPORT spreads them): one bucket of 10 for all.
    m, up, port = start("stat_prefix: rl\n" + bucket(10) + ALWAYS, concurrency=2)
    codes = [mp.get(port, "/echo").status for _ in range(30)]
    mp.eq(codes.count(200), 10, "exactly max_tokens pass over both workers")
    mp.eq(codes.count(429), 20, "the rest are refused")
    mp.eq(stat(m, "rl.http_local_rate_limit.ok"), 10, "ok")


def test_per_connection_buckets():
    body = "stat_prefix: rl\n" + bucket(2) + ALWAYS + \
        "local_rate_limit_per_downstream_connection: true\n"
    m, up, port = start(body, concurrency=2)
    for n in range(3):
        with mp.Conn(port) as c:
            codes = [c.request("GET", "/echo").status for _ in range(3)]
            mp.eq(codes, [200, 200, 429], "connection %d has its own 2 tokens" % n)


def test_x_ratelimit_headers():
    body = "stat_prefix: rl\n" + bucket(3, interval="10s") + ALWAYS + \
        "enable_x_ratelimit_headers: DRAFT_VERSION_03\n"
    m, up, port = start(body)
    r = mp.get(port, "/echo")
    mp.eq(r.status, 200, "first")
    mp.eq(r.header("x-ratelimit-limit"), "3", "limit")
    mp.eq(r.header("x-ratelimit-remaining"), "2", "remaining after one")
    reset = int(r.header("x-ratelimit-reset"))
    mp.check(1 <= reset <= 10, "reset in (0, 10] s: %d" % reset)
    mp.get(port, "/echo")
    mp.get(port, "/echo")
    r = mp.get(port, "/echo")
    mp.eq((r.status, r.header("x-ratelimit-remaining")), (429, "0"), "refused, none left")
    m.stop()
    m, up, port = start("stat_prefix: rl\n" + bucket(3) + ALWAYS)
    mp.eq(mp.get(port, "/echo").header("x-ratelimit-limit"), None, "off by default")


def test_custom_status_and_grpc():
    s = grpc_peer.Server()
    body = "stat_prefix: rl\n" + bucket(1) + ALWAYS + "status: {code: ServiceUnavailable}\n"
    m, _, port = start(body, up=s, cluster_extra="    http2_protocol_options: {}")
    grpc_peer.call("127.0.0.1:%d" % port, "Unary", b"x")
    try:
        grpc_peer.call("127.0.0.1:%d" % port, "Unary", b"x")
    except grpc.RpcError as e:
        mp.eq(e.code(), grpc.StatusCode.UNAVAILABLE, "a refused gRPC call")
    else:
        raise mp.TestFailure("the second call was not limited")
    mp.eq(s.calls.get("Unary", 0), 1, "the server saw only the first call")
    s.stop()
    m.stop()
    m, up, port = start(body)
    mp.get(port, "/echo")
    mp.eq(mp.get(port, "/echo").status, 503, "status: ServiceUnavailable")


def net_config(up_port, tokens, terminal="hcm"):
    cfg = mp.simple_config(up_port)
    net = ("      - name: envoy.filters.network.local_ratelimit\n"
           "        typed_config:\n"
           "          \"@type\": type.googleapis.com/"
           "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit\n"
           "          stat_prefix: conns\n"
           "          token_bucket: {max_tokens: %d, fill_interval: 60s}\n" % tokens)
    return cfg.replace("      - name: envoy.filters.network.http_connection_manager",
                       net + "      - name: envoy.filters.network.http_connection_manager", 1)


def test_network_limiter_closes_connections():
    up = mp.TestUpstream()
    port = mp.free_port()
    m = mp.Magpie(net_config(up.port, 2), ports={"port": port}, concurrency=2)
    kept = [mp.Conn(port) for _ in range(2)]
    for c in kept:
        mp.eq(c.request("GET", "/echo").status, 200, "within the limit")
    for n in range(3):
        c = mp.Conn(port)
        mp.check(c.closed_by_peer(3.0), "connection %d over the limit is closed" % n)
        c.close()
    mp.eq(stat(m, "local_ratelimit.conns.rate_limited"), 3, "rate_limited")
    for c in kept:
        mp.eq(c.request("GET", "/echo").status, 200, "admitted connections keep working")
        c.close()
    mp.eq(up.requests, 4, "only admitted connections' requests reached the upstream")


def test_network_limiter_with_rbac_and_bad_config():
    # A network RBAC filter and the limiter may both come before the terminal filter.
    up = mp.TestUpstream()
    port = mp.free_port()
    cfg = net_config(up.port, 1)
    rbac = ("      - name: envoy.filters.network.rbac\n"
            "        typed_config:\n"
            "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC\n"
            "          stat_prefix: net\n"
            "          rules: {action: DENY}\n")
    cfg = cfg.replace("      - name: envoy.filters.network.http_connection_manager",
                      rbac + "      - name: envoy.filters.network.http_connection_manager", 1)
    m = mp.Magpie(cfg, ports={"port": port})
    mp.eq(mp.get(port, "/echo").status, 200, "DENY without policies allows; one token")
    c = mp.Conn(port)
    mp.check(c.closed_by_peer(3.0), "second connection closed by the limiter")
    c.close()
    m.stop()
    bad = net_config(up.port, 0)
    m = mp.Magpie(bad, ports={"port": mp.free_port()}, wait_ready=False)
    try:
        mp.wait_until(lambda: not m.alive(), 10, what="magpie to refuse max_tokens 0")
    finally:
        m.stop()
    mp.check("max_tokens" in m.log(), "error names max_tokens: %s" % m.log()[-400:])
