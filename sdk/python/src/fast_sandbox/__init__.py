"""Fast Sandbox's Python SDK: sandboxes with commands, files and terminals inside them.

>>> from fast_sandbox import Sandbox
>>> with Sandbox.create() as sandbox:
...     sandbox.commands.run("echo hello").stdout
'hello\\n'

:class:`Sandbox` blocks; :class:`AsyncSandbox` is the same API for asyncio. Where they find Fast
Sandbox (arguments, ``FSB_URL``/``FSB_TOKEN``/``FSB_PROXY_URL``, the embedded instance's data
directory) is in :mod:`fast_sandbox.config`.
"""

from .async_sandbox import AsyncCommandHandle, AsyncCommands, AsyncFiles, AsyncPty, AsyncSandbox, AsyncWatchHandle
from .config import ConnectionConfig
from .errors import (
    AlreadyExistsError,
    CommandExitError,
    ConflictError,
    ErrorCode,
    FailedPreconditionError,
    FsbError,
    NoCapacityError,
    NotFoundError,
    PermissionDeniedError,
    TimeoutError,
    UnauthenticatedError,
    UnavailableError,
    ValidationError,
)
from .models import (
    CommandResult,
    EntryInfo,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    ProcessInfo,
    PtySize,
    SandboxInfo,
    SandboxStats,
    WriteInfo,
)
from .sandbox import CommandHandle, Commands, Files, Pty, Sandbox, WatchHandle

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "AsyncCommandHandle",
    "AsyncCommands",
    "AsyncFiles",
    "AsyncPty",
    "AsyncSandbox",
    "AsyncWatchHandle",
    "CommandExitError",
    "CommandHandle",
    "CommandResult",
    "Commands",
    "ConflictError",
    "ConnectionConfig",
    "EntryInfo",
    "ErrorCode",
    "FailedPreconditionError",
    "FileType",
    "Files",
    "FilesystemEvent",
    "FilesystemEventType",
    "FsbError",
    "NoCapacityError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProcessInfo",
    "Pty",
    "PtySize",
    "Sandbox",
    "SandboxInfo",
    "SandboxStats",
    "TimeoutError",
    "UnauthenticatedError",
    "UnavailableError",
    "ValidationError",
    "WatchHandle",
    "WriteInfo",
]
