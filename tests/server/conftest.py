"""Fixtures for the server tests: a Relay on a real SQLite file (or on each backend that the flow-control
tests run on), and servers around it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.app import Relay
from relay.clock import ManualClock
from relay.settings import Settings
from servers.redis import redis_server

# The backends the flow-control API tests (limits, schedules) run on: each keeps them for real.
FLOW_BACKENDS = ("memory", "sqlite")
START = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)  # a Friday, noon


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


@pytest.fixture
def clock() -> ManualClock:
    """The clock of :func:`flow_relay` (and its storage): it moves only when a test moves it."""
    return ManualClock(START)


@pytest.fixture(params=FLOW_BACKENDS)
def flow_relay(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> Iterator[Relay]:
    """A Relay on each of FLOW_BACKENDS, on an injected clock."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/relay.db"
    app = Relay(settings=Settings(database_url=url, poll_interval=0.05), clock=clock)
    yield app
    app.close()
