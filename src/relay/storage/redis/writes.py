"""The hot path on Redis: insert, claim, heartbeat, finish, log append (semantics.md rules 1 to 5).

Each function is one script call (see ``scripts/*.lua``): arguments packed here, the reply decoded
here. They run on the backend's private loop, inside :func:`relay.storage.redis.session.run`, which may
call them again after a dropped connection: so everything random (ids, batch tokens) is chosen by the
caller before, and stays the same on a second try.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from relay.errors import DuplicateJobError
from relay.storage.params import (
    ClaimedJobs,
    ClaimParams,
    FinishResult,
    HeartbeatItem,
    HeartbeatResult,
    InsertResult,
    LogAppend,
)
from relay.storage.redis.codec import Times, encode_json, from_us, job_from_fields, jobs_from_pairs, stamp_job
from relay.storage.redis.session import Session
from relay.types import Job, JobState

#: One finish item as finish.lua reads it: id, token, outcome, result, error, delay µs, retryable.
FinishArgs = tuple[str, str, str, str, str, str, str]

_EXTENDED, _CANCEL_REQUESTED = 1, 2


async def insert(s: Session, body: bytes, batch: str) -> list[Any]:
    """Rule 1: the packed jobs (``codec.pack_new_job``, ids chosen; ``body`` is their JSON array) in
    one all-or-nothing call. The raw reply, for :func:`insert_results` (the caller drafts the jobs
    meanwhile: see ``RedisStorage.job_insert_many``)."""
    reply: list[Any] = await s.scripts.insert_many(s.now(), s.origin, batch, body)
    return reply


def insert_results(
    packed: Sequence[list[str]], drafts: Sequence[Job], reply: list[Any]
) -> list[InsertResult]:
    """The results of an insert: the script returns only the jobs it did not write now (an
    idempotency key already used, a retried call) and the positions of those it wrote held; the
    others are their drafts (``codec.draft_job``), stamped with the script's time."""
    if reply[0] == b"dup":
        raise DuplicateJobError(reply[1].decode())
    now_us = int(reply[1])
    now = from_us(now_us)
    times: Times = {}
    known = {int(position) - 1: (created, job_id, values) for position, created, job_id, values in reply[2]}
    held = {int(position) - 1 for position in reply[3]}
    results = []
    for n, (row, draft) in enumerate(zip(packed, drafts, strict=True)):
        found = known.get(n)
        if found is None:
            stamp_job(draft, row, now_us, now, n in held)
            results.append(InsertResult(draft, created=True))
            continue
        created, job_id, values = found
        job = job_from_fields(job_id.decode(), values, times)
        assert job is not None  # read in the same script that found it
        results.append(InsertResult(job, created=created == 1))
    return results


async def claim(s: Session, p: ClaimParams) -> ClaimedJobs:
    """Rule 2: one call; the lease tokens are a fresh random base plus each job's position. The reply
    starts with ``retry_after`` ('' when no token bucket held a job back)."""
    token_base = secrets.token_hex(12)
    queues = list(dict.fromkeys(p.queues))
    kinds = [str(kind) for kind in dict.fromkeys(p.kinds)]
    reply = await s.scripts.claim(s.now(), p.worker_id, p.limit, token_base, queues, kinds)
    retry_after = float(reply[0]) if reply[0] else None
    return ClaimedJobs(jobs_from_pairs(reply, 1), retry_after)


def heartbeat_args(item: HeartbeatItem) -> tuple[str, str, str, str, str]:
    """Encoded before anything is sent, so that a bad checkpoint changes nothing."""
    save = item.save_checkpoint or item.checkpoint is not None
    return (
        item.job_id,
        item.lease_token,
        "" if item.progress is None else str(float(item.progress)),
        "1" if save else "0",
        encode_json(item.checkpoint, "checkpoint") if save else "",
    )


async def heartbeat(s: Session, items: Sequence[tuple[str, str, str, str, str]]) -> HeartbeatResult:
    """Rule 3."""
    codes = await s.scripts.heartbeat(s.now(), items)
    extended = {item[0] for item, code in zip(items, codes, strict=True) if code >= _EXTENDED}
    lost = {item[0] for item, code in zip(items, codes, strict=True) if code < _EXTENDED}
    cancel = {item[0] for item, code in zip(items, codes, strict=True) if code == _CANCEL_REQUESTED}
    return HeartbeatResult(frozenset(extended), frozenset(lost), frozenset(cancel))


async def finish(s: Session, items: Sequence[FinishArgs]) -> list[FinishResult]:
    """Rule 4: the whole batch in one call; '' from the script means the lease was lost."""
    states, woken = await s.scripts.finish(s.now(), s.origin, items)
    s.wake_from(woken)
    return [
        FinishResult(item[0], JobState(state.decode()) if state else None)
        for item, state in zip(items, states, strict=True)
    ]


async def log_append(s: Session, lines: Sequence[LogAppend]) -> None:
    """Rule 5."""
    args = [(ln.job_id, str(int(ln.attempt)), ln.stream, ln.text) for ln in lines]
    await s.scripts.log_append(s.now(), s.options.log_max_lines, args)
