"""Throughput per queue for the dashboard's charts: jobs completed and attempts failed per second, in
10-second buckets over the last 15 minutes, kept in this server process (lost at restart).

Both come from the change feed (:mod:`relay.server.feed`), read by :meth:`ThroughputTracker.catch_up`:

- completions are the increase of a queue's ``completed`` count from one feed poll to the next. The
  counts are exact whoever completed the jobs, so this holds at any rate; a decrease (the pruner
  deleted old jobs) counts as no completion in that interval.
- failures are the feed's job events into ``failed`` (a retry is scheduled) or ``dead``: no count
  measures them, since a failed job leaves ``failed`` when it is retried. They share the feed's
  limits (a best effort when many jobs change between two polls).

Layout: per queue, a dict from bucket number (``epoch seconds // bucket``) to ``[completed, failed]``;
buckets older than the window are dropped at each catch-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from datetime import UTC, datetime

from relay.server.feed import ChangeFeed, Event
from relay.types import JSON

BUCKET_SECONDS = 10
BUCKETS = 90  # 15 minutes
_FAILED_STATES = ("failed", "dead")


class ThroughputTracker:
    def __init__(
        self,
        feed: ChangeFeed,
        now: Callable[[], datetime],
        bucket: int = BUCKET_SECONDS,
        buckets: int = BUCKETS,
    ) -> None:
        self._feed, self._now = feed, now
        self.bucket, self.buckets = bucket, buckets
        self._seq = feed.last_seq  # events published before we started are not counted
        self._completed: dict[str, int] | None = None  # the counts at the last catch-up
        self._series: dict[str, dict[int, list[int]]] = {}

    def catch_up(self) -> None:
        """Fold in what the feed found since the last call. Synchronous: callers on the event loop
        (the background task, each event stream) never interleave inside it."""
        if self._feed.polls == 0:
            return  # nothing polled yet: no baseline to compare with
        index = self._index(self._now())
        self._fold_counts(index)
        self._fold_events(self._feed.after(self._seq), index)
        first = index - self.buckets  # the window shown, and the bucket still filling
        for name, buckets in list(self._series.items()):
            for old in [i for i in buckets if i < first]:
                del buckets[old]
            if not buckets:
                del self._series[name]  # a queue idle for the whole window (or deleted) shows no chart

    def _index(self, when: datetime) -> int:
        return math.floor(when.timestamp() / self.bucket)

    def _fold_counts(self, index: int) -> None:
        current: dict[str, int] = {}
        for queue in self._feed.queue_snapshot():
            counts = queue.get("counts") or {}
            current[str(queue["name"])] = int(counts.get("completed", 0))
        previous, self._completed = self._completed, current
        if previous is None:
            return  # the baseline
        for name, count in current.items():
            # A queue first seen now started from nothing: its completions are all new.
            delta = count - previous.get(name, 0)
            if delta > 0:
                self._slot(name, index)[0] += delta

    def _fold_events(self, events: list[Event], index: int) -> None:
        for event in events:
            if event.type == "job" and event.data.get("state") in _FAILED_STATES:
                self._slot(event.queue, index)[1] += 1
        if events:
            self._seq = events[-1].seq

    def _slot(self, queue: str, index: int) -> list[int]:
        return self._series.setdefault(queue, {}).setdefault(index, [0, 0])

    def snapshot(self, visible: Callable[[str], bool] | None = None) -> dict[str, JSON]:
        """Rates per second in the last ``buckets`` complete buckets, oldest first, for the queues
        ``visible`` accepts (all by default). The bucket still filling is left out: drawn, it would
        always dip. ``end`` is when the newest bucket shown ended, in epoch seconds."""
        index = self._index(self._now()) - 1
        first = index - self.buckets + 1
        queues: dict[str, JSON] = {}
        for name in sorted(self._series):
            if visible is not None and not visible(name):
                continue
            buckets = self._series[name]
            slots = [buckets.get(i, [0, 0]) for i in range(first, index + 1)]
            queues[name] = {
                "completed": [round(c / self.bucket, 3) for c, _ in slots],
                "failed": [round(f / self.bucket, 3) for _, f in slots],
            }
        return {
            "bucket_seconds": self.bucket,
            "end": (index + 1) * self.bucket,
            "now": self._now().astimezone(UTC).isoformat(),
            "queues": queues,
        }

    async def run(self, keepalive: float = BUCKET_SECONDS) -> None:
        """Keep up with the feed until it closes, so the window fills even while nobody watches."""
        while not self._feed.closed:
            await self._feed.wait(keepalive)
            self.catch_up()


def only(queues: Collection[str] | None) -> Callable[[str], bool] | None:
    """A ``visible`` filter for :meth:`ThroughputTracker.snapshot`; None for every queue."""
    return None if queues is None else (lambda name: name in queues)
