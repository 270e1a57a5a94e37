"""What the SDK returns: plain dataclasses, parsed from the wire's proto3 JSON in one place each."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Dict, List, Mapping, Optional


def parse_time(value: Any) -> Optional[datetime]:
    """An RFC 3339 time (``2026-11-30T18:41:35Z``, fractions of any length) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    date_part, _, rest = text.partition("T")
    if "." in rest:
        # Python 3.9's fromisoformat takes 3 or 6 fraction digits only; protobuf sends up to 9.
        clock, _, fraction_and_zone = rest.partition(".")
        digits = ""
        while fraction_and_zone and fraction_and_zone[0].isdigit():
            digits, fraction_and_zone = digits + fraction_and_zone[0], fraction_and_zone[1:]
        rest = f"{clock}.{(digits + '000000')[:6]}{fraction_and_zone}"
    parsed = datetime.fromisoformat(f"{date_part}T{rest}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC, as the control plane writes times (``2026-11-30T18:41:35.250Z``)."""
    utc = value.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class SandboxInfo:
    """A sandbox as the control plane describes it."""

    name: str
    namespace: str
    #: The instance id (20 lower-case letters and digits): the sandbox proxy routes by it.
    sandbox_id: str
    #: ``Pending``, ``Running``, ``Lost``, ``Failed``… (the control plane's ``status.phase``).
    phase: str
    pool: str
    image: str
    labels: Dict[str, str]
    created_at: Optional[datetime]
    #: When the control plane deletes the sandbox (``spec.expireTime``); ``None``: never.
    expires_at: Optional[datetime]
    #: Isolated network: the sandbox's own address.
    sandbox_ip: str
    #: One URL per exposed port, on the sandbox proxy.
    endpoints: List[str]
    #: The whole object as the API sent it (proto3 JSON), for what has no field here.
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    #: When its current instance started running (create, recreation or resume; ``status.startTime``).
    started_at: Optional[datetime] = None

    @staticmethod
    def from_message(message: Mapping[str, Any]) -> SandboxInfo:
        metadata = message.get("metadata") or {}
        spec = message.get("spec") or {}
        status = message.get("status") or {}
        return SandboxInfo(
            name=str(metadata.get("name", "")),
            namespace=str(metadata.get("namespace") or "default"),
            sandbox_id=str(status.get("sandboxID", "")),
            phase=str(status.get("phase", "")),
            pool=str(spec.get("poolRef", "")),
            image=str(spec.get("image", "")),
            labels=dict(metadata.get("labels") or {}),
            created_at=parse_time(metadata.get("creationTimestamp")),
            expires_at=parse_time(spec.get("expireTime")),
            sandbox_ip=str(status.get("sandboxIP", "")),
            endpoints=list(status.get("endpoints") or []),
            raw=message,
            started_at=parse_time(status.get("startTime")),
        )


@dataclass(frozen=True)
class SandboxStats:
    """A sandbox's resource use at one moment, as its agent reads it (``Sandbox.stats()``). A limit of 0 is none."""

    timestamp: Optional[datetime]
    #: CPU time used since the sandbox started, in nanoseconds.
    cpu_usage_nanos: int
    #: CPU use over the 100 ms before ``timestamp``, in thousandths of a core.
    cpu_used_millis: int
    #: 0: none (the node's ``node_cpus``).
    cpu_limit_millis: int
    #: Memory its processes use, page cache included.
    memory_used_bytes: int
    #: 0: none (the node's ``node_memory_bytes``).
    memory_limit_bytes: int
    #: Processes and threads in it.
    pids: int
    #: What it holds on its node's disk (written over its image, its run directory), in bytes.
    disk_used_bytes: int
    node_cpus: int
    node_memory_bytes: int
    #: Of ``memory_used_bytes``, the page cache (file-backed pages).
    memory_cache_bytes: int = 0
    #: Its disk limit (its pool's ``sandboxResources.ephemeralStorage``); 0: none.
    disk_limit_bytes: int = 0

    @staticmethod
    def from_message(message: Mapping[str, Any]) -> SandboxStats:
        # proto3 JSON: 64-bit integers are strings, zero values are left out.
        def number(key: str) -> int:
            return int(message.get(key) or 0)

        millis = number("timestampMs")
        return SandboxStats(
            timestamp=datetime.fromtimestamp(millis / 1000, tz=timezone.utc) if millis else None,
            cpu_usage_nanos=number("cpuUsageNanos"),
            cpu_used_millis=number("cpuUsedMillis"),
            cpu_limit_millis=number("cpuLimitMillis"),
            memory_used_bytes=number("memoryUsedBytes"),
            memory_limit_bytes=number("memoryLimitBytes"),
            pids=number("pids"),
            disk_used_bytes=number("diskUsedBytes"),
            node_cpus=number("nodeCpus"),
            node_memory_bytes=number("nodeMemoryBytes"),
            memory_cache_bytes=number("memoryCacheBytes"),
            disk_limit_bytes=number("diskLimitBytes"),
        )


@dataclass(frozen=True)
class CommandResult:
    """What a finished command left: its output (decoded as UTF-8) and exit code."""

    stdout: str
    stderr: str
    exit_code: int
    #: Why it ended, when it did not simply exit (e.g. ``signal: killed``).
    error: Optional[str] = None


@dataclass(frozen=True)
class ProcessInfo:
    """A process the sandbox's daemon runs (started through ``commands`` or ``pty``)."""

    pid: int
    tag: Optional[str]
    cmd: str
    args: List[str]
    envs: Dict[str, str]
    cwd: Optional[str]

    @staticmethod
    def from_message(message: Mapping[str, Any]) -> ProcessInfo:
        config = message.get("config") or {}
        return ProcessInfo(
            pid=int(message.get("pid", 0)),
            tag=message.get("tag"),
            cmd=str(config.get("cmd", "")),
            args=list(config.get("args") or []),
            envs=dict(config.get("envs") or {}),
            cwd=config.get("cwd"),
        )


@dataclass(frozen=True)
class PtySize:
    """A terminal's size in characters."""

    rows: int = 24
    cols: int = 80


class FileType(str, Enum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    UNKNOWN = "unknown"


_FILE_TYPES = {
    "FILE_TYPE_FILE": FileType.FILE,
    "FILE_TYPE_DIRECTORY": FileType.DIRECTORY,
    "FILE_TYPE_SYMLINK": FileType.SYMLINK,
}


@dataclass(frozen=True)
class EntryInfo:
    """A file, directory or symlink in the sandbox."""

    name: str
    type: FileType
    #: Absolute path in the sandbox.
    path: str
    size: int
    #: Permission bits with setuid, setgid and sticky, as the daemon sends them (``st_mode & 0o7777``):
    #: ``0o644`` for ``-rw-r--r--``, ``0o755`` for ``drwxr-xr-x``, ``0o4755`` for ``-rwsr-xr-x``. No type
    #: bits (``stat.S_IFMT`` is 0): the kind is :attr:`type`; :attr:`permissions` shows both.
    mode: int
    permissions: str
    owner: str
    group: str
    modified_time: Optional[datetime]
    symlink_target: Optional[str]
    metadata: Dict[str, str]

    @staticmethod
    def from_message(message: Mapping[str, Any]) -> EntryInfo:
        return EntryInfo(
            name=str(message.get("name", "")),
            type=_FILE_TYPES.get(str(message.get("type", "")), FileType.UNKNOWN),
            path=str(message.get("path", "")),
            # int64 arrives as a string in proto3 JSON.
            size=int(message.get("size", 0) or 0),
            mode=int(message.get("mode", 0) or 0),
            permissions=str(message.get("permissions", "")),
            owner=str(message.get("owner", "")),
            group=str(message.get("group", "")),
            modified_time=parse_time(message.get("modifiedTime")),
            symlink_target=message.get("symlinkTarget"),
            metadata=dict(message.get("metadata") or {}),
        )


@dataclass(frozen=True)
class WriteInfo:
    """A file that :meth:`files.write` wrote."""

    name: str
    path: str
    type: FileType = FileType.FILE


class FilesystemEventType(str, Enum):
    CREATE = "create"
    WRITE = "write"
    REMOVE = "remove"
    RENAME = "rename"
    CHMOD = "chmod"
    UNKNOWN = "unknown"


_EVENT_TYPES = {
    "EVENT_TYPE_CREATE": FilesystemEventType.CREATE,
    "EVENT_TYPE_WRITE": FilesystemEventType.WRITE,
    "EVENT_TYPE_REMOVE": FilesystemEventType.REMOVE,
    "EVENT_TYPE_RENAME": FilesystemEventType.RENAME,
    "EVENT_TYPE_CHMOD": FilesystemEventType.CHMOD,
}


@dataclass(frozen=True)
class FilesystemEvent:
    """A change in a watched directory; ``name`` is relative to it."""

    name: str
    type: FilesystemEventType
    entry: Optional[EntryInfo] = None

    @staticmethod
    def from_message(message: Mapping[str, Any]) -> FilesystemEvent:
        entry = message.get("entry")
        return FilesystemEvent(
            name=str(message.get("name", "")),
            type=_EVENT_TYPES.get(str(message.get("type", "")), FilesystemEventType.UNKNOWN),
            entry=EntryInfo.from_message(entry) if isinstance(entry, dict) else None,
        )
