"""magpie admin (issue 2 item 9) <-> urllib and a strict Prometheus parser: stats names are
Envoy's and request counters match exactly what the test sent."""

import mp


def start():
    up = mp.TestUpstream()
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up.port), ports={"port": port}, concurrency=2)
    return m, up, port


def send(port, n_ok, n_404):
    with mp.Conn(port) as c:
        for _ in range(n_ok):
            mp.eq(c.request("GET", "/echo").status, 200, "ok")
        for _ in range(n_404):
            mp.eq(c.request("GET", "/status/404").status, 404, "upstream 404")


def test_stats_counters_match_traffic():
    m, up, port = start()
    send(port, 7, 3)
    for _ in range(2):  # two more connections, so downstream_cx_total is 3
        mp.eq(mp.get(port, "/echo").status, 200, "ok")
    s = m.stats()
    want = {
        "cluster.c1.upstream_rq_total": 12,
        "cluster.c1.upstream_rq_2xx": 9,
        "cluster.c1.upstream_rq_4xx": 3,
        "http.ingress.downstream_rq_total": 12,
        "http.ingress.downstream_cx_total": 3,
        "server.live": 1,
    }
    for k, v in want.items():
        mp.eq(s.get(k), v, k)
    for k in ("cluster.c1.upstream_cx_total", "cluster.c1.upstream_cx_active",
              "cluster.c1.upstream_cx_connect_fail", "http.ingress.downstream_cx_active",
              "server.uptime"):
        mp.check(k in s, "stat %s present" % k)
    mp.check(any(k.startswith("listener.") and k.endswith(".downstream_cx_total") and v >= 3
                 for k, v in s.items()), "listener.<addr>.downstream_cx_total")
    # Pool reuse: far fewer upstream connections than requests.
    mp.check(s["cluster.c1.upstream_cx_total"] <= 4, "upstream_cx_total %d"
             % s["cluster.c1.upstream_cx_total"])


def test_prometheus_is_valid_and_matches():
    m, up, port = start()
    send(port, 5, 2)
    st, text = m.admin("/stats/prometheus")
    mp.eq(st, 200, "status")
    try:
        samples, types = mp.parse_prometheus(text)
    except mp.PromError as e:
        m.fail("invalid Prometheus text: %s\n%s" % (e, text[:2000]))
    # Envoy's tag extraction: the cluster name becomes a label, not part of the metric name.
    mp.eq(mp.prom_value(samples, "envoy_cluster_upstream_rq_total", envoy_cluster_name="c1"),
          7.0, "envoy_cluster_upstream_rq_total{c1}")
    mp.eq(types.get("envoy_cluster_upstream_rq_total"), "counter", "type")
    mp.eq(mp.prom_value(samples, "envoy_http_downstream_rq_total",
                        envoy_http_conn_manager_prefix="ingress"), 7.0,
          "envoy_http_downstream_rq_total{ingress}")
    mp.eq(mp.prom_value(samples, "envoy_server_live"), 1.0, "envoy_server_live")


def test_ready_healthcheck_fail_ok():
    m, up, port = start()
    mp.eq(m.admin("/ready")[0], 200, "ready")
    mp.eq(m.admin("/healthcheck/fail", "POST")[0], 200, "fail")
    mp.eq(m.admin("/ready")[0], 503, "not ready after /healthcheck/fail")
    mp.eq(m.admin("/healthcheck/ok", "POST")[0], 200, "ok")
    mp.eq(m.admin("/ready")[0], 200, "ready again")


def test_other_admin_endpoints():
    m, up, port = start()
    st, body = m.admin("/clusters")
    mp.check(st == 200 and "c1::" in body, "/clusters lists c1: %r" % body[:300])
    st, body = m.admin("/config_dump")
    mp.eq(st, 200, "/config_dump")
    __import__("json").loads(body)  # must be JSON
    st, body = m.admin("/listeners")
    mp.check(st == 200 and "l1" in body, "/listeners names l1: %r" % body[:300])
    mp.eq(m.admin("/nonexistent")[0], 404, "unknown admin path")


def test_quitquitquit_exits_zero():
    m, up, port = start()
    mp.eq(m.admin("/quitquitquit", "POST")[0], 200, "quitquitquit")
    try:
        rc = m.proc.wait(10)
    except Exception:
        m.fail("still running 10 s after /quitquitquit")
    mp.eq(rc, 0, "exit status")


if __name__ == "__main__":
    import run
    run.main([__file__])
