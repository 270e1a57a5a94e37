"""An in-memory Fast Sandbox for the unit tests, served through ``httpx.MockTransport``: the
control plane's fast-path API at ``http://control-plane.test`` and sandbox daemons behind the
sandbox proxy at ``http://proxy.test``, speaking the same Connect JSON as the real ones.

It keeps what it was asked (``requests``) so tests can check the wire, and runs "processes" whose
behaviour each test gives (``programs``): a function that gets the :class:`FakeProcess` and emits
its output and end with ``process.emit``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import queue
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Tuple

import httpx

API_URL = "http://control-plane.test"
PROXY_URL = "http://proxy.test"
API_TOKEN = "api-token"
POOL_IMAGE = "fast-sandbox.io/base:latest"

Message = Dict[str, Any]


def envelope(message: Message, flags: int = 0) -> bytes:
    payload = json.dumps(message).encode()
    return struct.pack(">BI", flags, len(payload)) + payload


def read_envelope(body: bytes) -> Message:
    flags, length = struct.unpack(">BI", body[:5])
    assert flags == 0, flags
    value: Message = json.loads(body[5 : 5 + length])
    return value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def request_name(namespace: str, request_id: str) -> str:
    """The name the control plane gives a sandbox created with a request id and no name (``requestName``
    in packages/controlplane/src/fastpath/sandbox-manager.ts), written out again here: the SDK's
    copy of it is what the tests check."""
    return "sb-" + hashlib.sha256(f"{namespace}/{request_id}".encode()).hexdigest()[:10]


def connect_error(status: int, code: str, message: str, fsb_code: Optional[str] = None) -> httpx.Response:
    headers = {"fsb-error-code": fsb_code} if fsb_code else {}
    return httpx.Response(status, json={"code": code, "message": message}, headers=headers)


def take(events: queue.Queue[Any], closed: threading.Event, limit: float = 10.0) -> Any:
    """The next event, or None once the stream was closed or nothing came for ``limit`` seconds."""
    waited = 0.0
    while not closed.is_set() and waited < limit:
        try:
            return events.get(timeout=0.02)
        except queue.Empty:
            waited += 0.02
    return None


@dataclass
class FakeProcess:
    pid: int
    argv: List[str]
    envs: Dict[str, str]
    cwd: Optional[str]
    user: Optional[str]
    tag: Optional[str]
    pty: Optional[Dict[str, int]]
    stdin_open: bool
    stdin: List[bytes] = field(default_factory=list)
    #: One queue per open Start/Connect stream: each gets the events from when it opened (as envd's do).
    subscribers: List[queue.Queue[Any]] = field(default_factory=list)
    ended: bool = False

    def subscribe(self) -> queue.Queue[Any]:
        subscriber: queue.Queue[Any] = queue.Queue()
        self.subscribers.append(subscriber)
        return subscriber

    def publish(self, event: Any) -> None:
        for subscriber in list(self.subscribers):
            subscriber.put(event)

    def emit(self, stream: str, data: bytes) -> None:
        self.publish({"event": {"data": {stream: b64(data)}}})

    def fail(self, code: str, message: str) -> None:
        """Ends the streams with a Connect error, as the daemon does when it kills a process at its deadline."""
        self.ended = True
        self.publish(("error", code, message))

    def exit(self, code: int, error: Optional[str] = None) -> None:
        if self.ended:
            return
        self.ended = True
        end: Message = {"exitCode": code, "exited": error is None, "status": f"exit status {code}"}
        if error:
            end["error"] = error
        self.publish({"event": {"end": end}})

    def keepalive(self) -> None:
        self.publish({"event": {"keepalive": {}}})

    def go_silent(self) -> None:
        """The connection dies without a word: what httpx raises once the stream's read timeout passed."""
        self.publish(httpx.ReadTimeout("timed out"))


Program = Callable[[FakeProcess], None]


class FakeFastSandbox:
    """The fake: ``transport()``/``async_transport()`` give the MockTransport to pass to the SDK."""

    def __init__(self) -> None:
        self.requests: List[httpx.Request] = []
        self.sandboxes: Dict[str, Message] = {}
        self.access_tokens: Dict[str, str] = {}
        self.pools: Dict[str, Message] = {"default": {"metadata": {"name": "default"}, "spec": {"image": POOL_IMAGE}}}
        self.proxy_url = PROXY_URL
        #: Statuses GET /health answers before 204 (each used once), e.g. [502, 502].
        self.health_before_ready: List[int] = []
        #: Conflicts UpdateSandbox answers before it succeeds.
        self.update_conflicts = 0
        #: CreateSandbox calls whose answer is lost after the sandbox was made (the client sees a timeout).
        self.create_answers_lost = 0
        #: Answers CreateSandbox gives before making anything (each used once).
        self.create_refusals: List[httpx.Response] = []
        #: Sandboxes by the request id that made them (namespace/requestId → key), as the control plane dedupes creates.
        self.created_by_request: Dict[str, str] = {}
        self.programs: Dict[str, Program] = {}
        self.processes: Dict[int, FakeProcess] = {}
        #: Seconds the async transport holds a Start's answer once its process started: a start
        #: event in flight when the caller gives up.
        self.start_delay = 0.0
        #: Seconds a CreateSandbox's answer waits after the sandbox was made (a create to interrupt).
        self.create_delay = 0.0
        self.files: Dict[str, bytes] = {}
        self.directories: set[str] = {"/", "/tmp", "/root"}
        self.watchers: Dict[str, List[Message]] = {}
        self.watch_streams: List[queue.Queue[Any]] = []
        self.logs = b"hello from the sandbox\n"
        #: A follow of Logs (without a deadline) goes silent after the output, but for one keepalive.
        self.logs_go_silent = False
        self._next_pid = 100
        self._next_sandbox = 0
        self._lock = threading.Lock()

    # -- wiring ----------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            response = self.handle(request, sync=True)
            if self.start_delay > 0 and request.url.path.endswith("/process.Process/Start"):
                time.sleep(self.start_delay)
            if self.create_delay > 0 and request.url.path.endswith("/CreateSandbox"):
                time.sleep(self.create_delay)
            return response

        return httpx.MockTransport(handler)

    def async_transport(self) -> httpx.MockTransport:
        async def handler(request: httpx.Request) -> httpx.Response:
            await request.aread()
            response = self.handle(request, sync=False)
            if self.start_delay > 0 and request.url.path.endswith("/process.Process/Start"):
                await asyncio.sleep(self.start_delay)
            if self.create_delay > 0 and request.url.path.endswith("/CreateSandbox"):
                await asyncio.sleep(self.create_delay)
            return response

        return httpx.MockTransport(handler)

    def calls(self, path_suffix: str) -> List[httpx.Request]:
        return [request for request in self.requests if request.url.path.endswith(path_suffix)]

    def bodies(self, path_suffix: str) -> List[Message]:
        out: List[Message] = []
        for request in self.calls(path_suffix):
            content = request.content
            out.append(read_envelope(content) if request.headers.get("content-type") == "application/connect+json" else json.loads(content))
        return out

    def add_sandbox(self, name: str, namespace: str = "default", token: str = "the-access-token") -> Message:
        self._next_sandbox += 1
        sandbox_id = f"{self._next_sandbox:020d}".replace("0", "a")
        sandbox: Message = {
            "apiVersion": "sandbox.fast.io/v1alpha1",
            "kind": "Sandbox",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1", "creationTimestamp": "2026-11-30T18:41:35Z"},
            "spec": {"image": POOL_IMAGE, "poolRef": "default"},
            "status": {"phase": "Running", "sandboxID": sandbox_id, "sandboxIP": "10.213.0.5"},
        }
        self.sandboxes[f"{namespace}/{name}"] = sandbox
        self.access_tokens[sandbox_id] = token
        return sandbox

    def reset(self, name: str, namespace: str = "default") -> str:
        """``fsb reset NAME``: the sandbox gets a new instance (a new sandbox id; the old one is gone
        from the proxy), with the same name, spec and access token. Returns the new id."""
        sandbox = self.sandboxes[f"{namespace}/{name}"]
        old_id = sandbox["status"]["sandboxID"]
        self._next_sandbox += 1
        new_id = f"{self._next_sandbox:020d}".replace("0", "b")
        sandbox["status"]["sandboxID"] = new_id
        self.access_tokens[new_id] = self.access_tokens.pop(old_id)
        return new_id

    # -- dispatch --------------------------------------------------------------------------------

    def handle(self, request: httpx.Request, sync: bool) -> httpx.Response:
        self.requests.append(request)
        if str(request.url).startswith(API_URL):
            if request.headers.get("authorization") != f"Bearer {API_TOKEN}":
                return connect_error(401, "unauthenticated", "missing or wrong API token")
            return self.control_plane(request, sync)
        if str(request.url).startswith(PROXY_URL):
            return self.proxy(request, sync)
        raise AssertionError(f"unexpected request {request.method} {request.url}")

    def _stream(self, messages: Iterator[Any], sync: bool, closed: Optional[threading.Event] = None) -> httpx.Response:
        """A Connect stream response whose envelopes are produced as ``messages`` yields them;
        ``closed`` is set when the client hangs up (the async client's, as the fake can tell)."""
        closed = closed or threading.Event()

        def frames() -> Iterator[bytes]:
            try:
                for message in messages:
                    if isinstance(message, BaseException):  # what httpx raises when the connection fails
                        raise message
                    if isinstance(message, tuple):  # ("error", code, message)
                        _, code, text = message
                        yield envelope({"error": {"code": code, "message": text}}, 2)
                        return
                    yield envelope(message)
            except GeneratorExit:
                return
            yield envelope({}, 2)

        if sync:
            return httpx.Response(200, headers={"content-type": "application/connect+json"}, content=frames())

        async def async_frames() -> AsyncIterator[bytes]:
            iterator = frames()
            try:
                while True:
                    # The producer may block on a queue: run it off the event loop.
                    chunk = await asyncio.get_running_loop().run_in_executor(None, next, iterator, None)
                    if chunk is None:
                        return
                    yield chunk
            finally:
                closed.set()

        return httpx.Response(200, headers={"content-type": "application/connect+json"}, content=async_frames())

    # -- control plane ---------------------------------------------------------------------------

    def control_plane(self, request: httpx.Request, sync: bool) -> httpx.Response:
        method = request.url.path.rsplit("/", 1)[-1]
        if request.headers.get("content-type") == "application/connect+json":
            body = read_envelope(request.content)
        else:
            body = json.loads(request.content or b"{}")
        key = f"{body.get('namespace') or 'default'}/{body.get('name', '')}"
        if method == "GetSandboxPool":
            pool = self.pools.get(body["name"])
            return httpx.Response(200, json=pool) if pool else connect_error(404, "not_found", f"pool {key} does not exist", "not_found")
        if method == "GetSandboxProxy":
            return httpx.Response(200, json={"url": self.proxy_url})
        if method == "CreateSandbox":
            spec = body["spec"]
            for index, port in enumerate(spec.get("exposedPorts", [])):
                if not 1 <= port <= 65535:
                    response = connect_error(
                        400, "invalid_argument", f"spec.exposedPorts[{index}]: {port} is out of range", "invalid_argument"
                    )
                    response.headers["fsb-error-field"] = f"spec.exposedPorts%5B{index}%5D"
                    return response
            if self.create_refusals:
                return self.create_refusals.pop(0)
            namespace = body.get("namespace") or "default"
            request_key = f"{namespace}/{body.get('requestId') or ''}"
            earlier = self.sandboxes.get(self.created_by_request.get(request_key, "")) if body.get("requestId") else None
            if earlier is not None:
                # A retry: the sandbox the first attempt made, with a new token (its answer never arrived).
                sandbox, token = earlier, f"rotated-{earlier['status']['sandboxID']}"
                self.access_tokens[earlier["status"]["sandboxID"]] = token
            else:
                name = body.get("name") or request_name(namespace, body.get("requestId") or f"{len(self.sandboxes)}")
                token = f"token-of-{name}"
                sandbox = self.add_sandbox(name, namespace, token=token)
                sandbox["spec"] = spec
                sandbox["metadata"]["labels"] = body.get("labels") or {}
                self.created_by_request[request_key] = f"{namespace}/{name}"
            if self.create_answers_lost > 0:
                self.create_answers_lost -= 1
                raise httpx.ReadTimeout("the answer was lost", request=request)
            return httpx.Response(200, json=sandbox, headers={"fsb-access-token": token})
        if method == "ListSandboxes":
            listed = list(self.sandboxes.values())
            page_size = int(body.get("pageSize") or 0)
            if page_size <= 0:
                return httpx.Response(200, json={"sandboxes": listed})
            start = int(body.get("pageToken") or 0)
            end = min(len(listed), start + page_size)
            page: Dict[str, Any] = {"sandboxes": listed[start:end]}
            if end < len(listed):
                page["nextPageToken"] = str(end)
            return httpx.Response(200, json=page)
        if method in ("GetSandbox", "UpdateSandbox", "DeleteSandbox", "RotateAccessToken", "Logs"):
            found = self.sandboxes.get(key)
            if found is None:
                error = connect_error(404, "not_found", f"sandbox {key} not found", "not_found")
                if method != "Logs":
                    return error
                return self._stream(iter([("error", "not_found", f"sandbox {key} not found")]), sync)
            sandbox = found
            if method == "GetSandbox":
                return httpx.Response(200, json=sandbox)
            if method == "UpdateSandbox":
                if self.update_conflicts > 0:
                    self.update_conflicts -= 1
                    sandbox["metadata"]["resourceVersion"] = str(int(sandbox["metadata"]["resourceVersion"]) + 1)
                    return connect_error(409, "aborted", "the sandbox changed since it was read", "conflict")
                if body.get("resourceVersion") != sandbox["metadata"]["resourceVersion"]:
                    return connect_error(409, "aborted", "stale resourceVersion", "conflict")
                sandbox["spec"] = body["spec"]
                sandbox["metadata"]["resourceVersion"] = str(int(sandbox["metadata"]["resourceVersion"]) + 1)
                return httpx.Response(200, json=sandbox)
            if method == "DeleteSandbox":
                del self.sandboxes[key]
                self.access_tokens.pop(sandbox["status"]["sandboxID"], None)
                return httpx.Response(200, json={})
            if method == "RotateAccessToken":
                token = f"rotated-{sandbox['status']['sandboxID']}"
                self.access_tokens[sandbox["status"]["sandboxID"]] = token
                return httpx.Response(200, json={"accessToken": token, "sandbox": sandbox})
            data = self.logs
            chunks: List[Any] = [{"data": b64(data[:6])}, {"data": b64(data[6:])}]
            deadline_ms = request.headers.get("connect-timeout-ms")
            if body.get("follow") and deadline_ms:
                # The command runs on: the server ends the follow at its Connect deadline, as connect-node does.
                def follow() -> Iterator[Any]:
                    yield from chunks
                    time.sleep(int(deadline_ms) / 1000)
                    yield ("error", "deadline_exceeded", "the operation timed out")

                return self._stream(follow(), sync)
            if body.get("follow") and self.logs_go_silent:
                # The control plane's host vanished without a FIN or RST after the output: nothing more
                # comes, but a keepalive. httpx raises ReadTimeout once its read timeout passed; with
                # none it would wait for ever, which the fake says instead of hanging.
                read_timeout = request.extensions["timeout"]["read"]

                def silent() -> Iterator[Any]:
                    yield from chunks
                    yield {"data": ""}
                    if read_timeout is None:
                        yield ("error", "internal", "the client would wait for ever: no read timeout on a silent follow")
                    yield httpx.ReadTimeout("timed out", request=request)

                return self._stream(silent(), sync)
            return self._stream(iter(chunks), sync)
        return connect_error(404, "unimplemented", f"no procedure {method}")

    # -- the proxy and the daemon ----------------------------------------------------------------

    def proxy(self, request: httpx.Request, sync: bool) -> httpx.Response:
        sandbox_id = request.headers.get("e2b-sandbox-id", "")
        if request.headers.get("e2b-sandbox-port") != "49983":
            return httpx.Response(400, json={"code": 400, "message": "no route"})
        if sandbox_id not in self.access_tokens:
            # The proxy's own code beside E2B's body, as proxy-target.ts answers.
            return httpx.Response(
                502,
                json={"sandboxId": sandbox_id, "message": "The sandbox was not found", "code": 502},
                headers={"fsb-error-code": "not_found"},
            )
        if request.headers.get("x-access-token") != self.access_tokens[sandbox_id]:
            return httpx.Response(401, json={"code": 401, "message": "missing or wrong access token"})
        path = request.url.path
        if path == "/health":
            if self.health_before_ready:
                status = self.health_before_ready.pop(0)
                return httpx.Response(status, json={"code": status, "message": "port 49983 is not open"})
            return httpx.Response(204)
        if path == "/files":
            return self.files_endpoint(request)
        if path.startswith("/process.Process/"):
            return self.process_service(path.rsplit("/", 1)[-1], request, sync)
        if path.startswith("/filesystem.Filesystem/"):
            return self.filesystem_service(path.rsplit("/", 1)[-1], request, sync)
        return httpx.Response(404, json={"code": 404, "message": f"no route {path}"})

    def user_of(self, request: httpx.Request) -> Optional[str]:
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Basic "):
            return None
        return base64.b64decode(authorization[6:]).decode().split(":", 1)[0]

    def process_service(self, method: str, request: httpx.Request, sync: bool) -> httpx.Response:
        if method in ("Start", "Connect"):
            assert request.headers["content-type"] == "application/connect+json"
            body = read_envelope(request.content)
        else:
            body = json.loads(request.content)
        if method == "Start":
            config = body["process"]
            with self._lock:
                self._next_pid += 1
                pid = self._next_pid
            process = FakeProcess(
                pid=pid,
                argv=[config["cmd"], *config.get("args", [])],
                envs=config.get("envs", {}),
                cwd=config.get("cwd"),
                user=self.user_of(request),
                tag=body.get("tag"),
                pty=(body.get("pty") or {}).get("size"),
                stdin_open=bool(body.get("stdin", True)),
            )
            program = self.programs.get(process.argv[-1]) or self.programs.get(process.argv[0])
            if program is None:
                return self._stream(iter([("error", "invalid_argument", f"cannot start {process.argv}: no such program")]), sync)
            self.processes[pid] = process
            events = process.subscribe()
            program(process)
            closed = threading.Event()
            return self._stream(self._process_events(process, events, closed), sync, closed)
        pid = body.get("process", {}).get("pid")
        selected = self.processes.get(pid) if pid is not None else None
        if method == "List":
            return httpx.Response(
                200,
                json={
                    "processes": [
                        {"pid": p.pid, "tag": p.tag, "config": {"cmd": p.argv[0], "args": p.argv[1:], "envs": p.envs, "cwd": p.cwd}}
                        for p in self.processes.values()
                        if not p.ended
                    ]
                },
            )
        if selected is None or selected.ended:
            if method == "Connect":
                return self._stream(iter([("error", "not_found", f"process {pid} not found")]), sync)
            return connect_error(404, "not_found", f"process {pid} not found")
        process = selected
        if method == "Connect":
            closed = threading.Event()
            return self._stream(self._process_events(process, process.subscribe(), closed), sync, closed)
        if method == "SendSignal":
            assert body["signal"] == "SIGNAL_SIGKILL"
            process.exit(-1, "signal: killed")
            return httpx.Response(200, json={})
        if method == "SendInput":
            data = body["input"]
            stream, value = next(iter(data.items()))
            if stream == "stdin" and not process.stdin_open:
                return connect_error(400, "failed_precondition", "stdin is closed")
            process.stdin.append(base64.b64decode(value))
            on_input = self.programs.get(f"{process.argv[-1]}:stdin")
            if on_input:
                on_input(process)
            return httpx.Response(200, json={})
        if method == "CloseStdin":
            process.stdin_open = False
            on_close = self.programs.get(f"{process.argv[-1]}:eof")
            if on_close:
                on_close(process)
            return httpx.Response(200, json={})
        if method == "Update":
            process.pty = body["pty"]["size"]
            return httpx.Response(200, json={})
        return connect_error(404, "unimplemented", f"no procedure {method}")

    def _process_events(self, process: FakeProcess, events: queue.Queue[Any], closed: threading.Event) -> Iterator[Any]:
        try:
            yield {"event": {"start": {"pid": process.pid}}}
            while True:
                event = take(events, closed)
                if event is None:
                    yield ("error", "internal", "the fake process produced nothing for 10 s")
                    return
                yield event
                if isinstance(event, (tuple, BaseException)) or "end" in event["event"]:
                    return
        finally:
            process.subscribers.remove(events)

    def files_endpoint(self, request: httpx.Request) -> httpx.Response:
        path = request.url.params.get("path", "")
        if not path.startswith("/"):
            path = f"/root/{path}"
        if request.method == "GET":
            if path in self.directories:
                return httpx.Response(400, json={"code": 400, "message": f"{path} is a directory"})
            if path not in self.files:
                return httpx.Response(404, json={"code": 404, "message": f"open {path}: no such file or directory"})
            return httpx.Response(200, content=self.files[path])
        assert request.headers["content-type"] == "application/octet-stream"
        declared = request.headers.get("content-length")
        if declared is not None and int(declared) != len(request.content):
            # What an HTTP server makes of a body that is not as long as declared: an error, or a cut file.
            return httpx.Response(400, json={"code": 400, "message": f"Content-Length {declared}, but {len(request.content)} bytes came"})
        self.files[path] = request.content
        parent = path.rsplit("/", 1)[0] or "/"
        self.directories.add(parent)
        for watched in self.watch_streams:
            watched.put({"filesystem": {"name": path.rsplit("/", 1)[1], "type": "EVENT_TYPE_CREATE"}})
        for events in self.watchers.values():
            events.append({"name": path.rsplit("/", 1)[1], "type": "EVENT_TYPE_WRITE"})
        return httpx.Response(200, json=[{"name": path.rsplit("/", 1)[1], "type": "file", "path": path}])

    def entry(self, path: str) -> Message:
        is_dir = path in self.directories
        return {
            "name": path.rsplit("/", 1)[-1],
            "type": "FILE_TYPE_DIRECTORY" if is_dir else "FILE_TYPE_FILE",
            "path": path,
            "size": "0" if is_dir else str(len(self.files.get(path, b""))),
            # As the daemon sends it: permission bits (st_mode & 0o7777), no type bits.
            "mode": 0o755 if is_dir else 0o644,
            "permissions": "drwxr-xr-x" if is_dir else "-rw-r--r--",
            "owner": "root",
            "group": "root",
            "modifiedTime": "2026-11-30T18:41:35.123456789Z",
        }

    def filesystem_service(self, method: str, request: httpx.Request, sync: bool) -> httpx.Response:
        if method == "WatchDir":
            body = read_envelope(request.content)
            events: queue.Queue[Any] = queue.Queue()
            self.watch_streams.append(events)
            closed = threading.Event()

            def watch() -> Iterator[Any]:
                yield {"start": {}}
                while True:
                    event = take(events, closed)
                    if event is None:
                        return
                    yield event

            assert body["path"] in self.directories
            return self._stream(watch(), sync, closed)
        body = json.loads(request.content)
        path = body.get("path", "")
        if method == "Stat":
            if path not in self.files and path not in self.directories:
                return connect_error(404, "not_found", f"stat {path}: no such file or directory")
            return httpx.Response(200, json={"entry": self.entry(path)})
        if method == "ListDir":
            if path not in self.directories:
                return connect_error(404, "not_found", f"{path}: no such directory")
            children = sorted(p for p in set(self.files) | self.directories if p != path and p.rsplit("/", 1)[0] == path)
            return httpx.Response(200, json={"entries": [self.entry(child) for child in children]})
        if method == "MakeDir":
            if path in self.directories:
                return connect_error(409, "already_exists", f"{path} already exists")
            self.directories.add(path)
            return httpx.Response(200, json={"entry": self.entry(path)})
        if method == "Remove":
            # As the daemon (and E2B's): what is not there is removed already.
            self.files.pop(path, None)
            self.directories.discard(path)
            return httpx.Response(200, json={})
        if method == "Move":
            source, destination = body["source"], body["destination"]
            if source not in self.files:
                return connect_error(404, "not_found", f"rename {source}: no such file or directory")
            self.files[destination] = self.files.pop(source)
            return httpx.Response(200, json={"entry": self.entry(destination)})
        if method == "CreateWatcher":
            watcher_id = f"w{len(self.watchers) + 1}"
            self.watchers[watcher_id] = []
            return httpx.Response(200, json={"watcherId": watcher_id})
        if method == "GetWatcherEvents":
            events_of = self.watchers.get(body["watcherId"])
            if events_of is None:
                return connect_error(404, "not_found", "no such watcher")
            taken, events_of[:] = list(events_of), []
            return httpx.Response(200, json={"events": taken})
        if method == "RemoveWatcher":
            if self.watchers.pop(body["watcherId"], None) is None:
                return connect_error(404, "not_found", "no such watcher")
            return httpx.Response(200, json={})
        return connect_error(404, "unimplemented", f"no procedure {method}")


def new_fake() -> Tuple[FakeFastSandbox, Dict[str, Any]]:
    """A fake and the connection arguments that point the SDK at it."""
    fake = FakeFastSandbox()
    return fake, {"url": API_URL, "token": API_TOKEN}
