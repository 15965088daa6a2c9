"""Fixtures for in-process runtime tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relay import Relay
from relay.settings import Settings


@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Relay]:
    """A Relay on each embedded backend, polling fast so tests finish quickly."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/relay.db"
    relay = Relay(settings=Settings(database_url=url, poll_interval=0.05, cancel_grace=0.3))
    yield relay
    relay.close()
