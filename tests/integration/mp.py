"""Integration-test harness for magpie: ports, processes, peers, clients and parsers.

Stdlib only (run with /usr/bin/python3).  Every process started here is registered and killed by
cleanup_all() (the runner calls it after each test module and at exit), so a failing test never
leaves a proxy or an upstream behind.  Nothing sleeps a fixed time to wait for readiness: magpie
is polled on admin /ready, nginx and the test upstream on their listen sockets.
"""

import atexit
import hashlib
import json
import math
import os
import re
import signal
import socket
import string
import subprocess
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAGPIE_BIN = os.environ.get("MAGPIE_BIN", os.path.join(ROOT, "build", "magpie"))
# Sanitizer builds are slower and their RSS is shadow memory, not ours: tests that measure
# memory or move a gibibyte scale down (and say so) when this is set.
SANITIZED = os.environ.get("MP_TEST_TAG", "") == "asan" or "/asan/" in MAGPIE_BIN


class TestFailure(AssertionError):
    pass


class Skip(Exception):
    """Raised by a test that cannot be meaningful in this run; the runner prints and records SKIP."""


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def eq(got, want, what):
    if got != want:
        raise TestFailure("%s: got %r, want %r" % (what, got, want))


# ---------------------------------------------------------------- processes and cleanup

_procs = []
_lock = threading.Lock()
_cleanups = []


def _register(p):
    with _lock:
        _procs.append(p)
    return p


def stop_process(p, timeout=5.0, sig=signal.SIGTERM):
    """SIGTERM by PID, then SIGKILL after timeout.  Returns the exit status."""
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
    return p.wait()


def on_cleanup(fn):
    _cleanups.append(fn)


def cleanup_all():
    while _cleanups:
        try:
            _cleanups.pop()()
        except Exception:
            pass
    with _lock:
        procs = list(_procs)
        _procs.clear()
    for p in procs:
        try:
            stop_process(p, timeout=3.0)
        except Exception:
            pass


atexit.register(cleanup_all)


def tmpdir(prefix="mp-it-"):
    d = tempfile.mkdtemp(prefix=prefix)
    return d


_handed_out = set()  # ports free_port returned in this process: never returned twice


def free_port():
    """A port the kernel just handed out for bind(0); closed again for the peer to take.  The
    kernel may hand the same port to two bind(0) calls in a row once the first socket is closed,
    so a port this process already returned (say, for the admin server) is never returned again
    (bounded: 100 tries)."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise TestFailure("free_port: no unused port in 100 tries")


def refused_port():
    """A port with nothing listening (bound then closed, so nobody else is likely to take it)."""
    return free_port()


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TestFailure("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def proc_status(pid, field):
    """A kB field of /proc/PID/status (VmRSS, VmHWM) in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise TestFailure("no %s in /proc/%d/status" % (field, pid))


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tck


# ---------------------------------------------------------------- magpie

class Magpie:
    """build/magpie on an inline config.  Use as a context manager or call stop().

    config: YAML text; `$admin` is replaced by the admin port and `$dir` by the temp dir, plus
    any ports= given (string.Template, so YAML braces need no escaping)."""

    def __init__(self, config, args=(), concurrency=1, drain_time_s=2, ports=None,
                 log_level="info", wait_ready=True):
        self.dir = tmpdir("mp-magpie-")
        self.admin_port = free_port()
        subst = {"admin": self.admin_port, "dir": self.dir}
        subst.update(ports or {})
        self.config_text = string.Template(config).substitute(subst)
        self.config_path = os.path.join(self.dir, "magpie.yaml")
        with open(self.config_path, "w") as f:
            f.write(self.config_text)
        self.log_path = os.path.join(self.dir, "magpie.log")
        self.access_log = os.path.join(self.dir, "access.log")
        if not os.access(MAGPIE_BIN, os.X_OK):
            raise TestFailure("magpie binary missing: %s (build it with make)" % MAGPIE_BIN)
        cmd = [MAGPIE_BIN, "-c", self.config_path, "--concurrency", str(concurrency),
               "--drain-time-s", str(drain_time_s), "--log-level", log_level] + list(args)
        self.cmd = cmd
        self._log = open(self.log_path, "wb")
        self.proc = _register(subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL))
        self.pid = self.proc.pid
        if wait_ready:
            self.wait_ready()

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def fail(self, msg):
        raise TestFailure("%s\n--- magpie config ---\n%s\n--- magpie log (tail) ---\n%s"
                          % (msg, self.config_text, self.log()[-4000:]))

    def alive(self):
        return self.proc.poll() is None

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                self.fail("magpie exited with %s before /ready" % self.proc.returncode)
            try:
                if self.admin("/ready", timeout=0.5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        self.fail("magpie not ready after %.1fs" % timeout)

    def admin(self, path, method="GET", timeout=5.0):
        """(status, body text) of an admin request."""
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.admin_port, path),
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def stats(self):
        """/stats as a dict name -> int (non-integer values, e.g. histograms, are left out)."""
        st, body = self.admin("/stats")
        if st != 200:
            self.fail("/stats answered %d" % st)
        out = {}
        for line in body.splitlines():
            name, sep, val = line.partition(": ")
            if sep and re.fullmatch(r"-?\d+", val.strip()):
                out[name] = int(val)
        return out

    def access_lines(self, n=None, timeout=5.0):
        """Access-log lines; waits until at least n exist (logs are written after the response)."""
        def read():
            try:
                with open(self.access_log) as f:
                    lines = [l.rstrip("\n") for l in f if l.strip()]
            except OSError:
                lines = []
            return lines if n is None or len(lines) >= n else None
        if n is None:
            return read()
        try:
            return wait_until(read, timeout, what="%d access-log lines" % n)
        except TestFailure:
            self.fail("access log has fewer than %d lines: %r" % (n, read() or []))

    def rss(self):
        return proc_status(self.pid, "VmRSS")

    def hwm(self):
        return proc_status(self.pid, "VmHWM")

    def stop(self, timeout=10.0):
        rc = stop_process(self.proc, timeout)
        self._log.close()
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.alive():
            self.stop()
        return False


def run_magpie(args, timeout=20.0):
    """Runs magpie to completion (e.g. --mode validate); (returncode, combined output)."""
    if not os.access(MAGPIE_BIN, os.X_OK):
        raise TestFailure("magpie binary missing: %s" % MAGPIE_BIN)
    r = subprocess.run([MAGPIE_BIN] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout, stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout.decode("utf-8", "replace")


# Access log format the tests parse: one line per request, space-separated fields.
ACCESS_FORMAT = ("%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% %REQ(:METHOD)% "
                 "%REQ(:PATH)% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_HOST%\\n")


def access_log_yaml(indent="          "):
    return ("\n".join(indent + l for l in [
        "access_log:",
        "- name: envoy.access_loggers.file",
        "  typed_config:",
        '    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog',
        "    path: $dir/access.log",
        "    log_format:",
        "      text_format_source:",
        '        inline_string: "%s"' % ACCESS_FORMAT,
    ]))


def parse_access(line):
    f = line.split(" ")
    keys = ["code", "flags", "cluster", "method", "path", "rx", "tx", "host"]
    return dict(zip(keys, f))


def simple_config(up_port, routes=None, hcm_extra="", cluster_extra="", listener_port="$port",
                  clusters_extra="", cluster_name="c1"):
    """A one-listener bootstrap: every path to cluster c1 = 127.0.0.1:up_port unless routes
    (YAML lines at route level, indented 14 spaces) are given.  $port must be supplied to
    Magpie(ports=...)."""
    if routes is None:
        routes = ("              - match: {prefix: \"/\"}\n"
                  "                route: {cluster: %s}\n" % cluster_name)
    return """\
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: $admin}
static_resources:
  listeners:
  - name: l1
    address:
      socket_address: {address: 127.0.0.1, port_value: %s}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
%s
%s
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: r1
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
%s
  clusters:
  - name: %s
    type: STATIC
    connect_timeout: 1s
%s
    load_assignment:
      cluster_name: %s
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: 127.0.0.1, port_value: %d}
%s
""" % (listener_port, access_log_yaml(), hcm_extra, routes.rstrip("\n"), cluster_name,
       cluster_extra, cluster_name, up_port, clusters_extra)


def cluster_yaml(name, port, typ="STATIC", host="127.0.0.1", extra=""):
    return """\
  - name: %s
    type: %s
    connect_timeout: 1s
%s
    load_assignment:
      cluster_name: %s
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: %s, port_value: %d}
""" % (name, typ, extra, name, host, port)


# ---------------------------------------------------------------- HTTP clients

class Response:
    def __init__(self, status, reason, headers, body, interim=None):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lower-case name, value)
        self.body = body
        self.interim = interim or []  # 1xx statuses seen before the final one

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k == name.lower()]

    def json(self):
        return json.loads(self.body.decode())

    def __repr__(self):
        return "<Response %d %r %d bytes>" % (self.status, self.headers, len(self.body))


class Conn:
    """A raw HTTP/1.1 client connection: write exact bytes, read responses one by one."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self):
        if self.eof:
            return False
        try:
            d = self.sock.recv(65536)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _line(self):
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise TestFailure("connection closed mid-line: %r" % self.buf[:200])
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise TestFailure("connection closed after %d of %d body bytes"
                                  % (len(self.buf), n))
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def _head(self):
        line = self._line().decode("latin-1")
        m = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: (.*))?", line)
        if not m:
            raise TestFailure("bad status line %r" % line)
        headers = []
        while True:
            h = self._line().decode("latin-1")
            if h == "":
                break
            k, _, v = h.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        return int(m.group(1)), m.group(2) or "", headers

    def read_response(self, head=False, discard_body=False):
        interim = []
        while True:
            if not self.buf and not self._fill():
                raise TestFailure("connection closed before a response")
            status, reason, headers = self._head()
            if 100 <= status < 200 and status != 101:
                interim.append(status)
                continue
            break
        r = Response(status, reason, headers, b"", interim)
        if head or status in (204, 304):
            return r
        te = r.header("transfer-encoding")
        cl = r.header("content-length")
        if te is not None and "chunked" in te.lower():
            r.body = self._chunked(discard_body)
        elif cl is not None:
            r.body = self._take(int(cl))
        else:
            while self._fill():
                pass
            r.body, self.buf = self.buf, b""
        return r

    def _chunked(self, discard):
        body = []
        while True:
            size = int(self._line().split(b";")[0], 16)
            if size == 0:
                while self._line() != b"":
                    pass
                return b"".join(body)
            d = self._take(size)
            if not discard:
                body.append(d)
            self._take(2)

    def request(self, method="GET", path="/", headers=None, body=None, host="test"):
        self.send(build_request(method, path, headers, body, host))
        return self.read_response(head=(method == "HEAD"))

    def closed_by_peer(self, timeout=3.0):
        """True when the peer closes (EOF or reset) within timeout, after draining its bytes."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def build_request(method="GET", path="/", headers=None, body=None, host="test"):
    lines = ["%s %s HTTP/1.1" % (method, path)]
    hs = list(headers or [])
    if host is not None and not any(k.lower() == "host" for k, _ in hs):
        lines.append("Host: %s" % host)
    for k, v in hs:
        lines.append("%s: %s" % (k, v))
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding")
                                    for k, _ in hs):
        lines.append("Content-Length: %d" % len(body))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body is not None:
        data += body if isinstance(body, bytes) else body.encode()
    return data


def get(port, path="/", **kw):
    with Conn(port) as c:
        return c.request("GET", path, **kw)


def raw_exchange(port, data, timeout=5.0):
    """Sends exact bytes and reads until the peer closes or goes quiet; returns (bytes, closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        closed = False
        s.settimeout(timeout)
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    closed = True
                    break
                out += d
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
        return out, closed
    finally:
        s.close()


def status_of(raw):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else None


def curl(url, *args, timeout=30):
    """curl's (status, body bytes, stderr) with -s; args are extra curl arguments."""
    r = subprocess.run(["curl", "-s", "-S", "-o", "-", "-w", "\n%{http_code}", "--max-time",
                        str(timeout)] + list(args) + [url],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + 5)
    body, _, code = r.stdout.rpartition(b"\n")
    return int(code or 0), body, r.stderr.decode("utf-8", "replace")


# ---------------------------------------------------------------- the Python test upstream

class TestUpstream:
    """A threaded raw-socket HTTP/1.1 server whose behaviour is chosen by the request path:

      /echo... (and anything unknown)  200 JSON {method, path, headers, body_len, conn}
      /delay/<ms>                       sleep, then echo
      /unsolicited_101                  101 Switching Protocols without an Upgrade request
      /close                            close the connection without a response
      /reset                            RST before any response
      /reset_mid_body                   headers with Content-Length 1 MB, 1000 bytes, then RST
      /chunked/<n>                      chunked response with n chunks of "chunk<i>\\n"
      /1xx                              103 Early Hints, then 200 echo
      /bytes/<n>[?chunked=1]            n generated bytes (never held in memory)
      /status/<code>                    that status, small body
      /slow_read                        reads the request body slowly (256 KiB per 10 ms), then
                                        echoes; body_progress counts its bytes as they arrive
      /fail/<n>/<how>[/<key>]           the first n requests with this path fail (how: a status
                                        code, "reset", "close" or "hang" (no answer for 30 s)),
                                        later ones echo; counted per server and path in
                                        fail_counts.  The echo has body_sha (sha256 of the body,
                                        up to 1 MB kept)

    requests counts requests whose head was read; connections counts accepted connections;
    seen holds the last 1000 request heads.  Keep-alive unless the client asks to close.
    Setting force_status (e.g. 503) makes every request get that status, whatever its path,
    until it is set back to None: a host that turns bad and recovers on command."""

    def __init__(self, port=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.connections = 0
        self.seen = []
        self.body_bytes = 0
        self.completed = 0  # requests whose body was read to the end
        self.trailers = []  # trailer fields of the last chunked request body
        self.body_progress = 0  # request-body bytes /slow_read has taken so far
        self.fail_counts = {}  # /fail/... path -> requests seen
        self.force_status = None  # every request answered with this status while set
        self._lock = threading.Lock()
        self._stop = False
        self._conns = set()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        on_cleanup(self.stop)

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                n = self.connections
                self._conns.add(c)
            threading.Thread(target=self._serve, args=(c, n), daemon=True).start()

    def stop(self):
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self._lock:
            for c in list(self._conns):
                try:
                    c.close()
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()

    def _serve(self, c, conn_no):
        rd = _Reader(c)
        try:
            while not self._stop:
                head = rd.head()
                if head is None:
                    return
                method, path, headers = head
                with self._lock:
                    self.requests += 1
                    self.seen.append((method, path, headers))
                    del self.seen[:-1000]
                if not self._respond(c, rd, method, path, headers, conn_no):
                    return
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    def _body(self, c, rd, headers):
        hd = {k.lower(): v for k, v in headers}
        if "100-continue" in hd.get("expect", "").lower():
            c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in hd.get("transfer-encoding", "").lower():
            n, self.trailers = rd.chunked_body()
        else:
            n = rd.discard(int(hd.get("content-length", "0") or 0))
        with self._lock:
            self.body_bytes += n
            self.completed += 1
        return n

    def _slow_body(self, rd, headers):
        """A slow consumer: takes a Content-Length body in 256 KiB steps 10 ms apart (about
        25 MB/s), so a fast client is held back by the proxy's flow control."""
        hd = {k.lower(): v for k, v in headers}
        left = int(hd.get("content-length", "0") or 0)
        hd_len = left
        while left > 0:
            step = min(left, 256 * 1024)
            rd.discard(step)
            left -= step
            with self._lock:
                self.body_progress += step
            time.sleep(0.01)
        with self._lock:
            self.body_bytes += hd_len
            self.completed += 1
        return hd_len

    def _respond(self, c, rd, method, path, headers, conn_no):
        hd = {k.lower(): v for k, v in headers}
        keep = hd.get("connection", "").lower() != "close"
        p, _, query = path.partition("?")
        if p == "/close":
            return False
        if p == "/reset":
            _rst(c)
            return False
        if p.startswith("/fail/"):
            return self._fail(c, rd, method, p, headers, conn_no, conn_hdr_keep=keep)
        if p == "/slow_read":
            n = self._slow_body(rd, headers)
        else:
            n = self._body(c, rd, headers)
        conn_hdr = b"" if keep else b"Connection: close\r\n"
        forced = self.force_status
        if forced is not None:
            c.sendall(b"HTTP/1.1 %d X\r\nContent-Length: 7\r\n%s\r\nforced\n" % (forced, conn_hdr))
            return keep
        if p.startswith("/delay/"):
            time.sleep(int(p.split("/")[2]) / 1000.0)
        if p == "/unsolicited_101":
            # A switch nobody asked for, then bytes that are not HTTP (hostile-inputs 69).
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                      b"Connection: upgrade\r\n\r\nnot http at all")
            time.sleep(0.2)
            return False
        if p == "/reset_mid_body":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
            time.sleep(0.05)
            _rst(c)
            return False
        if p.startswith("/chunked/"):
            out = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + conn_hdr + b"\r\n"]
            for i in range(int(p.split("/")[2])):
                d = b"chunk%d\n" % i
                out.append(b"%x\r\n%s\r\n" % (len(d), d))
            out.append(b"0\r\n\r\n")
            c.sendall(b"".join(out))
            return keep
        if p.startswith("/bytes/"):
            _send_generated(c, int(p.split("/")[2]), "chunked=1" in query, conn_hdr,
                            method == "HEAD")
            return keep
        if p.startswith("/status/"):
            code = int(p.split("/")[2])
            body = b"status %d\n" % code
            c.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s"
                      % (code, len(body), conn_hdr, b"" if method == "HEAD" else body))
            return keep
        if p == "/1xx":
            c.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
        body = json.dumps({"method": method, "path": path, "headers": headers, "body_len": n,
                           "conn": conn_no}).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                  b"X-Upstream: test\r\n%s\r\n%s"
                  % (len(body), conn_hdr, b"" if method == "HEAD" else body))
        return keep


    def _fail(self, c, rd, method, p, headers, conn_no, conn_hdr_keep):
        hd = {k.lower(): v for k, v in headers}
        body = b""
        if "chunked" in hd.get("transfer-encoding", "").lower():
            rd.chunked_body()
        else:
            n = int(hd.get("content-length", "0") or 0)
            while len(rd.buf) < n and rd._fill():
                pass
            body = bytes(rd.buf[:n])
            del rd.buf[:n]
        parts = p.split("/")
        with self._lock:
            seen = self.fail_counts.get(p, 0)
            self.fail_counts[p] = seen + 1
        if seen < int(parts[2]):
            how = parts[3]
            if how == "reset":
                _rst(c)
                return False
            if how == "close":
                return False
            if how == "hang":
                time.sleep(30)
                return False
            code = int(how)
            msg = b"failing %d\n" % code
            c.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nX-Fail: yes\r\n\r\n%s"
                      % (code, len(msg), msg))
            return conn_hdr_keep
        out = json.dumps({"method": method, "path": p, "headers": headers, "body_len": len(body),
                          "body_sha": hashlib.sha256(body).hexdigest(), "conn": conn_no,
                          "port": self.port}).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d"
                  b"\r\n\r\n%s" % (len(out), out))
        return conn_hdr_keep


def _rst(c):
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()


_BLOCK = b"0123456789abcdef" * 4096  # 64 KiB


def _send_generated(c, n, chunked, conn_hdr, head):
    if chunked:
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n%s\r\n" % conn_hdr)
    else:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (n, conn_hdr))
    if head:
        return
    left = n
    while left > 0:
        d = _BLOCK if left >= len(_BLOCK) else _BLOCK[:left]
        c.sendall(b"%x\r\n%s\r\n" % (len(d), d) if chunked else d)
        left -= len(d)
    if chunked:
        c.sendall(b"0\r\n\r\n")


class _Reader:
    def __init__(self, sock):
        self.s = sock
        self.buf = bytearray()
        self.chunk = bytearray(1 << 20)

    def _fill(self):
        d = self.s.recv(1 << 20)
        if not d:
            return False
        self.buf += d
        return True

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > 1 << 20 or not self._fill():
                raise ValueError("no line")

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise ValueError("head too large")
            if not self._fill():
                return None
        i = self.buf.index(b"\r\n\r\n")
        raw = bytes(self.buf[:i]).decode("latin-1")
        del self.buf[:i + 4]
        lines = raw.split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = []
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers.append([k, v.strip()])
        return method, path, headers

    def discard(self, n):
        """Reads and drops n body bytes without holding them; returns n."""
        left = n
        take = min(left, len(self.buf))
        del self.buf[:take]
        left -= take
        view = memoryview(self.chunk)
        while left > 0:
            got = self.s.recv_into(view, min(left, len(self.chunk)))
            if not got:
                raise ValueError("eof in body")
            left -= got
        return n

    def chunked_body(self):
        total = 0
        while True:
            size = int(self.line().split(b";")[0], 16)
            if size == 0:
                trailers = []
                while True:
                    t = self.line()
                    if t == b"":
                        return total, trailers
                    k, _, v = t.decode("latin-1").partition(":")
                    trailers.append([k.strip().lower(), v.strip()])
            self.discard(size)
            total += size
            if self.line() != b"":
                raise ValueError("missing CRLF after chunk")


# ---------------------------------------------------------------- nginx

class Nginx:
    """nginx (Debian's nginx-light) as an upstream or a proxy, in the foreground, with every path
    in a temp dir.  http_conf: the body of the http{} block (string.Template: $port, $dir)."""

    DEFAULT_HTTP = """
    server {
        listen 127.0.0.1:$port;
        keepalive_requests 1000000;
        location = /small { return 200 "hello from nginx\\n"; }
        location = /status/201 { return 201 "created\\n"; }
        location /files/ { alias $dir/files/; }
        location / { return 200 "nginx default\\n"; }
    }
"""

    def __init__(self, http_conf=None, port=None, workers=1, files=None, taskset=None,
                 extra_main=""):
        self.dir = tmpdir("mp-nginx-")
        self.port = port or free_port()
        os.makedirs(os.path.join(self.dir, "files"))
        for name, size in (files or {}).items():
            # Sparse files: a 1 GiB download costs no disk and reads as zeros.
            with open(os.path.join(self.dir, "files", name), "wb") as f:
                f.truncate(size)
        body = string.Template(http_conf or self.DEFAULT_HTTP).substitute(
            port=self.port, dir=self.dir)
        d = self.dir
        conf = """
daemon off;
master_process off;
worker_processes %d;
pid %s/nginx.pid;
error_log %s/error.log warn;
%s
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %s/client_body;
    proxy_temp_path %s/proxy;
    fastcgi_temp_path %s/fastcgi;
    uwsgi_temp_path %s/uwsgi;
    scgi_temp_path %s/scgi;
    default_type application/octet-stream;
    sendfile on;
%s
}
""" % (workers, d, d, extra_main, d, d, d, d, d, body)
        if workers > 1:
            conf = conf.replace("master_process off;", "master_process on;")
        self.conf_path = os.path.join(d, "nginx.conf")
        with open(self.conf_path, "w") as f:
            f.write(conf)
        cmd = ["nginx", "-p", d, "-c", self.conf_path]
        if taskset is not None:
            cmd = ["taskset", "-c", str(taskset)] + cmd
        self._log = open(os.path.join(d, "stderr.log"), "wb")
        self.proc = _register(subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL))
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise TestFailure("nginx did not start:\n%s\n%s" % (conf, self.errors()))
            time.sleep(0.02)

    def errors(self):
        out = ""
        for n in ("stderr.log", "error.log"):
            try:
                with open(os.path.join(self.dir, n)) as f:
                    out += f.read()
            except OSError:
                pass
        return out

    def stop(self):
        return stop_process(self.proc, 5, signal.SIGQUIT)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


# ---------------------------------------------------------------- Prometheus text format

_PROM_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_PROM_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PROM_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class PromError(ValueError):
    pass


def _prom_value(s, lineno):
    if s in ("NaN", "+Inf", "-Inf", "Inf"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", s):
        raise PromError("line %d: bad value %r" % (lineno, s))
    return float(s)


def _prom_labels(s, lineno):
    """Parses the inside of {...}; returns (dict, rest-after-closing-brace)."""
    labels = {}
    i = 0
    while True:
        if s[i] == "}":
            return labels, s[i + 1:]
        m = _PROM_LABEL.match(s, i)
        if not m:
            raise PromError("line %d: bad label name at %r" % (lineno, s[i:]))
        name = m.group(0)
        i = m.end()
        if s[i:i + 2] != '="':
            raise PromError("line %d: expected =\" after label %s" % (lineno, name))
        i += 2
        val = []
        while True:
            if i >= len(s):
                raise PromError("line %d: unterminated label value" % lineno)
            ch = s[i]
            if ch == "\\":
                nxt = s[i + 1:i + 2]
                if nxt not in ("\\", '"', "n"):
                    raise PromError("line %d: bad escape \\%s" % (lineno, nxt))
                val.append("\n" if nxt == "n" else nxt)
                i += 2
                continue
            if ch == '"':
                i += 1
                break
            val.append(ch)
            i += 1
        if name in labels:
            raise PromError("line %d: duplicate label %s" % (lineno, name))
        labels[name] = "".join(val)
        if s[i:i + 1] == ",":
            i += 1
        elif s[i:i + 1] != "}":
            raise PromError("line %d: expected , or } after label value" % lineno)


def _prom_family(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[:-len(suffix)] if name.endswith(suffix) else None
        if base and types.get(base) in ("histogram", "summary"):
            return base
    return name


def parse_prometheus(text):
    """Strict parser of the Prometheus text format 0.0.4.  Returns (samples, types):
    samples maps (name, frozenset(labels.items())) -> float.  Raises PromError on: a missing final
    newline, a bad name/label/escape/value, TYPE after a family's samples or twice, an unknown
    type, a family split into non-adjacent groups, a duplicate series, a negative counter,
    histogram buckets without le or without +Inf."""
    if text and not text.endswith("\n"):
        raise PromError("missing final newline")
    samples, types, helps = {}, {}, set()
    seen_families, current = set(), None
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP"):
                name = parts[2]
                if not _PROM_NAME.fullmatch(name):
                    raise PromError("line %d: bad metric name %r" % (lineno, name))
                if parts[1] == "TYPE":
                    t = parts[3] if len(parts) == 4 else ""
                    if t not in _PROM_TYPES:
                        raise PromError("line %d: bad type %r" % (lineno, t))
                    if name in types or name in seen_families:
                        raise PromError("line %d: TYPE for %s after its samples or twice"
                                        % (lineno, name))
                    types[name] = t
                else:
                    if name in helps:
                        raise PromError("line %d: HELP for %s twice" % (lineno, name))
                    helps.add(name)
            continue
        m = _PROM_NAME.match(line)
        if not m:
            raise PromError("line %d: bad sample %r" % (lineno, line))
        name, rest = m.group(0), line[m.end():]
        labels = {}
        if rest.startswith("{"):
            labels, rest = _prom_labels(rest[1:], lineno)
        if not rest.startswith(" "):
            raise PromError("line %d: expected a space before the value" % lineno)
        fields = rest[1:].split(" ")
        if len(fields) not in (1, 2) or (len(fields) == 2 and
                                         not re.fullmatch(r"-?\d+", fields[1])):
            raise PromError("line %d: bad value/timestamp %r" % (lineno, rest))
        value = _prom_value(fields[0], lineno)
        fam = _prom_family(name, types)
        if fam != current:
            if fam in seen_families:
                raise PromError("line %d: samples of %s are not adjacent" % (lineno, fam))
            seen_families.add(fam)
            current = fam
        key = (name, frozenset(labels.items()))
        if key in samples:
            raise PromError("line %d: duplicate series %s%r" % (lineno, name, labels))
        t = types.get(fam, "untyped")
        if t == "counter" and (value < 0 or math.isnan(value)):
            raise PromError("line %d: counter %s is %r" % (lineno, name, value))
        if t == "histogram" and name == fam + "_bucket" and "le" not in labels:
            raise PromError("line %d: bucket without le" % lineno)
        samples[key] = value
    for fam, t in types.items():
        if t == "histogram":
            les = [dict(k[1]).get("le") for k in samples if k[0] == fam + "_bucket"]
            if les and "+Inf" not in les:
                raise PromError("histogram %s has no +Inf bucket" % fam)
    return samples, types


def prom_value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))
