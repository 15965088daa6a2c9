"""Schedules on Redis: the records, and the compare-and-set that enqueues each tick once.

A schedule is one hash, ``P:schedule:<name>`` (see :mod:`.keys`): ``spec``, ``timezone``, ``job`` (the
template, ``NewJob.to_json`` as JSON), ``catch_up``, ``paused`` (``1`` / ``0``), ``created_at``,
``updated_at``, and when set ``next_run_at``, ``last_run_at`` (µs), ``last_job_id``, plus ``fired_by``
(the token of the last ``schedule_fire`` call that fired it). ``P:schedules`` lists every name (score
0, so by name) and ``P:schedules-due`` the schedules not paused with a next run, by ``next_run_at``.

Every change is one script (``scripts/schedule_*.lua``). ``schedule_fire.lua`` checks ``next_run_at``
and inserts the tick's job with the very code of ``insert_many.lua`` (``insert_jobs`` in
``_lib.lua``), in one script: a tick is enqueued at most once, whatever the number of nodes that try.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

import orjson

from relay.errors import ScheduleNotFoundError
from relay.storage.params import ScheduleDue, ScheduleFire, ScheduleFireResult, ScheduleParams
from relay.storage.redis import writes
from relay.storage.redis.admin import get_job
from relay.storage.redis.codec import draft_job, encode_json, from_us, pack_new_job, to_us
from relay.storage.redis.session import Session
from relay.types import CatchUp, JobState, NewJob, Schedule, new_job_id


def _us(when: datetime | None) -> str:
    return "" if when is None else str(to_us(when))


def _schedule(name: bytes | str, record: Sequence[bytes]) -> Schedule:
    """A schedule from its hash as ``HGETALL`` gives it (a flat list of fields and values)."""
    r = dict(zip(record[::2], record[1::2], strict=True))

    def time(field: bytes) -> datetime | None:
        value = r.get(field)
        return None if value is None else from_us(value)

    last_job = r.get(b"last_job_id")
    return Schedule(
        name=name if isinstance(name, str) else name.decode(),
        spec=r[b"spec"].decode(),
        timezone=r[b"timezone"].decode(),
        job=NewJob.from_json(orjson.loads(r[b"job"])),
        catch_up=CatchUp(r[b"catch_up"].decode()),
        paused=r.get(b"paused") == b"1",
        next_run_at=time(b"next_run_at"),
        last_run_at=time(b"last_run_at"),
        last_job_id=None if last_job is None else last_job.decode(),
        created_at=from_us(r[b"created_at"]),
        updated_at=from_us(r[b"updated_at"]),
    )


async def upsert(s: Session, p: ScheduleParams) -> Schedule:
    job_json = encode_json(p.job.to_json(), "job")
    record = await s.scripts.schedule_upsert(
        s.now(), p.name, p.spec, p.timezone, job_json, p.catch_up.value, _us(p.next_run_at)
    )
    return _schedule(p.name, record)


async def get(s: Session, name: str) -> Schedule | None:
    found: dict[bytes, bytes] = await s.client.hgetall(s.keys.schedule(name))  # type: ignore[assignment]
    if not found:
        return None
    return _schedule(name, [part for pair in found.items() for part in pair])


async def list_all(s: Session) -> list[Schedule]:
    reply = await s.scripts.schedule_list(s.now(), None)
    return [_schedule(reply[x], reply[x + 1]) for x in range(1, len(reply), 2)]


async def remove(s: Session, name: str) -> bool:
    return await s.scripts.schedule_remove(s.now(), name)


async def set_paused(s: Session, name: str, paused: bool, next_run_at: datetime | None) -> Schedule:
    reply = await s.scripts.schedule_set_paused(s.now(), name, paused, _us(next_run_at))
    if reply[0] == b"missing":
        raise ScheduleNotFoundError(name)
    return _schedule(name, reply[1])


async def due(s: Session, limit: int) -> ScheduleDue:
    reply = await s.scripts.schedule_list(s.now(), max(0, limit))
    schedules = [_schedule(reply[x], reply[x + 1]) for x in range(1, len(reply), 2)]
    return ScheduleDue(from_us(reply[0]), schedules)


class FireCall:
    """One ``schedule_fire``, packed once: a call sent again after a lost reply sends the very same
    job id and token (:func:`relay.storage.redis.session.run` may call :meth:`run` twice), and finds
    that it fired already. ``woken``: the queue of a job it created due now, for this process's own
    waiters (the script's message skips them, as an insert's does)."""

    def __init__(self, p: ScheduleFire) -> None:
        self.p = p
        self.token = secrets.token_hex(8)
        self.packed = None if p.job is None else pack_new_job(p.job, p.job.id or new_job_id())
        self.body = b"" if self.packed is None else orjson.dumps([self.packed])
        self.woken: str | None = None

    async def run(self, s: Session) -> ScheduleFireResult:
        p = self.p
        times = (_us(p.expected_next), _us(p.tick), _us(p.next_run_at))
        reply = await s.scripts.schedule_fire(s.now(), p.name, times, self.token, s.origin, self.body)
        tag = reply[0]
        if tag == b"not":
            return ScheduleFireResult(fired=False)
        if tag == b"again":
            job = await get_job(s, reply[1].decode()) if reply[1] else None
            return ScheduleFireResult(fired=True, job=job)
        if self.packed is None:
            return ScheduleFireResult(fired=True)
        # {'dup', id} raises DuplicateJobError, as an insert does.
        [result] = writes.insert_results(
            [self.packed], [draft_job(self.packed)], reply[1] if tag == b"fired" else reply
        )
        job = result.job
        if result.created and job.state is JobState.PENDING and not job.held:
            self.woken = job.queue
        return ScheduleFireResult(fired=True, job=job)
