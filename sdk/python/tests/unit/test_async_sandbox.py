"""The asyncio client against the in-memory fake: the same behaviour as the blocking one, with
callbacks that may be coroutines and a streaming directory watch."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Dict, List, Tuple

import pytest

from fast_sandbox import (
    AsyncSandbox,
    CommandExitError,
    FailedPreconditionError,
    FilesystemEvent,
    FilesystemEventType,
    NotFoundError,
    PtySize,
    TimeoutError,
    UnavailableError,
    ValidationError,
)
from fast_sandbox import _protocol as protocol

from fake_fast_sandbox import POOL_IMAGE, FakeFastSandbox, FakeProcess

pytestmark = pytest.mark.anyio

Options = Dict[str, Any]


async def new_sandbox(fake: FakeFastSandbox, options: Options, **kwargs: Any) -> AsyncSandbox:
    return await AsyncSandbox.create(transport=fake.async_transport(), **options, **kwargs)


async def test_list_reads_page_by_page(fake_and_options: Tuple[FakeFastSandbox, Options], monkeypatch: pytest.MonkeyPatch) -> None:
    fake, options = fake_and_options
    monkeypatch.setattr(protocol, "LIST_PAGE_SIZE", 2)
    for name in ["sb-a", "sb-b", "sb-c"]:
        await new_sandbox(fake, options, name=name)
    listed = await AsyncSandbox.list(transport=fake.async_transport(), **options)
    assert [info.name for info in listed] == ["sb-a", "sb-b", "sb-c"]
    assert [(page["pageSize"], page["pageToken"]) for page in fake.bodies("/ListSandboxes")] == [(2, ""), (2, "2")]


async def test_create_waits_for_the_daemon_and_kill_deletes(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    fake.health_before_ready = [502, 503]
    sandbox = await new_sandbox(fake, options, labels={"a": "b"}, timeout=60)
    [body] = fake.bodies("/CreateSandbox")
    assert body["spec"]["image"] == POOL_IMAGE and "expireTime" in body["spec"] and body["labels"] == {"a": "b"}
    assert len(fake.calls("/health")) == 3
    assert await sandbox.is_running()
    listed = await AsyncSandbox.list(labels={"a": "b"}, transport=fake.async_transport(), **options)
    assert [info.name for info in listed] == [sandbox.name]
    assert await sandbox.kill() is True
    assert await sandbox.kill() is False
    async with await new_sandbox(fake, options) as other:
        assert fake.sandboxes != {}
    assert fake.sandboxes == {}
    with pytest.raises(FailedPreconditionError, match="closed"):
        await other.get_info()


async def test_create_retries_once_with_its_request_id_when_the_answer_was_lost(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    fake.create_answers_lost = 1
    sandbox = await new_sandbox(fake, options, request_id="req-1")
    assert [body["requestId"] for body in fake.bodies("/CreateSandbox")] == ["req-1", "req-1"]
    assert len(fake.sandboxes) == 1
    assert sandbox.access_token == f"rotated-{sandbox.sandbox_id}"
    await new_sandbox(fake, options)
    assert len(fake.bodies("/CreateSandbox")[-1]["requestId"]) == 32


async def test_a_sandbox_whose_daemon_never_answers_is_deleted(
    fake_and_options: Tuple[FakeFastSandbox, Options], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, options = fake_and_options
    monkeypatch.setattr("fast_sandbox._protocol.DAEMON_READY_TIMEOUT", 0.2)
    fake.health_before_ready = [502] * 1000
    with pytest.raises(UnavailableError, match="the sandbox was deleted"):
        await new_sandbox(fake, options)
    assert fake.sandboxes == {}


async def test_run_calls_plain_and_coroutine_callbacks_in_order(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)

    def program(process: FakeProcess) -> None:
        process.emit("stdout", b"a")
        process.emit("stderr", b"b")
        process.emit("stdout", b"c")
        process.exit(0)

    fake.programs["abc"] = program
    seen: List[str] = []

    async def on_stderr(text: str) -> None:
        await asyncio.sleep(0)
        seen.append(f"err:{text}")

    result = await sandbox.commands.run("abc", on_stdout=lambda text: seen.append(f"out:{text}"), on_stderr=on_stderr, user="app")
    assert (result.stdout, result.stderr, result.exit_code) == ("ac", "b", 0)
    assert seen == ["out:a", "err:b", "out:c"]
    assert fake.calls("/process.Process/Start")[0].headers["authorization"] == "Basic " + base64.b64encode(b"app:").decode()


async def test_exit_codes_timeouts_and_background_commands(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)

    def exits_4(process: FakeProcess) -> None:
        process.emit("stdout", b"out\n")
        process.exit(4)

    fake.programs["exit 4"] = exits_4
    with pytest.raises(CommandExitError) as raised:
        await sandbox.commands.run("exit 4")
    assert (raised.value.exit_code, raised.value.stdout) == (4, "out\n")

    fake.programs["slow"] = lambda process: process.fail("deadline_exceeded", "deadline passed")
    with pytest.raises(TimeoutError):
        await sandbox.commands.run("slow", timeout=1)

    fake.programs["cat"] = lambda process: None
    fake.programs["cat:stdin"] = lambda process: process.emit("stdout", process.stdin[-1])
    fake.programs["cat:eof"] = lambda process: process.exit(0)
    handle = await sandbox.commands.run("cat", background=True, stdin=True)
    await handle.send_stdin("hello\n")
    with pytest.raises(TimeoutError, match="still running"):
        await handle.wait(timeout=0.05)
    await handle.close_stdin()
    assert (await handle.wait(timeout=5)).stdout == "hello\n"

    fake.programs["sleep"] = lambda process: None
    sleeper = await sandbox.commands.run("sleep", background=True)
    assert [process.pid for process in await sandbox.commands.list()] == [sleeper.pid]
    assert await sleeper.kill() is True
    with pytest.raises(CommandExitError):
        await sleeper.wait(timeout=5)
    assert await sandbox.commands.kill(sleeper.pid) is False


async def test_a_cancelled_run_kills_its_command_starting_or_running(
    fake_and_options: Tuple[FakeFastSandbox, Options],
) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    fake.programs["sleep"] = lambda process: None

    # Cancelled while its start event is on the way: killed once the pid came.
    fake.start_delay = 0.3
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(sandbox.commands.run("sleep"), 0.05)
    assert len(fake.processes) == 1 and fake.calls("/process.Process/SendSignal")
    assert await sandbox.commands.list() == []

    # Cancelled while it runs: killed too.
    fake.start_delay = 0.0
    running = asyncio.ensure_future(sandbox.commands.run("sleep"))
    while len(fake.processes) < 2:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert len(fake.calls("/process.Process/SendSignal")) == 2
    assert await sandbox.commands.list() == []

    # In the background, cancelling only the wait leaves the command running.
    background = await sandbox.commands.run("sleep", background=True)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(background.wait(), 0.05)
    assert [process.pid for process in await sandbox.commands.list()] == [background.pid]
    await background.kill()


async def test_an_exit_is_not_a_timeout_when_waited_for_late_and_following_kills_nothing(
    fake_and_options: Tuple[FakeFastSandbox, Options],
) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    fake.programs["fails"] = lambda process: process.exit(2)
    failed = await sandbox.commands.run("fails", background=True, timeout=0.1)
    await asyncio.sleep(0.2)
    with pytest.raises(CommandExitError) as raised:
        await failed.wait(timeout=5)
    assert raised.value.exit_code == 2

    fake.programs["server"] = lambda process: None
    started = await sandbox.commands.run("server", background=True, timeout=None)
    follower = await sandbox.commands.connect(started.pid, timeout=0.1)
    fake.processes[started.pid].fail("deadline_exceeded", "context deadline exceeded")
    with pytest.raises(TimeoutError) as timed_out:
        await follower.wait(timeout=5)
    assert "killed" not in str(timed_out.value) and "keeps running" in str(timed_out.value)


async def test_logs_tail_is_sent_as_tail_lines_and_checked_first(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    assert b"".join([chunk async for chunk in sandbox.logs(tail=5)]) == fake.logs
    assert fake.bodies("/Logs")[-1] == {"namespace": "default", "name": sandbox.name, "follow": False, "tailLines": 5}
    with pytest.raises(ValidationError, match=r"tail: must be a whole number of lines ≥ 0 \(at most 2147483647\), got -1"):
        async for _ in sandbox.logs(tail=-1):
            pass
    assert len(fake.calls("/Logs")) == 1


async def test_a_follow_ends_at_its_timeout_and_silence_is_a_lost_connection(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    assert b"".join([chunk async for chunk in sandbox.logs(follow=True, timeout=0.2)]) == fake.logs
    assert fake.calls("/Logs")[-1].extensions["timeout"]["read"] == 60, "followed as long as it runs, its connection checked by keepalives"
    fake.logs_go_silent = True
    chunks = []
    with pytest.raises(UnavailableError, match="silent for 60s"):
        async for chunk in sandbox.logs(follow=True):
            chunks.append(chunk)
    assert b"".join(chunks) == fake.logs and all(chunks), "the keepalive is not handed out as output"
    assert fake.calls("/Logs")[-1].headers["keepalive-ping-interval"] == "30"

    fake.programs["quiet"] = lambda process: None
    handle = await sandbox.commands.run("quiet", background=True, timeout=30)
    fake.processes[handle.pid].go_silent()
    with pytest.raises(UnavailableError, match="silent for"):
        await handle.wait(timeout=5)


async def test_refusals_before_anything_is_sent(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    with pytest.raises(ValidationError, match=r"^timeout: "):
        await sandbox.commands.run("true", timeout=-1)
    with pytest.raises(ValidationError, match=r"^depth: "):
        await sandbox.files.list("/tmp", depth=0)
    fake.add_sandbox("starting")["status"] = {"phase": "Pending"}
    starting = await AsyncSandbox.connect("starting", access_token="a-token", transport=fake.async_transport(), **options)
    with pytest.raises(FailedPreconditionError, match="no instance yet"):
        await starting.commands.run("true")
    assert fake.calls("/process.Process/Start") == []


async def test_a_new_instance_read_by_get_info_receives_the_daemon_calls(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    fake.programs["true"] = lambda process: process.exit(0)
    await sandbox.commands.run("true")
    record = fake.sandboxes[f"default/{sandbox.name}"]
    old_id = record["status"]["sandboxID"]
    new_id = "bbbbbbbbbbbbbbbbbbbb"
    record["status"]["sandboxID"] = new_id
    fake.access_tokens[new_id] = fake.access_tokens.pop(old_id)
    assert (await sandbox.get_info()).sandbox_id == new_id
    assert (await sandbox.commands.run("true")).exit_code == 0
    assert [call.headers["e2b-sandbox-id"] for call in fake.calls("/process.Process/Start")] == [old_id, new_id]


async def test_connect_and_disconnect(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    fake.programs["server"] = lambda process: None
    first = await sandbox.commands.run("server", background=True)
    await first.disconnect()
    with pytest.raises(FailedPreconditionError, match="disconnected"):
        await first.wait()
    follower = await sandbox.commands.connect(first.pid)
    fake.processes[first.pid].emit("stdout", b"still here\n")
    fake.processes[first.pid].exit(0)
    assert (await follower.wait(timeout=5)).stdout == "still here\n"


async def test_terminal(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    fake.programs["/bin/bash"] = lambda process: None
    fake.programs["-l:stdin"] = lambda process: process.emit("pty", process.stdin[-1])
    output = bytearray()
    echoed = asyncio.Event()

    def on_data(data: bytes) -> None:
        output.extend(data)
        echoed.set()

    terminal = await sandbox.pty.create(PtySize(rows=10, cols=20), on_data=on_data)
    await sandbox.pty.send_input(terminal.pid, b"pwd\r")
    await asyncio.wait_for(echoed.wait(), 5)
    assert bytes(output) == b"pwd\r"
    await sandbox.pty.resize(terminal.pid, PtySize(rows=30, cols=90))
    assert fake.processes[terminal.pid].pty == {"rows": 30, "cols": 90}
    assert await sandbox.pty.kill(terminal.pid) is True
    with pytest.raises(CommandExitError):
        await terminal.wait(timeout=5)


async def test_files_and_a_streaming_watch(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    events: List[FilesystemEvent] = []
    arrived = asyncio.Event()

    async def on_event(event: FilesystemEvent) -> None:
        events.append(event)
        arrived.set()

    watcher = await sandbox.files.watch_dir("/tmp", on_event)
    assert (await sandbox.files.write("/tmp/x.txt", b"\x01\x02")).path == "/tmp/x.txt"
    await asyncio.wait_for(arrived.wait(), 5)
    assert [(event.name, event.type) for event in events] == [("x.txt", FilesystemEventType.CREATE)]
    await watcher.stop()
    assert watcher.failure is None
    assert await sandbox.files.read("/tmp/x.txt", format="bytes") == b"\x01\x02"
    assert [entry.name for entry in await sandbox.files.list("/tmp")] == ["x.txt"]
    assert await sandbox.files.exists("/tmp/x.txt") and not await sandbox.files.exists("/tmp/y")
    assert (await sandbox.files.rename("/tmp/x.txt", "/tmp/y.txt")).name == "y.txt"
    assert await sandbox.files.make_dir("/tmp/d") is True and await sandbox.files.make_dir("/tmp/d") is False
    await sandbox.files.remove("/tmp/y.txt")
    with pytest.raises(NotFoundError, match=r"reading /tmp/y\.txt"):
        await sandbox.files.read("/tmp/y.txt")


async def test_exists_and_kill_answer_false_for_the_daemons_not_found_but_raise_when_the_sandbox_is_gone(
    fake_and_options: Tuple[FakeFastSandbox, Options],
) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    assert await sandbox.files.exists("/nowhere") is False
    assert await sandbox.commands.kill(4242) is False
    assert await sandbox.pty.kill(4242) is False
    fake.files["/etc/hosts"] = b"127.0.0.1 localhost\n"
    fake.access_tokens.clear()
    with pytest.raises(NotFoundError, match="gone"):
        await sandbox.files.exists("/etc/hosts")
    with pytest.raises(NotFoundError, match="gone"):
        await sandbox.commands.kill(4242)
    with pytest.raises(NotFoundError, match="gone"):
        await sandbox.pty.kill(4242)


async def test_set_timeout_logs_and_tokens(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    fake.update_conflicts = 1
    assert (await sandbox.set_timeout(30)).expires_at is not None
    assert len(fake.bodies("/UpdateSandbox")) == 2
    assert b"".join([chunk async for chunk in sandbox.logs()]) == fake.logs
    handle = await AsyncSandbox.connect(sandbox.sandbox_id, transport=fake.async_transport(), **options)
    with pytest.raises(FailedPreconditionError, match="access token"):
        await handle.files.read("/tmp/x")
    await handle.rotate_access_token()
    fake.files["/tmp/x"] = b"x"
    assert await handle.files.read("/tmp/x") == "x"
    await handle.close()
    await sandbox.close()


async def test_a_file_object_is_written_from_where_it_stands_in_chunks_and_bytes_like_values_too(
    fake_and_options: Tuple[FakeFastSandbox, Options],
) -> None:
    import io
    import os

    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    read_end, write_end = os.pipe()
    os.write(write_end, b"from a pipe")
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        await sandbox.files.write("/tmp/piped", pipe)
    partly = io.BytesIO(b"HEADER" + b"y" * 10)
    partly.read(6)
    await sandbox.files.write("/tmp/rest", partly)
    # Sent as it is read, not read whole first.
    request = fake.calls("/files")[-1]
    assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
    await sandbox.files.write("/tmp/a", bytearray(b"abc"))
    await sandbox.files.write("/tmp/b", memoryview(b"xabcx")[1:4])
    assert [fake.files[path] for path in ("/tmp/piped", "/tmp/rest", "/tmp/a", "/tmp/b")] == [b"from a pipe", b"y" * 10, b"abc", b"abc"]


async def test_a_health_poll_without_an_answer_in_time_is_not_ready_yet(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    import httpx

    fake, options = fake_and_options
    inner = fake.async_transport()
    polls: List[Any] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            polls.append(request.extensions["timeout"])
            if len(polls) == 1:
                raise httpx.ReadTimeout("no answer in time", request=request)
        return await inner.handle_async_request(request)

    await AsyncSandbox.create(transport=httpx.MockTransport(handler), **options)
    assert len(polls) == 2 and fake.calls("/DeleteSandbox") == []
    assert all(poll["read"] <= protocol.DAEMON_READY_TIMEOUT for poll in polls)


async def test_a_create_whose_connection_was_reset_is_retried_with_its_request_id(
    fake_and_options: Tuple[FakeFastSandbox, Options],
) -> None:
    from fake_fast_sandbox import connect_error

    fake, options = fake_and_options
    fake.create_refusals.append(connect_error(409, "aborted", "connection reset mid-call"))
    await new_sandbox(fake, options)
    first, second = fake.bodies("/CreateSandbox")
    assert first["requestId"] == second["requestId"]


# -- what the exploratory test found -----------------------------------------------------------------


async def test_a_create_whose_answer_never_came_names_the_sandbox_it_may_still_make(
    fake_and_options: Tuple[FakeFastSandbox, Options],
) -> None:
    fake, options = fake_and_options
    fake.create_answers_lost = 2
    with pytest.raises(TimeoutError) as raised:
        await new_sandbox(fake, options)
    [made] = fake.sandboxes.values()
    name = made["metadata"]["name"]
    request_id = fake.bodies("/CreateSandbox")[0]["requestId"]
    assert f"; the sandbox may still be made, as default/{name} (request id {request_id}): " in str(raised.value)
    assert f"AsyncSandbox.connect({name!r}).kill() deletes it" in str(raised.value)
    fake.create_answers_lost = 2
    with pytest.raises(TimeoutError, match=r"as team/sb-mine \(request id req-7\)"):
        await new_sandbox(fake, options, name="sb-mine", namespace="team", request_id="req-7")


async def test_arguments_of_the_wrong_kind_are_validation_errors_before_anything_is_sent(
    fake_and_options: Tuple[FakeFastSandbox, Options],
) -> None:
    from pathlib import PurePosixPath

    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    fake.files["/tmp/x"] = b"x"
    assert await sandbox.files.read(b"/tmp/x") == "x"
    assert await sandbox.files.read(PurePosixPath("/tmp/x")) == "x"
    before = len(fake.requests)
    with pytest.raises(ValidationError, match=r"^path: is empty"):
        await sandbox.files.read("")
    with pytest.raises(ValidationError, match=r"^path: .*NUL"):
        await sandbox.files.write("/tmp/\0", "x")
    with pytest.raises(ValidationError, match=r"^old_path: .*NUL"):
        await sandbox.files.rename("/tmp/\0", "/tmp/y")
    with pytest.raises(ValidationError, match=r"^path: 7 is not a path"):
        await sandbox.files.watch_dir(7, lambda event: None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^cmd: 42 is not a list"):
        await sandbox.commands.run(42)  # type: ignore[call-overload]
    with pytest.raises(ValidationError, match=r"^envs: "):
        await sandbox.pty.create(envs="TERM=dumb")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^timeout: nan is not a positive number of seconds"):
        await sandbox.set_timeout(float("nan"))
    assert len(fake.requests) == before
    with pytest.raises(ValidationError, match=r"^spec\.command: 'sleep 100' is not a list; .* e\.g\. \[\"sleep\", \"100\"\]"):
        await new_sandbox(fake, options, command="sleep 100")
    with pytest.raises(ValidationError, match=r"^spec\.exposedPorts: '80' is not a list"):
        await new_sandbox(fake, options, exposed_ports="80")
    assert len(fake.calls("/CreateSandbox")) == 1


async def test_command_errors_say_what_was_asked_of_which_sandbox_once(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    where = f"in sandbox {sandbox.name}"
    with pytest.raises(ValidationError) as refused:
        await sandbox.commands.run(["unknown-to-the-fake", "-x"])
    assert str(refused.value).startswith(f"starting command 'unknown-to-the-fake -x' {where}: cannot start")
    with pytest.raises(NotFoundError) as missing:
        await sandbox.commands.connect(99999)
    assert str(missing.value) == f"following process 99999 {where}: process 99999 not found"
    fake.programs["server"] = lambda process: None
    handle = await sandbox.commands.run("server", background=True)
    with pytest.raises(TimeoutError) as waiting:
        await handle.wait(timeout=0.01)
    assert str(waiting.value).startswith(f"command 'server' {where} (process {handle.pid}) is still running after 0.01s")
    fake.programs["fails"] = lambda process: process.exit(3)
    with pytest.raises(CommandExitError) as failed:
        await sandbox.commands.run("fails")
    assert str(failed.value) == f"command 'fails' {where} exited with code 3"
    for error in (refused.value, missing.value, waiting.value, failed.value):
        assert str(error).count(where) == 1
    await handle.disconnect()


async def test_a_handle_whose_sandbox_was_reset_says_so_and_how_to_follow_it(fake_and_options: Tuple[FakeFastSandbox, Options]) -> None:
    fake, options = fake_and_options
    sandbox = await new_sandbox(fake, options)
    fake.programs["true"] = lambda process: process.exit(0)
    old_id = sandbox.sandbox_id
    new_id = fake.reset(sandbox.name)
    with pytest.raises(NotFoundError) as raised:
        await sandbox.commands.run("true")
    message = str(raised.value)
    assert message.startswith(f"starting command 'true' in sandbox {sandbox.name}: sandbox {sandbox.name} was reset or replaced: ")
    assert f"its instance {old_id}, which this handle calls, is gone, and it runs as {new_id} now" in message
    assert f"await sandbox.get_info() moves this handle to the new instance, or AsyncSandbox.connect({sandbox.name!r})" in message
    assert len(fake.calls("/GetSandbox")) == 1
    assert [request.headers["e2b-sandbox-id"] for request in fake.calls("/process.Process/Start")] == [old_id]
    with pytest.raises(NotFoundError, match="was reset or replaced"):
        await sandbox.files.read("/etc/hosts")
    with pytest.raises(NotFoundError, match="was reset or replaced"):
        await sandbox.files.exists("/etc/hosts")
    with pytest.raises(NotFoundError, match="was reset or replaced"):
        await sandbox.commands.kill(4242)
    with pytest.raises(NotFoundError, match="was reset or replaced"):
        await sandbox.files.watch_dir("/tmp", lambda event: None)
    assert sandbox.sandbox_id == old_id
    await sandbox.get_info()
    assert (await sandbox.commands.run("true")).exit_code == 0
    await sandbox.kill()
    with pytest.raises(NotFoundError) as gone:
        await sandbox.commands.run("true")
    assert "the sandbox is gone (deleted or expired)" in str(gone.value) and "reset" not in str(gone.value)


@pytest.mark.anyio
async def test_a_cancelled_create_its_caller_could_not_name_is_undone_and_a_named_one_left(
    fake_and_options: Tuple[FakeFastSandbox, Options],
) -> None:
    fake, options = fake_and_options
    fake.create_delay = 0.5
    creating = asyncio.ensure_future(AsyncSandbox.create(transport=fake.async_transport(), **options))
    while not fake.calls("/CreateSandbox"):
        await asyncio.sleep(0.01)
    creating.cancel()
    with pytest.raises(asyncio.CancelledError):
        await creating
    for _ in range(300):
        if not fake.sandboxes:
            break
        await asyncio.sleep(0.01)
    assert fake.sandboxes == {}, "the sandbox the cancelled create made is deleted"
    assert len(fake.calls("/DeleteSandbox")) == 1
    named = asyncio.ensure_future(AsyncSandbox.create(name="kept", transport=fake.async_transport(), **options))
    while len(fake.calls("/CreateSandbox")) < 2:
        await asyncio.sleep(0.01)
    named.cancel()
    with pytest.raises(asyncio.CancelledError):
        await named
    await asyncio.sleep(0.1)
    assert list(fake.sandboxes) == ["default/kept"], "one its caller named is the caller's to find"
