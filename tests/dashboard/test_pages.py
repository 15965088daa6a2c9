"""The pages through HTTP: what they show, filters and paging, a job's chain, the DLQ's confirmations,
and that no page ever reads more than a page of jobs."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from relay.app import Relay, storage_from_url
from relay.storage.params import ClaimParams, FinishItem, ListParams
from relay.types import JobKind, JobState, NewJob, Outcome

from . import jobs
from .conftest import dashboard, post_form

ROW = re.compile(r'<tr data-job-id="([^"]+)"')


async def test_the_overview_shows_each_queue(relay: Relay) -> None:
    for queue in ("emails", "emails", "billing"):
        await jobs.insert(relay, queue=queue)
    await jobs.dead(relay, queue="billing")
    await relay.storage.queue_pause("billing")
    async with dashboard(relay) as client:
        page = (await client.get("/")).text
    billing = page[page.index('data-queue="billing"') :].split("</tr>")[0]
    emails = page[page.index('data-queue="emails"') :].split("</tr>")[0]
    assert 'data-paused="yes"' in billing
    assert 'data-role="paused">paused' in billing
    assert 'data-role="paused" hidden' in emails
    assert re.search(r'data-count="pending" href="[^"]+">2<', emails)
    assert re.search(r'data-count="dead" href="[^"]+">1<', billing)
    assert 'data-total="pending">3<' in page
    assert 'data-total="dead">1<' in page
    assert 'data-action="resume"' in billing
    assert 'data-since="' in emails


async def test_the_job_list_filters_and_pages(relay: Relay) -> None:
    await relay.open_async()
    batch = [NewJob(JobKind.EXTERNAL, {"n": n}, queue=f"q{n % 2}", tags=(f"tag{n}",)) for n in range(120)]
    await relay.storage.job_insert_many(batch)
    dead = await jobs.dead(relay, queue="q1", tags=("needle",))
    async with dashboard(relay) as client:
        first = (await client.get("/ui/jobs")).text
        older = re.search(r'rel="next" href="([^"]+)"', first)
        assert older is not None
        second = (await client.get(older.group(1).replace("&amp;", "&"))).text
        ids_first, ids_second = ROW.findall(first), ROW.findall(second)
        assert len(ids_first) == len(ids_second) == 50
        assert not set(ids_first) & set(ids_second)
        assert ids_first[0] == dead.id  # newest first

        q0 = ROW.findall((await client.get("/ui/jobs?queue=q0&limit=100")).text)
        assert len(q0) == 60
        assert ROW.findall((await client.get("/ui/jobs?state=dead")).text) == [dead.id]
        assert ROW.findall((await client.get("/ui/jobs?text=needle")).text) == [dead.id]
        assert ROW.findall((await client.get(f"/ui/jobs?text={dead.id[-12:]}")).text) == [dead.id]
        assert len(ROW.findall((await client.get("/ui/jobs?text=tag11")).text)) == 11  # tag11, tag110-119

        assert (await client.get("/ui/jobs?state=sleeping")).status_code == 422
        assert (await client.get("/ui/jobs?cursor=not-a-cursor")).status_code == 422


async def test_a_job_page_shows_attempts_logs_and_its_chain(relay: Relay) -> None:
    child_doc = NewJob(JobKind.EXTERNAL, {"step": "notify"}, queue="notify")
    parent = await jobs.insert(relay, queue="imports", on_success=child_doc, tags=("nightly",))
    [claimed] = await relay.storage.job_claim(ClaimParams(["imports"], "w", 1, kinds=(JobKind.EXTERNAL,)))
    await relay.storage.job_finish_many(
        [FinishItem(parent.id, claimed.lease_token or "", Outcome.COMPLETED, result={"rows": 3})]
    )
    [child] = (await relay.storage.job_list(ListParams(queues=["notify"]))).jobs
    assert child.parent_id == parent.id
    broken = await jobs.dead(relay, error="ExitCode", logs=("line one", "line two"))
    async with dashboard(relay) as client:
        page = (await client.get(f"/ui/jobs/{quote(parent.id)}")).text
        assert f'href="/ui/jobs/{quote(child.id, safe="")}"' in page
        assert "&#34;rows&#34;: 3" in page
        assert 'data-action="retry"' in page
        child_page = (await client.get(f"/ui/jobs/{quote(child.id)}")).text
        assert f'href="/ui/jobs/{quote(parent.id, safe="")}"' in child_page
        dead_page = (await client.get(f"/ui/jobs/{quote(broken.id)}")).text
        assert "line one" in dead_page
        assert "line two" in dead_page
        assert "(exit code 3)" in dead_page
        assert re.search(r'data-action="retry"(?! hidden)', dead_page)
        assert re.search(r'data-action="cancel" hidden', dead_page)
        data = (await client.get(f"/ui/api/job?id={quote(broken.id)}")).json()
        assert data["state"] == "dead"
        assert data["can_retry"]
        assert not data["can_cancel"]
        assert data["attempts"][0]["error"]["exit_code"] == 3
        logs = (await client.get(f"/ui/api/logs?id={quote(broken.id)}&after_seq=1")).json()
        assert [line["text"] for line in logs["lines"]] == ["line two"]
        assert (await client.get("/ui/jobs/no-such-job")).status_code == 404


async def test_bulk_dlq_actions_ask_for_a_confirmation_first(relay: Relay) -> None:
    for queue in ("emails", "emails", "billing"):
        await jobs.dead(relay, queue=queue)
    async with dashboard(relay) as client:
        asked = await post_form(
            client, "/ui/actions/purge", {"queue": "emails", "next": "/ui/dlq?queue=emails"}
        )
        assert asked.status_code == 200
        assert "Purge 2 dead jobs of emails?" in asked.text
        assert len((await relay.storage.job_list(ListParams(states=[JobState.DEAD]))).jobs) == 3
        done = await post_form(
            client, "/ui/actions/purge", {"queue": "emails", "confirm": "yes", "next": "/ui/dlq"}
        )
        assert done.headers["location"] == "/ui/dlq?notice=purged&n=2"
        assert "2 dead job(s) purged." in (await client.get(done.headers["location"])).text
        asked = await post_form(client, "/ui/actions/requeue-all", {})
        assert "Requeue 1 dead job?" in asked.text
        done = await post_form(client, "/ui/actions/requeue-all", {"confirm": "yes"})
        assert done.headers["location"] == "/ui/dlq?notice=requeued-all&n=1"
        assert (await relay.storage.job_list(ListParams(states=[JobState.DEAD]))).jobs == []


async def test_pause_and_resume_a_queue(relay: Relay) -> None:
    await jobs.insert(relay, queue="emails")
    async with dashboard(relay) as client:
        assert (await post_form(client, "/ui/actions/pause", {"queue": "emails"})).status_code == 303
        assert [q.paused for q in await relay.storage.queue_list()] == [True]
        assert (await post_form(client, "/ui/actions/resume", {"queue": "emails"})).status_code == 303
        assert [q.paused for q in await relay.storage.queue_list()] == [False]
        assert (await post_form(client, "/ui/actions/pause", {"queue": "bad name!"})).status_code == 422


class CountingStorage:
    """A storage that records every listing: how many jobs each page asked for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.limits: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def job_list(self, p: ListParams) -> Any:
        self.limits.append(p.limit)
        return await self.inner.job_list(p)


async def test_no_page_reads_more_than_a_page_of_jobs() -> None:
    storage = CountingStorage(storage_from_url("memory://"))
    relay = Relay("memory://", storage=storage)
    await relay.open_async()
    for start in range(0, 20_000, 5_000):
        await storage.job_insert_many(
            [NewJob(JobKind.EXTERNAL, {"n": n}, queue=f"q{n % 7}") for n in range(start, start + 5_000)]
        )
    chained = await jobs.insert(relay, queue="q1", on_success=NewJob(JobKind.EXTERNAL, {}, queue="q2"))
    async with dashboard(relay) as client:
        for path in (
            "/",
            "/ui/jobs",
            "/ui/jobs?limit=200&state=pending",
            "/ui/dlq",
            "/ui/workers",
            f"/ui/jobs/{chained.id}",
            "/ui/queues/q1",
            "/ui/schedules",
        ):
            storage.limits.clear()
            assert (await client.get(path)).status_code == 200, path
            assert len(storage.limits) <= 5, (path, storage.limits)
            assert max(storage.limits, default=0) <= 200, (path, storage.limits)
