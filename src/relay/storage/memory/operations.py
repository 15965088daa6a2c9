"""The in-memory backend's operator side: listing, cancel / requeue / purge, pruning and promotion,
queues and their limits, and logs.

Each function runs with ``MemoryStorage``'s lock held and takes ``now`` from the backend's clock; none
of them awaits. They change jobs only through :class:`~relay.storage.memory.store.MemoryStore`'s own
``set_state`` and ``delete``, which keep its indexes and the ordering rule right.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from itertools import islice

from relay.errors import InvalidTransitionError, JobNotFoundError
from relay.storage.flow_control import is_full, tokens_now
from relay.storage.memory.store import JobRecord, MemoryStore
from relay.storage.params import JobPage, ListParams, LogAppend, LogParams, PruneParams, PurgeParams
from relay.types import (
    NO_LIMITS,
    Job,
    JobState,
    LogLine,
    QueueInfo,
    QueueLimits,
)

_REQUEUEABLE = JobState.requeueable()
_WAITING = JobState.waiting()


# -- operator side: listing ---------------------------------------------------------------------------


def list_jobs(store: MemoryStore, p: ListParams) -> JobPage:
    """Newest first; the cursor is the ``seq`` of the page's last job, so new jobs never shift pages."""
    if p.limit < 1:
        raise ValueError(f"limit must be at least 1, got {p.limit}")
    # One extra match tells whether another page follows, so the last page never carries a cursor.
    found = list(islice(_matching(store, p, _parse_cursor(p.cursor)), p.limit + 1))
    page = found[: p.limit]
    next_cursor = str(page[-1].seq) if len(found) > p.limit else None
    return JobPage([record.to_job() for record in page], next_cursor)


def _parse_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(cursor)
    except ValueError:
        raise ValueError(f"not a job list cursor: {cursor!r}") from None


def _matching(store: MemoryStore, p: ListParams, before_seq: int | None) -> Iterator[JobRecord]:
    states, queues, kinds = frozenset(p.states), frozenset(p.queues), frozenset(p.kinds)
    needle = p.text.casefold() if p.text else None
    for record in reversed(store.jobs.values()):
        if before_seq is not None and record.seq >= before_seq:
            continue
        if states and record.state not in states:
            continue
        if queues and record.queue not in queues:
            continue
        if kinds and record.kind not in kinds:
            continue
        if needle is None or _mentions(record, needle):
            yield record


def _mentions(record: JobRecord, needle: str) -> bool:
    """Whether ``needle`` (casefolded: Unicode-aware, as SQLite's filter) is in the id, a tag, or the
    payload's JSON text (orjson's, the same text SQLite stores and searches)."""
    if needle in record.id.casefold() or any(needle in tag.casefold() for tag in record.tags):
        return True
    return needle in record.payload.decode().casefold()


# -- cancel, requeue, purge, prune, promote ----------------------------------------------------------


def cancel(store: MemoryStore, job_id: str, now: datetime) -> Job:
    record = store.jobs.get(job_id)
    if record is None:
        raise JobNotFoundError(job_id)
    if record.state in _WAITING:
        record.finished_at = now
        store.set_state(record, JobState.CANCELLED, now)
    elif record.state is JobState.RUNNING:
        # Only its worker can stop it: the flag reaches the worker at its next heartbeat.
        record.cancel_requested = True
        record.updated_at = now
    else:
        raise InvalidTransitionError(job_id, record.state.value, "cancel")
    return record.to_job()


def requeue_one(store: MemoryStore, job_id: str, now: datetime) -> JobRecord:
    record = store.jobs.get(job_id)
    if record is None:
        raise JobNotFoundError(job_id)
    if record.state not in _REQUEUEABLE:
        raise InvalidTransitionError(job_id, record.state.value, "requeue")
    _requeue(store, record, now)
    return record


def requeue_many(
    store: MemoryStore, states: frozenset[JobState], queue: str | None, now: datetime
) -> list[JobRecord]:
    if not states <= _REQUEUEABLE:
        wrong = sorted(state.value for state in states - _REQUEUEABLE)
        raise ValueError(f"only dead, failed or cancelled jobs can be requeued, not {', '.join(wrong)}")
    records = list(store.in_states(tuple(states), queue))
    for record in records:
        _requeue(store, record, now)
    return records


def _requeue(store: MemoryStore, record: JobRecord, now: datetime) -> None:
    # The attempt count and the errors stay: a requeued dead job gets exactly one more attempt.
    record.run_at = now
    record.finished_at = None
    record.cancel_requested = False
    record.clear_lease()
    store.set_state(record, JobState.PENDING, now)


def purge(store: MemoryStore, p: PurgeParams) -> int:
    if JobState.RUNNING in p.states:
        raise ValueError("running jobs cannot be purged: cancel them first")
    doomed = list(store.in_states(p.states, p.queue))
    for record in doomed:
        store.delete(record)
    return len(doomed)


def prune(store: MemoryStore, p: PruneParams) -> int:
    """Delete up to ``p.limit`` final jobs finished before the cutoff, the oldest first."""
    if p.limit <= 0:
        return 0
    cutoff = p.finished_before
    old = [
        record
        for record in store.in_states(p.states)
        if record.finished_at is not None and record.finished_at < cutoff
    ]
    old.sort(key=lambda record: (record.finished_at, record.seq))
    for record in old[: p.limit]:
        store.delete(record)
    return min(len(old), p.limit)


def promote_due(store: MemoryStore, now: datetime) -> int:
    due = [
        record
        for by_id in store.waiting.values()
        for record in by_id.values()
        if record.state is not JobState.PENDING and record.run_at <= now and not record.held
    ]
    for record in due:
        store.set_state(record, JobState.PENDING, now)
    return len(due)


# -- queues, limits and logs -------------------------------------------------------------------------


def set_limits(store: MemoryStore, name: str, limits: QueueLimits, now: datetime) -> None:
    store.queues.setdefault(name, False)
    if limits == NO_LIMITS:
        store.limits.pop(name, None)
    else:
        store.limits[name] = limits
    for (queue, key), bucket in store.buckets.items():
        if queue == name:
            limit = limits.rate if key is None else limits.key_rate
            if limit is not None:  # a smaller burst cuts what the bucket holds now
                bucket.tokens, bucket.at = tokens_now(bucket, limit, now), now


def prune_buckets(store: MemoryStore, now: datetime) -> int:
    doomed = []
    for (queue, key), bucket in store.buckets.items():
        limits = store.limits.get(queue, NO_LIMITS)
        if is_full(bucket, limits.rate if key is None else limits.key_rate, now):
            doomed.append((queue, key))
    for bucket_key in doomed:
        del store.buckets[bucket_key]
    return len(doomed)


def queue_infos(store: MemoryStore, now: datetime) -> list[QueueInfo]:
    counts = {name: dict.fromkeys(JobState, 0) for name in store.queues}
    oldest_pending: dict[str, datetime] = {}
    for record in store.jobs.values():
        counts[record.queue][record.state] += 1
        if record.state is JobState.PENDING and not record.held:
            oldest = oldest_pending.get(record.queue)
            if oldest is None or record.run_at < oldest:
                oldest_pending[record.queue] = record.run_at
    return [
        QueueInfo(
            name,
            paused,
            counts[name],
            oldest_pending.get(name),
            store.limits.get(name, NO_LIMITS),
            _queue_tokens(store, name, now),
        )
        for name, paused in sorted(store.queues.items())
    ]


def _queue_tokens(store: MemoryStore, queue: str, now: datetime) -> float | None:
    limit = store.limits.get(queue, NO_LIMITS).rate
    return None if limit is None else tokens_now(store.buckets.get((queue, None)), limit, now)


def append_logs(store: MemoryStore, lines: list[LogAppend], now: datetime) -> None:
    for line in lines:
        if line.job_id not in store.jobs:
            # Logs are only ever deleted with their job (prune, purge), so lines of a job that is not
            # stored would stay forever.
            continue
        kept = store.logs.setdefault(line.job_id, [])
        seq = kept[-1].seq + 1 if kept else 1
        kept.append(LogLine(line.job_id, line.attempt, seq, line.stream, line.text, now))


def read_logs(store: MemoryStore, p: LogParams) -> list[LogLine]:
    if p.limit <= 0:
        return []
    lines = (
        line
        for line in store.logs.get(p.job_id, ())
        if line.seq > p.after_seq and (p.attempt is None or line.attempt == p.attempt)
    )
    return list(islice(lines, p.limit))
