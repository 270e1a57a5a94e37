"""What the sync and async clients share: request bodies, headers, and the interpretation of
replies and process events. No I/O here, so both clients stay thin and behave the same.

Two APIs are spoken:

- the control plane's fast-path API (``fastsandbox.v1alpha1.SandboxService``/``PoolService``,
  ``proto/fastsandbox/v1alpha1/*.proto``), with ``Authorization: Bearer <API token>``;
- the in-sandbox daemon's (E2B's envd API: ``process.Process``, ``filesystem.Filesystem``,
  ``/files``, ``/health``; ``packages/envd/spec``), through the sandbox proxy, which routes by
  ``E2b-Sandbox-Id``/``E2b-Sandbox-Port`` and checks ``X-Access-Token``.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import math
import os
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import IO, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import httpx

from .errors import (
    CommandExitError,
    FailedPreconditionError,
    FsbError,
    NotFoundError,
    TimeoutError,
    UnavailableError,
    ValidationError,
    add_context,
    error_from_http,
)
from .models import CommandResult, PtySize, WriteInfo, format_time

SANDBOX_SERVICE = "fastsandbox.v1alpha1.SandboxService"
# Sandboxes a ListSandboxes call asks for at a time (the server caps a page at 1000).
LIST_PAGE_SIZE = 500
POOL_SERVICE = "fastsandbox.v1alpha1.PoolService"
PROCESS_SERVICE = "process.Process"
FILESYSTEM_SERVICE = "filesystem.Filesystem"

#: The CreateSandbox (and RotateAccessToken) response header with the sandbox's access token.
ACCESS_TOKEN_RESPONSE_HEADER = "fsb-access-token"
#: Where every sandbox's daemon listens; the proxy reaches it without the port being exposed.
DAEMON_PORT = 49983
#: A command's deadline when ``run`` is not told one, in seconds (E2B's default too).
DEFAULT_COMMAND_TIMEOUT = 60.0
#: How long ``create`` waits for a new sandbox's daemon to answer, in seconds.
DAEMON_READY_TIMEOUT = 20.0
#: How often ``create`` asks whether the daemon answers, in seconds.
DAEMON_POLL_INTERVAL = 0.05
#: The daemon sends a keepalive on an idle stream this often (seconds)...
KEEPALIVE_INTERVAL = 30
#: ...so a stream silent for longer than this is dead (seconds).
STREAM_SILENCE_TIMEOUT = KEEPALIVE_INTERVAL + 30.0
#: Timers of the daemon and of this process may fire a little apart (seconds).
DEADLINE_SLACK = 0.02
#: How commands run: the shell and flags E2B's SDKs use (the daemon runs /bin/sh where an image has no bash).
SHELL = ("/bin/bash", "-l", "-c")
#: A terminal's size when ``pty.create`` is not told one.
DEFAULT_PTY_SIZE = PtySize(rows=24, cols=80)
#: How a terminal starts: an interactive login shell.
PTY_SHELL = ("/bin/bash", "-i", "-l")
#: A terminal's environment unless told otherwise: colours, and UTF-8 text (images often set no
#: locale, and a shell then takes multi-byte input for garbage) — as the TypeScript SDK's pty.create.
PTY_ENVS = {"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}

Envs = Optional[Mapping[str, str]]


def check_duration(value: Optional[float], option: str) -> None:
    """Refuses a duration that is not a finite number of seconds, 0 or more (as the TypeScript SDK
    refuses negative milliseconds): -1 is a mistake, not "no limit"."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValidationError(option, f"{value!r} is not a duration; give 0 or more seconds (None or 0: no limit)")


def request_deadline(request_timeout: Optional[float], default: Optional[float]) -> Optional[float]:
    """A call's deadline in seconds: its own ``request_timeout``, else the default; 0 means none."""
    check_duration(request_timeout, "request_timeout")
    chosen = default if request_timeout is None else request_timeout
    return None if chosen is None or chosen <= 0 else chosen


def command_deadline(timeout: Optional[float]) -> Optional[float]:
    """A command's deadline in seconds; ``None`` or 0 means none."""
    check_duration(timeout, "timeout")
    return None if timeout is None or timeout <= 0 else timeout


#: A path in the sandbox as ``files`` takes it: text, or bytes and path-like objects (``PurePosixPath``), as UTF-8.
SandboxPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


def sandbox_path(path: Any, field: str = "path") -> str:
    """A path in the sandbox as the daemon takes it (text), refused here when it cannot be one, as the
    TypeScript SDK refuses it: empty, with a NUL, or not text (bytes and path-like objects are decoded as UTF-8)."""
    value = os.fspath(path) if isinstance(path, os.PathLike) else path
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError(field, f"{path!r} is not UTF-8; the daemon takes paths as text") from None
    if not isinstance(value, str):
        raise ValidationError(field, f"{path!r} is not a path; give a str (or bytes, os.PathLike), e.g. '/tmp/data.txt'")
    if not value:
        raise ValidationError(field, "is empty; give a path in the sandbox, e.g. /tmp/data.txt")
    if "\0" in value:
        raise ValidationError(field, f"{value!r} contains a NUL character, which no path may")
    return value


def list_dir_request(path: str, depth: int) -> Dict[str, Any]:
    """ListDir's request; ``depth`` 1 is the directory's own entries, 2 and more go into subdirectories."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValidationError("depth", f"{depth!r} is not a depth; give 1 (the directory's own entries) or more")
    return {"path": path, "depth": depth}


# --- control plane -------------------------------------------------------------------------


#: The longest lifetime ``expire_time`` takes, in seconds (~100 years: what a datetime holds, with room).
MAX_LIFETIME = 100 * 365 * 24 * 3600.0


def check_lifetime(timeout: Optional[float]) -> None:
    """Refuses a sandbox's lifetime that is not a number of seconds more than 0 (``None``: none)."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_LIFETIME:
        raise ValidationError(
            "timeout", f"{timeout!r} is not a positive number of seconds (at most 100 years; None: the sandbox never expires)"
        )


def expire_time(timeout: Optional[float], now: Optional[datetime] = None) -> str:
    """``spec.expireTime`` for a lifetime of ``timeout`` seconds from now; ``""`` for none."""
    check_lifetime(timeout)
    if timeout is None:
        return ""
    return format_time((now or datetime.now(timezone.utc)) + timedelta(seconds=timeout))


def create_sandbox_request(
    *,
    namespace: str,
    name: str,
    pool: str,
    image: str,
    envs: Envs,
    cwd: Optional[str],
    command: Optional[Sequence[str]],
    exposed_ports: Optional[Sequence[int]],
    labels: Optional[Mapping[str, str]],
    timeout: Optional[float],
    request_id: Optional[str],
) -> Dict[str, Any]:
    """CreateSandbox's request, always with a request id (``request_id``, else a new one): the
    control plane dedupes creates by it, so a retry after a lost answer (:func:`answer_lost`) gets
    the sandbox the first attempt made instead of a second one."""
    spec: Dict[str, Any] = {"image": image, "poolRef": pool}
    if command is not None:
        argv = argument_list(command, "spec.command", 'a list of the program and its arguments, e.g. ["sleep", "100"]')
        if argv:
            spec["command"] = argv
    if envs:
        spec["envs"] = [{"name": key, "value": value} for key, value in string_mapping(envs, "envs").items()]
    if cwd:
        spec["workingDir"] = sandbox_path(cwd, "cwd")
    if exposed_ports is not None:
        ports = items_of(exposed_ports, "spec.exposedPorts", "a list of port numbers, e.g. [8080]")
        for index, port in enumerate(ports):
            # int32 on the wire: refuse what would be mangled, with the server's field path.
            if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
                raise ValidationError(f"spec.exposedPorts[{index}]", f"{port!r} is out of range; allowed: 1..65535")
        if ports:
            spec["exposedPorts"] = ports
    # None or 0: the sandbox lives until killed, as FastSandbox.create's timeoutMs 0 in TypeScript.
    check_duration(timeout, "timeout")
    expires = expire_time(timeout) if timeout else ""
    if expires:
        spec["expireTime"] = expires
    return {
        "namespace": namespace,
        "name": name,
        "spec": spec,
        "labels": string_mapping(labels, "labels"),
        "requestId": request_id or new_request_id(),
    }


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_sandbox_name(namespace: str, request_id: str) -> str:
    """The name the control plane gives a sandbox created with ``request_id`` and no name: derived
    from the id (``requestName`` in packages/controlplane/src/fastpath/sandbox-manager.ts, which this
    must match; the TypeScript SDK's ``requestSandboxName``), so that a create whose answer was lost
    can still be found, and deleted, by it."""
    digest = hashlib.sha256(f"{namespace or 'default'}/{request_id}".encode()).hexdigest()
    return f"sb-{digest[:10]}"


def name_lost_create(error: FsbError, namespace: str, name: str, request_id: str, connect: str) -> None:
    """Adds to a failed create's error, when its answer never came (:func:`answer_lost`, on both
    attempts), that the sandbox may be made all the same, naming it and the request id (as the
    TypeScript SDK's createError): such a sandbox runs until deleted, and the caller was never told
    its name. ``connect`` is the handle class's (``Sandbox.connect``), for the way to delete it."""
    if not answer_lost(error):
        return
    namespace = namespace or "default"
    name = name or request_sandbox_name(namespace, request_id)
    in_namespace = "" if namespace == "default" else f", namespace={namespace!r}"
    error.message += (
        f"; the sandbox may still be made, as {namespace}/{name} (request id {request_id}): a create with "
        f"request_id={request_id!r} answers with it, and {connect}({name!r}{in_namespace}).kill() deletes it"
    )
    error.args = (error.message,)


def items_of(value: Any, field: str, wanted: str) -> List[Any]:
    """A list argument as a list; a string (iterated, it would be its characters) or a non-iterable is refused."""
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not hasattr(value, "__iter__"):
        raise ValidationError(field, f"{value!r} is not a list; give {wanted}")
    return list(value)


def argument_list(value: Any, field: str, wanted: str) -> List[str]:
    """A program and its arguments: a list of strings (numbers and path-like objects as text)."""
    argv: List[str] = []
    for index, argument in enumerate(items_of(value, field, wanted)):
        if isinstance(argument, os.PathLike):
            argument = os.fspath(argument)
        if isinstance(argument, (int, float)) and not isinstance(argument, bool):
            argument = str(argument)
        if not isinstance(argument, str):
            raise ValidationError(f"{field}[{index}]", f"{argument!r} is not a string; give {wanted}")
        argv.append(argument)
    return argv


def string_mapping(value: Any, field: str) -> Dict[str, str]:
    """A mapping of names to strings (environment variables, labels); ``None``: empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"{value!r} is not a mapping; give a dict of names to strings, e.g. {{'KEY': 'value'}}")
    wanted = "give a dict of names to strings, e.g. {'KEY': 'value'}"
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValidationError(field, f"the name {key!r} is not a string; {wanted}")
        if not isinstance(item, str):
            raise ValidationError(f"{field}.{key}", f"{item!r} is not a string; {wanted}")
    return dict(value)


def answer_lost(error: FsbError) -> bool:
    """Whether a call failed without the control plane's answer, so it may have done its work: the
    client's deadline, or a transport failure. The control plane's own errors carry its code."""
    return isinstance(error, (TimeoutError, UnavailableError)) and not error._from_server


#: The most lines a tail of a sandbox's logs may ask for (the wire's int32).
MAX_TAIL_LINES = 2**31 - 1


def logs_request(key: Mapping[str, Any], follow: bool, tail: Optional[int]) -> Dict[str, Any]:
    """The Logs request of the sandbox ``key``: ``tail`` (only the last that many lines of what its
    log keeps, then with ``follow`` what comes) as ``tailLines``; left out when None: all of it."""
    request: Dict[str, Any] = {**key, "follow": follow}
    if tail is not None:
        if isinstance(tail, bool) or not isinstance(tail, int) or not 0 <= tail <= MAX_TAIL_LINES:
            raise ValidationError("tail", f"must be a whole number of lines ≥ 0 (at most {MAX_TAIL_LINES}), got {tail!r}")
        request["tailLines"] = tail
    return request


def logs_read_timeout(follow: bool, request_timeout: Optional[float]) -> Optional[float]:
    """The longest wait for a chunk of Logs: a follow's lasts as long as the command runs (0: no
    limit) unless the call was given a ``request_timeout``; ``None``: the handle's request timeout."""
    if not follow:
        return None
    return request_timeout if request_timeout is not None and request_timeout > 0 else 0


def logs_keepalives(follow: bool, request_timeout: Optional[float]) -> bool:
    """Whether a Logs call asks the control plane for keepalives: a follow that waits for output as
    long as the command runs. HTTP/1.1 has no PINGs, so without them a follow on a control plane
    whose host vanished without a FIN or RST (a NAT dropped it, a cable pulled) would wait for ever;
    with them, :data:`STREAM_SILENCE_TIMEOUT` of silence is a lost connection (UnavailableError). A
    follow given a ``request_timeout`` has that bound instead (TimeoutError), which keepalives would
    defeat."""
    return follow and logs_read_timeout(follow, request_timeout) == 0


def logs_stream_options(follow: bool, request_timeout: Optional[float]) -> Dict[str, Any]:
    """The liveness options of a Logs stream (``read_timeout``, or ``silence_timeout`` and the
    keepalive header: :func:`logs_keepalives`) for ``ConnectClient.stream``."""
    if logs_keepalives(follow, request_timeout):
        return {"silence_timeout": STREAM_SILENCE_TIMEOUT, "headers": stream_headers()}
    return {"read_timeout": logs_read_timeout(follow, request_timeout)}


def logs_deadline_passed(follow: bool, deadline: Optional[float], error: TimeoutError) -> bool:
    """Whether the error ending a Logs stream is the end of a follow's ``timeout`` (the server's
    deadline_exceeded at Connect-Timeout-Ms): the follow ended as asked, not an error."""
    return follow and deadline is not None and not isinstance(error.__cause__, httpx.TimeoutException)


def spec_with_timeout(sandbox: Mapping[str, Any], timeout: Optional[float]) -> Dict[str, Any]:
    """UpdateSandbox's request moving the sandbox's end time (the whole spec, as the API wants it)."""
    metadata = sandbox.get("metadata") or {}
    spec = dict(sandbox.get("spec") or {})
    expires = expire_time(timeout)
    if expires:
        spec["expireTime"] = expires
    else:
        spec.pop("expireTime", None)
    return {
        "namespace": metadata.get("namespace", ""),
        "name": metadata.get("name", ""),
        "spec": spec,
        "resourceVersion": metadata.get("resourceVersion", ""),
    }


def stats_history_range(since: Optional[datetime], until: Optional[datetime]) -> Dict[str, str]:
    """GetSandboxStatsHistory's range: milliseconds since the Unix epoch (proto3 JSON's int64 strings); left out: open."""
    range_: Dict[str, str] = {}
    if since is not None:
        range_["sinceMs"] = str(max(0, round(since.timestamp() * 1000)))
    if until is not None:
        range_["untilMs"] = str(max(0, round(until.timestamp() * 1000)))
    return range_


def sandbox_of(reply: Mapping[str, Any], what: str) -> Dict[str, Any]:
    sandbox = reply.get("sandbox") if "sandbox" in reply and "metadata" not in reply else reply
    if not isinstance(sandbox, dict) or not isinstance(sandbox.get("metadata"), dict):
        raise FsbError("internal", f"{what} answered without the sandbox")
    return sandbox


_SANDBOX_ID = re.compile(r"^[a-z0-9]{20}$")


def is_sandbox_id(value: str) -> bool:
    """Whether ``value`` has the form of a sandbox id (20 lower-case letters and digits)."""
    return bool(_SANDBOX_ID.match(value))


def sandbox_with_id(listed: Mapping[str, Any], sandbox_id: str, namespace: str, not_found: FsbError) -> Dict[str, Any]:
    for sandbox in listed.get("sandboxes") or []:
        if (sandbox.get("status") or {}).get("sandboxID") == sandbox_id:
            return dict(sandbox)
    raise NotFoundError(f"no sandbox in namespace {namespace} is named {sandbox_id} or has that id") from not_found


#: What to check when the control plane cannot be connected to.
CONTROL_PLANE_UNREACHABLE = "is Fast Sandbox running there? 'npx fsb up' starts one; url= or FSB_URL points elsewhere"
#: What to check when the sandbox proxy cannot be connected to.
PROXY_UNREACHABLE = "the sandbox proxy's address is proxy_url=, FSB_PROXY_URL, or what the control plane answers (GetSandboxProxy)"


def api_headers(token: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the daemon through the proxy ------------------------------------------------------------


def daemon_headers(sandbox_id: str, access_token: str) -> Dict[str, str]:
    """Routes a request through the sandbox proxy to the sandbox's daemon, with its access token."""
    return {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(DAEMON_PORT), "X-Access-Token": access_token}


def user_header(user: Optional[str]) -> Dict[str, str]:
    """The Linux user a daemon call acts as (E2B's convention: Basic auth without a password)."""
    if not user:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:".encode()).decode()}


def daemon_ready(response: httpx.Response) -> bool:
    """Whether ``GET /health`` says the daemon serves; False while it may still be starting; raises otherwise."""
    if response.status_code == 204:
        return True
    # 502: nothing listens on the daemon's port yet; 503: the sandbox is not running yet.
    if response.status_code in (502, 503) and "sandbox was not found" not in response.text.lower():
        return False
    raise error_from_http(response, "the sandbox's daemon")


def missing_access_token(name: str, connect: str) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"no access token for sandbox {name}: pass access_token= to {connect} (create returned it; 'fsb run' printed it), "
        "or call rotate_access_token() to make a new one (the previous one then stops working)"
    )


def no_instance(name: str, phase: str) -> FailedPreconditionError:
    return FailedPreconditionError(f"sandbox {name} has no instance yet (phase {phase or 'Pending'}); connect again once it runs")


def instance_replaced(context: str, name: str, old_id: str, new_id: str, refresh: str, connect: str) -> NotFoundError:
    """The sandbox proxy said the handle's instance is gone, but the sandbox lives on as another one
    (``fsb reset``, an AutoRecreate): the handle does not move to it by itself, since nothing of
    the old instance (its files, its processes) is there. Still "the sandbox is gone" for
    :func:`fast_sandbox.errors.is_sandbox_gone`: ``files.exists`` and ``kill(pid)`` raise it."""
    error = NotFoundError(
        f"{context}: sandbox {name} was reset or replaced: its instance {old_id}, which this handle calls, is gone, "
        f"and it runs as {new_id} now (new files and processes; nothing was done there). "
        f"{refresh} moves this handle to the new instance, or {connect}({name!r}) gives a handle of it"
    )
    error._sandbox_gone = True
    return error


def instance_of(sandbox: Mapping[str, Any]) -> str:
    """The sandbox's instance id (``status.sandboxID``); ``""`` while it has none."""
    return str((sandbox.get("status") or {}).get("sandboxID") or "")


def proxy_url_of(reply: Mapping[str, Any]) -> str:
    """GetSandboxProxy's answer: the sandbox proxy's base URL."""
    url = str(reply.get("url") or "").rstrip("/")
    if not url:
        raise ValidationError("proxy_url", "the control plane does not know the sandbox proxy's URL; pass proxy_url= or set FSB_PROXY_URL")
    return url


def health_says_running(response: httpx.Response, name: str) -> bool:
    """``GET /health`` through the proxy: 2xx is running; the proxy's 502 (gone) and 503 (not running) are not."""
    if response.is_success:
        return True
    if response.status_code in (502, 503):
        return False
    raise error_from_http(response, f"GET /health of sandbox {name}")


def health_poll_timeout(request_timeout: Optional[float], left: float) -> float:
    """The deadline of one ``GET /health`` of the readiness wait: the handle's request timeout (None:
    none), capped by what is left of the wait, as the TypeScript SDK's waitUntilReady. A poll that
    gets no answer in time (:func:`poll_timed_out`) is "not ready yet": the proxy's dial to a sandbox
    whose network is not up yet may take seconds."""
    return max(0.001, min(request_timeout, left) if request_timeout else left)


def poll_timed_out(error: TimeoutError) -> bool:
    """Whether a poll's TimeoutError is its own deadline passing (httpx's), not an answer of the server's."""
    return isinstance(error.__cause__, httpx.TimeoutException)


def health_answer(response: httpx.Response) -> str:
    """A ``GET /health`` answer that is not ready, for :func:`daemon_not_ready`."""
    return f"HTTP {response.status_code} {response.text[:200]}".strip()


def daemon_not_ready(name: str, timeout: float, last: str) -> UnavailableError:
    return UnavailableError(
        f"the daemon of sandbox {name} did not answer within {timeout:g}s (last: {last}); "
        "commands, files and terminals need a pool with network mode Isolated"
    )


def encode_bytes(data: Union[str, bytes]) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def decode_bytes(value: Any) -> bytes:
    return base64.b64decode(value) if isinstance(value, str) and value else b""


def selector(pid: int) -> Dict[str, Any]:
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= 0xFFFFFFFF:
        raise ValidationError("pid", f"{pid!r} is not a process id (a positive integer)")
    return {"process": {"pid": pid}}


Command = Union[str, Sequence[str]]


def command_line(command: Command) -> List[str]:
    """A command string runs as E2B's SDKs run it, ``/bin/bash -l -c <command>`` (the daemon uses
    /bin/sh where there is no bash); a sequence runs as a program and its arguments."""
    if isinstance(command, str):
        if not command.strip():
            raise ValidationError("cmd", "is empty; give a command line, e.g. 'ls -l /'")
        return [*SHELL, command]
    wanted = "a command line (a str), e.g. 'ls -l /', or a program and its arguments (a list), e.g. ['ls', '-l', '/']"
    argv = argument_list(command, "cmd", wanted)
    if not argv or not argv[0]:
        raise ValidationError("cmd", "is empty; give a program and its arguments, e.g. ['ls', '-l', '/']")
    return argv


def describe(command: Command) -> str:
    """``command '…'`` for messages (after :func:`command_line` accepted it)."""
    return f"command {command if isinstance(command, str) else ' '.join(str(argument) for argument in command)!r}"


def start_request(
    argv: Sequence[str],
    *,
    envs: Envs,
    cwd: Optional[str],
    stdin: bool,
    pty: Optional[PtySize] = None,
    tag: Optional[str] = None,
) -> Dict[str, Any]:
    variables = string_mapping(envs, "envs")
    for name in variables:
        if not name or "=" in name or "\0" in name:
            raise ValidationError(f"envs.{name}", "is not a variable name (no '=' or NUL, not empty)")
    process: Dict[str, Any] = {"cmd": argv[0], "args": list(argv[1:]), "envs": variables}
    if cwd:
        process["cwd"] = sandbox_path(cwd, "cwd")
    request: Dict[str, Any] = {"process": process, "stdin": check_flag(stdin, "stdin", STDIN_HINT)}
    if tag:
        request["tag"] = tag
    if pty is not None:
        request["pty"] = {"size": {"rows": pty.rows, "cols": pty.cols}}
    return request


def stream_headers() -> Dict[str, str]:
    """Asks the daemon for a keepalive on idle streams, so a dead connection is noticed."""
    return {"Keepalive-Ping-Interval": str(KEEPALIVE_INTERVAL)}


def check_pty_size(size: PtySize) -> None:
    for field, value in (("rows", size.rows), ("cols", size.cols)):
        if not isinstance(value, int) or not 1 <= value <= 65535:
            raise ValidationError(f"size.{field}", f"{value!r} is out of range; allowed: 1..65535")


Output = Tuple[str, Union[str, bytes]]


class ProcessEvents:
    """Reads a process's event stream (Start or Connect): ``start``, ``data``…, ``end``.

    ``accept`` returns the output to hand to callbacks as ``("stdout"|"stderr", text)`` or
    ``("pty", bytes)``; stdout and stderr are decoded as UTF-8 across chunk boundaries.
    """

    def __init__(self, what: str, context: str, timeout: Optional[float], *, kills_at_deadline: bool) -> None:
        #: What runs, e.g. ``command 'ls'``; ``context`` adds where (``… in sandbox sb-1``).
        self.what = what
        self.context = context
        #: The stream's deadline (seconds) and when it passes (monotonic clock).
        self.timeout = command_deadline(timeout)
        self._deadline = None if self.timeout is None else time.monotonic() + self.timeout
        #: Whether the daemon kills the process at the deadline (Start), or only ends the stream (Connect).
        self.kills_at_deadline = kills_at_deadline
        self.pid: Optional[int] = None
        self.end: Optional[Mapping[str, Any]] = None
        #: When the end event arrived (monotonic clock): whether a kill was the deadline's is decided
        #: by then, not by when the caller gets round to asking for the result.
        self._ended_at: Optional[float] = None
        self._stdout: List[str] = []
        self._stderr: List[str] = []
        self._decoders = {
            "stdout": codecs.getincrementaldecoder("utf-8")(errors="replace"),
            "stderr": codecs.getincrementaldecoder("utf-8")(errors="replace"),
        }

    @property
    def stdout(self) -> str:
        return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def accept_start(self, message: Mapping[str, Any]) -> int:
        """The first message must be the start event: its pid."""
        start = (message.get("event") or {}).get("start")
        if not isinstance(start, dict) or not start.get("pid"):
            raise FsbError("internal", f"{self.context}: the daemon's first message is not the process's start: {message}")
        self.pid = int(start["pid"])
        return self.pid

    def accept(self, message: Mapping[str, Any]) -> List[Output]:
        event = message.get("event") or {}
        data = event.get("data")
        if isinstance(data, dict):
            outputs: List[Output] = []
            for stream in ("stdout", "stderr"):
                if stream in data:
                    text = self._decoders[stream].decode(decode_bytes(data[stream]))
                    if text:
                        (self._stdout if stream == "stdout" else self._stderr).append(text)
                        outputs.append((stream, text))
            if "pty" in data:
                outputs.append(("pty", decode_bytes(data["pty"])))
            return outputs
        if isinstance(event.get("end"), dict):
            self.end = event["end"]
            self._ended_at = time.monotonic()
            return self.flush()
        return []  # keepalive

    def flush(self) -> List[Output]:
        """What the decoders still hold (an incomplete UTF-8 sequence becomes U+FFFD)."""
        outputs: List[Output] = []
        for stream, decoder in self._decoders.items():
            text = decoder.decode(b"", final=True)
            if text:
                (self._stdout if stream == "stdout" else self._stderr).append(text)
                outputs.append((stream, text))
        return outputs

    def _process(self) -> str:
        """``command 'ls' in sandbox sb-1 (process 7)``, or ``process 7 in sandbox sb-1`` as followed."""
        return self.context if self.what == f"process {self.pid}" else f"{self.context} (process {self.pid})"

    def still_running(self, timeout: Optional[float]) -> TimeoutError:
        """What a wait for the process that it outlasted raises: the process goes on."""
        return TimeoutError(f"{self._process()} is still running after {timeout:g}s; it goes on: wait() again, or kill() it")

    def disconnected(self) -> FailedPreconditionError:
        """What a wait raises after ``disconnect()``: the caller's own doing, not the sandbox being unreachable."""
        return FailedPreconditionError(f"{self._process()}: disconnected before it ended (commands.connect({self.pid}) follows it again)")

    def _timed_out(self) -> TimeoutError:
        if not self.kills_at_deadline:
            return TimeoutError(
                f"{self.context} did not finish within {self.timeout:g}s (the timeout of following it); it keeps running: "
                f"commands.connect({self.pid}) follows it again; pass a larger timeout, or None for no limit"
            )
        return TimeoutError(
            f"{self.context} did not finish within {self.timeout:g}s (its timeout) and was killed; "
            "pass a larger timeout, or None for no limit"
        )

    def failure(self, error: BaseException) -> BaseException:
        """What the caller gets for an error that ended the stream: a passed deadline names the
        timeout; an SDK error says which process in which sandbox."""
        if isinstance(error, TimeoutError) and self.timeout is not None:
            timed_out = self._timed_out()
            timed_out.__cause__ = error
            return timed_out
        if isinstance(error, FsbError):
            return add_context(error, self.context)
        return error

    def result(self) -> CommandResult:
        """The command's result; CommandExitError for a non-zero exit code, TimeoutError when
        the daemon killed it at its deadline (it did not exit by itself: exit code -1)."""
        if self.end is None:
            raise UnavailableError(f"{self.context}: the stream ended without the process's end (the connection was cut)")
        exit_code = int(self.end.get("exitCode", 0) or 0)
        error = self.end.get("error") or None
        if (
            exit_code == -1
            and self.kills_at_deadline
            and self._deadline is not None
            and self._ended_at is not None
            and self._ended_at >= self._deadline - DEADLINE_SLACK
        ):
            raise self._timed_out()
        if exit_code != 0:
            raise CommandExitError(exit_code, self.stdout, self.stderr, error, self.context)
        return CommandResult(stdout=self.stdout, stderr=self.stderr, exit_code=exit_code, error=error)


#: What ``files.write`` takes: text, bytes-like values, or a binary file object.
FileData = Union[str, bytes, bytearray, memoryview, IO[bytes]]
#: How much of a file object ``files.write`` reads and sends at a time.
WRITE_CHUNK_SIZE = 256 * 1024


def file_body(data: Any) -> Union[bytes, IO[bytes]]:
    """``files.write``'s data as bytes (text as UTF-8, any bytes-like value), or the file object to
    read it from (:func:`file_chunks`)."""
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, bytes):
        return data
    if callable(getattr(data, "read", None)):
        file: IO[bytes] = data
        return file
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise ValidationError(
            "data", f"{type(data).__name__} cannot be written; give str, bytes (or bytes-like) or a binary file object"
        ) from None


def file_chunks(file: IO[bytes]) -> Iterator[bytes]:
    """A file object's content from where it stands to its end, in chunks: sent as httpx reads them
    (with chunked transfer encoding: not all in memory, and without a Content-Length, which httpx
    would take from the file's size, wrong for a pipe or a partly read file). A generator, so httpx
    sees no ``fileno``/``tell`` to take a length from."""
    while True:
        chunk = file.read(WRITE_CHUNK_SIZE)
        if not chunk:
            return
        if isinstance(chunk, str):
            raise ValidationError("data", "the file object gives text: open the file in binary mode ('rb')")
        yield bytes(chunk)


def file_params(path: str, user: Optional[str] = None, mode: Optional[int] = None) -> Dict[str, str]:
    params = {"path": path}
    if user:
        params["username"] = user
    if mode is not None:
        params["mode"] = format(check_file_mode(mode), "o")
    return params


def check_read_format(value: object) -> None:
    """A read's ``format``: ``"text"`` or ``"bytes"``."""
    if value not in ("text", "bytes") or not isinstance(value, str):
        raise ValidationError("format", f"{value!r} is not a format; give 'text' (the default: UTF-8 text) or 'bytes'")


#: What ``stdin`` is for, when something else was given (the input itself).
STDIN_HINT = ": True keeps the command's stdin open, and the handle's send_stdin() writes to it (run it with background=True)"


def check_flag(value: object, field: str, hint: str = "") -> bool:
    """A True/False argument (``stdin``): anything else, such as the text meant for stdin, is refused."""
    if not isinstance(value, bool):
        raise ValidationError(field, f"{value!r} is not True or False{hint}")
    return value


def check_file_mode(mode: object) -> int:
    """A write's ``mode``: permission bits, 0 to 0o777."""
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        shown = oct(mode) if isinstance(mode, int) and not isinstance(mode, bool) and mode >= 0 else repr(mode)
        raise ValidationError("mode", f"{shown} is not a file mode; give permission bits from 0 to 0o777 (e.g. 0o755)")
    return mode


def write_info_of(response: httpx.Response, path: str, what: str) -> WriteInfo:
    """The reply of ``POST /files``: a JSON array with the written file."""
    if response.status_code != 200:
        raise error_from_http(response, what)
    try:
        written = response.json()
    except ValueError:
        written = None
    if not isinstance(written, list) or not written or not isinstance(written[0], dict):
        raise FsbError("internal", f"{what}: the daemon answered {response.text[:200]!r}, not the written file")
    return WriteInfo(name=str(written[0].get("name", "")), path=str(written[0].get("path", path)))
