"""Job event log lines."""

from __future__ import annotations

import json
import logging

from relay.runtime.events import JsonFormatter


def record(**relay: object) -> logging.LogRecord:
    rec = logging.LogRecord("relay.worker", logging.INFO, __file__, 1, "job %s %s", ("failed", "j1"), None)
    rec.relay = {"event": "failed", "job_id": "j1", **relay}
    return rec


def test_json_lines_carry_the_event_fields() -> None:
    line = json.loads(JsonFormatter().format(record(attempt=2, duration=0.5)))
    assert (line["event"], line["job_id"], line["attempt"], line["duration"]) == ("failed", "j1", 2, 0.5)
    assert line["message"] == "job failed j1"


def test_values_orjson_refuses_still_make_a_line() -> None:
    # A lone surrogate (an error message built from undecodable bytes) and a huge integer.
    line = json.loads(JsonFormatter().format(record(error="bad \udcff byte", big=2**70)))
    assert line["error"] == "bad \udcff byte"
    assert line["big"] == 2**70
