"""What a running job sees of itself: ``relay.job_context()`` inside a task.

The context lives in a ``contextvars.ContextVar``, so it follows the job into the thread that runs a
sync task (``asyncio.to_thread`` copies the context) and into the tasks an async job starts.
Progress and checkpoints are only recorded here; the heartbeat thread saves them with the next beat.
"""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass, field

import orjson

from relay.types import JSON, Job


class JobCancelledError(Exception):
    """Raised by :meth:`JobContext.raise_if_cancelled`: the attempt ends as ``cancelled``."""


@dataclass
class JobContext:
    job: Job
    # Written by the job (progress, checkpoint), read by the heartbeat thread: guarded by _lock.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _progress: float | None = None
    _checkpoint: JSON = None
    _checkpoint_dirty: bool = False
    # Set once by the worker's loop, read by the job (any thread): a plain flag is enough under the
    # GIL, and a threading.Event per job (a Condition and a lock) was measurable at thousands a second.
    _cancel: bool = False
    # A workflow step's inputs: the results of the steps it depends on (relay.runtime.workflows).
    inputs: dict[str, JSON] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def last_checkpoint(self) -> JSON:
        """The checkpoint saved by an earlier attempt (or the job's initial state), or None."""
        return self.job.checkpoint

    @property
    def cancel_requested(self) -> bool:
        """True once an operator asked to cancel this job: stop soon, or be stopped."""
        return self._cancel

    def raise_if_cancelled(self) -> None:
        """Stop here if an operator asked to cancel this job (the job ends ``cancelled``).

        A job that returns normally after a cancel request ends ``completed``: its work was done."""
        if self._cancel:
            raise JobCancelledError(f"job {self.job.id} was cancelled")

    def progress(self, fraction: float) -> None:
        """Report progress between 0 and 1; saved with the next heartbeat."""
        with self._lock:
            self._progress = min(1.0, max(0.0, float(fraction)))

    def checkpoint(self, state: JSON) -> None:
        """Save JSON state; it is handed back as ``last_checkpoint`` if the job is retried.

        Raises TypeError here, in the job, for a value that is not JSON: sent with the heartbeat of
        every running job, it would otherwise fail them all."""
        try:
            copy = orjson.loads(orjson.dumps(state))
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise TypeError(f"a checkpoint must be a JSON value: {exc}") from None
        with self._lock:
            self._checkpoint = copy
            self._checkpoint_dirty = True

    def take_updates(self) -> tuple[float | None, JSON, bool]:
        """Progress and checkpoint to send with a heartbeat (a checkpoint only once, when it changed)."""
        with self._lock:
            dirty, self._checkpoint_dirty = self._checkpoint_dirty, False
            return self._progress, self._checkpoint if dirty else None, dirty

    def request_cancel(self) -> None:
        self._cancel = True


_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("relay_job_context")


def job_context() -> JobContext:
    """The context of the job running in this task or thread. Raises LookupError outside a job."""
    try:
        return _current.get()
    except LookupError:
        raise LookupError("relay.job_context() is only available inside a running job") from None


def bind(ctx: JobContext) -> contextvars.Token[JobContext]:
    return _current.set(ctx)


def unbind(token: contextvars.Token[JobContext]) -> None:
    _current.reset(token)
