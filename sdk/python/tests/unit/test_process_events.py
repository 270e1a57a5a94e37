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
    events = ProcessEvents("command 'x'", "command 'x' in sandbox sb-1", None, kills_at_deadline=True)
    with pytest.raises(FsbError, match="first message is not the process's start"):
        events.accept_start(data("stdout", b"too early"))
    assert events.accept_start({"event": {"start": {"pid": 7}}}) == 7


def test_keepalives_yield_nothing_and_the_end_gives_the_result() -> None:
    events = ProcessEvents("command 'x'", "command 'x' in sandbox sb-1", 60, kills_at_deadline=True)
    assert events.accept({"event": {"keepalive": {}}}) == []
    assert events.accept(data("stdout", b"a")) == [("stdout", "a")]
    assert events.accept(data("pty", b"\x1b[J")) == [("pty", b"\x1b[J")]
    assert events.accept({"event": {"end": {"exitCode": 0, "exited": True, "status": "exit status 0"}}}) == []
    result = events.result()
    assert (result.stdout, result.exit_code) == ("a", 0)


def test_no_end_means_the_connection_was_cut() -> None:
    with pytest.raises(UnavailableError, match="without the process's end"):
        ProcessEvents("command 'x'", "command 'x' in sandbox sb-1", None, kills_at_deadline=True).result()


def start(timeout: float, *, kills_at_deadline: bool = True) -> ProcessEvents:
    return ProcessEvents("command 'x'", "command 'x' in sandbox sb-1", timeout, kills_at_deadline=kills_at_deadline)


KILLED = {"event": {"end": {"exitCode": -1, "exited": False, "status": "signal: killed", "error": "signal: killed"}}}
EXIT_2 = {"event": {"end": {"exitCode": 2, "exited": True, "status": "exit status 2"}}}


def test_a_kill_after_the_deadline_is_a_timeout_and_before_it_an_exit() -> None:
    early = start(60)
    early.accept(KILLED)
    with pytest.raises(CommandExitError) as raised:
        early.result()
    assert raised.value.error == "signal: killed"
    late = start(0.01)
    time.sleep(0.02)
    late.accept(KILLED)
    with pytest.raises(TimeoutError, match=r"within 0\.01s \(its timeout\) and was killed"):
        late.result()


def test_an_exit_is_judged_when_it_arrived_not_when_the_result_is_asked_for() -> None:
    # A background command that failed at once, waited for after its deadline passed: its exit, not a timeout.
    failed = start(0.01)
    failed.accept(EXIT_2)
    time.sleep(0.02)
    with pytest.raises(CommandExitError) as raised:
        failed.result()
    assert raised.value.exit_code == 2
    # An exit code of its own after the deadline: the command exited (the daemon's kill gives -1).
    exited_late = start(0.01)
    time.sleep(0.02)
    exited_late.accept(EXIT_2)
    with pytest.raises(CommandExitError):
        exited_late.result()


def test_following_a_process_kills_nothing_at_its_deadline() -> None:
    followed = start(0.01, kills_at_deadline=False)
    followed.accept_start({"event": {"start": {"pid": 7}}})
    time.sleep(0.02)
    followed.accept(KILLED)  # killed by someone else
    with pytest.raises(CommandExitError):
        followed.result()
    stream_deadline = followed.failure(TimeoutError("deadline_exceeded"))
    assert isinstance(stream_deadline, TimeoutError)
    assert "killed" not in str(stream_deadline)
    assert "keeps running" in str(stream_deadline) and "commands.connect(7)" in str(stream_deadline)
