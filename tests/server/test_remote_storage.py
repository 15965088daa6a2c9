"""The CLI's storage adapter over HTTP (relay.cli.remote): the same
answers as the storage itself, through the server."""

from __future__ import annotations

import httpx

from relay.app import Relay
from relay.cli.remote import RemoteStorage
from relay.client import AsyncRelayClient
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
from relay.types import JobState, Outcome


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
