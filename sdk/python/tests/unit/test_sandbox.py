"""The blocking client against the in-memory fake: what it sends on the wire and what it makes of
the answers."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Tuple

import httpx
import pytest

from fast_sandbox import (
    CommandExitError,
    EntryInfo,
    FailedPreconditionError,
    FilesystemEventType,
    FileType,
    NotFoundError,
    PtySize,
    Sandbox,
    SandboxInfo,
    SandboxStats,
    TimeoutError,
    UnavailableError,
    ValidationError,
)
from fast_sandbox import _protocol as protocol

from fake_fast_sandbox import POOL_IMAGE, FakeFastSandbox, FakeProcess

Options = Dict[str, Any]


@pytest.fixture
def fake(fake_and_options: Tuple[FakeFastSandbox, Options]) -> FakeFastSandbox:
    return fake_and_options[0]


@pytest.fixture
def sandbox(fake_and_options: Tuple[FakeFastSandbox, Options]) -> Sandbox:
    fake, options = fake_and_options
    return Sandbox.create(transport=fake.transport(), **options)


# -- the sandbox's life ----------------------------------------------------------------------------


def test_create_sends_the_spec_and_keeps_the_access_token(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    before = datetime.now(timezone.utc)
    sandbox = Sandbox.create(
        "busybox",
        pool="default",
        name="sb-one",
        envs={"A": "1"},
        cwd="/tmp",
        command=["sleep", "1d"],
        exposed_ports=[8080],
        labels={"team": "x"},
        timeout=120,
        transport=fake.transport(),
        **options,
    )
    [body] = fake.bodies("/CreateSandbox")
    spec = body["spec"]
    expires = datetime.fromisoformat(spec.pop("expireTime").replace("Z", "+00:00"))
    assert before + timedelta(seconds=119) < expires < datetime.now(timezone.utc) + timedelta(seconds=121)
    assert spec == {
        "image": "busybox",
        "poolRef": "default",
        "command": ["sleep", "1d"],
        "envs": [{"name": "A", "value": "1"}],
        "workingDir": "/tmp",
        "exposedPorts": [8080],
    }
    assert body["labels"] == {"team": "x"} and body["name"] == "sb-one" and body["namespace"] == "default"
    assert (sandbox.name, sandbox.namespace, sandbox.access_token) == ("sb-one", "default", "token-of-sb-one")
    assert sandbox.sandbox_id and sandbox.info.phase == "Running" and sandbox.info.labels == {"team": "x"}
    assert sandbox.info.expires_at is not None and abs((sandbox.info.expires_at - expires).total_seconds()) < 0.01


def test_create_sends_a_request_id_and_retries_once_with_it_when_the_answer_was_lost(
    fake_and_options: Tuple[FakeFastSandbox, Options],
) -> None:
    fake, options = fake_and_options
    fake.create_answers_lost = 1
    sandbox = Sandbox.create(transport=fake.transport(), **options)
    first, retry = fake.bodies("/CreateSandbox")
    assert len(first["requestId"]) == 32 and retry["requestId"] == first["requestId"]
    assert len(fake.sandboxes) == 1, "the retry found the first attempt's sandbox instead of making a second"
    assert sandbox.access_token == f"rotated-{sandbox.sandbox_id}"
    assert sandbox.commands.list() == []  # the new token reaches the daemon
    other = Sandbox.create(request_id="mine", transport=fake.transport(), **options)
    assert fake.bodies("/CreateSandbox")[-1]["requestId"] == "mine"
    assert Sandbox.create(request_id="mine", transport=fake.transport(), **options).name == other.name
    assert len(fake.sandboxes) == 2


def test_create_does_not_retry_the_control_planes_own_errors_nor_more_than_once(
    fake_and_options: Tuple[FakeFastSandbox, Options],
) -> None:
    fake, options = fake_and_options
    fake.create_refusals = [httpx.Response(503, json={"code": "unavailable", "message": "busy"}, headers={"fsb-error-code": "unavailable"})]
    with pytest.raises(UnavailableError, match="busy"):
        Sandbox.create(transport=fake.transport(), **options)
    assert len(fake.calls("/CreateSandbox")) == 1
    fake.create_answers_lost = 2
    with pytest.raises(TimeoutError):
        Sandbox.create(transport=fake.transport(), **options)
    assert len(fake.calls("/CreateSandbox")) == 3


def test_create_without_an_image_runs_the_pools_and_without_a_timeout_never_expires(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    [body] = fake.bodies("/CreateSandbox")
    assert body["spec"]["image"] == POOL_IMAGE
    assert "expireTime" not in body["spec"]
    assert fake.bodies("/GetSandboxPool") == [{"namespace": "default", "name": "default"}]


def test_create_with_timeout_0_makes_a_sandbox_that_lives_until_killed(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    Sandbox.create(timeout=0, transport=fake.transport(), **options)
    [body] = fake.bodies("/CreateSandbox")
    assert "expireTime" not in body["spec"]


def test_a_terminal_is_utf_8_unless_told_otherwise(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["/bin/bash"] = lambda process: None
    sandbox.pty.create(PtySize(rows=24, cols=80), envs={"LANG": "de_DE.UTF-8"})
    [body] = fake.bodies("/process.Process/Start")
    assert body["process"]["envs"] == {"TERM": "xterm-256color", "LANG": "de_DE.UTF-8", "LC_ALL": "C.UTF-8"}


def test_create_returns_once_the_daemon_answers(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    fake.health_before_ready = [502, 502, 503]
    Sandbox.create(transport=fake.transport(), **options)
    assert len(fake.calls("/health")) == 4
    assert fake.health_before_ready == []


def test_a_sandbox_whose_daemon_never_answers_is_deleted_and_the_create_fails(
    fake_and_options: Tuple[FakeFastSandbox, Options], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, options = fake_and_options
    monkeypatch.setattr("fast_sandbox._protocol.DAEMON_READY_TIMEOUT", 0.3)
    fake.health_before_ready = [502] * 1000
    with pytest.raises(UnavailableError) as raised:
        Sandbox.create(name="sb-nodaemon", transport=fake.transport(), **options)
    assert "did not answer within 0.3s" in str(raised.value) and "the sandbox was deleted" in str(raised.value)
    assert fake.sandboxes == {}


def test_bad_input_is_refused_before_anything_is_created(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    with pytest.raises(ValidationError) as raised:
        Sandbox.create(exposed_ports=[70000], transport=fake.transport(), **options)
    assert raised.value.field == "spec.exposedPorts[0]"
    with pytest.raises(ValidationError, match="timeout"):
        Sandbox.create(timeout=-1, transport=fake.transport(), **options)
    with pytest.raises(NotFoundError, match="pool default/nosuch"):
        Sandbox.create(pool="nosuch", transport=fake.transport(), **options)
    assert fake.sandboxes == {}


def test_set_timeout_moves_the_end_and_retries_when_the_sandbox_changed_meanwhile(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.update_conflicts = 2
    before = datetime.now(timezone.utc)
    info = sandbox.set_timeout(600)
    assert info.expires_at is not None
    assert before + timedelta(seconds=599) < info.expires_at < datetime.now(timezone.utc) + timedelta(seconds=601)
    updates = fake.bodies("/UpdateSandbox")
    assert len(updates) == 3
    assert updates[-1]["spec"]["image"] == POOL_IMAGE  # the whole spec, immutable fields unchanged
    assert sandbox.set_timeout(None).expires_at is None


def test_kill_deletes_once_and_then_says_it_was_gone(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    assert sandbox.kill() is True
    assert fake.sandboxes == {}
    assert sandbox.kill() is False
    assert sandbox.is_running() is False


def test_context_manager_kills_the_sandbox(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    with Sandbox.create(transport=fake.transport(), **options) as sandbox:
        assert sandbox.is_running()
    assert fake.sandboxes == {}


def test_list_reads_page_by_page(fake_and_options: Tuple[FakeFastSandbox, Options], monkeypatch: pytest.MonkeyPatch) -> None:
    fake, options = fake_and_options
    monkeypatch.setattr(protocol, "LIST_PAGE_SIZE", 2)
    for name in ["sb-a", "sb-b", "sb-c", "sb-d", "sb-e"]:
        Sandbox.create(name=name, transport=fake.transport(), **options)
    assert [info.name for info in Sandbox.list(transport=fake.transport(), **options)] == ["sb-a", "sb-b", "sb-c", "sb-d", "sb-e"]
    pages = fake.bodies("/ListSandboxes")
    assert [(page["pageSize"], page["pageToken"]) for page in pages] == [(2, ""), (2, "2"), (2, "4")]


def test_list_filters_by_labels_and_connect_finds_by_name_or_id(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    one = Sandbox.create(name="sb-a", labels={"run": "1"}, transport=fake.transport(), **options)
    Sandbox.create(name="sb-b", labels={"run": "2"}, transport=fake.transport(), **options)
    assert [info.name for info in Sandbox.list(labels={"run": "1"}, transport=fake.transport(), **options)] == ["sb-a"]
    assert len(Sandbox.list(transport=fake.transport(), **options)) == 2
    by_name = Sandbox.connect("sb-a", access_token=one.access_token, transport=fake.transport(), **options)
    by_id = Sandbox.connect(one.sandbox_id, access_token=one.access_token, transport=fake.transport(), **options)
    assert by_name.sandbox_id == by_id.sandbox_id == one.sandbox_id
    with pytest.raises(NotFoundError):
        Sandbox.connect("sb-none", transport=fake.transport(), **options)


def test_without_its_access_token_a_handle_manages_the_sandbox_but_cannot_reach_its_daemon(
    sandbox: Sandbox, fake_and_options: Tuple[FakeFastSandbox, Options]
) -> None:
    fake, options = fake_and_options
    handle = Sandbox.connect(sandbox.name, transport=fake.transport(), **options)
    assert handle.access_token is None
    with pytest.raises(FailedPreconditionError, match="rotate_access_token"):
        handle.commands.run("true")
    assert handle.get_info().name == sandbox.name
    token = handle.rotate_access_token()
    assert handle.access_token == token != sandbox.access_token
    fake.programs["true"] = lambda process: process.exit(0)
    assert handle.commands.run("true").exit_code == 0


def test_a_sandbox_without_an_instance_yet_says_so_before_calling_its_daemon(
    fake: FakeFastSandbox, fake_and_options: Tuple[FakeFastSandbox, Options]
) -> None:
    _, options = fake_and_options
    record = fake.add_sandbox("starting")
    record["status"] = {"phase": "Pending"}
    handle = Sandbox.connect("starting", access_token="a-token", transport=fake.transport(), **options)
    with pytest.raises(
        FailedPreconditionError, match=r"sandbox starting has no instance yet \(phase Pending\); connect again once it runs"
    ):
        handle.commands.run("true")
    with pytest.raises(FailedPreconditionError, match="no instance yet"):
        handle.files.read("/etc/hosts")
    assert fake.calls("/process.Process/Start") == [] and fake.calls("/files") == []


def test_negative_durations_and_depths_below_1_are_refused_before_anything_is_sent(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["true"] = lambda process: process.exit(0)
    with pytest.raises(ValidationError, match=r"^timeout: -1 is not a duration; give 0 or more seconds"):
        sandbox.commands.run("true", timeout=-1)
    with pytest.raises(ValidationError, match=r"^request_timeout: -1 is not a duration"):
        sandbox.commands.run("true", request_timeout=-1)
    with pytest.raises(ValidationError, match=r"^timeout: "):
        sandbox.commands.connect(1, timeout=float("nan"))
    with pytest.raises(ValidationError, match=r"^depth: 0 is not a depth; give 1"):
        sandbox.files.list("/tmp", depth=0)
    assert fake.calls("/process.Process/Start") == [] and fake.calls("/ListDir") == []
    assert sandbox.commands.run("true", timeout=0).exit_code == 0


def test_a_new_instance_read_by_get_info_receives_the_daemon_calls(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    # A reset or an AutoRecreate gives the sandbox a new instance, with a new id.
    fake.programs["true"] = lambda process: process.exit(0)
    sandbox.commands.run("true")
    record = fake.sandboxes[f"default/{sandbox.name}"]
    old_id = record["status"]["sandboxID"]
    new_id = "bbbbbbbbbbbbbbbbbbbb"
    record["status"]["sandboxID"] = new_id
    fake.access_tokens[new_id] = fake.access_tokens.pop(old_id)
    assert sandbox.get_info().sandbox_id == new_id
    assert sandbox.commands.run("true").exit_code == 0
    assert [call.headers["e2b-sandbox-id"] for call in fake.calls("/process.Process/Start")] == [old_id, new_id]


def test_logs_stream_the_sandboxs_output(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    chunks = list(sandbox.logs())
    assert len(chunks) == 2
    assert b"".join(chunks) == fake.logs
    assert fake.bodies("/Logs") == [{"namespace": "default", "name": sandbox.name, "follow": False}]
    sandbox.kill()
    with pytest.raises(NotFoundError):
        list(sandbox.logs())


def test_logs_tail_asks_for_the_last_lines_and_refuses_what_is_no_count_of_lines(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    assert b"".join(sandbox.logs(tail=2)) == fake.logs
    list(sandbox.logs(tail=0, follow=True, timeout=0.2))
    list(sandbox.logs())
    key = {"namespace": "default", "name": sandbox.name}
    assert fake.bodies("/Logs") == [
        {**key, "follow": False, "tailLines": 2},
        {**key, "follow": True, "tailLines": 0},
        {**key, "follow": False},
    ], "tailLines only when tail is given (None: all of the log)"
    for tail in (-1, 1.5, "3", True, 2**31):
        with pytest.raises(ValidationError) as refused:
            list(sandbox.logs(tail=tail))  # type: ignore[arg-type]
        assert refused.value.field == "tail"
        assert str(refused.value).endswith(f"tail: must be a whole number of lines ≥ 0 (at most 2147483647), got {tail!r}")
    assert len(fake.calls("/Logs")) == 3, "a refused tail asks nothing"


def test_a_follow_ends_at_its_timeout_as_at_the_exit_and_waits_for_output_unless_given_a_request_timeout(
    sandbox: Sandbox, fake: FakeFastSandbox
) -> None:
    # The server ends the follow with deadline_exceeded at its Connect deadline: the iteration just ends.
    assert b"".join(sandbox.logs(follow=True, timeout=0.2)) == fake.logs
    [followed] = fake.calls("/Logs")
    assert followed.headers["connect-timeout-ms"] == "200"
    # A silent command is followed as long as it runs: the control plane's keepalives show the connection lives.
    assert followed.headers["keepalive-ping-interval"] == "30"
    assert followed.extensions["timeout"]["read"] == 60
    list(sandbox.logs(follow=True, request_timeout=5))
    assert fake.calls("/Logs")[-1].extensions["timeout"]["read"] == 5
    assert "keepalive-ping-interval" not in fake.calls("/Logs")[-1].headers
    list(sandbox.logs())
    assert fake.calls("/Logs")[-1].extensions["timeout"]["read"] == 60


def test_a_follow_on_a_control_plane_gone_silent_fails_with_unavailable_error(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.logs_go_silent = True
    chunks: List[bytes] = []
    with pytest.raises(UnavailableError, match="silent for 60s"):
        for chunk in sandbox.logs(follow=True):
            chunks.append(chunk)
    assert b"".join(chunks) == fake.logs, "the output came, the keepalive was not handed out as output"
    assert all(chunks)


# -- commands --------------------------------------------------------------------------------------


def echo_program(process: FakeProcess) -> None:
    process.emit("stdout", b"one\n")
    process.emit("stderr", b"warn\n")
    process.keepalive()
    process.emit("stdout", b"two\n")
    process.exit(0)


def test_run_streams_output_to_callbacks_and_returns_the_result(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["echo"] = echo_program
    seen: List[Tuple[str, str]] = []
    result = sandbox.commands.run(
        "echo",
        envs={"K": "V"},
        cwd="/tmp",
        user="app",
        timeout=30,
        on_stdout=lambda text: seen.append(("out", text)),
        on_stderr=lambda text: seen.append(("err", text)),
    )
    assert (result.exit_code, result.stdout, result.stderr) == (0, "one\ntwo\n", "warn\n")
    assert seen == [("out", "one\n"), ("err", "warn\n"), ("out", "two\n")]
    [request] = fake.calls("/process.Process/Start")
    assert request.headers["e2b-sandbox-id"] == sandbox.sandbox_id
    assert request.headers["e2b-sandbox-port"] == "49983"
    assert request.headers["x-access-token"] == sandbox.access_token
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"app:").decode()
    assert request.headers["connect-timeout-ms"] == "30000"
    assert request.headers["keepalive-ping-interval"] == "30"
    [body] = fake.bodies("/process.Process/Start")
    assert body == {"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo"], "envs": {"K": "V"}, "cwd": "/tmp"}, "stdin": False}


def test_a_program_and_its_arguments_run_as_they_are(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["/bin/ls"] = lambda process: process.exit(0)
    sandbox.commands.run(["/bin/ls", "-l", "/"], tag="listing", timeout=None)
    [body] = fake.bodies("/process.Process/Start")
    assert body["process"]["cmd"] == "/bin/ls" and body["process"]["args"] == ["-l", "/"] and body["tag"] == "listing"
    assert "connect-timeout-ms" not in fake.calls("/process.Process/Start")[0].headers
    with pytest.raises(ValidationError, match="empty"):
        sandbox.commands.run("  ")
    with pytest.raises(ValidationError, match="envs"):
        sandbox.commands.run("x", envs={"A=B": "1"})


def test_a_non_zero_exit_raises_with_the_output(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    def fails(process: FakeProcess) -> None:
        process.emit("stdout", b"before\n")
        process.emit("stderr", b"first\nlast words\n")
        process.exit(3)

    fake.programs["fails"] = fails
    with pytest.raises(CommandExitError) as raised:
        sandbox.commands.run("fails")
    error = raised.value
    assert (error.exit_code, error.stdout, error.stderr, error.code) == (3, "before\n", "first\nlast words\n", "failed_precondition")
    assert str(error) == f"command 'fails' in sandbox {sandbox.name} exited with code 3: last words"


def test_utf8_split_across_chunks_is_decoded_whole(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    text = "héllo wörld ✓\n".encode()

    def split(process: FakeProcess) -> None:
        for index in range(len(text)):
            process.emit("stdout", text[index : index + 1])
        process.emit("stdout", b"\xe2\x9c")  # an incomplete character at the very end
        process.exit(0)

    fake.programs["split"] = split
    chunks: List[str] = []
    result = sandbox.commands.run("split", on_stdout=chunks.append)
    assert result.stdout == "héllo wörld ✓\n\ufffd"
    assert "".join(chunks) == result.stdout


def test_a_command_past_its_timeout_is_a_timeout_error(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    def killed_at_deadline(process: FakeProcess) -> None:
        threading.Timer(0.2, process.exit, args=(-1, "signal: killed")).start()

    fake.programs["sleep 10"] = killed_at_deadline
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.1s"):
        sandbox.commands.run("sleep 10", timeout=0.1)


def test_the_daemon_ending_a_stream_with_deadline_exceeded_is_a_timeout_error(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["slow"] = lambda process: process.fail("deadline_exceeded", "the deadline passed")
    with pytest.raises(TimeoutError) as raised:
        sandbox.commands.run("slow", timeout=1)
    assert str(raised.value) == (
        f"command 'slow' in sandbox {sandbox.name} did not finish within 1s (its timeout) and was killed; "
        "pass a larger timeout, or None for no limit"
    )
    assert "the deadline passed" in str(raised.value.__cause__)


def test_a_background_command_that_failed_at_once_is_its_exit_even_when_waited_for_after_its_timeout(
    sandbox: Sandbox, fake: FakeFastSandbox
) -> None:
    fake.programs["fails"] = lambda process: process.exit(2)
    handle = sandbox.commands.run("fails", background=True, timeout=0.1)
    time.sleep(0.2)
    with pytest.raises(CommandExitError) as raised:
        handle.wait(timeout=5)
    assert raised.value.exit_code == 2


def test_following_a_process_past_its_timeout_does_not_say_it_was_killed(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["server"] = lambda process: None
    started = sandbox.commands.run("server", background=True, timeout=None)
    follower = sandbox.commands.connect(started.pid, timeout=0.1)
    # What the daemon's Connect answers at its deadline: the stream ends, the process goes on.
    fake.processes[started.pid].fail("deadline_exceeded", "context deadline exceeded")
    with pytest.raises(TimeoutError) as raised:
        follower.wait(timeout=5)
    assert "killed" not in str(raised.value)
    assert f"keeps running: commands.connect({started.pid})" in str(raised.value)


def test_a_stream_silent_past_its_keepalives_is_a_lost_connection_not_a_timeout(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["quiet"] = lambda process: None
    handle = sandbox.commands.run("quiet", background=True, timeout=30)
    [start] = fake.calls("/process.Process/Start")
    assert start.extensions["timeout"]["read"] == protocol.STREAM_SILENCE_TIMEOUT
    fake.processes[handle.pid].go_silent()
    with pytest.raises(UnavailableError) as raised:
        handle.wait(timeout=5)
    assert f"silent for {protocol.STREAM_SILENCE_TIMEOUT:g}s" in str(raised.value)
    assert "killed" not in str(raised.value)


def test_a_run_interrupted_while_it_waits_kills_its_command(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["sleep"] = lambda process: process.emit("stdout", b"started\n")

    def interrupt(_: str) -> None:
        raise KeyboardInterrupt  # as Ctrl-C's signal handler raises it in the waiting thread

    with pytest.raises(KeyboardInterrupt):
        sandbox.commands.run("sleep", on_stdout=interrupt)
    assert fake.calls("/process.Process/SendSignal")
    assert sandbox.commands.list() == []


@contextlib.contextmanager
def interrupted_after(*delays: float) -> Iterator[None]:
    """SIGINTs to this process (Ctrl-C) after each delay, handled in the main thread; none after the block."""
    timers = [threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)) for delay in delays]
    for timer in timers:
        timer.start()
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()


def test_a_run_interrupted_while_it_starts_kills_its_command_once_its_pid_came(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["sleep"] = lambda process: None
    fake.programs["/bin/bash"] = lambda process: None
    fake.start_delay = 0.5
    with interrupted_after(0.1), pytest.raises(KeyboardInterrupt):
        sandbox.commands.run("sleep")
    assert fake.calls("/process.Process/SendSignal"), "the started command is killed"
    assert sandbox.commands.list() == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupted_after(0.1), pytest.raises(KeyboardInterrupt):
        sandbox.pty.create()
    assert len(fake.calls("/process.Process/SendSignal")) == 2, "a terminal too"
    assert sandbox.commands.list() == []


def test_a_second_interrupt_while_it_starts_interrupts_at_once(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["sleep"] = lambda process: None
    fake.start_delay = 0.6
    with interrupted_after(0.1, 0.2), pytest.raises(KeyboardInterrupt):
        sandbox.commands.run("sleep")
    assert not fake.calls("/process.Process/SendSignal"), "raised during the start: no pid to kill"
    assert len(sandbox.commands.list()) == 1, "left to its timeout"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_background_commands_can_be_waited_for_killed_and_fed(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    def cat(process: FakeProcess) -> None:
        pass

    def cat_input(process: FakeProcess) -> None:
        process.emit("stdout", process.stdin[-1].upper())

    fake.programs["cat"] = cat
    fake.programs["cat:stdin"] = cat_input
    fake.programs["cat:eof"] = lambda process: process.exit(0)
    received: List[str] = []
    arrived = threading.Event()

    def on_stdout(text: str) -> None:
        received.append(text)
        arrived.set()

    handle = sandbox.commands.run("cat", background=True, stdin=True, on_stdout=on_stdout)
    assert handle.pid > 0 and handle.exit_code is None
    assert [process.pid for process in sandbox.commands.list()] == [handle.pid]
    handle.send_stdin("abc\n")
    assert arrived.wait(5), "the output of a background command arrives while it runs"
    with pytest.raises(TimeoutError, match="still running"):
        handle.wait(timeout=0.05)
    handle.send_stdin(b"def\n")
    handle.close_stdin()
    result = handle.wait(timeout=5)
    assert result.stdout == "ABC\nDEF\n" == "".join(received)
    assert fake.bodies("/SendInput")[0] == {"process": {"pid": handle.pid}, "input": {"stdin": base64.b64encode(b"abc\n").decode()}}

    fake.programs["sleep"] = lambda process: None
    sleeper = sandbox.commands.run("sleep", background=True)
    assert sleeper.kill() is True
    with pytest.raises(CommandExitError) as raised:
        sleeper.wait(timeout=5)
    assert raised.value.exit_code == -1 and raised.value.error == "signal: killed"
    assert "was stopped (signal: killed)" in str(raised.value)
    assert sandbox.commands.kill(sleeper.pid) is False
    assert sandbox.commands.list() == []


def test_connect_follows_a_running_process_and_disconnect_leaves_it_running(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["server"] = lambda process: process.emit("stdout", b"started\n")
    first = sandbox.commands.run("server", background=True)
    deadline = time.monotonic() + 5
    while first.stdout != "started\n" and time.monotonic() < deadline:
        time.sleep(0.01)
    first.disconnect()
    with pytest.raises(FailedPreconditionError, match="disconnected"):
        first.wait(timeout=5)
    process = fake.processes[first.pid]
    follower = sandbox.commands.connect(first.pid)
    process.emit("stdout", b"later\n")
    process.exit(0)
    assert follower.wait(timeout=5).stdout == "later\n"
    with pytest.raises(NotFoundError):
        sandbox.commands.connect(first.pid)


def test_a_command_that_cannot_start_fails_with_the_daemons_reason(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    with pytest.raises(ValidationError, match="no such program"):
        sandbox.commands.run("unknown-to-the-fake")


# -- terminals -------------------------------------------------------------------------------------


def test_a_terminal_gets_input_resizes_and_dies(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["/bin/bash"] = lambda process: process.emit("pty", b"$ ")
    fake.programs["-l:stdin"] = lambda process: process.emit("pty", process.stdin[-1])
    output = bytearray()
    echoed = threading.Event()

    def on_data(data: bytes) -> None:
        output.extend(data)
        if b"ls\r" in output:
            echoed.set()

    terminal = sandbox.pty.create(PtySize(rows=24, cols=80), on_data=on_data, envs={"X": "1"})
    [body] = fake.bodies("/process.Process/Start")
    assert body["pty"] == {"size": {"rows": 24, "cols": 80}}
    assert body["process"]["cmd"] == "/bin/bash" and body["process"]["args"] == ["-i", "-l"]
    assert body["process"]["envs"] == {"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "X": "1"} and body["stdin"] is True
    sandbox.pty.send_input(terminal.pid, "ls\r")
    assert echoed.wait(5)
    assert bytes(output) == b"$ ls\r"
    assert fake.bodies("/SendInput")[0]["input"] == {"pty": base64.b64encode(b"ls\r").decode()}
    sandbox.pty.resize(terminal.pid, PtySize(rows=40, cols=100))
    assert fake.processes[terminal.pid].pty == {"rows": 40, "cols": 100}
    assert sandbox.pty.kill(terminal.pid) is True
    with pytest.raises(CommandExitError):
        terminal.wait(timeout=5)
    with pytest.raises(ValidationError, match=r"size\.rows"):
        sandbox.pty.create(PtySize(rows=0, cols=80))


# -- files -----------------------------------------------------------------------------------------


def test_files_write_read_list_stat_move_and_remove(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    info = sandbox.files.write("/tmp/dir/a.txt", "héllo\n")
    assert (info.name, info.path, info.type) == ("a.txt", "/tmp/dir/a.txt", FileType.FILE)
    [write] = fake.calls("/files")
    assert write.method == "POST" and write.url.params["path"] == "/tmp/dir/a.txt"
    assert fake.files["/tmp/dir/a.txt"] == "héllo\n".encode()
    assert sandbox.files.read("/tmp/dir/a.txt") == "héllo\n"
    sandbox.files.write("/tmp/dir/b.bin", b"\x00\xff", user="app")
    assert fake.calls("/files")[-1].headers["authorization"] == "Basic " + base64.b64encode(b"app:").decode()
    assert sandbox.files.read("/tmp/dir/b.bin", format="bytes") == b"\x00\xff"
    entries = sandbox.files.list("/tmp/dir")
    assert [(entry.name, entry.type, entry.size) for entry in entries] == [("a.txt", FileType.FILE, 7), ("b.bin", FileType.FILE, 2)]
    stat = sandbox.files.get_info("/tmp/dir")
    assert isinstance(stat, EntryInfo) and stat.type == FileType.DIRECTORY and stat.permissions == "drwxr-xr-x"
    assert stat.modified_time == datetime(2026, 11, 30, 18, 41, 35, 123456, tzinfo=timezone.utc)
    assert sandbox.files.exists("/tmp/dir/a.txt") and not sandbox.files.exists("/tmp/dir/none")
    assert sandbox.files.rename("/tmp/dir/a.txt", "/tmp/dir/c.txt").path == "/tmp/dir/c.txt"
    sandbox.files.remove("/tmp/dir/c.txt")
    assert not sandbox.files.exists("/tmp/dir/c.txt")
    assert sandbox.files.make_dir("/tmp/new") is True
    assert sandbox.files.make_dir("/tmp/new") is False


def test_files_write_sends_the_mode_in_octal_and_refuses_one_that_is_not_permission_bits(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    sandbox.files.write("/tmp/run.sh", "#!/bin/sh\n", mode=0o755)
    assert fake.calls("/files")[-1].url.params["mode"] == "755"
    sandbox.files.write("/tmp/plain", "x")
    assert "mode" not in fake.calls("/files")[-1].url.params
    sent = len(fake.calls("/files"))
    for bad in (0o1000, -1, 1.5, "755", True):
        with pytest.raises(ValidationError, match="not a file mode; give permission bits from 0 to 0o777") as raised:
            sandbox.files.write("/tmp/other", "x", mode=bad)  # type: ignore[arg-type]
        assert raised.value.field == "mode"
    assert len(fake.calls("/files")) == sent


def test_file_errors_say_what_was_asked_of_which_sandbox(sandbox: Sandbox) -> None:
    with pytest.raises(NotFoundError, match=f"^reading /tmp/none in sandbox {sandbox.name}: open /tmp/none: no such file"):
        sandbox.files.read("/tmp/none")
    with pytest.raises(NotFoundError, match=f"^renaming /tmp/none in sandbox {sandbox.name}: rename /tmp/none"):
        sandbox.files.rename("/tmp/none", "/tmp/other")
    sandbox.files.remove("/tmp/none")  # what is not there is removed already
    with pytest.raises(ValidationError, match="is a directory"):
        sandbox.files.read("/tmp")
    with pytest.raises(NotFoundError):
        sandbox.files.list("/nowhere")


def test_watch_dir_collects_events_until_stopped(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    with sandbox.files.watch_dir("/tmp", recursive=True) as watcher:
        assert fake.bodies("/CreateWatcher") == [{"path": "/tmp", "recursive": True}]
        assert watcher.get_new_events() == []
        sandbox.files.write("/tmp/new.txt", "x")
        events = watcher.get_new_events()
        assert [(event.name, event.type) for event in events] == [("new.txt", FilesystemEventType.WRITE)]
        assert watcher.get_new_events() == []
    assert fake.watchers == {}


def test_a_sandbox_that_is_gone_answers_not_found_through_the_proxy(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.access_tokens.clear()
    with pytest.raises(NotFoundError, match="gone"):
        sandbox.files.read("/etc/hosts")
    assert sandbox.is_running() is False


def test_exists_and_kill_answer_false_for_the_daemons_not_found_but_raise_when_the_sandbox_is_gone(
    sandbox: Sandbox, fake: FakeFastSandbox
) -> None:
    assert sandbox.files.exists("/nowhere") is False
    assert sandbox.commands.kill(4242) is False
    assert sandbox.pty.kill(4242) is False
    fake.files["/etc/hosts"] = b"127.0.0.1 localhost\n"
    fake.access_tokens.clear()
    with pytest.raises(NotFoundError, match="gone"):
        sandbox.files.exists("/etc/hosts")
    with pytest.raises(NotFoundError, match="gone"):
        sandbox.commands.kill(4242)
    with pytest.raises(NotFoundError, match="gone"):
        sandbox.pty.kill(4242)


def test_wire_bodies_are_proto3_json(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["true"] = lambda process: process.exit(0)
    handle = sandbox.commands.run("true", background=True)
    handle.wait(timeout=5)
    assert sandbox.commands.kill(handle.pid) is False
    [signal] = fake.bodies("/SendSignal")
    assert json.dumps(signal) == json.dumps({"process": {"pid": handle.pid}, "signal": "SIGNAL_SIGKILL"})


def test_an_unreachable_control_plane_or_proxy_says_what_to_check(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options

    def refuse_everything(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(UnavailableError, match="npx fsb up"):
        Sandbox.create(transport=httpx.MockTransport(refuse_everything), **options)

    def refuse_the_proxy(request: httpx.Request) -> httpx.Response:
        if request.url.host == "proxy.test":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return fake.handle(request, sync=True)

    with pytest.raises(UnavailableError, match="FSB_PROXY_URL"):
        Sandbox.create(transport=httpx.MockTransport(refuse_the_proxy), **options)
    assert fake.sandboxes == {}, "a create whose daemon cannot be reached leaves nothing behind"


def test_sandbox_stats_read_proto3_json_numbers_as_strings_and_zeros_left_out() -> None:
    message = {"timestampMs": "1764800000500", "cpuUsedMillis": "250", "cpuLimitMillis": "500", "memoryUsedBytes": "67108864"}
    stats = SandboxStats.from_message({**message, "pids": 3, "nodeCpus": 2})
    assert stats.timestamp is not None and stats.timestamp.timestamp() == 1764800000.5
    assert (stats.cpu_used_millis, stats.cpu_limit_millis, stats.memory_used_bytes) == (250, 500, 64 << 20)
    assert (stats.pids, stats.node_cpus) == (3, 2)
    assert (stats.memory_limit_bytes, stats.disk_used_bytes, stats.cpu_usage_nanos, stats.disk_limit_bytes) == (0, 0, 0, 0)
    assert SandboxStats.from_message({"diskLimitBytes": "16777216"}).disk_limit_bytes == 16 << 20
    assert SandboxStats.from_message({}).timestamp is None


def test_sandbox_info_reads_the_instance_start_from_status_start_time() -> None:
    message = {
        "metadata": {"name": "web", "creationTimestamp": "2026-12-04T10:00:00Z"},
        "spec": {"image": "busybox", "poolRef": "default"},
        "status": {"phase": "Running", "startTime": "2026-12-04T11:30:00.250Z"},
    }
    info = SandboxInfo.from_message(message)
    assert info.started_at == datetime(2026, 12, 4, 11, 30, 0, 250000, tzinfo=timezone.utc)
    assert info.created_at == datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)
    assert SandboxInfo.from_message({"metadata": {"name": "web"}}).started_at is None


# -- what the reviewer found -------------------------------------------------------------------------


def test_a_file_object_is_written_from_where_it_stands_in_chunks(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    import io
    import os

    # A pipe: httpx would take its Content-Length (0) from fstat and the file would be replaced by an empty one.
    read_end, write_end = os.pipe()
    os.write(write_end, b"from a pipe")
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        sandbox.files.write("/tmp/piped", pipe)
    assert fake.files["/tmp/piped"] == b"from a pipe"
    # A partly read file: what is left of it, not a Content-Length of its whole size.
    partly = io.BytesIO(b"HEADER" + b"y" * 10)
    partly.read(6)
    sandbox.files.write("/tmp/rest", partly)
    assert fake.files["/tmp/rest"] == b"y" * 10
    request = fake.calls("/files")[-1]
    assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
    with pytest.raises(ValidationError, match="binary mode"):
        sandbox.files.write("/tmp/text", io.StringIO("text"))  # type: ignore[arg-type]


def test_any_bytes_like_value_is_written(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    import array

    sandbox.files.write("/tmp/a", bytearray(b"abc"))
    sandbox.files.write("/tmp/b", memoryview(b"xabcx")[1:4])
    sandbox.files.write("/tmp/c", array.array("B", [1, 2]))  # type: ignore[arg-type]
    assert (fake.files["/tmp/a"], fake.files["/tmp/b"], fake.files["/tmp/c"]) == (b"abc", b"abc", b"\x01\x02")
    with pytest.raises(ValidationError, match="cannot be written"):
        sandbox.files.write("/tmp/d", 12)  # type: ignore[arg-type]


def test_a_health_poll_without_an_answer_in_time_is_not_ready_yet(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    inner = fake.transport()
    polls: List[Dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            polls.append(request.extensions["timeout"])
            if len(polls) == 1:
                raise httpx.ReadTimeout("no answer in time", request=request)
        return inner.handle_request(request)

    sandbox = Sandbox.create(transport=httpx.MockTransport(handler), request_timeout=30, **options)
    assert sandbox.name in [key.split("/")[1] for key in fake.sandboxes]
    assert len(polls) == 2 and fake.calls("/DeleteSandbox") == []
    # Each poll: the request timeout, capped by what is left of the wait (20 s).
    assert all(poll["read"] <= protocol.DAEMON_READY_TIMEOUT for poll in polls)


def test_a_health_poll_timing_out_until_the_end_fails_the_create_as_not_ready(
    fake_and_options: Tuple[FakeFastSandbox, Options], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, options = fake_and_options
    monkeypatch.setattr("fast_sandbox._protocol.DAEMON_READY_TIMEOUT", 0.3)
    inner = fake.transport()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            raise httpx.ReadTimeout("no answer in time", request=request)
        return inner.handle_request(request)

    with pytest.raises(UnavailableError, match=r"did not answer within 0.3s \(last: no answer within"):
        Sandbox.create(transport=httpx.MockTransport(handler), **options)
    assert fake.sandboxes == {}


def test_a_create_whose_connection_was_reset_is_retried_with_its_request_id(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    from fake_fast_sandbox import connect_error

    fake, options = fake_and_options
    # Connect's aborted without fsb-error-code: the transport's, not the control plane's conflict.
    fake.create_refusals.append(connect_error(409, "aborted", "connection reset mid-call"))
    Sandbox.create(transport=fake.transport(), **options)
    first, second = fake.bodies("/CreateSandbox")
    assert first["requestId"] == second["requestId"]


def test_a_command_with_a_very_long_timeout_still_starts(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    fake.programs["true"] = lambda process: process.exit(0)
    sandbox.commands.run("true", timeout=10**7)
    assert fake.calls("/process.Process/Start")[-1].headers["connect-timeout-ms"] == "9999999999"


# -- what the exploratory test found -----------------------------------------------------------------


def test_a_create_whose_answer_never_came_names_the_sandbox_it_may_still_make(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    fake.create_answers_lost = 2  # both attempts: the sandbox is made, the caller never hears of it
    with pytest.raises(TimeoutError) as raised:
        Sandbox.create(transport=fake.transport(), **options)
    [made] = fake.sandboxes.values()
    name = made["metadata"]["name"]
    request_id = fake.bodies("/CreateSandbox")[0]["requestId"]
    assert name == protocol.request_sandbox_name("default", request_id)
    message = str(raised.value)
    assert f"; the sandbox may still be made, as default/{name} (request id {request_id}): " in message
    assert f"request_id={request_id!r} answers with it, and Sandbox.connect({name!r}).kill() deletes it" in message
    assert Sandbox.connect(name, transport=fake.transport(), **options).kill() is True
    # The caller's name, namespace and request id, as given.
    fake.create_answers_lost = 2
    with pytest.raises(TimeoutError) as named:
        Sandbox.create(name="sb-mine", namespace="team", request_id="req-7", transport=fake.transport(), **options)
    assert "as team/sb-mine (request id req-7)" in str(named.value)
    assert "Sandbox.connect('sb-mine', namespace='team').kill()" in str(named.value)
    # An answer of the control plane's own: nothing was made that the caller does not know of.
    fake.create_refusals = [httpx.Response(503, json={"code": "unavailable", "message": "busy"}, headers={"fsb-error-code": "unavailable"})]
    with pytest.raises(UnavailableError) as refused:
        Sandbox.create(transport=fake.transport(), **options)
    assert "may still be made" not in str(refused.value)


def test_paths_are_text_and_checked_before_anything_is_sent(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    from pathlib import PurePosixPath

    fake.files["/tmp/x"] = b"x"
    # bytes and path-like objects are the path they spell (UTF-8), not their repr.
    assert sandbox.files.read(b"/tmp/x") == "x"
    assert sandbox.files.read(PurePosixPath("/tmp") / "x") == "x"
    assert [request.url.params["path"] for request in fake.calls("/files")] == ["/tmp/x", "/tmp/x"]
    assert sandbox.files.get_info(b"/tmp/x").path == "/tmp/x"
    before = len(fake.requests)
    with pytest.raises(ValidationError, match=r"^path: is empty; give a path in the sandbox, e.g. /tmp/data.txt$"):
        sandbox.files.read("")
    with pytest.raises(ValidationError, match=r"^path: '/tmp/a\\x00b' contains a NUL character"):
        sandbox.files.read("/tmp/a\0b")
    with pytest.raises(ValidationError, match=r"^path: 42 is not a path; give a str \(or bytes, os.PathLike\)"):
        sandbox.files.write(42, "x")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^path: b'\\xff' is not UTF-8"):
        sandbox.files.list(b"\xff")
    with pytest.raises(ValidationError, match=r"^new_path: is empty"):
        sandbox.files.rename("/tmp/x", "")
    with pytest.raises(ValidationError, match=r"^path: "):
        sandbox.files.exists("")
    for call in (sandbox.files.make_dir, sandbox.files.remove, sandbox.files.watch_dir):
        with pytest.raises(ValidationError, match=r"^path: .*NUL"):
            call("/tmp/\0")
    with pytest.raises(ValidationError, match=r"^cwd: .*NUL"):
        sandbox.commands.run("true", cwd="/tmp/\0")
    assert len(fake.requests) == before


def test_commands_ports_envs_and_lifetimes_of_the_wrong_kind_are_validation_errors(
    sandbox: Sandbox, fake: FakeFastSandbox, fake_and_options: Tuple[FakeFastSandbox, Options]
) -> None:
    _, options = fake_and_options
    before = len(fake.requests)
    with pytest.raises(ValidationError, match=r"^cmd: 42 is not a list; give a command line \(a str\), e.g. 'ls -l /', or a program"):
        sandbox.commands.run(42)  # type: ignore[call-overload]
    with pytest.raises(ValidationError, match=r"^cmd: b'ls' is not a list"):
        sandbox.commands.run(b"ls")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^cmd\[1\]: b'-l' is not a string"):
        sandbox.commands.run(["ls", b"-l"])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match=r"^envs: 'A=1' is not a mapping"):
        sandbox.commands.run("true", envs="A=1")  # type: ignore[call-overload]
    with pytest.raises(ValidationError, match=r"^envs\.A: 1 is not a string"):
        sandbox.pty.create(envs={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match=r"^stdin: 'hello' is not True or False: True keeps the command's stdin open, .*send_stdin"):
        sandbox.commands.run("cat", stdin="hello")  # type: ignore[call-overload]
    with pytest.raises(ValidationError, match=r"^format: 'json' is not a format; give 'text' \(the default: UTF-8 text\) or 'bytes'"):
        sandbox.files.read("/etc/hostname", format="json")  # type: ignore[call-overload]
    for timeout in (float("nan"), float("inf"), 0, -1, "10", 1e300):
        with pytest.raises(ValidationError, match=r"^timeout: .* is not a positive number of seconds"):
            sandbox.set_timeout(timeout)  # type: ignore[arg-type]
    assert len(fake.requests) == before, "nothing was sent"
    with pytest.raises(ValidationError) as command:
        Sandbox.create(command="sleep 100", transport=fake.transport(), **options)  # a str is a Sequence[str] to mypy
    assert command.value.field == "spec.command"
    assert str(command.value) == (
        'spec.command: \'sleep 100\' is not a list; give a list of the program and its arguments, e.g. ["sleep", "100"]'
    )
    with pytest.raises(ValidationError) as ports:
        Sandbox.create(exposed_ports="80", transport=fake.transport(), **options)  # type: ignore[arg-type]
    assert str(ports.value) == "spec.exposedPorts: '80' is not a list; give a list of port numbers, e.g. [8080]"
    with pytest.raises(ValidationError, match=r"^spec\.exposedPorts: 80 is not a list"):
        Sandbox.create(exposed_ports=80, transport=fake.transport(), **options)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^timeout: 1e\+300 is not a positive number of seconds"):
        Sandbox.create(timeout=1e300, transport=fake.transport(), **options)
    with pytest.raises(ValidationError, match=r"^labels: \['a'\] is not a mapping"):
        Sandbox.create(labels=["a"], transport=fake.transport(), **options)  # type: ignore[arg-type]
    assert fake.calls("/CreateSandbox") == [fake.calls("/CreateSandbox")[0]], "only the fixture's create was sent"
    Sandbox.create(command=["sleep", 100], transport=fake.transport(), **options)  # type: ignore[list-item]
    assert fake.bodies("/CreateSandbox")[-1]["spec"]["command"] == ["sleep", "100"]


def test_command_errors_say_what_was_asked_of_which_sandbox_once(sandbox: Sandbox, fake: FakeFastSandbox) -> None:
    where = f"in sandbox {sandbox.name}"
    # The daemon's refusal comes as the stream's first message (envd: a program or cwd that is not there).
    with pytest.raises(ValidationError) as refused:
        sandbox.commands.run("unknown-to-the-fake")
    assert str(refused.value).startswith(f"starting command 'unknown-to-the-fake' {where}: cannot start")
    with pytest.raises(NotFoundError) as missing:
        sandbox.commands.connect(99999)
    assert str(missing.value) == f"following process 99999 {where}: process 99999 not found"
    fake.programs["server"] = lambda process: None
    handle = sandbox.commands.run("server", background=True)
    with pytest.raises(TimeoutError) as waiting:
        handle.wait(timeout=0.01)
    assert str(waiting.value).startswith(f"command 'server' {where} (process {handle.pid}) is still running after 0.01s")
    handle.disconnect()
    with pytest.raises(FailedPreconditionError) as disconnected:
        handle.wait()
    assert str(disconnected.value).startswith(f"command 'server' {where} (process {handle.pid}): disconnected before it ended")
    for error in (refused.value, missing.value, waiting.value, disconnected.value):
        assert str(error).count(where) == 1


def test_a_handle_whose_sandbox_was_reset_says_so_and_how_to_follow_it(
    sandbox: Sandbox, fake: FakeFastSandbox, fake_and_options: Tuple[FakeFastSandbox, Options]
) -> None:
    _, options = fake_and_options
    fake.programs["true"] = lambda process: process.exit(0)
    fake.files["/etc/hosts"] = b"127.0.0.1 localhost\n"
    old_id = sandbox.sandbox_id
    new_id = fake.reset(sandbox.name)
    with pytest.raises(NotFoundError) as raised:
        sandbox.commands.run("true")
    assert str(raised.value) == (
        f"starting command 'true' in sandbox {sandbox.name}: sandbox {sandbox.name} was reset or replaced: its instance {old_id}, "
        f"which this handle calls, is gone, and it runs as {new_id} now (new files and processes; nothing was done there). "
        f"sandbox.get_info() moves this handle to the new instance, or Sandbox.connect({sandbox.name!r}) gives a handle of it"
    )
    # Looked up once by name; not run on the new instance.
    assert len(fake.calls("/GetSandbox")) == 1
    assert [request.headers["e2b-sandbox-id"] for request in fake.calls("/process.Process/Start")] == [old_id]
    assert sandbox.sandbox_id == old_id, "the handle does not move by itself"
    with pytest.raises(NotFoundError, match=f"^reading /etc/hosts in sandbox {sandbox.name}: sandbox {sandbox.name} was reset"):
        sandbox.files.read("/etc/hosts")
    with pytest.raises(NotFoundError, match="was reset or replaced"):
        sandbox.files.write("/tmp/a", "a")
    # Still "the sandbox is gone" for the calls that answer False for the daemon's not-found.
    with pytest.raises(NotFoundError, match="was reset or replaced"):
        sandbox.files.exists("/etc/hosts")
    with pytest.raises(NotFoundError, match="was reset or replaced"):
        sandbox.commands.kill(4242)
    assert fake.files.get("/tmp/a") is None
    sandbox.get_info()
    assert sandbox.sandbox_id == new_id and sandbox.commands.run("true").exit_code == 0
    assert sandbox.files.read("/etc/hosts") == "127.0.0.1 localhost\n"
    # Deleted, not replaced: gone it is.
    Sandbox.connect(sandbox.name, transport=fake.transport(), **options).kill()
    with pytest.raises(NotFoundError) as gone:
        sandbox.commands.run("true")
    assert "the sandbox is gone (deleted or expired)" in str(gone.value) and "reset" not in str(gone.value)


def test_an_interrupted_create_its_caller_could_not_name_is_undone(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    fake.create_delay = 0.5
    with interrupted_after(0.2), pytest.raises(KeyboardInterrupt):
        Sandbox.create(transport=fake.transport(), **options)
    assert fake.sandboxes == {}, "the sandbox the interrupted create made is deleted"
    with interrupted_after(0.2), pytest.raises(KeyboardInterrupt):
        Sandbox.create(name="kept", transport=fake.transport(), **options)
    assert list(fake.sandboxes) == ["default/kept"], "one its caller named is the caller's to find"
