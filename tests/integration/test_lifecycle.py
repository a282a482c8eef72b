"""magpie process lifecycle (issue 2 items 3, 4, and "Done when"): --mode validate, SIGTERM
drain, idle memory."""

import os
import signal
import threading
import time

import mp


def _write(text, subst):
    d = mp.tmpdir()
    path = os.path.join(d, "c.yaml")
    import string
    with open(path, "w") as f:
        f.write(string.Template(text).substitute(subst, dir=d))
    return path


def test_validate_accepts_good_config():
    path = _write(mp.simple_config(8080), {"admin": mp.free_port(), "port": mp.free_port()})
    rc, out = mp.run_magpie(["--mode", "validate", "-c", path])
    mp.eq(rc, 0, "validate exit status on a good config; output:\n" + out)


def test_validate_rejects_misspelt_field_with_path():
    cfg = mp.simple_config(8080).replace("connect_timeout: 1s", "conect_timeout: 1s")
    path = _write(cfg, {"admin": mp.free_port(), "port": mp.free_port()})
    rc, out = mp.run_magpie(["--mode", "validate", "-c", path])
    mp.check(rc != 0, "validate accepted a misspelt field")
    # The message must name the JSON path of the bad field, as the NACK text would.
    mp.check("static_resources.clusters[0].conect_timeout" in out,
             "error names the path: %r" % out[-500:])


def test_validate_rejects_bad_duration_with_path():
    cfg = mp.simple_config(8080).replace("connect_timeout: 1s", "connect_timeout: 5x")
    path = _write(cfg, {"admin": mp.free_port(), "port": mp.free_port()})
    rc, out = mp.run_magpie(["--mode", "validate", "-c", path])
    mp.check(rc != 0, "validate accepted a bad duration")
    mp.check("static_resources.clusters[0].connect_timeout" in out, "path in %r" % out[-500:])


def test_config_yaml_flag():
    up = mp.TestUpstream()
    port = mp.free_port()
    admin = mp.free_port()
    import string
    text = string.Template(mp.simple_config(up.port)).substitute(admin=admin, port=port,
                                                                 dir=mp.tmpdir())
    if not os.access(mp.MAGPIE_BIN, os.X_OK):
        raise mp.TestFailure("magpie binary missing: %s" % mp.MAGPIE_BIN)
    import subprocess
    p = mp._register(subprocess.Popen([mp.MAGPIE_BIN, "--config-yaml", text, "--concurrency", "1"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    mp.wait_until(lambda: mp.port_open(port), 10, what="listener from --config-yaml")
    mp.eq(mp.get(port, "/echo").status, 200, "served")
    mp.eq(mp.stop_process(p), 0, "exit status after SIGTERM")


def test_sigterm_drains_inflight_then_exits_zero():
    up = mp.TestUpstream()
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up.port), ports={"port": port}, drain_time_s=5)
    result = {}

    def slow():
        try:
            result["r"] = mp.get(port, "/delay/1500")
        except Exception as e:
            result["e"] = e
    t = threading.Thread(target=slow)
    t.start()
    mp.wait_until(lambda: up.requests == 1, 5, what="slow request at the upstream")
    t0 = time.monotonic()
    os.kill(m.pid, signal.SIGTERM)
    # New connections are refused (or closed) soon after SIGTERM, while the old one finishes.
    mp.wait_until(lambda: not mp.port_open(port), 3, what="listener closed after SIGTERM")
    t.join(10)
    mp.check("r" in result, "in-flight request failed during drain: %r" % result.get("e"))
    mp.eq(result["r"].status, 200, "in-flight request completed")
    try:
        rc = m.proc.wait(10)
    except Exception:
        m.fail("magpie still running 10 s after SIGTERM")
    mp.eq(rc, 0, "exit status after drain")
    mp.check(time.monotonic() - t0 < 6, "exited within the drain window")


test_sigterm_drains_inflight_then_exits_zero.timeout = 40


def test_sigint_exits_zero():
    up = mp.TestUpstream()
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up.port), ports={"port": port})
    mp.eq(mp.stop_process(m.proc, 10, signal.SIGINT), 0, "exit status after SIGINT")


def test_idle_rss_under_8mib_with_concurrency_2():
    if mp.SANITIZED:
        raise mp.Skip("RSS under ASan is shadow memory; measured in the plain run")
    up = mp.TestUpstream()
    port = mp.free_port()
    m = mp.Magpie(mp.simple_config(up.port), ports={"port": port}, concurrency=2)
    for _ in range(20):
        mp.eq(mp.get(port, "/echo").status, 200, "warm-up")
    rss = m.rss()
    mp.check(rss < 8 << 20, "idle VmRSS %.2f MiB (limit 8 MiB)" % (rss / 2**20))
    print("    idle VmRSS %.2f MiB" % (rss / 2**20))


def test_embedded_default_config_logs_itself():
    # No config: the embedded default (15001 -> 8080, admin 15000).  Skipped only when those
    # fixed ports are taken on this machine, and then loudly.
    if mp.port_open(15000) or mp.port_open(15001):
        raise mp.Skip("ports 15000/15001 busy")
    import subprocess
    d = mp.tmpdir()
    log = open(os.path.join(d, "log"), "wb")
    p = mp._register(subprocess.Popen([mp.MAGPIE_BIN, "--concurrency", "1"], stdout=log,
                                      stderr=subprocess.STDOUT))
    mp.wait_until(lambda: mp.port_open(15000), 10, what="default admin port 15000")
    mp.eq(mp.stop_process(p), 0, "exit status")
    text = open(os.path.join(d, "log"), errors="replace").read()
    mp.check("default" in text.lower(), "log mentions the embedded default: %r" % text[-500:])


if __name__ == "__main__":
    import run
    run.main([__file__])
