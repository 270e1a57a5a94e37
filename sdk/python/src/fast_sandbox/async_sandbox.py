"""The asyncio client: :class:`AsyncSandbox` and its sub-modules, the same API as
:mod:`fast_sandbox.sandbox` with ``await``. Callbacks may be plain functions or coroutines."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from datetime import datetime
from typing import (
    IO,
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Set,
    TypeVar,
    Union,
    overload,
)

import httpx

from . import _protocol as protocol
from ._connect import AsyncConnectClient, AsyncServerStream, HttpClients, Message
from ._instance import FollowsItsInstance
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

T = TypeVar("T")
#: A callback: a function or a coroutine function of one argument.
Handler = Callable[[T], Optional[Awaitable[None]]]
OutputHandler = Handler[str]
PtyHandler = Handler[bytes]


async def _call(handler: Callable[[Any], Union[Awaitable[None], None]], value: Any) -> None:
    result = handler(value)
    if inspect.isawaitable(result):
        await result


async def _file_chunks(file: IO[bytes]) -> AsyncIterator[bytes]:
    """:func:`fast_sandbox._protocol.file_chunks`, each chunk read in a worker thread."""
    chunks = protocol.file_chunks(file)
    loop = asyncio.get_running_loop()
    while True:
        chunk = await loop.run_in_executor(None, next, chunks, None)
        if chunk is None:
            return
        yield chunk


class _AsyncConnection:
    """The HTTP clients for the control plane and the sandbox proxy (one for loopback URLs, one for
    others: :func:`fast_sandbox._connect.http_client`), with its settings."""

    def __init__(self, config: ConnectionConfig, transport: Optional[httpx.AsyncBaseTransport]) -> None:
        self.config = config
        self._clients = HttpClients(httpx.AsyncClient, transport)
        self.api = AsyncConnectClient(
            self.client(config.url),
            config.url,
            # Made at each call: a token file's token is read again as it is renewed.
            lambda: protocol.api_headers(config.current_token()),
            server="the control plane",
            unreachable_hint=protocol.CONTROL_PLANE_UNREACHABLE,
        )
        self._proxy_url = config.proxy_url

    async def proxy_url(self) -> str:
        """The sandbox proxy's base URL: configured, else asked of the control plane once."""
        if self._proxy_url is None:
            reply, _ = await self.api.unary(f"{protocol.SANDBOX_SERVICE}/GetSandboxProxy", {}, request_timeout=self.config.request_timeout)
            self._proxy_url = protocol.proxy_url_of(reply)
        return self._proxy_url

    def client(self, url: str) -> httpx.AsyncClient:
        """The HTTP client for calls to ``url``."""
        client: httpx.AsyncClient = self._clients.for_url(url)
        return client

    def timeout(self, request_timeout: Optional[float]) -> Optional[float]:
        """A call's deadline: its own ``request_timeout``, else the handle's; 0 means none."""
        return protocol.request_deadline(request_timeout, self.config.request_timeout)

    async def aclose(self) -> None:
        for client in self._clients.all():
            await client.aclose()


def _connection(
    url: Optional[str],
    token: Optional[str],
    proxy_url: Optional[str],
    data_dir: Optional[str],
    request_timeout: Optional[float],
    transport: Optional[httpx.AsyncBaseTransport],
    token_file: Optional[str] = None,
) -> _AsyncConnection:
    deadline = protocol.request_deadline(request_timeout, DEFAULT_REQUEST_TIMEOUT)
    return _AsyncConnection(ConnectionConfig.resolve(url, token, proxy_url, data_dir, deadline, token_file), transport)


#: How long after a cancelled create's first delete found nothing it is deleted once more (seconds).
ABANDONED_CREATE_RECHECK = 1.0

#: The undo tasks still running: a task only the event loop refers to may be collected before it ends.
_undoing: Set[asyncio.Task[None]] = set()


def _undo_abandoned_create(connection: _AsyncConnection, namespace: str, name: str) -> None:
    """Deletes, in a task of its own that takes the connection over, what a cancelled create its
    caller could not name may still make: now, and once more a moment later when the first delete
    found nothing (the create may not have been stored yet), as the TypeScript SDK does. Best effort."""

    async def undo() -> None:
        try:
            for wait in (0.0, ABANDONED_CREATE_RECHECK):
                await asyncio.sleep(wait)
                try:
                    await connection.api.unary(
                        f"{protocol.SANDBOX_SERVICE}/DeleteSandbox",
                        {"namespace": namespace, "name": name},
                        request_timeout=connection.config.request_timeout,
                    )
                    return
                except NotFoundError:
                    continue
                except FsbError:
                    return
        finally:
            await connection.aclose()

    task = asyncio.get_running_loop().create_task(undo())
    _undoing.add(task)
    task.add_done_callback(_undoing.discard)


class _AsyncDaemon:
    """Calls to one sandbox's daemon through the sandbox proxy."""

    def __init__(
        self,
        connection: _AsyncConnection,
        sandbox_id: str,
        access_token: Optional[str],
        name: str,
        phase: str,
        namespace: str = "default",
    ) -> None:
        self.connection = connection
        self.sandbox_id = sandbox_id
        #: Its phase as last read (a sandbox without an instance has no daemon to call).
        self.phase = phase
        self.name = name
        self.namespace = namespace
        self.access_token = access_token
        self._rpc: Optional[AsyncConnectClient] = None

    async def rpc(self) -> AsyncConnectClient:
        if self._rpc is None:
            proxy_url = await self.connection.proxy_url()
            self._rpc = AsyncConnectClient(
                self.connection.client(proxy_url),
                proxy_url,
                server="the sandbox proxy",
                unreachable_hint=protocol.PROXY_UNREACHABLE,
            )
        return self._rpc

    def headers(self, user: Optional[str] = None) -> Dict[str, str]:
        if not self.access_token:
            raise protocol.missing_access_token(self.name, "AsyncSandbox.connect")
        if not self.sandbox_id:
            raise protocol.no_instance(self.name, self.phase)
        return {**protocol.daemon_headers(self.sandbox_id, self.access_token), **protocol.user_header(user)}

    def describe(self, what: str) -> str:
        """``what`` (e.g. ``listing /tmp``) in this sandbox, for messages; once."""
        where = f" in sandbox {self.name}"
        return what if what.endswith(where) else f"{what}{where}"

    async def translate(self, error: FsbError, what: str) -> FsbError:
        """A failed call's error; see :meth:`fast_sandbox.sandbox._Daemon.translate` (a handle whose
        instance was replaced is told so, after one look-up of the sandbox by name)."""
        context = self.describe(what)
        error = add_context(error, context)
        if not is_sandbox_gone(error) or not self.sandbox_id:
            return error
        try:
            reply, _ = await self.connection.api.unary(
                f"{protocol.SANDBOX_SERVICE}/GetSandbox",
                {"namespace": self.namespace, "name": self.name},
                request_timeout=self.connection.timeout(None),
            )
            current = protocol.instance_of(protocol.sandbox_of(reply, "GetSandbox"))
        except FsbError:
            return error  # deleted (or not to be told now): gone it is
        if not current or current == self.sandbox_id:
            return error
        replaced = protocol.instance_replaced(
            context, self.name, self.sandbox_id, current, "await sandbox.get_info()", "AsyncSandbox.connect"
        )
        replaced.__cause__ = error
        return replaced

    async def check(self, response: httpx.Response, what: str) -> httpx.Response:
        """A plain HTTP answer of the daemon (``/files``) that must be 200; its error (:meth:`translate`) otherwise."""
        if response.status_code != 200:
            raise await self.translate(error_from_http(response, self.describe(what)), what)
        return response

    async def unary(
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
            headers = self.headers(user)
            reply, _ = await (await self.rpc()).unary(f"{service}/{method}", message, request_timeout=deadline, headers=headers)
        except FsbError as error:
            raise await self.translate(error, what) from None
        return reply

    async def stream(
        self,
        service: str,
        method: str,
        message: Mapping[str, Any],
        what: str,
        *,
        timeout: Optional[float],
        request_timeout: Optional[float],
        user: Optional[str] = None,
    ) -> AsyncServerStream:
        """Opens a server stream; ``what`` starts the message of errors answered at once."""
        deadline = self.connection.timeout(request_timeout)  # a bad request_timeout is refused as it is
        try:
            headers = {**self.headers(user), **protocol.stream_headers()}
            return await (await self.rpc()).stream(
                f"{service}/{method}",
                message,
                request_timeout=deadline,
                timeout=timeout,
                silence_timeout=protocol.STREAM_SILENCE_TIMEOUT,
                start_timeout=deadline,
                headers=headers,
            )
        except FsbError as error:
            raise await self.translate(error, what) from None

    async def http(
        self,
        method: str,
        path: str,
        what: str,
        request_timeout: Optional[float],
        *,
        user: Optional[str] = None,
        params: Optional[Mapping[str, str]] = None,
        content: Union[bytes, AsyncIterator[bytes], None] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> httpx.Response:
        """A plain HTTP request to the daemon (``/files``, ``/health``)."""
        headers = {**self.headers(user), **(headers or {})}
        proxy_url = await self.connection.proxy_url()
        try:
            return await self.connection.client(proxy_url).request(
                method,
                f"{proxy_url}{path}",
                params=params,
                content=content,
                headers=headers,
                timeout=self.connection.timeout(request_timeout),
            )
        except Exception as error:
            raise error_from_transport(error, f"{what}: the sandbox proxy at {proxy_url}", protocol.PROXY_UNREACHABLE) from error

    async def wait_until_ready(self, timeout: float) -> None:
        """Polls ``GET /health`` until the daemon answers 204; a poll that gets no answer in time is
        "not ready yet" (see :func:`fast_sandbox._protocol.health_poll_timeout`)."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            poll_timeout = protocol.health_poll_timeout(self.connection.timeout(None), deadline - time.monotonic())
            try:
                response = await self.http("GET", "/health", f"waiting for the daemon of sandbox {self.name}", poll_timeout)
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
            await asyncio.sleep(protocol.DAEMON_POLL_INTERVAL)


class AsyncCommandHandle:
    """A running command (or terminal): wait for it, kill it, write to its stdin.

    A background command's output is read as it arrives by a task of its own, which calls the
    ``on_stdout``/``on_stderr``/``on_data`` callbacks.
    """

    def __init__(
        self,
        pid: int,
        events: protocol.ProcessEvents,
        stream: AsyncServerStream,
        messages: AsyncIterator[Message],
        commands: AsyncCommands,
        handlers: Mapping[str, Optional[Callable[[Any], Union[Awaitable[None], None]]]],
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
        self._reader: Optional[asyncio.Task[None]] = None
        self._consumed = False
        if background:
            self._reader = asyncio.get_running_loop().create_task(self._read())

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

    async def _read(self) -> None:
        try:
            async for message in self._messages:
                for kind, output in self._events.accept(message):
                    handler = self._handlers.get(kind)
                    if handler is not None:
                        await _call(handler, output)
                if self._events.end is not None:
                    # The end envelope and the body's end follow: read them, so the connection is used again.
                    await self._stream.finish(self._messages)
                    break
        except asyncio.CancelledError:
            if not self._disconnected:
                raise
        except Exception as error:  # raised again by wait()
            self._failure = error
        finally:
            self._consumed = True
            await self._stream.aclose()

    async def wait(self, timeout: Optional[float] = None) -> CommandResult:
        """Waits until the command ends; its result, or CommandExitError for a non-zero exit code.

        ``timeout`` (seconds) bounds only this wait: TimeoutError leaves the command running.
        """
        if self._reader is None:
            if not self._consumed:
                await self._read()
        else:
            try:
                # shield: a wait that times out must not cancel the reader.
                await asyncio.wait_for(asyncio.shield(self._reader), timeout)
            except asyncio.TimeoutError:
                raise self._events.still_running(timeout) from None
            except asyncio.CancelledError:
                if not self._disconnected:
                    raise
        if self._disconnected and self._events.end is None:
            # The caller's own doing, as a closed handle is: not the sandbox being unreachable.
            raise self._events.disconnected()
        if self._failure is not None:
            raise self._events.failure(self._failure)
        return self._events.result()

    async def kill(self, request_timeout: Optional[float] = None) -> bool:
        """Kills the command (SIGKILL); False when it had already ended."""
        return await self._commands.kill(self._pid, request_timeout=request_timeout)

    async def send_stdin(self, data: Union[str, bytes], request_timeout: Optional[float] = None) -> None:
        """Writes to the command's stdin (it must have been started with ``stdin=True``)."""
        await self._commands.send_stdin(self._pid, data, request_timeout=request_timeout)

    async def close_stdin(self, request_timeout: Optional[float] = None) -> None:
        """Closes the command's stdin: it reads end-of-file."""
        await self._commands.close_stdin(self._pid, request_timeout=request_timeout)

    async def disconnect(self) -> None:
        """Stops receiving the command's output; the command goes on (``commands.connect(pid)``)."""
        self._disconnected = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._stream.aclose()


#: How long a cancelled run waits for its command's pid and for its kill (seconds), as TypeScript's.
_KILL_AFTER_CANCEL_TIMEOUT = 2.0


async def _kill_given_up(handle: AsyncCommandHandle) -> None:
    """Kills the command of a run its caller cancelled and stops following it; a kill that fails
    changes nothing of why the run ended."""
    try:
        with contextlib.suppress(Exception):
            await handle.kill(request_timeout=_KILL_AFTER_CANCEL_TIMEOUT)
    finally:  # also when cancelled again meanwhile: the stream is not left open
        with contextlib.suppress(Exception):
            await handle.disconnect()


class AsyncCommands:
    """Runs commands in the sandbox through its daemon (``sandbox.commands``)."""

    def __init__(self, daemon: _AsyncDaemon) -> None:
        self._daemon = daemon

    @overload
    async def run(
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
    async def run(
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
    ) -> AsyncCommandHandle: ...

    async def run(
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
    ) -> Union[CommandResult, AsyncCommandHandle]:
        """Runs a command (a string with ``/bin/bash -l -c``, or a program and its arguments); see
        :meth:`fast_sandbox.Commands.run`. A run that is cancelled (``asyncio.wait_for``,
        ``asyncio.timeout``, a task's ``cancel()``) kills its command, as an aborted run of the
        TypeScript SDK does — also while it starts, once its pid comes (within a couple of seconds);
        in the background, a cancelled start kills it too."""
        handle = await self._start(
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
            return await handle.wait()
        except asyncio.CancelledError:
            if handle.exit_code is None:
                await _kill_given_up(handle)
            raise

    async def _start(
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
        handlers: Mapping[str, Optional[Callable[[Any], Union[Awaitable[None], None]]]],
        background: bool,
    ) -> AsyncCommandHandle:
        deadline = protocol.command_deadline(timeout)
        opening = f"starting {what}"

        async def start() -> AsyncCommandHandle:
            stream = await self._daemon.stream(
                protocol.PROCESS_SERVICE,
                "Start",
                protocol.start_request(argv, envs=envs, cwd=cwd, stdin=stdin, pty=pty, tag=tag),
                opening,
                timeout=deadline,
                request_timeout=request_timeout,
                user=user,
            )
            return await self._handle(stream, what, opening, handlers, deadline, background, kills_at_deadline=True)

        # The way to the daemon first (the sandbox proxy's address, asked of the control plane once):
        # a cancellation until then sends nothing. From then on the start is shielded: cancelled
        # once its request may have reached the daemon, it goes on until the pid comes (only the
        # start event names it), so that the process is killed, not left running unknown to anyone.
        try:
            await self._daemon.rpc()
        except FsbError as error:
            raise await self._daemon.translate(error, opening) from None
        starting = asyncio.ensure_future(start())
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            try:
                handle = await asyncio.wait_for(starting, _KILL_AFTER_CANCEL_TIMEOUT)
            except Exception:  # it failed, or did not start in time (wait_for cancelled it): nothing to kill
                raise asyncio.CancelledError() from None
            await _kill_given_up(handle)
            raise

    async def _handle(
        self,
        stream: AsyncServerStream,
        what: str,
        opening: str,
        handlers: Mapping[str, Optional[Callable[[Any], Union[Awaitable[None], None]]]],
        timeout: Optional[float],
        background: bool,
        *,
        kills_at_deadline: bool,
    ) -> AsyncCommandHandle:
        """The handle of a process stream once its first message came; see :meth:`fast_sandbox.sandbox.Commands._handle`."""
        events = protocol.ProcessEvents(what, self._daemon.describe(what), timeout, kills_at_deadline=kills_at_deadline)
        messages = stream.__aiter__()
        try:
            try:
                first = await messages.__anext__()
            except StopAsyncIteration:
                raise UnavailableError(
                    f"{self._daemon.describe(opening)}: the daemon closed the stream before the process started"
                ) from None
            except FsbError as error:
                # The daemon's refusal, e.g. a program or a cwd that does not exist, or no such process.
                raise await self._daemon.translate(error, opening) from None
            pid = events.accept_start(first)
        except BaseException:
            await stream.aclose()
            raise
        return AsyncCommandHandle(pid, events, stream, messages, self, handlers, background)

    async def connect(
        self,
        pid: int,
        *,
        on_stdout: Optional[OutputHandler] = None,
        on_stderr: Optional[OutputHandler] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
    ) -> AsyncCommandHandle:
        """Follows a running process (its output from now on; ``timeout``: how long to follow it, after
        which waiting raises TimeoutError and the process keeps running); NotFoundError when there is none."""
        deadline = protocol.command_deadline(timeout)
        opening = f"following process {pid}"
        stream = await self._daemon.stream(
            protocol.PROCESS_SERVICE,
            "Connect",
            protocol.selector(pid),
            opening,
            timeout=deadline,
            request_timeout=request_timeout,
        )
        handlers = {"stdout": on_stdout, "stderr": on_stderr}
        # Connect ends only the stream at its deadline: the process goes on.
        return await self._handle(stream, f"process {pid}", opening, handlers, deadline, True, kills_at_deadline=False)

    async def list(self, request_timeout: Optional[float] = None) -> List[ProcessInfo]:
        """The processes the daemon runs for commands and terminals."""
        reply = await self._daemon.unary(protocol.PROCESS_SERVICE, "List", {}, "listing processes", request_timeout)
        return [ProcessInfo.from_message(process) for process in reply.get("processes") or []]

    async def kill(self, pid: int, request_timeout: Optional[float] = None) -> bool:
        """Kills the process (SIGKILL); False when there is no such process."""
        message = {**protocol.selector(pid), "signal": "SIGNAL_SIGKILL"}
        try:
            await self._daemon.unary(protocol.PROCESS_SERVICE, "SendSignal", message, f"killing process {pid}", request_timeout)
        except NotFoundError as error:
            # The daemon's "no such process"; the sandbox itself gone is an error (as in the TypeScript SDK).
            if is_sandbox_gone(error):
                raise
            return False
        return True

    async def send_stdin(self, pid: int, data: Union[str, bytes], request_timeout: Optional[float] = None) -> None:
        """Writes to the stdin of a process started with ``stdin=True``."""
        message = {**protocol.selector(pid), "input": {"stdin": protocol.encode_bytes(data)}}
        await self._daemon.unary(protocol.PROCESS_SERVICE, "SendInput", message, f"writing to the stdin of process {pid}", request_timeout)

    async def close_stdin(self, pid: int, request_timeout: Optional[float] = None) -> None:
        """Closes the stdin of a process started with ``stdin=True``: it reads end-of-file."""
        await self._daemon.unary(
            protocol.PROCESS_SERVICE, "CloseStdin", protocol.selector(pid), f"closing the stdin of process {pid}", request_timeout
        )


class AsyncPty:
    """Interactive terminals in the sandbox (``sandbox.pty``)."""

    def __init__(self, commands: AsyncCommands) -> None:
        self._commands = commands

    async def create(
        self,
        size: PtySize = protocol.DEFAULT_PTY_SIZE,
        *,
        on_data: Optional[PtyHandler] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        envs: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
    ) -> AsyncCommandHandle:
        """Starts ``bash -i -l`` on a terminal of ``size``; see :meth:`fast_sandbox.Pty.create`."""
        protocol.check_pty_size(size)
        return await self._commands._start(
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

    async def send_input(self, pid: int, data: Union[str, bytes], request_timeout: Optional[float] = None) -> None:
        """Types into the terminal."""
        message = {**protocol.selector(pid), "input": {"pty": protocol.encode_bytes(data)}}
        await self._commands._daemon.unary(protocol.PROCESS_SERVICE, "SendInput", message, f"typing into terminal {pid}", request_timeout)

    async def resize(self, pid: int, size: PtySize, request_timeout: Optional[float] = None) -> None:
        protocol.check_pty_size(size)
        message = {**protocol.selector(pid), "pty": {"size": {"rows": size.rows, "cols": size.cols}}}
        await self._commands._daemon.unary(protocol.PROCESS_SERVICE, "Update", message, f"resizing terminal {pid}", request_timeout)

    async def kill(self, pid: int, request_timeout: Optional[float] = None) -> bool:
        """Kills the terminal's shell (SIGKILL); False when there is no such process."""
        return await self._commands.kill(pid, request_timeout=request_timeout)


class AsyncWatchHandle:
    """A directory being watched: its events go to ``on_event`` as they happen until :meth:`stop`."""

    def __init__(
        self,
        stream: AsyncServerStream,
        messages: AsyncIterator[Message],
        on_event: Handler[FilesystemEvent],
        path: str,
        context: str = "",
    ) -> None:
        self.path = path
        #: What the watch is, for the messages of its failure: ``watching /tmp in sandbox sb-1``.
        self._context = context
        self._stream = stream
        self._messages = messages
        self._on_event = on_event
        self._failure: Optional[BaseException] = None
        self._stopped = False
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self._messages:
                event = message.get("filesystem")
                if isinstance(event, dict):
                    await _call(self._on_event, FilesystemEvent.from_message(event))
        except asyncio.CancelledError:
            if not self._stopped:
                raise
        except Exception as error:
            self._failure = add_context(error, self._context) if isinstance(error, FsbError) and self._context else error
        finally:
            await self._stream.aclose()

    @property
    def failure(self) -> Optional[BaseException]:
        """Why the watch ended by itself (the sandbox went away, a callback raised), if it did."""
        return self._failure

    async def stop(self) -> None:
        self._stopped = True
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        # A reader cancelled before it ever ran never got to close the stream (its finally).
        await self._stream.aclose()

    async def __aenter__(self) -> AsyncWatchHandle:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class AsyncFiles:
    """The sandbox's filesystem through its daemon (``sandbox.files``). Relative paths are the user's home's."""

    def __init__(self, daemon: _AsyncDaemon) -> None:
        self._daemon = daemon

    @overload
    async def read(
        self,
        path: protocol.SandboxPath,
        *,
        format: Literal["text"] = "text",
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> str: ...

    @overload
    async def read(
        self, path: protocol.SandboxPath, *, format: Literal["bytes"], user: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> bytes: ...

    async def read(
        self,
        path: protocol.SandboxPath,
        *,
        format: Literal["text", "bytes"] = "text",
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Union[str, bytes]:
        """The file's content, as UTF-8 text or (``format="bytes"``) bytes; paths as :meth:`fast_sandbox.Files.read` takes them."""
        protocol.check_read_format(format)
        path = protocol.sandbox_path(path)
        what = self._daemon.describe(f"reading {path}")
        response = await self._daemon.http("GET", "/files", what, request_timeout, params=protocol.file_params(path), user=user)
        await self._daemon.check(response, what)
        return response.content if format == "bytes" else response.content.decode("utf-8", errors="replace")

    async def write(
        self,
        path: protocol.SandboxPath,
        data: protocol.FileData,
        *,
        user: Optional[str] = None,
        mode: Optional[int] = None,
        request_timeout: Optional[float] = None,
    ) -> WriteInfo:
        """Writes the file (replacing it; missing parent directories are made); ``data`` as
        :meth:`fast_sandbox.Files.write` takes them (``mode`` too). A file object is read in chunks off the event loop
        (a pipe's reads block), each sent as it is read."""
        path = protocol.sandbox_path(path)
        params = protocol.file_params(path, mode=mode)
        body = protocol.file_body(data)
        content = body if isinstance(body, bytes) else _file_chunks(body)
        what = self._daemon.describe(f"writing {path}")
        response = await self._daemon.http(
            "POST",
            "/files",
            what,
            request_timeout,
            params=params,
            user=user,
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )
        return protocol.write_info_of(await self._daemon.check(response, what), path, what)

    async def list(
        self, path: protocol.SandboxPath, *, depth: int = 1, user: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> List[EntryInfo]:
        """The entries of a directory, ``depth`` levels down."""
        path = protocol.sandbox_path(path)
        reply = await self._daemon.unary(
            protocol.FILESYSTEM_SERVICE, "ListDir", protocol.list_dir_request(path, depth), f"listing {path}", request_timeout, user
        )
        return [EntryInfo.from_message(entry) for entry in reply.get("entries") or []]

    async def get_info(
        self, path: protocol.SandboxPath, *, user: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> EntryInfo:
        path = protocol.sandbox_path(path)
        reply = await self._daemon.unary(
            protocol.FILESYSTEM_SERVICE, "Stat", {"path": path}, f"reading the details of {path}", request_timeout, user
        )
        return EntryInfo.from_message(reply.get("entry") or {})

    async def exists(self, path: protocol.SandboxPath, *, user: Optional[str] = None, request_timeout: Optional[float] = None) -> bool:
        try:
            await self.get_info(path, user=user, request_timeout=request_timeout)
        except NotFoundError as error:
            # The daemon's "no such file"; the sandbox itself gone is an error (as in the TypeScript SDK).
            if is_sandbox_gone(error):
                raise
            return False
        return True

    async def make_dir(self, path: protocol.SandboxPath, *, user: Optional[str] = None, request_timeout: Optional[float] = None) -> bool:
        """Makes the directory and its parents; False when it already existed."""
        path = protocol.sandbox_path(path)
        try:
            await self._daemon.unary(
                protocol.FILESYSTEM_SERVICE, "MakeDir", {"path": path}, f"making directory {path}", request_timeout, user
            )
        except AlreadyExistsError:
            return False
        return True

    async def remove(self, path: protocol.SandboxPath, *, user: Optional[str] = None, request_timeout: Optional[float] = None) -> None:
        """Removes a file or a directory with its contents; removing what is not there succeeds."""
        path = protocol.sandbox_path(path)
        await self._daemon.unary(protocol.FILESYSTEM_SERVICE, "Remove", {"path": path}, f"removing {path}", request_timeout, user)

    async def rename(
        self,
        old_path: protocol.SandboxPath,
        new_path: protocol.SandboxPath,
        *,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> EntryInfo:
        old_path, new_path = protocol.sandbox_path(old_path, "old_path"), protocol.sandbox_path(new_path, "new_path")
        message = {"source": old_path, "destination": new_path}
        reply = await self._daemon.unary(protocol.FILESYSTEM_SERVICE, "Move", message, f"renaming {old_path}", request_timeout, user)
        return EntryInfo.from_message(reply.get("entry") or {})

    async def watch_dir(
        self,
        path: protocol.SandboxPath,
        on_event: Handler[FilesystemEvent],
        *,
        recursive: bool = False,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
    ) -> AsyncWatchHandle:
        """Watches a directory: ``on_event`` gets its changes as they happen (from a task) until
        :meth:`AsyncWatchHandle.stop`, or ``timeout`` seconds. Returns once the watch is in place."""
        path = protocol.sandbox_path(path)
        what = f"watching {path}"
        stream = await self._daemon.stream(
            protocol.FILESYSTEM_SERVICE,
            "WatchDir",
            {"path": path, "recursive": recursive},
            what,
            timeout=protocol.command_deadline(timeout),
            request_timeout=request_timeout,
            user=user,
        )
        context = self._daemon.describe(what)
        messages = stream.__aiter__()
        try:
            try:
                first = await messages.__anext__()
            except StopAsyncIteration:
                raise UnavailableError(f"{context}: the daemon closed the stream before the watch began") from None
            except FsbError as error:
                # The daemon's refusal, e.g. a directory that does not exist.
                raise await self._daemon.translate(error, what) from None
            if "start" not in first:
                raise FsbError("internal", f"{context}: the daemon's first message is not the watch's start: {first}")
        except BaseException:
            await stream.aclose()
            raise
        return AsyncWatchHandle(stream, messages, on_event, path, context)


class AsyncSandbox(FollowsItsInstance):
    """A sandbox, for asyncio: see :class:`fast_sandbox.Sandbox`. ``async with`` kills it on exit."""

    def __init__(self, info: SandboxInfo, access_token: Optional[str], connection: _AsyncConnection) -> None:
        self._info = info
        self._connection = connection
        self._daemon = _AsyncDaemon(connection, info.sandbox_id, access_token, info.name, info.phase, info.namespace)
        self.commands = AsyncCommands(self._daemon)
        self.files = AsyncFiles(self._daemon)
        self.pty = AsyncPty(self.commands)

    @classmethod
    async def create(
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
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> AsyncSandbox:
        """Creates a sandbox and returns once its daemon answers; see :meth:`fast_sandbox.Sandbox.create`."""
        connection = _connection(url, token, proxy_url, data_dir, request_timeout, transport, token_file)
        # A create cancelled that its caller could not name (no name, no request id) is undone.
        abandoned = not name and not request_id
        # Chosen before anything is sent, so that a create whose answer is lost can name its sandbox.
        request_id = request_id or protocol.new_request_id()
        try:
            request_deadline = connection.config.request_timeout
            if not image:
                reply, _ = await connection.api.unary(
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
                    reply, headers = await connection.api.unary(
                        f"{protocol.SANDBOX_SERVICE}/CreateSandbox", request, request_timeout=request_deadline
                    )
                except FsbError as error:
                    # The answer was lost, maybe not the create: the same request id gets the sandbox it made.
                    if not protocol.answer_lost(error):
                        raise
                    reply, headers = await connection.api.unary(
                        f"{protocol.SANDBOX_SERVICE}/CreateSandbox", request, request_timeout=request_deadline
                    )
            except FsbError as error:
                protocol.name_lost_create(error, namespace, name or "", request_id, "AsyncSandbox.connect")
                raise
        except asyncio.CancelledError:
            if abandoned:
                _undo_abandoned_create(connection, namespace, protocol.request_sandbox_name(namespace, request_id))
            else:
                await connection.aclose()
            raise
        except BaseException:
            await connection.aclose()
            raise
        info = SandboxInfo.from_message(protocol.sandbox_of(reply, "CreateSandbox"))
        access_token = headers.get(protocol.ACCESS_TOKEN_RESPONSE_HEADER, "")
        connection.config.save_access_token(info.namespace, info.name, access_token)
        sandbox = cls(info, access_token, connection)
        if wait_for_daemon:
            try:
                await sandbox._daemon.wait_until_ready(protocol.DAEMON_READY_TIMEOUT)
            except BaseException as error:
                # A sandbox whose daemon cannot be used is not handed out, nor left behind.
                try:
                    await sandbox.kill()
                except FsbError:
                    pass  # the original error says more
                finally:
                    await connection.aclose()
                if isinstance(error, UnavailableError):
                    raise UnavailableError(f"{error.message}; the sandbox was deleted") from error
                raise
        return sandbox

    @classmethod
    async def connect(
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
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> AsyncSandbox:
        """A handle of an existing sandbox; see :meth:`fast_sandbox.Sandbox.connect`."""
        connection = _connection(url, token, proxy_url, data_dir, request_timeout, transport, token_file)
        deadline = connection.config.request_timeout
        try:
            try:
                reply, _ = await connection.api.unary(
                    f"{protocol.SANDBOX_SERVICE}/GetSandbox", {"namespace": namespace, "name": name_or_id}, request_timeout=deadline
                )
                sandbox = protocol.sandbox_of(reply, "GetSandbox")
            except NotFoundError as error:
                if not protocol.is_sandbox_id(name_or_id):
                    raise
                listed, _ = await connection.api.unary(
                    f"{protocol.SANDBOX_SERVICE}/ListSandboxes", {"namespace": namespace}, request_timeout=deadline
                )
                sandbox = protocol.sandbox_with_id(listed, name_or_id, namespace, error)
        except BaseException:
            await connection.aclose()
            raise
        info = SandboxInfo.from_message(sandbox)
        return cls(info, access_token or connection.config.saved_access_token(info.namespace, info.name), connection)

    @staticmethod
    async def list(
        *,
        namespace: str = "default",
        pool: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        data_dir: Optional[str] = None,
        request_timeout: Optional[float] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> List[SandboxInfo]:
        """The sandboxes of a namespace (``"*"``: all), of one pool, with all of ``labels``."""
        connection = _connection(url, token, None, data_dir, request_timeout, transport, token_file)
        sandboxes: List[SandboxInfo] = []
        try:
            # Page by page (a server from before pages answers with every sandbox, and no token).
            page_token = ""
            while True:
                reply, _ = await connection.api.unary(
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
            await connection.aclose()
        wanted = dict(labels or {})
        return [sandbox for sandbox in sandboxes if all(sandbox.labels.get(key) == value for key, value in wanted.items())]

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

    async def _get(self, request_timeout: Optional[float]) -> Message:
        reply, _ = await self._connection.api.unary(
            f"{protocol.SANDBOX_SERVICE}/GetSandbox", self._key(), request_timeout=self._connection.timeout(request_timeout)
        )
        return protocol.sandbox_of(reply, "GetSandbox")

    async def get_info(self, request_timeout: Optional[float] = None) -> SandboxInfo:
        self._info = SandboxInfo.from_message(await self._get(request_timeout))
        return self._info

    async def stats(self, request_timeout: Optional[float] = None) -> SandboxStats:
        """Its resource use now, read by its agent: CPU (over 100 ms), memory, processes, disk written."""
        reply, _ = await self._connection.api.unary(
            f"{protocol.SANDBOX_SERVICE}/GetSandboxStats", self._key(), request_timeout=self._connection.timeout(request_timeout)
        )
        return SandboxStats.from_message(reply)

    async def stats_history(
        self, since: Optional[datetime] = None, until: Optional[datetime] = None, request_timeout: Optional[float] = None
    ) -> List[SandboxStats]:
        """Its resource use as its agent sampled it while it ran (every 5 s by default, the last hour's
        kept), oldest first, taken within ``since``..``until`` (each optional, both included); each
        sample's ``cpu_used_millis`` is over the time since the one before."""
        reply, _ = await self._connection.api.unary(
            f"{protocol.SANDBOX_SERVICE}/GetSandboxStatsHistory",
            {**self._key(), **protocol.stats_history_range(since, until)},
            request_timeout=self._connection.timeout(request_timeout),
        )
        return [SandboxStats.from_message(sample) for sample in reply.get("samples") or []]

    async def is_running(self, request_timeout: Optional[float] = None) -> bool:
        """Whether its daemon answers (False once the sandbox is gone or not running)."""
        response = await self._daemon.http("GET", "/health", f"GET /health of sandbox {self.name}", request_timeout)
        return protocol.health_says_running(response, self.name)

    async def set_timeout(self, timeout: Optional[float], request_timeout: Optional[float] = None) -> SandboxInfo:
        """Moves the sandbox's end to ``timeout`` seconds from now (shorter or longer; more than 0); ``None``: never."""
        protocol.check_lifetime(timeout)
        for _ in range(5):
            current = await self._get(request_timeout)
            try:
                reply, _ = await self._connection.api.unary(
                    f"{protocol.SANDBOX_SERVICE}/UpdateSandbox",
                    protocol.spec_with_timeout(current, timeout),
                    request_timeout=self._connection.timeout(request_timeout),
                )
            except ConflictError:
                continue  # changed in between (status written by the control plane): read it again
            self._info = SandboxInfo.from_message(protocol.sandbox_of(reply, "UpdateSandbox"))
            return self._info
        raise ConflictError(f"sandbox {self.name} kept changing while its timeout was set; try again")

    async def kill(self, request_timeout: Optional[float] = None) -> bool:
        """Deletes the sandbox (returns when its container is gone); False when it did not exist.
        Either way the access token kept for it in the data directory is removed."""
        try:
            await self._connection.api.unary(
                f"{protocol.SANDBOX_SERVICE}/DeleteSandbox", self._key(), request_timeout=self._connection.timeout(request_timeout)
            )
        except NotFoundError:
            gone = True
        else:
            gone = False
        # Deleted now or before (it expired, say): its access token is of no use any more.
        self._connection.config.forget_access_token(self.namespace, self.name)
        return not gone

    async def logs(
        self, *, follow: bool = False, tail: Optional[int] = None, timeout: Optional[float] = None, request_timeout: Optional[float] = None
    ) -> AsyncIterator[bytes]:
        """The output (stdout and stderr) of the sandbox's own command, in chunks; see :meth:`fast_sandbox.Sandbox.logs`."""
        deadline = protocol.command_deadline(timeout)
        stream = await self._connection.api.stream(
            f"{protocol.SANDBOX_SERVICE}/Logs",
            protocol.logs_request(self._key(), follow, tail),
            request_timeout=self._connection.timeout(request_timeout),
            timeout=deadline,
            **protocol.logs_stream_options(follow, request_timeout),
        )
        try:
            async for message in stream:
                data = protocol.decode_bytes(message.get("data"))
                if data:  # an empty one is a keepalive (logs_keepalives)
                    yield data
        except TimeoutError as error:
            if not protocol.logs_deadline_passed(follow, deadline, error):
                raise

    async def rotate_access_token(self, request_timeout: Optional[float] = None) -> str:
        """Gives the sandbox a new access token and uses it; the previous one stops working."""
        reply, _ = await self._connection.api.unary(
            f"{protocol.SANDBOX_SERVICE}/RotateAccessToken", self._key(), request_timeout=self._connection.timeout(request_timeout)
        )
        access_token = str(reply.get("accessToken", ""))
        self._daemon.access_token = access_token
        self._connection.config.save_access_token(self.namespace, self.name, access_token)
        return access_token

    async def close(self) -> None:
        """Closes the handle's connections (the sandbox keeps running)."""
        await self._connection.aclose()

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.kill()
        finally:
            await self.close()

    def __repr__(self) -> str:
        return f"AsyncSandbox(name={self.name!r}, namespace={self.namespace!r}, sandbox_id={self.sandbox_id!r})"
