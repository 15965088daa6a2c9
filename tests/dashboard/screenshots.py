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
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from relay.server import ServerSettings

from .helpers import CHROMIUM, CHROMIUM_FLAGS, LiveRelay, register_demo_tasks, relay_on, seed_demo

IMAGES = Path(__file__).parents[2] / "docs" / "images"
QUEUES = ("default", "emails", "billing", "reports")
FULL_PAGE = ("overview", "job", "job-running", "workers")  # the lists: their first screen


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


def main(seconds: float) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp())
    relay = relay_on(folder / "relay.db")
    register_demo_tasks(relay)
    live = LiveRelay(relay, QUEUES, ServerSettings(events_interval=0.5, maintenance=False)).start()
    try:
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
