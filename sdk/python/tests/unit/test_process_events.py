"""How a process's event stream is read: start first, output decoded, keepalives skipped, the end
deciding between a result, CommandExitError and TimeoutError."""

from __future__ import annotations

import base64
import time
from typing import Any, Dict

import pytest

from fast_sandbox import CommandExitError, FsbError, TimeoutError, UnavailableError
from fast_sandbox._protocol import ProcessEvents


def data(stream: str, payload: bytes) -> Dict[str, Any]:
    return {"event": {"data": {stream: base64.b64encode(payload).decode()}}}


def test_the_first_message_must_be_the_start_event() -> None:
    events = ProcessEvents("command 'x'", "command 'x' in sandbox sb-1", None)
    with pytest.raises(FsbError, match="first message is not the process's start"):
        events.accept_start(data("stdout", b"too early"))
    assert events.accept_start({"event": {"start": {"pid": 7}}}) == 7


def test_keepalives_yield_nothing_and_the_end_gives_the_result() -> None:
    events = ProcessEvents("command 'x'", "command 'x' in sandbox sb-1", 60)
    assert events.accept({"event": {"keepalive": {}}}) == []
    assert events.accept(data("stdout", b"a")) == [("stdout", "a")]
    assert events.accept(data("pty", b"\x1b[J")) == [("pty", b"\x1b[J")]
    assert events.accept({"event": {"end": {"exitCode": 0, "exited": True, "status": "exit status 0"}}}) == []
    result = events.result()
    assert (result.stdout, result.exit_code) == ("a", 0)


def test_no_end_means_the_connection_was_cut() -> None:
    with pytest.raises(UnavailableError, match="without the process's end"):
        ProcessEvents("command 'x'", "command 'x' in sandbox sb-1", None).result()


def test_a_kill_after_the_deadline_is_a_timeout_and_before_it_an_exit() -> None:
    killed = {"event": {"end": {"exitCode": -1, "exited": False, "status": "signal: killed", "error": "signal: killed"}}}
    early = ProcessEvents("command 'x'", "command 'x' in sandbox sb-1", 60)
    early.accept(killed)
    with pytest.raises(CommandExitError) as raised:
        early.result()
    assert raised.value.error == "signal: killed"
    late = ProcessEvents("command 'x'", "command 'x' in sandbox sb-1", 0.01)
    late.accept(killed)
    time.sleep(0.02)
    with pytest.raises(TimeoutError, match=r"within 0\.01s"):
        late.result()
