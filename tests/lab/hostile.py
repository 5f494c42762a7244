"""Hostile and well-behaved HTTP peers for robustness tests, in threads of the test process.

Each peer listens on its own port (an ephemeral one) on a loopback address and behaves
in one way for every request:

    silent      accepts, reads the request, never answers (holds the connection)
    drip        a valid HTTP response, one byte per second
    big_length  200 with a 100 MB body and Content-Length
    big_chunked 200 with a 100 MB chunked body
    not_json    200 with an HTML page
    shape_list  200 with a JSON list
    shape_string 200 with a JSON string
    shape_types 200 with objects whose fields have the wrong types (see WRONG_TYPES)
    reset       reads the request, then SO_LINGER 0 and close (an RST)
    loris       a status line, then one header line every 0.5 s, never ending the headers
    good        a small well-behaved etcd + Patroni (GOOD answers by path)
    flap        like good, but /patroni alternates between a running leader and a stopped
                PostgreSQL from one request to the next

Peers end when stop() is called or the process exits (daemon threads); no process is
started. Each peer counts its connections.
"""

import json
import socket
import threading
import time

BIG = 100 * 1024 * 1024  # bytes of the big bodies

PATRONI_LEADER = {
    "state": "running", "role": "master", "server_version": 150004, "timeline": 1,
    "xlog": {"location": 50331648}, "postmaster_start_time": "2026-11-28 08:00:00+00:00",
    "patroni": {"version": "3.0.2", "scope": "hostile"},
    "database_system_identifier": "7300000000000000000",
}
PATRONI_STOPPED = {"state": "stopped", "role": "master",
                   "patroni": {"version": "3.0.2", "scope": "hostile"}}
CLUSTER = {"members": [{"name": "kaptan1", "role": "leader", "state": "running",
                        "api_url": "http://placeholder/patroni", "host": "127.0.5.1",
                        "port": 5432, "timeline": 1}]}

# Per path: JSON objects of the right outer shape whose fields have the wrong types.
WRONG_TYPES = {
    "/health": {"health": 1, "reason": ["x"]},
    "/v2/members": {"members": [{"id": [], "name": 5, "peerURLs": "http://x:2380",
                                 "clientURLs": {"a": 1}}]},
    "/v3/cluster/member/list": {"header": "x", "members": {"id": 1}},
    "/v3/maintenance/status": {"header": 1, "leader": []},
    "/patroni": {"state": 5, "role": ["master"], "timeline": "one", "xlog": "big",
                 "patroni": "3.0.2", "pending_restart": "yes", "pause": {"x": 1}},
    "/cluster": {"members": [{"name": 1, "role": {}, "state": None, "lag": "lots",
                              "timeline": "x"}, "not an object", 7], "pause": "no"},
}


def good_answer(path, flap_state=None):
    """(status, JSON document) of the well-behaved peer for a path."""
    path = path.split("?")[0]
    if path == "/health":
        return 200, {"health": "true", "reason": ""}
    if path == "/patroni":
        return 200, flap_state if flap_state is not None else PATRONI_LEADER
    if path == "/cluster":
        return 200, CLUSTER
    return 404, {"message": "not here"}


class Peer:
    def __init__(self, kind, host):
        self.kind = kind
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(256)
        self.host, self.port = self.sock.getsockname()
        self.connections = 0
        self.requests = 0
        self.stopped = threading.Event()
        self._open = set()
        self._lock = threading.Lock()
        self._flip = False
        threading.Thread(target=self._accept, daemon=True, name=f"peer-{kind}").start()

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def stop(self):
        self.stopped.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self._lock:
            conns = list(self._open)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stopped.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(30)
            request = self._read_request(c)
            if request is None:
                return
            with self._lock:
                self.requests += 1
            getattr(self, "_" + self.kind)(c, request)
        except OSError:
            pass  # the client gave up: what these peers are for
        finally:
            with self._lock:
                self._open.discard(c)
            try:
                c.close()
            except OSError:
                pass

    @staticmethod
    def _read_request(c):
        """Request line + headers + a Content-Length body; the path, or None."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for h in lines[1:]:
            name, _, value = h.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        while len(body) < length:
            chunk = c.recv(65536)
            if not chunk:
                break
            body += chunk
        parts = lines[0].split(" ")
        return parts[1] if len(parts) > 1 else "/"

    @staticmethod
    def _response(status, body, ctype="application/json"):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        reason = {200: "OK", 404: "Not Found"}.get(status, "OK")
        return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body

    def _hold(self, c):
        """Keeps the connection until the client closes it or the peer stops."""
        c.settimeout(0.5)
        while not self.stopped.is_set():
            try:
                if not c.recv(4096):
                    return
            except socket.timeout:
                continue

    # ---- behaviours -------------------------------------------------------------------

    def _silent(self, c, path):
        self._hold(c)

    def _drip(self, c, path):
        status, doc = good_answer(path)
        for b in self._response(status, doc):
            if self.stopped.is_set():
                return
            c.sendall(bytes([b]))
            time.sleep(1.0)

    def _big_length(self, c, path):
        c.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {BIG}\r\nConnection: close\r\n\r\n".encode())
        self._send_big(c, lambda block: block)

    def _big_chunked(self, c, path):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        self._send_big(c, lambda block: b"%x\r\n" % len(block) + block + b"\r\n")
        c.sendall(b"0\r\n\r\n")

    def _send_big(self, c, frame):
        block = b"[" + b"1," * 32767 + b"1"  # JSON-looking, 64 KiB
        sent = 0
        while sent < BIG and not self.stopped.is_set():
            piece = block[:min(len(block), BIG - sent)]
            c.sendall(frame(piece))
            sent += len(piece)

    def _not_json(self, c, path):
        c.sendall(self._response(200, "<html><body>Service Unavailable</body></html>",
                                 "text/html"))

    def _shape_list(self, c, path):
        c.sendall(self._response(200, [1, "two", {"three": 3}]))

    def _shape_string(self, c, path):
        c.sendall(self._response(200, json.dumps("healthy")))

    def _shape_types(self, c, path):
        c.sendall(self._response(200, WRONG_TYPES.get(path.split("?")[0], {"x": []})))

    def _reset(self, c, path):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()

    def _loris(self, c, path):
        c.sendall(b"HTTP/1.1 200 OK\r\n")
        n = 0
        while not self.stopped.is_set():
            c.sendall(b"X-Slow-%d: a\r\n" % n)
            n += 1
            time.sleep(0.5)

    def _good(self, c, path):
        status, doc = good_answer(path)
        c.sendall(self._response(status, doc))

    def _flap(self, c, path):
        with self._lock:
            self._flip = not self._flip
            state = PATRONI_LEADER if self._flip else PATRONI_STOPPED
        status, doc = good_answer(path, state)
        c.sendall(self._response(status, doc))


def closed_port(host):
    """A port on host where nothing listens (bound, then closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(kinds, host):
    """{kind: Peer} for each kind, all on host."""
    return {k: Peer(k, host) for k in kinds}
