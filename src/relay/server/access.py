"""Scope checks that need storage: a job's queue, and the queues a listing may show."""

from __future__ import annotations

from collections.abc import Sequence

from relay.errors import JobNotFoundError
from relay.server.auth import forbidden, require
from relay.server.scopes import Action, Grants
from relay.storage.base import Storage
from relay.types import Job


async def job_for(storage: Storage, grants: Grants, action: Action, job_id: str) -> Job:
    """The job, if ``action`` is granted on its queue.

    A job of a queue the token cannot even read is "not found" (404), so that its existence does not
    leak; a job the token may read but not act on is 403."""
    if not grants.allows_any(action):
        raise forbidden(action, "*")
    job = await storage.job_get(job_id)
    if job is None or not (grants.allows(Action.READ, job.queue) or grants.allows(action, job.queue)):
        raise JobNotFoundError(job_id)
    require(grants, action, job.queue)
    return job


async def readable_queues(storage: Storage, grants: Grants, requested: Sequence[str]) -> list[str] | None:
    """The queue filter of a listing: None for every queue, else these (possibly none at all).

    Queues asked for by name must each be readable (403 otherwise); without names, a token limited
    to some queues sees exactly those: a listing never shows another queue's jobs."""
    if requested:
        for queue in requested:
            require(grants, Action.READ, queue)
        return list(dict.fromkeys(requested))
    if grants.allows_all(Action.READ):
        return None
    if not grants.allows_any(Action.READ):
        raise forbidden(Action.READ, "*")
    return grants.visible(Action.READ, [q.name for q in await storage.queue_list()])
