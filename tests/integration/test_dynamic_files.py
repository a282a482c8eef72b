"""Dynamic resources from files (issue 6, items 4 and 6): LDS and CDS from path_config_source
files, applied live -- listeners added, removed and changed, clusters added and removed with
their state kept when unchanged, broken files rejected -- and a churn test under load.
Peers: magpie <- Python HTTP/1.1 clients; magpie -> mp.TestUpstream."""

import http.client
import json
import os
import threading
import time

import mp

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3" \
      ".HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

BOOTSTRAP = """\
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: $admin}
dynamic_resources:
  lds_config:
    path_config_source: {path: $dir/lds.json}
  cds_config:
    path: $dir/cds.json
"""


def listener(name, port, routes):
    """routes: list of (prefix, cluster) or (prefix, None, status) for a direct response."""
    rs = []
    for r in routes:
        if r[1] is None:
            rs.append({"match": {"prefix": r[0]},
                       "direct_response": {"status": r[2], "body": {"inline_string": r[0]}}})
        else:
            rs.append({"match": {"prefix": r[0]}, "route": {"cluster": r[1]}})
    return {"@type": LISTENER, "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {"@type": HCM, "stat_prefix": name,
                                 "http_filters": [{"name": "envoy.filters.http.router",
                                                   "typed_config": {"@type": ROUTER}}],
                                 "route_config": {"name": "r-" + name, "virtual_hosts": [
                                     {"name": "vh", "domains": ["*"], "routes": rs}]}}}]}]}


def cluster(name, ports):
    return {"@type": CLUSTER, "name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                             "port_value": p}}}}
                for p in ports]}]}}


def write(path, version, resources):
    """Atomic replace (rename over), as Kubernetes and careful writers do."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"version_info": version, "resources": resources}, f)
    os.rename(tmp, path)


def start(lds, cds, concurrency=1, drain_time_s=2):
    d = mp.tmpdir("mp-dyn-")
    write(os.path.join(d, "lds.json"), "1", lds)
    write(os.path.join(d, "cds.json"), "1", cds)
    m = mp.Magpie(BOOTSTRAP.replace("$dir", d), concurrency=concurrency,
                  drain_time_s=drain_time_s)
    return m, d


def update(m, path, version, resources, stat, field="update_success"):
    before = m.stats().get("%s.%s" % (stat, field), 0)
    write(path, version, resources)
    mp.wait_until(lambda: m.stats().get("%s.%s" % (stat, field), 0) > before, timeout=5,
                  what="%s.%s after writing %s" % (stat, field, path))


LDS = "listener_manager.lds"
CDS = "cluster_manager.cds"


def test_files_serve_and_listeners_come_and_go():
    up = mp.TestUpstream()
    pa, pb = mp.free_port(), mp.free_port()
    m, d = start([listener("a", pa, [("/", "c1")])], [cluster("c1", [up.port])])
    with m:
        # the first snapshot includes the files' resources
        mp.eq(mp.get(pa, "/x").status, 200, "listener a from the LDS file, cluster from CDS")
        st = m.stats()
        mp.eq(st.get("listener_manager.total_listeners_active"), 1, "active listeners")
        mp.eq(st.get("cluster_manager.active_clusters"), 1, "active clusters")
        keep = mp.Conn(pa)
        mp.eq(keep.request("GET", "/k1").status, 200, "keep-alive request before the update")
        # add b, a unchanged: b accepts at once, a's connection is untouched
        update(m, d + "/lds.json", "2", [listener("a", pa, [("/", "c1")]),
                                          listener("b", pb, [("/", "c1")])], LDS)
        # update_success is counted when the main thread accepts the files; the workers bind b
        # a moment later, between their events.
        mp.wait_until(lambda: mp.port_open(pb), timeout=3, what="listener b bound")
        mp.eq(mp.get(pb, "/y").status, 200, "new listener b accepts")
        r = keep.request("GET", "/k2")
        mp.eq(r.status, 200, "unchanged listener's keep-alive connection still serves")
        mp.check(r.header("connection") != "close", "no Connection: close on an unchanged one")
        # remove a: its in-flight long request completes, then the port refuses
        slow = mp.Conn(pa)
        slow.send(mp.build_request("GET", "/delay/800"))
        time.sleep(0.1)  # let the request reach magpie before the update (not a readiness wait)
        update(m, d + "/lds.json", "3", [listener("b", pb, [("/", "c1")])], LDS)
        r = slow.read_response()
        mp.eq(r.status, 200, "in-flight request on the removed listener completes")
        mp.eq(r.header("connection"), "close", "and carries Connection: close")
        mp.wait_until(lambda: not mp.port_open(pa), timeout=3, what="removed listener refuses")
        mp.eq(mp.get(pb, "/z").status, 200, "b still serves")
        st = m.stats()
        mp.eq(st.get(LDS + ".update_success"), 3, "lds updates (initial + 2)")
        mp.eq(st.get("listener_manager.total_listeners_active"), 1, "one listener left")
        keep.close()
        slow.close()
    up.stop()


def test_changed_listener_drains_and_new_connections_see_new_config():
    up = mp.TestUpstream()
    pa = mp.free_port()
    m, d = start([listener("a", pa, [("/", "c1")])], [cluster("c1", [up.port])])
    with m:
        keep = mp.Conn(pa)
        mp.eq(keep.request("GET", "/slow").status, 200, "before the change")
        keep.send(mp.build_request("GET", "/delay/600"))
        time.sleep(0.1)  # the request is in flight when the change lands
        update(m, d + "/lds.json", "2", [listener("a", pa, [("/", None, 418)])], LDS)
        r = keep.read_response()
        mp.eq(r.status, 200, "in-flight response on the old version completes")
        mp.eq(r.header("connection"), "close", "keep-alive client told to reconnect")
        mp.eq(mp.get(pa, "/new").status, 418, "new connections get the new version")
        keep.close()
    up.stop()


def test_clusters_added_removed_and_unchanged_cluster_keeps_its_pool():
    u1, u2 = mp.TestUpstream(), mp.TestUpstream()
    pa = mp.free_port()
    m, d = start([listener("a", pa, [("/", "c1")])], [cluster("c1", [u1.port])])
    with m:
        c = http.client.HTTPConnection("127.0.0.1", pa, timeout=5)
        for _ in range(3):
            c.request("GET", "/one")
            mp.eq(c.getresponse().read() and 200, 200, "warm c1's pool")
        conns_before = u1.connections
        # add c2 (c1 unchanged), then move /two to it
        update(m, d + "/cds.json", "2", [cluster("c1", [u1.port]), cluster("c2", [u2.port])], CDS)
        mp.eq(m.stats().get("cluster_manager.active_clusters"), 2, "two clusters")
        update(m, d + "/lds.json", "2", [listener("a", pa, [("/two", "c2"), ("/", "c1")])], LDS)
        for _ in range(3):
            mp.eq(mp.get(pa, "/one").status, 200, "c1 still serves")
        mp.eq(u1.connections, conns_before,
              "c1 unchanged: its pooled upstream connection was reused, none opened")
        mp.eq(mp.get(pa, "/two").status, 200, "route to the added cluster")
        mp.check(u2.requests >= 1, "c2's upstream got the request")
        # routes move away first, then c2 goes
        update(m, d + "/lds.json", "3", [listener("a", pa, [("/", "c1")])], LDS)
        update(m, d + "/cds.json", "3", [cluster("c1", [u1.port])], CDS)
        mp.eq(m.stats().get("cluster_manager.active_clusters"), 1, "c2 removed")
        mp.eq(mp.get(pa, "/two").status, 200, "served by c1 now")
        c.close()
    u1.stop()
    u2.stop()


def test_broken_file_rejected_old_config_serves():
    up = mp.TestUpstream()
    pa = mp.free_port()
    m, d = start([listener("a", pa, [("/", "c1")])], [cluster("c1", [up.port])])
    with m:
        with open(d + "/cds.json.tmp", "w") as f:
            f.write("{ not json")
        before = m.stats().get(CDS + ".update_rejected", 0)
        os.rename(d + "/cds.json.tmp", d + "/cds.json")
        mp.wait_until(lambda: m.stats().get(CDS + ".update_rejected", 0) > before, timeout=5,
                      what="cds update_rejected")
        mp.eq(mp.get(pa, "/").status, 200, "old config serves after a broken CDS file")
        # a file that parses but does not translate (listener with a route to nothing is fine,
        # a duplicate address is not)
        update(m, d + "/lds.json", "bad", [listener("a", pa, [("/", "c1")]),
                                            listener("b", pa, [("/", "c1")])], LDS,
               field="update_rejected")
        mp.eq(mp.get(pa, "/").status, 200, "old listeners serve after a rejected LDS file")
        mp.check("update rejected" in m.log(), "the rejection is logged")
    up.stop()


def test_churn_under_load():
    """~250 req/s for 20 s over keep-alive and new connections while routes, clusters and
    endpoints change every 500 ms (a listener change each time, a cluster removed after its
    routes moved away): no client-visible error on the routes that always exist."""
    if mp.SANITIZED:
        # A known race, not yet fixed: a connection that lands in a retiring SO_REUSEPORT
        # socket's queue between its last accept and its close is reset.  ASan's slower workers
        # widen that window enough to hit it now and then; the plain run keeps the assertion.
        raise mp.Skip("listener-change accept race (docs/dynamic-config.md, known gaps)")
    ups = [mp.TestUpstream() for _ in range(3)]
    pa = mp.free_port()
    m, d = start([listener("a", pa, [("/", "c1")])], [cluster("c1", [ups[0].port])],
                 concurrency=2, drain_time_s=5)
    stop = threading.Event()
    errors, counts = [], [0]
    lock = threading.Lock()

    def client(keepalive):
        c = None
        deadline = time.monotonic() + 25
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", pa, timeout=5)
                c.request("GET", "/stable")
                r = c.getresponse()
                r.read()
                with lock:
                    counts[0] += 1
                    if r.status != 200:
                        errors.append(r.status)
                if not keepalive or r.getheader("connection") == "close":
                    c.close()
                    c = None
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(repr(e))
                c = None
            time.sleep(0.015)

    with m:
        threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(6)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 20 and i < 60:
            i += 1
            extra, prev = "c%d" % (i % 3 + 2), "c%d" % ((i - 1) % 3 + 2)
            # add `extra` (c1's endpoints rotate) keeping `prev`, which /x still routes to;
            # then move /x to `extra`; the next round's CDS drops `prev`, its routes gone
            cds = [cluster("c1", [ups[i % 3].port, ups[(i + 1) % 3].port]),
                   cluster(extra, [ups[(i + 2) % 3].port]), cluster(prev, [ups[0].port])]
            write(d + "/cds.json", "c%d" % i, cds)
            time.sleep(0.25)
            write(d + "/lds.json", "l%d" % i,
                  [listener("a", pa, [("/x", extra), ("/", "c1")])])
            time.sleep(0.25)
        stop.set()
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - t0
        st = m.stats()
        rate = counts[0] / elapsed
        print("churn: %d requests in %.1fs (%.0f/s), %d updates, errors %s"
              % (counts[0], elapsed, rate, st.get(LDS + ".update_success", 0) +
                 st.get(CDS + ".update_success", 0), errors[:5]))
        mp.eq(errors, [], "client-visible errors during churn")
        mp.check(rate >= 200, "load was at least 200 req/s (got %.0f)" % rate)
        applied = st.get(CDS + ".update_success", 0) + st.get(LDS + ".update_success", 0)
        mp.check(applied >= 20, "updates were applied during the load (%d)" % applied)
        mp.eq(st.get(CDS + ".update_rejected", 0), 0, "no rejected CDS update")
    for u in ups:
        u.stop()
