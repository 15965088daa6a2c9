"""Schedules on SQLite: the definitions, and the compare-and-set that enqueues each tick once.

A schedule's ``job`` is stored as the JSON of ``NewJob.to_json``. :func:`fire` runs in one
``BEGIN IMMEDIATE`` transaction: it reads the schedule, and only while its ``next_run_at`` is still the
tick the caller read (and it is not paused) inserts the tick's job through the ordinary insert
(:func:`relay.storage.sqlite.writes.insert_jobs`, so its idempotency key returns a job enqueued for
the same tick before) and moves ``next_run_at`` on. A second node firing the same tick finds
``next_run_at`` moved and does nothing; the write lock makes the read and the writes one step.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

import orjson

from relay.errors import ScheduleNotFoundError
from relay.storage.params import ScheduleFire, ScheduleFireResult, ScheduleParams
from relay.storage.sql_rows import Row, dumps
from relay.storage.sqlite.rows import from_us, from_us_or_none, to_us
from relay.storage.sqlite.sql import Q
from relay.storage.sqlite.writes import insert_jobs
from relay.types import CatchUp, NewJob, Schedule

# Positions in a schedules row (schema.sql order).
_NEXT_RUN_AT = 6
_CATCH_UP = {c.value: c for c in CatchUp}


def _us_or_none(when: datetime | None) -> int | None:
    return None if when is None else to_us(when)


def schedule_from_row(r: Row) -> Schedule:
    """From a ``SELECT *`` row of ``schedules``."""
    return Schedule(
        name=r[0],
        spec=r[1],
        timezone=r[2],
        job=NewJob.from_json(orjson.loads(r[3])),
        catch_up=_CATCH_UP[r[4]],
        paused=bool(r[5]),
        next_run_at=from_us_or_none(r[6]),
        last_run_at=from_us_or_none(r[7]),
        last_job_id=r[8],
        created_at=from_us(r[9]),
        updated_at=from_us(r[10]),
    )


def upsert(conn: sqlite3.Connection, now: datetime, p: ScheduleParams) -> Schedule:
    params: dict[str, Any] = {
        "name": p.name,
        "spec": p.spec,
        "timezone": p.timezone,
        "job": dumps(p.job.to_json()),
        "catch_up": str(p.catch_up),
        "next_run_at": _us_or_none(p.next_run_at),
        "now": to_us(now),
    }
    return schedule_from_row(conn.execute(Q["schedule_upsert"], params).fetchone())


def get(conn: sqlite3.Connection, now: datetime, name: str) -> Schedule | None:
    row = conn.execute(Q["schedule_get"], {"name": name}).fetchone()
    return None if row is None else schedule_from_row(row)


def list_all(conn: sqlite3.Connection, now: datetime) -> list[Schedule]:
    return [schedule_from_row(r) for r in conn.execute(Q["schedule_list"])]


def remove(conn: sqlite3.Connection, now: datetime, name: str) -> bool:
    return conn.execute(Q["schedule_remove"], {"name": name}).rowcount > 0


def set_paused(
    conn: sqlite3.Connection, now: datetime, name: str, paused: bool, next_run_at: datetime | None
) -> Schedule:
    params = {"name": name, "paused": int(paused), "next_run_at": _us_or_none(next_run_at), "now": to_us(now)}
    row = conn.execute(Q["schedule_set_paused"], params).fetchone()
    if row is None:
        raise ScheduleNotFoundError(name)
    return schedule_from_row(row)


def due(conn: sqlite3.Connection, now: datetime, limit: int) -> list[Schedule]:
    if limit <= 0:  # SQLite reads a negative LIMIT as "no limit"
        return []
    rows = conn.execute(Q["schedule_due"], {"now": to_us(now), "limit": limit})
    return [schedule_from_row(r) for r in rows]


def fire(conn: sqlite3.Connection, now: datetime, p: ScheduleFire) -> tuple[ScheduleFireResult, bool]:
    """Enqueue one tick at most once; also returns whether its job was created (to wake its queue)."""
    row = conn.execute(Q["schedule_get"], {"name": p.name}).fetchone()
    if row is None or row[5] or row[_NEXT_RUN_AT] != to_us(p.expected_next):
        return ScheduleFireResult(fired=False), False
    inserted = None if p.job is None else insert_jobs(conn, now, [p.job])[0]
    params = {
        "name": p.name,
        "expected_next": row[_NEXT_RUN_AT],
        "next_run_at": _us_or_none(p.next_run_at),
        "tick": to_us(p.tick),
        "job_id": None if inserted is None else inserted.job.id,
        "now": to_us(now),
    }
    conn.execute(Q["schedule_fired"], params)
    if inserted is None:
        return ScheduleFireResult(fired=True), False
    return ScheduleFireResult(fired=True, job=inserted.job), inserted.created
