#!/usr/bin/python3
"""The gRPC ADS client (issue 6, items 1-3): magpie with dynamic_resources.ads_config pointing at
magpie-cp (build/magpie-cp, started here on a free port over a temp directory).  A listener and a
cluster arrive over ADS and serve; a changed file on the plane is followed (new route and
cluster); a resource the translator refuses is NACKed with magpie's message (seen in the plane's
log) while the old config serves; the plane killed and restarted: traffic flows meanwhile and
magpie reconnects (control_plane.connected_state back to 1).  SotW and delta.
Peers: magpie <- Python HTTP/1.1 client; magpie -> mp.TestUpstream; magpie -> magpie-cp."""

import json
import os
import subprocess

import mp
from test_dynamic_files import cluster, listener

CP_BIN = os.environ.get("MAGPIE_CP_BIN",
                        os.path.join(os.path.dirname(mp.MAGPIE_BIN), "magpie-cp"))

BOOTSTRAP = """\
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: $admin}
node: {id: magpie-ads-test, cluster: test}
dynamic_resources:
  ads_config:
    api_type: $api
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: xds}}]
  lds_config: {ads: {}, resource_api_version: V3}
  cds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    http2_protocol_options: {}
    load_assignment:
      cluster_name: xds
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address:
        {address: 127.0.0.1, port_value: $cp}}}}]}]
"""

LDS = "listener_manager.lds"
CDS = "cluster_manager.cds"
STATE = "control_plane.connected_state"


def write(d, name, res):
    """Atomic replace, one resource per file (the plane's one-resource format)."""
    tmp = os.path.join(d, "." + name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.rename(tmp, os.path.join(d, name))


class Plane:
    def __init__(self, d, port):
        self.port = port
        self.log_path = os.path.join(mp.tmpdir("mp-ads-cp-"), "cp.log")
        self.log = open(self.log_path, "w")
        self.p = mp._register(subprocess.Popen(
            [CP_BIN, "--dir", d, "--listen", "127.0.0.1:%d" % port, "--debounce-ms", "50"],
            stdout=self.log, stderr=subprocess.STDOUT))
        mp.wait_until(lambda: mp.port_open(port) or self.p.poll() is not None,
                      what="magpie-cp listening")
        mp.check(self.p.poll() is None, "magpie-cp exited: %s" % self.text())

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        mp.stop_process(self.p)
        self.log.close()


def reaches(port, path, up):
    before = up.requests
    try:
        r = mp.get(port, path)
    except OSError:
        return False
    return r.status == 200 and up.requests > before


def stat(m, name):
    return m.stats().get(name, 0)


def run_ads(api):
    up1, up2 = mp.TestUpstream(), mp.TestUpstream()
    pa, cp_port = mp.free_port(), mp.free_port()
    d = mp.tmpdir("mp-ads-dir-")
    write(d, "c1.json", cluster("c1", [up1.port]))
    write(d, "l1.json", listener("l1", pa, [("/", "c1")]))
    plane = Plane(d, cp_port)
    m = mp.Magpie(BOOTSTRAP, ports={"api": api, "cp": cp_port})
    try:
        # 1. the listener and the cluster arrive over ADS and serve
        mp.wait_until(lambda: reaches(pa, "/a", up1), timeout=10, what="listener from ADS")
        mp.eq(stat(m, STATE), 1, STATE)
        mp.check(stat(m, LDS + ".update_success") >= 1, "lds update counted")
        mp.check(stat(m, CDS + ".update_success") >= 1, "cds update counted")
        # 2. a change on the plane: a new cluster and a route to it
        write(d, "c2.json", cluster("c2", [up2.port]))
        write(d, "l1.json", listener("l1", pa, [("/two", "c2"), ("/", "c1")]))
        mp.wait_until(lambda: reaches(pa, "/two", up2), timeout=10, what="new route to c2")
        mp.check(reaches(pa, "/one", up1), "other routes still go to c1")
        # 3. a listener the translator refuses (same address as l1): NACK, old config serves
        rejected = stat(m, LDS + ".update_rejected")
        write(d, "l2.json", listener("l2", pa, [("/", "c1")]))
        mp.wait_until(lambda: stat(m, LDS + ".update_rejected") > rejected, timeout=10,
                      what="lds update rejected")
        mp.wait_until(lambda: "NACK" in plane.text(), timeout=10, what="NACK in the plane's log")
        nack = [ln for ln in plane.text().splitlines() if "NACK" in ln]
        mp.check(any("is already used by listener" in ln for ln in nack),
                 "the NACK carries magpie's message: %s" % nack)
        mp.check(reaches(pa, "/two", up2), "the previous config keeps serving after the NACK")
        os.unlink(os.path.join(d, "l2.json"))
        # 4. the plane goes away: traffic flows, connected_state drops, then it comes back
        plane.stop()
        mp.wait_until(lambda: stat(m, STATE) == 0, timeout=10, what="connected_state 0")
        for i in range(5):
            mp.check(reaches(pa, "/two", up2), "traffic while the plane is down (%d)" % i)
        plane = Plane(d, cp_port)
        mp.wait_until(lambda: stat(m, STATE) == 1, timeout=15, what="reconnected")
        mp.wait_until(lambda: 'node="magpie-ads-test"' in plane.text(), timeout=10,
                      what="magpie's requests on the new stream")
        mp.check(reaches(pa, "/two", up2), "same config after the reconnect (route to c2)")
        mp.check(reaches(pa, "/x", up1), "same config after the reconnect (route to c1)")
        # and the new stream carries updates
        write(d, "l1.json", listener("l1", pa, [("/three", "c2"), ("/", "c1")]))
        mp.wait_until(lambda: reaches(pa, "/three", up2), timeout=10, what="update after reconnect")
        mp.eq(stat(m, STATE), 1, STATE + " at the end")
        mp.check(m.alive(), "magpie alive")
    except BaseException:
        print("--- magpie log ---\n" + m.log()[-3000:] + "\n--- plane log ---\n"
              + plane.text()[-3000:])
        raise
    finally:
        m.stop()
        plane.stop()
        up1.stop()
        up2.stop()


def test_ads_sotw():
    run_ads("GRPC")


def test_ads_delta():
    run_ads("DELTA_GRPC")


if __name__ == "__main__":
    import run
    run.main(__file__)
