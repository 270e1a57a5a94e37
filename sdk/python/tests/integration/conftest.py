"""The integration tests run against a real Fast Sandbox: the one FSB_URL, FSB_TOKEN and
FSB_PROXY_URL name (test/e2e/python-sdk starts an embedded one and sets them). Without them the
tests fail: they never pass by skipping."""

from __future__ import annotations

import os
import uuid
from typing import Dict, Iterator

import pytest

from fast_sandbox import Sandbox


@pytest.fixture(scope="session", autouse=True)
def fast_sandbox_environment() -> None:
    missing = [name for name in ("FSB_URL", "FSB_TOKEN") if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: the integration tests need a running Fast Sandbox (npm test starts one)", pytrace=False)


@pytest.fixture(scope="session")
def run_labels() -> Dict[str, str]:
    """Labels of every sandbox this run creates, so that listing finds only them."""
    return {"suite": "python-sdk", "run": os.environ.get("FSB_PYTEST_RUN") or uuid.uuid4().hex[:10]}


@pytest.fixture(scope="module")
def sandbox(run_labels: Dict[str, str]) -> Iterator[Sandbox]:
    """One sandbox for the tests of a module that do not change its life."""
    created = Sandbox.create(labels=run_labels, envs={"GREETING": "hello-from-envs"}, timeout=600)
    yield created
    created.kill()
    created.close()
