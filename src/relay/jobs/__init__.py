"""Job documents, durations and retry backoff: the rules a job must follow before storage sees it.

- :mod:`relay.jobs.document`: ``parse_job_document`` / ``parse_job_documents`` turn job documents
  (DESIGN.md section 3) into :class:`~relay.types.NewJob`; every problem raises
  :class:`~relay.errors.InvalidJobError` naming the field's dotted path.
- :mod:`relay.jobs.models`: ``JobDocument``, the document's pydantic model and JSON schema.
- :mod:`relay.jobs.durations`: ``"30s"``, ``"5m"``, ``"1h30m"`` and numbers of seconds.
- :mod:`relay.jobs.backoff`: the delay before a retry, from a :class:`~relay.types.Backoff` policy.

>>> from relay.jobs import parse_job_document
>>> parse_job_document({"type": "shell", "payload": {"command": "echo hi"}}).payload["argv"]
['echo', 'hi']
"""

from __future__ import annotations

from relay.jobs.backoff import backoff_ceiling, retry_delay
from relay.jobs.document import MAX_CHAIN_DEPTH, document_from_job, parse_job_document, parse_job_documents
from relay.jobs.durations import MAX_DURATION_SECONDS, format_duration, parse_duration
from relay.jobs.models import JobDocument, ShellPayload, TaskPayload

__all__ = [
    "MAX_CHAIN_DEPTH",
    "MAX_DURATION_SECONDS",
    "JobDocument",
    "ShellPayload",
    "TaskPayload",
    "backoff_ceiling",
    "document_from_job",
    "format_duration",
    "parse_duration",
    "parse_job_document",
    "parse_job_documents",
    "retry_delay",
]
