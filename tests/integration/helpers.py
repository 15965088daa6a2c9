"""Helpers for in-process runtime tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from relay.runtime.worker import Worker

POLL_INTERVAL = 0.01  # how often eventually() looks again; a condition poll, not a wait for time


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run ``worker`` in the background for the block; stop it gracefully at the end."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        if not task.done():
            worker.request_stop()
        await asyncio.wait_for(task, timeout=30)
