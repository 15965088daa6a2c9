"""A handle on an enqueued job: read its state, wait for its result."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from relay.errors import JobNotFoundError, RelayError
from relay.types import Job, JobState


class JobFailedError(RelayError):
    """The job ended dead or cancelled; ``job`` holds its errors."""

    code = "job_failed"

    def __init__(self, job: Job) -> None:
        self.job = job
        last = job.errors[-1] if job.errors else None
        detail = f": {last.type}: {last.message}" if last else ""
        super().__init__(f"job {job.id} ended {job.state}{detail}")


class JobReader(Protocol):
    def get_job(self, job_id: str) -> Job: ...

    async def get_job_async(self, job_id: str) -> Job: ...


class JobHandle:
    """Returned by every enqueue. ``created`` is False when an idempotency key matched an existing job."""

    def __init__(self, reader: JobReader, job: Job, created: bool = True) -> None:
        self._reader = reader
        self.job = job
        self.created = created

    @property
    def id(self) -> str:
        return self.job.id

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} {self.job.state}>"

    def refresh(self) -> Job:
        self.job = self._reader.get_job(self.id)
        return self.job

    async def refresh_async(self) -> Job:
        self.job = await self._reader.get_job_async(self.id)
        return self.job

    @property
    def state(self) -> JobState:
        return self.refresh().state

    def wait(self, timeout: float = 60.0, poll: float = 0.05) -> Any:
        """Block until the job is final; return its result, or raise JobFailedError / TimeoutError."""
        deadline = time.monotonic() + timeout
        while not self.refresh().is_final:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} is still {self.job.state} after {timeout}s")
            time.sleep(poll)
            poll = min(poll * 1.5, 1.0)
        return self._result()

    async def wait_async(self, timeout: float = 60.0, poll: float = 0.05) -> Any:
        async with asyncio.timeout(timeout):
            while not (await self.refresh_async()).is_final:
                await asyncio.sleep(poll)
                poll = min(poll * 1.5, 1.0)
        return self._result()

    def _result(self) -> Any:
        if self.job.state is not JobState.COMPLETED:
            raise JobFailedError(self.job)
        return self.job.result


def require(job: Job | None, job_id: str) -> Job:
    if job is None:
        raise JobNotFoundError(job_id)
    return job
