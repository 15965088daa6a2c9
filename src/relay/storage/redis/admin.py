"""What operators use, on Redis: get, list, cancel, requeue, purge, logs, queues, workers (rules 10-18).

Changes are one script call each; reads are a plain command or a read-only script, so that every
listing, count and log page is one consistent snapshot. Nothing here scans the keyspace: listings and
counts read the per-state indexes (``P:idx:<state>:<queue>``, see :mod:`.keys`).
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from relay.errors import InvalidTransitionError, JobNotFoundError
from relay.storage.flow_control import Bucket, tokens_now
from relay.storage.params import JobPage, ListParams, LogParams
from relay.storage.redis.codec import (
    FIELDS,
    Times,
    bucket_from_text,
    from_us,
    job_from_fields,
    jobs_from_pairs,
    limits_from_json,
    limits_json,
    log_line,
    worker_from_json,
)
from relay.storage.redis.session import Session
from relay.types import NO_LIMITS, Job, JobState, LogLine, QueueInfo, QueueLimits, WorkerInfo

_PURGE_CHUNK = 1000  # jobs deleted per script call
_TEXT_CHUNK = 200  # jobs looked at per call while a text filter (applied here) skips most of them
_STATES = list(JobState)  # the order of queue_list.lua's counts


async def get_job(s: Session, job_id: str) -> Job | None:
    values: list[bytes | None] = await s.client.hmget(s.keys.job(job_id), FIELDS)  # type: ignore[assignment]
    return job_from_fields(job_id, values)


# -- listing -------------------------------------------------------------------------------------------


def parse_cursor(cursor: str | None) -> str:
    """The seq to list below ('' = from the newest); the cursor is the seq of a page's last job."""
    if cursor is None:
        return ""
    if not cursor.isdigit():
        raise ValueError(f"not a job list cursor: {cursor!r}")
    return cursor


async def list_jobs(s: Session, p: ListParams) -> JobPage:
    """Rule 11: chunks of the newest jobs below the cursor, until one more match than a page."""
    before = parse_cursor(p.cursor)
    needle = p.text.casefold() if p.text else None
    chunk = p.limit + 1 if needle is None else max(p.limit + 1, _TEXT_CHUNK)
    filters = [[str(v) for v in dict.fromkeys(values)] for values in (p.states, p.queues, p.kinds)]
    found: list[tuple[int, Job]] = []
    times: Times = {}
    while len(found) <= p.limit:
        reply = await s.scripts.job_list(before, chunk, *filters)
        for x in range(1, len(reply), 3):
            job = job_from_fields(reply[x].decode(), reply[x + 2], times)
            if job is not None and (needle is None or _mentions(job, needle)):
                found.append((int(reply[x + 1]), job))
        before = reply[0].decode()
        if not before:
            break
    page = found[: p.limit]
    cursor = str(page[-1][0]) if len(found) > p.limit else None
    return JobPage([job for _, job in page], cursor)


def _mentions(job: Job, needle: str) -> bool:
    """Whether ``needle`` (casefolded: Unicode-aware, as on every backend) is in the id, a tag, or the
    payload's JSON text (orjson's, the same text the other backends search)."""
    if needle in job.id.casefold() or any(needle in tag.casefold() for tag in job.tags):
        return True
    return needle in orjson.dumps(job.payload).decode().casefold()


# -- changes -------------------------------------------------------------------------------------------


async def cancel_job(s: Session, job_id: str) -> Job:
    """Rule 12."""
    reply = await s.scripts.cancel(s.now(), s.origin, job_id)
    job = _one_job(reply, job_id, "cancel", 1)
    s.wake_from(reply[2])
    return job


async def requeue_one(s: Session, job_id: str) -> list[Job]:
    """Rule 13, one job."""
    reply = await s.scripts.requeue(s.now(), job_id, "", [])
    return [_one_job(reply, job_id, "requeue", 2)]


async def requeue_many(s: Session, states: Sequence[JobState], queue: str | None) -> list[Job]:
    """Rule 13, in bulk (the caller checked that ``states`` are requeueable)."""
    reply = await s.scripts.requeue(s.now(), "", queue or "", [str(state) for state in dict.fromkeys(states)])
    return jobs_from_pairs(reply, 1)


def _one_job(reply: list[object], job_id: str, action: str, at: int) -> Job:
    """A script's ``{'ok', ...}`` with the job's HGETALL at ``reply[at]``, or its refusal."""
    tag = reply[0]
    if tag == b"missing":
        raise JobNotFoundError(job_id)
    if tag == b"invalid":
        state = reply[1]
        assert isinstance(state, bytes)
        raise InvalidTransitionError(job_id, state.decode(), action)
    values = reply[at]
    assert isinstance(values, list)
    job = job_from_fields(job_id, values)
    assert job is not None  # read by the script that changed it
    return job


async def purge_jobs(s: Session, states: Sequence[JobState], queue: str | None) -> int:
    """Rule 14 (the caller refused RUNNING), in chunks: each is atomic, and Redis serves other clients
    between two of them."""
    wanted = [str(state) for state in dict.fromkeys(states)]
    total = 0
    while True:
        reply = await s.scripts.purge(s.now(), s.origin, queue or "", _PURGE_CHUNK, wanted)
        deleted = int(reply[0])
        s.wake_from(reply[1])
        total += deleted
        if deleted < _PURGE_CHUNK:
            return total


# -- logs, queues, workers -----------------------------------------------------------------------------


async def job_logs(s: Session, p: LogParams) -> list[LogLine]:
    """Rule 15 (the caller returned [] for a limit below 1)."""
    attempt = "" if p.attempt is None else str(int(p.attempt))
    raw = await s.scripts.logs_read(p.job_id, max(0, p.after_seq), attempt, p.limit)
    return [line for line in (log_line(p.job_id, r) for r in raw) if line.seq > p.after_seq]


async def list_queues(s: Session) -> list[QueueInfo]:
    """Rule 16, with each queue's limits and what its queue-wide bucket holds now (full when never
    drawn from; None without a rate)."""
    now_us, rows = await s.scripts.queue_list(s.now())
    now = from_us(now_us)
    infos = []
    for row in rows:
        limits = limits_from_json(row[10] or None)
        tokens = None
        if limits.rate is not None:
            bucket = Bucket(*bucket_from_text(row[11])) if row[11] else None
            tokens = tokens_now(bucket, limits.rate, now)
        infos.append(
            QueueInfo(
                name=row[0].decode(),
                paused=row[1] == b"1",
                counts={state: int(n) for state, n in zip(_STATES, row[2:9], strict=True)},
                oldest_pending_at=from_us(row[9]) if row[9] else None,
                limits=limits,
                tokens=tokens,
            )
        )
    return sorted(infos, key=lambda info: info.name)


async def set_limits(s: Session, name: str, limits: QueueLimits) -> None:
    """Replace a queue's limits (``NO_LIMITS`` clears them), cutting its buckets to a smaller burst."""
    await s.scripts.queue_limits_set(
        s.now(), s.origin, name, "" if limits == NO_LIMITS else limits_json(limits)
    )
    s.wake([name])


async def list_workers(s: Session) -> list[WorkerInfo]:
    raw: dict[bytes, bytes] = await s.client.hgetall(s.keys.workers)  # type: ignore[assignment]  # bytes
    workers = [worker_from_json(value) for value in raw.values()]
    return sorted(workers, key=lambda info: info.id)
