"""``Watch``: a job's or a queue's state changes, as they happen.

Both ride on the server's change feed (:mod:`relay.server.feed`, one poll of storage per
``events_interval`` for the whole server, whatever the number of watchers): a watcher wakes when a
poll found changes, never in a loop of its own.

- A job: its state now first, then the job again whenever its state, attempt or cancel flag changed,
  until it is final (or deleted). It re-reads its one job at each wake-up and at least once per
  interval, so it misses no final state even when the feed's windows miss the job (their limits are a
  best effort). Without a feed (``RELAY_EVENTS_INTERVAL=0``) it polls its job every second.
- A queue: every job of the queue the feed reports changed, as it is now; never ends (until the
  server stops). It needs the feed: without one the call is FAILED_PRECONDITION.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from relay.server.access import job_for
from relay.server.auth import require
from relay.server.errors import ApiError
from relay.server.feed import ChangeFeed
from relay.server.scopes import Action, Grants
from relay.server.state import ServerState
from relay.types import Job, JobState

POLL_WITHOUT_FEED = 1.0  # seconds between two reads of a watched job when the change feed is off


def _key(job: Job) -> tuple[JobState, int, bool]:
    return job.state, job.attempt, job.cancel_requested


async def _next_wake(feed: ChangeFeed | None) -> bool:
    """Wait for the next poll that found changes (or one interval); False when the server stops."""
    if feed is None:
        await asyncio.sleep(POLL_WITHOUT_FEED)
        return True
    if feed.closed:
        return False
    await feed.wait(feed.interval)
    return not feed.closed


async def watch_job(state: ServerState, grants: Grants, job_id: str) -> AsyncIterator[Job]:
    job = await job_for(state.storage, grants, Action.READ, job_id)
    yield job
    last = _key(job)
    while not job.is_final and await _next_wake(state.feed):
        current = await state.storage.job_get(job_id)
        if current is None:
            return  # purged while watched: there is nothing more to see
        job = current
        if _key(job) != last:
            last = _key(job)
            yield job


async def watch_queue(state: ServerState, grants: Grants, queue: str) -> AsyncIterator[Job]:
    require(grants, Action.READ, queue)
    feed = state.feed
    if feed is None:
        message = "this server's change feed is off (RELAY_EVENTS_INTERVAL=0): watch a job instead"
        raise ApiError(409, "events_disabled", message, "queue")
    seen = feed.last_seq
    while not feed.closed:
        events = feed.after(seen)
        if not events:
            await feed.wait(feed.interval)
            continue
        seen = events[-1].seq
        for event in events:
            if event.type == "job" and event.queue == queue and event.data.get("state") is not None:
                job = await state.storage.job_get(str(event.data["id"]))
                if job is not None:
                    yield job
