"""Starting workflow runs, and what a running step gets from the steps it depends on.

Storage keeps the runs and every transition of their steps (``relay.storage.base.Workflows``); this
module only turns a definition (a YAML file's, or the Python canvas) into the start of a run, and reads
a step's inputs when its job starts.

A step's *inputs* are the results of the steps it depends on, by step name: a task step's is its return
value; a shell step's is its job's result, ``{"exit_code": 0, "output_bytes": ..., "output": ...}``,
whose ``output`` is the last line the command wrote on stdout (decoded when it is JSON). A task reads
them with ``job_context().inputs``; a command finds them as JSON in ``$RELAY_INPUTS``.
"""

from __future__ import annotations

from collections.abc import Mapping

from relay.errors import WorkflowRunNotFoundError
from relay.storage.base import WorkflowReader, Workflows
from relay.storage.params import WorkflowStart, WorkflowStarted
from relay.types import JSON, Job, JobKind, NewJob
from relay.workflows.canvas import Canvas
from relay.workflows.definitions import WorkflowDefinition, resolve_params, steps_for


async def trigger(
    storage: Workflows,
    definition: WorkflowDefinition,
    params: Mapping[str, str],
    *,
    run_id: str | None = None,
) -> WorkflowStarted:
    """Start a run of ``definition``; bad parameters raise ``InvalidWorkflowError`` before anything is
    written. ``run_id``: start it at most once (a scheduled tick's run)."""
    values = resolve_params(definition, params)
    steps = steps_for(definition, values)
    return await storage.workflow_start(
        WorkflowStart(definition.name, steps, params=dict(values), policy=definition.policy, run_id=run_id)
    )


async def start_canvas(storage: Workflows, canvas: Canvas) -> WorkflowStarted:
    return await storage.workflow_start(WorkflowStart(canvas.workflow, canvas.steps()))


async def step_inputs(storage: WorkflowReader, job: Job) -> dict[str, JSON]:
    """The results of the steps ``job``'s step depends on (empty for a job outside a run)."""
    if job.workflow_run_id is None or job.workflow_step is None:
        return {}
    run = await storage.workflow_get(job.workflow_run_id)
    if run is None:
        raise WorkflowRunNotFoundError(job.workflow_run_id)
    step = run.step(job.workflow_step)
    results = {s.name: s.result for s in run.steps}
    return {name: results[name] for name in step.depends_on}


#: The built-in task a scheduled workflow's tick enqueues: it triggers the workflow (every worker of a
#: Relay knows it). Its run's id is the tick job's, so a tick starts its run once, retries included.
WORKFLOW_TASK = "relay.workflow"


def workflow_job(workflow: str, params: Mapping[str, str], **fields: object) -> NewJob:
    """The job that triggers ``workflow`` with ``params`` when a worker runs it."""
    payload = {"task": WORKFLOW_TASK, "args": [], "kwargs": {"workflow": workflow, "params": dict(params)}}
    return NewJob(JobKind.TASK, payload, **fields)  # type: ignore[arg-type]


def run_id_for_job(job_id: str) -> str:
    return f"job-{job_id}"
