"""Shared fixtures: unit tests (tests/unit) run against the in-memory fake; integration tests
(tests/integration) against the Fast Sandbox that FSB_URL, FSB_TOKEN and FSB_PROXY_URL name."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
