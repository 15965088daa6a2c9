"""Regenerates docs/images/dashboard-*.png from a real run: not a test (pytest does not collect it).

    .venv/bin/python -m tests.dashboard.screenshots [SECONDS]

Starts a server and a worker on a fresh SQLite file, feeds them a varying load for SECONDS (default
180, so that the throughput chart has a few minutes of history), adds the demo jobs of the tests, then
photographs each page at 1366x768 in Debian's chromium.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from relay.app import Relay
from relay.jobs.document import parse_job_document
from relay.runtime.maintenance.cron import CronScheduler
from relay.runtime.schedules import define
from relay.server import ServerSettings
from relay.types import NewJob, QueueLimits, RateLimit

from .helpers import CHROMIUM, CHROMIUM_FLAGS, LiveRelay, register_demo_tasks, relay_on, seed_demo

IMAGES = Path(__file__).parents[2] / "docs" / "images"
QUEUES = ("default", "emails", "billing", "reports")
FULL_PAGE = (
    "overview",
    "job",
    "job-running",
    "workers",
    "queue",
    "schedules",
)  # the lists: their first screen


def load(live: LiveRelay, seconds: float) -> None:
    """A wave of sign-up emails and charges; about one charge in twelve is declined (and retried)."""
    started = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - started) < seconds:
        rate = 4 + 3 * math.sin(elapsed / 25)
        for _ in range(round(rate)):
            n += 1
            live.enqueue(
                {
                    "type": "task",
                    "queue": "emails",
                    "payload": {"task": "emails.send", "args": [f"u{n}@example.com"]},
                }
            )
            cents = 20_000 if n % 12 == 0 else 1_000 + n
            live.enqueue(
                {
                    "type": "task",
                    "queue": "billing",
                    "payload": {"task": "billing.charge", "args": [n, cents]},
                    "max_retries": 1,
                    "backoff": "fixed",
                    "backoff_base": 2,
                }
            )
        time.sleep(max(0.0, 1 - (time.monotonic() - started - elapsed)))


async def flow_control(relay: Relay) -> None:
    """Limits on the demo's queues, and a few schedules (one of which has run, one paused)."""
    await relay.storage.queue_limits_set("emails", QueueLimits(rate=RateLimit(20.0, 10), concurrency=4))
    await relay.storage.queue_limits_set(
        "billing", QueueLimits(concurrency=2, key_rate=RateLimit(10 / 60, 5))
    )
    now = relay.clock.now()

    def shell(command: str, queue: str = "default") -> NewJob:
        return parse_job_document({"type": "shell", "queue": queue, "payload": {"command": command}})

    schedules = [
        define(
            "nightly-report", "30 2 * * *", shell("report.sh --full", "reports"), timezone="Europe/Berlin"
        ),
        define(
            "weekly-digest", "0 9 * * 1", shell("digest.sh --week", "emails"), timezone="America/New_York"
        ),
    ]
    for definition in schedules:
        await relay.storage.schedule_upsert(definition.params(now))
    await relay.storage.schedule_set_paused("weekly-digest", True, None)
    # Due a while ago: the scheduler enqueues its latest tick now, so that it shows a last run.
    cleanup = define("cleanup-tmp", "every 5m", shell("/bin/echo removed 12 files"), catch_up="skip")
    await relay.storage.schedule_upsert(cleanup.params(now - timedelta(minutes=20)))
    await CronScheduler(relay.storage, grace=3600).run_once()


def main(seconds: float) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp())
    relay = relay_on(folder / "relay.db")
    register_demo_tasks(relay)
    live = LiveRelay(relay, QUEUES, ServerSettings(events_interval=0.5, maintenance=False)).start()
    try:
        live.call(flow_control)
        load(live, seconds)
        ids = seed_demo(live)
        stop = folder / "stop"
        steps = 'for i in 1 2 3; do echo "step $i of 3: copying shard $i"; done'
        script = f"{steps}; while [ ! -e {stop} ]; do sleep 0.1; done"
        backup = {"type": "shell", "payload": {"command": script, "shell": True}, "tags": ["backup"]}
        tail = live.enqueue(backup)
        live.wait_for_state(tail["id"], "running")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            shots = {
                "overview": "/",
                "jobs": "/ui/jobs",
                "job": f"/ui/jobs/{ids['chained']}",
                "job-running": f"/ui/jobs/{tail['id']}",
                "dlq": "/ui/dlq",
                "workers": "/ui/workers",
                "queue": "/ui/queues/emails",
                "schedules": "/ui/schedules",
            }
            for name, path in shots.items():
                page.goto(live.url + path)
                expect(page.locator("#live")).to_have_attribute("data-state", "live")
                page.screenshot(path=str(IMAGES / f"dashboard-{name}.png"), full_page=name in FULL_PAGE)
            browser.close()
        stop.touch()
    finally:
        live.stop()
        relay.close()


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 180)
