"""Jobs made directly through the storage seam, in any state, with any content (even content the API
would refuse, such as a queue name with markup in it: storage written by older versions, or by hand)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from relay.app import Relay
from relay.runtime.schedules import define
from relay.storage.params import ClaimParams, FinishItem, LogAppend
from relay.types import (
    AttemptError,
    Job,
    JobKind,
    NewJob,
    Outcome,
    QueueLimits,
    RateLimit,
    Schedule,
    WorkerInfo,
)

from .helpers import HOSTILE


async def insert(relay: Relay, **fields: Any) -> Job:
    await relay.open_async()
    fields.setdefault("kind", JobKind.EXTERNAL)
    fields.setdefault("payload", {"n": 1})
    [result] = await relay.storage.job_insert_many([NewJob(**fields)])
    return result.job


async def dead(relay: Relay, *, error: str = "boom", logs: tuple[str, ...] = (), **fields: Any) -> Job:
    """A job that ran once, wrote ``logs`` and failed with ``error``: dead, in the DLQ."""
    fields.setdefault("priority", 1000)  # claimed before any other job waiting in its queue
    job = await insert(relay, max_retries=0, **fields)
    [claimed] = await relay.storage.job_claim(
        ClaimParams(queues=[job.queue], worker_id="test-worker", limit=1, kinds=(job.kind,))
    )
    assert claimed.id == job.id
    if logs:
        await relay.storage.job_log_append([LogAppend(job.id, 1, "stderr", line) for line in logs])
    at = relay.clock.now()
    failure = AttemptError(1, error, error, at, traceback=error, exit_code=3, stderr_tail=error)
    assert claimed.lease_token is not None
    await relay.storage.job_finish_many(
        [FinishItem(job.id, claimed.lease_token, Outcome.FAILED, error=failure)]
    )
    found = await relay.storage.job_get(job.id)
    assert found is not None
    return found


async def hostile(relay: Relay) -> list[Job]:
    """Jobs whose every field a person sees is an attack: payload, queue, tags, id, errors, logs, and a
    worker whose id, host and queues are too."""
    jobs = [
        await dead(
            relay,
            queue=text,
            id=f"{text}-{n}",
            payload={"command": text, "note": text},
            tags=(text,),
            metadata={"owner": text, "schedule": text, "tick": text},
            rate_key=text,
            concurrency_key=text,
            ordering_key=text,
            idempotency_key=text,
            error=text,
            logs=HOSTILE,
        )
        for n, text in enumerate(HOSTILE[:3])
    ]
    shell = {"command": HOSTILE[1], "argv": ["echo", HOSTILE[0]], "args": [], "shell": False, "env": {}}
    jobs.append(await insert(relay, kind=JobKind.SHELL, payload=shell, tags=HOSTILE))
    now = relay.clock.now()
    worker = WorkerInfo(HOSTILE[0], HOSTILE[1], 42, (HOSTILE[2],), 1, now, now, (jobs[0].id,))
    await relay.storage.worker_heartbeat(worker)
    return jobs


async def schedule(relay: Relay, name: str, spec: str, job: NewJob, **options: Any) -> Schedule:
    """A schedule stored as ``relay schedule add`` stores one (checked by ``define``)."""
    await relay.open_async()
    definition = define(name, spec, job, **options)
    return await relay.storage.schedule_upsert(definition.params(relay.clock.now()))


async def hostile_schedules(relay: Relay) -> list[Schedule]:
    """Schedules whose name, queue and command are attacks (``define`` refuses such a name, storage
    does not), each queue with limits, so that its page shows them and its form."""
    await relay.open_async()
    made = []
    for n, text in enumerate(HOSTILE):
        payload = {"command": text, "argv": ["sh", "-c", text], "args": [], "shell": True, "env": {}}
        job = NewJob(JobKind.SHELL, payload, queue=text, metadata={"note": text})
        params = define(f"hostile-{n}", "*/5 * * * *", job).params(relay.clock.now())
        made.append(await relay.storage.schedule_upsert(replace(params, name=f"{text}-{n}")))
        await relay.storage.queue_limits_set(text, QueueLimits(rate=RateLimit(5.0, 5), concurrency=2))
    return made
