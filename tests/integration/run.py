#!/usr/bin/python3
"""Tiny test runner for the integration tests.

  run.py                         every tests/integration/test_*.py
  run.py FILE... [-k SUBSTR]     those files (or only tests whose name contains SUBSTR)
  python3 test_x.py [-k SUBSTR]  one file (each test file calls run.main on itself)

Each file runs in its own child process (a crash or hang there cannot take the runner down; the
child is killed after MP_MODULE_TIMEOUT seconds, default 900).  Inside it, test_* functions run
in source order, each under its own timeout (the function's .timeout attribute, default 60 s,
enforced with SIGALRM), and every process a test started is killed after it.  One line per
test: "PASS name", "FAIL name" (with the reason below it) or "SKIP name (reason)"; the same
lines are appended to $MP_RESULTS.  Names are [MP_TEST_TAG/]integration/<file>.<function>.
Exit status: non-zero when anything failed.
"""

import glob
import importlib.util
import os
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


class TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise TestTimeout("test timed out")


def _record(line):
    print(line, flush=True)
    path = os.environ.get("MP_RESULTS")
    if path:
        # The results file holds "STATUS name" only; timings and reasons stay on stdout.
        first = line.split("\n", 1)[0].split(" ")
        with open(path, "a") as f:
            f.write(" ".join(first[:2]) + "\n")


def _prefix():
    tag = os.environ.get("MP_TEST_TAG", "")
    return (tag + "/" if tag else "") + "integration/"


def _load(path):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return name, mod


def _tests(mod):
    fns = [v for k, v in vars(mod).items() if k.startswith("test_") and callable(v)]
    return sorted(fns, key=lambda f: (getattr(f, "order", 0), f.__code__.co_firstlineno,
                                      f.__name__))


def run_module(path, pattern):
    """In the child: runs one file's tests; returns the number of failures."""
    import mp
    signal.signal(signal.SIGALRM, _on_alarm)
    failed = 0
    try:
        modname, mod = _load(path)
    except Exception:
        _record("FAIL %s%s.import\n%s" % (_prefix(), os.path.basename(path),
                                          traceback.format_exc()))
        return 1
    for fn in _tests(mod):
        name = "%s%s.%s" % (_prefix(), modname, fn.__name__)
        if pattern and pattern not in name:
            continue
        t0 = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, getattr(fn, "timeout", 60))
        try:
            fn()
            signal.setitimer(signal.ITIMER_REAL, 0)
            _record("PASS %s (%.1fs)" % (name, time.monotonic() - t0))
        except mp.Skip as e:
            signal.setitimer(signal.ITIMER_REAL, 0)
            _record("SKIP %s (%s)" % (name, e))
        except BaseException as e:
            signal.setitimer(signal.ITIMER_REAL, 0)
            failed += 1
            detail = str(e) if isinstance(e, mp.TestFailure) else traceback.format_exc()
            _record("FAIL %s (%.1fs)\n    %s" % (name, time.monotonic() - t0,
                                                detail.replace("\n", "\n    ")))
            if isinstance(e, KeyboardInterrupt):
                raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            mp.cleanup_all()
    return failed


def main(files=None):
    args = sys.argv[1:]
    pattern = None
    if "-k" in args:
        i = args.index("-k")
        pattern = args[i + 1]
        del args[i:i + 2]
    if args[:1] == ["--module"]:
        sys.exit(1 if run_module(args[1], pattern) else 0)
    files = files or args or sorted(glob.glob(os.path.join(HERE, "test_*.py")))
    limit = float(os.environ.get("MP_MODULE_TIMEOUT", "900"))
    failed = 0
    for f in files:
        cmd = [sys.executable, os.path.abspath(__file__), "--module", os.path.abspath(f)]
        if pattern:
            cmd += ["-k", pattern]
        p = subprocess.Popen(cmd, start_new_session=True)
        try:
            rc = p.wait(limit)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = "timeout"
        if rc != 0:
            failed += 1
            if rc not in (0, 1):
                # The child died without reporting (crash, kill, timeout): say so as a result.
                _record("FAIL %s%s (runner: exit %s)" % (_prefix(), os.path.basename(f), rc))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
