"""Wake-ups across processes: Redis pub/sub into this process's :class:`LocalNotifier`.

Scripts that make jobs claimable (insert, a release, a reap, a promotion, a requeue, a resume, a held
job released behind its ordering key, a slot freed in a queue with a concurrency limit, new limits, a
schedule's tick) publish one message per call on ``P:wake``: a JSON array ``[origin, queue, ...]``.
One listener task per storage instance, on the backend's private loop, subscribes (started by the
first ``wait_for_jobs``, so a producer never holds a subscription) and hands each message to the
instance's :class:`LocalNotifier`, which wakes the waiters on whatever loop they wait.

An instance wakes its own waiters at once after its inserts, finishes, reaps, cancels, purges, prunes,
limit changes and schedule fires (they may wait before the subscription is confirmed: those scripts
return the queues they woke) and skips the echo of those messages (``origin``). Everything here is a
hint: workers poll anyway. When the connection drops, the listener reconnects with a backoff and then
wakes every queue it was watching, since messages published meanwhile were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay.storage.local_notifier import LocalNotifier

log = logging.getLogger("relay.storage.redis")

_MIN_BACKOFF = 0.05  # seconds before the first reconnection attempt
_MAX_BACKOFF = 2.0  # seconds between two reconnection attempts, at most
_READ_WAIT = 5.0  # seconds one read of the subscription waits for a message


class Wakeups:
    def __init__(self, channel: str, origin: str) -> None:
        self.channel = channel
        self.origin = origin
        self.notifier = LocalNotifier()
        self._lock = threading.Lock()  # guards _watched (added to from any thread)
        self._watched: set[str] = set()
        # Touched by the listener, on the private loop, only.
        self._task: asyncio.Task[None] | None = None
        self._subscribed_once = False
        self._live = True  # False from the loss of the subscription until it is back
        self._backoff = _MIN_BACKOFF

    def watch(self, queues: Sequence[str]) -> None:
        with self._lock:
            self._watched.update(queues)

    @property
    def listening(self) -> bool:
        return self._task is not None

    async def start(self, client: Redis) -> None:
        """Start the listener task (on the private loop); it subscribes, and resubscribes after errors."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(client), name="relay-redis-wakeups")

    async def stop(self) -> None:
        task, self._task = self._task, None
        # Cancelled until it ends: a cancellation that lands as redis-py's read timeout fires is
        # swallowed by that timeout (asyncio.timeout in 3.11), and the listener would read on.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.warning("the wake-up listener had failed: %r", task.exception())
        self._subscribed_once, self._live, self._backoff = False, True, _MIN_BACKOFF  # as new, for a reopen

    async def _listen(self, client: Redis) -> None:
        while True:
            try:
                await self._subscribed_session(client)
            except (RedisError, OSError) as exc:
                _raise_if_cancelled()  # redis-py may turn a cancellation into a connection error
                if self._live:  # one warning per outage, not one per reconnection attempt
                    log.warning("wake-up subscription lost (%s); reconnecting, polling meanwhile", exc)
                self._live = False
                self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
            await asyncio.sleep(self._backoff)

    async def _subscribed_session(self, client: Redis) -> None:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while True:
                # A bounded wait: an unbounded one is cut by the socket timeout and looks like an error.
                message = await pubsub.get_message(timeout=_READ_WAIT)
                _raise_if_cancelled()
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    self._on_subscribed()
                elif message["type"] == "message":
                    self._deliver(message["data"])
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    def _on_subscribed(self) -> None:
        if self._subscribed_once:
            log.info("wake-up subscription back on %s", self.channel)
            self._wake_all()  # what was published while it was down is lost
        self._subscribed_once = self._live = True
        self._backoff = _MIN_BACKOFF

    def _deliver(self, data: Any) -> None:
        try:
            origin, *queues = orjson.loads(data)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            log.warning("ignoring a malformed wake-up message on %s: %r", self.channel, data)
            return
        if origin != self.origin:
            self.notifier.notify_threadsafe(queues)

    def _wake_all(self) -> None:
        with self._lock:
            queues = sorted(self._watched)
        if queues:
            self.notifier.notify_threadsafe(queues)


def _raise_if_cancelled() -> None:
    """Honour a cancellation that redis-py swallowed (into a read timeout or a connection error)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
