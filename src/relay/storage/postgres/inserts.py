"""Inserting jobs (semantics.md rule 1), on the backend's own connections or on a caller's.

The work is split so that a sync ``psycopg.Connection`` (transactional enqueue from sync code) and an
``AsyncConnection`` run the very same statements: :class:`InsertBatch` does everything that needs no
database (ids, repeats within the batch, the columnar parameters, the jobs as stored), and two tiny
drivers, :func:`insert_async` and :func:`insert_sync`, only execute ``job_insert`` and, when some
idempotency key was already taken, ``job_by_idempotency_keys``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, Connection, errors

from relay.errors import DuplicateJobError, InvalidJobError, StorageUnavailableError
from relay.storage.batching import collector_paused
from relay.storage.params import InsertResult
from relay.storage.postgres.rows import (
    IDEMPOTENCY_KEY,
    Inserted,
    insert_params,
    inserted_jobs,
    job_from_row,
    use_orjson,
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
    _params: dict[str, str] | None = None  # what was sent, column by column

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
            batch.sent.append(pos)
        return batch

    def params(self, now: datetime | None) -> dict[str, Any]:
        return {"now": now, **self._sent_params()}

    def _sent_params(self) -> dict[str, str]:
        if self._params is None:
            self._params = insert_params(self._sent_specs(), self._sent_ids())
        return self._params

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
            built = inserted_jobs(self._sent_specs(), self._sent_ids(), self._sent_params(), answer)
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


async def insert_async(
    conn: AsyncConnection[Any], now: datetime | None, batch: InsertBatch
) -> list[InsertResult]:
    try:
        cur = await conn.execute(Q["job_insert"], batch.params(now))
    except errors.UniqueViolation as exc:
        raise IdTaken() from exc
    except errors.DataError as exc:
        raise InvalidJobError("", f"PostgreSQL refused the job: {exc}") from None
    answer = Inserted.of(_one(await cur.fetchone()))
    existing: list[Row] = []
    if keys := batch.missing_keys(answer):
        cur = await conn.execute(Q["job_by_idempotency_keys"], {"keys": keys})
        existing = await cur.fetchall()
    return batch.results(answer, existing)


def insert_sync(conn: Connection[Any], now: datetime | None, batch: InsertBatch) -> list[InsertResult]:
    cur = conn.cursor()
    use_orjson(cur)  # on this cursor only: the caller's connection keeps its own adapters
    try:
        cur.execute(Q["job_insert"], batch.params(now))
    except errors.UniqueViolation as exc:
        raise IdTaken() from exc
    except errors.DataError as exc:
        raise InvalidJobError("", f"PostgreSQL refused the job: {exc}") from None
    answer = Inserted.of(_one(cur.fetchone()))
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
