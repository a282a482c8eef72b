#!/usr/bin/python3
"""HTTP/2 abuse on the downstream side (docs/http2-abuse.md): one test per h2raw scenario.

Each test starts magpie (mp.simple_config: one listener, codec_type AUTO, stat_prefix ingress)
in front of a mp.TestUpstream, runs the scenario's frames on an h2c prior-knowledge connection
and checks three things:
  - the answer is one RFC 9113 allows for it (h2raw.Scenario.expect: GOAWAY with the error
    code, RST_STREAM code, or status),
  - a fresh, well-behaved request on a new connection still gets 200,
  - one of the scenario's counters under http.ingress. grew (the first listed is the one the
    codec is meant to count; e.g. http.ingress.http2.too_many_resets for rapid reset).
Until magpie answers an h2c prior-knowledge GET, every test SKIPs with "magpie does not speak
HTTP/2 yet".

MP_H2_TARGET=host:port[/path] points the same tests at another h2c server (nghttpd, for one)
instead of starting magpie; the counter check is then left out.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import h2raw  # noqa: E402
import mp  # noqa: E402

STAT_PREFIX = "http.ingress."


class Target:
    def __init__(self, host, port, path, magpie=None):
        self.host, self.port, self.path, self.magpie = host, port, path, magpie


def target():
    """The server under test: MP_H2_TARGET, or a new magpie in front of a TestUpstream."""
    env = os.environ.get("MP_H2_TARGET")
    if env:
        hostport, _, path = env.partition("/")
        host, _, port = hostport.rpartition(":")
        return Target(host or "127.0.0.1", int(port), "/" + path)
    up = mp.TestUpstream()
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up.port), ports={"port": port})
    return Target("127.0.0.1", port, "/echo", m)


def counters(t):
    return t.magpie.stats() if t.magpie else {}


def run_scenario(sc):
    t = target()
    if not h2raw.speaks_h2c(t.host, t.port, t.path):
        if t.magpie and not t.magpie.alive():
            t.magpie.fail("magpie died on an h2c prior-knowledge GET")
        raise mp.Skip("magpie does not speak HTTP/2 yet" if t.magpie
                      else "%s:%d does not speak h2c" % (t.host, t.port))
    before = counters(t)
    o = sc.run(t.host, t.port, t.path)
    why = "%s\n  RFC: %s\n  sent: %s" % (o, sc.rfc, sc.sends)
    if t.magpie and not t.magpie.alive():
        t.magpie.fail("magpie died during %s: %s" % (sc.name, why))
    if not sc.allowed(o):
        msg = "%s: got %s, want one of %s; %s" % (sc.name, o.kind(), sc.expect, why)
        if t.magpie:
            t.magpie.fail(msg)
        raise mp.TestFailure(msg)
    after = h2raw.good_request(t.host, t.port, t.path)
    mp.eq(after, 200, "a fresh h2c request after %s" % sc.name)
    if t.magpie and sc.counters:
        names = [STAT_PREFIX + c for c in sc.counters]

        def grew():
            now = counters(t)
            return [n for n in names if now.get(n, 0) > before.get(n, 0)]
        try:
            mp.wait_until(grew, 5, what="one of %s to grow" % names)
        except mp.TestFailure as e:
            now = counters(t)
            t.magpie.fail("%s: %s (now %s)" % (sc.name, e, {n: now.get(n) for n in names}))


def _make(sc):
    def test():
        run_scenario(sc)
    test.__name__ = "test_" + sc.name
    test.timeout = sc.timeout + 30
    return test


# One test per scenario, in h2raw's order (the runner sorts equal line numbers by name, so an
# explicit order keeps the baseline first).
for _i, _sc in enumerate(h2raw.SCENARIOS):
    _t = _make(_sc)
    _t.order = _i
    globals()[_t.__name__] = _t


if __name__ == "__main__":
    import run
    run.main([os.path.abspath(__file__)])
