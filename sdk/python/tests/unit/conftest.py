from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest

from fake_fast_sandbox import FakeFastSandbox, new_fake


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No FSB_* variable of the machine leaks in; the data directory is an empty one."""
    for name in ("FSB_URL", "FSB_TOKEN", "FSB_TOKEN_FILE", "FSB_PROXY_URL", "FSB_SANDBOX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FSB_DATA_DIR", str(tmp_path / "data-dir"))
    yield


@pytest.fixture
def fake_and_options() -> Tuple[FakeFastSandbox, Dict[str, Any]]:
    return new_fake()
