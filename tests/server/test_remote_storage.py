"""The CLI's storage adapter over HTTP (relay.cli.remote): the same
answers as the storage itself, through the server."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from relay.app import Relay
from relay.cli.remote import RemoteStorage
from relay.client import AsyncRelayClient
from relay.clock import ManualClock
from relay.errors import ScheduleNotFoundError
from relay.jobs.limits import parse_limits
from relay.runtime.schedules import define
from relay.server import ServerSettings, create_app
from relay.storage.params import (
    ClaimParams,
    FinishItem,
    ListParams,
    LogAppend,
    LogParams,
    PurgeParams,
    RequeueParams,
)
from relay.types import NO_LIMITS, CatchUp, JobState, NewJob, Outcome


async def test_remote_storage_matches_storage(relay: Relay) -> None:
    app = create_app(relay, ServerSettings(events_interval=0))
    async with app.router.lifespan_context(app):
        client = AsyncRelayClient("http://127.0.0.1:4000", transport=httpx.ASGITransport(app=app))
        remote = RemoteStorage(client)
        await remote.open()
        inserted = await remote.job_insert_many(
            [relay.shell_job("echo hi", max_retries=0), relay.shell_job(["ls", "-l"], queue="other")]
        )
        assert [r.created for r in inserted] == [True, True]
        first = inserted[0].job
        assert await remote.job_get(first.id) == await relay.storage.job_get(first.id)
        assert await remote.job_get("missing") is None
        params = ListParams(states=[JobState.PENDING], limit=1)
        assert await remote.job_list(params) == await relay.storage.job_list(params)
        await relay.storage.job_log_append([LogAppend(first.id, 1, "stdout", "hi\n")])
        assert await remote.job_logs(LogParams(first.id)) == await relay.storage.job_logs(LogParams(first.id))
        [job] = await relay.storage.job_claim(ClaimParams(["default"], "w", 1))
        await relay.storage.job_finish_many([FinishItem(job.id, job.lease_token or "", Outcome.FAILED)])
        [requeued] = await remote.job_requeue(RequeueParams(states=(JobState.DEAD,)))
        assert requeued.state is JobState.PENDING
        assert (await remote.job_cancel(first.id)).state is JobState.CANCELLED
        assert (await remote.job_requeue(RequeueParams(job_id=first.id)))[0].state is JobState.PENDING
        assert await remote.job_purge(PurgeParams()) == 0
        await remote.queue_pause("other")
        assert await remote.queue_list() == await relay.storage.queue_list()
        await remote.queue_resume("other")
        assert await remote.worker_list() == []
        await remote.close()


async def test_remote_storage_flow_control_matches_storage(flow_relay: Relay, clock: ManualClock) -> None:
    app = create_app(flow_relay, ServerSettings(events_interval=0))
    storage = flow_relay.storage
    async with app.router.lifespan_context(app):
        client = AsyncRelayClient("http://127.0.0.1:4000", transport=httpx.ASGITransport(app=app))
        remote = RemoteStorage(client)
        await remote.open()
        limits = parse_limits({"rate": "5/30s", "burst": 3, "key_concurrency": 1, "ordering_dead": "block"})
        await remote.queue_limits_set("emails", limits)
        [queue] = await remote.queue_list()
        assert queue == (await storage.queue_list())[0]
        assert (queue.limits, queue.tokens) == (limits, 3.0)
        await remote.queue_limits_set("emails", NO_LIMITS)
        assert [q.limits for q in await storage.queue_list()] == [NO_LIMITS]

        template = relay_job(flow_relay)
        nightly = define("nightly", "0 3 * * *", template, timezone="Europe/Berlin", catch_up="skip")
        # What the server stores is what storage itself would: the remote next_run_at is not sent.
        params = replace(nightly.params(clock.now()), next_run_at=None)
        saved = await remote.schedule_upsert(params)
        assert saved == await storage.schedule_get("nightly")
        assert (saved.job, saved.catch_up) == (nightly.job, CatchUp.SKIP)
        assert saved.next_run_at == nightly.spec.next_after(clock.now())
        assert await remote.schedule_get("nightly") == saved
        assert await remote.schedule_get("missing") is None
        assert await remote.schedule_list() == await storage.schedule_list() == [saved]

        paused = await remote.schedule_set_paused("nightly", True, None)
        assert paused.paused
        assert paused == await storage.schedule_get("nightly")
        clock.advance(86_400)
        resumed = await remote.schedule_set_paused("nightly", False, None)
        assert not resumed.paused
        assert resumed.next_run_at == nightly.spec.next_after(clock.now())  # the server's, not the argument
        with pytest.raises(ScheduleNotFoundError):
            await remote.schedule_set_paused("missing", True, None)
        assert await remote.schedule_remove("nightly") is True
        assert await remote.schedule_remove("nightly") is False
        assert await storage.schedule_list() == []
        await remote.close()


def relay_job(relay: Relay) -> NewJob:
    """A template that uses every part of a job document the remote form must carry."""
    return replace(
        relay.shell_job(["/usr/local/bin/report.sh", "--full"], queue="reports", max_retries=2, priority=3),
        tags=("nightly",),
        metadata={"team": "data"},
        rate_key="reports",
        concurrency_key="db",
        ordering_key="report",
        on_success=relay.shell_job("/usr/local/bin/notify.sh", queue="reports"),
    )
