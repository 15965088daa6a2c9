"""The change feed: job state changes and queue counts, found by polling storage, for the event stream
and the metrics.

The storage seam has no "jobs changed since" operation, so the feed diffs what it can read cheaply,
once per ``interval`` for the whole server (not per subscriber):

1. ``queue_list``: a ``queue`` event for each queue whose counts or paused flag changed;
2. the newest ``active_limit`` jobs that are waiting or running, and the newest ``recent_limit`` jobs
   of any state: a ``job`` event for each whose state or attempt differs from the last poll (or that
   was not seen before);
3. jobs seen waiting or running last time that are in neither list now (they finished, or were
   purged): up to ``get_limit`` of them are read one by one (``job_get``) and reported.

Limits, by design: a job that changes state twice between two polls is reported once, with its
latest state; a job outside both windows (more than ``active_limit`` waiting jobs are newer than it,
and it finishes among more than ``recent_limit`` newer jobs) changes unseen, and only its queue's
``queue`` event shows it. The queue counts are exact; the job events are a best effort. Event ids are
``EPOCH-SEQ``: a client that reconnects with ``Last-Event-ID`` gets what it missed while the ring
buffer still holds it, and a ``reset`` event (refetch the state you show) when it does not.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from relay.storage.base import Admin
from relay.storage.params import ListParams
from relay.types import JSON, Job, JobState, QueueInfo

log = logging.getLogger("relay.server.feed")

_ACTIVE = (JobState.PENDING, JobState.SCHEDULED, JobState.RUNNING, JobState.FAILED)


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    type: str  # "job" or "queue"
    queue: str
    data: dict[str, JSON]


@dataclass(frozen=True, slots=True)
class _Seen:
    queue: str
    kind: str
    state: JobState
    attempt: int


#: Called for each job change after the first poll: the job as now stored, and its state and attempt
#: before (None when the feed had not seen it). The metrics count outcomes with it.
ChangeObserver = Callable[[Job, JobState | None, int | None], None]


class ChangeFeed:
    def __init__(
        self,
        storage: Admin,
        interval: float,
        *,
        observer: ChangeObserver | None = None,
        active_limit: int = 1000,
        recent_limit: int = 200,
        get_limit: int = 100,
        buffer: int = 10_000,
    ) -> None:
        self._storage, self.interval = storage, interval
        self._observer = observer
        self._active_limit, self._recent_limit, self._get_limit = active_limit, recent_limit, get_limit
        self.epoch = secrets.token_hex(4)  # a restarted server's ids never match an old client's
        self._events: deque[Event] = deque(maxlen=buffer)
        self._seq = 0
        self._jobs: dict[str, _Seen] | None = None  # None until the first poll, the baseline
        self._queues: dict[str, dict[str, JSON]] = {}
        self._changed = asyncio.Event()
        self.polls = 0
        self.closed = False  # the server is shutting down: event streams end

    # -- reading --------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._seq

    def event_id(self, event: Event) -> str:
        return f"{self.epoch}-{event.seq}"

    def queue_snapshot(self) -> list[dict[str, JSON]]:
        """The queues as of the last poll, for a subscriber that just connected."""
        return list(self._queues.values())

    def resume_point(self, last_event_id: str | None) -> int | None:
        """The seq to resume after, for a client's Last-Event-ID; None when it cannot be resumed."""
        if last_event_id is None:
            return self._seq
        epoch, _, seq = last_event_id.partition("-")
        if epoch != self.epoch or not seq.isdigit() or int(seq) > self._seq:
            return None
        oldest = self._events[0].seq if self._events else self._seq + 1
        return int(seq) if int(seq) >= oldest - 1 else None

    def after(self, seq: int) -> list[Event]:
        """Events newer than ``seq``, oldest first."""
        newer: list[Event] = []
        for event in reversed(self._events):
            if event.seq <= seq:
                break
            newer.append(event)
        return newer[::-1]

    async def wait(self, timeout: float) -> bool:
        """Wait for the next poll that found changes; False after ``timeout`` seconds without one."""
        changed = self._changed  # taken before awaiting: a publish in between is not missed
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """End every event stream (at shutdown: an open stream would hold the server up)."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        # Wake every waiting subscriber, and give the next ones a fresh event to wait on.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- polling --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.poll()
            except Exception:
                log.exception("change feed poll failed; trying again in %.1fs", self.interval)
            try:
                async with asyncio.timeout(self.interval):
                    await stop.wait()
            except TimeoutError:
                pass

    async def poll(self) -> list[Event]:
        queues = await self._storage.queue_list()
        active = await self._storage.job_list(ListParams(states=_ACTIVE, limit=self._active_limit))
        recent = await self._storage.job_list(ListParams(limit=self._recent_limit))
        current = {job.id: job for job in [*recent.jobs, *active.jobs]}
        events = self._queue_events(queues)
        if self._jobs is None:
            self._jobs = {job.id: _seen(job) for job in current.values()}
        else:
            events += await self._job_events(self._jobs, current)
        self.polls += 1
        self._publish(events)
        return events

    def _queue_events(self, queues: Iterable[QueueInfo]) -> list[Event]:
        events: list[Event] = []
        for queue in queues:
            data: dict[str, JSON] = {
                "name": queue.name,
                "paused": queue.paused,
                "counts": {state.value: queue.counts.get(state, 0) for state in JobState},
                "oldest_pending_at": None
                if queue.oldest_pending_at is None
                else queue.oldest_pending_at.isoformat(),
            }
            if self._queues.get(queue.name) != data:
                if self.polls:  # the first poll is the baseline: nothing changed yet
                    events.append(Event(0, "queue", queue.name, data))
                self._queues[queue.name] = data
        return events

    async def _job_events(self, known: dict[str, _Seen], current: dict[str, Job]) -> list[Event]:
        events: list[Event] = []
        for job in current.values():
            seen = known.get(job.id)
            if _changed(job, seen):
                events.append(_job_event(job, seen))
                self._observe(job, seen)
        gone = [job_id for job_id, seen in known.items() if job_id not in current and seen.state in _ACTIVE]
        checked, deferred = gone[: self._get_limit], gone[self._get_limit :]
        for job_id in checked:
            events += await self._check_gone(job_id, known[job_id])
        # Jobs not read this time stay known, so that the next poll reads them.
        self._jobs = {job.id: _seen(job) for job in current.values()} | {i: known[i] for i in deferred}
        return events

    async def _check_gone(self, job_id: str, seen: _Seen) -> list[Event]:
        job = await self._storage.job_get(job_id)
        if job is None:
            data: dict[str, JSON] = {"id": job_id, "queue": seen.queue, "kind": seen.kind, "state": None}
            data |= {"previous_state": seen.state.value, "attempt": seen.attempt, "deleted": True}
            return [Event(0, "job", seen.queue, data)]
        if not _changed(job, seen):
            return []
        self._observe(job, seen)
        return [_job_event(job, seen)]

    def _observe(self, job: Job, seen: _Seen | None) -> None:
        if self._observer is not None:
            self._observer(job, None if seen is None else seen.state, None if seen is None else seen.attempt)

    def _publish(self, events: list[Event]) -> None:
        if not events:
            return
        for event in events:
            self._seq += 1
            self._events.append(Event(self._seq, event.type, event.queue, event.data))
        self._wake()


def _seen(job: Job) -> _Seen:
    return _Seen(job.queue, job.kind.value, job.state, job.attempt)


def _changed(job: Job, seen: _Seen | None) -> bool:
    return seen is None or (seen.state, seen.attempt) != (job.state, job.attempt)


def _job_event(job: Job, seen: _Seen | None) -> Event:
    data: dict[str, JSON] = {
        "id": job.id,
        "queue": job.queue,
        "kind": job.kind.value,
        "state": job.state.value,
        "previous_state": None if seen is None else seen.state.value,
        "attempt": job.attempt,
        "updated_at": _iso(job.updated_at),
    }
    return Event(0, "job", job.queue, data)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
