"""Jobs made directly through the storage seam, in any state, with any content (even content the API
would refuse, such as a queue name with markup in it: storage written by older versions, or by hand)."""

from __future__ import annotations

from typing import Any

from relay.app import Relay
from relay.storage.params import ClaimParams, FinishItem, LogAppend
from relay.types import AttemptError, Job, JobKind, NewJob, Outcome, WorkerInfo

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
            metadata={"owner": text},
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
