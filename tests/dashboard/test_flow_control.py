"""Flow control on the dashboard, through HTTP: a queue's page (its counts, limits and what they use,
the limits form), the schedules page with pause and resume, and the job page's new fields."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from urllib.parse import quote

import pytest

from relay.app import Relay
from relay.errors import InvalidLimitError
from relay.jobs.cron import parse_spec
from relay.jobs.document import parse_job_document
from relay.jobs.limits import parse_limits
from relay.runtime.maintenance.cron import CronScheduler
from relay.runtime.schedules import define
from relay.server import ServerSettings, mint_token
from relay.server.dashboard.render import when
from relay.storage.params import ClaimParams
from relay.types import NO_LIMITS, JobKind, NewJob, OrderingDead, QueueLimits, RateLimit, UniqueWhile

from . import jobs
from .conftest import SECRET, dashboard, post_form

AUTH = ServerSettings(events_interval=0, jwt_secret=SECRET)
REPORT = parse_job_document({"type": "shell", "queue": "reports", "payload": {"command": "report.sh --full"}})
SYNC = NewJob(JobKind.TASK, {"task": "crm.sync", "args": [7], "kwargs": {}}, queue="emails")


def limit_of(page: str, name: str) -> str:
    found = re.search(rf'data-limit="{name}">([^<]*)<', page)
    assert found, f"no {name} on the page"
    return unescape(found.group(1))


def field_errors(page: str) -> dict[str, str]:
    return {name: unescape(text) for name, text in re.findall(r'data-error="(\w+)">([^<]*)<', page)}


def input_value(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no input {name}"
    return unescape(found.group(1))


def row_of(page: str, marker: str) -> str:
    return page[page.index(marker) :].split("</tr>")[0]


def limits_form(**fields: str) -> dict[str, str]:
    blank = dict.fromkeys(("rate", "burst", "key_rate", "key_burst", "concurrency", "key_concurrency"), "")
    return {"queue": "emails", "next": "/ui/queues/emails", "ordering_dead": "continue"} | blank | fields


async def test_a_queue_page_shows_its_counts_limits_and_what_they_use(relay: Relay) -> None:
    for _ in range(5):
        await jobs.insert(relay, queue="emails")
    await jobs.dead(relay, queue="emails")
    limits = QueueLimits(
        rate=RateLimit(1 / 60, 20),  # slow enough that no token comes back during the test
        key_rate=RateLimit(10 / 60, 10),
        concurrency=5,
        key_concurrency=1,
        ordering_dead=OrderingDead.BLOCK,
    )
    await relay.storage.queue_limits_set("emails", limits)
    claimed = await relay.storage.job_claim(ClaimParams(["emails"], "w", 3, kinds=(JobKind.EXTERNAL,)))
    assert len(claimed) == 3
    async with dashboard(relay) as client:
        page = (await client.get("/ui/queues/emails")).text
        assert re.search(r'data-count="running">3<', page)
        assert re.search(r'data-count="pending">2<', page)
        assert re.search(r'data-count="dead">1<', page)
        assert 'href="/ui/jobs?queue=emails&amp;state=running"' in page
        assert limit_of(page, "rate") == "1/m, bursts of 20"
        assert limit_of(page, "tokens") == "17 of 20"  # three claims took three tokens
        assert limit_of(page, "key_rate") == "10/m per rate key, bursts of 10"
        assert limit_of(page, "concurrency") == "3 of 5 slots in use"
        assert limit_of(page, "key_concurrency") == "at most 1 running per concurrency key"
        assert limit_of(page, "ordering_dead").startswith("block: ")
        # The form shows the limits as one would type them.
        assert [input_value(page, n) for n in ("rate", "burst", "key_rate", "key_burst")] == [
            "1/m",
            "20",
            "10/m",
            "10",
        ]
        assert [input_value(page, n) for n in ("concurrency", "key_concurrency")] == ["5", "1"]
        assert re.search(r'<option value="block" selected>', page)

        overview = (await client.get("/")).text
        row = row_of(overview, 'data-queue="emails"')
        assert 'href="/ui/queues/emails"' in row
        cell = re.sub(r"<[^>]+>", "", row_of(row, 'data-role="limits"').split("</td>")[0].split(">", 1)[1])
        assert unescape(cell) == "1/m · 10/m per key · 3/5 running · 1 running per key"
        data = (await client.get("/ui/api/queue?name=emails")).json()
        assert data["queue"]["limits"]["concurrency"] == 5
        assert data["view"]["concurrency"] == "3 of 5 slots in use"

        paused = await post_form(
            client, "/ui/actions/pause", {"queue": "emails", "next": "/ui/queues/emails"}
        )
        assert paused.headers["location"] == "/ui/queues/emails?notice=paused"
        page = (await client.get(paused.headers["location"])).text
        assert 'data-role="paused">paused' in page
        assert re.search(r'data-action="resume"(?! hidden)', page)
        assert [q.paused for q in await relay.storage.queue_list()] == [True]
        resumed = await post_form(
            client, "/ui/actions/resume", {"queue": "emails", "next": "/ui/queues/emails"}
        )
        assert resumed.headers["location"] == "/ui/queues/emails?notice=resumed"
        assert [q.paused for q in await relay.storage.queue_list()] == [False]

        # A queue storage does not know yet (a schedule's, before its first tick) is empty.
        empty = await client.get("/ui/queues/not-yet")
        assert empty.status_code == 200
        assert "This queue holds no job." in empty.text
        assert re.search(r'data-count="pending">0<', empty.text)
        assert (await client.get("/ui/queues/no%20such%20queue!")).status_code == 404


async def test_a_queue_without_limits_says_so(relay: Relay) -> None:
    await jobs.insert(relay, queue="emails")
    async with dashboard(relay) as client:
        page = (await client.get("/ui/queues/emails")).text
        assert limit_of(page, "rate") == "no limit"
        assert limit_of(page, "tokens") == "—"
        assert limit_of(page, "concurrency") == "no limit (0 running)"
        assert input_value(page, "rate") == ""
        overview = (await client.get("/")).text
        assert '<span class="muted">—</span></td>' in row_of(overview, 'data-role="limits"')


async def test_the_limits_form_stores_what_it_is_given(relay: Relay) -> None:
    await jobs.insert(relay, queue="emails")
    async with dashboard(relay) as client:
        done = await post_form(
            client, "/ui/actions/limits", limits_form(rate="50/s", concurrency="3", ordering_dead="block")
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/ui/queues/emails?notice=limits-set"
        [queue] = await relay.storage.queue_list()
        assert queue.limits == QueueLimits(
            rate=RateLimit(50.0, 50), concurrency=3, ordering_dead=OrderingDead.BLOCK
        )
        page = (await client.get(done.headers["location"])).text
        assert "The queue&#39;s limits are saved" in page
        assert limit_of(page, "rate") == "50/s, bursts of 50"
        assert limit_of(page, "concurrency") == "0 of 3 slots in use"

        every = limits_form(
            rate=" 5/30s ", burst="4", key_rate="10/m", key_burst="2", concurrency="8", key_concurrency="1"
        )
        assert (await post_form(client, "/ui/actions/limits", every)).status_code == 303
        [queue] = await relay.storage.queue_list()
        assert queue.limits == QueueLimits(
            rate=RateLimit(5 / 30, 4), key_rate=RateLimit(10 / 60, 2), concurrency=8, key_concurrency=1
        )

        # Every field empty: no limit at all.
        assert (await post_form(client, "/ui/actions/limits", limits_form())).status_code == 303
        [queue] = await relay.storage.queue_list()
        assert queue.limits == NO_LIMITS


def _message(doc: dict[str, object]) -> str:
    with pytest.raises(InvalidLimitError) as refused:
        parse_limits(doc)
    return refused.value.message


async def test_invalid_limits_are_refused_next_to_their_field_and_nothing_is_stored(relay: Relay) -> None:
    await jobs.insert(relay, queue="emails")
    before = QueueLimits(rate=RateLimit(10.0, 10), concurrency=2)
    await relay.storage.queue_limits_set("emails", before)
    async with dashboard(relay) as client:
        wrong = limits_form(
            rate="fast",
            burst="20",
            key_burst="5",
            concurrency="-2",
            key_concurrency="1.5",
            ordering_dead="sideways",
        )
        refused = await post_form(client, "/ui/actions/limits", wrong)
        assert refused.status_code == 422
        assert field_errors(refused.text) == {
            "rate": _message({"rate": "fast"}),
            "key_burst": _message({"key_burst": 5}),  # "a key_burst needs a key_rate"
            "concurrency": _message({"concurrency": -2}),
            "key_concurrency": _message({"key_concurrency": "1.5"}),
            "ordering_dead": _message({"ordering_dead": "sideways"}),
        }  # and none for burst: it is fine, only its rate is not
        assert "Nothing was saved" in refused.text
        assert input_value(refused.text, "rate") == "fast"  # what was typed, to correct it
        assert input_value(refused.text, "burst") == "20"
        assert 'aria-invalid="true" aria-describedby="error-rate"' in refused.text
        assert limit_of(refused.text, "rate") == "10/s, bursts of 10"  # what is stored is shown as is

        zero_burst = await post_form(client, "/ui/actions/limits", limits_form(rate="10/s", burst="0"))
        assert zero_burst.status_code == 422
        assert field_errors(zero_burst.text) == {"burst": _message({"rate": "10/s", "burst": 0})}
        lone_bursts = limits_form(burst="5", key_burst="5", key_concurrency="0")
        refused = await post_form(client, "/ui/actions/limits", lone_bursts)
        assert field_errors(refused.text) == {
            "burst": _message({"burst": 5}),  # "a burst needs a rate"
            "key_burst": _message({"key_burst": 5}),
            "key_concurrency": _message({"key_concurrency": 0}),
        }
        [queue] = await relay.storage.queue_list()
        assert queue.limits == before
        assert (
            await post_form(client, "/ui/actions/limits", limits_form(queue="bad name!"))
        ).status_code == 422


async def test_only_admin_on_the_queue_may_change_its_limits(relay: Relay) -> None:
    for queue in ("emails", "billing"):
        await jobs.insert(relay, queue=queue)
    async with dashboard(relay, AUTH) as client:
        client.cookies.set("relay_token", mint_token(SECRET, "read:* admin:billing", "1h"))
        page = (await client.get("/ui/queues/emails")).text
        assert 'id="limits-form"' not in page
        assert "needs the scope <code>admin:emails</code>" in page
        refused = await post_form(client, "/ui/actions/limits", limits_form(rate="1/s"))
        assert refused.status_code == 403
        assert "admin:emails" in refused.text
        assert {q.name: q.limits for q in await relay.storage.queue_list()}["emails"] == NO_LIMITS
        assert 'id="limits-form"' in (await client.get("/ui/queues/billing")).text

        client.cookies.set("relay_token", mint_token(SECRET, "read:billing", "1h"))
        assert (await client.get("/ui/queues/emails")).status_code == 403
        assert (await client.get("/ui/api/queue?name=emails")).status_code == 403

        client.cookies.set("relay_token", mint_token(SECRET, "read:* admin:emails", "1h"))
        assert (await post_form(client, "/ui/actions/limits", limits_form(rate="1/s"))).status_code == 303
        limits = {q.name: q.limits for q in await relay.storage.queue_list()}
        assert limits["emails"] == QueueLimits(rate=RateLimit(1.0, 1))


async def test_the_schedules_page_shows_each_schedule_and_its_runs(relay: Relay) -> None:
    await jobs.schedule(relay, "nightly-report", "0 3 * * *", REPORT, timezone="Europe/Berlin")
    # Due an hour ago: the scheduler fires its latest tick, so that it has a last run and a job.
    now = relay.clock.now()
    await relay.storage.schedule_upsert(define("crm-sync", "every 5m", SYNC).params(now - timedelta(hours=1)))
    assert await CronScheduler(relay.storage).run_once() == 1
    sync = await relay.storage.schedule_get("crm-sync")
    nightly = await relay.storage.schedule_get("nightly-report")
    assert sync is not None
    assert nightly is not None
    assert sync.last_job_id is not None
    async with dashboard(relay) as client:
        page = (await client.get("/ui/schedules")).text
        assert 'aria-current="page">Schedules<' in page
        row = row_of(page, 'id="schedule-nightly-report"')  # the anchor of the links to it
        assert 'data-schedule="nightly-report"' in row
        assert parse_spec("0 3 * * *", "Europe/Berlin").describe() in row  # "At 03:00 every day"
        assert "<code>0 3 * * *</code> · Europe/Berlin" in row
        assert '<a href="/ui/queues/reports">reports</a> · shell' in row
        assert 'title="report.sh --full">report.sh --full<' in row
        assert nightly.next_run_at is not None
        assert f'title="{when(nightly.next_run_at)}" data-until>in ' in row
        assert 'data-role="last"><span class="muted">—</span>' in row

        row = row_of(page, 'data-schedule="crm-sync"')
        assert "every 5m" in row
        assert "crm.sync(7)" in row
        assert f'href="/ui/jobs/{quote(sync.last_job_id, safe="")}"' in row
        assert sync.last_run_at is not None
        assert f'title="{when(sync.last_run_at)}" data-age>' in row

        data = (await client.get("/ui/api/schedules")).json()
        assert [s["name"] for s in data["schedules"]] == ["crm-sync", "nightly-report"]
        assert data["schedules"][0]["last_job_id"] == sync.last_job_id

        # The tick's job links back to its schedule; the queue page lists the schedules that feed it.
        job_page = (await client.get(f"/ui/jobs/{quote(sync.last_job_id, safe='')}")).text
        assert 'href="/ui/schedules#schedule-crm-sync">crm-sync</a>' in job_page
        assert f"its tick of {when(sync.last_run_at)}" in job_page
        queue_page = (await client.get("/ui/queues/reports")).text
        assert 'href="/ui/schedules#schedule-nightly-report">nightly-report</a>' in queue_page


async def test_pause_and_resume_a_schedule(relay: Relay) -> None:
    await relay.open_async()
    stale = relay.clock.now() - timedelta(days=1)
    await relay.storage.schedule_upsert(define("nightly", "0 3 * * *", REPORT).params(stale))
    async with dashboard(relay) as client:
        fields = {"schedule": "nightly", "next": "/ui/schedules#schedule-nightly"}
        paused = await post_form(client, "/ui/actions/schedule-pause", fields)
        assert paused.status_code == 303
        assert paused.headers["location"] == "/ui/schedules?notice=schedule-paused#schedule-nightly"
        found = await relay.storage.schedule_get("nightly")
        assert found is not None
        assert found.paused
        page = (await client.get("/ui/schedules")).text
        row = row_of(page, 'data-schedule="nightly"')
        assert 'data-role="paused">paused' in row
        assert re.search(r'data-action="schedule-resume"(?! hidden)', row)
        assert re.search(r'data-action="schedule-pause" hidden', row)

        before = relay.clock.now()
        resumed = await post_form(client, "/ui/actions/schedule-resume", fields)
        assert resumed.headers["location"] == "/ui/schedules?notice=schedule-resumed#schedule-nightly"
        found = await relay.storage.schedule_get("nightly")
        assert found is not None
        assert not found.paused
        # Resumed from the next tick after now: the ticks it missed while paused are not run.
        assert found.next_run_at == parse_spec("0 3 * * *", "UTC").next_after(before)
        missing = await post_form(client, "/ui/actions/schedule-pause", {"schedule": "nope"})
        assert missing.status_code == 404


async def test_schedules_follow_the_scopes_of_their_queue(relay: Relay) -> None:
    await jobs.schedule(relay, "nightly-report", "0 3 * * *", REPORT)
    await jobs.schedule(relay, "crm-sync", "every 5m", SYNC)
    async with dashboard(relay, AUTH) as client:
        client.cookies.set("relay_token", mint_token(SECRET, "read:emails", "1h"))
        page = (await client.get("/ui/schedules")).text
        assert 'data-schedule="crm-sync"' in page
        assert "nightly-report" not in page
        assert 'data-action="schedule-pause"' not in page
        assert [s["name"] for s in (await client.get("/ui/api/schedules")).json()["schedules"]] == [
            "crm-sync"
        ]
        # Another queue's schedule is not found; one it may read but not administer is forbidden.
        hidden = await post_form(client, "/ui/actions/schedule-pause", {"schedule": "nightly-report"})
        assert hidden.status_code == 404
        refused = await post_form(client, "/ui/actions/schedule-pause", {"schedule": "crm-sync"})
        assert refused.status_code == 403
        assert "admin:emails" in refused.text

        client.cookies.set("relay_token", mint_token(SECRET, "read:* admin:reports", "1h"))
        page = (await client.get("/ui/schedules")).text
        assert 'data-action="schedule-pause"' in row_of(page, 'data-schedule="nightly-report"')
        assert 'data-action="schedule-pause"' not in row_of(page, 'data-schedule="crm-sync"')
        done = await post_form(client, "/ui/actions/schedule-pause", {"schedule": "nightly-report"})
        assert done.status_code == 303
        states = {s.name: s.paused for s in await relay.storage.schedule_list()}
        assert states == {"nightly-report": True, "crm-sync": False}


async def test_a_job_page_shows_its_flow_control_fields(relay: Relay) -> None:
    first = await jobs.insert(
        relay,
        queue="sync",
        rate_key="customer-42",
        concurrency_key="account-7",
        ordering_key="order-1",
        idempotency_key="sync-42",
        unique_for=3600.0,
        unique_while=UniqueWhile.ACTIVE,
    )
    second = await jobs.insert(relay, queue="sync", ordering_key="order-1")
    plain = await jobs.insert(relay, queue="sync")
    assert not first.held
    assert second.held
    assert first.unique_until is not None
    async with dashboard(relay) as client:
        page = (await client.get(f"/ui/jobs/{quote(first.id)}")).text
        assert '<dt>Rate key</dt><dd class="mono">customer-42</dd>' in page
        assert '<dt>Concurrency key</dt><dd class="mono">account-7</dd>' in page
        assert '<span class="mono">order-1</span>' in page
        assert 'data-role="held" hidden>' in page
        assert f"<dt>Unique until</dt><dd>{when(first.unique_until)}</dd>" in page
        assert "<dt>Unique while</dt><dd>the job is pending, scheduled, running or failed" in page
        held = (await client.get(f"/ui/jobs/{quote(second.id)}")).text
        assert 'data-role="held">held: waits for an earlier job of its ordering key<' in held
        assert (await client.get(f"/ui/api/job?id={quote(second.id)}")).json()["held"] is True
        bare = (await client.get(f"/ui/jobs/{quote(plain.id)}")).text
        for label in (
            "Rate key",
            "Concurrency key",
            "Ordering key",
            "Unique until",
            "Unique while",
            "Schedule",
        ):
            assert f"<dt>{label}</dt>" not in bare
