"""The claim's flow-control rules in Python, for the backends that decide a claim in Python (memory, and
SQLite inside its write transaction). PostgreSQL (a PL/pgSQL function) and Redis (claim.lua) keep the
same rules in their own language; the conformance suite holds all four to them.

A claim offers its candidates to a :class:`ClaimPlanner` one at a time, in claim order; the planner says
which to take, keeps the token buckets it drew from, and says when a bucket that refused a job will
hold a token again (``retry_after``). The rules (``relay.storage.params.ClaimParams``):

- a job of a queue with a ``rate`` takes a token from the queue's bucket; with a ``key_rate`` and a
  ``rate_key``, also one from its key's bucket; an empty bucket refuses it;
- a job of a queue with a ``concurrency`` needs a free slot: running + taken < concurrency; with a
  ``key_concurrency`` and a ``concurrency_key``, the same per key;
- a refused job is passed over, and the next one offered.

A token bucket is stored as (tokens, at): what it held at ``at``. It refills continuously at ``rate``
up to ``burst``; a bucket never stored is full.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from relay.types import QueueLimits, RateLimit

#: A bucket's key: (queue, None) for the queue-wide bucket, (queue, rate_key) for a key's.
BucketKey = tuple[str, str | None]


@dataclass(slots=True)
class Bucket:
    tokens: float
    at: datetime


def tokens_now(bucket: Bucket | None, limit: RateLimit, now: datetime) -> float:
    """What a bucket holds at ``now``: its stored tokens plus the refill since, up to ``burst``."""
    if bucket is None:
        return float(limit.burst)
    elapsed = max(0.0, (now - bucket.at).total_seconds())
    return min(float(limit.burst), bucket.tokens + elapsed * limit.rate)


def is_full(bucket: Bucket, limit: RateLimit | None, now: datetime) -> bool:
    """Whether a stored bucket may be deleted: full again, or of a limit that is gone."""
    return limit is None or tokens_now(bucket, limit, now) >= limit.burst


@dataclass(slots=True)
class _QueueState:
    limits: QueueLimits
    running: int  # running now plus taken by this claim
    exhausted: bool = False  # no job of this queue can be taken any more in this claim


@dataclass(slots=True)
class ClaimPlanner:
    """Decides, for one claim, which offered jobs are taken. ``load_bucket`` reads a stored bucket
    (None when there is none); ``running`` counts the queue's running jobs, ``running_by_key`` the
    running jobs per (queue, concurrency_key)."""

    now: datetime
    limits: Mapping[str, QueueLimits]
    running: Mapping[str, int]
    running_by_key: Mapping[tuple[str, str], int]
    load_bucket: Callable[[BucketKey], Bucket | None]
    buckets: dict[BucketKey, Bucket] = field(default_factory=dict)  # those looked at, as they are now
    _queues: dict[str, _QueueState] = field(default_factory=dict)
    _drawn: set[BucketKey] = field(default_factory=set)
    _taken_by_key: dict[tuple[str, str], int] = field(default_factory=dict)
    _wait: float | None = None

    def queue_open(self, queue: str) -> bool:
        """False once no further job of ``queue`` can be taken by this claim (skip its candidates)."""
        return not self._state(queue).exhausted

    def offer(self, queue: str, rate_key: str | None, concurrency_key: str | None) -> bool:
        """Whether to take the job; if so, its tokens and slots are counted as taken."""
        state = self._state(queue)
        if state.exhausted:
            return False
        limits = state.limits
        if limits.concurrency is not None and state.running >= limits.concurrency:
            state.exhausted = True
            return False
        if limits.rate is not None and not self._has_token((queue, None), limits.rate):
            state.exhausted = True
            return False
        slot_key = (queue, concurrency_key) if concurrency_key is not None else None
        if slot_key is not None and limits.key_concurrency is not None:
            in_use = self.running_by_key.get(slot_key, 0) + self._taken_by_key.get(slot_key, 0)
            if in_use >= limits.key_concurrency:
                return False
        key_bucket: BucketKey | None = None
        if rate_key is not None and limits.key_rate is not None:
            key_bucket = (queue, rate_key)
            if not self._has_token(key_bucket, limits.key_rate):
                return False
        if limits.rate is not None:
            self._draw((queue, None))
        if key_bucket is not None:
            self._draw(key_bucket)
        if slot_key is not None:
            self._taken_by_key[slot_key] = self._taken_by_key.get(slot_key, 0) + 1
        state.running += 1
        return True

    def drawn(self) -> dict[BucketKey, Bucket]:
        """The buckets this claim took tokens from, as they are now: what storage writes back. A bucket
        only looked at is not written, on every backend, so that it refills from its last draw (at the
        limit's rate then, even if the rate changes before the next draw)."""
        return {key: self.buckets[key] for key in self._drawn}

    @property
    def retry_after(self) -> float | None:
        """Seconds until the soonest bucket that refused a job holds a token; None if none refused."""
        return self._wait

    def _state(self, queue: str) -> _QueueState:
        state = self._queues.get(queue)
        if state is None:
            state = _QueueState(self.limits.get(queue, QueueLimits()), self.running.get(queue, 0))
            self._queues[queue] = state
        return state

    def _draw(self, key: BucketKey) -> None:
        self.buckets[key].tokens -= 1.0
        self._drawn.add(key)

    def _has_token(self, key: BucketKey, limit: RateLimit) -> bool:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = Bucket(tokens_now(self.load_bucket(key), limit, self.now), self.now)
            self.buckets[key] = bucket
        if bucket.tokens >= 1.0:
            return True
        wait = (1.0 - bucket.tokens) / limit.rate
        self._wait = wait if self._wait is None else min(self._wait, wait)
        return False
