"""One open store: its client, scripts and options, and how an operation survives a dropped connection.

Everything here runs on the backend's private loop (:mod:`.loop`). redis-py's own retries are turned
off (``Retry(NoBackoff(), 0)``): whether a call may be sent again depends on the operation, so
:func:`run` decides. A connection error or timeout is retried with a jittered backoff until
``retry_deadline`` (a Redis restart, a failover), then surfaces as :class:`StorageUnavailableError`,
the one storage error the runtime retries on its own. Operations are safe to send again:

- inserts carry a batch token, so a retried insert that had already run returns its own jobs;
- heartbeats, reaps, promotions, prunes, elections, pauses and reads give the same result twice;
- a claim whose reply was lost leaves its jobs running under tokens nobody holds: the reaper returns
  them after their lease (at-least-once, the attempt counted), as for a worker that died;
- a finish whose reply was lost is fenced the second time: the outcome was recorded once, and the
  caller is told the lease was lost;
- cancel, requeue and purge (operators) are not sent again: a second cancel would report the first
  one's result as an invalid transition. They fail with :class:`StorageUnavailableError` instead.

Server replies that mean "not now" (loading the dataset, out of memory, read-only replica, failing
disk) also become :class:`StorageUnavailableError`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.clock import Clock
from relay.errors import ConfigurationError, StorageUnavailableError
from relay.storage.redis.codec import to_us
from relay.storage.redis.keys import LAYOUT, Keys
from relay.storage.redis.options import RedisOptions, redacted
from relay.storage.redis.scripts import Scripts

T = TypeVar("T")

log = logging.getLogger("relay.storage.redis")

_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)  # BusyLoadingError is a ConnectionError
# Error replies that say "the server cannot take this now", by their first word.
_UNAVAILABLE_REPLIES = frozenset(
    {"LOADING", "OOM", "READONLY", "MISCONF", "MASTERDOWN", "NOREPLICAS", "BUSY"}
)
_MAX_BACKOFF = 1.0  # seconds between two tries, at most (before jitter)
_CONNECT_TIMEOUT = 5.0  # seconds to open one connection


@dataclass(frozen=True, slots=True)
class Session:
    """What every operation needs: the client, the scripts, the keys, and the storage time."""

    client: Redis
    scripts: Scripts
    keys: Keys
    options: RedisOptions
    clock: Clock | None  # a test clock injected into the backend; None: the Redis server's TIME
    origin: str  # this storage instance, in wake-up messages
    # Wakes this instance's own waiters on these queues (a script's message names its origin, and
    # this instance skips it: its subscription may not even be confirmed yet).
    wake: Callable[[Sequence[bytes | str]], None] = field(default=lambda queues: None)

    def wake_from(self, queues: Sequence[bytes]) -> None:
        """The queues a script woke (see ``publish`` in ``_lib.lua``), for this instance's waiters."""
        if queues:
            self.wake(queues)

    def now(self) -> str:
        """The ``ARGV[1]`` of every script: the injected clock's time in µs, or '' for the server's."""
        return "" if self.clock is None else str(to_us(self.clock.now()))

    @property
    def where(self) -> str:
        return redacted(self.options.url)


def new_client(options: RedisOptions) -> Redis:
    """A client for ``options.url`` (created on the private loop, which its pool then belongs to)."""
    client: Redis = Redis.from_url(
        options.url,
        socket_timeout=options.socket_timeout,
        socket_connect_timeout=_CONNECT_TIMEOUT,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )
    return client


async def run(
    session: Session, work: Callable[[Session], Awaitable[T]], *, retry: bool = True, what: str = "operation"
) -> T:
    """``await work(session)``, sent again on transient errors until the retry deadline."""
    failures = 0
    deadline = 0.0
    delay = 0.05
    while True:
        try:
            result = await work(session)
        except _TRANSIENT as exc:
            failures += 1
            now = time.monotonic()
            if failures == 1:
                deadline = now + session.options.retry_deadline
                if retry:
                    continue  # at once and quietly: a pooled connection may just be stale (a restart)
            if not retry or now >= deadline:
                raise StorageUnavailableError(f"Redis at {session.where} is unavailable: {exc}") from exc
            if failures == 2:
                log.warning("Redis at %s unreachable during %s (%s); retrying", session.where, what, exc)
            await asyncio.sleep(min(delay * random.uniform(0.5, 1.5), max(0.0, deadline - now)))
            delay = min(delay * 2, _MAX_BACKOFF)
            continue
        except ResponseError as exc:
            if _refused_for_now(exc):
                raise StorageUnavailableError(f"Redis at {session.where} refused the {what}: {exc}") from exc
            raise
        if failures > 1:
            log.info("Redis at %s reachable again; %s done", session.where, what)
        return result


async def check_layout(session: Session) -> None:
    """Refuse a store whose keys another version of the layout wrote (:data:`.keys.LAYOUT`): its jobs
    would be misread. A store without ``P:layout`` but with jobs predates the marker."""
    keys = session.keys
    replies: list[bytes | None] = await session.client.mget(keys.layout, keys.seq)  # type: ignore[assignment]
    layout, seq = replies
    found = None if layout is None else layout.decode()
    if found == LAYOUT or (found is None and seq is None):
        return
    raise ConfigurationError(
        f"the Redis store at {session.where} (prefix {session.keys.prefix!r}) was written by another "
        f"version of Relay (key layout {found or '1'}, this version reads {LAYOUT}): finish or purge its "
        "jobs with that version, or use another prefix (docs/redis.md, key layout)"
    )


def _refused_for_now(exc: ResponseError) -> bool:
    # redis-py strips the error code of the replies it has a class for.
    return (
        isinstance(exc, OutOfMemoryError | ReadOnlyError) or str(exc).split(" ", 1)[0] in _UNAVAILABLE_REPLIES
    )
