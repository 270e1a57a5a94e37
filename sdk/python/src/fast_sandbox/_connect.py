"""A small Connect protocol client (JSON codec) on httpx: unary calls and server streams.

Both Fast Sandbox's control plane and the in-sandbox daemon speak Connect
(https://connectrpc.com/docs/protocol), so every RPC is an HTTP POST to ``/<package.Service>/<Method>``:

- unary: ``Content-Type: application/json``, the message as the body; 200 with the reply, or
  another status with ``{"code", "message"}``;
- server stream: ``Content-Type: application/connect+json``; the request and every reply are
  *envelopes* (1 flag byte, a 4-byte big-endian length, the JSON); the last reply envelope has flag
  0x02 and carries ``{}`` or ``{"error": {...}, "metadata": {...}}``.

Messages are plain dicts in proto3's JSON form (lowerCamelCase names, int64 as strings, bytes as
base64, enums by name). The protocol logic is shared; :class:`ConnectClient` and
:class:`AsyncConnectClient` only do the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import struct
import threading
import time
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, TypeVar, Union

import httpx

from .errors import FsbError, UnavailableError, error_from_connect, error_from_http, error_from_transport
from .errors import TimeoutError as SdkTimeoutError  # not the builtin: subclasses it

Message = Dict[str, Any]

END_STREAM_FLAG = 0x02
COMPRESSED_FLAG = 0x01
_HEADER = struct.Struct(">BI")
_STREAM_CONTENT_TYPE = "application/connect+json"
#: The largest Connect-Timeout-Ms: the protocol allows 10 digits, and servers refuse more (connect-go:
#: "has >10 digits"; connect-node: invalid_argument). ~115 days; a longer deadline is sent as this.
MAX_TIMEOUT_MS = 9_999_999_999
#: How long the rest of a stream (the end envelope after the last event, the end of the body) is
#: waited for once its last message came, so that its connection is used again; a server that keeps
#: the stream open longer is hung up on (the connection is dropped, as it always was before).
DRAIN_TIMEOUT = 2.0
#: ...and how many bytes of it are read at most.
DRAIN_LIMIT = 64 * 1024
#: Each handle's connections: a running stream (a background command, a terminal, a watch) holds one
#: for as long as it runs, so httpx's default cap of 100 would make every further call of the handle,
#: kill() too, wait for a free connection (PoolTimeout) once 100 run. No cap, as the TypeScript SDK's
#: Node agent; idle connections kept for reuse stay few.
POOL_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=20)

Client = TypeVar("Client", httpx.Client, httpx.AsyncClient)


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine: ``localhost`` (and ``*.localhost``), 127.0.0.0/8, ::1."""
    host = httpx.URL(url).host.lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_client(cls: Callable[..., Client], transport: Any, url: str) -> Client:
    """A handle's HTTP client for ``url``. A loopback URL (``fsb up``'s) is reached directly: httpx
    would otherwise send its calls, with the API and access tokens, to the HTTP_PROXY/ALL_PROXY of the
    environment, which cannot reach this machine's 127.0.0.1 anyway (the TypeScript SDK ignores these
    variables). Other URLs honour the environment as httpx does (proxies with NO_PROXY, SSL_CERT_FILE)."""
    if transport is not None:
        return cls(transport=transport)
    return cls(limits=POOL_LIMITS, trust_env=not is_loopback(url))


class HttpClients:
    """A handle's HTTP clients: one for loopback URLs, one for the others (:func:`http_client`), each
    made when first needed."""

    def __init__(self, cls: Callable[..., Any], transport: Any) -> None:
        self._cls = cls
        self._transport = transport
        self._clients: Dict[bool, Any] = {}
        self._lock = threading.Lock()

    def for_url(self, url: str) -> Any:
        key = self._transport is not None or is_loopback(url)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = http_client(self._cls, self._transport, url)
            return self._clients[key]

    def all(self) -> List[Any]:
        with self._lock:
            return list(self._clients.values())


def encode_envelope(message: Mapping[str, Any], flags: int = 0) -> bytes:
    """One envelope: flags, length, JSON."""
    payload = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(flags, len(payload)) + payload


class EnvelopeReader:
    """Cuts a byte stream into envelopes, however the bytes arrive."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> List[Tuple[int, bytes]]:
        self._buffer.extend(chunk)
        envelopes: List[Tuple[int, bytes]] = []
        while len(self._buffer) >= _HEADER.size:
            flags, length = _HEADER.unpack_from(self._buffer)
            if len(self._buffer) < _HEADER.size + length:
                break
            envelopes.append((flags, bytes(self._buffer[_HEADER.size : _HEADER.size + length])))
            del self._buffer[: _HEADER.size + length]
        return envelopes

    @property
    def pending(self) -> int:
        """Bytes of an envelope that has not arrived whole."""
        return len(self._buffer)


def _json(data: bytes, what: str) -> Message:
    try:
        value = json.loads(data) if data else {}
    except ValueError as error:
        raise FsbError("internal", f"{what}: the answer is not JSON: {data[:200]!r}") from error
    if not isinstance(value, dict):
        raise FsbError("internal", f"{what}: the answer is not a JSON object: {data[:200]!r}")
    return value


def unary_reply(response: httpx.Response, what: str) -> Message:
    """The reply of a unary call, or its error raised."""
    if response.status_code != 200:
        raise error_from_http(response, what)
    return _json(response.content, what)


def check_stream_start(response: httpx.Response, what: str) -> None:
    """Raises when a stream's answer is not a Connect stream (call after reading the body of a non-200)."""
    if response.status_code != 200:
        raise error_from_http(response, what)
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    if content_type != _STREAM_CONTENT_TYPE:
        raise FsbError("internal", f"{what}: expected a {_STREAM_CONTENT_TYPE} stream, got {content_type or 'no content type'}")


class StreamEnd:
    """The end envelope of a stream: after the messages before it, raise its error if it has one."""

    def __init__(self, error: Optional[FsbError]) -> None:
        self.error = error


def stream_messages(envelopes: List[Tuple[int, bytes]], what: str) -> Tuple[List[Message], Optional[StreamEnd]]:
    """The messages of some envelopes, and the stream's end if it came."""
    messages: List[Message] = []
    for flags, data in envelopes:
        if flags & COMPRESSED_FLAG:
            raise FsbError("internal", f"{what}: the server sent a compressed message, which was not asked for")
        if flags & END_STREAM_FLAG:
            end = _json(data, what)
            error = end.get("error")
            return messages, StreamEnd(error_from_connect(error, end.get("metadata") or {}) if isinstance(error, dict) else None)
        messages.append(_json(data, what))
    return messages, None


def _headers(content_type: str, timeout: Optional[float], extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
    headers = {"Content-Type": content_type, "Connect-Protocol-Version": "1"}
    if timeout is not None and timeout > 0:
        # Connect's deadline: the server gives up (the daemon kills a command) when it passes.
        headers["Connect-Timeout-Ms"] = str(min(MAX_TIMEOUT_MS, max(1, int(timeout * 1000))))
    headers.update(extra or {})
    return headers


def http_timeout(request_timeout: Optional[float], read_timeout: Optional[float] = None) -> httpx.Timeout:
    """httpx's timeouts: ``request_timeout`` for connecting and writing, ``read_timeout`` between
    reads (default: ``request_timeout``; 0: no limit)."""
    if read_timeout is None:
        read_timeout = request_timeout
    return httpx.Timeout(request_timeout, read=read_timeout if read_timeout else None)


def _stream_error(error: Exception, what: str, server: str, silence_timeout: Optional[float]) -> FsbError:
    """What breaking off a stream raises: silence past ``silence_timeout`` on a stream that gets
    keepalives is a connection that died without a word, not a timeout of the call."""
    if silence_timeout is not None and isinstance(error, httpx.ReadTimeout):
        return UnavailableError(
            f"{what}: {server}: the stream was silent for {silence_timeout:g}s, though it gets keepalives: the connection was lost"
        )
    return error_from_transport(error, f"{what}: {server}")


def _missing_end(what: str) -> FsbError:
    return UnavailableError(f"{what}: the stream ended before its end message (the connection was cut)")


def _start_timed_out(what: str, server: str, start_timeout: float) -> SdkTimeoutError:
    return SdkTimeoutError(
        f"{what}: {server}: the stream did not start within {start_timeout:g}s (request_timeout); "
        "pass a larger request_timeout, or 0 for no limit"
    )


def _shut_down(response: httpx.Response) -> bool:
    """Shuts the socket of a response down, which wakes a thread blocked reading it: closing the
    response from another thread does not (the reader keeps waiting in recv, and the server never
    hears of it). The socket is httpcore's ``network_stream`` extension (HTTP/1.1); False without
    one (a mock transport)."""
    network_stream = response.extensions.get("network_stream")
    sock = network_stream.get_extra_info("socket") if network_stream is not None else None
    if not isinstance(sock, socket.socket):
        return False
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    return True


def _after(seconds: float, action: Callable[[], object]) -> threading.Timer:
    timer = threading.Timer(max(0.0, seconds), action)
    timer.daemon = True
    timer.start()
    return timer


def _body_reads_wait(response: httpx.Response, read_timeout: Optional[float]) -> None:
    """Gives the reads of a stream's body their own timeout, once its headers came within the start's.
    httpcore takes the read timeout from the request's ``timeout`` extension when it starts reading a
    body (``_receive_response_body``), so changing it between the headers and the body is what bounds
    the two differently on one request."""
    timeouts = response.request.extensions.get("timeout")
    if isinstance(timeouts, dict):
        timeouts["read"] = read_timeout


class ServerStream:
    """The messages of a server stream, as they arrive. ``close()`` (from any thread) hangs up.

    With ``start_timeout``, the first message must come by ``start_deadline`` (the response's
    headers came in time already): past it the stream is hung up and TimeoutError raised. After the
    end message the rest of the body is read (within :data:`DRAIN_TIMEOUT`), so that httpx puts the
    connection back into its pool for the next call.
    """

    def __init__(
        self,
        response: httpx.Response,
        what: str,
        server: str,
        silence_timeout: Optional[float] = None,
        start_timeout: Optional[float] = None,
        start_deadline: Optional[float] = None,
    ) -> None:
        self._response = response
        self._what = what
        self._server = server
        self._silence_timeout = silence_timeout
        self._start_timeout = start_timeout
        self._start_deadline = start_deadline
        self._start_missed = False
        #: Read to its end (its connection may be back in the pool, for another call) or closed.
        self._finished = False

    def _miss_start(self) -> None:
        self._start_missed = True
        _shut_down(self._response)

    def __iter__(self) -> Iterator[Message]:
        chunks = self._response.iter_bytes()
        watchdog: Optional[threading.Timer] = None
        if self._start_timeout is not None and self._start_deadline is not None:
            watchdog = _after(self._start_deadline - time.monotonic(), self._miss_start)
        try:
            reader = EnvelopeReader()
            for chunk in chunks:
                messages, end = stream_messages(reader.feed(chunk), self._what)
                if watchdog is not None and (messages or end is not None):
                    watchdog.cancel()
                    watchdog = None
                    if self._start_missed:
                        raise _start_timed_out(self._what, self._server, self._start_timeout or 0)
                yield from messages
                if end is not None:
                    self._drain(chunks)
                    if end.error is not None:
                        raise end.error
                    return
            raise _missing_end(self._what)
        except FsbError:
            raise
        except Exception as error:
            if self._start_missed:
                raise _start_timed_out(self._what, self._server, self._start_timeout or 0) from error
            raise _stream_error(error, self._what, self._server, self._silence_timeout) from error
        finally:
            if watchdog is not None:
                watchdog.cancel()
            self._finished = True
            self._response.close()

    def _drain(self, chunks: Iterator[bytes]) -> None:
        """Reads the body to its end (normally just the chunked encoding's last chunk), bounded."""
        watchdog = _after(DRAIN_TIMEOUT, lambda: _shut_down(self._response))
        try:
            read = 0
            for chunk in chunks:
                read += len(chunk)
                if read > DRAIN_LIMIT:
                    return
        except Exception:
            pass  # the connection is dropped, as when it is hung up on
        finally:
            watchdog.cancel()

    def finish(self, messages: Iterator[Message]) -> None:
        """Reads what is left of the stream ``messages`` iterates once its last wanted message came
        (a process's end event: the end envelope follows), for the connection's sake, ignoring it;
        within :data:`DRAIN_TIMEOUT`, then hangs up."""
        watchdog = _after(DRAIN_TIMEOUT, lambda: _shut_down(self._response))
        try:
            for _ in messages:
                pass
        except Exception:
            pass
        finally:
            watchdog.cancel()
            self.close()

    def hang_up(self) -> None:
        """Hangs up from another thread than the one reading the stream: shuts its socket down, so
        that the reader wakes and closes it (else closes it here)."""
        if self._finished or not _shut_down(self._response):
            self.close()

    def close(self) -> None:
        if not self._finished:
            _shut_down(self._response)
        self._response.close()


class AsyncServerStream:
    """The messages of a server stream, as they arrive. ``aclose()`` hangs up. ``start_timeout`` and
    the end: as :class:`ServerStream`."""

    def __init__(
        self,
        response: httpx.Response,
        what: str,
        server: str,
        silence_timeout: Optional[float] = None,
        start_timeout: Optional[float] = None,
        start_deadline: Optional[float] = None,
    ) -> None:
        self._response = response
        self._what = what
        self._server = server
        self._silence_timeout = silence_timeout
        self._start_timeout = start_timeout
        self._start_deadline = start_deadline

    async def __aiter__(self) -> AsyncIterator[Message]:
        chunks = self._response.aiter_bytes()
        started = self._start_timeout is None or self._start_deadline is None
        try:
            reader = EnvelopeReader()
            while True:
                try:
                    if started:
                        chunk = await chunks.__anext__()
                    else:
                        chunk = await asyncio.wait_for(chunks.__anext__(), max(0.0, (self._start_deadline or 0) - time.monotonic()))
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    raise _start_timed_out(self._what, self._server, self._start_timeout or 0) from None
                messages, end = stream_messages(reader.feed(chunk), self._what)
                started = started or bool(messages) or end is not None
                for message in messages:
                    yield message
                if end is not None:
                    await self._drain(chunks)
                    if end.error is not None:
                        raise end.error
                    return
            raise _missing_end(self._what)
        except FsbError:
            raise
        except Exception as error:
            raise _stream_error(error, self._what, self._server, self._silence_timeout) from error
        finally:
            await self._response.aclose()

    async def _drain(self, chunks: AsyncIterator[bytes]) -> None:
        """Reads the body to its end (normally just the chunked encoding's last chunk), bounded."""

        async def read_to_end() -> None:
            read = 0
            async for chunk in chunks:
                read += len(chunk)
                if read > DRAIN_LIMIT:
                    return

        with contextlib.suppress(Exception):  # the connection is dropped, as when it is hung up on
            await asyncio.wait_for(read_to_end(), DRAIN_TIMEOUT)

    async def finish(self, messages: AsyncIterator[Message]) -> None:
        """Reads what is left of the stream once its last wanted message came; see :meth:`ServerStream.finish`."""

        async def read_to_end() -> None:
            async for _ in messages:
                pass

        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(read_to_end(), DRAIN_TIMEOUT)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self._response.aclose()


def _stream_timeout(
    request_timeout: Optional[float], start_timeout: Optional[float], read_timeout: Optional[float]
) -> Tuple[httpx.Timeout, Optional[float]]:
    """httpx's timeouts of a stream's request, and the read timeout of its body: the headers are
    waited for within ``start_timeout`` when given, the body's reads within ``read_timeout``."""
    if read_timeout is None:
        read_timeout = request_timeout
    body_read = read_timeout if read_timeout else None
    if start_timeout is None:
        return httpx.Timeout(request_timeout, read=body_read), body_read
    return httpx.Timeout(request_timeout, read=start_timeout), body_read


#: Headers of every call: fixed, or made at each call (a token read again as it is renewed).
Headers = Union[Mapping[str, str], Callable[[], Mapping[str, str]]]


def _header_source(headers: Optional[Headers]) -> Callable[[], Mapping[str, str]]:
    if callable(headers):
        return headers
    fixed = dict(headers or {})
    return lambda: fixed


class ConnectClient:
    """Connect calls on a blocking :class:`httpx.Client`. ``server`` names the peer in error messages."""

    def __init__(
        self,
        http: httpx.Client,
        base_url: str,
        headers: Optional[Headers] = None,
        server: str = "the server",
        unreachable_hint: str = "",
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._headers = _header_source(headers)
        self._server = f"{server} at {self._base_url}"
        self._unreachable_hint = unreachable_hint

    def unary(
        self,
        procedure: str,
        message: Mapping[str, Any],
        *,
        request_timeout: Optional[float],
        headers: Optional[Mapping[str, str]] = None,
    ) -> Tuple[Message, httpx.Headers]:
        """Calls ``/<procedure>`` (``package.Service/Method``); returns the reply and its headers."""
        what = procedure.rsplit("/", 1)[-1]
        try:
            response = self._http.post(
                f"{self._base_url}/{procedure}",
                content=json.dumps(message, separators=(",", ":")).encode(),
                headers=_headers("application/json", request_timeout, {**self._headers(), **(headers or {})}),
                timeout=http_timeout(request_timeout),
            )
        except Exception as error:
            raise error_from_transport(error, f"{what}: {self._server}", self._unreachable_hint) from error
        return unary_reply(response, what), response.headers

    def stream(
        self,
        procedure: str,
        message: Mapping[str, Any],
        *,
        request_timeout: Optional[float],
        timeout: Optional[float] = None,
        silence_timeout: Optional[float] = None,
        read_timeout: Optional[float] = None,
        start_timeout: Optional[float] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> ServerStream:
        """Opens a server stream; an error the server answers at once is raised here.

        ``timeout`` is the whole stream's deadline (sent as Connect-Timeout-Ms). The longest wait for
        a message: ``silence_timeout`` for a stream that asked for keepalives, after which the
        connection is taken for lost (UnavailableError); else ``read_timeout`` if given (0: none),
        else ``request_timeout``. ``start_timeout`` bounds the wait for the headers and the first
        message (a daemon's stream begins with one at once), as the TypeScript SDK's StreamStart: a
        hung daemon or proxy is a TimeoutError after the call's request_timeout, not after the
        stream's silence timeout.
        """
        what = procedure.rsplit("/", 1)[-1]
        opened = time.monotonic()
        http_timeouts, body_read = _stream_timeout(
            request_timeout, start_timeout, silence_timeout if silence_timeout is not None else read_timeout
        )
        request = self._http.build_request(
            "POST",
            f"{self._base_url}/{procedure}",
            content=encode_envelope(message),
            headers=_headers(_STREAM_CONTENT_TYPE, timeout, {**self._headers(), **(headers or {})}),
            timeout=http_timeouts,
        )
        try:
            response = self._http.send(request, stream=True)
            if response.status_code != 200:
                try:
                    response.read()
                finally:
                    response.close()
        except httpx.ReadTimeout as error:
            if start_timeout is None:
                raise error_from_transport(error, f"{what}: {self._server}", self._unreachable_hint) from error
            raise _start_timed_out(what, self._server, start_timeout) from error
        except Exception as error:
            raise error_from_transport(error, f"{what}: {self._server}", self._unreachable_hint) from error
        try:
            check_stream_start(response, what)
        except FsbError:
            response.close()
            raise
        if start_timeout is None:
            return ServerStream(response, what, self._server, silence_timeout)
        _body_reads_wait(response, body_read)
        return ServerStream(response, what, self._server, silence_timeout, start_timeout, opened + start_timeout)


class AsyncConnectClient:
    """Connect calls on an :class:`httpx.AsyncClient`. ``server`` names the peer in error messages."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        headers: Optional[Headers] = None,
        server: str = "the server",
        unreachable_hint: str = "",
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._headers = _header_source(headers)
        self._server = f"{server} at {self._base_url}"
        self._unreachable_hint = unreachable_hint

    async def unary(
        self,
        procedure: str,
        message: Mapping[str, Any],
        *,
        request_timeout: Optional[float],
        headers: Optional[Mapping[str, str]] = None,
    ) -> Tuple[Message, httpx.Headers]:
        what = procedure.rsplit("/", 1)[-1]
        try:
            response = await self._http.post(
                f"{self._base_url}/{procedure}",
                content=json.dumps(message, separators=(",", ":")).encode(),
                headers=_headers("application/json", request_timeout, {**self._headers(), **(headers or {})}),
                timeout=http_timeout(request_timeout),
            )
        except Exception as error:
            raise error_from_transport(error, f"{what}: {self._server}", self._unreachable_hint) from error
        return unary_reply(response, what), response.headers

    async def stream(
        self,
        procedure: str,
        message: Mapping[str, Any],
        *,
        request_timeout: Optional[float],
        timeout: Optional[float] = None,
        silence_timeout: Optional[float] = None,
        read_timeout: Optional[float] = None,
        start_timeout: Optional[float] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> AsyncServerStream:
        """Opens a server stream; see :meth:`ConnectClient.stream`."""
        what = procedure.rsplit("/", 1)[-1]
        opened = time.monotonic()
        http_timeouts, body_read = _stream_timeout(
            request_timeout, start_timeout, silence_timeout if silence_timeout is not None else read_timeout
        )
        request = self._http.build_request(
            "POST",
            f"{self._base_url}/{procedure}",
            content=encode_envelope(message),
            headers=_headers(_STREAM_CONTENT_TYPE, timeout, {**self._headers(), **(headers or {})}),
            timeout=http_timeouts,
        )
        try:
            response = await self._http.send(request, stream=True)
            if response.status_code != 200:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except httpx.ReadTimeout as error:
            if start_timeout is None:
                raise error_from_transport(error, f"{what}: {self._server}", self._unreachable_hint) from error
            raise _start_timed_out(what, self._server, start_timeout) from error
        except Exception as error:
            raise error_from_transport(error, f"{what}: {self._server}", self._unreachable_hint) from error
        try:
            check_stream_start(response, what)
        except FsbError:
            await response.aclose()
            raise
        if start_timeout is None:
            return AsyncServerStream(response, what, self._server, silence_timeout)
        _body_reads_wait(response, body_read)
        return AsyncServerStream(response, what, self._server, silence_timeout, start_timeout, opened + start_timeout)
