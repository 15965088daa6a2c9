"""The tasks the benchmark runs; workers load them with ``relay worker --app bench.tasks:relay``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from relay import Relay, Task
from relay.settings import Settings


async def noop() -> None:
    """Nothing: the cost measured is Relay's own."""


async def stamp(enqueued_at: float) -> float:
    """Seconds from enqueue (the producer's clock) to start (this worker's): one machine, one clock."""
    return time.time() - enqueued_at


@dataclass
class BenchApp:
    relay: Relay
    noop: Task[[], Any]
    stamp: Task[[float], Any]


def make_app(url: str | None = None) -> BenchApp:
    relay = Relay(settings=Settings.from_env(database_url=url))
    return BenchApp(
        relay,
        relay.task(noop, name="bench.noop", max_retries=0),
        relay.task(stamp, name="bench.stamp", max_retries=0),
    )


relay = make_app().relay  # for the workers: the URL comes from RELAY_DATABASE_URL
