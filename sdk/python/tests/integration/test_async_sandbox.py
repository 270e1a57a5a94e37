"""The asyncio client against a real Fast Sandbox."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Dict, List

import pytest

from fast_sandbox import AsyncSandbox, CommandExitError, FilesystemEvent, FilesystemEventType, NotFoundError, PtySize, TimeoutError

pytestmark = pytest.mark.anyio


async def test_an_async_sandbox_runs_commands_files_terminals_and_dies(run_labels: Dict[str, str]) -> None:
    sandbox = await AsyncSandbox.create(labels=run_labels, envs={"WHO": "async"}, timeout=300)
    try:
        assert await sandbox.is_running()

        # Output streams to plain and coroutine callbacks while the command runs: a handshake, not a
        # race with a sleep. The command waits, after its first line, for a file that only the callback
        # of its first output writes; output held back until the end would hold it back for good, and
        # its timeout would fail the test.
        go = f"/tmp/go-{uuid.uuid4().hex}"
        arrivals: List[str] = []
        writes: List[asyncio.Task[object]] = []

        async def on_stdout(text: str) -> None:
            arrivals.append(text)
            if not writes:
                # A task of its own: the command's output is read while it writes.
                writes.append(asyncio.create_task(sandbox.files.write(go, "go")))

        try:
            result = await sandbox.commands.run(
                f'echo "hi $WHO"; while [ ! -e {go} ]; do sleep 0.05; done; echo bye', on_stdout=on_stdout, timeout=30
            )
        finally:
            await asyncio.gather(*writes)
        assert result.stdout == "hi async\nbye\n"
        assert "".join(arrivals) == "hi async\nbye\n" and arrivals[0].startswith("hi async"), arrivals

        with pytest.raises(CommandExitError) as raised:
            await sandbox.commands.run("exit 7")
        assert raised.value.exit_code == 7
        with pytest.raises(TimeoutError):
            await sandbox.commands.run("sleep 30", timeout=1)

        # Background: stdin, wait, kill.
        head = await sandbox.commands.run("head -n 1", background=True, stdin=True)
        await head.send_stdin("line\n")
        assert (await head.wait(timeout=30)).stdout == "line\n"
        sleeper = await sandbox.commands.run("sleep 600", background=True, timeout=None)
        assert sleeper.pid in [process.pid for process in await sandbox.commands.list()]
        assert await sleeper.kill() is True
        with pytest.raises(CommandExitError):
            await sleeper.wait(timeout=30)

        # Files, and a watch that streams events as they happen.
        await sandbox.files.make_dir("/tmp/async-watched")
        events: List[FilesystemEvent] = []
        created = asyncio.Event()

        def on_event(event: FilesystemEvent) -> None:
            events.append(event)
            if event.name == "a.txt":
                created.set()

        watcher = await sandbox.files.watch_dir("/tmp/async-watched", on_event)
        await sandbox.files.write("/tmp/async-watched/a.txt", "async file\n")
        await asyncio.wait_for(created.wait(), 20)
        await watcher.stop()
        assert any(event.type in (FilesystemEventType.CREATE, FilesystemEventType.WRITE) for event in events)
        assert await sandbox.files.read("/tmp/async-watched/a.txt") == "async file\n"
        assert [entry.name for entry in await sandbox.files.list("/tmp/async-watched")] == ["a.txt"]
        assert (await sandbox.commands.run("cat /tmp/async-watched/a.txt")).stdout == "async file\n"
        with pytest.raises(NotFoundError):
            await sandbox.files.read("/tmp/async-watched/none")

        # A terminal.
        output = bytearray()
        terminal = await sandbox.pty.create(PtySize(rows=20, cols=60), on_data=output.extend)
        await sandbox.pty.send_input(terminal.pid, "stty size; echo async-pty-$((2*21))\n")
        deadline = time.monotonic() + 20
        while b"async-pty-42" not in output and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert b"async-pty-42" in output and b"20 60" in output, bytes(output)
        assert await sandbox.pty.kill(terminal.pid) is True

        # A run cancelled at any moment of its start or while it runs leaves no command running.
        for after in (0.0, 0.001, 0.002, 0.003, 0.005, 0.008, 0.012, 0.02, 0.03, 0.1):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(sandbox.commands.run("sleep 4242", timeout=60), after)
        deadline = time.monotonic() + 10
        while any("sleep 4242" in process.args for process in await sandbox.commands.list()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not [process for process in await sandbox.commands.list() if "sleep 4242" in process.args]

        # The sandbox's life: connect, set_timeout, kill.
        again = await AsyncSandbox.connect(sandbox.sandbox_id, access_token=sandbox.access_token)
        assert (await again.commands.run("echo again")).stdout == "again\n"
        await again.close()
        assert (await sandbox.set_timeout(600)).expires_at is not None
        assert sandbox.name in [info.name for info in await AsyncSandbox.list(labels=run_labels)]
    finally:
        assert await sandbox.kill() is True
        await sandbox.close()
    with pytest.raises(NotFoundError):
        await AsyncSandbox.connect(sandbox.name)
