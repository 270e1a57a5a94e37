"""The one error hierarchy of the SDK, as in Fast Sandbox's TypeScript packages.

Every failure a caller sees is an :class:`FsbError` with a stable :attr:`FsbError.code`. Wire
errors are translated here and nowhere else: Connect errors of the control plane and of the
in-sandbox daemon (:func:`error_from_connect`), plain HTTP answers of the sandbox proxy and of the
daemon's ``/files`` (:func:`error_from_http`), and httpx's transport failures
(:func:`error_from_transport`).
"""

from __future__ import annotations

import builtins
import json
from typing import Any, Dict, Literal, Mapping, Optional
from urllib.parse import unquote

import httpx

ErrorCode = Literal[
    "invalid_argument",
    "not_found",
    "already_exists",
    "conflict",
    "no_capacity",
    "unauthenticated",
    "permission_denied",
    "failed_precondition",
    "unavailable",
    "deadline_exceeded",
    "internal",
]


class FsbError(Exception):
    """Base of every error the SDK raises; ``code`` says what kind it is."""

    code: ErrorCode
    #: Whether the control plane said so itself, with its code in ``fsb-error-code``; not a client
    #: deadline, a transport failure or a proxy in between (after which a call may have done its work).
    _from_server = False

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ValidationError(FsbError):
    """A request field is wrong; ``field`` is its path, e.g. ``spec.exposedPorts[0]`` (may be empty)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("invalid_argument", f"{field}: {message}" if field else message)
        self.field = field


class NotFoundError(FsbError):
    """The sandbox, file, process or pool does not exist (any more)."""

    def __init__(self, message: str) -> None:
        super().__init__("not_found", message)
        # The sandbox proxy's answer that the sandbox itself is gone, not a daemon's "no such file or process".
        self._sandbox_gone = False


class AlreadyExistsError(FsbError):
    def __init__(self, message: str) -> None:
        super().__init__("already_exists", message)


class ConflictError(FsbError):
    """The object changed since it was read (optimistic concurrency); read it again and retry."""

    def __init__(self, message: str) -> None:
        super().__init__("conflict", message)


class NoCapacityError(FsbError):
    """No agent of the pool can take the sandbox now (or the sandbox's disk or memory is full)."""

    def __init__(self, message: str) -> None:
        super().__init__("no_capacity", message)


class UnauthenticatedError(FsbError):
    """The API token or the sandbox's access token is missing or wrong."""

    def __init__(self, message: str) -> None:
        super().__init__("unauthenticated", message)


class PermissionDeniedError(FsbError):
    def __init__(self, message: str) -> None:
        super().__init__("permission_denied", message)


class FailedPreconditionError(FsbError):
    def __init__(self, message: str) -> None:
        super().__init__("failed_precondition", message)


class UnavailableError(FsbError):
    """The control plane, the sandbox proxy or the sandbox's daemon cannot be reached now."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)


class TimeoutError(FsbError, builtins.TimeoutError):
    """A call or a command took longer than its ``timeout``/``request_timeout``.

    Also a builtin :class:`TimeoutError`, so ``except TimeoutError`` catches it either way.
    """

    def __init__(self, message: str) -> None:
        super().__init__("deadline_exceeded", message)


class CommandExitError(FsbError):
    """A command exited with a code other than 0, or was killed; its output comes with it.

    Code ``failed_precondition`` (as in the TypeScript SDK): the command ran, and its outcome is
    what the caller relied on.
    """

    def __init__(self, exit_code: int, stdout: str, stderr: str, error: Optional[str] = None, command: str = "the command") -> None:
        how = f"was stopped ({error})" if exit_code == -1 and error else f"exited with code {exit_code}"
        last_line = stderr.rstrip().rsplit("\n", 1)[-1] if stderr.strip() else ""
        if len(last_line) > 200:
            last_line = last_line[:199] + "…"
        super().__init__("failed_precondition", f"{command} {how}" + (f": {last_line}" if last_line else ""))
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.error = error


_BY_CODE: Dict[str, Any] = {
    "not_found": NotFoundError,
    "already_exists": AlreadyExistsError,
    "conflict": ConflictError,
    "no_capacity": NoCapacityError,
    "unauthenticated": UnauthenticatedError,
    "permission_denied": PermissionDeniedError,
    "failed_precondition": FailedPreconditionError,
    "unavailable": UnavailableError,
    "deadline_exceeded": TimeoutError,
}

# Connect's codes (https://connectrpc.com/docs/protocol#error-codes) to ours, as
# packages/api/src/wire/connect-errors.ts maps them.
_CONNECT_CODES: Dict[str, ErrorCode] = {
    "invalid_argument": "invalid_argument",
    "out_of_range": "invalid_argument",
    "not_found": "not_found",
    "already_exists": "already_exists",
    # Aborted without Fast Sandbox's code (fsb-error-code: conflict, with which the control plane
    # answers its conflicts) is the transport's: a connection reset mid-call, not a server's conflict
    # (the TypeScript SDK's fromConnectError too). So a create whose answer was lost so is retried.
    "aborted": "unavailable",
    "resource_exhausted": "no_capacity",
    "unauthenticated": "unauthenticated",
    "permission_denied": "permission_denied",
    "failed_precondition": "failed_precondition",
    "unavailable": "unavailable",
    "deadline_exceeded": "deadline_exceeded",
    # A call given up on by the other end (the server or a proxy in between went away; its deadline
    # is deadline_exceeded): cut short, as a lost connection is (the TypeScript SDK's mapping too).
    "canceled": "unavailable",
}

# Every code of the Connect protocol: a JSON body whose "code" is one of these is a Connect error.
_CONNECT_CODE_NAMES = frozenset(
    {
        "canceled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
    }
)

# Plain HTTP statuses (the sandbox proxy's own answers, the daemon's /files) to ours.
_HTTP_STATUSES: Dict[int, ErrorCode] = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    408: "deadline_exceeded",
    412: "failed_precondition",
    413: "invalid_argument",
    429: "no_capacity",
    502: "unavailable",
    503: "unavailable",
    # A proxy's gateway timeout: what is behind it did not answer, not a deadline of the caller's (as Connect maps it).
    504: "unavailable",
    507: "no_capacity",
}

#: Header of the control plane's errors carrying Fast Sandbox's own code (more precise than Connect's).
ERROR_CODE_HEADER = "fsb-error-code"
#: Header of a validation error's field path, URI-encoded.
ERROR_FIELD_HEADER = "fsb-error-field"


def add_context(error: FsbError, context: str) -> FsbError:
    """Prefixes the error's message with what was asked (once); its class and code stay."""
    if not error.message.startswith(context):
        error.message = f"{context}: {error.message}"
        error.args = (f"{error.field}: {error.message}" if isinstance(error, ValidationError) and error.field else error.message,)
    return error


def make_error(code: str, message: str, field: str = "") -> FsbError:
    """The error class of ``code`` (one of :data:`ErrorCode`; anything else is ``internal``)."""
    if code == "invalid_argument":
        prefix = f"{field}: "
        return ValidationError(field, message[len(prefix) :] if field and message.startswith(prefix) else message)
    cls = _BY_CODE.get(code)
    if cls is not None:
        error: FsbError = cls(message)
        return error
    return FsbError("internal", message)


def _first(metadata: Mapping[str, Any], key: str) -> str:
    for name, value in metadata.items():
        if name.lower() == key:
            if isinstance(value, list):
                return str(value[0]) if value else ""
            return str(value)
    return ""


#: The sandbox proxy's message for a paused sandbox (E2B's), as a 409 or as a Connect stream's end.
_PROXY_PAUSED_MESSAGE = "The sandbox is paused"
_PAUSED_HINT = " (the sandbox is paused: resume it first, with 'fsb resume' or a connect through the E2B API)"


def error_from_connect(error: Mapping[str, Any], metadata: Optional[Mapping[str, Any]] = None) -> FsbError:
    """A Connect error object ``{"code", "message"}`` with its metadata (response headers or trailers)."""
    metadata = metadata or {}
    connect_code = str(error.get("code", "unknown"))
    message = str(error.get("message") or f"the server answered with the Connect error {connect_code}")
    server_code = _first(metadata, ERROR_CODE_HEADER)
    if not server_code and connect_code == "aborted":
        message = f"the connection was lost: {message}"
    if server_code == "failed_precondition" and message == _PROXY_PAUSED_MESSAGE:
        message += _PAUSED_HINT
    translated = make_error(
        server_code or _CONNECT_CODES.get(connect_code, "internal"), message, unquote(_first(metadata, ERROR_FIELD_HEADER))
    )
    translated._from_server = bool(server_code)
    return translated


def error_from_http(response: httpx.Response, what: str) -> FsbError:
    """A non-2xx answer that is not a Connect error: the proxy's ``{"code": 502, "message"}``, /files' errors."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    message = ""
    if isinstance(body, dict):
        if isinstance(body.get("code"), str) and body.get("code") in _CONNECT_CODE_NAMES:
            return error_from_connect(body, response.headers)
        message = str(body.get("message") or "")
    if not message:
        message = response.text.strip()[:300] or response.reason_phrase
    # The proxy's own code beside E2B's body (a daemon never sends one); its message for older proxies.
    gone = response.headers.get(ERROR_CODE_HEADER) == "not_found"
    if gone or (response.status_code == 502 and "sandbox was not found" in message.lower()):
        error = NotFoundError(f"{what}: the sandbox is gone (deleted or expired): {message}")
        error._sandbox_gone = True
        return error
    if response.status_code == 409:
        # The sandbox proxy's answer for a paused sandbox (a gVisor checkpoint): nothing of it runs to answer.
        return FailedPreconditionError(f"{what}: {message}{_PAUSED_HINT}")
    code = _HTTP_STATUSES.get(response.status_code, "internal")
    return make_error(code, f"{what}: {message} (HTTP {response.status_code})")


def is_sandbox_gone(error: FsbError) -> bool:
    """Whether the error is the sandbox proxy's "the sandbox is gone" (deleted or expired), not a daemon's
    own not-found: calls that answer False for a missing file or process still raise it."""
    return isinstance(error, NotFoundError) and error._sandbox_gone


def error_from_transport(error: Exception, what: str, unreachable_hint: str = "") -> FsbError:
    """httpx's exceptions (no answer at all) as FsbError; anything already an FsbError stays itself.
    ``unreachable_hint`` tells what to check when nothing could be connected to."""
    if isinstance(error, FsbError):
        return error
    if isinstance(error, httpx.ConnectError) and unreachable_hint:
        return UnavailableError(f"{what}: {error or type(error).__name__} ({unreachable_hint})")
    if isinstance(error, httpx.TimeoutException):
        return TimeoutError(f"{what}: no answer in time ({type(error).__name__}); pass a larger request_timeout or timeout")
    if isinstance(error, (httpx.TransportError, httpx.StreamError)):
        return UnavailableError(f"{what}: {error or type(error).__name__}")
    if isinstance(error, RuntimeError) and "client has been closed" in str(error):
        return FailedPreconditionError(f"{what}: the handle was closed (close(), or the end of its with block); connect again")
    return FsbError("internal", f"{what}: {error}")
