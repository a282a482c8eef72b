"""EDS from files (issue 6, item 4): an EDS cluster's ClusterLoadAssignment comes from a
path_config_source file; a change of endpoints is published in place (the cluster object, the
remaining hosts' health and pooled connections are kept); a broken file is rejected with
cluster.<name>.update_rejected and the old hosts keep serving.
Peers: magpie <- Python HTTP/1.1 clients; magpie -> mp.TestUpstream."""

import json
import os

import mp
import test_dynamic_files as dyn

CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def eds_cluster(name, path):
    return {"@type": dyn.CLUSTER, "name": name, "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": {"path_config_source": {"path": path}}}}


def cla(name, ports):
    return {"@type": CLA, "cluster_name": name, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": p}}}}
        for p in ports]}]}


def start_eds(port, ports):
    d = mp.tmpdir("mp-eds-")
    eds = os.path.join(d, "eds.json")
    dyn.write(eds, "1", [cla("svc", ports)])
    dyn.write(os.path.join(d, "lds.json"), "1", [dyn.listener("a", port, [("/", "svc")])])
    dyn.write(os.path.join(d, "cds.json"), "1", [eds_cluster("svc", eds)])
    return mp.Magpie(dyn.BOOTSTRAP.replace("$dir", d)), eds


def test_eds_file_serves_and_update_keeps_connections():
    u1, u2, u3 = mp.TestUpstream(), mp.TestUpstream(), mp.TestUpstream()
    port = mp.free_port()
    m, eds = start_eds(port, [u1.port, u2.port])
    with m:
        mp.wait_until(lambda: m.stats().get("cluster.svc.membership_total") == 2, timeout=5,
                      what="two EDS hosts")
        for i in range(4):
            mp.eq(mp.get(port, "/a%d" % i).status, 200, "request to EDS hosts")
        mp.check(u1.requests > 0 and u2.requests > 0, "both EDS hosts served")
        c1, r2 = u1.connections, u2.requests
        mp.eq(c1, 1, "one pooled connection to host 1")
        dyn.update(m, eds, "2", [cla("svc", [u1.port, u3.port])], "cluster.svc")
        for i in range(6):
            mp.eq(mp.get(port, "/b%d" % i).status, 200, "request after the EDS update")
        mp.check(u3.requests > 0, "traffic moved to the new host")
        mp.eq(u2.requests, r2, "no traffic to the removed host")
        mp.eq(u1.connections, c1, "the remaining host's pooled connection was kept")
        mp.eq(m.stats().get("cluster_manager.cds.update_success"), 1, "no CDS rebuild")
        # a broken file is rejected; the old hosts keep serving
        before = u1.requests + u3.requests
        dyn.update(m, eds, "3", [{"@type": CLA, "cluster_name": "svc", "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "not-an-ip", "port_value": 1}}}}]}]}], "cluster.svc",
            field="update_rejected")
        for i in range(2):
            mp.eq(mp.get(port, "/c%d" % i).status, 200, "old hosts serve after a rejection")
        mp.eq(u1.requests + u3.requests, before + 2, "served by the kept hosts")
        with open(eds, "w") as f:
            f.write("{not json")
        mp.wait_until(lambda: m.stats().get("cluster.svc.update_rejected", 0) >= 2, timeout=5,
                      what="unparsable EDS file rejected")
        mp.eq(mp.get(port, "/d").status, 200, "still served")
    for u in (u1, u2, u3):
        u.stop()


def test_eds_without_assignment_has_no_hosts():
    u1 = mp.TestUpstream()
    port = mp.free_port()
    m, eds = start_eds(port, [])
    with m:
        mp.wait_until(lambda: m.stats().get("cluster.svc.update_success", 0) >= 1, timeout=5,
                      what="EDS file read")
        mp.eq(mp.get(port, "/x").status, 503, "no hosts yet: 503")
        dyn.update(m, eds, "2", [cla("svc", [u1.port])], "cluster.svc")
        mp.eq(mp.get(port, "/y").status, 200, "hosts from the file serve")
    u1.stop()
