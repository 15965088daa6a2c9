"""job_log_append and job_logs (semantics.md rules 5 and 15)."""

from __future__ import annotations

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.storage.params import LogAppend, LogParams
from relay.types import LogLine

from .helpers import T0, insert_one, seconds


def texts(lines: list[LogLine]) -> list[str]:
    return [line.text for line in lines]


async def test_lines_are_kept_per_attempt_in_append_order(storage: Storage, clock: ManualClock) -> None:
    job = await insert_one(storage)
    other = await insert_one(storage)
    await storage.job_log_append(
        [
            LogAppend(job.id, 1, "stdout", "one"),
            LogAppend(job.id, 1, "stderr", "two"),
            LogAppend(other.id, 1, "stdout", "other job"),
        ]
    )
    clock.advance(5)
    await storage.job_log_append([LogAppend(job.id, 1, "log", "three")])
    clock.advance(5)
    await storage.job_log_append(
        [LogAppend(job.id, 2, "stdout", "four"), LogAppend(job.id, 2, "stdout", "five")]
    )

    lines = await storage.job_logs(LogParams(job.id))
    assert texts(lines) == ["one", "two", "three", "four", "five"]
    assert [line.attempt for line in lines] == [1, 1, 1, 2, 2]
    assert [line.stream for line in lines] == ["stdout", "stderr", "log", "stdout", "stdout"]
    assert {line.job_id for line in lines} == {job.id}
    seqs = [line.seq for line in lines]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 5
    assert [line.at for line in lines] == [T0, T0, T0 + seconds(5), T0 + seconds(10), T0 + seconds(10)]
    assert texts(await storage.job_logs(LogParams(other.id))) == ["other job"]


async def test_filter_by_attempt_after_seq_and_limit(storage: Storage) -> None:
    job = await insert_one(storage)
    await storage.job_log_append([LogAppend(job.id, 1, "stdout", f"a1-{n}") for n in range(3)])
    await storage.job_log_append([LogAppend(job.id, 2, "stdout", f"a2-{n}") for n in range(3)])

    assert texts(await storage.job_logs(LogParams(job.id, attempt=2))) == ["a2-0", "a2-1", "a2-2"]
    assert texts(await storage.job_logs(LogParams(job.id, attempt=3))) == []

    every = await storage.job_logs(LogParams(job.id))
    after = every[1].seq
    assert texts(await storage.job_logs(LogParams(job.id, after_seq=after))) == texts(every[2:])
    assert texts(await storage.job_logs(LogParams(job.id, attempt=1, after_seq=after))) == ["a1-2"]
    assert texts(await storage.job_logs(LogParams(job.id, limit=2))) == ["a1-0", "a1-1"]
    assert await storage.job_logs(LogParams(job.id, after_seq=every[-1].seq)) == []


async def test_follow_reads_only_new_lines(storage: Storage) -> None:
    job = await insert_one(storage)
    await storage.job_log_append([LogAppend(job.id, 1, "stdout", "first")])
    seen = await storage.job_logs(LogParams(job.id))
    await storage.job_log_append([LogAppend(job.id, 1, "stdout", "second")])
    new = await storage.job_logs(LogParams(job.id, after_seq=seen[-1].seq))
    assert texts(new) == ["second"]
    assert new[0].seq > seen[-1].seq


async def test_logs_of_a_job_without_lines(storage: Storage) -> None:
    job = await insert_one(storage)
    assert await storage.job_logs(LogParams(job.id)) == []
