"""The API fuzzed from its own OpenAPI document with schemathesis: no input, valid or not, gets a 5xx,
and every response matches what the document says (status code, content type, body schema).

Each operation gets a bounded number of generated cases, valid and invalid, derandomized so that a
run is repeatable (a few hundred requests in all, in-process against each backend of FLOW_BACKENDS:
the memory one, and a real SQLite file).
"""

from __future__ import annotations

from typing import Any

import hypothesis
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relay.app import Relay
from relay.server import ServerSettings, create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 10}  # per operation


Operation = schemathesis.APIOperation[Any, Any, Any, Any]


def fuzz(operation: Operation, mode: GenerationMode, calls: list[int]) -> None:
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def run(case: schemathesis.Case[Operation]) -> None:
        calls.append(case.call_and_validate(checks=CHECKS, headers=LOOPBACK).status_code)

    run()


# With auth off the server answers only loopback Host names (against DNS rebinding): say we are one.
LOOPBACK = {"Host": "127.0.0.1:4000"}


def test_no_server_errors_and_responses_as_documented(flow_relay: Relay) -> None:
    app = create_app(flow_relay, ServerSettings(events_interval=0))
    # The event stream never ends on its own: its own tests cover it against a real server.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=LOOPBACK).exclude(
        path="/api/v1/events"
    )
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) == 36  # every operation but the event stream
    negated = 0
    calls: list[int] = []
    for operation in operations:
        for mode in EXAMPLES:
            try:
                fuzz(operation, mode, calls)
            except hypothesis.errors.Unsatisfiable:
                # Nothing in this operation can be made invalid (no parameters, or only free strings).
                assert mode is GenerationMode.NEGATIVE, operation.label
                continue
            except Exception as exc:
                exc.add_note(f"while fuzzing {operation.label} with {mode.value} cases")
                raise
            negated += mode is GenerationMode.NEGATIVE
    assert negated >= 10
    assert len(calls) >= 300, len(calls)  # requests sent, bounded by EXAMPLES
    assert not [status for status in calls if status >= 500]
