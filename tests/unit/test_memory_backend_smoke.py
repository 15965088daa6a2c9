"""Smoke tests of MemoryStorage, and of the choices of its own that the conformance suite does not check.

The behaviour every backend shares (threads racing, wake-ups included) is checked by tests/conformance
(``-k memory``).
"""

from __future__ import annotations

from typing import Any

import pytest

from relay.clock import ManualClock
from relay.errors import InvalidJobError
from relay.storage.base import Storage
from relay.storage.memory import MemoryStorage
from relay.storage.params import ClaimParams, FinishItem, ListParams, RequeueParams
from relay.types import JobKind, JobState, NewJob, Outcome


def shell_job(**fields: Any) -> NewJob:
    return NewJob(JobKind.SHELL, {"command": "echo", "args": ["hi"]}, **fields)


def claim_params() -> ClaimParams:
    return ClaimParams(queues=["default"], worker_id="w1", limit=10)


async def test_is_a_storage_and_runs_a_job_to_completion() -> None:
    storage = MemoryStorage(clock=ManualClock())
    assert isinstance(storage, Storage)
    assert (storage.capabilities.name, storage.capabilities.durable) == ("memory", False)
    await storage.open()
    [inserted] = await storage.job_insert_many([shell_job()])
    [running] = await storage.job_claim(claim_params())
    assert running.id == inserted.job.id
    item = FinishItem(running.id, running.lease_token or "", Outcome.COMPLETED, result={"ok": True})
    [finished] = await storage.job_finish_many([item])
    assert finished.state is JobState.COMPLETED
    await storage.close()


async def test_callers_cannot_mutate_stored_json() -> None:
    storage = MemoryStorage()
    payload: dict[str, Any] = {"command": "echo", "args": ["hi"]}
    metadata: dict[str, Any] = {"owner": {"team": "ops"}}
    [inserted] = await storage.job_insert_many([NewJob(JobKind.SHELL, payload, metadata=metadata)])
    payload["args"].append("mutated by the caller")
    metadata["owner"]["team"] = "mutated"
    inserted.job.payload["command"] = "rm"
    inserted.job.metadata["owner"]["team"] = "mutated"
    stored = await storage.job_get(inserted.job.id)
    assert stored is not None
    assert stored.payload == {"command": "echo", "args": ["hi"]}
    assert stored.metadata == {"owner": {"team": "ops"}}


async def test_a_value_json_cannot_carry_is_refused_and_nothing_is_inserted() -> None:
    storage = MemoryStorage()
    with pytest.raises(InvalidJobError) as info:
        await storage.job_insert_many([shell_job(), NewJob(JobKind.SHELL, {"when": object()})])
    assert info.value.field == "payload"
    assert (await storage.job_list(ListParams())).jobs == []


async def test_a_chain_whose_id_is_taken_counts_as_enqueued_already() -> None:
    """A requeued dead job that dies again meets its own earlier on_failure: no error, no second job."""
    storage = MemoryStorage()
    chain = shell_job(id="alert", queue="alerts")
    [inserted] = await storage.job_insert_many([shell_job(max_retries=0, on_failure=chain)])
    for death in range(2):
        if death:
            await storage.job_requeue(RequeueParams(job_id=inserted.job.id))
        [running] = await storage.job_claim(claim_params())
        item = FinishItem(running.id, running.lease_token or "", Outcome.FAILED, retryable=False)
        assert [r.state for r in await storage.job_finish_many([item])] == [JobState.DEAD]
    alerts = await storage.job_list(ListParams(queues=["alerts"]))
    assert [job.id for job in alerts.jobs] == ["alert"]
