"""The official E2B Python SDK (PyPI `e2b`, pinned in requirements.txt) against an embedded Fast Sandbox.

Written from E2B's public documentation, as a user of the SDK would: only E2B_API_URL,
E2B_SANDBOX_URL and E2B_API_KEY are set (by e2b-python-sdk.test.ts, from `fsb e2b env`'s values).
Every test uses the stock SDK; nothing is patched.
"""

import os
import threading
import time
import uuid

import httpx
import pytest
from e2b import (
    CommandExitException,
    FilesystemEventType,
    PtySize,
    Sandbox,
    SandboxException,
    SandboxQuery,
)

RUN_ID = os.environ.get("FSB_E2B_TEST_RUN", uuid.uuid4().hex[:8])


@pytest.fixture(scope="module")
def sandbox():
    sbx = Sandbox.create(timeout=300, metadata={"suite": "e2b-python-sdk", "run": RUN_ID}, envs={"GREETING": "hello-from-envs"})
    yield sbx
    sbx.kill()


def test_environment_is_only_the_three_variables():
    for name in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"):
        assert os.environ.get(name), name
    assert "E2B_DEBUG" not in os.environ
    assert os.environ["E2B_API_KEY"].startswith("e2b_")


def test_create_gives_a_running_sandbox_with_an_id(sandbox):
    assert sandbox.sandbox_id.isalnum() and sandbox.sandbox_id.islower()
    assert sandbox.is_running()
    info = sandbox.get_info()
    assert info.sandbox_id == sandbox.sandbox_id
    assert info.metadata.get("run") == RUN_ID
    # Not said at create: E2B's detail has null (the SDK's None).
    assert info.allow_internet_access is None


def test_commands_run_streams_output_and_reports_the_exit_code(sandbox):
    chunks = []
    result = sandbox.commands.run("echo one; sleep 0.3; echo two; echo err >&2", on_stdout=chunks.append)
    assert result.exit_code == 0
    assert result.stdout == "one\ntwo\n"
    assert result.stderr == "err\n"
    # Streamed: the two lines arrive as separate chunks, the second after the sleep.
    assert "".join(chunks) == "one\ntwo\n"
    assert len(chunks) >= 2

    with pytest.raises(CommandExitException) as failed:
        sandbox.commands.run("echo before; exit 3")
    assert failed.value.exit_code == 3
    assert failed.value.stdout == "before\n"


def test_commands_see_the_sandbox_envs_their_own_envs_and_cwd(sandbox):
    result = sandbox.commands.run('echo "$GREETING $ONE"; pwd', envs={"ONE": "1"}, cwd="/tmp")
    assert result.stdout == "hello-from-envs 1\n/tmp\n"


def test_background_command_wait_and_kill(sandbox):
    handle = sandbox.commands.run("sleep 0.5; echo done", background=True)
    assert handle.pid > 0
    assert handle.wait().stdout == "done\n"

    long = sandbox.commands.run("sleep 600", background=True)
    assert any(process.pid == long.pid for process in sandbox.commands.list())
    assert long.kill() is True
    with pytest.raises(CommandExitException):
        long.wait()
    assert all(process.pid != long.pid for process in sandbox.commands.list())
    assert sandbox.commands.kill(999999) is False


def test_a_background_command_waited_for_late_gets_all_of_its_output(sandbox):
    # The SDK reads a background command's stream only in wait(): its output waits for it in the
    # sandbox's daemon meanwhile, more than the connections between hold, for longer than a stream
    # was once kept for a client that took nothing (15 s).
    handle = sandbox.commands.run("yes 0123456789abcdef | head -c 10000000; echo done >&2", background=True)
    time.sleep(20)
    result = handle.wait()
    assert len(result.stdout) == 10_000_000
    assert result.stdout.startswith("0123456789abcdef\n")
    assert result.stderr == "done\n"
    assert result.exit_code == 0


def test_stdin_reaches_a_background_command(sandbox):
    handle = sandbox.commands.run("head -n 2", background=True, stdin=True)
    sandbox.commands.send_stdin(handle.pid, "first line\n")
    sandbox.commands.send_stdin(handle.pid, "second line\n")
    result = handle.wait()
    assert result.stdout == "first line\nsecond line\n"


def test_pty_echoes_input_and_follows_resize(sandbox):
    output = bytearray()
    done = threading.Event()
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))

    def read():
        try:
            terminal.wait(on_pty=lambda data: output.extend(data))
        except CommandExitException:
            pass
        finally:
            done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sandbox.pty.resize(terminal.pid, PtySize(rows=40, cols=100))
    sandbox.pty.send_stdin(terminal.pid, b"stty size; echo pty-marker-$((6*7))\n")
    deadline = time.time() + 20
    while b"pty-marker-42" not in output and time.time() < deadline:
        time.sleep(0.05)
    assert b"pty-marker-42" in output, bytes(output)
    assert b"40 100" in output, bytes(output)
    assert sandbox.pty.kill(terminal.pid) is True
    assert done.wait(20)


def test_files_write_read_list_and_exists(sandbox):
    info = sandbox.files.write("/tmp/e2b-dir/hello.txt", "hello file\n")
    assert info.path == "/tmp/e2b-dir/hello.txt"
    assert sandbox.files.read("/tmp/e2b-dir/hello.txt") == "hello file\n"
    sandbox.files.write("/tmp/e2b-dir/data.bin", b"\x00\x01\x02")
    assert bytes(sandbox.files.read("/tmp/e2b-dir/data.bin", format="bytes")) == b"\x00\x01\x02"
    names = sorted(entry.name for entry in sandbox.files.list("/tmp/e2b-dir"))
    assert names == ["data.bin", "hello.txt"]
    assert sandbox.files.exists("/tmp/e2b-dir/hello.txt")
    assert not sandbox.files.exists("/tmp/e2b-dir/missing.txt")
    assert sandbox.files.make_dir("/tmp/e2b-dir/sub") is True
    assert sandbox.files.make_dir("/tmp/e2b-dir/sub") is False
    sandbox.files.remove("/tmp/e2b-dir/data.bin")
    assert not sandbox.files.exists("/tmp/e2b-dir/data.bin")
    # What commands see is what the file API wrote.
    assert sandbox.commands.run("cat /tmp/e2b-dir/hello.txt").stdout == "hello file\n"


def test_watch_dir_sees_a_new_file(sandbox):
    sandbox.files.make_dir("/tmp/watched")
    handle = sandbox.files.watch_dir("/tmp/watched")
    try:
        sandbox.files.write("/tmp/watched/new.txt", "x")
        events = []
        deadline = time.time() + 20
        while time.time() < deadline and not any(event.name == "new.txt" for event in events):
            events.extend(handle.get_new_events())
            time.sleep(0.1)
        created = [event for event in events if event.name == "new.txt"]
        assert created, events
        assert any(event.type in (FilesystemEventType.CREATE, FilesystemEventType.WRITE) for event in created)
    finally:
        handle.stop()


def test_upload_and_download_urls(sandbox):
    upload = sandbox.upload_url("/tmp/uploaded.txt")
    response = httpx.post(upload, files={"file": ("uploaded.txt", b"uploaded through a signed URL\n")})
    assert response.status_code == 200, response.text
    download = sandbox.download_url("/tmp/uploaded.txt")
    response = httpx.get(download)
    assert response.status_code == 200, response.text
    assert response.text == "uploaded through a signed URL\n"
    # A signed URL is for its path and operation only.
    tampered = download.replace("uploaded.txt", "other.txt")
    assert httpx.get(tampered).status_code in (401, 403)


def test_set_timeout_moves_the_end_time(sandbox):
    before = sandbox.get_info().end_at
    sandbox.set_timeout(600)
    after = sandbox.get_info().end_at
    assert after > before


def test_get_metrics_gives_the_agent_s_samples_with_every_field_e2b_s_model_requires(sandbox):
    sandbox.commands.run("head -c 4000000 /dev/urandom > /tmp/cached && cat /tmp/cached > /dev/null")
    deadline = time.monotonic() + 30
    metrics = sandbox.get_metrics()
    while len(metrics) < 2:
        assert time.monotonic() < deadline, "no metrics within 30 s: %r" % metrics
        time.sleep(0.5)
        metrics = sandbox.get_metrics()
    last = metrics[-1]
    assert last.cpu_count >= 1
    assert 0 <= last.cpu_used_pct <= 100
    assert 0 < last.mem_used <= last.mem_total
    # The page cache holds the file just written and read: part of the memory used.
    assert 0 < last.mem_cache <= last.mem_used
    assert [m.timestamp for m in metrics] == sorted(m.timestamp for m in metrics)


def test_list_and_connect(sandbox):
    paginator = Sandbox.list(query=SandboxQuery(metadata={"run": RUN_ID}))
    listed = paginator.next_items()
    assert [item.sandbox_id for item in listed] == [sandbox.sandbox_id]
    again = Sandbox.connect(sandbox.sandbox_id)
    assert again.sandbox_id == sandbox.sandbox_id
    assert again.commands.run("echo connected").stdout == "connected\n"


def test_kill_removes_the_sandbox():
    # Without a timeout the SDK sends none: E2B's default for the create it calls is 5 minutes.
    sbx = Sandbox.create(metadata={"run": RUN_ID, "short": "yes"})
    info = sbx.get_info()
    assert round((info.end_at - info.started_at).total_seconds()) == 300
    sandbox_id = sbx.sandbox_id
    assert sbx.kill() is True
    assert not sbx.is_running()
    assert Sandbox.kill(sandbox_id) is False
    assert all(item.sandbox_id != sandbox_id for item in Sandbox.list(query=SandboxQuery(metadata={"run": RUN_ID})).next_items())


def test_create_with_the_same_idempotency_key_gives_the_same_sandbox():
    # What the SDK sends again when a create's answer was lost (its own retries reuse the key too).
    key = f"fsb-e2e-{uuid.uuid4()}"
    metadata = {"run": RUN_ID, "idempotency": "yes"}
    first = Sandbox.create(timeout=120, metadata=metadata, idempotency_key=key)
    try:
        again = Sandbox.create(timeout=120, metadata=metadata, idempotency_key=key)
        assert again.sandbox_id == first.sandbox_id
        # The same access token: the repeat's handle works the sandbox as the first's does.
        assert again.commands.run("echo repeated").stdout == "repeated\n"
        first.files.write("/tmp/marker", "one sandbox")
        assert again.files.read("/tmp/marker") == "one sandbox"

        other = Sandbox.create(timeout=120, metadata=metadata, idempotency_key=f"{key}-other")
        try:
            assert other.sandbox_id != first.sandbox_id
            assert not other.files.exists("/tmp/marker")
        finally:
            other.kill()

        # The key with another request: refused (409), nothing created or changed.
        with pytest.raises(SandboxException, match=r"^409: Idempotency-Key was used before for a different create request"):
            Sandbox.create(timeout=60, metadata=metadata, idempotency_key=key)
        listed = Sandbox.list(query=SandboxQuery(metadata=metadata)).next_items()
        assert [item.sandbox_id for item in listed] == [first.sandbox_id]
    finally:
        first.kill()
