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

import json
import struct
from typing import Any, AsyncIterator, Dict, Iterator, List, Mapping, Optional, Tuple

import httpx

from .errors import FsbError, UnavailableError, error_from_connect, error_from_http, error_from_transport

Message = Dict[str, Any]

END_STREAM_FLAG = 0x02
COMPRESSED_FLAG = 0x01
_HEADER = struct.Struct(">BI")
_STREAM_CONTENT_TYPE = "application/connect+json"


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
        headers["Connect-Timeout-Ms"] = str(max(1, int(timeout * 1000)))
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


class ServerStream:
    """The messages of a server stream, as they arrive. ``close()`` (from any thread) hangs up."""

    def __init__(self, response: httpx.Response, what: str, server: str, silence_timeout: Optional[float] = None) -> None:
        self._response = response
        self._what = what
        self._server = server
        self._silence_timeout = silence_timeout

    def __iter__(self) -> Iterator[Message]:
        try:
            reader = EnvelopeReader()
            for chunk in self._response.iter_bytes():
                messages, end = stream_messages(reader.feed(chunk), self._what)
                yield from messages
                if end is not None:
                    if end.error is not None:
                        raise end.error
                    return
            raise _missing_end(self._what)
        except FsbError:
            raise
        except Exception as error:
            raise _stream_error(error, self._what, self._server, self._silence_timeout) from error
        finally:
            self._response.close()

    def close(self) -> None:
        self._response.close()


class AsyncServerStream:
    """The messages of a server stream, as they arrive. ``aclose()`` hangs up."""

    def __init__(self, response: httpx.Response, what: str, server: str, silence_timeout: Optional[float] = None) -> None:
        self._response = response
        self._what = what
        self._server = server
        self._silence_timeout = silence_timeout

    async def __aiter__(self) -> AsyncIterator[Message]:
        try:
            reader = EnvelopeReader()
            async for chunk in self._response.aiter_bytes():
                messages, end = stream_messages(reader.feed(chunk), self._what)
                for message in messages:
                    yield message
                if end is not None:
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

    async def aclose(self) -> None:
        await self._response.aclose()


class ConnectClient:
    """Connect calls on a blocking :class:`httpx.Client`. ``server`` names the peer in error messages."""

    def __init__(
        self,
        http: httpx.Client,
        base_url: str,
        headers: Optional[Mapping[str, str]] = None,
        server: str = "the server",
        unreachable_hint: str = "",
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
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
                headers=_headers("application/json", request_timeout, {**self._headers, **(headers or {})}),
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
        headers: Optional[Mapping[str, str]] = None,
    ) -> ServerStream:
        """Opens a server stream; an error the server answers at once is raised here.

        ``timeout`` is the whole stream's deadline (sent as Connect-Timeout-Ms). The longest wait for
        a message: ``silence_timeout`` for a stream that asked for keepalives, after which the
        connection is taken for lost (UnavailableError); else ``read_timeout`` if given (0: none),
        else ``request_timeout``.
        """
        what = procedure.rsplit("/", 1)[-1]
        request = self._http.build_request(
            "POST",
            f"{self._base_url}/{procedure}",
            content=encode_envelope(message),
            headers=_headers(_STREAM_CONTENT_TYPE, timeout, {**self._headers, **(headers or {})}),
            timeout=http_timeout(request_timeout, silence_timeout if silence_timeout is not None else read_timeout),
        )
        try:
            response = self._http.send(request, stream=True)
            if response.status_code != 200:
                try:
                    response.read()
                finally:
                    response.close()
        except Exception as error:
            raise error_from_transport(error, f"{what}: {self._server}", self._unreachable_hint) from error
        try:
            check_stream_start(response, what)
        except FsbError:
            response.close()
            raise
        return ServerStream(response, what, self._server, silence_timeout)


class AsyncConnectClient:
    """Connect calls on an :class:`httpx.AsyncClient`. ``server`` names the peer in error messages."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        headers: Optional[Mapping[str, str]] = None,
        server: str = "the server",
        unreachable_hint: str = "",
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
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
                headers=_headers("application/json", request_timeout, {**self._headers, **(headers or {})}),
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
        headers: Optional[Mapping[str, str]] = None,
    ) -> AsyncServerStream:
        what = procedure.rsplit("/", 1)[-1]
        request = self._http.build_request(
            "POST",
            f"{self._base_url}/{procedure}",
            content=encode_envelope(message),
            headers=_headers(_STREAM_CONTENT_TYPE, timeout, {**self._headers, **(headers or {})}),
            timeout=http_timeout(request_timeout, silence_timeout if silence_timeout is not None else read_timeout),
        )
        try:
            response = await self._http.send(request, stream=True)
            if response.status_code != 200:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except Exception as error:
            raise error_from_transport(error, f"{what}: {self._server}", self._unreachable_hint) from error
        try:
            check_stream_start(response, what)
        except FsbError:
            await response.aclose()
            raise
        return AsyncServerStream(response, what, self._server, silence_timeout)
