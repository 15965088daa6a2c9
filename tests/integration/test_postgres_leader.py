"""Leader election across processes on PostgreSQL: one leader at a time, and a fast takeover when the
leader dies, because its advisory lock dies with its connection.

Each contender is a real process (``CONTENDER`` below) that asks for leadership every 50 ms and prints
``leader`` / ``follower`` whenever its answer changes. The term (``TTL``) is long on purpose where the
test is about a dead leader: taking over well before it lapses proves the lock, not the clock, did it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from servers.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

CONTENDER = """
import asyncio, sys
from relay.storage.params import LeaderParams
from relay.storage.postgres import PostgresStorage

async def main(url: str, holder: str, ttl: float) -> None:
    storage = PostgresStorage(url)
    await storage.open()
    print("ready", flush=True)
    state = None
    while True:
        leader = await storage.leader_elect(LeaderParams("maintenance", holder, ttl))
        if leader != state:
            print("leader" if leader else "follower", flush=True)
            state = leader
        await asyncio.sleep(0.05)  # the contender's own election pace (it runs in a child process)

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""

STEP = 15.0  # seconds a process may take to start or to react
POLL_INTERVAL = 0.02  # seconds between looks at a condition polled against a deadline


class Contender:
    def __init__(self, url: str, holder: str, ttl: float, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CONTENDER, url, holder, str(ttl)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def lines(self) -> list[str]:
        return self.log.read_text().split()

    def wait_for(self, word: str, timeout: float = STEP) -> float:
        """Wait until ``word`` is the latest state printed; returns when (monotonic)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            states = [ln for ln in lines if ln in ("leader", "follower")]
            if states and states[-1] == word:
                return time.monotonic()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"expected {word!r}; output so far:\n{self.log.read_text()}")
            time.sleep(POLL_INTERVAL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STEP)


Start = Callable[[str, float], "Contender"]


@pytest.fixture
def contenders(postgres_url: str, tmp_path: Path) -> Iterator[Start]:
    started: dict[str, Contender] = {}

    def start(holder: str, ttl: float) -> Contender:
        started[holder] = Contender(postgres_url, holder, ttl, tmp_path / f"{holder}.log")
        return started[holder]

    yield start
    for contender in started.values():
        contender.stop()


def test_a_second_process_takes_over_at_once_when_the_leader_dies(contenders: Start) -> None:
    ttl = 60.0
    a = contenders("a", ttl)
    a.wait_for("leader")
    b = contenders("b", ttl)
    b.wait_for("follower")

    a.proc.send_signal(signal.SIGKILL)  # no resign: only PostgreSQL notices, by the connection dying
    killed = time.monotonic()
    took_over = b.wait_for("leader", timeout=STEP)
    assert took_over - killed < ttl / 4, "took the term's lapse, not the lock, to take over"


def test_only_one_leader_among_several_processes(contenders: Start) -> None:
    procs = [contenders(name, 60.0) for name in ("a", "b", "c")]
    deadline = time.monotonic() + STEP
    while True:
        states = [[ln for ln in p.lines() if ln in ("leader", "follower")] for p in procs]
        if all(states):
            break
        assert time.monotonic() < deadline, f"not every contender answered: {states}"
        time.sleep(POLL_INTERVAL)
    assert sorted(s[-1] for s in states) == ["follower", "follower", "leader"]
    assert sum(s.count("leader") for s in states) == 1, "leadership changed hands with no one dying"


def test_a_stalled_leader_loses_by_its_term_and_learns_it(contenders: Start) -> None:
    """A frozen leader keeps its connection (and lock) alive: the table's term decides, and the old
    leader, once thawed, is told it lost and lets its lock go."""
    ttl = 2.0
    a = contenders("a", ttl)
    a.wait_for("leader")
    b = contenders("b", ttl)
    b.wait_for("follower")
    a.proc.send_signal(signal.SIGSTOP)
    try:
        b.wait_for("leader", timeout=ttl + STEP)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    a.wait_for("follower")
    b.proc.send_signal(signal.SIGKILL)  # b's lock dies with it; a takes over without waiting for the term
    a.wait_for("leader", timeout=STEP)
