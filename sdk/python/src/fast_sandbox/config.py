"""Where the SDK finds Fast Sandbox: explicit arguments, else environment variables, else the data
directory of the embedded instance (``fsb up``) on this machine, as the ``fsb`` CLI finds it.

========================  =======================================================================
``FSB_URL``               the control plane's fast-path API, e.g. ``http://127.0.0.1:7070``
                          (else the data directory's ``url`` file, written by ``fsb up``)
``FSB_TOKEN``             its API token (else the data directory's ``token`` file, only for the data
                          directory's own URL or one on this host's loopback: this host's token is
                          not sent to another host)
``FSB_TOKEN_FILE``        a file that holds the token and is renewed, read again once a minute (without
                          ``FSB_TOKEN``): on Kubernetes, the Pod's ServiceAccount token
                          (``/var/run/secrets/kubernetes.io/serviceaccount/token``), which the
                          controller takes as that user's, each call allowed by their RBAC
``FSB_PROXY_URL``         the sandbox proxy, e.g. ``http://127.0.0.1:7072``, which reaches the
                          sandboxes' daemons (else ``FSB_SANDBOX_URL``, the TypeScript SDK's name;
                          else what the control plane says, asked once: GetSandboxProxy)
``FSB_DATA_DIR``          the embedded instance's data directory (else ``/var/lib/fast-sandbox``
                          as root, ``$XDG_DATA_HOME/fast-sandbox`` or
                          ``~/.local/share/fast-sandbox`` otherwise)
========================  =======================================================================

When the URL in use is the data directory's, the sandboxes' access tokens are kept there too
(``access-tokens/<namespace>/<name>``, mode 0600), where ``fsb run`` keeps them: ``Sandbox.connect``
finds the token of a sandbox that ``fsb run`` or this SDK created.

The ``token`` and ``token_file`` arguments of ``create``, ``connect`` and ``list`` come before the
variables (``token`` before ``token_file``).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from ._token_file import TokenFile
from .errors import ValidationError

#: Deadline of a call to the control plane or the daemon, in seconds.
DEFAULT_REQUEST_TIMEOUT = 60.0


def default_data_dir() -> Path:
    """``FSB_DATA_DIR``, else the directory ``fsb up`` uses by default for this user."""
    configured = os.environ.get("FSB_DATA_DIR")
    if configured:
        return Path(configured)
    if hasattr(os, "getuid") and os.getuid() == 0:
        return Path("/var/lib/fast-sandbox")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fast-sandbox"


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class ConnectionConfig:
    """How to reach one Fast Sandbox: resolved once, shared by a handle and its sub-modules."""

    #: The control plane's fast-path API.
    url: str
    #: Its API token (``Authorization: Bearer``).
    token: str
    #: The sandbox proxy, which reaches each sandbox's daemon; ``None``: ask the control plane.
    proxy_url: Optional[str]
    #: Deadline of one call, in seconds (``None``: no deadline).
    request_timeout: Optional[float] = DEFAULT_REQUEST_TIMEOUT
    #: The embedded instance's data directory, when :attr:`url` is its (access tokens are kept there).
    data_dir: Optional[Path] = None
    #: Where :attr:`token` came from when it is read again as it is renewed (``FSB_TOKEN_FILE``).
    token_file: Optional[TokenFile] = field(default=None, compare=False)

    def current_token(self) -> str:
        """The API token to send now: the token file's as it is renewed, else :attr:`token`."""
        return self.token_file.current() if self.token_file is not None else self.token

    @staticmethod
    def resolve(
        url: Optional[str] = None,
        token: Optional[str] = None,
        proxy_url: Optional[str] = None,
        data_dir: Optional[str] = None,
        request_timeout: Optional[float] = DEFAULT_REQUEST_TIMEOUT,
        token_file: Optional[str] = None,
    ) -> ConnectionConfig:
        """Arguments first (``token``, else ``token_file``), then ``FSB_URL``/``FSB_TOKEN`` (else
        ``FSB_TOKEN_FILE``)/``FSB_PROXY_URL``, then the data directory."""
        directory = Path(data_dir) if data_dir else default_data_dir()
        embedded_url = _read(directory / "url")
        resolved_url = url or os.environ.get("FSB_URL") or embedded_url
        if not resolved_url:
            raise ValidationError(
                "url",
                f"Fast Sandbox is not running for data directory {directory}: start it with 'npx fsb up', "
                "or pass url= or set FSB_URL to the control plane's address",
            )
        check_url("url", resolved_url)
        same_instance = embedded_url is not None and embedded_url.rstrip("/") == resolved_url.rstrip("/")
        resolved_token = token
        renewed: Optional[TokenFile] = None
        if not resolved_token and token_file:
            renewed = TokenFile(Path(token_file), "token_file")
        elif not resolved_token and not os.environ.get("FSB_TOKEN") and os.environ.get("FSB_TOKEN_FILE"):
            renewed = TokenFile(Path(os.environ["FSB_TOKEN_FILE"]), "FSB_TOKEN_FILE")
        resolved_token = renewed.current() if renewed is not None else resolved_token or os.environ.get("FSB_TOKEN")
        if not resolved_token:
            # The data directory's token goes only to its own URL or to this host's loopback, as the CLI's
            # does: the token of this host's Fast Sandbox is not sent to another host a URL names.
            if not same_instance and not on_loopback(resolved_url):
                raise ValidationError(
                    "url" if url else "FSB_URL",
                    f"{resolved_url} is neither this data directory's Fast Sandbox ({directory}) nor on this host: "
                    "pass token= or token_file=, or set FSB_TOKEN or FSB_TOKEN_FILE, to its API token "
                    "(this host's token is not sent to another host)",
                )
            resolved_token = _read(directory / "token")
        if not resolved_token:
            raise ValidationError(
                "token",
                "no API token: pass token= or token_file=, set FSB_TOKEN or FSB_TOKEN_FILE, "
                f"or run 'fsb up' once so that {directory / 'token'} exists",
            )
        resolved_proxy = proxy_url or os.environ.get("FSB_PROXY_URL") or os.environ.get("FSB_SANDBOX_URL") or None
        if resolved_proxy:
            check_url("proxy_url", resolved_proxy)
        return ConnectionConfig(
            url=resolved_url.rstrip("/"),
            token=resolved_token,
            proxy_url=resolved_proxy.rstrip("/") if resolved_proxy else None,
            request_timeout=request_timeout,
            data_dir=directory if same_instance else None,
            token_file=renewed,
        )

    def saved_access_token(self, namespace: str, name: str) -> Optional[str]:
        """The access token ``fsb run`` or this SDK kept for the sandbox, if any."""
        if self.data_dir is None:
            return None
        return _read(self.data_dir / "access-tokens" / namespace / name)

    def save_access_token(self, namespace: str, name: str, access_token: str) -> None:
        """Keeps the token where ``fsb port-forward`` and :meth:`saved_access_token` find it (best effort)."""
        if self.data_dir is None or not access_token:
            return
        directory = self.data_dir / "access-tokens" / namespace
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = directory / name
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(f"{access_token}\n")
            os.chmod(path, 0o600)
        except OSError:
            pass  # a read-only data directory: the handle still has the token

    def forget_access_token(self, namespace: str, name: str) -> None:
        if self.data_dir is None:
            return
        with contextlib.suppress(OSError):
            (self.data_dir / "access-tokens" / namespace / name).unlink()


def on_loopback(url: str) -> bool:
    """Whether the URL names this host's loopback (127.0.0.0/8, ::1, localhost)."""
    host = (urlsplit(url).hostname or "").lower()
    return host == "localhost" or host.endswith(".localhost") or host == "::1" or re.fullmatch(r"127(\.\d{1,3}){3}", host) is not None


def check_url(field: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(field, f"{value!r} is not an http:// or https:// URL, e.g. http://127.0.0.1:7070")
