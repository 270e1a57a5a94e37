"""The blocking client: :class:`Sandbox` and its sub-modules ``commands``, ``files`` and ``pty``.

:mod:`fast_sandbox.async_sandbox` is the same API for asyncio.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime
from typing import Any, Callable, Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Union, overload

import httpx

from . import _protocol as protocol
from ._connect import ConnectClient, HttpClients, Message, ServerStream
from ._instance import FollowsItsInstance
from ._interrupts import first_interrupt_deferred
from .config import DEFAULT_REQUEST_TIMEOUT, ConnectionConfig
from .errors import (
    AlreadyExistsError,
    ConflictError,
    FsbError,
    NotFoundError,
    TimeoutError,
    UnavailableError,
    add_context,
    error_from_http,
    error_from_transport,
    is_sandbox_gone,
)
from .models import CommandResult, EntryInfo, FilesystemEvent, ProcessInfo, PtySize, SandboxInfo, SandboxStats, WriteInfo


class _Connection:
    """The HTTP clients for the control plane and the sandbox proxy (one for loopback URLs, one for
    others: :func:`fast_sandbox._connect.http_client`), with its settings."""

    def __init__(self, config: ConnectionConfig, transport: Optional[httpx.BaseTransport]) -> None:
        self.config = config
        self._clients = HttpClients(httpx.Client, transport)
        self.api = ConnectClient(
            self.client(config.url),
            config.url,
            # Made at each call: a token file's token is read again as it is renewed.
            lambda: protocol.api_headers(config.current_token()),
            server="the control plane",
            unreachable_hint=protocol.CONTROL_PLANE_UNREACHABLE,
        )
        self._proxy_url = config.proxy_url

    def proxy_url(self) -> str:
        """The sandbox proxy's base URL: configured, else asked of the control plane once."""
        if self._proxy_url is None:
            reply, _ = self.api.unary(f"{protocol.SANDBOX_SERVICE}/GetSandboxProxy", {}, request_timeout=self.config.request_timeout)
            self._proxy_url = protocol.proxy_url_of(reply)
        return self._proxy_url

    def client(self, url: str) -> httpx.Client:
        """The HTTP client for calls to ``url``."""
        client: httpx.Client = self._clients.for_url(url)
        return client

    def timeout(self, request_timeout: Optional[float]) -> Optional[float]:
        """A call's deadline: its own ``request_timeout``, else the handle's; 0 means none."""
        return protocol.request_deadline(request_timeout, self.config.request_timeout)

    def close(self) -> None:
        for client in self._clients.all():
            client.close()


def _connection(
    url: Optional[str],
    token: Optional[str],
    proxy_url: Optional[str],
    data_dir: Optional[str],
    request_timeout: Optional[float],
    transport: Optional[httpx.BaseTransport],
    token_file: Optional[str] = None,
) -> _Connection:
    deadline = protocol.request_deadline(request_timeout, DEFAULT_REQUEST_TIMEOUT)
    return _Connection(ConnectionConfig.resolve(url, token, proxy_url, data_dir, deadline, token_file), transport)


class _Daemon:
    """Calls to one sandbox's daemon through the sandbox proxy."""

    def __init__(
        self, connection: _Connection, sandbox_id: str, access_token: Optional[str], name: str, phase: str, namespace: str = "default"
    ) -> None:
        self.connection = connection
        self.sandbox_id = sandbox_id
        #: Its phase as last read (a sandbox without an instance has no daemon to call).
        self.phase = phase
        self.name = name
        self.namespace = namespace
        self.access_token = access_token
        self._rpc: Optional[ConnectClient] = None

    @property
    def rpc(self) -> ConnectClient:
        if self._rpc is None:
            proxy_url = self.connection.proxy_url()
            self._rpc = ConnectClient(
                self.connection.client(proxy_url), proxy_url, server="the sandbox proxy", unreachable_hint=protocol.PROXY_UNREACHABLE
            )
        return self._rpc

    def headers(self, user: Optional[str] = None) -> Dict[str, str]:
        if not self.access_token:
            raise protocol.missing_access_token(self.name, "Sandbox.connect")
        if not self.sandbox_id:
            raise protocol.no_instance(self.name, self.phase)
        return {**protocol.daemon_headers(self.sandbox_id, self.access_token), **protocol.user_header(user)}

    def describe(self, what: str) -> str:
        """``what`` (e.g. ``listing /tmp``) in this sandbox, for messages; once."""
        where = f" in sandbox {self.name}"
        return what if what.endswith(where) else f"{what}{where}"

    def translate(self, error: FsbError, what: str) -> FsbError:
        """A failed call's error, starting with what was asked of which sandbox. When the sandbox
        proxy says the handle's instance is gone, the sandbox is looked up once by name: one that
        lives on as another instance (a reset, an AutoRecreate) gets an error that says so, and how
        to follow it; the call is not tried again there."""
        context = self.describe(what)
        error = add_context(error, context)
        if not is_sandbox_gone(error) or not self.sandbox_id:
            return error
        try:
            reply, _ = self.connection.api.unary(
                f"{protocol.SANDBOX_SERVICE}/GetSandbox",
                {"namespace": self.namespace, "name": self.name},
                request_timeout=self.connection.timeout(None),
            )
            current = protocol.instance_of(protocol.sandbox_of(reply, "GetSandbox"))
        except FsbError:
            return error  # deleted (or not to be told now): gone it is
        if not current or current == self.sandbox_id:
            return error
        replaced = protocol.instance_replaced(context, self.name, self.sandbox_id, current, "sandbox.get_info()", "Sandbox.connect")
        replaced.__cause__ = error
        return replaced

    def check(self, response: httpx.Response, what: str) -> httpx.Response:
        """A plain HTTP answer of the daemon (``/files``) that must be 200; its error (:meth:`translate`) otherwise."""
        if response.status_code != 200:
            raise self.translate(error_from_http(response, self.describe(what)), what)
        return response

    def unary(
        self,
        service: str,
        method: str,
        message: Mapping[str, Any],
        what: str,
        request_timeout: Optional[float],
        user: Optional[str] = None,
    ) -> Message:
        """A unary call; ``what`` (e.g. ``listing /tmp``) starts the message of its errors."""
        deadline = self.connection.timeout(request_timeout)  # a bad request_timeout is refused as it is
        try:
            reply, _ = self.rpc.unary(f"{service}/{method}", message, request_timeout=deadline, headers=self.headers(user))
        except FsbError as error:
            raise self.translate(error, what) from None
        return reply

    def stream(
        self,
        service: str,
        method: str,
        message: Mapping[str, Any],
        what: str,
        *,
        timeout: Optional[float],
        request_timeout: Optional[float],
        user: Optional[str] = None,
    ) -> ServerStream:
        """Opens a server stream; ``what`` starts the message of errors answered at once."""
        deadline = self.connection.timeout(request_timeout)  # a bad request_timeout is refused as it is
        try:
            return self.rpc.stream(
                f"{service}/{method}",
                message,
                request_timeout=deadline,
                timeout=timeout,
                silence_timeout=protocol.STREAM_SILENCE_TIMEOUT,
                start_timeout=deadline,
                headers={**self.headers(user), **protocol.stream_headers()},
            )
        except FsbError as error:
            raise self.translate(error, what) from None

    def http(
        self,
        method: str,
        path: str,
        what: str,
        request_timeout: Optional[float],
        *,
        user: Optional[str] = None,
        params: Optional[Mapping[str, str]] = None,
        content: Union[bytes, Iterator[bytes], None] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> httpx.Response:
        """A plain HTTP request to the daemon (``/files``, ``/health``)."""
        headers = {**self.headers(user), **(headers or {})}
        proxy_url = self.connection.proxy_url()
        try:
            return self.connection.client(proxy_url).request(
                method,
                f"{proxy_url}{path}",
                params=params,
                content=content,
                headers=headers,
                timeout=self.connection.timeout(request_timeout),
            )
        except Exception as error:
            raise error_from_transport(error, f"{what}: the sandbox proxy at {proxy_url}", protocol.PROXY_UNREACHABLE) from error

    def wait_until_ready(self, timeout: float) -> None:
        """Polls ``GET /health`` until the daemon answers 204; a poll that gets no answer in time is
        "not ready yet" (see :func:`fast_sandbox._protocol.health_poll_timeout`)."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            poll_timeout = protocol.health_poll_timeout(self.connection.timeout(None), deadline - time.monotonic())
            try:
                response = self.http("GET", "/health", f"waiting for the daemon of sandbox {self.name}", poll_timeout)
            except TimeoutError as error:
                if not protocol.poll_timed_out(error):
                    raise
                last = f"no answer within {poll_timeout:g}s"
            else:
                if protocol.daemon_ready(response):
                    return
                last = protocol.health_answer(response)
            if time.monotonic() + protocol.DAEMON_POLL_INTERVAL >= deadline:
                raise protocol.daemon_not_ready(self.name, timeout, last)
            time.sleep(protocol.DAEMON_POLL_INTERVAL)


OutputHandler = Callable[[str], None]
PtyHandler = Callable[[bytes], None]


#: How long an interrupted run waits for its command's kill (seconds), as TypeScript's after an abort.
_KILL_AFTER_INTERRUPT_TIMEOUT = 2.0


class CommandHandle:
    """A running command (or terminal): wait for it, kill it, write to its stdin.

    A background command's output is read as it arrives by a thread of its own, which calls the
    ``on_stdout``/``on_stderr``/``on_data`` callbacks.
    """

    def __init__(
        self,
        pid: int,
        events: protocol.ProcessEvents,
        stream: ServerStream,
        messages: Iterator[Message],
        commands: Commands,
        handlers: Mapping[str, Optional[Callable[[Any], None]]],
        background: bool,
    ) -> None:
        self._pid = pid
        self._events = events
        self._stream = stream
        self._messages = messages
        self._commands = commands
        self._handlers = {kind: handler for kind, handler in handlers.items() if handler is not None}
        self._failure: Optional[BaseException] = None
        self._disconnected = False
        self._done = threading.Event()
        self._reader: Optional[threading.Thread] = None
        if background:
            self._reader = threading.Thread(target=self._read, name=f"fast-sandbox-process-{pid}", daemon=True)
            self._reader.start()

    @property
    def pid(self) -> int:
        """The process id in the sandbox."""
        return self._pid

    @property
    def stdout(self) -> str:
        """The standard output received so far."""
        return self._events.stdout

    @property
    def stderr(self) -> str:
        """The standard error received so far."""
        return self._events.stderr

    @property
    def exit_code(self) -> Optional[int]:
        """The exit code once the command ended, else ``None``."""
        end = self._events.end
        return None if end is None else int(end.get("exitCode", 0) or 0)

    def _read(self) -> None:
        try:
            for message in self._messages:
                for kind, output in self._events.accept(message):
                    handler = self._handlers.get(kind)
                    if handler is not None and not self._disconnected:
                        handler(output)
                if self._events.end is not None:
                    # The end envelope and the body's end follow: read them, so the connection is used again.
                    self._stream.finish(self._messages)
                    break
        except BaseException as error:  # raised again by wait(), in the caller's thread
            self._failure = error
        finally:
            self._stream.close()
            self._done.set()

    def wait(self, timeout: Optional[float] = None) -> CommandResult:
        """Waits until the command ends; its result, or CommandExitError for a non-zero exit code.

        ``timeout`` (seconds) bounds only this wait: TimeoutError leaves the command running.
        """
        if self._reader is None and not self._done.is_set():
            self._read()
        elif not self._done.wait(timeout):
            raise self._events.still_running(timeout)
        if self._disconnected and self._events.end is None:
            # The caller's own doing, as a closed handle is: not the sandbox being unreachable.
            raise self._events.disconnected()
        if self._failure is not None:
            raise self._events.failure(self._failure)
        return self._events.result()

    def kill(self, request_timeout: Optional[float] = None) -> bool:
        """Kills the command (SIGKILL); False when it had already ended."""
        return self._commands.kill(self._pid, request_timeout=request_timeout)

    def send_stdin(self, data: Union[str, bytes], request_timeout: Optional[float] = None) -> None:
        """Writes to the command's stdin (it must have been started with ``stdin=True``)."""
        self._commands.send_stdin(self._pid, data, request_timeout=request_timeout)

    def close_stdin(self, request_timeout: Optional[float] = None) -> None:
        """Closes the command's stdin: it reads end-of-file."""
        self._commands.close_stdin(self._pid, request_timeout=request_timeout)

    def disconnect(self) -> None:
        """Stops receiving the command's output; the command goes on (``commands.connect(pid)``)."""
        self._disconnected = True
        # The reader thread, blocked reading the stream, wakes as its socket is shut down and closes it.
        self._stream.hang_up()
        # Waiting ends now, whenever the reader notices the closed connection.
        self._done.set()


class Commands:
    """Runs commands in the sandbox through its daemon (``sandbox.commands``)."""

    def __init__(self, daemon: _Daemon) -> None:
        self._daemon = daemon

    @overload
    def run(
        self,
        cmd: protocol.Command,
        *,
        background: Literal[False] = False,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[OutputHandler] = None,
        on_stderr: Optional[OutputHandler] = None,
        stdin: bool = False,
        tag: Optional[str] = None,
        timeout: Optional[float] = protocol.DEFAULT_COMMAND_TIMEOUT,
        request_timeout: Optional[float] = None,
    ) -> CommandResult: ...

    @overload
    def run(
        self,
        cmd: protocol.Command,
        *,
        background: Literal[True],
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[OutputHandler] = None,
        on_stderr: Optional[OutputHandler] = None,
        stdin: bool = False,
        tag: Optional[str] = None,
        timeout: Optional[float] = protocol.DEFAULT_COMMAND_TIMEOUT,
        request_timeout: Optional[float] = None,
    ) -> CommandHandle: ...

    def run(
        self,
        cmd: protocol.Command,
        *,
        background: bool = False,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[OutputHandler] = None,
        on_stderr: Optional[OutputHandler] = None,
        stdin: bool = False,
        tag: Optional[str] = None,
        timeout: Optional[float] = protocol.DEFAULT_COMMAND_TIMEOUT,
        request_timeout: Optional[float] = None,
    ) -> Union[CommandResult, CommandHandle]:
        """Runs a command: a string with ``/bin/bash -l -c`` (``/bin/sh`` where the image has no
        bash), a sequence as a program and its arguments.

        Returns its result (CommandExitError for a non-zero exit code), or with
        ``background=True`` a :class:`CommandHandle` as soon as it started. ``on_stdout`` and
        ``on_stderr`` get the output as it arrives. ``timeout`` (seconds; ``None`` or 0: no limit)
        is the command's deadline: the daemon kills it then, and waiting for it raises
        TimeoutError. ``user`` runs it as that Linux user (default: the daemon's default user),
        ``stdin=True`` keeps its stdin open for :meth:`send_stdin`; ``tag`` names it in :meth:`list`.
        A run interrupted while it waits (KeyboardInterrupt: Ctrl-C, a notebook's interrupt) kills
        its command, as an aborted run of the TypeScript SDK does; one interrupted while it starts
        (in the main thread) kills it once its pid is known, then raises KeyboardInterrupt (a second
        Ctrl-C raises at once, leaving it to its timeout).
        """
        handle = self._start(
            protocol.command_line(cmd),
            protocol.describe(cmd),
            envs=envs,
            tag=tag,
            user=user,
            cwd=cwd,
            stdin=stdin,
            pty=None,
            timeout=timeout,
            request_timeout=request_timeout,
            handlers={"stdout": on_stdout, "stderr": on_stderr},
            background=background,
        )
        if background:
            return handle
        try:
            return handle.wait()
        except KeyboardInterrupt:
            if handle.exit_code is None:
                # A kill that fails changes nothing of why the run ended.
                with contextlib.suppress(Exception):
                    handle.kill(request_timeout=_KILL_AFTER_INTERRUPT_TIMEOUT)
            raise

    def _start(
        self,
        argv: Sequence[str],
        what: str,
        *,
        envs: Optional[Mapping[str, str]],
        tag: Optional[str] = None,
        user: Optional[str],
        cwd: Optional[str],
        stdin: bool,
        pty: Optional[PtySize],
        timeout: Optional[float],
        request_timeout: Optional[float],
        handlers: Mapping[str, Optional[Callable[[Any], None]]],
        background: bool,
    ) -> CommandHandle:
        deadline = protocol.command_deadline(timeout)
        opening = f"starting {what}"
        # Ctrl-C while it starts: the command is killed once its pid is known (see _interrupts).
        with first_interrupt_deferred() as interruption:
            try:
                stream = self._daemon.stream(
                    protocol.PROCESS_SERVICE,
                    "Start",
                    protocol.start_request(argv, envs=envs, cwd=cwd, stdin=stdin, pty=pty, tag=tag),
                    opening,
                    timeout=deadline,
                    request_timeout=request_timeout,
                    user=user,
                )
                handle = self._handle(stream, what, opening, handlers, deadline, background, kills_at_deadline=True)
            except Exception as error:
                if interruption.pending:
                    raise KeyboardInterrupt from error
                raise
        if interruption.pending:
            # A kill that fails changes nothing of why the start ended.
            with contextlib.suppress(Exception):
                handle.kill(request_timeout=_KILL_AFTER_INTERRUPT_TIMEOUT)
            raise KeyboardInterrupt
        return handle

    def _handle(
        self,
        stream: ServerStream,
        what: str,
        opening: str,
        handlers: Mapping[str, Optional[Callable[[Any], None]]],
        timeout: Optional[float],
        background: bool,
        *,
        kills_at_deadline: bool,
    ) -> CommandHandle:
        """The handle of a process stream once its first message (the start) came; ``opening`` (e.g.
        ``starting command 'ls'``) starts the message of the errors the daemon answers with instead."""
        events = protocol.ProcessEvents(what, self._daemon.describe(what), timeout, kills_at_deadline=kills_at_deadline)
        messages = iter(stream)
        try:
            try:
                first = next(messages, None)
            except FsbError as error:
                # The daemon's refusal, e.g. a program or a cwd that does not exist, or no such process.
                raise self._daemon.translate(error, opening) from None
            if first is None:
                raise UnavailableError(f"{self._daemon.describe(opening)}: the daemon closed the stream before the process started")
            pid = events.accept_start(first)
        except BaseException:
            stream.close()
            raise
        return CommandHandle(pid, events, stream, messages, self, handlers, background)

    def connect(
        self,
        pid: int,
        *,
        on_stdout: Optional[OutputHandler] = None,
        on_stderr: Optional[OutputHandler] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
    ) -> CommandHandle:
        """Follows a running process (its output from now on; ``timeout``: how long to follow it, after
        which waiting raises TimeoutError and the process keeps running); NotFoundError when there is none."""
        deadline = protocol.command_deadline(timeout)
        opening = f"following process {pid}"
        stream = self._daemon.stream(
            protocol.PROCESS_SERVICE,
            "Connect",
            protocol.selector(pid),
            opening,
            timeout=deadline,
            request_timeout=request_timeout,
        )
        handlers = {"stdout": on_stdout, "stderr": on_stderr}
        # Connect ends only the stream at its deadline: the process goes on.
        return self._handle(stream, f"process {pid}", opening, handlers, deadline, True, kills_at_deadline=False)

    def list(self, request_timeout: Optional[float] = None) -> List[ProcessInfo]:
        """The processes the daemon runs for commands and terminals."""
        reply = self._daemon.unary(protocol.PROCESS_SERVICE, "List", {}, "listing processes", request_timeout)
        return [ProcessInfo.from_message(process) for process in reply.get("processes") or []]

    def kill(self, pid: int, request_timeout: Optional[float] = None) -> bool:
        """Kills the process (SIGKILL); False when there is no such process."""
        message = {**protocol.selector(pid), "signal": "SIGNAL_SIGKILL"}
        try:
            self._daemon.unary(protocol.PROCESS_SERVICE, "SendSignal", message, f"killing process {pid}", request_timeout)
        except NotFoundError as error:
            # The daemon's "no such process"; the sandbox itself gone is an error (as in the TypeScript SDK).
            if is_sandbox_gone(error):
                raise
            return False
        return True

    def send_stdin(self, pid: int, data: Union[str, bytes], request_timeout: Optional[float] = None) -> None:
        """Writes to the stdin of a process started with ``stdin=True``."""
        message = {**protocol.selector(pid), "input": {"stdin": protocol.encode_bytes(data)}}
        self._daemon.unary(protocol.PROCESS_SERVICE, "SendInput", message, f"writing to the stdin of process {pid}", request_timeout)

    def close_stdin(self, pid: int, request_timeout: Optional[float] = None) -> None:
        """Closes the stdin of a process started with ``stdin=True``: it reads end-of-file."""
        self._daemon.unary(
            protocol.PROCESS_SERVICE, "CloseStdin", protocol.selector(pid), f"closing the stdin of process {pid}", request_timeout
        )


class Pty:
    """Interactive terminals in the sandbox (``sandbox.pty``)."""

    def __init__(self, commands: Commands) -> None:
        self._commands = commands

    def create(
        self,
        size: PtySize = protocol.DEFAULT_PTY_SIZE,
        *,
        on_data: Optional[PtyHandler] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        envs: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
    ) -> CommandHandle:
        """Starts ``bash -i -l`` (``sh`` where there is no bash) on a terminal of ``size``.

        ``on_data`` gets the terminal's output (bytes) from a reader thread. ``timeout`` (seconds)
        ends the terminal; by default it lives until killed or until it exits.
        """
        protocol.check_pty_size(size)
        return self._commands._start(
            list(protocol.PTY_SHELL),
            "terminal",
            envs={**protocol.PTY_ENVS, **protocol.string_mapping(envs, "envs")},
            user=user,
            cwd=cwd,
            stdin=True,
            pty=size,
            timeout=timeout,
            request_timeout=request_timeout,
            handlers={"pty": on_data},
            background=True,
        )

    def send_input(self, pid: int, data: Union[str, bytes], request_timeout: Optional[float] = None) -> None:
        """Types into the terminal."""
        message = {**protocol.selector(pid), "input": {"pty": protocol.encode_bytes(data)}}
        self._commands._daemon.unary(protocol.PROCESS_SERVICE, "SendInput", message, f"typing into terminal {pid}", request_timeout)

    def resize(self, pid: int, size: PtySize, request_timeout: Optional[float] = None) -> None:
        protocol.check_pty_size(size)
        message = {**protocol.selector(pid), "pty": {"size": {"rows": size.rows, "cols": size.cols}}}
        self._commands._daemon.unary(protocol.PROCESS_SERVICE, "Update", message, f"resizing terminal {pid}", request_timeout)

    def kill(self, pid: int, request_timeout: Optional[float] = None) -> bool:
        """Kills the terminal's shell (SIGKILL); False when there is no such process."""
        return self._commands.kill(pid, request_timeout=request_timeout)


class WatchHandle:
    """A directory being watched: collect its events with :meth:`get_new_events`, end with :meth:`stop`."""

    def __init__(self, daemon: _Daemon, watcher_id: str, path: str) -> None:
        self._daemon = daemon
        self._watcher_id = watcher_id
        self.path = path

    def get_new_events(self, request_timeout: Optional[float] = None) -> List[FilesystemEvent]:
        """The events since the last call (or since the watch began)."""
        reply = self._daemon.unary(
            protocol.FILESYSTEM_SERVICE,
            "GetWatcherEvents",
            {"watcherId": self._watcher_id},
            f"reading the events of watching {self.path}",
            request_timeout,
        )
        return [FilesystemEvent.from_message(event) for event in reply.get("events") or []]

    def stop(self, request_timeout: Optional[float] = None) -> None:
        """Ends the watch (a watch that is gone already is fine)."""
        with contextlib.suppress(NotFoundError):
            self._daemon.unary(
                protocol.FILESYSTEM_SERVICE,
                "RemoveWatcher",
                {"watcherId": self._watcher_id},
                f"stopping watching {self.path}",
                request_timeout,
            )

    def __enter__(self) -> WatchHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Files:
    """The sandbox's filesystem through its daemon (``sandbox.files``). Relative paths are the user's home's."""

    def __init__(self, daemon: _Daemon) -> None:
        self._daemon = daemon

    @overload
    def read(
        self,
        path: protocol.SandboxPath,
        *,
        format: Literal["text"] = "text",
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> str: ...

    @overload
    def read(
        self, path: protocol.SandboxPath, *, format: Literal["bytes"], user: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> bytes: ...

    def read(
        self,
        path: protocol.SandboxPath,
        *,
        format: Literal["text", "bytes"] = "text",
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Union[str, bytes]:
        """The file's content, as UTF-8 text or (``format="bytes"``) bytes.

        Paths here are text; bytes and path-like objects (``PurePosixPath``) are taken as UTF-8.
        """
        protocol.check_read_format(format)
        path = protocol.sandbox_path(path)
        what = self._daemon.describe(f"reading {path}")
        response = self._daemon.http("GET", "/files", what, request_timeout, params=protocol.file_params(path), user=user)
        self._daemon.check(response, what)
        return response.content if format == "bytes" else response.content.decode("utf-8", errors="replace")

    def write(
        self,
        path: protocol.SandboxPath,
        data: protocol.FileData,
        *,
        user: Optional[str] = None,
        mode: Optional[int] = None,
        request_timeout: Optional[float] = None,
    ) -> WriteInfo:
        """Writes the file (replacing it; missing parent directories are made).

        ``data``: text (written as UTF-8), bytes or any bytes-like value (``bytearray``,
        ``memoryview``…), or a binary file object (a file, a pipe, ``sys.stdin.buffer``), read from
        where it stands to its end and sent as it is read, in chunks.

        ``mode``: the file's permission bits once written, 0 to 0o777 (e.g. ``0o755`` for a script):
        a new file gets exactly these, whatever the sandbox's umask; an existing one gets them before
        its content is replaced (only its owner, or root, may change them). ``None``: a new file is
        0o644, an existing one keeps its mode. A Fast Sandbox extension; E2B's daemon has none.
        """
        path = protocol.sandbox_path(path)
        params = protocol.file_params(path, mode=mode)
        body = protocol.file_body(data)
        content = body if isinstance(body, bytes) else protocol.file_chunks(body)
        what = self._daemon.describe(f"writing {path}")
        response = self._daemon.http(
            "POST",
            "/files",
            what,
            request_timeout,
            params=params,
            user=user,
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )
        return protocol.write_info_of(self._daemon.check(response, what), path, what)

    def list(
        self, path: protocol.SandboxPath, *, depth: int = 1, user: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> List[EntryInfo]:
        """The entries of a directory, ``depth`` levels down."""
        path = protocol.sandbox_path(path)
        reply = self._daemon.unary(
            protocol.FILESYSTEM_SERVICE, "ListDir", protocol.list_dir_request(path, depth), f"listing {path}", request_timeout, user
        )
        return [EntryInfo.from_message(entry) for entry in reply.get("entries") or []]

    def get_info(self, path: protocol.SandboxPath, *, user: Optional[str] = None, request_timeout: Optional[float] = None) -> EntryInfo:
        path = protocol.sandbox_path(path)
        reply = self._daemon.unary(
            protocol.FILESYSTEM_SERVICE, "Stat", {"path": path}, f"reading the details of {path}", request_timeout, user
        )
        return EntryInfo.from_message(reply.get("entry") or {})

    def exists(self, path: protocol.SandboxPath, *, user: Optional[str] = None, request_timeout: Optional[float] = None) -> bool:
        try:
            self.get_info(path, user=user, request_timeout=request_timeout)
        except NotFoundError as error:
            # The daemon's "no such file"; the sandbox itself gone is an error (as in the TypeScript SDK).
            if is_sandbox_gone(error):
                raise
            return False
        return True

    def make_dir(self, path: protocol.SandboxPath, *, user: Optional[str] = None, request_timeout: Optional[float] = None) -> bool:
        """Makes the directory and its parents; False when it already existed."""
        path = protocol.sandbox_path(path)
        try:
            self._daemon.unary(protocol.FILESYSTEM_SERVICE, "MakeDir", {"path": path}, f"making directory {path}", request_timeout, user)
        except AlreadyExistsError:
            return False
        return True

    def remove(self, path: protocol.SandboxPath, *, user: Optional[str] = None, request_timeout: Optional[float] = None) -> None:
        """Removes a file or a directory with its contents; removing what is not there succeeds."""
        path = protocol.sandbox_path(path)
        self._daemon.unary(protocol.FILESYSTEM_SERVICE, "Remove", {"path": path}, f"removing {path}", request_timeout, user)

    def rename(
        self,
        old_path: protocol.SandboxPath,
        new_path: protocol.SandboxPath,
        *,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> EntryInfo:
        old_path, new_path = protocol.sandbox_path(old_path, "old_path"), protocol.sandbox_path(new_path, "new_path")
        reply = self._daemon.unary(
            protocol.FILESYSTEM_SERVICE,
            "Move",
            {"source": old_path, "destination": new_path},
            f"renaming {old_path}",
            request_timeout,
            user,
        )
        return EntryInfo.from_message(reply.get("entry") or {})

    def watch_dir(
        self, path: protocol.SandboxPath, *, recursive: bool = False, user: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> WatchHandle:
        """Starts watching a directory; events are collected until :meth:`WatchHandle.get_new_events`."""
        path = protocol.sandbox_path(path)
        reply = self._daemon.unary(
            protocol.FILESYSTEM_SERVICE, "CreateWatcher", {"path": path, "recursive": recursive}, f"watching {path}", request_timeout, user
        )
        return WatchHandle(self._daemon, str(reply.get("watcherId", "")), path)


class Sandbox(FollowsItsInstance):
    """A sandbox: a container of Fast Sandbox, with ``commands``, ``files`` and ``pty`` through its daemon.

    Get one with :meth:`create` or :meth:`connect`. Used as a context manager, it is killed on exit.
    Every method that calls the network takes ``request_timeout`` (seconds; 0: no limit), whose
    default is the ``request_timeout`` of ``create``/``connect`` (60 s).
    """

    def __init__(self, info: SandboxInfo, access_token: Optional[str], connection: _Connection) -> None:
        self._info = info
        self._connection = connection
        self._daemon = _Daemon(connection, info.sandbox_id, access_token, info.name, info.phase, info.namespace)
        self.commands = Commands(self._daemon)
        self.files = Files(self._daemon)
        self.pty = Pty(self.commands)

    # -- getting a handle ----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        image: Optional[str] = None,
        *,
        pool: str = "default",
        name: Optional[str] = None,
        namespace: str = "default",
        envs: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        command: Optional[Sequence[str]] = None,
        exposed_ports: Optional[Sequence[int]] = None,
        labels: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        request_id: Optional[str] = None,
        wait_for_daemon: bool = True,
        url: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        proxy_url: Optional[str] = None,
        data_dir: Optional[str] = None,
        request_timeout: Optional[float] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> Sandbox:
        """Creates a sandbox and returns once its daemon answers.

                :param image: the image to run (any reference, pulled when missing); default: the pool's.
                :param pool: the pool whose agents run it.
                :param envs: environment of the sandbox's command and of every command run in it.
                :param command: the sandbox's own command; default: the image's.
                :param exposed_ports: ports reachable through the sandbox proxy (``info.endpoints``).
        :param timeout: seconds until the control plane deletes the sandbox (``set_timeout``
                    moves it); ``None`` (the default) or 0: it lives until killed.
                :param request_id: makes retries idempotent: the same id returns the sandbox the first
                    attempt created (default: a new id; ``create`` retries once itself, with the same
                    id, when an attempt's answer was lost to a timeout or a broken connection). When
                    the retry's answer is lost too, the error names the sandbox that may still be
                    made (``name``, else ``sb-`` and a hash of the namespace and the request id) and
                    the request id.
                :param wait_for_daemon: wait until the in-sandbox daemon answers (needed for ``commands``,
                    ``files`` and ``pty``); if it does not within 20 s the sandbox is deleted and
                    UnavailableError raised.
                :param url: the control plane (``FSB_URL``, else the data directory's); see :mod:`fast_sandbox.config`.
                :param token: its API token (``FSB_TOKEN``, else the data directory's).
                :param token_file: a file holding the API token, read again once a minute as it is renewed
                    (a Pod's ServiceAccount token; ``FSB_TOKEN_FILE``); ``token`` comes first.
                :param proxy_url: the sandbox proxy (``FSB_PROXY_URL``, else the control plane's answer).
                :param data_dir: the embedded instance's data directory (``FSB_DATA_DIR``, else ``fsb up``'s default).
                :param request_timeout: deadline of each call, in seconds (default 60; 0: none).
                :param transport: the httpx transport to use (e.g. ``httpx.MockTransport`` in tests).
        """
        connection = _connection(url, token, proxy_url, data_dir, request_timeout, transport, token_file)
        # A create interrupted that its caller could not name (no name, no request id) is undone.
        abandoned = not name and not request_id
        # Chosen before anything is sent, so that a create whose answer is lost can name its sandbox.
        request_id = request_id or protocol.new_request_id()
        try:
            request_deadline = connection.config.request_timeout
            if not image:
                reply, _ = connection.api.unary(
                    f"{protocol.POOL_SERVICE}/GetSandboxPool", {"namespace": namespace, "name": pool}, request_timeout=request_deadline
                )
                image = str((reply.get("spec") or {}).get("image") or "")
            request = protocol.create_sandbox_request(
                namespace=namespace,
                name=name or "",
                pool=pool,
                image=image,
                envs=envs,
                cwd=cwd,
                command=command,
                exposed_ports=exposed_ports,
                labels=labels,
                timeout=timeout,
                request_id=request_id,
            )
            try:
                try:
                    reply, headers = connection.api.unary(
                        f"{protocol.SANDBOX_SERVICE}/CreateSandbox", request, request_timeout=request_deadline
                    )
                except FsbError as error:
                    # The answer was lost, maybe not the create: the same request id gets the sandbox it made.
                    if not protocol.answer_lost(error):
                        raise
                    reply, headers = connection.api.unary(
                        f"{protocol.SANDBOX_SERVICE}/CreateSandbox", request, request_timeout=request_deadline
                    )
            except FsbError as error:
                protocol.name_lost_create(error, namespace, name or "", request_id, "Sandbox.connect")
                raise
        except KeyboardInterrupt:
            if abandoned:
                # What the interrupted create may have made goes (once, at once: the interrupt is not held up).
                with contextlib.suppress(FsbError):
                    connection.api.unary(
                        f"{protocol.SANDBOX_SERVICE}/DeleteSandbox",
                        {"namespace": namespace, "name": protocol.request_sandbox_name(namespace, request_id)},
                        request_timeout=_KILL_AFTER_INTERRUPT_TIMEOUT,
                    )
            connection.close()
            raise
        except BaseException:
            connection.close()
            raise
        info = SandboxInfo.from_message(protocol.sandbox_of(reply, "CreateSandbox"))
        access_token = headers.get(protocol.ACCESS_TOKEN_RESPONSE_HEADER, "")
        connection.config.save_access_token(info.namespace, info.name, access_token)
        sandbox = cls(info, access_token, connection)
        if wait_for_daemon:
            try:
                sandbox._daemon.wait_until_ready(protocol.DAEMON_READY_TIMEOUT)
            except BaseException as error:
                # A sandbox whose daemon cannot be used is not handed out, nor left behind.
                try:
                    sandbox.kill()
                except FsbError:
                    pass  # the original error says more
                finally:
                    connection.close()
                if isinstance(error, UnavailableError):
                    raise UnavailableError(f"{error.message}; the sandbox was deleted") from error
                raise
        return sandbox

    @classmethod
    def connect(
        cls,
        name_or_id: str,
        *,
        namespace: str = "default",
        access_token: Optional[str] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        proxy_url: Optional[str] = None,
        data_dir: Optional[str] = None,
        request_timeout: Optional[float] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> Sandbox:
        """A handle of an existing sandbox, by name or by id (``sandbox_id``); NotFoundError when there is none.

        The sandbox's access token is ``access_token``, else the one kept in the embedded
        instance's data directory (by ``fsb run`` or this SDK). Without one, only the control
        plane's operations work until :meth:`rotate_access_token`.
        """
        connection = _connection(url, token, proxy_url, data_dir, request_timeout, transport, token_file)
        deadline = connection.config.request_timeout
        try:
            try:
                reply, _ = connection.api.unary(
                    f"{protocol.SANDBOX_SERVICE}/GetSandbox", {"namespace": namespace, "name": name_or_id}, request_timeout=deadline
                )
                sandbox = protocol.sandbox_of(reply, "GetSandbox")
            except NotFoundError as error:
                if not protocol.is_sandbox_id(name_or_id):
                    raise
                listed, _ = connection.api.unary(
                    f"{protocol.SANDBOX_SERVICE}/ListSandboxes", {"namespace": namespace}, request_timeout=deadline
                )
                sandbox = protocol.sandbox_with_id(listed, name_or_id, namespace, error)
        except BaseException:
            connection.close()
            raise
        info = SandboxInfo.from_message(sandbox)
        return cls(info, access_token or connection.config.saved_access_token(info.namespace, info.name), connection)

    @staticmethod
    def list(
        *,
        namespace: str = "default",
        pool: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        data_dir: Optional[str] = None,
        request_timeout: Optional[float] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> List[SandboxInfo]:
        """The sandboxes of a namespace (``"*"``: all), of one pool, with all of ``labels``."""
        connection = _connection(url, token, None, data_dir, request_timeout, transport, token_file)
        sandboxes: List[SandboxInfo] = []
        try:
            # Page by page (a server from before pages answers with every sandbox, and no token).
            page_token = ""
            while True:
                reply, _ = connection.api.unary(
                    f"{protocol.SANDBOX_SERVICE}/ListSandboxes",
                    {"namespace": namespace, "pool": pool or "", "pageSize": protocol.LIST_PAGE_SIZE, "pageToken": page_token},
                    request_timeout=connection.config.request_timeout,
                )
                sandboxes.extend(SandboxInfo.from_message(sandbox) for sandbox in reply.get("sandboxes") or [])
                next_token = reply.get("nextPageToken") or ""
                if not next_token or next_token == page_token:
                    break
                page_token = next_token
        finally:
            connection.close()
        wanted = dict(labels or {})
        return [sandbox for sandbox in sandboxes if all(sandbox.labels.get(key) == value for key, value in wanted.items())]

    # -- the handle ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def namespace(self) -> str:
        return self._info.namespace

    @property
    def sandbox_id(self) -> str:
        """The instance id the sandbox proxy routes by (``E2b-Sandbox-Id``)."""
        return self._info.sandbox_id

    @property
    def access_token(self) -> Optional[str]:
        """The sandbox proxy's ``X-Access-Token`` for this sandbox, when known."""
        return self._daemon.access_token

    @property
    def info(self) -> SandboxInfo:
        """The sandbox as last read (``get_info()`` reads it again)."""
        return self._info

    def _key(self) -> Dict[str, str]:
        return {"namespace": self.namespace, "name": self.name}

    def _get(self, request_timeout: Optional[float]) -> Message:
        reply, _ = self._connection.api.unary(
            f"{protocol.SANDBOX_SERVICE}/GetSandbox", self._key(), request_timeout=self._connection.timeout(request_timeout)
        )
        return protocol.sandbox_of(reply, "GetSandbox")

    def get_info(self, request_timeout: Optional[float] = None) -> SandboxInfo:
        self._info = SandboxInfo.from_message(self._get(request_timeout))
        return self._info

    def stats(self, request_timeout: Optional[float] = None) -> SandboxStats:
        """Its resource use now, read by its agent: CPU (over 100 ms), memory, processes, disk written."""
        reply, _ = self._connection.api.unary(
            f"{protocol.SANDBOX_SERVICE}/GetSandboxStats", self._key(), request_timeout=self._connection.timeout(request_timeout)
        )
        return SandboxStats.from_message(reply)

    def stats_history(
        self, since: Optional[datetime] = None, until: Optional[datetime] = None, request_timeout: Optional[float] = None
    ) -> List[SandboxStats]:
        """Its resource use as its agent sampled it while it ran (every 5 s by default, the last hour's
        kept), oldest first, taken within ``since``..``until`` (each optional, both included); each
        sample's ``cpu_used_millis`` is over the time since the one before."""
        reply, _ = self._connection.api.unary(
            f"{protocol.SANDBOX_SERVICE}/GetSandboxStatsHistory",
            {**self._key(), **protocol.stats_history_range(since, until)},
            request_timeout=self._connection.timeout(request_timeout),
        )
        return [SandboxStats.from_message(sample) for sample in reply.get("samples") or []]

    def is_running(self, request_timeout: Optional[float] = None) -> bool:
        """Whether its daemon answers (False once the sandbox is gone or not running)."""
        response = self._daemon.http("GET", "/health", f"GET /health of sandbox {self.name}", request_timeout)
        return protocol.health_says_running(response, self.name)

    def set_timeout(self, timeout: Optional[float], request_timeout: Optional[float] = None) -> SandboxInfo:
        """Moves the sandbox's end to ``timeout`` seconds from now (shorter or longer; more than 0); ``None``: never."""
        protocol.check_lifetime(timeout)
        for _ in range(5):
            current = self._get(request_timeout)
            try:
                reply, _ = self._connection.api.unary(
                    f"{protocol.SANDBOX_SERVICE}/UpdateSandbox",
                    protocol.spec_with_timeout(current, timeout),
                    request_timeout=self._connection.timeout(request_timeout),
                )
            except ConflictError:
                continue  # changed in between (status written by the control plane): read it again
            self._info = SandboxInfo.from_message(protocol.sandbox_of(reply, "UpdateSandbox"))
            return self._info
        raise ConflictError(f"sandbox {self.name} kept changing while its timeout was set; try again")

    def kill(self, request_timeout: Optional[float] = None) -> bool:
        """Deletes the sandbox (returns when its container is gone); False when it did not exist.
        Either way the access token kept for it in the data directory is removed."""
        try:
            self._connection.api.unary(
                f"{protocol.SANDBOX_SERVICE}/DeleteSandbox", self._key(), request_timeout=self._connection.timeout(request_timeout)
            )
        except NotFoundError:
            gone = True
        else:
            gone = False
        # Deleted now or before (it expired, say): its access token is of no use any more.
        self._connection.config.forget_access_token(self.namespace, self.name)
        return not gone

    def logs(
        self, *, follow: bool = False, tail: Optional[int] = None, timeout: Optional[float] = None, request_timeout: Optional[float] = None
    ) -> Iterator[bytes]:
        """The output (stdout and stderr) of the sandbox's own command, in chunks.

        With ``tail=N`` only the last N lines of what its log keeps (a whole number ≥ 0, as
        ``kubectl logs --tail``; ValidationError otherwise), then with ``follow`` what comes after
        them; ``None``: all of it.

        With ``follow=True`` the chunks keep coming until the command exits, or until ``timeout``
        seconds passed (the iteration then ends as at the exit; ``None`` or 0: no limit). A follow
        waits for output as long as the command runs, unless ``request_timeout`` is given: then
        TimeoutError when no output came for that long (as ``fsb logs -f``; the TypeScript SDK's
        ``requestTimeoutMs`` likewise). Waiting without one, it asks the control plane for a
        keepalive every 30 s and fails with UnavailableError after 60 s without any: the connection
        was lost. Without ``follow``, ``request_timeout`` bounds each read.
        """
        deadline = protocol.command_deadline(timeout)
        stream = self._connection.api.stream(
            f"{protocol.SANDBOX_SERVICE}/Logs",
            protocol.logs_request(self._key(), follow, tail),
            request_timeout=self._connection.timeout(request_timeout),
            timeout=deadline,
            **protocol.logs_stream_options(follow, request_timeout),
        )
        try:
            for message in stream:
                data = protocol.decode_bytes(message.get("data"))
                if data:  # an empty one is a keepalive (logs_keepalives)
                    yield data
        except TimeoutError as error:
            if not protocol.logs_deadline_passed(follow, deadline, error):
                raise

    def rotate_access_token(self, request_timeout: Optional[float] = None) -> str:
        """Gives the sandbox a new access token and uses it; the previous one stops working."""
        reply, _ = self._connection.api.unary(
            f"{protocol.SANDBOX_SERVICE}/RotateAccessToken", self._key(), request_timeout=self._connection.timeout(request_timeout)
        )
        access_token = str(reply.get("accessToken", ""))
        self._daemon.access_token = access_token
        self._connection.config.save_access_token(self.namespace, self.name, access_token)
        return access_token

    def close(self) -> None:
        """Closes the handle's connections (the sandbox keeps running)."""
        self._connection.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.kill()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"Sandbox(name={self.name!r}, namespace={self.namespace!r}, sandbox_id={self.sandbox_id!r})"
