"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a real server and
worker on a free loopback port: pages load, jobs move live, clicks act, hostile data stays text.

Each test saves screenshots under tests/artifacts/dashboard/ (git-ignored); docs/images/ holds copies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from relay.app import Relay
from relay.jobs.cron import parse_spec
from relay.jobs.document import parse_job_document
from relay.runtime.schedules import set_paused
from relay.server import ServerSettings, mint_token
from relay.types import QueueLimits, RateLimit

from . import jobs
from .helpers import CHROMIUM, CHROMIUM_FLAGS, LiveRelay, register_demo_tasks, relay_on, seed_demo

ARTIFACTS = Path(__file__).parents[1] / "artifacts" / "dashboard"
TIMEOUT = 15_000  # ms a live change may take to show: the feed polls every 0.1 s here
QUEUES = ("default", "emails", "billing", "reports", "live-q", "dlq-q", "tail-q")
SECRET = "browser-test-secret-that-is-at-least-32-bytes"

if not CHROMIUM.exists():
    pytest.skip(
        "Debian's chromium is not installed at /usr/bin/chromium: apt-get install chromium",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed: pip install playwright"
)
expect = sync_api.expect


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRelay]:
    relay = relay_on(tmp_path_factory.mktemp("dashboard") / "relay.db")
    register_demo_tasks(relay)
    server = LiveRelay(relay, QUEUES).start()
    try:
        seed_demo(server)
        yield server
    finally:
        server.stop()
        relay.close()


@dataclass
class Tab:
    """A page, with what went wrong in it: script errors, console errors, dialogs (none expected)."""

    page: Any
    base: str
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def open(self, path: str) -> Any:
        response = self.page.goto(self.base + path)
        assert response is not None, path
        assert response.ok, f"{path}: {response.status}"
        return response

    def live(self) -> None:
        """Wait until the page's event stream is connected."""
        expect(self.page.locator("#live")).to_have_attribute("data-state", "live", timeout=TIMEOUT)

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def xss_flag(self) -> Any:
        return self.page.evaluate("() => window.__xss")


@contextmanager
def open_tab(browser: Any, base: str, **options: Any) -> Iterator[Tab]:
    """A fresh browser context (no cookies) at 1366x768; fails the test on any dialog or script error."""
    context = browser.new_context(viewport={"width": 1366, "height": 768}, **options)
    page = context.new_page()
    tab = Tab(page, base)
    page.on("pageerror", lambda error: tab.errors.append(f"page error: {error}"))
    page.on("console", lambda m: tab.errors.append(f"console: {m.text}") if m.type == "error" else None)

    def on_dialog(dialog: Any) -> None:
        tab.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield tab
    context.close()
    assert tab.dialogs == [], "a dialog opened: some data ran as script"
    assert tab.errors == [], "\n".join(tab.errors)


@pytest.fixture
def tab(browser: Any, live: LiveRelay) -> Iterator[Tab]:
    with open_tab(browser, live.url) as opened:
        yield opened


def test_every_page_loads_live(tab: Tab, live: LiveRelay) -> None:
    chained = live.enqueue({"type": "shell", "payload": {"command": "/bin/echo hello"}, "tags": ["smoke"]})
    live.wait_for_state(chained["id"], "completed")
    pages = {"overview": "/", "jobs": "/ui/jobs", "job": f"/ui/jobs/{chained['id']}", "dlq": "/ui/dlq"}
    pages |= {"workers": "/ui/workers", "schedules": "/ui/schedules", "queue": "/ui/queues/emails"}
    for name, path in pages.items():
        tab.open(path)
        tab.live()
        tab.screenshot(name)
    tab.open("/")
    tab.live()
    expect(tab.page.locator("#throughput-chart svg polyline.line-completed")).to_have_count(1)
    expect(tab.page.locator("#queues tr[data-queue=reports] [data-role=paused]")).to_be_visible()
    tab.open("/ui/workers")
    expect(tab.page.locator("#worker-rows tr").first).to_contain_text("tail-q")


def test_a_new_job_appears_and_completes_without_a_reload(tab: Tab, live: LiveRelay) -> None:
    live.post("/api/v1/queues/live-q/pause")  # so that it is seen pending first
    tab.open("/ui/jobs?queue=live-q")
    tab.live()
    tab.page.evaluate("() => { window.__sameDocument = true; }")
    job = live.enqueue({"type": "shell", "queue": "live-q", "payload": {"command": "/bin/echo live"}})
    row = tab.page.locator(f'#job-rows tr[data-job-id="{job["id"]}"]')
    expect(row.locator("[data-role=state]")).to_have_text("pending", timeout=TIMEOUT)
    live.post("/api/v1/queues/live-q/resume")
    expect(row.locator("[data-role=state]")).to_have_text("completed", timeout=TIMEOUT)
    expect(row.locator("[data-role=attempts]")).to_have_text("1/4")
    assert tab.page.evaluate("() => window.__sameDocument") is True  # never reloaded

    # The overview follows too: a queue nobody serves appears, with its pending job counted.
    tab.open("/")
    tab.live()
    live.enqueue({"type": "external", "queue": "appears-later"})
    new_row = tab.page.locator("#queues tr[data-queue=appears-later]")
    expect(new_row.locator("[data-count=pending]")).to_have_text("1", timeout=TIMEOUT)


def test_a_dead_job_is_requeued_by_clicking(tab: Tab, live: LiveRelay) -> None:
    failing = {"command": "echo 'disk full' >&2; exit 1", "shell": True}
    job = live.enqueue({"type": "shell", "queue": "dlq-q", "payload": failing, "max_retries": 0})
    live.wait_for_state(job["id"], "dead")
    live.post("/api/v1/queues/dlq-q/pause")  # keeps the requeued job pending, to look at it
    tab.open("/ui/dlq")
    tab.live()
    row = tab.page.locator(f'#dead-jobs tr[data-job-id="{job["id"]}"]')
    expect(row).to_contain_text("disk full")
    tab.screenshot("dlq")
    row.get_by_role("button", name="Requeue").click()
    expect(tab.page.locator(".notice")).to_have_text("The dead job was requeued: it is pending again.")
    expect(row).to_have_count(0)
    assert live.job(job["id"])["state"] == "pending"
    live.post(f"/api/v1/jobs/{job['id']}/cancel")  # it would die again, beside the next one

    # Purge asks first, on a page of its own.
    other = live.enqueue({"type": "shell", "queue": "dlq-q", "payload": failing, "max_retries": 0})
    live.post("/api/v1/queues/dlq-q/resume")
    live.wait_for_state(other["id"], "dead")
    tab.open("/ui/dlq?queue=dlq-q")
    tab.page.get_by_role("button", name="Purge…").click()
    expect(tab.page.locator("h1")).to_have_text("Purge 1 dead job of dlq-q?")
    tab.screenshot("confirm")
    tab.page.locator("#confirm").click()
    expect(tab.page.locator(".notice")).to_have_text("1 dead job(s) purged.")


def test_the_log_is_tailed_while_the_job_runs(tab: Tab, live: LiveRelay, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    script = f"echo started; while [ ! -e {stop} ]; do sleep 0.05; done; echo finished"
    job = live.enqueue({"type": "shell", "queue": "tail-q", "payload": {"command": script, "shell": True}})
    live.wait_for_state(job["id"], "running")
    tab.open(f"/ui/jobs/{job['id']}")
    tab.live()
    log = tab.page.locator("#log")
    expect(log).to_contain_text("started", timeout=TIMEOUT)
    expect(tab.page.locator("#job h1 [data-role=state]")).to_have_text("running")
    expect(tab.page.locator("form[data-action=cancel]")).to_be_visible()
    tab.screenshot("job-running")
    stop.touch()
    expect(log).to_contain_text("finished", timeout=TIMEOUT)
    expect(tab.page.locator("#job h1 [data-role=state]")).to_have_text("completed", timeout=TIMEOUT)
    expect(tab.page.locator("form[data-action=cancel]")).to_be_hidden()
    expect(tab.page.locator("#attempts tbody tr")).to_have_count(1)


def test_a_queues_limits_are_set_on_its_page(tab: Tab, live: LiveRelay) -> None:
    live.enqueue({"type": "external", "queue": "limits-q"})  # no worker runs external jobs: it waits
    tab.open("/")
    tab.live()
    tab.page.locator("#queues tr[data-queue=limits-q] .queue-name a").click()
    expect(tab.page.locator("#queue h1")).to_contain_text("limits-q")
    tab.live()
    shown = {name: tab.page.locator(f"[data-limit={name}]") for name in ("rate", "tokens", "concurrency")}
    expect(shown["rate"]).to_have_text("no limit")
    expect(tab.page.locator("[data-count=pending]")).to_have_text("1")
    form = tab.page.locator("#limits-form")

    form.locator("input[name=rate]").fill("0/s")
    form.get_by_role("button", name="Save limits").click()
    expect(tab.page.locator("[data-error=rate]")).to_have_text("must be more than 0 jobs a second, got '0/s'")
    expect(form.locator("input[name=rate]")).to_have_value("0/s")
    tab.errors.clear()  # the 422 of the refused form is logged to the console: expected here
    assert not live.call(lambda relay: _limits(relay, "limits-q")).limited

    form.locator("input[name=rate]").fill("20/s")
    form.locator("input[name=burst]").fill("5")
    form.locator("input[name=concurrency]").fill("2")
    form.get_by_role("button", name="Save limits").click()
    expect(tab.page.locator(".notice")).to_have_text(
        "The queue's limits are saved: workers obey them at their next claim."
    )
    expect(shown["rate"]).to_have_text("20/s, bursts of 5")
    expect(shown["tokens"]).to_have_text("5 of 5")
    expect(shown["concurrency"]).to_have_text("0 of 2 slots in use")
    expect(form.locator("input[name=concurrency]")).to_have_value("2")
    assert live.call(lambda relay: _limits(relay, "limits-q")) == QueueLimits(
        rate=RateLimit(20.0, 5), concurrency=2
    )
    tab.screenshot("queue")
    tab.open("/")
    expect(tab.page.locator("#queues tr[data-queue=limits-q] [data-role=limits]")).to_have_text(
        "20/s · 0/2 running"
    )


async def _limits(relay: Relay, name: str) -> QueueLimits:
    return {q.name: q.limits for q in await relay.storage.queue_list()}[name]


def test_schedules_are_listed_and_paused_by_clicking(tab: Tab, live: LiveRelay) -> None:
    report = parse_job_document(
        {"type": "shell", "queue": "reports", "payload": {"command": "report.sh --full"}}
    )
    live.call(
        lambda relay: jobs.schedule(relay, "weekly-report", "0 9 * * 1", report, timezone="Europe/Berlin")
    )
    tab.open("/")
    tab.page.get_by_role("link", name="Schedules").click()
    tab.live()
    row = tab.page.locator('#schedules tr[data-schedule="weekly-report"]')
    expect(row).to_contain_text(parse_spec("0 9 * * 1", "Europe/Berlin").describe())
    expect(row).to_contain_text("Europe/Berlin")
    expect(row).to_contain_text("report.sh --full")
    expect(row.locator("[data-role=next-time] time")).to_contain_text("in ")
    expect(row.locator("[data-role=paused]")).to_be_hidden()
    tab.screenshot("schedules")

    row.get_by_role("button", name="Pause").click()
    expect(tab.page.locator(".notice[role=status]")).to_have_text(
        "The schedule is paused: it enqueues nothing until it is resumed."
    )
    expect(row.locator("[data-role=paused]")).to_be_visible()
    expect(row.locator("[data-role=next-paused]")).to_be_visible()
    assert live.call(lambda relay: _paused(relay, "weekly-report")) is True
    row.get_by_role("button", name="Resume").click()
    expect(tab.page.locator(".notice[role=status]")).to_contain_text("The schedule is resumed")
    expect(row.locator("[data-role=paused]")).to_be_hidden()
    assert live.call(lambda relay: _paused(relay, "weekly-report")) is False

    # Paused elsewhere (the CLI, the API): the page follows without a reload.
    tab.page.evaluate("() => { window.__sameDocument = true; }")
    live.call(lambda relay: set_paused(relay.storage, "weekly-report", True, relay.clock.now()))
    expect(row.locator("[data-role=paused]")).to_be_visible(timeout=TIMEOUT)
    expect(row.get_by_role("button", name="Resume")).to_be_visible()
    assert tab.page.evaluate("() => window.__sameDocument") is True


async def _paused(relay: Relay, name: str) -> bool:
    found = await relay.storage.schedule_get(name)
    assert found is not None
    return found.paused


def test_hostile_data_never_runs(browser: Any, live: LiveRelay) -> None:
    hostile = live.call(jobs.hostile)
    schedules = live.call(jobs.hostile_schedules)
    # Without the CSP, so that escaping alone is under test: nothing may run even then.
    with open_tab(browser, live.url, bypass_csp=True) as tab:
        pages = ["/", "/ui/jobs", "/ui/dlq", "/ui/workers", "/ui/schedules"]
        pages += [f"/ui/jobs/{quote(j.id, safe='')}" for j in hostile]
        pages += [f"/ui/queues/{quote(s.job.queue, safe='')}" for s in schedules]
        for path in pages:
            tab.open(path)
            tab.live()
            assert tab.xss_flag() is None, path
        tab.open(f"/ui/jobs/{quote(hostile[0].id, safe='')}")
        expect(tab.page.locator("#log")).to_contain_text("<script>window.__xss=1;alert(1)</script>")
        tab.screenshot("hostile-job")
        tab.open("/ui/schedules")
        row = tab.page.locator(f'#schedules tr[data-schedule="{schedules[0].name}"]')
        expect(row.locator(".schedule-name .mono")).to_have_text(schedules[0].name)
        tab.screenshot("hostile-schedules")
        # Rows the scripts add (from live events) are text too.
        tab.open("/ui/jobs")
        tab.live()
        added = live.call(
            lambda relay: jobs.insert(
                relay, tags=("<img src=x onerror=window.__xss=9>",), payload={"x": "<b>"}
            )
        )
        expect(tab.page.locator(f'#job-rows tr[data-job-id="{added.id}"] .tag')).to_have_text(
            "<img src=x onerror=window.__xss=9>", timeout=TIMEOUT
        )
        assert tab.xss_flag() is None


def test_a_cross_site_form_post_is_refused(tab: Tab, live: LiveRelay) -> None:
    job = live.enqueue({"type": "shell", "queue": "dlq-q", "payload": {"command": "false"}, "max_retries": 0})
    live.wait_for_state(job["id"], "dead")
    tab.open("/ui/dlq")  # the person has a session with the dashboard...
    attack = f"""<form method="post" action="{live.url}/ui/actions/purge">
        <input name="csrf" value="{"0" * 64}"><input name="confirm" value="yes"><button>win</button></form>"""
    tab.page.route("http://evil.test/**", lambda route: route.fulfill(body=attack, content_type="text/html"))
    tab.page.goto("http://evil.test/")  # ...and visits another site, whose form posts to it
    with tab.page.expect_navigation():
        tab.page.get_by_role("button", name="win").click()
    expect(tab.page.locator("h1")).to_have_text("Not allowed")
    assert live.job(job["id"])["state"] == "dead"
    tab.errors.clear()  # the 403 of the refused post is logged to the console: expected here


def test_with_auth_on_a_person_logs_in_with_a_token(browser: Any, tmp_path: Path) -> None:
    relay = relay_on(tmp_path / "auth.db")
    server = LiveRelay(
        relay, ("default",), ServerSettings(events_interval=0.1, maintenance=False, jwt_secret=SECRET)
    )
    server.start()
    try:
        with open_tab(browser, server.url) as tab:
            tab.open("/ui/jobs")
            expect(tab.page.locator("h1")).to_have_text("Log in to Relay")
            tab.page.locator("textarea[name=token]").fill("not-a-token")
            tab.page.get_by_role("button", name="Log in").click()
            expect(tab.page.locator(".notice.error")).to_contain_text("was refused")
            tab.errors.clear()  # the 401 of the refused login
            tab.screenshot("login")
            tab.page.locator("textarea[name=token]").fill(mint_token(SECRET, "read:* admin:*", "1h"))
            tab.page.get_by_role("button", name="Log in").click()
            expect(tab.page).to_have_url(f"{server.url}/ui/jobs")
            tab.live()
            assert tab.page.evaluate("() => document.cookie") == ""  # HttpOnly: no script reads it
            # A link from another site: its navigation carries no SameSite=Strict cookie, yet the
            # person lands on the page, still logged in (one same-site reload brings the cookies).
            link = f'<a href="{server.url}/ui/dlq">the dead jobs</a>'
            tab.page.route(
                "http://elsewhere.test/**", lambda r: r.fulfill(body=link, content_type="text/html")
            )
            tab.page.goto("http://elsewhere.test/")
            tab.page.get_by_role("link", name="the dead jobs").click()
            expect(tab.page.locator("h2")).to_contain_text("Dead-letter queue")
            expect(tab.page).to_have_url(f"{server.url}/ui/dlq")
            tab.page.get_by_role("button", name="Log out").click()
            expect(tab.page.locator(".notice")).to_have_text("You are logged out.")
    finally:
        server.stop()
        relay.close()
