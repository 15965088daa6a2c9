"""Inserting jobs (semantics.md rule 1), on the backend's own connections or on a caller's.

The work is split so that a sync ``psycopg.Connection`` (transactional enqueue from sync code) and an
``AsyncConnection`` run the very same statements: :class:`InsertBatch` does everything that needs no
database (ids, repeats within the batch, the columnar parameters, the jobs as stored), and two tiny
drivers, :func:`insert_async` and :func:`insert_sync`, only execute ``job_insert`` and, when some
idempotency key was already taken, ``job_by_idempotency_keys``.

Unique windows: when ``job_insert`` finds a key held by a job whose hold lapsed, it inserts nothing and
names the key. The driver then takes the keys over in one transaction (the caller's, when it has one):
``job_release_keys`` clears them from their old jobs (row locks: of two inserts taking one key over, the
second waits, then finds the first one's new job holding it), and ``job_insert`` runs again. Batches
without idempotency keys never meet this, and neither do keys whose job still holds them.

Ordering keys: ``job_insert`` itself holds and releases (see queries.sql), in its one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, Connection, Cursor, errors

from relay.errors import DuplicateJobError, InvalidJobError, StorageUnavailableError
from relay.storage.batching import collector_paused
from relay.storage.params import InsertResult
from relay.storage.postgres.rows import (
    IDEMPOTENCY_KEY,
    Inserted,
    insert_params,
    inserted_jobs,
    job_from_row,
    json_array,
    use_orjson,
    uses_flow_control,
)
from relay.storage.postgres.sql import Q
from relay.storage.sql_rows import Row
from relay.types import Job, NewJob, new_job_ids


@dataclass(slots=True)
class InsertBatch:
    """One batch: what to send, and the answer each of its jobs gets from what the database answers."""

    specs: Sequence[NewJob]
    ids: list[str]  # the id each job gets (its own, or a fresh one)
    first_with_key: dict[str, int] = field(default_factory=dict)  # key -> position of its first job
    sent: list[int] = field(default_factory=list)  # positions actually sent (later key repeats are not)
    flow: bool = False  # some job uses a flow-control field (see rows.insert_params)
    _columns: dict[str, str] | None = None  # what was sent, column by column

    @classmethod
    def of(cls, specs: Sequence[NewJob]) -> InsertBatch:
        """Raises :class:`DuplicateJobError` for a client id repeated within the batch (nothing sent)."""
        fresh = new_job_ids(len(specs))
        batch = cls(specs, [spec.id or new for spec, new in zip(specs, fresh, strict=True)])
        seen: set[str] = set()
        for pos, spec in enumerate(specs):
            if spec.id is not None:
                if spec.id in seen:
                    raise DuplicateJobError(spec.id)
                seen.add(spec.id)
            key = spec.idempotency_key
            if key is not None and key in batch.first_with_key:
                continue  # a repeat of a key within the batch gets the first job with that key
            if key is not None:
                batch.first_with_key[key] = pos
            if not batch.flow and uses_flow_control(spec):
                batch.flow = True
            batch.sent.append(pos)
        return batch

    def params(self, now: datetime | None) -> dict[str, Any]:
        """``job_insert``'s parameters: the columns, the batch's idempotency keys (checked for lapsed
        holds) and its (queue, ordering_key) pairs (None when there are none: no release to run)."""
        ordering = (
            {(s.queue, s.ordering_key) for s in self._sent_specs() if s.ordering_key is not None}
            if self.flow
            else ()
        )
        return {
            "now": now,
            **self._sent_columns(),
            "keys": json_array(list(self.first_with_key)) if self.first_with_key else "[]",
            "ordering": json_array(sorted(ordering)) if ordering else None,
        }

    def _sent_columns(self) -> dict[str, str]:
        if self._columns is None:
            self._columns = insert_params(self._sent_specs(), self._sent_ids(), self.flow)
        return self._columns

    def _sent_specs(self) -> list[NewJob]:
        return [self.specs[i] for i in self.sent] if len(self.sent) < len(self.specs) else list(self.specs)

    def _sent_ids(self) -> list[str]:
        return [self.ids[i] for i in self.sent] if len(self.sent) < len(self.specs) else self.ids

    def missing_keys(self, answer: Inserted) -> list[str]:
        """Keys of sent jobs that were not inserted: an existing job holds each."""
        return [
            key
            for pos in self.sent
            if (key := self.specs[pos].idempotency_key) is not None and self.ids[pos] not in answer.keyed
        ]

    def results(self, answer: Inserted, existing: list[Row]) -> list[InsertResult]:
        """Each job's answer: created, or the job that already holds its idempotency key."""
        with collector_paused(len(self.specs)):
            columns = self._sent_columns()
            built = inserted_jobs(self._sent_specs(), self._sent_ids(), columns, answer, self.flow)
            if not self.first_with_key:  # no key: every job was sent, and inserted (or all raised)
                return [InsertResult(job, created=True) for job in built]
            return self._keyed_results(built, answer, existing)

    def _keyed_results(self, built: list[Job], answer: Inserted, existing: list[Row]) -> list[InsertResult]:
        """:meth:`results` of a batch with idempotency keys: repeats, and keys an existing job holds."""
        by_pos = dict(zip(self.sent, built, strict=True))
        by_key = {row[IDEMPOTENCY_KEY]: job_from_row(row) for row in existing}
        out: list[InsertResult] = []
        for pos, spec in enumerate(self.specs):
            key = spec.idempotency_key
            if key is None:
                out.append(InsertResult(by_pos[pos], created=True))
            elif self.first_with_key[key] != pos:  # a repeat within the batch
                out.append(InsertResult(out[self.first_with_key[key]].job, created=False))
            elif self.ids[pos] in answer.keyed:
                out.append(InsertResult(by_pos[pos], created=True))
            elif key in by_key:
                out.append(InsertResult(by_key[key], created=False))
            else:
                # The key's holder was deleted between the insert and the lookup (a purge at that
                # very moment): the rest of the batch is stored; asking again inserts this job.
                raise StorageUnavailableError(f"the job holding idempotency key {key!r} vanished; retry")
        return out

    def duplicate(self, taken: set[str]) -> DuplicateJobError:
        """The error for a batch that hit a taken client id: the first such id in batch order."""
        first = next((self.ids[i] for i in self.sent if self.ids[i] in taken), None)
        return DuplicateJobError(first or self.ids[self.sent[0]])


class IdTaken(Exception):
    """``job_insert`` hit a client id already stored. The statement (with the caller's savepoint, on a
    caller's connection) must be rolled back before the taken ids can be read (``duplicate_*``)."""


_MAX_TAKEOVERS = 5  # rounds of taking lapsed keys over before giving up (each finds the keys left)


async def insert_async(
    conn: AsyncConnection[Any], now: datetime | None, batch: InsertBatch, *, in_transaction: bool = False
) -> list[InsertResult]:
    """``in_transaction``: ``conn`` is in a transaction already (a caller's, or one its caller opened),
    in which lapsed keys are taken over; otherwise (a pooled autocommit connection) a transaction is
    opened for that, and only then."""
    answer = await _insert_once_async(conn, now, batch)
    if answer.lapsed and not in_transaction:
        async with conn.transaction():
            answer = await _take_over_async(conn, now, batch, answer)
            return await _results_async(conn, batch, answer)
    if answer.lapsed:
        answer = await _take_over_async(conn, now, batch, answer)
    return await _results_async(conn, batch, answer)


async def _insert_once_async(
    conn: AsyncConnection[Any], now: datetime | None, batch: InsertBatch
) -> Inserted:
    try:
        cur = await conn.execute(Q["job_insert"], batch.params(now))
    except errors.UniqueViolation as exc:
        raise IdTaken() from exc
    except errors.DataError as exc:
        raise InvalidJobError("", f"PostgreSQL refused the job: {exc}") from None
    return Inserted.of(_one(await cur.fetchone()))


async def _take_over_async(
    conn: AsyncConnection[Any], now: datetime | None, batch: InsertBatch, answer: Inserted
) -> Inserted:
    for _ in range(_MAX_TAKEOVERS):
        await conn.execute(Q["job_release_keys"], {"keys": answer.lapsed, "now": now})
        answer = await _insert_once_async(conn, now, batch)
        if not answer.lapsed:
            return answer
    raise StorageUnavailableError("idempotency keys kept lapsing while being taken over; retry")


async def _results_async(
    conn: AsyncConnection[Any], batch: InsertBatch, answer: Inserted
) -> list[InsertResult]:
    existing: list[Row] = []
    if keys := batch.missing_keys(answer):
        cur = await conn.execute(Q["job_by_idempotency_keys"], {"keys": keys})
        existing = await cur.fetchall()
    return batch.results(answer, existing)


def insert_sync(
    conn: Connection[Any], now: datetime | None, batch: InsertBatch, *, in_transaction: bool = False
) -> list[InsertResult]:
    """:func:`insert_async` on a sync connection (a caller's: its cursor loads JSON with orjson)."""
    cur = conn.cursor()
    use_orjson(cur)  # on this cursor only: the caller's connection keeps its own adapters
    answer = _insert_once_sync(cur, now, batch)
    if answer.lapsed and not in_transaction:
        with conn.transaction():
            answer = _take_over_sync(cur, now, batch, answer)
            return _results_sync(cur, batch, answer)
    if answer.lapsed:
        answer = _take_over_sync(cur, now, batch, answer)
    return _results_sync(cur, batch, answer)


def _insert_once_sync(cur: Cursor[Any], now: datetime | None, batch: InsertBatch) -> Inserted:
    try:
        cur.execute(Q["job_insert"], batch.params(now))
    except errors.UniqueViolation as exc:
        raise IdTaken() from exc
    except errors.DataError as exc:
        raise InvalidJobError("", f"PostgreSQL refused the job: {exc}") from None
    return Inserted.of(_one(cur.fetchone()))


def _take_over_sync(cur: Cursor[Any], now: datetime | None, batch: InsertBatch, answer: Inserted) -> Inserted:
    for _ in range(_MAX_TAKEOVERS):
        cur.execute(Q["job_release_keys"], {"keys": answer.lapsed, "now": now})
        answer = _insert_once_sync(cur, now, batch)
        if not answer.lapsed:
            return answer
    raise StorageUnavailableError("idempotency keys kept lapsing while being taken over; retry")


def _results_sync(cur: Cursor[Any], batch: InsertBatch, answer: Inserted) -> list[InsertResult]:
    existing: list[Row] = []
    if keys := batch.missing_keys(answer):
        existing = cur.execute(Q["job_by_idempotency_keys"], {"keys": keys}).fetchall()
    return batch.results(answer, existing)


def _one(row: Row | None) -> Row:
    """``job_insert`` answers with exactly one row (an aggregate): None would be a broken query."""
    if row is None:
        raise AssertionError("job_insert returned no row")
    return row


async def duplicate_async(conn: AsyncConnection[Any], batch: InsertBatch) -> DuplicateJobError:
    cur = await conn.execute(Q["job_ids_taken"], {"ids": batch.ids})
    return batch.duplicate({r[0] for r in await cur.fetchall()})


def duplicate_sync(conn: Connection[Any], batch: InsertBatch) -> DuplicateJobError:
    return batch.duplicate({r[0] for r in conn.execute(Q["job_ids_taken"], {"ids": batch.ids}).fetchall()})
