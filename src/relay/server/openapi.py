"""The OpenAPI document: FastAPI's, plus what it cannot see.

Job documents are read from the raw body and validated by :func:`relay.jobs.parse_job_document` (so
that errors name the field, in Relay's error shape), not by FastAPI; the operations declare their
request bodies here instead, with the schema of :class:`relay.jobs.models.JobDocument`. The runner
protocol's bodies are declared the same way, and the bearer scheme when auth is on.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from relay.jobs.models import JobDocument
from relay.server.auth import PUBLIC_PATHS
from relay.server.runner import RunnerJob
from relay.types import BackoffKind, JobKind

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


def install_openapi(app: FastAPI, auth: bool) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in (JobDocument, RunnerJob):
                _add_model(schemas, model)
            _any_case(schemas["JobDocument"]["properties"])
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
