"""One structured log line per job event: claimed, completed, failed, retried, dead, cancelled,
released, lease_lost. Text for people by default; JSON with ``--log-format json``."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from relay.types import Job

log = logging.getLogger("relay.worker")


def job_event(event: str, job: Job, level: int = logging.INFO, **fields: Any) -> None:
    data = {
        "event": event,
        "job_id": job.id,
        "queue": job.queue,
        "kind": job.kind.value,
        "attempt": job.attempt,
        **fields,
    }
    log.log(level, "job %s %s", event, job.id, extra={"relay": data})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "relay", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(out, default=str).decode()
        except TypeError:  # what orjson refuses (lone surrogates, integers past 64 bits), json writes
            return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        data = getattr(record, "relay", None)
        if data:
            extras = " ".join(f"{k}={v}" for k, v in data.items() if k not in ("event", "job_id"))
            line = f"{line} {extras}"
        return line


def configure_logging(fmt: str = "text", level: int | str = logging.INFO) -> None:
    """One handler on the root logger, so that libraries' warnings (psycopg's pool, uvicorn) come out
    in the same format as Relay's own lines; Relay logs at ``level`` (a number or a name such as
    ``"debug"``), libraries at WARNING and above."""
    if isinstance(level, str):
        level = logging.getLevelNamesMapping()[level.upper()]
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    relay = logging.getLogger("relay")
    relay.handlers.clear()
    relay.setLevel(level)
    relay.propagate = True
