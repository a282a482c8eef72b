#!/usr/bin/python3
"""magpie-cp, magpie's own control plane, driven by a grpcio client with raw-bytes calls and the
hand-written codec of xds_wire.py: ADS SotW (first response per type, ACK keeps quiet, a file
change pushes a new version and nonce, NACK logged, named RDS), delta (subscribe, removal on file
delete, initial_resource_versions), per-type services, REST-JSON with 304, step mode, client
disconnect, and invalid files reported with the proxy's own message."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
import mp  # noqa: E402
import xds_wire as w  # noqa: E402

CP_BIN = os.environ.get("MAGPIE_CP_BIN",
                        os.path.join(os.path.dirname(mp.MAGPIE_BIN), "magpie-cp"))
ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"

CLUSTER = """"@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
name: %s
connect_timeout: %s
type: EDS
eds_cluster_config: {eds_config: {ads: {}}}
"""
CLA = """{"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
 "cluster_name": "%s",
 "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address":
   {"address": "127.0.0.1", "port_value": %d}}}}]}]}
"""
ROUTES = """resources:
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: r1
  virtual_hosts: [{name: a, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: c1}}]}]
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: r2
"""
LISTENER = """"@type": type.googleapis.com/envoy.config.listener.v3.Listener
name: l1
address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
"""


def write(d, name, text):
    """Atomic replace, as editors and config tools do (one IN_MOVED_TO event)."""
    tmp = os.path.join(d, "." + name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(d, name))


def resource_dir():
    d = mp.tmpdir("mp-cp-")
    write(d, "c1.yaml", CLUSTER % ("c1", "1s"))
    write(d, "c2.yaml", CLUSTER % ("c2", "2s"))
    write(d, "c1-endpoints.json", CLA % ("c1", 8081))
    write(d, "routes.yaml", ROUTES)
    write(d, "l1.yaml", LISTENER)
    return d


class Plane:
    def __init__(self, d, args=()):
        if not os.access(CP_BIN, os.X_OK):
            raise mp.TestFailure("magpie-cp missing: %s (make)" % CP_BIN)
        self.port = mp.free_port()
        self.log_path = os.path.join(mp.tmpdir("mp-cp-log-"), "cp.log")
        self.log = open(self.log_path, "w")
        self.p = mp._register(subprocess.Popen(
            [CP_BIN, "--dir", d, "--listen", "127.0.0.1:%d" % self.port, "--debounce-ms", "50"]
            + list(args), stdout=self.log, stderr=subprocess.STDOUT))
        mp.wait_until(lambda: mp.port_open(self.port) or self.p.poll() is not None,
                      what="magpie-cp listening")
        mp.check(self.p.poll() is None, "magpie-cp exited: %s" % self.text())
        self.target = "127.0.0.1:%d" % self.port

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_log(self, needle, what=None):
        mp.wait_until(lambda: needle in self.text(), timeout=10,
                      what=what or "log line %r" % needle)
        return self.text()

    def stop(self):
        rc = mp.stop_process(self.p)
        self.log.close()
        return rc


class Stream:
    """One bidi xDS call: send() queues a request, recv() returns the next response (bounded)."""

    def __init__(self, target, method, decode):
        self.ch = grpc.insecure_channel(target)
        call = self.ch.stream_stream(method, request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b)
        self.reqs = queue.Queue()
        self.resps = queue.Queue()
        self.decode = decode
        self.it = call(iter(self.reqs.get, None))
        self.t = threading.Thread(target=self._pump, daemon=True)
        self.t.start()

    def _pump(self):
        try:
            for m in self.it:
                self.resps.put(m)
        except grpc.RpcError as e:
            self.resps.put(e)
        self.resps.put(None)

    def send(self, msg):
        self.reqs.put(msg)

    def recv(self, timeout=10):
        try:
            m = self.resps.get(timeout=timeout)
        except queue.Empty:
            raise mp.TestFailure("no response within %ss" % timeout)
        if m is None or isinstance(m, Exception):
            raise mp.TestFailure("stream ended: %r" % (m,))
        return self.decode(m)

    def close(self):
        self.reqs.put(None)
        self.it.cancel()
        self.ch.close()


def sotw(target, method=ADS + "StreamAggregatedResources"):
    s = Stream(target, method, w.discovery_response)
    mp.on_cleanup(s.close)
    return s


def delta(target, method=ADS + "DeltaAggregatedResources"):
    s = Stream(target, method, w.delta_response)
    mp.on_cleanup(s.close)
    return s


def ack(s, type_url, r, names=()):
    s.send(w.discovery_request(type_url, r["version"], names, r["nonce"]))


def test_sotw_first_response_ack_quiet_and_named_rds():
    cp = Plane(resource_dir())
    s = sotw(cp.target)
    s.send(w.discovery_request(w.CDS, node_id="node-a"))
    r = s.recv()
    mp.eq(r["type_url"], w.CDS, "type")
    mp.eq(sorted(r["resources"]), ["c1", "c2"], "CDS is the whole state of the world")
    mp.eq(r["version"], "1", "first version")
    mp.check(r["nonce"] != "", "a nonce")
    ack(s, w.CDS, r)
    # The ACK must not draw a response: the next thing on the stream is the RDS answer.
    s.send(w.discovery_request(w.RDS, names=["r1"]))
    r2 = s.recv()
    mp.eq(r2["type_url"], w.RDS, "after an ACK the plane keeps quiet; next is RDS")
    mp.eq(list(r2["resources"]), ["r1"], "RDS sends the requested name only")
    mp.check(r2["nonce"] != r["nonce"], "nonce per response")
    ack(s, w.RDS, r2, ["r1"])
    s.send(w.discovery_request(w.RDS, r2["version"], ["r1", "r2"], r2["nonce"]))
    r3 = s.recv()
    mp.eq(sorted(r3["resources"]), ["r1", "r2"], "a name added is answered at once")
    ack(s, w.RDS, r3, ["r1", "r2"])
    s.send(w.discovery_request(w.LDS))
    r4 = s.recv()
    mp.eq((r4["type_url"], list(r4["resources"])), (w.LDS, ["l1"]), "LDS wildcard")
    log = cp.wait_log('ACK RouteConfiguration version="1" nonce="%s"' % r3["nonce"])
    mp.check('node="node-a"' in log, "the node id from the first request is remembered")


def test_file_change_pushes_new_version_and_nonce():
    d = resource_dir()
    cp = Plane(d)
    s = sotw(cp.target)
    s.send(w.discovery_request(w.CDS, node_id="n"))
    r = s.recv()
    ack(s, w.CDS, r)
    s.send(w.discovery_request(w.EDS, names=["c1"]))
    e = s.recv()
    ack(s, w.EDS, e, ["c1"])
    cp.wait_log('ACK ClusterLoadAssignment version="1" nonce="%s"' % e["nonce"])
    write(d, "c1.yaml", CLUSTER % ("c1", "3s"))
    r2 = s.recv()
    mp.eq((r2["type_url"], r2["version"]), (w.CDS, "2"), "CDS pushed with a new version")
    mp.check(r2["nonce"] not in (r["nonce"], e["nonce"]), "new nonce")
    mp.eq(sorted(r2["resources"]), ["c1", "c2"], "still the whole state")
    mp.check(r2["resources"]["c1"] != r["resources"]["c1"], "the changed cluster")
    ack(s, w.CDS, r2)
    write(d, "c1-endpoints.json", CLA % ("c1", 9090))
    e2 = s.recv()
    mp.eq((e2["type_url"], e2["version"], list(e2["resources"])), (w.EDS, "2", ["c1"]),
          "EDS pushed")
    ack(s, w.EDS, e2, ["c1"])
    os.unlink(os.path.join(d, "c2.yaml"))
    r3 = s.recv()
    mp.eq((r3["type_url"], sorted(r3["resources"])), (w.CDS, ["c1"]),
          "a deleted file is gone from the next CDS state")


def test_nack_logged_and_not_answered():
    cp = Plane(resource_dir())
    s = sotw(cp.target)
    s.send(w.discovery_request(w.CDS, node_id="n1"))
    r = s.recv()
    s.send(w.discovery_request(w.CDS, "", (), r["nonce"], error=(13, "c1: bad thing here")))
    cp.wait_log('NACK Cluster version="" nonce="%s" names=[] node="n1" error_detail=(13) '
                'c1: bad thing here' % r["nonce"])
    s.send(w.discovery_request(w.LDS))
    mp.eq(s.recv()["type_url"], w.LDS, "no answer to the NACK; next is LDS")
    # A stale nonce is ignored too.
    s.send(w.discovery_request(w.CDS, "1", (), "999"))
    cp.wait_log('stale nonce "999" for Cluster')


def test_per_type_service_without_type_url():
    cp = Plane(resource_dir())
    s = sotw(cp.target, "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters")
    s.send(w.discovery_request("", node_id="n"))
    r = s.recv()
    mp.eq((r["type_url"], sorted(r["resources"])), (w.CDS, ["c1", "c2"]), "StreamClusters")
    s2 = sotw(cp.target)
    s2.send(w.discovery_request("", node_id="n"))
    try:
        s2.recv()
        raise mp.TestFailure("ADS without type_url answered")
    except mp.TestFailure as e:
        mp.check("INVALID_ARGUMENT" in str(e) and "type URL is required" in str(e), str(e))


def test_delta_subscribe_removal_and_initial_versions():
    d = resource_dir()
    cp = Plane(d)
    s = delta(cp.target)
    s.send(w.delta_request(w.CDS, node_id="dn"))  # legacy wildcard
    r = s.recv()
    mp.eq(sorted(r["resources"]), ["c1", "c2"], "delta wildcard CDS")
    s.send(w.delta_request(w.CDS, nonce=r["nonce"]))
    s.send(w.delta_request(w.EDS, subscribe=["c1", "nope"]))
    e = s.recv()
    mp.eq((e["type_url"], list(e["resources"]), e["removed"]), (w.EDS, ["c1"], ["nope"]),
          "named EDS; an unknown name is reported removed")
    s.send(w.delta_request(w.EDS, nonce=e["nonce"]))
    os.unlink(os.path.join(d, "c2.yaml"))
    r2 = s.recv()
    mp.eq((r2["type_url"], r2["resources"], r2["removed"]), (w.CDS, {}, ["c2"]),
          "file deleted: removed_resources only")
    write(d, "c1.yaml", CLUSTER % ("c1", "5s"))
    r3 = s.recv()
    mp.eq((list(r3["resources"]), r3["removed"]), (["c1"], []), "only the changed resource")
    # Reconnect holding c1 at its current version: only what differs comes.
    write(d, "c2.yaml", CLUSTER % ("c2", "2s"))
    r4 = s.recv()
    mp.eq(list(r4["resources"]), ["c2"], "c2 back")
    s2 = delta(cp.target)
    s2.send(w.delta_request(w.CDS, subscribe=["*"], node_id="dn",
                            initial={"c1": r3["resources"]["c1"]["version"], "gone": "x"}))
    r5 = s2.recv()
    mp.eq((list(r5["resources"]), r5["removed"]), (["c2"], ["gone"]),
          "initial_resource_versions honoured")
    cp.wait_log("initial_versions=2")


def test_rest_json_and_304():
    rest_port = mp.free_port()
    cp = Plane(resource_dir(), ["--rest-listen", "127.0.0.1:%d" % rest_port])
    mp.wait_until(lambda: mp.port_open(rest_port), what="REST listener")

    def post(port, path, body):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                     data=body.encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    for port in (rest_port, cp.port):
        st, body = post(port, "/v3/discovery:clusters", '{"node": {"id": "r"}}')
        mp.eq(st, 200, "REST CDS")
        j = json.loads(body)
        mp.eq(sorted(x["name"] for x in j["resources"]), ["c1", "c2"], "REST resources")
        mp.eq(j["resources"][0]["@type"], w.CDS, "Any in JSON")
        st, body = post(port, "/v3/discovery:clusters", '{"version_info": "%s"}' %
                        j["versionInfo"])
        mp.eq(st, 304, "current version: 304")
        st, body = post(port, "/v3/discovery:routes", '{"resource_names": ["r2"]}')
        mp.eq((st, [x["name"] for x in json.loads(body)["resources"]]), (200, ["r2"]),
              "REST RDS by name")
        mp.eq(post(port, "/v3/discovery:nothing", "{}")[0], 404, "unknown type")
        mp.eq(post(port, "/v3/discovery:clusters", "{bad")[0], 400, "bad JSON")
    cp.wait_log('REST: request Cluster version="1"')


def test_client_disconnect_and_reset():
    cp = Plane(resource_dir())
    s = sotw(cp.target)
    s.send(w.discovery_request(w.CDS, node_id="x"))
    s.recv()
    s.close()
    cp.wait_log("stream closed")
    s2 = delta(cp.target)
    s2.send(w.delta_request(w.LDS, node_id="y"))
    mp.eq(list(s2.recv()["resources"]), ["l1"], "the plane serves after a client went away")
    s2.reqs.put(None)  # half-close: the plane ends the call with grpc-status 0
    mp.eq(s2.resps.get(timeout=10), None, "call ended cleanly")
    mp.check(cp.p.poll() is None, "still running")
    mp.eq(cp.stop(), 0, "clean exit on SIGTERM")
    mp.check("Sanitizer" not in cp.text() and "runtime error" not in cp.text(),
             "no sanitizer report (ASan build): %s" % cp.text()[-2000:])


def test_step_mode_one_change_per_signal():
    d = resource_dir()
    cp = Plane(d, ["--step"])
    s = sotw(cp.target)
    s.send(w.discovery_request(w.CDS, node_id="s"))
    r = s.recv()
    ack(s, w.CDS, r)
    cp.wait_log('ACK Cluster version="1"')
    write(d, "c1.yaml", CLUSTER % ("c1", "7s"))
    write(d, "c3.yaml", CLUSTER % ("c3", "1s"))
    cp.wait_log("step: 2 change(s) staged")
    os.kill(cp.p.pid, signal.SIGUSR1)
    r2 = s.recv()
    mp.eq((r2["version"], sorted(r2["resources"])), ("2", ["c1", "c2"]), "first change only")
    mp.check(r2["resources"]["c1"] != r["resources"]["c1"], "c1 changed")
    ack(s, w.CDS, r2)
    os.kill(cp.p.pid, signal.SIGUSR1)
    r3 = s.recv()
    mp.eq((r3["version"], sorted(r3["resources"])), ("3", ["c1", "c2", "c3"]), "then c3")
    cp.wait_log("step: 0 change(s) still staged")


def test_invalid_file_same_message_as_proxy():
    d = resource_dir()
    bad = CLUSTER % ("c9", "5x")
    write(d, "c9.yaml", bad)
    r = subprocess.run([CP_BIN, "--dir", d, "--validate"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    mp.eq(r.returncode, 1, "validate fails")
    msg = r.stderr.decode()
    mp.check('c9.yaml: connect_timeout: invalid duration "5x"' in msg, msg)
    boot = mp.tmpdir("mp-cp-boot-")
    with open(os.path.join(boot, "b.yaml"), "w") as f:
        f.write("static_resources:\n  clusters:\n  - name: c9\n    connect_timeout: 5x\n"
                "    type: STATIC\n")
    rc, out = mp.run_magpie(["-c", os.path.join(boot, "b.yaml"), "--mode", "validate"])
    mp.check(rc != 0, "the proxy rejects it")
    mp.check('connect_timeout: invalid duration "5x"' in out, "the proxy says the same: %s" % out)
    # Serving: a bad file is refused as a whole and the last good snapshot stays.
    os.unlink(os.path.join(d, "c9.yaml"))
    cp = Plane(d)
    write(d, "c9.yaml", bad)
    cp.wait_log('not published, still serving the last good snapshot: c9.yaml: '
                'connect_timeout: invalid duration "5x"')
    s = sotw(cp.target)
    s.send(w.discovery_request(w.CDS))
    mp.eq(sorted(s.recv()["resources"]), ["c1", "c2"], "last good snapshot served")
