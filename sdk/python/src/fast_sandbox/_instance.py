"""What a sandbox handle (sync or async) keeps of its sandbox's record: the instance its daemon calls go to."""

from __future__ import annotations

from .models import SandboxInfo


class FollowsItsInstance:
    """A handle's record of its sandbox (``_info``). A new instance of the sandbox (a reset, an
    AutoRecreate) has a new id: once the handle reads it, daemon calls go to it from then on."""

    _record: SandboxInfo

    @property
    def _info(self) -> SandboxInfo:
        return self._record

    @_info.setter
    def _info(self, info: SandboxInfo) -> None:
        self._record = info
        daemon = self.__dict__.get("_daemon")
        if daemon is not None:
            daemon.sandbox_id = info.sandbox_id
            daemon.phase = info.phase
