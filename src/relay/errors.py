"""Relay's errors. Every error a user can meet names what is wrong in one line.

This module imports nothing else of Relay (the HTTP client shares it with the server).
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error Relay raises on purpose."""

    code = "relay_error"  # a stable machine-readable code, used by the HTTP API


class InvalidFieldError(RelayError, ValueError):
    """Some input is invalid. ``field`` is a dotted path to the problem, such as ``payload.command``."""

    code = "invalid"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class InvalidJobError(InvalidFieldError):
    """A job document (or option) is invalid."""

    code = "invalid_job"


class InvalidLimitError(InvalidFieldError):
    """A queue limit is invalid (``rate``, ``burst``, ``concurrency``...)."""

    code = "invalid_limit"


class InvalidScheduleError(InvalidFieldError):
    """A schedule is invalid: its spec, timezone, catch-up policy or job."""

    code = "invalid_schedule"


class ScheduleNotFoundError(RelayError, LookupError):
    code = "not_found"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no schedule named {name!r}")


class JobNotFoundError(RelayError, LookupError):
    code = "not_found"

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}")


class DuplicateJobError(RelayError):
    """A client-chosen job id is already taken. Nothing of the batch was inserted."""

    code = "duplicate_id"

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"a job with id {job_id!r} already exists")


class InvalidTransitionError(RelayError):
    """An operator asked for a state change the job's current state does not allow."""

    code = "invalid_state"

    def __init__(self, job_id: str, state: str, action: str) -> None:
        self.job_id = job_id
        self.state = state
        self.action = action
        super().__init__(f"cannot {action} job {job_id!r}: it is {state}")


class StorageUnavailableError(RelayError):
    """Storage cannot be reached, or stayed busy past every retry. Safe to retry later."""

    code = "storage_unavailable"


class ConfigurationError(RelayError, ValueError):
    """A setting or URL is invalid."""

    code = "configuration"


class TaskNotFoundError(RelayError, LookupError):
    """A task job names a function no worker has registered."""

    code = "task_not_found"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no task registered under the name {name!r}")


class WorkflowRunNotFoundError(RelayError, LookupError):
    code = "not_found"

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no workflow run with id {run_id!r}")


class WorkflowNotFoundError(RelayError, LookupError):
    """No workflow definition has this name."""

    code = "not_found"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no workflow named {name!r}")


class InvalidWorkflowError(InvalidFieldError):
    """A workflow definition (or a trigger's parameters) is invalid; ``field`` names where, such as
    ``workflows/ci.yaml:7: steps[2].depends_on``."""

    code = "invalid_workflow"
