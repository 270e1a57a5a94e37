"""Where the SDK finds Fast Sandbox: arguments, then FSB_* variables, then the embedded instance's
data directory (as the fsb CLI reads it), and where access tokens are kept."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import List, Optional

import httpx
import pytest

from fast_sandbox import AsyncSandbox, ConnectionConfig, Sandbox, UnauthenticatedError, ValidationError
from fast_sandbox._token_file import TOKEN_FILE_REFRESH, TokenFile
from fast_sandbox.sandbox import _Connection

from fake_fast_sandbox import API_TOKEN, API_URL, FakeFastSandbox


def write_data_dir(directory: Path, url: str = API_URL, token: str = API_TOKEN) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "url").write_text(f"{url}\n")
    (directory / "token").write_text(f"{token}\n")
    return directory


def test_arguments_come_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FSB_URL", "http://from-env:1")
    monkeypatch.setenv("FSB_TOKEN", "env-token")
    monkeypatch.setenv("FSB_PROXY_URL", "http://proxy-from-env:2")
    config = ConnectionConfig.resolve(url="http://arg:1/", token="arg-token", proxy_url="http://proxy-arg:2/", data_dir=str(tmp_path))
    assert (config.url, config.token, config.proxy_url) == ("http://arg:1", "arg-token", "http://proxy-arg:2")


def test_environment_variables_come_before_the_data_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_data_dir(tmp_path / "data", url="http://from-dir:7070", token="dir-token")
    monkeypatch.setenv("FSB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FSB_URL", "http://from-env:7070")
    monkeypatch.setenv("FSB_TOKEN", "env-token")
    config = ConnectionConfig.resolve()
    assert (config.url, config.token, config.proxy_url) == ("http://from-env:7070", "env-token", None)
    # Another instance than the data directory's: its access tokens are not this one's.
    assert config.data_dir is None


def test_the_data_directory_gives_url_and_token_like_the_cli_reads_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_data_dir(tmp_path / "data", url="http://127.0.0.1:7070", token="dir-token")
    monkeypatch.setenv("FSB_DATA_DIR", str(tmp_path / "data"))
    config = ConnectionConfig.resolve()
    assert (config.url, config.token, config.data_dir) == ("http://127.0.0.1:7070", "dir-token", tmp_path / "data")
    monkeypatch.setenv("FSB_SANDBOX_URL", "http://proxy-ts-name:7072")
    assert ConnectionConfig.resolve().proxy_url == "http://proxy-ts-name:7072"


def test_without_a_running_instance_the_error_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as raised:
        ConnectionConfig.resolve(data_dir=str(tmp_path / "nothing"))
    assert raised.value.field == "url"
    assert "fsb up" in str(raised.value) and "FSB_URL" in str(raised.value)
    with pytest.raises(ValidationError, match="FSB_TOKEN"):
        ConnectionConfig.resolve(url="http://127.0.0.1:7070", data_dir=str(tmp_path / "nothing"))


def test_the_data_directorys_token_goes_only_to_its_own_url_or_this_hosts_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = write_data_dir(tmp_path / "data", url="http://10.1.1.1:7070", token="dir-token")
    monkeypatch.setenv("FSB_DATA_DIR", str(data))
    monkeypatch.setenv("FSB_URL", "http://203.0.113.9:7070")
    fake = FakeFastSandbox()
    with pytest.raises(ValidationError) as raised:
        Sandbox.create(transport=fake.transport())
    assert raised.value.field == "FSB_URL"
    assert "203.0.113.9:7070 is neither" in str(raised.value) and "FSB_TOKEN" in str(raised.value)
    assert fake.requests == [], "nothing was sent"
    with pytest.raises(ValidationError, match="is neither") as raised:
        Sandbox.connect("sb-1", url="http://203.0.113.9:7070", transport=fake.transport())
    assert raised.value.field == "url"
    assert fake.requests == []
    # A token given, the data directory's own URL, or this host's loopback: no refusal.
    assert ConnectionConfig.resolve(token="its-token").token == "its-token"
    monkeypatch.setenv("FSB_TOKEN", "its-token")
    assert ConnectionConfig.resolve().token == "its-token"
    monkeypatch.delenv("FSB_TOKEN")
    for url in ("http://10.1.1.1:7070/", "http://localhost:7070", "http://127.0.0.2:7070", "http://[::1]:7070"):
        assert ConnectionConfig.resolve(url=url).token == "dir-token"


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValidationError, match="not an http"):
        ConnectionConfig.resolve(url="127.0.0.1:7070", token="t")
    with pytest.raises(ValidationError, match="proxy_url"):
        ConnectionConfig.resolve(url="http://127.0.0.1:7070", token="t", proxy_url="ftp://x")


def test_the_default_data_directory_is_the_clis(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fast_sandbox.config import default_data_dir

    monkeypatch.delenv("FSB_DATA_DIR")
    if os.getuid() == 0:
        assert default_data_dir() == Path("/var/lib/fast-sandbox")
    else:
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
        assert default_data_dir() == tmp_path / "fast-sandbox"


def test_access_tokens_are_kept_in_the_data_directory_like_fsb_run_keeps_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = write_data_dir(tmp_path / "data")
    monkeypatch.setenv("FSB_DATA_DIR", str(data))
    fake = FakeFastSandbox()
    sandbox = Sandbox.create(name="sb-kept", transport=fake.transport())
    path = data / "access-tokens" / "default" / "sb-kept"
    assert path.read_text() == "token-of-sb-kept\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # A handle made later (another process, say) finds the token and reaches the daemon.
    fake.programs["true"] = lambda process: process.exit(0)
    again = Sandbox.connect("sb-kept", transport=fake.transport())
    assert again.access_token == "token-of-sb-kept"
    assert again.commands.run("true").exit_code == 0
    assert sandbox.kill() is True
    assert not path.exists()


def test_the_proxy_url_is_asked_of_the_control_plane_once_when_not_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeFastSandbox()
    sandbox = Sandbox.create(url=API_URL, token=API_TOKEN, transport=fake.transport())
    fake.programs["true"] = lambda process: process.exit(0)
    sandbox.commands.run("true")
    sandbox.files.write("/tmp/a", "a")
    assert len(fake.calls("/GetSandboxProxy")) == 1


def test_kill_forgets_the_access_token_of_a_sandbox_that_is_gone_already(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = write_data_dir(tmp_path / "data")
    monkeypatch.setenv("FSB_DATA_DIR", str(data))
    fake = FakeFastSandbox()
    sandbox = Sandbox.create(name="sb-expired", transport=fake.transport())
    path = data / "access-tokens" / "default" / "sb-expired"
    assert path.exists()
    del fake.sandboxes["default/sb-expired"]  # it expired: the control plane deleted it
    assert sandbox.kill() is False
    assert not path.exists()


@pytest.mark.anyio
async def test_async_kill_forgets_the_access_token_of_a_sandbox_that_is_gone_already(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = write_data_dir(tmp_path / "data")
    monkeypatch.setenv("FSB_DATA_DIR", str(data))
    fake = FakeFastSandbox()
    sandbox = await AsyncSandbox.create(name="sb-expired", transport=fake.async_transport())
    path = data / "access-tokens" / "default" / "sb-expired"
    assert path.exists()
    del fake.sandboxes["default/sb-expired"]
    assert await sandbox.kill() is False
    assert not path.exists()


def test_fsb_token_file_gives_the_token_read_again_as_it_is_renewed_and_fsb_token_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "sa-token"
    token_file.write_text("sa-token-1\n")
    monkeypatch.setenv("FSB_URL", "http://10.96.0.10:7070")
    monkeypatch.setenv("FSB_TOKEN_FILE", str(token_file))
    config = ConnectionConfig.resolve()
    assert (config.token, config.current_token()) == ("sa-token-1", "sa-token-1")
    assert config.token_file is not None and config.token_file.path == token_file
    monkeypatch.setenv("FSB_TOKEN", "env-token")
    assert ConnectionConfig.resolve().current_token() == "env-token"
    monkeypatch.delenv("FSB_TOKEN")
    monkeypatch.setenv("FSB_TOKEN_FILE", str(tmp_path / "no-such-file"))
    with pytest.raises(ValidationError) as raised:
        ConnectionConfig.resolve()
    assert raised.value.field == "FSB_TOKEN_FILE" and "no-such-file cannot be read" in str(raised.value)
    (tmp_path / "binary").write_bytes(b"\xff\xfe\xfa")
    monkeypatch.setenv("FSB_TOKEN_FILE", str(tmp_path / "binary"))
    with pytest.raises(ValidationError, match="binary is not text"):
        ConnectionConfig.resolve()
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("FSB_TOKEN_FILE", str(tmp_path / "empty"))
    with pytest.raises(ValidationError, match="empty is empty"):
        ConnectionConfig.resolve()


def test_a_token_files_token_is_sent_and_read_again_a_minute_on_and_kept_while_the_file_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "sa-token"
    path.write_text("sa-token-1")
    now = [0.0]
    config = ConnectionConfig(
        url="http://10.96.0.10:7070", token="sa-token-1", proxy_url=None, token_file=TokenFile(path, "FSB_TOKEN_FILE", clock=lambda: now[0])
    )
    sent: List[Optional[str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"url": "http://proxy.test:7072"})

    connection = _Connection(config, httpx.MockTransport(answer))

    def ask() -> None:
        connection.api.unary("fastsandbox.v1alpha1.SandboxService/GetSandboxProxy", {}, request_timeout=5)

    ask()
    path.write_text("sa-token-2")
    ask()
    now[0] += TOKEN_FILE_REFRESH
    ask()
    path.unlink()
    now[0] += TOKEN_FILE_REFRESH
    ask()
    assert sent == ["Bearer sa-token-1", "Bearer sa-token-1", "Bearer sa-token-2", "Bearer sa-token-2"]


def test_the_token_file_argument_comes_after_token_and_before_the_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    given = tmp_path / "given"
    given.write_text("given-file-token\n")
    environment = tmp_path / "environment"
    environment.write_text("environment-file-token\n")
    monkeypatch.setenv("FSB_URL", "http://10.96.0.10:7070")
    monkeypatch.setenv("FSB_TOKEN", "environment-token")
    monkeypatch.setenv("FSB_TOKEN_FILE", str(environment))
    config = ConnectionConfig.resolve(token_file=str(given))
    assert config.current_token() == "given-file-token"
    assert config.token_file is not None and config.token_file.path == given
    assert ConnectionConfig.resolve(token="given-token", token_file=str(given)).current_token() == "given-token"
    assert ConnectionConfig.resolve(token="given-token", token_file=str(given)).token_file is None
    with pytest.raises(ValidationError) as raised:
        ConnectionConfig.resolve(token_file=str(tmp_path / "no-such-file"))
    assert raised.value.field == "token_file" and "no-such-file cannot be read" in str(raised.value)


@pytest.mark.anyio
async def test_create_connect_and_list_send_the_token_files_token(tmp_path: Path) -> None:
    path = tmp_path / "sa-token"
    path.write_text(f"{API_TOKEN}\n")
    fake = FakeFastSandbox()
    sandbox = Sandbox.create(name="sb-file", url=API_URL, token_file=str(path), data_dir=str(tmp_path), transport=fake.transport())
    assert [info.name for info in Sandbox.list(url=API_URL, token_file=str(path), transport=fake.transport())] == ["sb-file"]
    assert Sandbox.connect("sb-file", url=API_URL, token_file=str(path), transport=fake.transport()).sandbox_id == sandbox.sandbox_id
    listed = await AsyncSandbox.list(url=API_URL, token_file=str(path), transport=fake.async_transport())
    assert [info.name for info in listed] == ["sb-file"]
    handle = await AsyncSandbox.connect("sb-file", url=API_URL, token_file=str(path), transport=fake.async_transport())
    assert handle.sandbox_id == sandbox.sandbox_id
    path.write_text("not-the-api-token\n")
    with pytest.raises(UnauthenticatedError):
        Sandbox.list(url=API_URL, token_file=str(path), transport=fake.transport())
