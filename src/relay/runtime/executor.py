"""Running one attempt, as a pipeline of small steps: resolve → run → classify.

``Executor.start`` never raises: every way an attempt can end becomes one :class:`FinishItem` for the
completer (a payload the worker cannot execute goes to the dead-letter queue with its reason).
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, overload

import orjson

from relay.clock import Clock
from relay.errors import TaskNotFoundError
from relay.jobs.backoff import retry_delay
from relay.runtime.attempt import Attempt, StopReason
from relay.runtime.context import JobCancelledError, bind, unbind
from relay.runtime.logs import LogWriter
from relay.runtime.registry import TaskRegistry
from relay.runtime.shell import ShellCommand, ShellLaunchError, ShellOutcome, run_shell
from relay.runtime.sync_threads import SyncThreadPool
from relay.storage.params import FinishItem
from relay.types import JSON, AttemptError, Job, JobKind, Outcome

STDERR_TAIL_CHARS = 2000


class JobAbandonedError(Exception):
    """A stopped job's code did not stop in time; its outcome is recorded without it."""


class UnrunnableJobError(Exception):
    """The job's payload cannot be executed by this worker: it goes to the DLQ, it is not retried."""


Outcomes = Callable[[Attempt, FinishItem], None]


@dataclass(slots=True)
class _Run:
    """The executor's bookkeeping for one attempt."""

    attempt: Attempt
    on_outcome: Outcomes
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    settled: bool = False  # its outcome was handed over: later events about it are ignored


@dataclass(frozen=True, slots=True)
class _Raised:
    """An exception the job raised that a task must not raise (it would stop the event loop)."""

    exc: BaseException


class Executor:
    def __init__(
        self,
        registry: TaskRegistry,
        threads: SyncThreadPool,
        logs: LogWriter,
        clock: Clock,
        *,
        kill_wait: float = 10.0,
        cancel_grace: float = 5.0,
        log_cap: int = 1_000_000,
        inputs: Callable[[Job], Awaitable[dict[str, JSON]]] | None = None,
    ) -> None:
        self._registry = registry
        self._threads = threads
        self._logs = logs
        self._clock = clock
        self._kill_wait = kill_wait  # how long a stopped job's code gets to actually stop
        self._cancel_grace = cancel_grace
        self._log_cap = log_cap
        self._inputs = inputs  # a workflow step's inputs, read when its job starts

    def start(self, attempt: Attempt, on_outcome: Outcomes) -> None:
        """Start the attempt's code; ``on_outcome(attempt, item)`` is called once, however it ends.

        One task per attempt, and callbacks rather than waiting tasks: the job's task ends (its done
        callback classifies the outcome), or its timeout fires (a timer stops it), or it does not stop
        when asked (a timer abandons it ``kill_wait`` seconds after the stop). At thousands of jobs a
        second, a waiting task per job (and the futures ``asyncio.wait`` makes) was a large share of a
        worker's CPU.
        """
        run = _Run(attempt, on_outcome)
        if attempt.stop_reason is not None:  # stopped (shutdown) before it even started
            self._settle(run, self._classify_error(attempt, asyncio.CancelledError()))
            return
        loop = asyncio.get_running_loop()
        task = attempt.task = loop.create_task(self._run(attempt))
        task.add_done_callback(lambda t: self._on_task_done(run, t))
        # Shell commands enforce their own timeout (they must kill a whole process group).
        timeout = None if attempt.job.kind is JobKind.SHELL else attempt.job.timeout
        if timeout is not None:
            run.timers.append(loop.call_later(timeout, self._on_timeout, attempt))
        attempt.on_stop = lambda: run.timers.append(loop.call_later(self._kill_wait, self._abandon, run))

    def _on_timeout(self, attempt: Attempt) -> None:
        if attempt.stop_reason is None:
            attempt.stop(StopReason.TIMEOUT)

    def _on_task_done(self, run: _Run, task: asyncio.Task[Any]) -> None:
        if run.settled:
            return  # abandoned earlier: its outcome is already recorded
        try:
            item = self._classify_task(run.attempt, task)
        except BaseException as exc:
            # Classifying ran the job's own objects (an exception's __str__, say), which may raise:
            # without an outcome the job would hold its slot and its lease for as long as we live.
            item = self._failed(
                run.attempt, "UnreportableError", f"the outcome could not be read: {_describe(exc)}"
            )
        self._settle(run, item)

    def _classify_task(self, attempt: Attempt, task: asyncio.Task[Any]) -> FinishItem:
        if task.cancelled():
            return self._classify_error(attempt, asyncio.CancelledError())
        if (exc := task.exception()) is not None:
            return self._classify_error(attempt, exc)
        if isinstance(value := task.result(), _Raised):
            return self._classify_error(attempt, value.exc)
        if isinstance(value, ShellOutcome):
            return self._classify_shell(attempt, value)
        return self._classify_result(attempt, value)

    def _abandon(self, run: _Run) -> None:
        """The job's code did not stop in time: record the outcome without it."""
        attempt = run.attempt
        if run.settled or attempt.task is None or attempt.task.done():
            return
        # A sync job stuck in C code cannot be interrupted: leave the thread to finish alone, and
        # give the pool a new one in its place.
        if attempt.sync_call is not None:
            self._threads.add_thread()
        error = JobAbandonedError(f"the job's code did not stop within {self._kill_wait}s")
        self._settle(run, self._classify_error(attempt, error))

    def _settle(self, run: _Run, item: FinishItem) -> None:
        run.settled = True
        for timer in run.timers:
            timer.cancel()
        attempt = run.attempt
        attempt.on_stop = None  # a stop that comes later (a cancel's second stage) arms nothing
        if attempt.ctx.cancel_requested and item.outcome in (Outcome.FAILED, Outcome.RELEASED):
            # An operator asked to cancel it: a failure (or shutdown) on the way out must not retry it.
            error = item.error or self._error(attempt, "Cancelled", "cancelled by an operator")
            item = FinishItem(item.job_id, item.lease_token, Outcome.CANCELLED, error=error)
        run.on_outcome(attempt, item)

    # -- run ------------------------------------------------------------------------------------

    async def _run(self, attempt: Attempt) -> Any:
        job = attempt.job
        if job.workflow_run_id is not None and self._inputs is not None:
            attempt.ctx.inputs = await self._inputs(job)
        try:
            if job.kind is JobKind.SHELL:
                return await self._run_shell(attempt)
            if job.kind is JobKind.TASK:
                return await self._run_task(attempt)
        except (KeyboardInterrupt, SystemExit) as exc:
            # A task re-raises these into the event loop, which would stop the whole worker: a job
            # calling sys.exit() fails that job, nothing more.
            return _Raised(exc)
        raise UnrunnableJobError(f"built-in workers do not run {job.kind} jobs")

    async def _run_task(self, attempt: Attempt) -> Any:
        payload = attempt.job.payload
        if not isinstance(payload, dict) or not isinstance(payload.get("task"), str):
            raise UnrunnableJobError("a task job's payload needs a 'task' name")
        task = self._registry.resolve(payload["task"])
        args, kwargs = payload.get("args") or [], payload.get("kwargs") or {}
        token = bind(attempt.ctx)
        try:
            if task.is_async:
                return await task.fn(*args, **kwargs)
            attempt.sync_call = self._threads.submit(task.fn, *args, **kwargs)
            return await attempt.sync_call.future
        finally:
            unbind(token)

    async def _run_shell(self, attempt: Attempt) -> ShellOutcome:
        job = attempt.job
        p = job.payload
        if not isinstance(p, dict) or not isinstance(p.get("argv"), list) or not p["argv"]:
            raise UnrunnableJobError("a shell job's payload needs an 'argv' list")
        env = dict(p.get("env") or {})
        if job.workflow_run_id is not None:
            env |= {
                "RELAY_WORKFLOW_RUN_ID": job.workflow_run_id,
                "RELAY_WORKFLOW_STEP": job.workflow_step or "",
                "RELAY_INPUTS": orjson.dumps(attempt.ctx.inputs).decode(),
            }
        command = ShellCommand(
            argv=[str(a) for a in p["argv"]],
            env=env,
            cwd=p.get("cwd"),
            timeout=job.timeout,
        )
        sink = self._logs.sink_for(job.id, job.attempt)
        return await run_shell(
            command, sink, cancel=attempt.stopping, output_cap=self._log_cap, kill_grace=self._cancel_grace
        )

    # -- classify -------------------------------------------------------------------------------

    def _classify_result(self, attempt: Attempt, value: Any) -> FinishItem:
        try:
            result: JSON = orjson.loads(orjson.dumps(value)) if value is not None else None
        except TypeError as exc:
            return self._failed(
                attempt,
                "ResultNotJSON",
                f"the task returned a value that is not JSON: {exc}",
                retryable=False,
            )
        return FinishItem(attempt.job.id, attempt.lease_token, Outcome.COMPLETED, result=result)

    def _classify_shell(self, attempt: Attempt, out: ShellOutcome) -> FinishItem:
        if out.timed_out:
            return self._failed(
                attempt,
                "Timeout",
                f"timed out after {attempt.job.timeout}s",
                stderr_tail=out.stderr_tail[-STDERR_TAIL_CHARS:],
            )
        if out.cancelled and attempt.stop_reason is not None:
            return self._stopped(attempt, attempt.stop_reason)
        if out.exit_code == 0:
            return FinishItem(
                attempt.job.id,
                attempt.lease_token,
                Outcome.COMPLETED,
                result={"exit_code": 0, "output_bytes": out.output_bytes, "output": _output(out.last_line)},
            )
        tail = out.stderr_tail[-STDERR_TAIL_CHARS:]
        message = f"exited with code {out.exit_code}"
        if tail.strip():
            message += f": {tail.strip().splitlines()[-1][:500]}"
        return self._failed(attempt, "ExitCode", message, exit_code=out.exit_code, stderr_tail=tail)

    def _classify_error(self, attempt: Attempt, exc: BaseException) -> FinishItem:
        if attempt.stop_reason is not None:
            return self._stopped(attempt, attempt.stop_reason)
        if isinstance(exc, JobCancelledError):
            return self._stopped(attempt, StopReason.CANCEL)
        if isinstance(exc, (TaskNotFoundError, UnrunnableJobError)):
            return self._failed(attempt, type(exc).__name__, str(exc), retryable=False)
        if isinstance(exc, ShellLaunchError):
            return self._failed(attempt, "ShellLaunchError", str(exc))
        tb = "".join(traceback.format_exception(exc))
        return self._failed(attempt, type(exc).__name__, _describe(exc), tb=tb)

    def _stopped(self, attempt: Attempt, reason: StopReason) -> FinishItem:
        job = attempt.job
        if reason is StopReason.TIMEOUT:
            return self._failed(attempt, "Timeout", f"timed out after {job.timeout}s")
        if reason is StopReason.CANCEL:
            return FinishItem(
                job.id,
                attempt.lease_token,
                Outcome.CANCELLED,
                error=self._error(attempt, "Cancelled", "cancelled by an operator"),
            )
        # SHUTDOWN gives the job back; LEASE_LOST is never recorded (the worker drops it).
        return FinishItem(job.id, attempt.lease_token, Outcome.RELEASED)

    def _failed(
        self,
        attempt: Attempt,
        kind: str,
        message: str,
        *,
        retryable: bool = True,
        tb: str | None = None,
        exit_code: int | None = None,
        stderr_tail: str | None = None,
    ) -> FinishItem:
        job = attempt.job
        error = self._error(attempt, kind, message, tb=tb, exit_code=exit_code, stderr_tail=stderr_tail)
        delay = retry_delay(job.backoff, job.attempt)
        return FinishItem(
            job.id, attempt.lease_token, Outcome.FAILED, error=error, retry_delay=delay, retryable=retryable
        )

    def _error(
        self,
        attempt: Attempt,
        kind: str,
        message: str,
        *,
        tb: str | None = None,
        exit_code: int | None = None,
        stderr_tail: str | None = None,
    ) -> AttemptError:
        return AttemptError(
            attempt=attempt.job.attempt,
            type=_clean(kind),
            message=_clean(message),
            at=self._clock.now(),
            traceback=_clean(tb),
            exit_code=exit_code,
            stderr_tail=_clean(stderr_tail),
        )


def _output(line: str) -> JSON:
    """A command's output, for the steps after it: its last stdout line, decoded when it is JSON."""
    try:
        return orjson.loads(line) if line else None
    except orjson.JSONDecodeError:
        return line


def _describe(exc: BaseException) -> str:
    """The exception's message, or its type's name when it has none or cannot say it."""
    try:
        return str(exc) or type(exc).__name__
    except Exception:  # a job's exception with a broken __str__
        return f"{type(exc).__name__} (its message could not be read)"


@overload
def _clean(text: str) -> str: ...
@overload
def _clean(text: None) -> None: ...
def _clean(text: str | None) -> str | None:
    """Text that every backend can store: lone surrogates (from ``errors="surrogateescape"`` data, or an
    exception message built from bytes) become escapes instead of failing the whole batch of outcomes."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")
