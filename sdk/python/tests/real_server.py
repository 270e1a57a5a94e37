"""A small real HTTP/1.1 server on 127.0.0.1 standing in for the control plane and the sandbox proxy
with its daemon, for what ``httpx.MockTransport`` cannot show: TCP connections (their reuse, the pool's
cap), Content-Length on the wire, a server that hangs, and when the client really hangs up.

It answers GetSandbox (sandbox ``sb``, access token anything), ``GET /health``, ``POST /files``,
SendSignal, Start and WatchDir; how Start behaves is ``start_mode`` (see :class:`RealServer`).
"""

from __future__ import annotations

import base64
import json
import select
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

SANDBOX = {
    "metadata": {"name": "sb", "namespace": "default", "resourceVersion": "1"},
    "spec": {"image": "img", "poolRef": "default"},
    "status": {"phase": "Running", "sandboxID": "aaaaaaaaaaaaaaaaaaaa"},
}


def envelope(message: Dict[str, Any], flags: int = 0) -> bytes:
    payload = json.dumps(message).encode()
    return struct.pack(">BI", flags, len(payload)) + payload


class RealServer:
    """The server and what it saw. ``start_mode`` of Start:

    - ``"normal"``: the start event, ``hi`` on stdout, the end, the end envelope;
    - ``"hang"``: no answer at all (a hung daemon or proxy);
    - ``"no_start"``: the response's headers, then nothing;
    - ``"quiet_start"``: the start event, then ``quiet`` seconds of nothing, then as ``normal``;
    - ``"silent"``: the start event, then nothing (a process that prints nothing), until the client hangs up.

    Whatever waits ends when the client hangs up (``hang_ups`` gets the time) or at :meth:`close`.
    """

    def __init__(self) -> None:
        self.start_mode = "normal"
        self.quiet = 1.0
        #: TCP connections accepted.
        self.connections = 0
        #: Bodies of ``POST /files`` by path, and the request headers that came with them.
        self.files: Dict[str, bytes] = {}
        self.file_headers: List[Dict[str, str]] = []
        #: When the server saw a client hang up on a stream (time.monotonic()).
        self.hang_ups: List[float] = []
        #: Request lines with an absolute URI (sent through this server as an HTTP proxy).
        self.proxied: List[str] = []
        self.released = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(_Handler):
            real = server

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, args=(0.05,), name="real-server", daemon=True).start()

    def count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def wait_for_hang_ups(self, count: int, limit: float = 5.0) -> bool:
        deadline = time.monotonic() + limit
        while len(self.hang_ups) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(self.hang_ups) >= count

    def close(self) -> None:
        self.released.set()
        self._http.shutdown()
        self._http.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    real: RealServer

    def setup(self) -> None:
        super().setup()
        self.real.count_connection()

    def log_message(self, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/connect+json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _wait_for_hang_up(self, limit: Optional[float] = None) -> bool:
        """Waits until the client hangs up (True), the server is closed or ``limit`` passed."""
        deadline = None if limit is None else time.monotonic() + limit
        sock: socket.socket = self.connection
        while not self.real.released.is_set() and (deadline is None or time.monotonic() < deadline):
            ready, _, _ = select.select([sock], [], [], 0.02)
            if ready and sock.recv(1) == b"":
                self.real.hang_ups.append(time.monotonic())
                self.close_connection = True
                return True
        return False

    def do_GET(self) -> None:
        if self.path.startswith("/health"):
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._json(404, {"code": 404, "message": "no route"})

    def do_POST(self) -> None:
        if self.path.startswith("http://"):
            self.real.proxied.append(self.requestline)
        body = self._body()
        if self.path.endswith("/GetSandbox"):
            return self._json(200, SANDBOX)
        if self.path.endswith("/process.Process/SendSignal"):
            return self._json(200, {})
        if self.path.split("?")[0] == "/files":
            self.real.files[self.path] = body
            self.real.file_headers.append({key.lower(): value for key, value in self.headers.items()})
            return self._json(200, [{"name": "f", "path": "/f", "type": "file"}])
        if self.path.endswith("/process.Process/Start"):
            return self._start()
        if self.path.endswith("/filesystem.Filesystem/WatchDir"):
            self._start_stream()
            self._chunk(envelope({"start": {}}))
            self._wait_for_hang_up()
            self.close_connection = True
            return
        self._json(404, {"code": "unimplemented", "message": self.path})

    def _start(self) -> None:
        mode = self.real.start_mode
        if mode == "hang":
            self._wait_for_hang_up()
            self.close_connection = True
            return
        self._start_stream()
        if mode == "no_start":
            self._wait_for_hang_up()
            self.close_connection = True
            return
        self._chunk(envelope({"event": {"start": {"pid": 7}}}))
        if mode == "silent":
            self._wait_for_hang_up()
            self.close_connection = True
            return
        if mode == "quiet_start" and self._wait_for_hang_up(self.real.quiet):
            return
        self._chunk(envelope({"event": {"data": {"stdout": base64.b64encode(b"hi\n").decode()}}}))
        self._chunk(envelope({"event": {"end": {"exited": True, "status": "exit status 0"}}}))
        self._chunk(envelope({}, 2))
        self._chunk(b"")
