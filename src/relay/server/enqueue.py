"""Enqueue through the API: job documents in, jobs out, with scopes and idempotency.

A repeated idempotency key returns the job it first created (200, ``"duplicate": true``), if the
document is the same job: same kind, payload, queue, priority, retries, backoff, timeout, lease, tags,
metadata, chains, flow-control keys and ``unique_while`` (the start time and ``unique_for`` are not
compared: a retried request with ``"delay": "10s"`` is the same job). A key reused for a different job
is a conflict (409), and nothing is enqueued for it.

In a batch (one transaction), a conflicting document cannot stop the others: the seam inserts the
batch and only then tells which keys already existed. So the batch answers per document, and a
conflicting one carries an error instead of a job.
"""

from __future__ import annotations

from collections.abc import Iterator

from relay.client.wire import job_to_json
from relay.errors import InvalidJobError
from relay.jobs.document import parse_job_document, parse_job_documents
from relay.jobs.json_values import join_path
from relay.server.auth import require
from relay.server.errors import ApiError, error_body
from relay.server.limits import check_batch
from relay.server.scopes import Action, Grants
from relay.server.state import ServerState
from relay.types import JSON, Job, JobKind, NewJob


def _chain(job: NewJob, path: str) -> Iterator[tuple[NewJob, str]]:
    """The job and every job it chains, with the path of each in the document."""
    yield job, path
    for name in ("on_success", "on_failure"):
        child = getattr(job, name)
        if child is not None:
            yield from _chain(child, join_path(path, name))


def check_job(
    grants: Grants, job: NewJob, allow_shell: bool, path: str = "", action: Action = Action.ENQUEUE
) -> None:
    """Scopes for the queue of the job and of every chained job (a chain must not be a way into a queue
    the token cannot enqueue to), and the server's shell policy. ``action`` is the scope needed on
    each of those queues: ``enqueue`` for a job, ``admin`` for a schedule's template."""
    for each, where in _chain(job, path):
        require(grants, action, each.queue)
        if not allow_shell and each.kind is JobKind.SHELL and each.payload.get("shell"):
            raise InvalidJobError(
                join_path(join_path(where, "payload"), "shell"),
                "this server does not run commands in a shell",
            )
        check_names(each, where)


def check_names(job: NewJob, path: str) -> None:
    """Refuse NUL in ids and idempotency keys: no client needs one, and the SQLite backend cannot
    match such a value against those it stores (its duplicate checks would miss it)."""
    for name in ("id", "idempotency_key"):
        value = getattr(job, name)
        if value is not None and "\0" in value:
            raise InvalidJobError(join_path(path, name), "must not contain a NUL character")


def _content(job: NewJob | Job) -> tuple[object, ...]:
    """What makes two enqueues "the same job" for an idempotency key (the start time is left out)."""

    def chain(value: NewJob | None) -> JSON:
        return None if value is None else value.to_json()

    return (
        job.kind,
        job.payload,
        job.queue,
        job.priority,
        job.max_retries,
        job.backoff,
        job.timeout,
        job.lease,
        tuple(job.tags),
        job.metadata,
        chain(job.on_success),
        chain(job.on_failure),
        job.rate_key,
        job.concurrency_key,
        job.ordering_key,
        job.unique_while,
    )


def same_job(new: NewJob, job: Job) -> bool:
    return (new.id is None or new.id == job.id) and _content(new) == _content(job)


def _conflict(job: NewJob, path: str) -> ApiError:
    return ApiError(
        409,
        "idempotency_conflict",
        f"idempotency key {job.idempotency_key!r} already names a different job",
        join_path(path, "idempotency_key"),
    )


async def enqueue_one(state: ServerState, grants: Grants, document: JSON) -> tuple[int, JSON]:
    """(status, body) for one job document: 201 created, 200 for an idempotent repeat."""
    new = parse_job_document(document)
    check_job(grants, new, state.settings.allow_shell)
    [result] = await state.storage.job_insert_many([new])
    if not result.created and not same_job(new, result.job):
        raise _conflict(new, "")
    return (201 if result.created else 200), enqueued_json(result.created, result.job)


def enqueued_json(created: bool, job: Job | None) -> dict[str, JSON]:
    """One enqueue's answer: ``duplicate`` says the job is one that existed (an idempotency key's);
    ``created``, its opposite, is kept for the clients that read it. No job: neither."""
    return {
        "created": created,
        "duplicate": job is not None and not created,
        "job": None if job is None else job_to_json(job),
    }


async def enqueue_batch(state: ServerState, grants: Grants, documents: JSON) -> tuple[int, JSON]:
    """(status, body) for a JSON array of documents, inserted in one transaction."""
    check_batch(documents, state.limits.max_batch)
    jobs = parse_job_documents(documents)
    for index, job in enumerate(jobs):
        check_job(grants, job, state.settings.allow_shell, join_path("", index))
    results = await state.storage.job_insert_many(jobs)
    items: list[JSON] = []
    for index, (new, result) in enumerate(zip(jobs, results, strict=True)):
        if result.created or same_job(new, result.job):
            items.append(enqueued_json(result.created, result.job) | {"error": None})
        else:
            error = _conflict(new, join_path("", index))
            items.append(enqueued_json(False, None) | error_body(error.code, error.message, error.field))
    status = 201 if any(r.created for r in results) else 200
    return status, {"jobs": items}
