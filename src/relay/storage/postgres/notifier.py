"""Wake-ups by LISTEN/NOTIFY: a hint only, polling stays the source of truth.

Data flow: statements that make jobs claimable send ``NOTIFY relay_jobs, '["queue", ...]'`` (queries.sql),
delivered at commit to every process listening on the database. Each process keeps one dedicated
autocommit connection on the backend's loop that LISTENs (:class:`Listener`) and turns each notification
into wake-ups of the local waiters (a :class:`LocalNotifier`), who may sit on any thread's event loop
(workers, the sync producer's portal).

When the listening connection drops (server restart, ``pg_terminate_backend``, network), the listener
reconnects with jittered exponential backoff; notifications sent meanwhile are lost, so after it is back
it wakes every waiter once: they poll, and find whatever arrived in the gap. Workers also poll on their
own interval, so a process that never gets a notification still runs every job, only later.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection

from relay.storage.local_notifier import LocalNotifier
from relay.storage.postgres.sql import CHANNEL, Q

log = logging.getLogger("relay.storage.postgres")

_BACKOFF_FIRST = 0.05  # seconds before the first reconnect attempt
_BACKOFF_MAX = 5.0
_HEALTH_CHECK = 15.0  # seconds without a notification before the connection is pinged
ALL_QUEUES = "*"  # a NOTIFY payload that wakes every waiter (sent when the list would be too long)


def notify_payload(queues: Sequence[str]) -> str:
    """The NOTIFY payload for ``queues``: their JSON array, or ``*`` past NOTIFY's 8000-byte limit."""
    payload = orjson.dumps(sorted(set(queues))).decode()
    return payload if len(payload.encode()) < 8000 else ALL_QUEUES


def queues_of(payload: str) -> list[str] | None:
    """The queues a NOTIFY payload names; None for "every queue" (or a payload not understood)."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(q, str) for q in value):
        return value
    return None


class Listener:
    """The LISTEN connection: runs on the backend's loop until cancelled."""

    def __init__(self, conninfo: str, kwargs: dict[str, Any], waiters: LocalNotifier) -> None:
        self._conninfo = conninfo
        self._kwargs = kwargs
        self._waiters = waiters
        self.listening = asyncio.Event()  # set while LISTEN is in effect (on the backend's loop)
        self.connections = 0  # how many times LISTEN was established: tests wait on it

    async def run(self) -> None:
        delay = _BACKOFF_FIRST
        while True:
            try:
                async with await AsyncConnection.connect(self._conninfo, **self._kwargs) as conn:
                    await conn.execute(Q["listen"])
                    self._established()
                    delay = _BACKOFF_FIRST
                    await self._receive(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.listening.clear()
                log.warning("LISTEN connection lost (%s); reconnecting in %.2fs", exc, delay)
            except Exception:  # never let the listener die: wake-ups would stop for good
                self.listening.clear()
                log.exception("LISTEN failed; reconnecting in %.2fs", delay)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, _BACKOFF_MAX)

    def _established(self) -> None:
        self.connections += 1
        self.listening.set()
        if self.connections > 1:
            # Notifications sent while deaf are lost: let every waiter poll once.
            self._waiters.notify_threadsafe(None)

    async def _receive(self, conn: AsyncConnection[Any]) -> None:
        while True:
            async for note in conn.notifies(timeout=_HEALTH_CHECK):
                if note.channel == CHANNEL:
                    self._waiters.notify_threadsafe(queues_of(note.payload))
            # Quiet for a while: a dead peer (no FIN, e.g. a lost network) is only found by talking.
            await conn.execute(Q["ping"])
