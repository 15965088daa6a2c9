"""Helpers for the dashboard tests: a real server and worker on a free loopback port, waiting with a
deadline, and the hostile strings every page must show as text."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx

from relay.app import Relay
from relay.runtime.worker import Worker
from relay.server import ServerSettings, serve_async
from relay.settings import Settings

T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")  # Debian's: Playwright never downloads a browser here
# Without the networking flags Chromium keeps trying to reach the outside world (see NOTES.md).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
BACKEND = os.environ.get("RELAY_TEST_DASHBOARD_BACKEND", "sqlite")  # or "memory"
POLL = 0.02  # how often a condition is looked at again: not a wait for time to pass

# Each would set window.__xss (or open a dialog) if the page ever treated it as markup or script.
HOSTILE = (
    "<script>window.__xss=1;alert(1)</script>",
    '<img src=x onerror="window.__xss=2;alert(2)">',
    '"><svg onload="window.__xss=3;alert(3)">',
    '\'><iframe srcdoc="<script>parent.__xss=4</script>">',
    "javascript:window.__xss=5",
)


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Look at ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL)


def relay_on(path: Path) -> Relay:
    """A Relay on a SQLite file at ``path``, or on the memory backend with
    ``RELAY_TEST_DASHBOARD_BACKEND=memory`` (the pages read through the storage seam only)."""
    url = "memory://" if BACKEND == "memory" else f"sqlite:///{path}"
    settings = Settings(
        database_url=url,
        poll_interval=0.05,
        reaper_interval=0.2,
        scheduler_interval=0.1,
        leader_ttl=3.0,
    )
    return Relay(settings=settings)


class LiveRelay:
    """``relay up`` in a thread: the HTTP server (with the dashboard) and a worker in one event loop,
    on a SQLite file, listening on a free loopback port."""

    def __init__(self, relay: Relay, queues: tuple[str, ...], settings: ServerSettings | None = None) -> None:
        self.relay = relay
        self.settings = settings or ServerSettings(events_interval=0.1, maintenance=False)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.queues = queues
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._worker: Worker | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="relay-dashboard-test", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._worker = self.relay.worker(queues=self.queues, concurrency=4, poll_interval=0.05)
            server = asyncio.create_task(
                serve_async(self.relay, self.settings, stop=self._stop, sockets=[self.sock])
            )
            await asyncio.gather(server, self._worker.run())

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc

    def start(self) -> LiveRelay:
        self._thread.start()

        def healthy() -> bool:
            if self.error is not None:
                raise AssertionError(f"the server did not start: {self.error!r}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, what="the server to listen")
        return self

    def stop(self) -> None:
        loop, stop, worker = self._loop, self._stop, self._worker
        if loop is not None and stop is not None and worker is not None:
            loop.call_soon_threadsafe(stop.set)
            loop.call_soon_threadsafe(worker.request_stop)
            loop.call_soon_threadsafe(worker.request_stop)  # the second stop releases running jobs now
        self._thread.join(30)
        assert not self._thread.is_alive(), "the server did not stop"

    def call(self, make: Callable[[Relay], Coroutine[Any, Any, T]], timeout: float = 30.0) -> T:
        """Run ``make(relay)`` in the server's event loop: storage calls from a test, on any backend."""
        assert self._loop is not None, "the server is not running"
        return asyncio.run_coroutine_threadsafe(make(self.relay), self._loop).result(timeout)

    def enqueue(self, document: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/api/v1/jobs", json=document, timeout=10)
        assert response.status_code in (200, 201), response.text
        job: dict[str, Any] = response.json()["job"]
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v1/jobs/{job_id}", timeout=10)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def wait_for_state(self, job_id: str, *states: str, timeout: float = 20.0) -> dict[str, Any]:
        found: dict[str, Any] = wait_until(
            lambda: (job := self.job(job_id))["state"] in states and job,
            timeout,
            f"job {job_id} to be {' or '.join(states)}",
        )
        return found

    def post(self, path: str) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=10)


def register_demo_tasks(relay: Relay) -> None:
    """Tasks the demo jobs call: one that succeeds, one that fails for large amounts."""

    def charge(customer_id: int, cents: int) -> str:
        if cents > 10_000:
            raise ValueError(f"card declined for customer {customer_id}: {cents} cents is over the limit")
        return f"charged {customer_id} {cents} cents"

    def send(to: str, template: str = "welcome") -> dict[str, str]:
        return {"sent": to, "template": template}

    relay.registry.register("billing.charge", charge)
    relay.registry.register("emails.send", send)


def seed_demo(live: LiveRelay) -> dict[str, str]:
    """A little of everything, as a real queue would hold it: ids of the interesting jobs."""
    ids: dict[str, str] = {}
    for n in range(6):
        live.enqueue(
            {
                "type": "task",
                "queue": "emails",
                "payload": {"task": "emails.send", "args": [f"user{n}@example.com"]},
                "tags": ["signup"],
            }
        )
    for n, cents in enumerate((1999, 4500, 25_000)):
        job = live.enqueue(
            {
                "type": "task",
                "queue": "billing",
                "payload": {"task": "billing.charge", "args": [40 + n, cents]},
                "max_retries": 0,
                "tags": ["invoice"],
            }
        )
        ids[f"charge{n}"] = job["id"]
    ids["chained"] = live.enqueue(
        {
            "type": "shell",
            "payload": {
                "command": "printf 'importing %s\\n' a.csv b.csv c.csv; echo 'warning: 2 rows skipped' >&2",
                "shell": True,
            },
            "on_success": {"type": "shell", "payload": {"command": "/bin/echo notified"}},
            "tags": ["import", "nightly"],
        }
    )["id"]
    ids["broken"] = live.enqueue(
        {
            "type": "shell",
            "payload": {
                "command": "echo 'connecting to db'; echo 'fatal: connection refused' >&2; exit 3",
                "shell": True,
            },
            "max_retries": 0,
        }
    )["id"]
    live.post("/api/v1/queues/reports/pause")
    for name in ("weekly", "monthly"):
        live.enqueue(
            {"type": "shell", "queue": "reports", "payload": {"command": f"/bin/echo {name} report"}}
        )
    live.enqueue({"type": "shell", "payload": {"command": "/bin/echo later"}, "delay": "1h"})
    live.wait_for_state(ids["chained"], "completed")
    live.wait_for_state(ids["broken"], "dead")
    live.wait_for_state(ids["charge2"], "dead")
    return ids
