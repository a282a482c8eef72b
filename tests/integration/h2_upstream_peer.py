"""An HTTP/2 (h2c, prior knowledge) test upstream built on Debian's python3-h2, run in a thread of
the test process so that tests can look at what it saw.  Behaviour is chosen by the path:

  /echo...          200 JSON {method, path, authority, scheme, headers, body_len, body_sha256,
                    conn, stream}
  /delay/<ms>       echo after ms (other streams on the connection go on meanwhile)
  /trailers         200 "data\\n" then trailers x-trailer: yes, x-count: 2
  /rst_before       RST_STREAM(INTERNAL_ERROR) before any response
  /refuse           RST_STREAM(REFUSED_STREAM) before any response
  /rst_after        headers (content-length 100000), 1000 bytes, then RST_STREAM(INTERNAL_ERROR)
  /goaway           GOAWAY with last_stream_id = the previous stream's id; this stream is ignored
  /slow             headers, then 16 KiB every 20 ms for up to 10 s (until reset)
  /status/<code>    that status, small body

max_streams sets SETTINGS_MAX_CONCURRENT_STREAMS in the server's first SETTINGS.
connections counts accepted connections; resets holds (conn, stream, error_code) of RST_STREAM
frames received; requests counts request heads."""

import hashlib
import heapq
import json
import select
import socket
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import GoAwayFrame


class H2Peer:
    def __init__(self, max_streams=None):
        self.max_streams = max_streams
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = 0
        self.resets = []
        self.stopping = False
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.stopping:
            r, _, _ = select.select([self.sock], [], [], 0.1)
            if not r:
                continue
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                n = self.connections
            t = threading.Thread(target=_Conn(self, c, n).run, daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self):
        self.stopping = True
        self.sock.close()
        for t in self.threads:
            t.join(2.0)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


class _Conn:
    def __init__(self, peer, sock, conn_no):
        self.peer = peer
        self.sock = sock
        self.no = conn_no
        # Inbound headers are not normalised: tests see cookie crumbs as they were sent.
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                        normalize_inbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=cfg)
        if peer.max_streams is not None:
            self.h2.local_settings = h2.settings.Settings(
                client=False,
                initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: peer.max_streams})
        self.streams = {}  # id -> {"headers": [...], "body": sha256, "len": n}
        self.timers = []   # heap of (due, seq, fn)
        self.seq = 0
        self.last_stream = 0
        self.closed_streams = set()

    def later(self, delay, fn):
        self.seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.seq, fn))

    def run(self):
        try:
            self.h2.initiate_connection()
            self.flush()
            self.loop()
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.sock.close()

    def loop(self):
        while not self.peer.stopping:
            timeout = 0.1
            if self.timers:
                timeout = max(0.0, min(timeout, self.timers[0][0] - time.monotonic()))
            r, _, _ = select.select([self.sock], [], [], timeout)
            while self.timers and self.timers[0][0] <= time.monotonic():
                heapq.heappop(self.timers)[2]()
            if r:
                data = self.sock.recv(65536)
                if not data:
                    return
                for ev in self.h2.receive_data(data):
                    self.on_event(ev)
            self.flush()

    def flush(self):
        out = self.h2.data_to_send()
        if out:
            self.sock.sendall(out)

    def on_event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            with self.peer.lock:
                self.peer.requests += 1
            self.streams[ev.stream_id] = {"headers": ev.headers, "sha": hashlib.sha256(),
                                          "len": 0}
            self.on_request_head(ev.stream_id)
        elif isinstance(ev, h2.events.DataReceived):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                st["sha"].update(ev.data)
                st["len"] += len(ev.data)
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self.on_request_complete(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            self.closed_streams.add(ev.stream_id)
            with self.peer.lock:
                self.peer.resets.append((self.no, ev.stream_id, ev.error_code))

    def path(self, sid):
        return dict(self.streams[sid]["headers"]).get(":path", "/")

    def on_request_head(self, sid):
        path = self.path(sid)
        prev, self.last_stream = self.last_stream, sid
        if path.startswith("/rst_before"):
            self.h2.reset_stream(sid, 2)
        elif path.startswith("/refuse"):
            self.h2.reset_stream(sid, 7)
        elif path.startswith("/goaway"):
            # Sent behind h2's back so that the streams at or below last_stream_id still run.
            self.flush()
            self.sock.sendall(GoAwayFrame(0, last_stream_id=prev, error_code=0).serialize())

    def on_request_complete(self, sid):
        path = self.path(sid)
        if path.startswith(("/rst_before", "/refuse", "/goaway")):
            return
        if path.startswith("/delay/"):
            ms = int(path.split("/")[2].split("?")[0])
            self.later(ms / 1000.0, lambda: self.echo(sid))
        elif path.startswith("/trailers"):
            self.h2.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")])
            self.h2.send_data(sid, b"data\n")
            self.h2.send_headers(sid, [("x-trailer", "yes"), ("x-count", "2")], end_stream=True)
        elif path.startswith("/rst_after"):
            self.h2.send_headers(sid, [(":status", "200"), ("content-length", "100000")])
            self.h2.send_data(sid, b"x" * 1000)
            self.flush()
            self.later(0.05, lambda: self.h2.reset_stream(sid, 2))
        elif path.startswith("/slow"):
            self.h2.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")])
            self.slow(sid, time.monotonic() + 10)
        elif path.startswith("/status/"):
            code = path.split("/")[2]
            self.h2.send_headers(sid, [(":status", code), ("content-length", "6")])
            self.h2.send_data(sid, b"status", end_stream=True)
        else:
            self.echo(sid)

    def slow(self, sid, deadline):
        if sid in self.closed_streams:
            return
        if time.monotonic() > deadline:
            self.h2.end_stream(sid)
            return
        if self.h2.local_flow_control_window(sid) >= 16384:
            self.h2.send_data(sid, b"s" * 16384)
        self.later(0.02, lambda: self.slow(sid, deadline))

    def echo(self, sid):
        if sid in self.closed_streams:
            return
        st = self.streams[sid]
        hd = st["headers"]
        d = dict(hd)
        body = json.dumps({
            "method": d.get(":method"), "path": d.get(":path"),
            "authority": d.get(":authority"), "scheme": d.get(":scheme"),
            "headers": [[k, v] for k, v in hd if not k.startswith(":")],
            "body_len": st["len"], "body_sha256": st["sha"].hexdigest(),
            "conn": self.no, "stream": sid,
        }).encode()
        self.h2.send_headers(sid, [(":status", "200"), ("content-type", "application/json"),
                                   ("content-length", str(len(body)))])
        self.h2.send_data(sid, body, end_stream=True)
