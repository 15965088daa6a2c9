"""The change feed, poll by poll (no background task): what it reports, and how clients resume."""

from __future__ import annotations

from relay.app import Relay
from relay.server.feed import ChangeFeed
from relay.storage.params import ClaimParams, FinishItem, PurgeParams
from relay.types import Job, JobState, Outcome


async def test_poll_by_poll(relay: Relay) -> None:
    await relay.open_async()
    observed: list[tuple[str, JobState | None, int | None]] = []

    def observer(job: Job, previous: JobState | None, attempt: int | None) -> None:
        observed.append((job.state.value, previous, attempt))

    feed = ChangeFeed(relay.storage, 1.0, observer=observer, buffer=4)
    await relay.storage.job_insert_many([relay.shell_job("true", max_retries=0)])
    assert await feed.poll() == []  # the baseline
    [inserted] = await relay.storage.job_insert_many([relay.shell_job("false", max_retries=0)])
    events = await feed.poll()
    assert [(e.type, e.data.get("state")) for e in events] == [("queue", None), ("job", "pending")]
    assert events[1].data["id"] == inserted.job.id
    jobs = await relay.storage.job_claim(ClaimParams(["default"], "w", 2))
    finished = [FinishItem(j.id, j.lease_token or "", Outcome.FAILED) for j in jobs]
    await relay.storage.job_finish_many(finished)
    dead = [e.data for e in await feed.poll() if e.type == "job"]
    assert [(d["state"], d["previous_state"], d["attempt"]) for d in dead] == [("dead", "pending", 1)] * 2
    assert observed == [("pending", None, None), ("dead", JobState.PENDING, 0), ("dead", JobState.PENDING, 0)]
    await relay.storage.job_purge(PurgeParams())
    assert [e.type for e in await feed.poll()] == ["queue"]  # final jobs are not watched once seen
    assert feed.last_seq == 6


async def test_resume_points(relay: Relay) -> None:
    await relay.open_async()
    feed = ChangeFeed(relay.storage, 1.0, buffer=2)
    await feed.poll()
    assert feed.resume_point(None) == 0  # no cursor: from now on
    for _ in range(3):
        await relay.storage.job_insert_many([relay.shell_job("true")])
        await feed.poll()
    newest = feed.after(0)
    assert len(newest) == 2  # the buffer keeps the last two
    assert feed.resume_point(feed.event_id(newest[0])) == newest[0].seq
    assert feed.resume_point(f"{feed.epoch}-1") is None  # gone from the buffer
    assert feed.resume_point(f"{feed.epoch}-999") is None  # from the future
    assert feed.resume_point("another-server-3") is None
    assert [e.seq for e in feed.after(newest[0].seq)] == [newest[1].seq]
