"""The job document's shape as pydantic models: field types, bounds, defaults and the JSON schema.

These models check each field on its own. Rules that tie fields together (argv from ``command`` and
``args``, ``run_at`` against ``delay``, ``backoff_max`` against ``backoff_base``) and the building of a
:class:`~relay.types.NewJob` live in :mod:`relay.jobs.document`, the one entry point.

Every model is strict (no ``"3"`` for ``3``, no ``1`` for ``true``) and forbids unknown fields. ``null``
is the same as leaving a field out, because JSON clients often write it for "not set".
:func:`validate_model` turns pydantic's errors into :class:`~relay.errors.InvalidJobError` with the
dotted path of the offending field, so that no ``ValidationError`` leaves this package.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SkipValidation,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails

from relay.errors import InvalidFieldError, InvalidJobError
from relay.jobs.durations import parse_duration
from relay.jobs.json_values import join_path, short_repr
from relay.types import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_QUEUE,
    BackoffKind,
    JobKind,
    UniqueWhile,
)

QUEUE_PATTERN = r"^[A-Za-z0-9_.:-]+$"
# Dotted, with no empty part and no whitespace. Looser than Python identifiers on purpose: the SDK names
# a task "module.qualname", and a function defined in a function has "<locals>" in its qualname.
TASK_NAME_PATTERN = r"^[^\s.]+(?:\.[^\s.]+)*$"

_JOB_KINDS = frozenset(kind.value for kind in JobKind)
_UNIQUE_WHILE = frozenset(choice.value for choice in UniqueWhile)
_BACKOFF_KINDS = frozenset(kind.value for kind in BackoffKind)
_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^(\d+(\.\d+)?|(\d+(\.\d+)?(ms|d|h|m|s))+)$"},
    ],
    "description": "seconds, or a string such as '250ms', '30s', '5m', '1h', '2d' or '1h30m'",
}


def _job_kind(value: object) -> JobKind:
    if isinstance(value, str) and value.lower() in _JOB_KINDS:
        return JobKind(value.lower())
    raise ValueError(f"expected 'shell', 'task' or 'external' (any case), got {short_repr(value)}")


def _backoff_kind(value: object) -> BackoffKind:
    if isinstance(value, str) and value.lower() in _BACKOFF_KINDS:
        return BackoffKind(value.lower())
    raise ValueError(f"expected 'exponential', 'linear' or 'fixed' (any case), got {short_repr(value)}")


def _unique_while(value: object) -> UniqueWhile:
    if isinstance(value, str) and value.lower() in _UNIQUE_WHILE:
        return UniqueWhile(value.lower())
    raise ValueError(f"expected 'stored' or 'active', got {short_repr(value)}")


def _seconds(value: object) -> float:
    # The field is named by validate_model from pydantic's location, so none is given here.
    return parse_duration(value, "")


def _utc_datetime(value: object) -> datetime:
    expected = "expected an ISO-8601 date-time such as '2026-01-31T09:00:00Z' (no offset means UTC)"
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {short_repr(value)}")
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"{expected}, got {short_repr(value)}") from None


def _no_nul(text: str) -> str:
    # exec() refuses NUL bytes; rejecting them here keeps that failure out of the worker.
    if "\0" in text:
        raise ValueError("must not contain a NUL character")
    return text


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or blank")
    return text


def _env_name(name: str) -> str:
    if not name or "=" in name or "\0" in name:
        raise ValueError(f"environment variable names must be non-empty, without '=' or NUL, got {name!r}")
    return name


Seconds = Annotated[float, BeforeValidator(_seconds), WithJsonSchema(_DURATION_SCHEMA)]
PositiveSeconds = Annotated[Seconds, Field(gt=0)]
ShellText = Annotated[str, AfterValidator(_no_nul)]
UtcDateTime = Annotated[
    datetime,
    BeforeValidator(_utc_datetime),
    WithJsonSchema({"type": "string", "format": "date-time", "description": "ISO 8601; no offset means UTC"}),
]
Name255 = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_nul)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_absent(cls, data: Any) -> Any:
        # Dropping nulls before validation lets every field keep one plain type and its real default.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class ShellPayload(_Strict):
    """The payload of a ``shell`` job. Only ``"shell": true`` runs the command through ``/bin/sh -c``."""

    command: Annotated[
        ShellText,
        AfterValidator(_not_blank),
        Field(description="the program to run (with args), or a command line split like a shell would"),
    ]
    args: list[ShellText] | None = Field(None, description="the program's arguments; no shell is used")
    shell: bool = False
    env: dict[Annotated[str, AfterValidator(_env_name)], ShellText] = Field(default_factory=dict)
    cwd: Annotated[str, Field(min_length=1), AfterValidator(_no_nul)] | None = None
    timeout: PositiveSeconds | None = Field(None, description="the job's timeout; a top-level one wins")


class TaskPayload(_Strict):
    """The payload of a ``task`` job: a registered Python function and its JSON arguments."""

    task: Annotated[
        str,
        Field(
            min_length=1,
            max_length=255,
            pattern=TASK_NAME_PATTERN,
            description="the task's registered name, such as 'billing.charge'",
        ),
    ]
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class JobDocument(_Strict):
    """A job document (DESIGN.md section 3): what ``relay submit``, the HTTP API and the SDK accept.

    Use :func:`relay.jobs.parse_job_document` to turn one into a :class:`~relay.types.NewJob`; this
    model alone does not check the rules that tie fields together.
    """

    type: Annotated[
        JobKind,
        BeforeValidator(_job_kind),
        Field(description="the kind of job: 'shell', 'task' or 'external' (any case)"),
    ]
    # Which payload model applies depends on ``type``: relay.jobs.document validates the payload once
    # ``type`` is known, so that its errors are about one model. The union is for the JSON schema.
    payload: Annotated[ShellPayload | TaskPayload | Any, SkipValidation] = Field(
        None, description="a ShellPayload, a TaskPayload, or any JSON value for an external job"
    )
    id: Name255 | None = Field(None, description="a client-chosen unique id")
    queue: Annotated[str, Field(min_length=1, max_length=128, pattern=QUEUE_PATTERN)] = DEFAULT_QUEUE
    priority: Annotated[int, Field(ge=-1_000_000, le=1_000_000, description="higher runs first")] = 0
    run_at: UtcDateTime | None = Field(None, description="the earliest start; not with delay")
    delay: Seconds | None = Field(None, description="start this long after enqueue; not with run_at")
    max_retries: Annotated[int, Field(ge=0, le=1000)] = DEFAULT_MAX_RETRIES
    backoff: Annotated[BackoffKind, BeforeValidator(_backoff_kind)] = BackoffKind.EXPONENTIAL
    backoff_base: PositiveSeconds | None = Field(None, description="default 1s (at most backoff_max)")
    backoff_max: PositiveSeconds | None = Field(None, description="default 1h (at least backoff_base)")
    timeout: PositiveSeconds | None = Field(None, description="how long an attempt may run")
    lease: Annotated[Seconds, Field(ge=1, description="the heartbeat window")] = DEFAULT_LEASE_SECONDS
    idempotency_key: Name255 | None = None
    unique_for: PositiveSeconds | None = Field(
        None, description="how long the idempotency key keeps duplicates out (default: while stored)"
    )
    unique_while: Annotated[
        UniqueWhile,
        BeforeValidator(_unique_while),
        Field(description="'stored' (the default) or 'active': free again once the job has ended"),
    ] = UniqueWhile.STORED
    rate_key: Name255 | None = Field(None, description="its own token bucket when the queue has a key_rate")
    concurrency_key: Name255 | None = Field(None, description="counted against the queue's key_concurrency")
    ordering_key: Name255 | None = Field(None, description="jobs of one key run one at a time, in order")
    on_success: JobDocument | None = Field(None, description="enqueued when this job completes")
    on_failure: JobDocument | None = Field(None, description="enqueued when this job is dead")
    tags: Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=50)] = Field(
        default_factory=list
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


_ModelT = TypeVar("_ModelT", bound=BaseModel)


def validate_model(
    model: type[_ModelT], data: object, path: str, error_type: type[InvalidFieldError] = InvalidJobError
) -> _ModelT:
    """``model`` validated from ``data``; the first problem raises ``error_type`` under ``path``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        # "[key]" marks a problem with a dict key rather than its value; the key itself is the place.
        loc = [part for part in error["loc"] if part != "[key]"]
        where = path
        for part in loc:
            where = join_path(where, part)
        raise error_type(where, _message(error, model, loc)) from None


_DURATION_FIELDS = frozenset({"delay", "timeout", "lease", "backoff_base", "backoff_max", "unique_for"})
_PATTERN_HINTS = {
    QUEUE_PATTERN: "expected only letters, digits, '_', '.', ':' or '-'",
    TASK_NAME_PATTERN: "expected a dotted name without spaces, such as 'billing.charge'",
}
# Pydantic's own wording ("Input should be a valid dictionary or instance of JobDocument") names
# Python types; a job document's author thinks in JSON.
_MESSAGES = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "bool_type": "expected true or false",
    "list_type": "expected an array",
    "dict_type": "expected an object",
    "model_type": "expected an object",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters long",
    "too_long": "must have at most {max_length} items, not {actual_length}",
}
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than_equal": ("le", "at most"),
}


def _message(error: ErrorDetails, model: type[BaseModel], loc: list[int | str]) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    if kind == "missing":
        described = model.model_fields.get(str(loc[-1])) if loc else None
        hint = described.description if described is not None else None
        return f"this field is required: {hint}" if hint else "this field is required"
    if kind == "extra_forbidden":
        return f"unknown field; expected one of: {', '.join(model.model_fields)}"
    if kind == "value_error":
        cause = ctx.get("error")
        return cause.message if isinstance(cause, InvalidFieldError) else str(cause)
    expectation = _expectation(kind, ctx, loc, error["msg"])
    # A list's length says more than its quoted (and cut) content.
    return expectation if kind == "too_long" else f"{expectation}, got {short_repr(error['input'])}"


def _expectation(kind: str, ctx: dict[str, Any], loc: list[int | str], fallback: str) -> str:
    if kind == "string_pattern_mismatch":
        return _PATTERN_HINTS.get(ctx.get("pattern", ""), fallback)
    if kind in _MESSAGES:
        return _MESSAGES[kind].format(**ctx)
    bound = _BOUNDS.get(kind)
    if bound is None:
        return fallback
    key, words = bound
    # Duration bounds read better with their unit: "at least 1s" rather than "at least 1".
    unit = "s" if loc and loc[-1] in _DURATION_FIELDS else ""
    return f"must be {words} {ctx[key]}{unit}"
