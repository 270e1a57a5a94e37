"""Both clients over real TCP connections (tests/real_server.py on 127.0.0.1): the reuse and the cap
of connections, request_timeout at the start of a stream, hanging up, and environment proxies."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, Dict, Iterator, List

import pytest
from real_server import RealServer

from fast_sandbox import AsyncSandbox, Sandbox, TimeoutError


@pytest.fixture
def server() -> Iterator[RealServer]:
    real = RealServer()
    yield real
    real.close()


def options(server: RealServer, **kwargs: Any) -> Dict[str, Any]:
    return {"url": server.url, "token": "api-token", "proxy_url": server.url, "access_token": "x", **kwargs}


def free_port() -> int:
    """A port nothing listens on (an HTTP proxy that is not there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- connections are used again --------------------------------------------------------------------


def test_commands_run_one_after_another_on_one_connection(server: RealServer) -> None:
    sandbox = Sandbox.connect("sb", **options(server))
    for _ in range(5):
        assert sandbox.commands.run("echo hi").stdout == "hi\n"
    assert server.connections == 1  # GetSandbox's, and each command's after it
    sandbox.close()


@pytest.mark.anyio
async def test_async_commands_run_one_after_another_on_one_connection(server: RealServer) -> None:
    sandbox = await AsyncSandbox.connect("sb", **options(server))
    for _ in range(5):
        assert (await sandbox.commands.run("echo hi")).stdout == "hi\n"
    assert server.connections == 1
    await sandbox.close()


# -- no cap on a handle's connections --------------------------------------------------------------


def test_a_hundred_running_streams_leave_the_handle_usable(server: RealServer) -> None:
    server.start_mode = "silent"
    sandbox = Sandbox.connect("sb", **options(server, request_timeout=5))
    handles = [sandbox.commands.run("sleep 1000", background=True) for _ in range(101)]
    # A request that waited for a free connection would fail with request_timeout's TimeoutError.
    sandbox.files.write("/tmp/x", b"data")
    assert handles[0].kill() is True
    for handle in handles:
        handle.disconnect()
    sandbox.close()


@pytest.mark.anyio
async def test_a_hundred_running_async_streams_leave_the_handle_usable(server: RealServer) -> None:
    server.start_mode = "silent"
    sandbox = await AsyncSandbox.connect("sb", **options(server, request_timeout=5))
    handles = [await sandbox.commands.run("sleep 1000", background=True) for _ in range(101)]
    # A request that waited for a free connection would fail with request_timeout's TimeoutError.
    await sandbox.files.write("/tmp/x", b"data")
    assert await handles[0].kill() is True
    for handle in handles:
        await handle.disconnect()
    await sandbox.close()


# -- request_timeout bounds the start of a stream ---------------------------------------------------


@pytest.mark.parametrize("mode", ["hang", "no_start"])
def test_a_stream_that_does_not_start_fails_after_request_timeout(server: RealServer, mode: str) -> None:
    server.start_mode = mode
    sandbox = Sandbox.connect("sb", **options(server))
    with pytest.raises(TimeoutError, match=r"did not start within 0.5s \(request_timeout\)"):
        sandbox.commands.run("echo hi", request_timeout=0.5)
    sandbox.close()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["hang", "no_start"])
async def test_an_async_stream_that_does_not_start_fails_after_request_timeout(server: RealServer, mode: str) -> None:
    server.start_mode = mode
    sandbox = await AsyncSandbox.connect("sb", **options(server))
    with pytest.raises(TimeoutError, match=r"did not start within 0.5s \(request_timeout\)"):
        await sandbox.commands.run("echo hi", request_timeout=0.5)
    await sandbox.close()


def test_once_started_a_stream_may_be_quiet_longer_than_request_timeout(server: RealServer) -> None:
    server.start_mode, server.quiet = "quiet_start", 1.0
    sandbox = Sandbox.connect("sb", **options(server))
    assert sandbox.commands.run("sleep 1; echo hi", request_timeout=0.3).stdout == "hi\n"
    sandbox.close()


@pytest.mark.anyio
async def test_once_started_an_async_stream_may_be_quiet_longer_than_request_timeout(server: RealServer) -> None:
    server.start_mode, server.quiet = "quiet_start", 1.0
    sandbox = await AsyncSandbox.connect("sb", **options(server))
    assert (await sandbox.commands.run("sleep 1; echo hi", request_timeout=0.3)).stdout == "hi\n"
    await sandbox.close()


# -- hanging up ---------------------------------------------------------------------------------


def test_disconnect_hangs_up_while_the_reader_thread_waits(server: RealServer) -> None:
    server.start_mode = "silent"
    sandbox = Sandbox.connect("sb", **options(server))
    handle = sandbox.commands.run("sleep 1000", background=True)
    time.sleep(0.2)  # the reader thread blocks reading the socket
    handle.disconnect()
    assert server.wait_for_hang_ups(1, limit=3)
    reader = handle._reader
    assert reader is not None
    reader.join(3)
    assert not reader.is_alive()
    sandbox.close()


@pytest.mark.anyio
async def test_stopping_a_watch_at_once_hangs_up(server: RealServer) -> None:
    sandbox = await AsyncSandbox.connect("sb", **options(server))
    watch = await sandbox.files.watch_dir("/tmp", lambda event: None)
    await watch.stop()  # before its reader task ever ran
    assert await asyncio.get_running_loop().run_in_executor(None, server.wait_for_hang_ups, 1, 3.0)
    await sandbox.close()


# -- environment proxies ----------------------------------------------------------------------------


def test_loopback_is_reached_directly_whatever_the_environment_proxies(server: RealServer, monkeypatch: pytest.MonkeyPatch) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    sandbox = Sandbox.connect("sb", **options(server))
    sandbox.files.write("/tmp/x", b"data")
    sandbox.close()


@pytest.mark.anyio
async def test_loopback_is_reached_directly_by_the_async_client_too(server: RealServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")
    sandbox = await AsyncSandbox.connect("sb", **options(server))
    await sandbox.files.write("/tmp/x", b"data")
    await sandbox.close()


def test_other_hosts_still_go_through_the_environments_proxy(server: RealServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real server plays the HTTP proxy here: it gets the request line with the absolute URI.
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    sandbox = Sandbox.connect("sb", url="http://fsb.example.test", token="api-token", proxy_url=server.url, access_token="x")
    assert server.proxied == ["POST http://fsb.example.test/fastsandbox.v1alpha1.SandboxService/GetSandbox HTTP/1.1"]
    sandbox.close()


def test_a_thread_may_write_while_another_runs_commands(server: RealServer) -> None:
    sandbox = Sandbox.connect("sb", **options(server))
    errors: List[Exception] = []

    def run() -> None:
        try:
            for _ in range(10):
                sandbox.commands.run("echo hi")
        except Exception as error:  # reported below
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    for _ in range(10):
        sandbox.files.write("/tmp/x", b"data")
    thread.join()
    assert errors == []
    sandbox.close()
