"""The OpenAPI document: FastAPI's, plus what it cannot see.

Job documents are read from the raw body and validated by :func:`relay.jobs.parse_job_document` (so
that errors name the field, in Relay's error shape), not by FastAPI; the operations declare their
request bodies here instead, with the schema of :class:`relay.jobs.models.JobDocument`. The runner
protocol's bodies, the limits document (:class:`relay.jobs.limits.LimitsDocument`), the schedule
document (:class:`ScheduleDocument`) and a workflow trigger's parameters (:class:`WorkflowTrigger`) are
declared the same way, and the bearer scheme when auth is on.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from relay.jobs.limits import LimitsDocument
from relay.jobs.models import JobDocument
from relay.runtime.schedules import NAME_PATTERN
from relay.server.auth import PUBLIC_PATHS
from relay.server.runner import RunnerJob
from relay.types import BackoffKind, CatchUp, JobKind

_REF = "#/components/schemas/{model}"


def _body(schema: dict[str, Any], description: str, required: bool = True) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": required,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


JOB_DOCUMENT_BODY = _body({"$ref": _REF.format(model="JobDocument")}, "a job document (docs/jobs.md)")
JOB_DOCUMENTS_BODY = _body(
    {"type": "array", "items": {"$ref": _REF.format(model="JobDocument")}}, "an array of job documents"
)
RUNNER_JOB_BODY = _body({"$ref": _REF.format(model="RunnerJob")}, "a relay-rs job")
ANY_JSON_BODY = _body(
    {}, "any JSON: saved as the job's state (an empty body keeps the state)", required=False
)
LIMITS_DOCUMENT_BODY = _body(
    {"$ref": _REF.format(model="LimitsDocument")}, "a queue's limits (docs/flow-control.md); {} clears them"
)
SCHEDULE_DOCUMENT_BODY = _body({"$ref": _REF.format(model="ScheduleDocument")}, "a schedule document")
WORKFLOW_TRIGGER_BODY = _body(
    {"$ref": _REF.format(model="WorkflowTrigger")}, "the run's parameters (or no body)", required=False
)


def _job_or_command(schema: dict[str, Any]) -> None:
    """Exactly one of ``job`` and ``command``, and neither null."""
    for name in ("job", "command"):
        field = schema["properties"][name]
        field["anyOf"] = [each for each in field["anyOf"] if each.get("type") != "null"]
        field.pop("default", None)
    schema["oneOf"] = [{"required": ["job"]}, {"required": ["command"]}]


class ScheduleDocument(BaseModel):
    """A schedule as ``PUT /api/v1/schedules/{name}`` takes it: a job document (``job``) or a shell
    command (``command``), run at every tick of ``schedule``. Checked by
    :func:`relay.runtime.schedules.schedule_from_document`; this model only documents it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_job_or_command)

    name: str | None = Field(None, pattern=NAME_PATTERN.pattern, description="the path's name, if given")
    schedule: str = Field(description="a 5-field cron expression, an alias such as @hourly, or 'every 30s'")
    timezone: str = Field("UTC", description="an IANA timezone name, such as Europe/Berlin")
    catch_up: CatchUp = Field(CatchUp.ONCE, description="for ticks missed while no scheduler ran")
    job: JobDocument | None = Field(None, description="the job each tick enqueues")
    command: str | list[str] | None = Field(None, description="short for a shell job running this command")


class WorkflowTrigger(BaseModel):
    """What ``POST /api/v1/workflows/{name}/runs`` takes. Checked by
    :func:`relay.workflows.definitions.resolve_params`; this model only documents it."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, str] = Field(
        default_factory=dict, description="by name; a parameter left out takes its default"
    )


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template=_REF)
    schemas.update(schema.pop("$defs", {}))
    if "$ref" not in schema:  # a recursive model comes back as a reference to its own $defs entry
        schemas[model.__name__] = schema


def _case_insensitive(words: list[str]) -> str:
    return "^(" + "|".join("".join(f"[{c.upper()}{c}]" for c in word) for word in words) + ")$"


def _any_case(properties: dict[str, Any]) -> None:
    """A job document's ``type`` and ``backoff`` are read in any case ("SHELL" is the format existing
    users write), while responses always use the lower-case enum: say so in the document's schema."""
    for name, enum in (("type", JobKind), ("backoff", BackoffKind)):
        words = [member.value for member in enum]
        properties[name] = {
            "type": "string",
            "pattern": _case_insensitive(words),
            "description": f"one of {', '.join(words)}, in any case",
        } | ({"default": properties[name]["default"]} if "default" in properties[name] else {})


def _rates_as_text(properties: dict[str, Any]) -> None:
    """A rate is a number of jobs a second, or text such as "100/s" (relay.jobs.limits.parse_rate)."""
    for name in ("rate", "key_rate"):
        properties[name] = {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^\s*[0-9.eE+-]+\s*(/\s*[A-Za-z0-9.]+\s*)?$"},
                {"type": "null"},
            ],
            "default": None,
            "description": "jobs a second: a number, or '100/s', '10/m', '5/30s'",
        }


def install_openapi(app: FastAPI, auth: bool) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in (JobDocument, RunnerJob, LimitsDocument, ScheduleDocument, WorkflowTrigger):
                _add_model(schemas, model)
            _any_case(schemas["JobDocument"]["properties"])
            _rates_as_text(schemas["LimitsDocument"]["properties"])
            _use_error_body(document)
            if auth:
                _add_security(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise it


def _add_security(document: dict[str, Any]) -> None:
    document["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    document["security"] = [{"bearer": []}]
    for path, operations in document.get("paths", {}).items():
        if path in PUBLIC_PATHS:
            for operation in operations.values():
                operation["security"] = []


def _use_error_body(document: dict[str, Any]) -> None:
    """FastAPI documents its own 422 shape for operations with parameters; Relay answers every error
    (its own validation errors included) as ErrorBody."""
    error_body = {"$ref": _REF.format(model="ErrorBody")}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if schema.get("$ref", "").endswith("/HTTPValidationError"):
                    response["content"]["application/json"]["schema"] = error_body
                    response["description"] = "invalid input; field names it"
    for name in ("HTTPValidationError", "ValidationError"):
        document["components"]["schemas"].pop(name, None)
