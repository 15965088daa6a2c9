"""In-process wake-ups: every backend's waiters, whatever carries the notification to the process.

Producers and workers may run on different threads and event loops (the sync producer API runs its own
loop in a thread), so a notification is delivered with ``call_soon_threadsafe`` to each waiter's loop.
The memory backend notifies one of these directly; SQLite also feeds it from the datagram sockets
other processes on the same file write to (storage/sqlite/wakeup.py); PostgreSQL and Redis feed it
from their LISTEN connection or pub/sub subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event
    queues: frozenset[str]


class LocalNotifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[_Waiter] = set()

    async def notify(self, queues: Sequence[str]) -> None:
        self.notify_threadsafe(queues)

    def notify_threadsafe(self, queues: Sequence[str] | None) -> None:
        """Wake the waiters on any of ``queues``; None wakes every waiter (after a lost connection,
        say, when nobody knows which queues got jobs meanwhile)."""
        wanted = None if queues is None else set(queues)
        with self._lock:
            targets = [w for w in self._waiters if wanted is None or w.queues & wanted]
        for waiter in targets:
            # A closed loop raises RuntimeError: its waiter is gone with it.
            with contextlib.suppress(RuntimeError):
                waiter.loop.call_soon_threadsafe(waiter.event.set)

    async def wait_for_jobs(self, queues: Sequence[str], timeout: float) -> bool:
        waiter = _Waiter(asyncio.get_running_loop(), asyncio.Event(), frozenset(queues))
        with self._lock:
            self._waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter.event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters.discard(waiter)
