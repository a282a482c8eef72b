"""magpie <-> several mp.TestUpstream hosts in one cluster, split over priorities and localities
(issue 5 item 6): traffic stays on priority 0 while it is healthy, fails over to priority 1 when
the control plane marks P0 hosts unhealthy (health_status), spills by Envoy's overprovisioning
arithmetic when P0 is half gone, follows locality weights, and stays in the node's zone with zone
aware routing.  Each upstream counts its own requests, so the shares are measured at the peers;
the access log's upstream host says the same from magpie's side."""

import os

import mp


def endpoint(port, status=None):
    s = ("        - endpoint:\n"
         "            address:\n"
         "              socket_address: {address: 127.0.0.1, port_value: %d}\n" % port)
    if status:
        s += "          health_status: %s\n" % status
    return s


def locality(zone, priority, eps, weight=None):
    """One LocalityLbEndpoints: eps is a list of (port, health_status or None)."""
    s = "      - locality: {region: r1, zone: %s}\n        priority: %d\n" % (zone, priority)
    if weight is not None:
        s += "        load_balancing_weight: %d\n" % weight
    s += "        lb_endpoints:\n"
    return s + "".join(endpoint(p, st) for p, st in eps)


def config(localities, common_lb="", node_zone=None):
    node = ""
    if node_zone:
        node = "node:\n  id: n1\n  locality: {region: r1, zone: %s}\n" % node_zone
    text = mp.simple_config(1, cluster_extra=common_lb)
    # Replace the single generated endpoint list by ours.
    head, _, _ = text.partition("      endpoints:\n")
    return node + head + "      endpoints:\n" + "".join(localities)


def send(port, n):
    """n requests on one keep-alive connection; all must succeed."""
    with mp.Conn(port) as c:
        for _ in range(n):
            r = c.request("GET", "/echo")
            mp.eq(r.status, 200, "status")


def run(cfg, n):
    port = mp.free_port()
    m = mp.Magpie(cfg, ports={"port": port})
    send(port, n)
    return m


def test_traffic_stays_on_priority_0():
    ups = [mp.TestUpstream() for _ in range(4)]
    cfg = config([locality("a", 0, [(ups[0].port, None), (ups[1].port, None)]),
                  locality("b", 1, [(ups[2].port, None), (ups[3].port, None)])])
    m = run(cfg, 40)
    # Round robin over the two healthy P0 hosts; P1 is standby and sees nothing.
    mp.eq((ups[0].requests, ups[1].requests), (20, 20), "P0 hosts share the load")
    mp.eq((ups[2].requests, ups[3].requests), (0, 0), "P1 hosts idle")
    hosts = {mp.parse_access(line)["host"].strip() for line in m.access_lines(40)}
    mp.eq(hosts, {"127.0.0.1:%d" % ups[0].port, "127.0.0.1:%d" % ups[1].port},
          "access log: upstream hosts")


def test_unhealthy_priority_0_fails_over():
    ups = [mp.TestUpstream() for _ in range(4)]
    cfg = config([locality("a", 0, [(ups[0].port, "UNHEALTHY"), (ups[1].port, "DRAINING")]),
                  locality("b", 1, [(ups[2].port, None), (ups[3].port, None)])])
    run(cfg, 40)
    # No P0 host is usable: P1 takes every request (and P0 is not in panic, since P1 is whole).
    mp.eq((ups[0].requests, ups[1].requests), (0, 0), "unhealthy P0 hosts get nothing")
    mp.eq(ups[2].requests + ups[3].requests, 40, "P1 serves everything")


def test_half_of_priority_0_spills_30_percent():
    ups = [mp.TestUpstream() for _ in range(4)]
    cfg = config([locality("a", 0, [(ups[0].port, None), (ups[1].port, "TIMEOUT")]),
                  locality("b", 1, [(ups[2].port, None), (ups[3].port, None)])])
    run(cfg, 400)
    # P0 50 % healthy x 1.4 = 70 % of the load; P1 takes 30 %.  400 draws: binomial sd 2.3 %.
    p0 = ups[0].requests / 400.0
    mp.check(0.60 <= p0 <= 0.80, "P0 share %.3f, want 0.70" % p0)
    mp.eq(ups[1].requests, 0, "the TIMEOUT host is never used")
    mp.eq(ups[0].requests + ups[2].requests + ups[3].requests, 400, "every request served")


def test_locality_weights():
    ups = [mp.TestUpstream() for _ in range(4)]
    cfg = config([locality("a", 0, [(ups[0].port, None), (ups[1].port, None)], weight=1),
                  locality("b", 0, [(ups[2].port, None), (ups[3].port, None)], weight=3)],
                 common_lb="    common_lb_config:\n      locality_weighted_lb_config: {}\n")
    run(cfg, 400)
    # Localities are scheduled by weight deterministically: exactly 1 in 4 goes to zone a.
    a = ups[0].requests + ups[1].requests
    mp.eq(a, 100, "zone a (weight 1 of 4) requests")
    mp.eq(ups[2].requests + ups[3].requests, 300, "zone b (weight 3 of 4) requests")


def test_zone_aware_stays_local():
    ups = [mp.TestUpstream() for _ in range(4)]
    common = ("    common_lb_config:\n"
              "      zone_aware_lb_config: {min_cluster_size: 2}\n")
    cfg = config([locality("a", 0, [(ups[0].port, None), (ups[1].port, None)]),
                  locality("b", 0, [(ups[2].port, None), (ups[3].port, None)])],
                 common_lb=common, node_zone="b")
    run(cfg, 40)
    # The node is in zone b and zone b has its full share of healthy hosts: all stays local.
    mp.eq(ups[0].requests + ups[1].requests, 0, "nothing crosses to zone a")
    mp.eq((ups[2].requests, ups[3].requests), (20, 20), "zone b hosts share the load")


def test_zone_aware_spills_when_local_zone_degrades():
    ups = [mp.TestUpstream() for _ in range(4)]
    common = ("    common_lb_config:\n"
              "      zone_aware_lb_config: {min_cluster_size: 2}\n")
    # Zone b has 2 hosts, one unhealthy; zone a has 2 healthy.  Local share (of configured hosts)
    # 50 %, upstream share (of healthy hosts) 33 %: 66.7 % stays local, the rest goes to a.
    cfg = config([locality("a", 0, [(ups[0].port, None), (ups[1].port, None)]),
                  locality("b", 0, [(ups[2].port, None), (ups[3].port, "UNHEALTHY")])],
                 common_lb=common, node_zone="b")
    run(cfg, 400)
    local = ups[2].requests / 400.0
    mp.check(0.57 <= local <= 0.77, "local zone share %.3f, want 0.667" % local)
    mp.eq(ups[3].requests, 0, "the unhealthy local host is never used")


def test_duplicate_locality_rejected():
    cfg = config([locality("a", 0, [(1001, None)]), locality("a", 0, [(1002, None)])])
    d = mp.tmpdir()
    path = os.path.join(d, "c.yaml")
    with open(path, "w") as f:
        f.write(cfg.replace("$port", "1").replace("$admin", "2"))
    rc, out = mp.run_magpie(["-c", path, "--mode", "validate"])
    mp.check(rc != 0, "a locality listed twice in one priority is refused")
    mp.check("load_assignment.endpoints[1].locality" in out and "already listed" in out,
             "the error names the entry: %s" % out[-400:])


if __name__ == "__main__":
    import run
    run.main([__file__])
