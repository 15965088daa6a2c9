"""``relay submit``: job documents from a file (or stdin, or flags) into the queue, all or nothing.

A file holds one job document, a JSON array of documents, or JSON lines (one document per line). Every
document is validated before anything is enqueued; then all of them are inserted in ONE storage call,
which every backend runs as one transaction: an invalid document, or a client-chosen id that is taken,
enqueues nothing. Errors name the document by its index, as ``[3].payload.command``.

For thousands of documents and a terminal on stderr, a progress bar follows the validation (the slow,
per-document part) and a spinner the single insert; the insert is deliberately not split into chunks,
so that the all-or-nothing promise holds for any size.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import orjson

from relay.cli.context import CliState, pass_state
from relay.cli.options import json_option
from relay.cli.output import emit_json, note, progress_bar, progress_spinner, progress_wanted
from relay.cli.views import job_to_json
from relay.errors import InvalidJobError
from relay.jobs.document import parse_job_document
from relay.jobs.json_values import join_path
from relay.sdk.handle import JobHandle
from relay.types import JSON, NewJob

#: The flag form's options, and the document field each one sets (for error messages too).
FLAG_FIELDS = {
    "queue": "--queue",
    "max_retries": "--retries",
    "priority": "--priority",
    "delay": "--delay",
    "timeout": "--timeout",
    "idempotency_key": "--idempotency-key",
    "unique_for": "--unique-for",
    "unique_while": "--unique-while",
    "rate_key": "--rate-key",
    "concurrency_key": "--concurrency-key",
    "ordering_key": "--ordering-key",
    "type": "--type",
    "payload": "--payload",
}
EXISTING_NOTES = 10  # "existing job" lines printed before they are summed up


@dataclass(frozen=True)
class Documents:
    items: list[JSON]
    many: bool  # an array or JSON lines: errors name each document by its index, output is a list


@click.command()
@click.argument("file", required=False)
@click.option("--type", "kind", metavar="TYPE", help="Flag form: shell, task or external.")
@click.option("--payload", metavar="JSON", help='Flag form: the payload, e.g. \'{"command": "echo hi"}\'.')
@click.option("--queue", help="Flag form: the queue (default: default).")
@click.option("--retries", "max_retries", type=int, help="Flag form: max_retries.")
@click.option("--priority", type=int, help="Flag form: higher runs first.")
@click.option("--delay", help="Flag form: start later, e.g. 10s, 5m.")
@click.option("--timeout", help="Flag form: how long one attempt may run, e.g. 30s.")
@click.option("--idempotency-key", help="Flag form: enqueue at most one job with this key.")
@click.option("--unique-for", help="Flag form: the key holds this long (e.g. 1h), not while stored.")
@click.option("--unique-while", help="Flag form: 'active': the key is free again once the job ended.")
@click.option("--rate-key", help="Flag form: the job's bucket when the queue has a per-key rate.")
@click.option("--concurrency-key", help="Flag form: counted against the queue's per-key concurrency.")
@click.option("--ordering-key", help="Flag form: jobs of one key run one at a time, in order.")
@json_option
@pass_state
def submit(state: CliState, /, file: str | None, kind: str | None, payload: str | None, **flags: Any) -> None:
    """Enqueue jobs from a file, stdin, or flags.

    FILE holds one job document, a JSON array of documents, or JSON lines (- reads stdin). Every
    document is validated before any is enqueued, and all are enqueued in one transaction.

    \b
      relay submit job.json
      relay submit --type=shell --payload='{"command": "echo hello"}' --retries=3
    """
    flags = {k: v for k, v in flags.items() if v is not None}
    if file is not None:
        if kind is not None or payload is not None or flags:
            raise click.UsageError("give either FILE or the flag form (--type, --payload, ...), not both")
        documents = read_documents(file)
        jobs = validate(documents)
    elif kind is not None:
        documents, jobs = Documents([], many=False), [flag_job(kind, payload, flags)]
    else:
        raise click.UsageError("give a FILE of job documents (- for stdin), or --type and --payload")
    report(state, enqueue(state, jobs), documents.many)


# -- reading ----------------------------------------------------------------------------------------


def read_documents(file: str) -> Documents:
    name = "stdin" if file == "-" else file
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {name}: {exc.strerror or exc}") from exc
    return parse_documents(raw, name)


def parse_documents(raw: bytes, name: str) -> Documents:
    """One document, an array of documents, or JSON lines; JSON errors name the line."""
    if not raw.strip():
        raise click.ClickException(f"{name} holds no job document")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        lines = _json_lines(raw, name)
        if lines is None:
            raise click.ClickException(f"{name} is not valid JSON: {_json_error(exc)}") from exc
        return Documents(lines, many=True)
    if isinstance(value, list):
        return Documents(value, many=True)
    return Documents([value], many=False)


def _json_lines(raw: bytes, name: str) -> list[JSON] | None:
    """Documents of a JSON-lines file, or None when the text does not look like one (its first line
    is not a whole JSON object): then the error of the whole text is the one worth showing."""
    numbered = [(n, line) for n, line in enumerate(raw.splitlines(), start=1) if line.strip()]
    docs: list[JSON] = []
    for n, line in numbered:
        try:
            docs.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            if not docs:
                return None
            raise click.ClickException(
                f"{name}, line {n}: not valid JSON: {exc.msg} at column {exc.colno}"
            ) from exc
        if len(docs) == 1 and not isinstance(docs[0], dict):
            return None
    return docs


def _json_error(exc: orjson.JSONDecodeError) -> str:
    return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"


# -- validating -------------------------------------------------------------------------------------


def validate(documents: Documents) -> list[NewJob]:
    """Every document parsed before any is enqueued; the first invalid one raises InvalidJobError."""
    items = documents.items
    if not documents.many:
        return [parse_job_document(items[0])]
    if not progress_wanted(len(items)):
        return [parse_job_document(doc, path=join_path("", i)) for i, doc in enumerate(items)]
    jobs: list[NewJob] = []
    with progress_bar() as progress:
        task = progress.add_task("validating", total=len(items))
        for i, doc in enumerate(items):
            jobs.append(parse_job_document(doc, path=join_path("", i)))
            if i % 500 == 499:
                progress.update(task, completed=i + 1)
    return jobs


def flag_job(kind: str, payload: str | None, flags: dict[str, Any]) -> NewJob:
    """The job the flag form describes; errors name the flag (``--retries: ...``)."""
    doc: dict[str, JSON] = {"type": kind, **flags}
    if payload is not None:
        try:
            doc["payload"] = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {_json_error(exc)}", param_hint="--payload") from exc
    try:
        return parse_job_document(doc)
    except InvalidJobError as exc:
        top = exc.field.split(".", 1)[0].split("[", 1)[0]
        flag = FLAG_FIELDS.get(top)
        if flag is None:
            raise
        rest = exc.field[len(top) :].lstrip(".")
        raise InvalidJobError(f"{flag}: {rest}" if rest else flag, exc.message) from exc


# -- enqueueing -------------------------------------------------------------------------------------


def enqueue(state: CliState, jobs: list[NewJob]) -> list[JobHandle]:
    relay = state.relay()
    if not progress_wanted(len(jobs)):
        return relay.enqueue_many(jobs)
    with progress_spinner() as progress:
        progress.add_task(f"enqueueing {len(jobs)} jobs in one transaction", total=None)
        return relay.enqueue_many(jobs)


def report(state: CliState, handles: list[JobHandle], many: bool) -> None:
    existing = [h for h in handles if not h.created]
    for handle in existing[:EXISTING_NOTES]:
        key = handle.job.idempotency_key
        note(f"existing job {handle.id} (idempotency key {key!r}): nothing new was enqueued for it")
    if len(existing) > EXISTING_NOTES:
        note(f"... {len(existing)} documents in all matched an existing job by idempotency key")
    if state.json:
        rows = [{**job_to_json(h.job), "created": h.created} for h in handles]
        emit_json(rows if many else rows[0])
        return
    if not handles:
        note("no job documents: nothing was enqueued")
        return
    click.echo("\n".join(h.id for h in handles))
    if many and progress_wanted(len(handles)):
        note(f"enqueued {len(handles) - len(existing)} jobs")
