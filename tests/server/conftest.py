"""Fixtures for the server tests: a Relay on a real SQLite file, and servers around it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.app import Relay
from relay.settings import Settings
from servers.redis import redis_server


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    """A Relay on a SQLite file, with maintenance fast enough for lease tests."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/relay.db",
        reaper_interval=0.05,
        scheduler_interval=0.05,
        leader_ttl=3.0,
        poll_interval=0.05,
    )
    app = Relay(settings=settings)
    yield app
    app.close()


__all__ = ["redis_server"]  # the session fixture, for the tests that need a real Redis
