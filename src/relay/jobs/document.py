"""Job documents in, :class:`~relay.types.NewJob` out: the one place a job is parsed and validated.

A document goes through four checks, in order, and the first problem raises
:class:`~relay.errors.InvalidJobError` whose ``field`` is the dotted path to it (``payload.args[1]``,
``on_success.payload.command``, ``[3].delay`` in a list of documents):

1. it is a JSON object, and all of it is JSON (:func:`relay.jobs.json_values.check_json`);
2. chained documents (``on_success`` / ``on_failure``) nest at most :data:`MAX_CHAIN_DEPTH` levels;
3. each field has the right type and bounds (the pydantic models of :mod:`relay.jobs.models`);
4. the rules that tie fields together, applied while building the ``NewJob``: the payload for the
   job's ``type``, the shell ``argv``, ``run_at`` against ``delay``, the backoff bounds, the timeout.

The shell payload is stored normalised, so that a worker never parses a command line again::

    {"command": str, "args": [str], "argv": [str], "shell": bool, "env": {str: str}, "cwd": str | None}
"""

from __future__ import annotations

import shlex

from relay.errors import InvalidJobError
from relay.jobs.durations import format_duration
from relay.jobs.json_values import check_json, join_path, json_type
from relay.jobs.models import JobDocument, ShellPayload, TaskPayload, validate_model
from relay.types import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_QUEUE,
    JSON,
    Backoff,
    BackoffKind,
    JobKind,
    NewJob,
    UniqueWhile,
)

#: How deep ``on_success`` / ``on_failure`` documents may nest below the top-level document.
MAX_CHAIN_DEPTH = 10
SHELL_PATH = "/bin/sh"  # what "shell": true runs the command with


def parse_job_document(doc: object, *, path: str = "") -> NewJob:
    """A validated :class:`~relay.types.NewJob` from one job document (DESIGN.md section 3).

    ``path`` prefixes the ``field`` of every error, for documents inside a larger one.

    >>> job = parse_job_document({"type": "SHELL", "payload": {"command": "echo hi"}, "timeout": "5m"})
    >>> job.payload["argv"], job.timeout
    (['echo', 'hi'], 300.0)
    """
    if not isinstance(doc, dict):
        raise InvalidJobError(path, f"a job document must be a JSON object, got {json_type(doc)}")
    check_json(doc, path)
    _check_chain_depth(doc, path)
    return _build_job(validate_model(JobDocument, doc, path), path)


def parse_job_documents(docs: object) -> list[NewJob]:
    """Jobs from a JSON array of job documents; errors name the index, as in ``[3].payload.command``.

    >>> docs = [{"type": "external"}, {"type": "Task", "payload": {"task": "billing.charge"}}]
    >>> [job.kind.value for job in parse_job_documents(docs)]
    ['external', 'task']
    """
    if not isinstance(docs, list):
        raise InvalidJobError("", f"expected a JSON array of job documents, got {json_type(docs)}")
    return [parse_job_document(doc, path=join_path("", index)) for index, doc in enumerate(docs)]


def _check_chain_depth(doc: dict[object, object], path: str) -> None:
    # Checked on the raw document, before pydantic, so that validation never recurses deeper than this.
    stack = [(doc, path, 0)]
    while stack:
        current, where, depth = stack.pop()
        for key in ("on_success", "on_failure"):
            child = current.get(key)
            if not isinstance(child, dict):
                continue  # absent, null, or a type error the models report
            child_path = join_path(where, key)
            if depth >= MAX_CHAIN_DEPTH:
                raise InvalidJobError(
                    child_path, f"chained job documents nest at most {MAX_CHAIN_DEPTH} deep"
                )
            stack.append((child, child_path, depth + 1))


def _build_job(doc: JobDocument, path: str) -> NewJob:
    payload, payload_timeout = _build_payload(doc.type, doc.payload, join_path(path, "payload"))
    if doc.run_at is not None and doc.delay is not None:
        raise InvalidJobError(join_path(path, "delay"), "give either run_at or delay, not both")
    if doc.idempotency_key is None and (doc.unique_for is not None or doc.unique_while is UniqueWhile.ACTIVE):
        field = "unique_for" if doc.unique_for is not None else "unique_while"
        raise InvalidJobError(
            join_path(path, field), "needs an idempotency_key: it says how long that key holds"
        )
    return NewJob(
        kind=doc.type,
        payload=payload,
        queue=doc.queue,
        id=doc.id,
        priority=doc.priority,
        run_at=doc.run_at,
        delay=doc.delay or 0.0,
        max_retries=doc.max_retries,
        backoff=_build_backoff(doc, path),
        timeout=doc.timeout if doc.timeout is not None else payload_timeout,
        lease=doc.lease,
        idempotency_key=doc.idempotency_key,
        on_success=_build_chain(doc.on_success, join_path(path, "on_success")),
        on_failure=_build_chain(doc.on_failure, join_path(path, "on_failure")),
        tags=tuple(doc.tags),
        metadata=doc.metadata,
        rate_key=doc.rate_key,
        concurrency_key=doc.concurrency_key,
        ordering_key=doc.ordering_key,
        unique_for=doc.unique_for,
        unique_while=doc.unique_while,
    )


def _build_chain(doc: JobDocument | None, path: str) -> NewJob | None:
    return None if doc is None else _build_job(doc, path)


def _build_backoff(doc: JobDocument, path: str) -> Backoff:
    base, ceiling = doc.backoff_base, doc.backoff_max
    # A default never contradicts the bound the author did give: "backoff_base": "2h" alone raises the
    # default maximum to 2h instead of failing on a 1h maximum nobody wrote.
    if base is None:
        base = DEFAULT_BACKOFF_BASE if ceiling is None else min(DEFAULT_BACKOFF_BASE, ceiling)
    if ceiling is None:
        ceiling = max(DEFAULT_BACKOFF_MAX, base)
    if ceiling < base:
        raise InvalidJobError(
            join_path(path, "backoff_max"),
            f"must be at least backoff_base ({format_duration(base)}), got {format_duration(ceiling)}",
        )
    return Backoff(doc.backoff, base, ceiling)


def _build_payload(kind: JobKind, raw: object, path: str) -> tuple[JSON, float | None]:
    """The normalised payload for ``kind``, and the timeout a shell payload sets (if any)."""
    if kind is JobKind.EXTERNAL:
        return raw, None  # opaque to Relay: its runner decides what it means
    if raw is None:
        expected = "{'command': ...}" if kind is JobKind.SHELL else "{'task': 'module.function'}"
        raise InvalidJobError(path, f"a {kind} job needs a payload: an object such as {expected}")
    if kind is JobKind.TASK:
        task = validate_model(TaskPayload, raw, path)
        return {"task": task.task, "args": task.args, "kwargs": task.kwargs}, None
    shell = validate_model(ShellPayload, raw, path)
    payload = {
        "command": shell.command,
        "args": shell.args or [],
        "argv": _shell_argv(shell, path),
        "shell": shell.shell,
        "env": shell.env,
        "cwd": shell.cwd,
    }
    return payload, shell.timeout


def _shell_argv(shell: ShellPayload, path: str) -> list[str]:
    if shell.shell:
        if shell.args is not None:
            raise InvalidJobError(
                join_path(path, "args"),
                "cannot be combined with shell: true; write the whole command line in command",
            )
        return [SHELL_PATH, "-c", shell.command]
    if shell.args is not None:
        return [shell.command, *shell.args]
    argv = _split(shell.command)
    if argv is None:
        raise InvalidJobError(
            join_path(path, "command"),
            "cannot be split like a shell would (unbalanced quotes or a trailing backslash); "
            "fix the quoting, or give the program in command and its arguments in args",
        )
    if not argv or not argv[0]:
        raise InvalidJobError(join_path(path, "command"), "names no program once split like a shell would")
    return argv


def _split(command: str) -> list[str] | None:
    try:
        return shlex.split(command)
    except ValueError:  # "No closing quotation" / "No escaped character"
        return None


# The values parse_job_document fills in for absent fields; document_from_job leaves them out.
_DEFAULTS: dict[str, JSON] = {
    "queue": DEFAULT_QUEUE,
    "priority": 0,
    "max_retries": DEFAULT_MAX_RETRIES,
    "backoff": BackoffKind.EXPONENTIAL.value,
    "backoff_base": DEFAULT_BACKOFF_BASE,
    "backoff_max": DEFAULT_BACKOFF_MAX,
    "lease": DEFAULT_LEASE_SECONDS,
    "tags": [],
    "metadata": {},
    "unique_while": UniqueWhile.STORED.value,
}


def document_from_job(job: NewJob) -> dict[str, JSON]:
    """The job document that :func:`parse_job_document` turns back into ``job``, for display.

    Fields at their default are left out; durations are numbers of seconds. ``checkpoint`` is not
    part of a job document and is dropped.

    >>> document_from_job(parse_job_document({"type": "shell", "payload": {"command": "ls -l"}}))
    {'type': 'shell', 'payload': {'command': 'ls -l'}}
    """
    fields: dict[str, JSON] = {
        "id": job.id,
        "queue": job.queue,
        "priority": job.priority,
        "run_at": None if job.run_at is None else job.run_at.isoformat(),
        # run_at wins over delay (NewJob.start_time), so a delay beside it would only be rejected.
        "delay": job.delay if job.delay and job.run_at is None else None,
        "max_retries": job.max_retries,
        "backoff": job.backoff.kind.value,
        "backoff_base": job.backoff.base,
        "backoff_max": job.backoff.max,
        "timeout": job.timeout,
        "lease": job.lease,
        "idempotency_key": job.idempotency_key,
        "unique_for": job.unique_for,
        "unique_while": job.unique_while.value,
        "rate_key": job.rate_key,
        "concurrency_key": job.concurrency_key,
        "ordering_key": job.ordering_key,
        "on_success": None if job.on_success is None else document_from_job(job.on_success),
        "on_failure": None if job.on_failure is None else document_from_job(job.on_failure),
        "tags": list(job.tags),
        "metadata": job.metadata,
    }
    doc: dict[str, JSON] = {"type": job.kind.value}
    payload = _payload_document(job)
    if payload is not None:
        doc["payload"] = payload
    doc.update(
        (k, v) for k, v in fields.items() if v is not None and not (k in _DEFAULTS and v == _DEFAULTS[k])
    )
    return doc


def _payload_document(job: NewJob) -> JSON:
    if job.kind is not JobKind.SHELL or not isinstance(job.payload, dict):
        return job.payload
    stored = job.payload
    doc: dict[str, JSON] = {"command": stored["command"]}
    if stored.get("shell"):
        doc["shell"] = True
    # args must be written out only when the command alone would split into a different argv.
    elif stored.get("argv") != _split(stored["command"]):
        doc["args"] = list(stored.get("args") or [])
    if stored.get("env"):
        doc["env"] = stored["env"]
    if stored.get("cwd") is not None:
        doc["cwd"] = stored["cwd"]
    return doc
