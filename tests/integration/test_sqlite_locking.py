""" "database is locked" is retried inside the SQLite backend and never surfaces as anything else.

Another connection (another thread, to SQLite the same as another process) holds the write lock with
``BEGIN IMMEDIATE``. An operation started meanwhile waits; released in time, the operation succeeds;
held past the retry deadline, it raises StorageUnavailableError and changes nothing.

Nothing here sleeps for time to pass: the tests wait for conditions (the lock is held, the operation
was refused at least once) with deadlines.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from relay.errors import StorageUnavailableError
from relay.storage.params import ClaimParams
from relay.storage.sqlite import SQLiteStorage
from relay.types import JobKind, JobState, NewJob

CONDITION_TIMEOUT = 10.0  # seconds: far more than any condition below needs


class WriteLockHolder:
    """Holds a ``BEGIN IMMEDIATE`` write lock on ``path`` from its own thread until released."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._locked = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._hold, name="lock-holder", daemon=True)

    def _hold(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._locked.set()
            self._release.wait(CONDITION_TIMEOUT * 3)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    async def __aenter__(self) -> WriteLockHolder:
        self._thread.start()
        assert await asyncio.to_thread(self._locked.wait, CONDITION_TIMEOUT), "the lock was never taken"
        return self

    def release(self) -> None:
        self._release.set()

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        await asyncio.to_thread(self._thread.join, CONDITION_TIMEOUT)
        assert not self._thread.is_alive()


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` on the event loop until it holds, or fail after CONDITION_TIMEOUT."""
    deadline = time.monotonic() + CONDITION_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.005)


def job(job_id: str | None = None) -> NewJob:
    return NewJob(kind=JobKind.SHELL, payload={"command": "true"}, id=job_id)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "relay.db"


async def opened(path: Path, *, retry_deadline: float) -> SQLiteStorage:
    # A short busy timeout, so that the backend's own retry loop (not only SQLite's wait) is exercised.
    storage = SQLiteStorage(str(path), busy_timeout=0.02, retry_deadline=retry_deadline)
    await storage.open()
    return storage


@pytest.fixture
async def patient(db_path: Path) -> AsyncIterator[SQLiteStorage]:
    """Retries for 30 s: it outlasts any lock these tests release."""
    storage = await opened(db_path, retry_deadline=30.0)
    yield storage
    await storage.close()


@pytest.fixture
async def impatient(db_path: Path) -> AsyncIterator[SQLiteStorage]:
    """Gives up after 0.2 s."""
    storage = await opened(db_path, retry_deadline=0.2)
    yield storage
    await storage.close()


async def test_insert_waits_for_the_lock_and_succeeds_once_released(
    db_path: Path, patient: SQLiteStorage
) -> None:
    async with WriteLockHolder(db_path) as holder:
        insert = asyncio.create_task(patient.job_insert_many([job("waited")]))
        await wait_until(lambda: patient.busy_retries >= 2, "the insert was refused and retried")
        assert not insert.done()
        holder.release()
        [result] = await asyncio.wait_for(insert, CONDITION_TIMEOUT)
    assert result.created is True
    stored = await patient.job_get("waited")
    assert stored is not None
    assert stored.state is JobState.PENDING


async def test_claim_waits_for_the_lock_and_claims_once_released(
    db_path: Path, patient: SQLiteStorage
) -> None:
    await patient.job_insert_many([job("to-claim")])
    async with WriteLockHolder(db_path) as holder:
        before = patient.busy_retries
        claim = asyncio.create_task(patient.job_claim(ClaimParams(["default"], "w1", 10)))
        await wait_until(lambda: patient.busy_retries > before, "the claim was refused and retried")
        holder.release()
        claimed = await asyncio.wait_for(claim, CONDITION_TIMEOUT)
    assert [j.id for j in claimed] == ["to-claim"]
    assert claimed[0].attempt == 1


async def test_lock_held_past_the_deadline_is_unavailable_and_changes_nothing(
    db_path: Path, impatient: SQLiteStorage
) -> None:
    [existing] = await impatient.job_insert_many([job("existing")])
    async with WriteLockHolder(db_path):
        with pytest.raises(StorageUnavailableError, match="locked"):
            await impatient.job_insert_many([job("never"), job("never-either")])
        with pytest.raises(StorageUnavailableError, match="locked"):
            await impatient.job_claim(ClaimParams(["default"], "w1", 10))
    assert impatient.busy_retries > 0
    # Nothing of either operation was applied, and the storage works again once the lock is gone.
    assert await impatient.job_get("never") is None
    assert await impatient.job_get("never-either") is None
    assert await impatient.job_get("existing") == existing.job
    [claimed] = await impatient.job_claim(ClaimParams(["default"], "w1", 10))
    assert (claimed.id, claimed.attempt) == ("existing", 1)


async def test_reads_are_not_blocked_by_a_writer(db_path: Path, impatient: SQLiteStorage) -> None:
    """WAL: a held write lock does not stop readers, so the dashboard stays up during a long write."""
    await impatient.job_insert_many([job("readable")])
    async with WriteLockHolder(db_path):
        assert (await impatient.job_get("readable")) is not None
        assert [q.name for q in await impatient.queue_list()] == ["default"]


async def test_the_event_loop_keeps_running_while_an_operation_waits(
    db_path: Path, patient: SQLiteStorage
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with WriteLockHolder(db_path) as holder:
        insert = asyncio.create_task(patient.job_insert_many([job()]))
        counting = asyncio.create_task(ticker())
        await wait_until(lambda: ticks > 100 and patient.busy_retries > 0, "the loop ticked meanwhile")
        holder.release()
        await asyncio.wait_for(insert, CONDITION_TIMEOUT)
        counting.cancel()
