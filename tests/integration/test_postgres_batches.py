"""How the PostgreSQL backend ships batches: JSON arrays per column, a one-row insert answer, compact SQL.

The conformance suite checks what every backend does; these tests pin what only this encoding could get
wrong: JSON text kept as sent (``\\u0000`` included), SQL NULL against JSON null, jobs built from what was
sent that match what was stored, and the query texts psycopg caches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH

from relay.errors import InvalidJobError
from relay.storage.params import ClaimParams, FinishItem, HeartbeatItem, JobPage, ListParams
from relay.storage.postgres import PostgresStorage
from relay.storage.postgres.sql import Q
from relay.types import AttemptError, JobKind, JobState, NewJob, Outcome
from servers.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

NUL = "a\x00b"  # PostgreSQL text cannot hold it; JSON text can, as \u0000


@pytest.fixture
async def storage(postgres_url: str) -> AsyncIterator[PostgresStorage]:
    store = PostgresStorage(postgres_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def job(**fields: object) -> NewJob:
    return NewJob(**{"kind": JobKind.SHELL, "payload": {"command": "echo"}, **fields})  # type: ignore[arg-type]


async def claim_one(storage: PostgresStorage, queue: str = "default") -> tuple[str, str]:
    [claimed] = await storage.job_claim(ClaimParams([queue], "w", 1))
    assert claimed.lease_token is not None
    return claimed.id, claimed.lease_token


async def test_nul_characters_in_json_values_survive_every_write(storage: PostgresStorage) -> None:
    chain = job(queue="chained", checkpoint=2.5)
    [inserted] = await storage.job_insert_many(
        [job(payload={"command": NUL}, metadata={"k": NUL}, checkpoint=NUL, tags=(NUL,), on_success=chain)]
    )
    assert (inserted.job.payload, inserted.job.checkpoint) == ({"command": NUL}, NUL)
    job_id, token = await claim_one(storage)
    beat = await storage.job_heartbeat_many([HeartbeatItem(job_id, token, checkpoint=[NUL])])
    assert beat.extended == {job_id}
    [done] = await storage.job_finish_many([FinishItem(job_id, token, Outcome.COMPLETED, result=NUL)])
    assert done.state is JobState.COMPLETED

    stored = await storage.job_get(job_id)
    assert stored is not None
    assert (stored.payload, stored.metadata, stored.checkpoint) == ({"command": NUL}, {"k": NUL}, [NUL])
    assert (stored.tags, stored.result, stored.on_success) == ((NUL,), NUL, chain)
    chained_id, _ = await claim_one(storage, "chained")
    chained = await storage.job_get(chained_id)
    assert chained is not None
    assert (chained.payload, chained.checkpoint, chained.parent_id) == ({"command": "echo"}, 2.5, job_id)


async def test_a_nul_character_in_a_chained_job_is_refused_at_enqueue(storage: PostgresStorage) -> None:
    """job_finish reads a stored on_success with ->> and ->, and PostgreSQL's json operators refuse a
    \\u0000 anywhere in the value: stored, such a chain would make every finish of its parent fail.
    So it is refused when enqueued, and nothing of the batch is written."""
    fine = job(queue="plain")
    bad = job(on_failure=job(queue="chained", on_success=job(payload={"command": NUL})))
    with pytest.raises(InvalidJobError) as refused:
        await storage.job_insert_many([fine, bad])
    assert refused.value.field == "[1].on_failure"
    assert await storage.job_list(ListParams()) == JobPage([], None)


async def test_nul_in_an_error_and_json_null_versus_none(storage: PostgresStorage) -> None:
    await storage.job_insert_many([job(max_retries=1, checkpoint={"kept": True})])
    job_id, token = await claim_one(storage)
    # save_checkpoint with None clears it to SQL NULL; a JSON null result is stored as no result
    await storage.job_heartbeat_many([HeartbeatItem(job_id, token, progress=0.5, save_checkpoint=True)])
    error = AttemptError(1, "ExitCode", NUL, datetime.now(UTC), stderr_tail=NUL, exit_code=3)
    [failed] = await storage.job_finish_many([FinishItem(job_id, token, Outcome.FAILED, error=error)])
    assert failed.state is JobState.FAILED
    stored = await storage.job_get(job_id)
    assert stored is not None
    assert stored.checkpoint is None
    assert stored.progress == 0.5
    assert stored.result is None
    assert [(e.message, e.stderr_tail, e.exit_code) for e in stored.errors] == [(NUL, NUL, 3)]


async def test_a_nul_in_a_text_field_is_refused_as_an_invalid_job(storage: PostgresStorage) -> None:
    with pytest.raises(InvalidJobError):
        await storage.job_insert_many([job(queue=NUL)])
    assert await storage.queue_list() == []


async def test_jobs_built_from_what_was_sent_equal_what_was_stored(storage: PostgresStorage) -> None:
    """The insert answers with one row; everything else of each job comes from the batch itself."""
    later = datetime.now(UTC) + timedelta(hours=2)
    elsewhere = timezone(timedelta(hours=-5))
    specs = [
        job(),
        job(delay=0.1234565),  # a run_at the database computes: read back, not recomputed
        job(delay=3600.5, priority=3, tags=("a", "b")),
        job(run_at=later.astimezone(elsewhere)),  # another time zone, same instant
        job(run_at=datetime(2001, 1, 1, tzinfo=UTC)),  # in the past: pending
        job(idempotency_key="k1", metadata={"n": [1, 2.5, None]}),
        job(idempotency_key="k1"),  # a repeat within the batch: the first one's job
        job(id="client-id", timeout=1.5, backoff=job().backoff, lease=12.0),
        job(on_failure=job(queue="alerts", delay=5.0), checkpoint={"step": 1}),
    ]
    results = await storage.job_insert_many(specs)
    assert [r.created for r in results] == [True] * 6 + [False] + [True] * 2
    assert results[6].job == results[5].job
    for result in results:
        assert await storage.job_get(result.job.id) == result.job
    pending, scheduled = JobState.PENDING, JobState.SCHEDULED
    assert [r.job.state for r in results[:5]] == [pending, scheduled, scheduled, scheduled, pending]
    assert results[3].job.run_at == later
    assert results[3].job.run_at.tzinfo is UTC

    [again] = await storage.job_insert_many([job(idempotency_key="k1")])
    assert (again.created, again.job) == (False, results[5].job)


async def test_a_big_batch_is_answered_in_order_with_fresh_ids(storage: PostgresStorage) -> None:
    specs = [job(payload={"n": n}, queue=f"q{n % 3}") for n in range(3000)]
    results = await storage.job_insert_many(specs)
    assert [r.job.payload for r in results] == [{"n": n} for n in range(3000)]
    assert len({r.job.id for r in results}) == 3000
    assert {q.name for q in await storage.queue_list()} == {"q0", "q1", "q2"}
    [first] = await storage.job_claim(ClaimParams(["q0"], "w", 1))
    assert first.id == results[0].job.id  # inserted in batch order


def test_every_query_fits_psycopgs_statement_cache() -> None:
    """psycopg parses a longer query again at every execution (see relay.storage.postgres.sql)."""
    too_long = {name: len(q) for name, q in Q.items() if len(q) > MAX_CACHED_STATEMENT_LENGTH}
    assert too_long == {}
    assert not any(line.lstrip().startswith("--") for q in Q.values() for line in q.splitlines())
