"""The official E2B Python SDK's pause, connect (which resumes a paused sandbox) and fork against an
embedded Fast Sandbox, on a gVisor template (pool `gvisor`, runtimeType gvisor, named by
FSB_E2B_GVISOR_TEMPLATE): pauses save a sandbox's memory and files as a checkpoint, connects restore it.

Written from E2B's public documentation, as a user of the SDK would: only E2B_API_URL,
E2B_SANDBOX_URL and E2B_API_KEY are set (by e2b-python-sdk.test.ts, from `fsb e2b env`'s values).
Every test uses the stock SDK; nothing is patched.
"""

import os
import time
import uuid

import pytest
from e2b import (
    NotFoundException,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)

RUN_ID = os.environ.get("FSB_E2B_TEST_RUN", uuid.uuid4().hex[:8])
TEMPLATE = os.environ.get("FSB_E2B_GVISOR_TEMPLATE", "gvisor")
# Counts in /tmp/counter five times a second: its value lives in the shell's memory.
COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done"


def wait_for(check, timeout_seconds, what):
    deadline = time.monotonic() + timeout_seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def counter(sandbox):
    """The counter's value; 0 until the background shell has written the file the first time."""
    try:
        text = sandbox.files.read("/tmp/counter").strip()
    except NotFoundException:
        return 0
    return int(text) if text else 0


def test_pause_then_connect_brings_back_the_files_and_a_running_process_with_its_memory():
    sbx = Sandbox.create(template=TEMPLATE, timeout=300, metadata={"suite": "e2b-python-sdk-pause", "run": RUN_ID})
    try:
        sbx.files.write("/root/kept.txt", "written before the pause")
        handle = sbx.commands.run(COUNTER, background=True)
        pid = handle.pid
        handle.disconnect()
        wait_for(lambda: counter(sbx) >= 5, 20, "the counter")

        assert sbx.pause() is True
        assert sbx.pause() is False, "already paused: the SDK reads E2B's 409 as False"
        assert sbx.get_info().state == SandboxState.PAUSED
        paused = Sandbox.list(query=SandboxQuery(metadata={"run": RUN_ID}, state=[SandboxState.PAUSED])).next_items()
        assert [item.sandbox_id for item in paused] == [sbx.sandbox_id]
        running = Sandbox.list(query=SandboxQuery(metadata={"run": RUN_ID}, state=[SandboxState.RUNNING])).next_items()
        assert running == []

        connect_from = time.time()
        resumed = Sandbox.connect(sbx.sandbox_id, timeout=120)
        connect_by = time.time()
        assert resumed.sandbox_id == sbx.sandbox_id
        assert resumed.is_running()
        assert resumed.files.read("/root/kept.txt") == "written before the pause"
        first = counter(resumed)
        assert first >= 5, f"the counter goes on from where it was ({first}), it did not start again"
        wait_for(lambda: counter(resumed) > first, 10, "the counter counting on")
        assert pid in [process.pid for process in resumed.commands.list()], "the same process runs on"
        info = resumed.get_info()
        assert info.state == SandboxState.RUNNING
        # The connect's timeout from the server's clock while the connect ran; the server writes whole
        # milliseconds (hence 0.001 below).
        end = info.end_at.timestamp()
        assert connect_from + 120 - 0.001 <= end <= connect_by + 120, (connect_from, end, connect_by)
    finally:
        Sandbox.kill(sbx.sandbox_id)


def test_connect_on_the_paused_sandboxs_own_handle_resumes_it():
    sbx = Sandbox.create(template=TEMPLATE, timeout=120)
    try:
        sbx.files.write("/root/a.txt", "a")
        assert sbx.beta_pause() is True
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
        sbx.connect(timeout=60)
        assert sbx.is_running()
        assert sbx.files.read("/root/a.txt") == "a"
        assert sbx.commands.run("echo warm").stdout == "warm\n"
    finally:
        sbx.kill()


def test_fork_gives_running_copies_of_their_own_from_the_sources_state():
    source = Sandbox.create(template=TEMPLATE, timeout=300)
    copies = []
    try:
        source.files.write("/root/state.txt", "source state")
        forks = source.fork(count=2, timeout=120)
        assert len(forks) == 2
        copies = [fork for fork in forks if isinstance(fork, Sandbox)]
        assert len(copies) == 2, forks
        assert len({source.sandbox_id, *(copy.sandbox_id for copy in copies)}) == 3
        for copy in copies:
            assert copy.is_running()
            assert copy.files.read("/root/state.txt") == "source state"
        copies[0].files.write("/root/state.txt", "the first copy's own")
        assert copies[1].files.read("/root/state.txt") == "source state"
        assert source.files.read("/root/state.txt") == "source state"
        assert source.is_running()
    finally:
        for sandbox in [source, *copies]:
            sandbox.kill()


def test_pause_of_a_runc_template_is_refused_saying_a_gvisor_template_is_needed():
    sbx = Sandbox.create(timeout=60)
    try:
        with pytest.raises(SandboxException) as refused:
            sbx.pause()
        assert "cannot be paused" in str(refused.value)
        assert "runtimeType gvisor" in str(refused.value)
        assert sbx.is_running()
    finally:
        sbx.kill()


def test_kill_removes_a_paused_sandbox():
    sbx = Sandbox.create(template=TEMPLATE, timeout=60)
    assert sbx.pause() is True
    assert Sandbox.kill(sbx.sandbox_id) is True
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sbx.sandbox_id)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sbx.sandbox_id)
