"""The blocking client against a real Fast Sandbox: real sandboxes on containerd, their in-sandbox
daemon reached through the sandbox proxy."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, List

import pytest

from fast_sandbox import (
    CommandExitError,
    FailedPreconditionError,
    FileType,
    NotFoundError,
    PermissionDeniedError,
    PtySize,
    Sandbox,
    SandboxStats,
    TimeoutError,
    UnauthenticatedError,
    ValidationError,
)


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    """Polls ``check()`` until it is true; fails after ``timeout`` seconds (a bound, not a speed test)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- the sandbox and its commands ------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def before_the_module_sandbox() -> datetime:
    """A time before the module's ``sandbox`` was created: autouse fixtures are set up first in their scope."""
    return datetime.now(timezone.utc)


def test_create_gives_a_running_sandbox_with_an_id_and_an_access_token(
    sandbox: Sandbox, run_labels: Dict[str, str], before_the_module_sandbox: datetime
) -> None:
    assert len(sandbox.sandbox_id) == 20 and sandbox.sandbox_id.isalnum() and sandbox.sandbox_id.islower()
    assert sandbox.access_token and len(sandbox.access_token) >= 32
    info = sandbox.get_info()
    assert (info.phase, info.labels) == ("Running", run_labels)
    # The fixture's timeout=600 from a moment of its create (the end is written in whole milliseconds).
    earliest = before_the_module_sandbox + timedelta(seconds=600, milliseconds=-1)
    latest = datetime.now(timezone.utc) + timedelta(seconds=600)
    assert info.expires_at is not None and earliest <= info.expires_at <= latest, (earliest, info.expires_at, latest)
    assert sandbox.is_running()


def test_commands_stream_their_output_as_it_is_written(sandbox: Sandbox) -> None:
    # A handshake, not a race with a sleep: the command waits, after "one", for a file that only the
    # callback of its first output writes. Output held back until the end would hold the command
    # back for good, and its timeout would fail the test.
    go = f"/tmp/go-{uuid.uuid4().hex}"
    arrivals: List[str] = []
    writers: List[threading.Thread] = []

    def on_stdout(text: str) -> None:
        arrivals.append(text)
        if not writers:
            # From a thread of its own: this callback runs in the thread reading the command's output.
            writers.append(threading.Thread(target=sandbox.files.write, args=(go, "go")))
            writers[0].start()

    try:
        result = sandbox.commands.run(
            f"echo one; while [ ! -e {go} ]; do sleep 0.05; done; echo two; echo err >&2", on_stdout=on_stdout, timeout=30
        )
    finally:
        for writer in writers:
            writer.join()
    assert (result.exit_code, result.stdout, result.stderr) == (0, "one\ntwo\n", "err\n")
    assert "".join(arrivals) == "one\ntwo\n" and arrivals[0].startswith("one"), arrivals


def test_a_non_zero_exit_raises_with_the_exit_code_and_output(sandbox: Sandbox) -> None:
    with pytest.raises(CommandExitError) as raised:
        sandbox.commands.run("echo before; echo why >&2; exit 3")
    assert (raised.value.exit_code, raised.value.stdout, raised.value.stderr) == (3, "before\n", "why\n")
    assert "exited with code 3: why" in str(raised.value)


def test_commands_see_the_sandbox_envs_their_own_envs_cwd_and_user(sandbox: Sandbox) -> None:
    result = sandbox.commands.run('echo "$GREETING $ONE"; pwd; id -u', envs={"ONE": "1"}, cwd="/tmp")
    assert result.stdout == "hello-from-envs 1\n/tmp\n0\n"
    assert sandbox.commands.run("id -u; id -un", user="nobody", cwd="/tmp").stdout == "65534\nnobody\n"
    assert sandbox.commands.run(["/bin/sh", "-c", 'echo "$0 $1"', "zero", "one"]).stdout == "zero one\n"


def test_a_command_past_its_timeout_is_killed_and_raises_timeout_error(sandbox: Sandbox) -> None:
    # The message names the 1 s timeout, not the command's own end after 30 s.
    with pytest.raises(TimeoutError, match="did not finish within 1s"):
        sandbox.commands.run("sleep 30; echo never", timeout=1, tag="sleeper")
    wait_until(lambda: all(process.tag != "sleeper" for process in sandbox.commands.list()), 10, "the timed-out command to be gone")


def test_background_commands_wait_and_kill(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("sleep 0.5; echo done", background=True)
    assert handle.pid > 0
    assert handle.wait(timeout=30).stdout == "done\n"

    long = sandbox.commands.run("sleep 600", background=True, timeout=None)
    assert any(process.pid == long.pid for process in sandbox.commands.list())
    with pytest.raises(TimeoutError, match="still running"):
        long.wait(timeout=0.2)
    assert long.kill() is True
    with pytest.raises(CommandExitError) as raised:
        long.wait(timeout=30)
    assert raised.value.exit_code != 0
    wait_until(lambda: all(process.pid != long.pid for process in sandbox.commands.list()), 10, "the killed command to be gone")
    assert sandbox.commands.kill(long.pid) is False


def test_stdin_reaches_a_background_command(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("head -n 2", background=True, stdin=True)
    sandbox.commands.send_stdin(handle.pid, "first line\n")
    handle.send_stdin(b"second line\n")
    assert handle.wait(timeout=30).stdout == "first line\nsecond line\n"

    cat = sandbox.commands.run("cat; echo eof", background=True, stdin=True)
    cat.send_stdin("abc")
    cat.close_stdin()
    assert cat.wait(timeout=30).stdout == "abceof\n"


def test_a_disconnected_command_runs_on_and_can_be_followed_again(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("echo start; sleep 1; echo middle; sleep 1; echo end", background=True)
    wait_until(lambda: "start" in handle.stdout, 10, "the first line")
    handle.disconnect()
    follower = sandbox.commands.connect(handle.pid, timeout=30)
    result = follower.wait(timeout=30)
    assert result.stdout.endswith("end\n") and "start" not in result.stdout
    with pytest.raises(NotFoundError):
        sandbox.commands.connect(handle.pid)


def test_output_callbacks_run_while_the_command_runs_in_the_background(sandbox: Sandbox) -> None:
    lines: List[str] = []
    seen_first = threading.Event()

    def on_stdout(text: str) -> None:
        lines.append(text)
        seen_first.set()

    handle = sandbox.commands.run("echo ready; sleep 600", background=True, on_stdout=on_stdout, timeout=None)
    try:
        assert seen_first.wait(10), "the callback got the first line while the command still runs"
        assert "".join(lines) == "ready\n"
    finally:
        handle.kill()


# -- files -----------------------------------------------------------------------------------------


def test_a_run_interrupted_by_ctrl_c_kills_its_command(sandbox: Sandbox) -> None:
    # A real SIGINT to this process while the run waits, as Ctrl-C sends it.
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            sandbox.commands.run("sleep 4343", timeout=60)
    finally:
        timer.cancel()
    deadline = time.monotonic() + 10
    while any("sleep 4343" in process.args for process in sandbox.commands.list()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [process for process in sandbox.commands.list() if "sleep 4343" in process.args]


def test_files_written_are_read_listed_and_seen_by_commands(sandbox: Sandbox) -> None:
    info = sandbox.files.write("/tmp/sdk-dir/hello.txt", "hello file ✓\n")
    assert (info.name, info.path) == ("hello.txt", "/tmp/sdk-dir/hello.txt")
    assert sandbox.files.read("/tmp/sdk-dir/hello.txt") == "hello file ✓\n"
    payload = bytes(range(256)) * 64
    sandbox.files.write("/tmp/sdk-dir/data.bin", payload)
    assert sandbox.files.read("/tmp/sdk-dir/data.bin", format="bytes") == payload
    entries = {entry.name: entry for entry in sandbox.files.list("/tmp/sdk-dir")}
    assert sorted(entries) == ["data.bin", "hello.txt"]
    assert (entries["data.bin"].type, entries["data.bin"].size) == (FileType.FILE, len(payload))
    assert sandbox.commands.run("cat /tmp/sdk-dir/hello.txt; wc -c < /tmp/sdk-dir/data.bin").stdout == "hello file ✓\n16384\n"
    sandbox.commands.run("echo from-a-command > /tmp/sdk-dir/made.txt")
    assert sandbox.files.read("/tmp/sdk-dir/made.txt") == "from-a-command\n"
    # A file object is streamed; a user owns what it writes.
    sandbox.files.write("/tmp/sdk-dir/streamed.bin", io.BytesIO(payload))
    assert sandbox.files.read("/tmp/sdk-dir/streamed.bin", format="bytes") == payload
    # A pseudo file says its size is 0 and cannot be seeked: its content, as cat reads it.
    assert sandbox.files.read("/proc/version") == sandbox.commands.run("cat /proc/version").stdout
    assert "processor" in sandbox.files.read("/proc/cpuinfo")
    sandbox.files.write("/tmp/nobodys.txt", "mine", user="nobody")
    assert sandbox.files.get_info("/tmp/nobodys.txt").owner == "nobody"
    # A user writes with its own permissions: root's directory is not its to write in.
    with pytest.raises(PermissionDeniedError):
        sandbox.files.write("/tmp/sdk-dir/nobodys.txt", "mine", user="nobody")


def test_a_written_file_gets_the_mode_asked_for_only_where_its_user_may_change_it(sandbox: Sandbox) -> None:
    sandbox.files.write("/tmp/sdk-modes/run.sh", "#!/bin/sh\necho ran\n", mode=0o750)
    assert sandbox.files.get_info("/tmp/sdk-modes/run.sh").permissions == "-rwxr-x---"
    assert sandbox.commands.run("/tmp/sdk-modes/run.sh").stdout == "ran\n"
    sandbox.files.write("/tmp/sdk-modes/run.sh", "#!/bin/sh\necho again\n", mode=0o700)
    assert sandbox.files.get_info("/tmp/sdk-modes/run.sh").permissions == "-rwx------"
    # Another user may write root's file (here: world-writable) but not change its mode: refused,
    # and the file is left as it was.
    sandbox.commands.run("chmod 666 /tmp/sdk-modes/run.sh")
    with pytest.raises(PermissionDeniedError, match=r"setting the mode of /tmp/sdk-modes/run\.sh"):
        sandbox.files.write("/tmp/sdk-modes/run.sh", "replaced", user="nobody", mode=0o777)
    assert sandbox.files.read("/tmp/sdk-modes/run.sh") == "#!/bin/sh\necho again\n"
    assert sandbox.files.get_info("/tmp/sdk-modes/run.sh").permissions == "-rw-rw-rw-"


def test_files_stat_exist_move_make_and_remove(sandbox: Sandbox) -> None:
    written_from = datetime.now(timezone.utc)
    sandbox.files.write("/tmp/sdk-ops/a.txt", "a")
    written_by = datetime.now(timezone.utc)
    stat = sandbox.files.get_info("/tmp/sdk-ops/a.txt")
    assert (stat.type, stat.size, stat.path, stat.owner) == (FileType.FILE, 1, "/tmp/sdk-ops/a.txt", "root")
    # Set by the write; a file's time may lag by its filesystem's granularity (whole seconds on some,
    # the kernel's coarse clock on others): 1 s below.
    modified = stat.modified_time
    assert modified is not None and written_from - timedelta(seconds=1) <= modified <= written_by, (written_from, modified, written_by)
    assert sandbox.files.get_info("/tmp/sdk-ops").type == FileType.DIRECTORY
    assert sandbox.files.exists("/tmp/sdk-ops/a.txt") and not sandbox.files.exists("/tmp/sdk-ops/none.txt")
    moved = sandbox.files.rename("/tmp/sdk-ops/a.txt", "/tmp/sdk-ops/b.txt")
    assert moved.path == "/tmp/sdk-ops/b.txt" and not sandbox.files.exists("/tmp/sdk-ops/a.txt")
    assert sandbox.files.make_dir("/tmp/sdk-ops/sub/deeper") is True
    assert sandbox.files.make_dir("/tmp/sdk-ops/sub/deeper") is False
    assert sandbox.files.list("/tmp/sdk-ops", depth=2)
    sandbox.files.remove("/tmp/sdk-ops/sub")
    assert not sandbox.files.exists("/tmp/sdk-ops/sub/deeper")


def test_file_errors_are_typed(sandbox: Sandbox) -> None:
    with pytest.raises(NotFoundError, match="reading /tmp/no-such-file"):
        sandbox.files.read("/tmp/no-such-file")
    with pytest.raises(ValidationError, match="directory"):
        sandbox.files.read("/tmp")
    with pytest.raises(NotFoundError):
        sandbox.files.list("/no-such-dir")
    # Removing what is not there succeeds, as with E2B's daemon.
    sandbox.files.remove("/tmp/no-such-file")


def test_watch_dir_reports_changes(sandbox: Sandbox) -> None:
    sandbox.files.make_dir("/tmp/sdk-watched")
    with sandbox.files.watch_dir("/tmp/sdk-watched") as watcher:
        sandbox.files.write("/tmp/sdk-watched/new.txt", "x")
        sandbox.commands.run("rm /tmp/sdk-watched/new.txt")
        events = []

        def saw_remove() -> bool:
            events.extend(watcher.get_new_events())
            return any(event.name == "new.txt" and event.type.value == "remove" for event in events)

        wait_until(saw_remove, 20, "the watch to see new.txt come and go")
        assert any(event.name == "new.txt" and event.type.value in ("create", "write") for event in events)


# -- terminals -------------------------------------------------------------------------------------


def test_a_terminal_echoes_input_follows_resize_and_dies_on_kill(sandbox: Sandbox) -> None:
    output = bytearray()
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80), on_data=output.extend)
    sandbox.pty.resize(terminal.pid, PtySize(rows=40, cols=100))
    sandbox.pty.send_input(terminal.pid, "stty size; echo pty-marker-$((6*7))\n")
    wait_until(lambda: b"pty-marker-42" in output, 20, f"the terminal's answer (so far {bytes(output)!r})")
    assert b"40 100" in output
    assert sandbox.pty.kill(terminal.pid) is True
    with pytest.raises(CommandExitError):
        terminal.wait(timeout=20)
    assert sandbox.pty.kill(terminal.pid) is False


# -- the sandbox's life ----------------------------------------------------------------------------


def test_logs_give_the_output_of_the_sandboxs_own_command(run_labels: Dict[str, str]) -> None:
    command = ["sh", "-c", "echo hello-logs; echo second-line; echo oops >&2; sleep 600"]
    with Sandbox.create(command=command, labels=run_labels, timeout=120) as sandbox:
        wait_until(lambda: len(b"".join(sandbox.logs()).splitlines()) == 3, 20, "the sandbox's output")
        lines = b"".join(sandbox.logs()).decode().splitlines()
        # stdout and stderr are two pipes: only each one's own order is kept.
        assert sorted(lines) == ["hello-logs", "oops", "second-line"]
        assert lines.index("hello-logs") < lines.index("second-line")


def test_set_timeout_moves_the_end_and_the_sandbox_goes_when_it_passes(run_labels: Dict[str, str]) -> None:
    sandbox = Sandbox.create(labels=run_labels, timeout=300)
    try:
        before = sandbox.info.expires_at
        after = sandbox.set_timeout(900).expires_at
        assert before is not None and after is not None and after - before > timedelta(seconds=500)
        assert sandbox.set_timeout(None).expires_at is None
        sandbox.set_timeout(1)

        def deleted() -> bool:
            try:
                sandbox.get_info()
            except NotFoundError:
                return True
            return False

        wait_until(deleted, 30, "the expired sandbox to be deleted")
        assert sandbox.is_running() is False
    finally:
        sandbox.kill()


def test_kill_removes_the_sandbox(run_labels: Dict[str, str]) -> None:
    sandbox = Sandbox.create(labels={**run_labels, "short": "yes"})
    assert sandbox.kill() is True
    assert sandbox.kill() is False
    assert sandbox.is_running() is False
    with pytest.raises(NotFoundError):
        sandbox.get_info()
    with pytest.raises(Exception) as raised:
        sandbox.commands.run("true")
    assert raised.value.__class__.__name__ in ("NotFoundError", "UnavailableError"), raised.value
    assert all(info.name != sandbox.name for info in Sandbox.list(labels=run_labels))


def test_list_and_connect_by_name_or_id(sandbox: Sandbox, run_labels: Dict[str, str]) -> None:
    listed = Sandbox.list(labels=run_labels)
    assert sandbox.name in [info.name for info in listed]
    assert all(info.labels.get("run") == run_labels["run"] for info in listed)
    by_name = Sandbox.connect(sandbox.name, access_token=sandbox.access_token)
    by_id = Sandbox.connect(sandbox.sandbox_id, access_token=sandbox.access_token)
    assert by_name.sandbox_id == by_id.sandbox_id == sandbox.sandbox_id
    assert by_id.commands.run("echo connected").stdout == "connected\n"
    by_name.close()
    by_id.close()


def test_a_handle_without_the_token_manages_the_sandbox_and_a_rotation_gives_a_new_token(run_labels: Dict[str, str]) -> None:
    with Sandbox.create(labels=run_labels, timeout=120) as sandbox:
        old_token = sandbox.access_token
        # No data directory to find a saved token in: only what the caller passes counts.
        handle = Sandbox.connect(sandbox.name, data_dir=os.devnull)
        assert handle.access_token is None
        with pytest.raises(FailedPreconditionError, match="access token"):
            handle.files.read("/etc/hostname")
        new_token = handle.rotate_access_token()
        assert new_token != old_token
        assert handle.commands.run("echo rotated").stdout == "rotated\n"
        with pytest.raises(UnauthenticatedError):
            sandbox.commands.run("echo with the old token")
        handle.close()


def test_bad_input_is_refused_with_typed_errors(sandbox: Sandbox, run_labels: Dict[str, str]) -> None:
    before = {info.name for info in Sandbox.list(namespace="*")}
    with pytest.raises(ValidationError) as raised:
        Sandbox.create(exposed_ports=[0], labels=run_labels)
    assert raised.value.field == "spec.exposedPorts[0]"
    with pytest.raises(NotFoundError, match="pool"):
        Sandbox.create(pool="no-such-pool", labels=run_labels)
    with pytest.raises(NotFoundError):
        Sandbox.connect("sb-no-such-sandbox")
    with pytest.raises(ValidationError, match="cwd"):
        sandbox.commands.run("true", cwd="/no-such-dir")
    with pytest.raises(ValidationError):
        sandbox.commands.run("true", envs={"BAD=NAME": "x"})
    with pytest.raises(UnauthenticatedError):
        Sandbox.list(token="not-the-token")
    # The refused creates left nothing behind.
    assert {info.name for info in Sandbox.list(namespace="*")} == before


def test_stats_read_the_sandbox_s_cpu_memory_processes_and_writes(sandbox: Sandbox) -> None:
    sandbox.commands.run("dd if=/dev/zero of=/tmp/stats-written bs=1M count=3")
    busy = sandbox.commands.run("while :; do :; done", background=True)
    try:
        readings: List[SandboxStats] = []
        deadline = time.monotonic() + 30
        read_from = read_by = datetime.now(timezone.utc)
        while not readings or readings[-1].cpu_used_millis <= 100:
            assert time.monotonic() < deadline, f"no CPU use seen: {readings}"
            read_from = datetime.now(timezone.utc)
            readings.append(sandbox.stats())
            read_by = datetime.now(timezone.utc)
        stats = readings[-1]
        # Taken by the agent during the call, on this machine's clock in whole milliseconds (1 ms below).
        taken = stats.timestamp
        assert taken is not None and read_from - timedelta(milliseconds=1) <= taken <= read_by, (read_from, taken, read_by)
        assert stats.cpu_usage_nanos > 0
        assert stats.pids >= 2, stats
        assert stats.memory_used_bytes > 0
        assert stats.disk_used_bytes >= 3 << 20, stats
        assert stats.node_cpus >= 1 and stats.node_memory_bytes > 0
        # The agent's samples (every half second in this suite: FSB_STATS_INTERVAL_MS), oldest first.
        history: List[SandboxStats] = []
        while len(history) < 3 or history[-1].cpu_used_millis <= 100:
            assert time.monotonic() < deadline, f"no history of the busy loop: {history}"
            history = sandbox.stats_history()
            time.sleep(0.2)
        stamps = [sample.timestamp for sample in history if sample.timestamp is not None]
        assert len(stamps) == len(history) and stamps == sorted(stamps) and len(set(stamps)) == len(stamps), stamps
        last = history[-1].timestamp
        assert last is not None
        assert sandbox.stats_history(since=last)[0].timestamp == last
        assert sandbox.stats_history(until=datetime(2020, 1, 1, tzinfo=timezone.utc)) == []
    finally:
        busy.kill()
