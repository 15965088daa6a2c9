"""A handle on a workflow run: read its state and its steps, wait for it to end."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from relay.errors import RelayError, WorkflowRunNotFoundError
from relay.types import JSON, RunState, WorkflowRun


class WorkflowFailedError(RelayError):
    """The run ended failed or cancelled; ``run`` holds every step's state."""

    code = "workflow_failed"

    def __init__(self, run: WorkflowRun) -> None:
        self.run = run
        failed = [s.name for s in run.steps if s.state is not None and s.state.value in ("dead", "cancelled")]
        super().__init__(
            f"workflow run {run.id} ({run.workflow}) ended {run.state}: {', '.join(failed) or '-'}"
        )


class RunReader(Protocol):
    def get_run(self, run_id: str) -> WorkflowRun: ...

    async def get_run_async(self, run_id: str) -> WorkflowRun: ...


class RunHandle:
    """Returned by ``relay.workflow(...)`` and ``relay.start(canvas)``. ``created`` is False when the
    run existed already (a run id used twice)."""

    def __init__(self, reader: RunReader, run: WorkflowRun, created: bool = True) -> None:
        self._reader = reader
        self.run = run
        self.created = created

    @property
    def id(self) -> str:
        return self.run.id

    def __repr__(self) -> str:
        return f"<RunHandle {self.id} {self.run.workflow} {self.run.state}>"

    def refresh(self) -> WorkflowRun:
        self.run = self._reader.get_run(self.id)
        return self.run

    async def refresh_async(self) -> WorkflowRun:
        self.run = await self._reader.get_run_async(self.id)
        return self.run

    @property
    def state(self) -> RunState:
        return self.refresh().state

    def results(self) -> dict[str, JSON]:
        """Each step's result, by name (None for a step that has not completed)."""
        return {s.name: s.result for s in self.run.steps}

    def wait(self, timeout: float = 60.0, poll: float = 0.05) -> WorkflowRun:
        """Block until the run ended; return it, or raise WorkflowFailedError / TimeoutError."""
        deadline = time.monotonic() + timeout
        while self.refresh().state is RunState.RUNNING:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"workflow run {self.id} is still running after {timeout}s")
            time.sleep(poll)
            poll = min(poll * 1.5, 1.0)
        return self._ended()

    async def wait_async(self, timeout: float = 60.0, poll: float = 0.05) -> WorkflowRun:
        async with asyncio.timeout(timeout):
            while (await self.refresh_async()).state is RunState.RUNNING:
                await asyncio.sleep(poll)
                poll = min(poll * 1.5, 1.0)
        return self._ended()

    def _ended(self) -> WorkflowRun:
        if self.run.state is not RunState.COMPLETED:
            raise WorkflowFailedError(self.run)
        return self.run


def require_run(run: WorkflowRun | None, run_id: str) -> WorkflowRun:
    if run is None:
        raise WorkflowRunNotFoundError(run_id)
    return run
