"""job_list (semantics.md rule 11): newest first, filters combined with AND, a cursor stable under inserts."""

from __future__ import annotations

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.storage.params import ListParams
from relay.types import JobKind, JobState

from .helpers import insert, insert_one, job_in_state, list_all, new_job


async def test_paging_is_newest_first_and_stable_while_jobs_arrive(storage: Storage) -> None:
    ids = [f"job-{n:02d}" for n in range(25)]
    for job_id in ids:
        await insert_one(storage, id=job_id)
    newest_first = ids[::-1]

    page1 = await storage.job_list(ListParams(limit=10))
    assert [j.id for j in page1.jobs] == newest_first[:10]
    assert page1.next_cursor is not None
    await insert(storage, new_job(id="late-1"), new_job(id="late-2"))  # between pages

    page2 = await storage.job_list(ListParams(limit=10, cursor=page1.next_cursor))
    assert [j.id for j in page2.jobs] == newest_first[10:20]
    assert page2.next_cursor is not None
    await insert_one(storage, id="late-3")

    page3 = await storage.job_list(ListParams(limit=10, cursor=page2.next_cursor))
    assert [j.id for j in page3.jobs] == newest_first[20:]
    assert page3.next_cursor is None

    again = await storage.job_list(ListParams(limit=10))
    assert [j.id for j in again.jobs][:3] == ["late-3", "late-2", "late-1"]


async def test_no_cursor_when_the_last_page_is_exactly_full(storage: Storage) -> None:
    await insert(storage, *(new_job(id=f"job-{n:02d}") for n in range(20)))
    page1 = await storage.job_list(ListParams(limit=10))
    page2 = await storage.job_list(ListParams(limit=10, cursor=page1.next_cursor))
    assert [j.id for j in page2.jobs] == [f"job-{n:02d}" for n in range(9, -1, -1)]
    assert page2.next_cursor is None


async def test_list_returns_jobs_as_stored(storage: Storage) -> None:
    job = await insert_one(storage, tags=("a",), metadata={"k": 1})
    page = await storage.job_list(ListParams())
    assert page.jobs == [job]
    assert page.next_cursor is None


async def test_filter_by_state_queue_and_kind(storage: Storage, clock: ManualClock) -> None:
    dead = await job_in_state(storage, clock, JobState.DEAD, queue="a")
    completed = await job_in_state(storage, clock, JobState.COMPLETED, queue="a")
    pending_a = await insert_one(storage, queue="a")
    pending_b = await insert_one(storage, queue="b")
    external_b = await insert_one(storage, queue="b", kind=JobKind.EXTERNAL, payload={})
    task_c = await insert_one(storage, queue="c", kind=JobKind.TASK, payload={"task": "t"})

    async def ids(**filters: object) -> list[str]:
        return [j.id for j in await list_all(storage, **filters)]

    assert await ids(states=[JobState.PENDING]) == [task_c.id, external_b.id, pending_b.id, pending_a.id]
    assert await ids(states=[JobState.DEAD, JobState.COMPLETED]) == [completed.id, dead.id]
    assert await ids(queues=["a"]) == [pending_a.id, completed.id, dead.id]
    assert await ids(queues=["b", "c"]) == [task_c.id, external_b.id, pending_b.id]
    assert await ids(kinds=[JobKind.EXTERNAL, JobKind.TASK]) == [task_c.id, external_b.id]
    assert await ids(states=[JobState.PENDING], queues=["a", "b"], kinds=[JobKind.SHELL]) == [
        pending_b.id,
        pending_a.id,
    ]
    assert await ids(states=[JobState.RUNNING]) == []
    assert len(await ids()) == 6


async def test_text_filter_matches_id_tag_or_payload_case_insensitively(storage: Storage) -> None:
    await insert(
        storage,
        new_job(id="Invoice-42"),
        new_job(tags=("Nightly", "etl")),
        new_job(payload={"command": "backup-DB", "args": ["--full"]}),
        new_job(kind=JobKind.TASK, payload={"task": "x", "kwargs": {"target": "cold-backup"}}),
        new_job(id="unrelated", tags=("misc",)),
    )

    async def count(text: str) -> int:
        return len(await list_all(storage, text=text))

    assert await count("invoice-4") == 1
    assert await count("NIGHTLY") == 1
    assert await count("nigh") == 1
    assert await count("backup") == 2
    assert await count("BACKUP-db") == 1
    assert await count("--FULL") == 1
    assert await count("no-such-text") == 0
    [only] = await list_all(storage, text="backup", kinds=[JobKind.SHELL], queues=["default"])
    assert only.payload["command"] == "backup-DB"


async def test_text_filter_is_unicode_aware(storage: Storage) -> None:
    match = await insert_one(storage, payload={"command": "echo", "args": ["Crème brûlée"]}, tags=("Café",))
    await insert_one(storage, payload={"command": "echo", "args": ["creme brulee"]})
    assert [j.id for j in await list_all(storage, text="BRÛLÉE")] == [match.id]
    assert [j.id for j in await list_all(storage, text="cAFÉ")] == [match.id]


async def test_paging_with_a_filter(storage: Storage) -> None:
    await insert(
        storage, *(new_job(id=f"j{n:02d}", queue="even" if n % 2 == 0 else "odd") for n in range(30))
    )
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await storage.job_list(ListParams(queues=["even"], limit=4, cursor=cursor))
        assert len(page.jobs) <= 4
        seen.extend(j.id for j in page.jobs)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"j{n:02d}" for n in range(28, -1, -2)]
