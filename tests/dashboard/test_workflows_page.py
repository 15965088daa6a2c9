"""The dashboard's Workflows page and a run's page: in-process (what the pages show, escaping, the
trigger, cancel and retry actions behind their CSRF check), and in a real headless Chromium against a
real server and worker: the run's graph shows every step in its state, follows a step that completes
without a reload, and links each step to its job page and log."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from relay.app import Relay
from relay.settings import Settings
from relay.storage.params import ClaimParams, FinishItem, WorkflowListParams
from relay.types import AttemptError, JobState, Outcome, RunState, WorkflowRun, utcnow

from .conftest import BASE, csrf_of, dashboard, post_form
from .helpers import CHROMIUM, CHROMIUM_FLAGS, HOSTILE, LiveRelay

ARTIFACTS = Path(__file__).parents[1] / "artifacts" / "dashboard"  # git-ignored, as test_browser's
TIMEOUT = 15_000  # ms a live change may take to show: the feed polls every 0.1 s here
GATE_TIMEOUT = 60.0  # s the gated step waits at most, so that a failed test cannot hang a worker
PIPELINE = """\
name: pipeline
description: {description}
params:
  note: {note}
steps:
  - name: prepare
    task: gate.wait
    queue: wf
  - name: left
    command: /bin/echo left
    depends_on: [prepare]
    queue: wf
  - name: right
    command: /bin/echo right
    depends_on: [prepare]
    queue: wf
  - name: join
    command: /bin/echo joined
    depends_on: [left, right]
    queue: wf
"""
CI = """\
name: ci
steps:
  - name: test
    command: /bin/false
    max_retries: 0
  - name: build
    command: /bin/echo build
"""


def quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"  # a YAML single-quoted scalar


def workflows_dir(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pipeline = PIPELINE.format(description=quoted(HOSTILE[0]), note=quoted(HOSTILE[1]))
    (directory / "pipeline.yaml").write_text(textwrap.dedent(pipeline))
    (directory / "ci.yaml").write_text(CI)
    return directory


def relay_with_workflows(tmp_path: Path) -> Relay:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/relay.db",
        poll_interval=0.05,
        reaper_interval=0.2,
        scheduler_interval=0.1,
        leader_ttl=3.0,
        workflows_dir=str(workflows_dir(tmp_path / "workflows")),
    )
    return Relay(settings=settings)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    app = relay_with_workflows(tmp_path)
    yield app
    app.close()


async def only_run(relay: Relay) -> WorkflowRun:
    [run] = (await relay.storage.workflow_list(WorkflowListParams())).runs
    return run


async def fail_first_step(relay: Relay, run: WorkflowRun) -> None:
    claimed = await relay.storage.job_claim(ClaimParams(queues=["default"], worker_id="w-1", limit=10))
    [job] = [j for j in claimed if j.id == run.steps[0].job_id]
    assert job.lease_token is not None
    error = AttemptError(job.attempt, "RuntimeError", "boom", utcnow(), None, 1, None)
    item = FinishItem(job.id, job.lease_token, Outcome.FAILED, error=error, retryable=False)
    await relay.storage.job_finish_many([item])


# -- in-process -------------------------------------------------------------------------------------------


async def test_the_workflows_page_lists_definitions_and_runs_as_text(relay: Relay) -> None:
    async with dashboard(relay) as client:
        empty = await client.get("/ui/workflows")
        triggered = await post_form(
            client, "/ui/actions/workflow-trigger", {"workflow": "ci"}, from_page="/ui/workflows"
        )
        listing = await client.get("/ui/workflows")
    assert empty.status_code == 200
    html = empty.text
    assert 'href="/ui/workflows" aria-current="page"' in html
    assert "No run yet." in html
    for name in ("pipeline", "ci", "prepare", "join", "note"):
        assert name in html
    for hostile in HOSTILE[:2]:
        assert hostile not in html  # shown escaped, never as markup
    assert "&lt;script&gt;window.__xss=1" in html
    assert triggered.status_code == 303
    run = await only_run(relay)
    assert triggered.headers["location"] == f"/ui/workflow-runs/{quote(run.id, safe='')}?notice=run-started"
    assert f'href="/ui/workflow-runs/{run.id}"' in listing.text
    assert ">0/2<" in listing.text  # steps done


async def test_a_run_page_draws_the_graph_by_depth(relay: Relay) -> None:
    async with dashboard(relay) as client:
        await post_form(
            client, "/ui/actions/workflow-trigger", {"workflow": "pipeline"}, from_page="/ui/workflows"
        )
        run = await only_run(relay)
        page = await client.get(f"/ui/workflow-runs/{run.id}")
        data = (await client.get("/ui/api/workflow-run", params={"id": run.id})).json()
        missing = await client.get("/ui/workflow-runs/nope")
    assert page.status_code == 200
    html = page.text
    for step in run.steps:
        assert f'href="/ui/jobs/{step.job_id}" class="wf-node' in html
        assert f'href="/ui/jobs/{step.job_id}#log"' in html
    assert html.count('class="wf-edge"') == 4
    assert 'data-step="prepare" data-state="pending"' in html
    assert 'data-step="join" data-state="waiting"' in html
    assert HOSTILE[1] not in html
    assert [s["state"] for s in data["steps"]] == ["pending", "waiting", "waiting", "waiting"]
    assert data["state"] == "running"
    assert missing.status_code == 404


async def test_cancel_and_retry_are_csrf_protected_actions(relay: Relay) -> None:
    async with dashboard(relay) as client:
        await post_form(client, "/ui/actions/workflow-trigger", {"workflow": "ci"}, from_page="/ui/workflows")
        run = await only_run(relay)
        run_path = f"/ui/workflow-runs/{run.id}"
        token = csrf_of((await client.get(run_path)).text)
        forged = await client.post(
            "/ui/actions/workflow-cancel",
            data={"csrf": "0" * 64, "run_id": run.id},
            headers={"origin": BASE, "sec-fetch-site": "same-origin"},
        )
        cross_site = await client.post(
            "/ui/actions/workflow-cancel",
            data={"csrf": token, "run_id": run.id},
            headers={"origin": "https://evil.example", "sec-fetch-site": "cross-site"},
        )
        assert (forged.status_code, cross_site.status_code) == (403, 403)
        assert (await only_run(relay)).state is RunState.RUNNING
        early = await post_form(
            client, "/ui/actions/workflow-retry", {"run_id": run.id, "step": "test"}, from_page=run_path
        )
        assert early.status_code == 409  # the step has not failed
        await fail_first_step(relay, run)
        data = (await client.get("/ui/api/workflow-run", params={"id": run.id})).json()
        assert [(s["name"], s["can_retry"]) for s in data["steps"]] == [("test", True), ("build", False)]
        retried = await post_form(
            client, "/ui/actions/workflow-retry", {"run_id": run.id, "step": "test"}, from_page=run_path
        )
        assert retried.status_code == 303
        assert retried.headers["location"].endswith("?notice=step-retried")
        assert (await only_run(relay)).step("test").state is JobState.PENDING
        cancelled = await post_form(
            client, "/ui/actions/workflow-cancel", {"run_id": run.id}, from_page=run_path
        )
        assert cancelled.status_code == 303
    assert (await only_run(relay)).state is RunState.CANCELLED


async def test_a_trigger_with_a_bad_parameter_starts_nothing(relay: Relay) -> None:
    async with dashboard(relay) as client:
        refused = await post_form(
            client,
            "/ui/actions/workflow-trigger",
            {"workflow": "ci", "param.nope": "x"},
            from_page="/ui/workflows",
        )
        unknown = await post_form(
            client, "/ui/actions/workflow-trigger", {"workflow": "nope"}, from_page="/ui/workflows"
        )
    assert refused.status_code == 422
    assert "params.nope" in refused.text
    assert unknown.status_code == 404
    assert (await relay.storage.workflow_list(WorkflowListParams())).runs == []


# -- in a real browser ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def test_the_run_graph_follows_its_steps_live(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    gate = threading.Event()

    def wait_for_the_gate() -> str:
        assert gate.wait(GATE_TIMEOUT), "the test never opened the gate"
        return "opened"

    relay = relay_with_workflows(tmp_path)
    relay.registry.register("gate.wait", wait_for_the_gate)
    live = LiveRelay(relay, ("wf",)).start()
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("dialog", lambda dialog: (errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        response = httpx.post(f"{live.url}/api/v1/workflows/pipeline/runs", json={}, timeout=10)
        assert response.status_code == 201, response.text
        run = response.json()
        job_of = {s["name"]: s["job_id"] for s in run["steps"]}

        page.goto(f"{live.url}/ui/workflow-runs/{quote(run['id'], safe='')}")
        expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=TIMEOUT)
        page.evaluate("() => { window.__sameDocument = true; }")
        nodes = page.locator("#graph .wf-node")
        expect(nodes).to_have_count(4)
        expect(page.locator("#graph .wf-edge")).to_have_count(4)

        def node(step: str) -> Any:
            return page.locator(f"#graph .wf-node[data-step={step}]")

        expect(node("prepare")).to_have_attribute("data-state", "running", timeout=TIMEOUT)
        for step in ("left", "right", "join"):
            expect(node(step)).to_have_attribute("data-state", "waiting")
            expect(node(step).locator("[data-role=state]")).to_have_text("waiting")
        expect(node("prepare")).to_have_attribute("href", f"/ui/jobs/{job_of['prepare']}")
        log = page.locator("#steps tr[data-step=join] a[data-role=log]")
        expect(log).to_have_attribute("href", f"/ui/jobs/{job_of['join']}#log")

        gate.set()  # the first step completes: the graph follows, without a reload
        expect(node("prepare")).to_have_attribute("data-state", "completed", timeout=TIMEOUT)
        expect(node("prepare")).to_have_class("wf-node state-completed")
        expect(node("join")).to_have_attribute("data-state", "completed", timeout=TIMEOUT)
        expect(page.locator("#run-state [data-role=state]")).to_have_text("completed", timeout=TIMEOUT)
        expect(page.locator("#steps tr[data-step=left] [data-role=state]")).to_have_text("completed")
        expect(page.locator("#run-done")).to_have_text("4")
        assert page.evaluate("() => window.__sameDocument") is True
        assert page.evaluate("() => window.__xss") is None
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "workflow-run.png"), full_page=True)

        node("join").click()  # a step's box is a link to its job's page, which links back to the run
        expect(page).to_have_url(f"{live.url}/ui/jobs/{job_of['join']}")
        expect(page.locator("#log")).to_contain_text("joined", timeout=TIMEOUT)
        page.locator("a[data-role=workflow-run]").click()
        expect(page.locator("#graph .wf-node")).to_have_count(4)

        page.goto(f"{live.url}/ui/workflows")
        row = page.locator(f"#runs tr[data-run='{run['id']}']")
        expect(row.locator("[data-role=done]")).to_have_text("4/4")
        expect(row.locator("[data-role=state]")).to_have_text("completed")
        assert page.evaluate("() => window.__xss") is None
        page.screenshot(path=str(ARTIFACTS / "workflows.png"), full_page=True)
    finally:
        gate.set()
        context.close()
        live.stop()
        relay.close()
    assert errors == [], "\n".join(errors)
