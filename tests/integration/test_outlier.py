"""Outlier detection (issue 5 item 4): consecutive 5xx and gateway failures eject a host within
a second of its failures, the others carry the traffic, the host returns after
base_ejection_time, max_ejection_percent holds, success-rate ejection over an interval, the
event log and /clusters health_flags."""

import json
import time

import mp

OD_FAST = """\
    outlier_detection:
      interval: 0.2s
      base_ejection_time: 1s
%s"""


def endpoints(ports):
    """Extra lb_endpoints after simple_config's first one."""
    return "".join("        - endpoint:\n"
                   "            address:\n"
                   "              socket_address: {address: 127.0.0.1, port_value: %d}\n" % p
                   for p in ports)


def start(ports, od_fields, event_log=True, concurrency=2):
    cfg = mp.simple_config(ports[0], cluster_extra=OD_FAST % od_fields,
                           clusters_extra=endpoints(ports[1:]))
    if event_log:
        cfg = "cluster_manager:\n  outlier_detection:\n    event_log_path: $dir/od.log\n" + cfg
    port = mp.free_port()
    m = mp.Magpie(cfg, ports={"port": port}, concurrency=concurrency)
    return m, port


def stat(m, name):
    return m.stats().get("cluster.c1.outlier_detection." + name, 0)


def events(m):
    try:
        with open(m.dir + "/od.log") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def health_flags(m, port):
    st, body = m.admin("/clusters")
    mp.eq(st, 200, "/clusters")
    key = "c1::127.0.0.1:%d::health_flags::" % port
    for line in body.splitlines():
        if line.startswith(key):
            return line[len(key):]
    raise mp.TestFailure("no health_flags line for port %d in /clusters" % port)


def test_consecutive_5xx_ejects_fast_and_returns():
    ups = [mp.TestUpstream() for _ in range(3)]
    bad = ups[2]
    m, port = start([u.port for u in ups],
                    "      consecutive_5xx: 3\n      max_ejection_percent: 50\n")
    bad.force_status = 503
    first_fail = None
    ejected_at = None
    for _ in range(200):
        r = mp.get(port, "/x")
        now = time.monotonic()
        if r.status == 503 and first_fail is None:
            first_fail = now
        if stat(m, "ejections_active") == 1:
            ejected_at = time.monotonic()
            break
    mp.check(first_fail is not None, "the bad host answered 503")
    mp.check(ejected_at is not None, "the bad host was ejected")
    took = ejected_at - first_fail
    mp.check(took < 1.0, "ejected %.3fs after its first failure (want < 1 s)" % took)
    mp.eq(stat(m, "ejections_enforced_consecutive_5xx"), 1, "enforced consecutive_5xx")
    mp.eq(stat(m, "ejections_detected_consecutive_5xx"), 1, "detected consecutive_5xx")
    mp.eq(health_flags(m, bad.port), "/failed_outlier_check", "/clusters flags of the bad host")
    mp.eq(health_flags(m, ups[0].port), "healthy", "/clusters flags of a good host")
    # The others carry the traffic: no request reaches the ejected host.
    before = bad.requests
    statuses = [mp.get(port, "/x").status for _ in range(30)]
    mp.eq(statuses, [200] * 30, "statuses while the bad host is ejected")
    mp.eq(bad.requests, before, "requests reaching the ejected host")
    # It recovers; after base_ejection_time (1 s) the next sweep returns it.
    bad.force_status = None
    mp.wait_until(lambda: stat(m, "ejections_active") == 0, timeout=5, what="unejection")
    back = time.monotonic() - ejected_at
    mp.check(back >= 0.9, "returned after %.2fs, base_ejection_time is 1s" % back)
    mp.wait_until(lambda: mp.get(port, "/x").status == 200 and bad.requests > before,
                  timeout=5, what="traffic reaches the returned host")
    ev = events(m)
    acts = [(e["action"], e["type"], e["upstream_url"]) for e in ev]
    url = "127.0.0.1:%d" % bad.port
    mp.eq(acts, [("EJECT", "CONSECUTIVE_5XX", url), ("UNEJECT", "CONSECUTIVE_5XX", url)],
          "event log")
    mp.eq(ev[0]["cluster_name"], "c1", "event cluster_name")
    mp.eq(ev[0]["num_ejections"], 1, "event num_ejections")
    mp.eq(ev[0]["enforced"], True, "event enforced")
    mp.check("timestamp" in ev[0] and "eject_consecutive_event" in ev[0], "event fields")
    mp.check("ejected host 127.0.0.1:%d" % bad.port in m.log(), "ejection logged")


def test_max_ejection_percent():
    ups = [mp.TestUpstream() for _ in range(3)]
    ups[1].force_status = 500
    ups[2].force_status = 500
    m, port = start([u.port for u in ups],
                    "      consecutive_5xx: 2\n      max_ejection_percent: 50\n", event_log=False)
    for _ in range(300):
        mp.get(port, "/x")
        if stat(m, "ejections_overflow") >= 1:
            break
    mp.check(stat(m, "ejections_overflow") >= 1, "the second ejection overflowed")
    mp.eq(stat(m, "ejections_active"), 1, "one host (33 %) ejected, two (67 %) would pass 50 %")
    flags = sorted(health_flags(m, u.port) for u in ups[1:])
    mp.eq(flags, ["/failed_outlier_check", "healthy"], "flags of the two bad hosts")


def test_gateway_failures_and_refused_port():
    ups = [mp.TestUpstream() for _ in range(2)]
    refused = mp.refused_port()
    ups[1].force_status = 502
    m, port = start([ups[0].port, ups[1].port, refused],
                    "      consecutive_5xx: 1000\n      consecutive_gateway_failure: 2\n"
                    "      enforcing_consecutive_gateway_failure: 100\n"
                    "      max_ejection_percent: 100\n", event_log=True)
    for _ in range(300):
        mp.get(port, "/x")
        if stat(m, "ejections_active") == 2:
            break
    mp.eq(stat(m, "ejections_enforced_consecutive_gateway_failure"), 2,
          "a 502 host and a refused port ejected as gateway failures")
    mp.eq(stat(m, "ejections_enforced_consecutive_5xx"), 0, "consecutive_5xx not reached")
    mp.eq(health_flags(m, refused), "/failed_outlier_check", "refused port flagged")
    mp.eq(health_flags(m, ups[1].port), "/failed_outlier_check", "502 host flagged")
    types = {e["type"] for e in events(m) if e["action"] == "EJECT"}
    mp.eq(types, {"CONSECUTIVE_GATEWAY_FAILURE"}, "event types")


def test_gateway_failure_not_enforced_by_default():
    ups = [mp.TestUpstream() for _ in range(3)]
    ups[2].force_status = 504
    m, port = start([u.port for u in ups],
                    "      consecutive_5xx: 1000\n      consecutive_gateway_failure: 2\n"
                    "      max_ejection_percent: 100\n", event_log=True)
    mp.wait_until(lambda: mp.get(port, "/x") and
                  stat(m, "ejections_detected_consecutive_gateway_failure") >= 1,
                  timeout=10, what="gateway failure detected")
    mp.eq(stat(m, "ejections_active"), 0, "enforcing_consecutive_gateway_failure defaults to 0")
    ev = [e for e in events(m) if e["action"] == "EJECT"]
    mp.check(ev and ev[0]["enforced"] is False, "event logged as not enforced: %r" % ev)


def test_success_rate_ejection():
    ups = [mp.TestUpstream() for _ in range(5)]
    ups[4].force_status = 503
    m, port = start([u.port for u in ups],
                    "      consecutive_5xx: 100000\n      success_rate_request_volume: 10\n"
                    "      max_ejection_percent: 20\n")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and stat(m, "ejections_enforced_success_rate") == 0:
        for _ in range(20):
            mp.get(port, "/x")
    mp.eq(stat(m, "ejections_enforced_success_rate"), 1, "success-rate ejection")
    mp.eq(health_flags(m, ups[4].port), "/failed_outlier_check", "the failing host is ejected")
    mp.eq(stat(m, "ejections_active"), 1, "only the failing host")
    # 503s are gateway failures too: those are detected but, by default, not enforced.
    ev = [e for e in events(m) if e["action"] == "EJECT" and e["enforced"]]
    mp.eq([e["type"] for e in ev], ["SUCCESS_RATE"], "enforced ejection events")
    sr = ev[0]["eject_success_rate_event"]
    mp.eq(sr["host_success_rate"], 0, "host success rate")
    mp.check(sr["cluster_average_success_rate"] >= 70, "average %r" % sr)
