"""Schedule definitions, as the Python API, the settings file, ``--schedule``, the CLI and the HTTP API
give them, and the few storage calls that need a spec computed first (define, resume).

A definition is checked here once: its spec and timezone (``relay.jobs.cron``), its name, and its job.
Storage keeps definitions and fires ticks; it never parses a spec.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from relay.errors import InvalidJobError, InvalidScheduleError, ScheduleNotFoundError
from relay.jobs.cron import ScheduleSpec, parse_spec
from relay.jobs.document import parse_job_document
from relay.jobs.json_values import json_type
from relay.runtime.workflows import workflow_job
from relay.storage.base import Schedules
from relay.storage.params import ScheduleParams
from relay.types import CatchUp, NewJob, Schedule, UniqueWhile

# Like a task's name (a schedule is named after its task by default): no whitespace, and no "/", which
# would not survive in a URL path.
NAME_PATTERN = re.compile(r"^[^\s/\x00]{1,255}$")
_CATCH_UP = {choice.value: choice for choice in CatchUp}


@dataclass(frozen=True, slots=True)
class ScheduleDefinition:
    """A checked schedule: build it with :func:`define`."""

    name: str
    spec: ScheduleSpec
    job: NewJob
    catch_up: CatchUp = CatchUp.ONCE

    def params(self, now: datetime) -> ScheduleParams:
        return ScheduleParams(
            name=self.name,
            spec=self.spec.text,
            timezone=self.spec.timezone,
            job=self.job,
            catch_up=self.catch_up,
            next_run_at=self.spec.next_after(now),
        )


def define(
    name: object, spec: object, job: NewJob, *, timezone: object = "UTC", catch_up: object = CatchUp.ONCE
) -> ScheduleDefinition:
    """A checked definition; :class:`InvalidScheduleError` names the field that is wrong.

    The job is a template: its ``id``, ``run_at`` and ``delay`` are dropped (each tick's job gets its
    own id, and runs at its tick), and its idempotency key (with its unique window) is replaced by the
    tick's own, which holds as long as the tick's job is stored.
    """
    checked_name, parsed, policy = _checked(name, spec, timezone, catch_up)
    template = replace(
        job,
        id=None,
        run_at=None,
        delay=0.0,
        idempotency_key=None,
        unique_for=None,
        unique_while=UniqueWhile.STORED,  # the tick's key holds while its job is stored: never twice
    )
    return ScheduleDefinition(checked_name, parsed, template, policy)


def _checked(
    name: object, spec: object, timezone: object, catch_up: object
) -> tuple[str, ScheduleSpec, CatchUp]:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidScheduleError("name", "expected 1 to 255 characters, without spaces or '/'")
    parsed = parse_spec(spec, timezone, field="schedule")
    if isinstance(catch_up, CatchUp):
        return name, parsed, catch_up
    if not isinstance(catch_up, str) or catch_up not in _CATCH_UP:
        raise InvalidScheduleError("catch_up", f"expected 'once' or 'skip', got {catch_up!r}")
    return name, parsed, _CATCH_UP[catch_up]


_DOCUMENT_FIELDS = ("name", "schedule", "timezone", "catch_up", "job", "command", "workflow", "params")


def schedule_from_document(doc: object, *, path: str = "") -> ScheduleDefinition:
    """A definition from its JSON (or TOML) document, as the API and the settings file take it::

        {"name": "nightly-report", "schedule": "0 3 * * *", "timezone": "Europe/Berlin",
         "catch_up": "once", "job": {"type": "shell", "payload": {"command": "report.sh"}}}

    ``"command": "report.sh --full"`` (or an argv list) is short for a shell job with that command.
    Errors name the field, under ``path``.
    """

    def where(name: str) -> str:
        return f"{path}.{name}" if path else name

    if not isinstance(doc, dict):
        raise InvalidScheduleError(path, f"a schedule must be an object, got {json_type(doc)}")
    unknown = sorted(set(doc) - set(_DOCUMENT_FIELDS))
    if unknown:
        raise InvalidScheduleError(
            where(unknown[0]), f"unknown field; expected one of: {', '.join(_DOCUMENT_FIELDS)}"
        )
    try:  # the schedule's own fields first, then its job
        name, spec, catch_up = _checked(
            doc.get("name"), doc.get("schedule"), doc.get("timezone", "UTC"), doc.get("catch_up", "once")
        )
    except InvalidScheduleError as exc:
        raise InvalidScheduleError(where(exc.field), exc.message) from None
    if sum(key in doc for key in ("job", "command", "workflow")) != 1:
        raise InvalidScheduleError(where("job"), "give what to run: a job document, a command or a workflow")
    if "params" in doc and "workflow" not in doc:
        raise InvalidScheduleError(where("params"), "params go with a workflow")
    if "workflow" in doc:
        job = _workflow_job(doc["workflow"], doc.get("params") or {}, where)
    elif "job" in doc:
        job = parse_job_document(doc["job"], path=where("job"))
    else:
        payload = _command_payload(doc["command"], where("command"))
        try:
            job = parse_job_document({"type": "shell", "payload": payload})
        except InvalidJobError as exc:  # the document says "command", not "payload.command"
            raise InvalidScheduleError(where("command"), exc.message) from None
    return define(name, spec.text, job, timezone=spec.timezone, catch_up=catch_up)


def _workflow_job(workflow: object, params: object, where: Callable[[str], str]) -> NewJob:
    if not isinstance(workflow, str) or not workflow:
        raise InvalidScheduleError(where("workflow"), "expected the name of a workflow")
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise InvalidScheduleError(
            where("params"), "expected an object of strings: the workflow's parameters"
        )
    return workflow_job(workflow, params)


def _command_payload(command: object, field: str) -> dict[str, object]:
    if isinstance(command, str):
        return {"command": command}
    if isinstance(command, list) and command and all(isinstance(part, str) for part in command):
        return {"command": command[0], "args": command[1:]}
    raise InvalidScheduleError(field, "expected a command line, or an argv list of strings")


def tick_job(schedule: Schedule, tick: datetime) -> NewJob:
    """The job of one tick: the template, with the (schedule, tick) idempotency key that makes a second
    job for the same tick impossible, and the schedule and tick in its metadata."""
    metadata = {**schedule.job.metadata, "schedule": schedule.name, "tick": tick.isoformat()}
    return replace(
        schedule.job, idempotency_key=f"relay:schedule:{schedule.name}:{tick.isoformat()}", metadata=metadata
    )


async def save(storage: Schedules, definitions: list[ScheduleDefinition], now: datetime) -> list[Schedule]:
    """Create or redefine each schedule (a redefinition keeps its next run unless its spec changed)."""
    return [await storage.schedule_upsert(d.params(now)) for d in definitions]


async def set_paused(storage: Schedules, name: str, paused: bool, now: datetime) -> Schedule:
    """Pause, or resume from the next tick after ``now``: ticks that passed while paused are not run.
    A schedule already in that state is left as it is (resuming a running one must not skip a tick
    that is due). Raises ``ScheduleNotFoundError``."""
    current = await storage.schedule_get(name)
    if current is None:
        raise ScheduleNotFoundError(name)
    if current.paused == paused:
        return current
    next_run_at = None if paused else parse_spec(current.spec, current.timezone).next_after(now)
    return await storage.schedule_set_paused(name, paused, next_run_at)
