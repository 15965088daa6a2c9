"""Schedules (``relay.storage.base.Schedules``): their rows in ``relay.schedules``, and the firing of a tick.

A schedule's ``job`` is stored as ``NewJob.to_json()`` in a ``json`` column. Firing is one transaction of
up to three statements on a pooled connection: the compare-and-set on ``next_run_at``
(``schedule_fire_claim``, whose row lock makes concurrent firings of one tick wait and then find it
moved), the tick's job through the normal insert path (:mod:`.inserts`: unique windows and ordering keys
apply, and its idempotency key returns the job a previous firing of the same tick enqueued), and the
record of the run. Nothing of it is visible until the commit, which also delivers the insert's NOTIFY.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from relay.errors import ScheduleNotFoundError
from relay.storage.params import ScheduleDue, ScheduleFire, ScheduleFireResult, ScheduleParams
from relay.storage.postgres.inserts import IdTaken, InsertBatch, duplicate_async, insert_async
from relay.storage.postgres.rows import utc
from relay.storage.postgres.sql import Q
from relay.storage.sql_rows import Row, dumps
from relay.types import CatchUp, NewJob, Schedule

Conn = AsyncConnection[Any]


def _utc_or_none(when: datetime | None) -> datetime | None:
    return None if when is None else utc(when)


def schedule_from_row(r: Row) -> Schedule:
    """From ``name, spec, timezone, job, catch_up, paused, next_run_at, last_run_at, last_job_id,
    created_at, updated_at`` (the table's columns, in order)."""
    return Schedule(
        name=r[0],
        spec=r[1],
        timezone=r[2],
        job=NewJob.from_json(r[3]),
        catch_up=CatchUp(r[4]),
        paused=r[5],
        next_run_at=_utc_or_none(r[6]),
        last_run_at=_utc_or_none(r[7]),
        last_job_id=r[8],
        created_at=utc(r[9]),
        updated_at=utc(r[10]),
    )


async def upsert(conn: Conn, now: datetime | None, p: ScheduleParams) -> Schedule:
    params = {
        "name": p.name,
        "spec": p.spec,
        "timezone": p.timezone,
        "job": dumps(p.job.to_json()),
        "catch_up": p.catch_up.value,
        "next_run_at": p.next_run_at,
        "now": now,
    }
    cur = await conn.execute(Q["schedule_upsert"], params)
    return schedule_from_row(_one(await cur.fetchone()))


async def get(conn: Conn, now: datetime | None, name: str) -> Schedule | None:
    cur = await conn.execute(Q["schedule_get"], {"name": name})
    row = await cur.fetchone()
    return None if row is None else schedule_from_row(row)


async def list_all(conn: Conn, now: datetime | None) -> list[Schedule]:
    cur = await conn.execute(Q["schedule_list"])
    return [schedule_from_row(r) for r in await cur.fetchall()]


async def remove(conn: Conn, now: datetime | None, name: str) -> bool:
    cur = await conn.execute(Q["schedule_remove"], {"name": name})
    return await cur.fetchone() is not None


async def set_paused(
    conn: Conn, now: datetime | None, name: str, paused: bool, next_run_at: datetime | None
) -> Schedule:
    params = {"name": name, "paused": paused, "next_run_at": next_run_at, "now": now}
    cur = await conn.execute(Q["schedule_set_paused"], params)
    row = await cur.fetchone()
    if row is None:
        raise ScheduleNotFoundError(name)
    return schedule_from_row(row)


async def due(conn: Conn, now: datetime | None, limit: int) -> ScheduleDue:
    """From rows of ``now`` then a schedule's columns (all NULL in the one row when none is due)."""
    cur = await conn.execute(Q["schedule_due"], {"now": now, "limit": max(0, limit)})
    rows = await cur.fetchall()
    return ScheduleDue(utc(rows[0][0]), [schedule_from_row(r[1:]) for r in rows if r[1] is not None])


async def fire(conn: Conn, now: datetime | None, p: ScheduleFire) -> ScheduleFireResult:
    """The compare-and-set, the tick's job and the record of the run, in one transaction."""
    batch = None if p.job is None else InsertBatch.of([p.job])
    claim = {"name": p.name, "expected_next": p.expected_next, "next_run_at": p.next_run_at, "now": now}
    try:
        async with conn.transaction():
            cur = await conn.execute(Q["schedule_fire_claim"], claim)
            if await cur.fetchone() is None:
                return ScheduleFireResult(fired=False)  # fired by another node, changed, paused or gone
            if batch is None:
                return ScheduleFireResult(fired=True)  # a skipped tick
            [inserted] = await insert_async(conn, now, batch, in_transaction=True)
            record = {"name": p.name, "tick": p.tick, "job_id": inserted.job.id}
            await conn.execute(Q["schedule_fire_record"], record)
            return ScheduleFireResult(fired=True, job=inserted.job)
    except IdTaken:
        assert batch is not None
        raise await duplicate_async(conn, batch) from None


def _one(row: Row | None) -> Row:
    if row is None:
        raise AssertionError("the statement returned no row")
    return row
