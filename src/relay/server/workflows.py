"""Workflows on the server: the definitions it loads at start, and who may see and steer which run.

A run spans the queues of its steps, so scopes are checked on every one of them, as a job's are on its
queue: a run (or a definition) is visible to a token that may ``read`` every queue of its steps (else
it is "not found", so that it does not leak); triggering needs ``enqueue`` on each step's queue (and
the server's shell policy), cancelling a run ``admin`` on each, retrying a step ``admin`` on its queue.
A step whose job was pruned has no queue any more, and constrains nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from relay.app import Relay
from relay.errors import ConfigurationError, InvalidWorkflowError, WorkflowRunNotFoundError
from relay.server.auth import forbidden, require
from relay.server.scopes import Action, Grants
from relay.storage.base import Storage
from relay.types import WorkflowRun
from relay.workflows.definitions import WorkflowDefinition, load_directory


def load_definitions(relay: Relay) -> dict[str, WorkflowDefinition]:
    """The definitions of ``relay.settings.workflows_dir``. A bad file stops the server before it
    listens (ConfigurationError, exit code 3 in the CLI), with the file, line and field."""
    directory = relay.settings.workflows_dir
    try:
        return load_directory(directory)
    except InvalidWorkflowError as exc:
        raise ConfigurationError(f"cannot load the workflows of {directory}: {exc}") from exc


def definition_queues(definition: WorkflowDefinition) -> set[str]:
    return {step.document.queue or "default" for step in definition.steps}


def may(grants: Grants, action: Action, queues: Iterable[str]) -> bool:
    return all(grants.allows(action, q) for q in queues)


def readable_definitions(
    definitions: Mapping[str, WorkflowDefinition], grants: Grants
) -> list[WorkflowDefinition]:
    if not grants.allows_any(Action.READ):
        raise forbidden(Action.READ, "*")
    return [d for d in definitions.values() if may(grants, Action.READ, definition_queues(d))]


async def step_queues(storage: Storage, run: WorkflowRun) -> dict[str, str]:
    """The queue of each step whose job still exists, by step name."""
    jobs = await asyncio.gather(*(storage.job_get(s.job_id) for s in run.steps))
    return {s.name: job.queue for s, job in zip(run.steps, jobs, strict=True) if job is not None}


async def run_visible(storage: Storage, grants: Grants, run: WorkflowRun) -> bool:
    if grants.allows_all(Action.READ):  # no lookups for the common case of a read:* token
        return True
    return may(grants, Action.READ, (await step_queues(storage, run)).values())


async def run_for(
    storage: Storage, grants: Grants, action: Action, run_id: str, step: str | None = None
) -> WorkflowRun:
    """The run, if ``action`` is granted on the queues it touches (every step's, or ``step``'s only).
    A run the token cannot read is not found (404); one it may read but not act on is 403."""
    if not grants.allows_any(action):
        raise forbidden(action, "*")
    run = await storage.workflow_get(run_id)
    if run is None or not await run_visible(storage, grants, run):
        raise WorkflowRunNotFoundError(run_id)
    if action is not Action.READ and not grants.allows_all(action):
        queues = await step_queues(storage, run)
        for name, queue in sorted(queues.items()):
            if step is None or name == step:
                require(grants, action, queue)
    return run
