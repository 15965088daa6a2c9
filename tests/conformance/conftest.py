"""Fixtures of the storage conformance suite: one registry of backends, every test runs on each.

Adding a backend means adding one entry to :data:`BACKENDS`:

- ``url`` builds the storage URL of a fresh, empty store for one test (a file under ``tmp_path`` for
  SQLite; for PostgreSQL a database cloned from a migrated template, for Redis an empty DB index or a
  unique key prefix);
- ``server_fixture`` names a session fixture that starts (or finds, from ``RELAY_TEST_POSTGRES_URL`` /
  ``RELAY_TEST_REDIS_URL``) the server once per run; its value reaches ``url`` as ``BackendEnv.server``.

Every test gets ``storage``: the backend opened with a :class:`relay.clock.ManualClock` (``clock``), closed
after the test. Time moves only when a test moves that clock. Tests that need several processes use
``shared_url`` (the URL child processes open, or None when the backend has no ``multi_process``
capability and the test falls back to threads in this process).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay.app import storage_from_url
from relay.clock import ManualClock
from relay.storage.base import Storage
from servers.postgres import postgres_server, postgres_test_url
from servers.redis import redis_server, redis_test_url

from .helpers import T0

# Imported for pytest: the session fixtures that start the servers (once per run, on first use).
__all__ = ["postgres_server", "redis_server"]


@dataclass(frozen=True, slots=True)
class BackendEnv:
    """What a backend's ``url`` factory may use to build a store private to one test."""

    tmp_path: Path
    server: object = None  # the value of the backend's server_fixture, if it has one


@dataclass(frozen=True, slots=True)
class BackendFactory:
    name: str
    url: Callable[[BackendEnv], str]
    server_fixture: str | None = None  # a session fixture that starts the backend's server

    def build(self, url: str, clock: ManualClock) -> Storage:
        return storage_from_url(url, clock=clock)


BACKENDS: dict[str, BackendFactory] = {
    "memory": BackendFactory("memory", lambda env: "memory://"),
    "sqlite": BackendFactory("sqlite", lambda env: f"sqlite:///{env.tmp_path / 'relay.db'}"),
    "postgres": BackendFactory("postgres", postgres_test_url, server_fixture="postgres_server"),
    "redis": BackendFactory("redis", redis_test_url, server_fixture="redis_server"),
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> BackendFactory:
    """The backend under test (the test id names it: ``test_x[sqlite]``)."""
    factory: BackendFactory = BACKENDS[request.param]
    return factory


@pytest.fixture
def backend_env(backend: BackendFactory, tmp_path: Path, request: pytest.FixtureRequest) -> BackendEnv:
    server = request.getfixturevalue(backend.server_fixture) if backend.server_fixture else None
    return BackendEnv(tmp_path=tmp_path, server=server)


@pytest.fixture
def storage_url(backend: BackendFactory, backend_env: BackendEnv) -> str:
    """The URL of this test's fresh store (built once: for a server backend it creates the store)."""
    return backend.url(backend_env)


@pytest.fixture
def clock() -> ManualClock:
    """The clock every backend under test is built with; tests move it instead of sleeping."""
    return ManualClock(T0)


@pytest.fixture
async def storage(backend: BackendFactory, storage_url: str, clock: ManualClock) -> AsyncIterator[Storage]:
    store = backend.build(storage_url, clock)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def shared_url(storage: Storage, storage_url: str) -> str | None:
    """The URL other processes open to reach ``storage``'s data, or None without ``multi_process``."""
    return storage_url if storage.capabilities.multi_process else None
