"""Flow control, for people: a queue's limits in words, the limits form, and schedules as rows.

Limits are checked by :func:`relay.jobs.limits.parse_limits`, the same code the CLI and the API use;
this module only turns the form's text fields into its flat document, and its errors back into a
message per field. Schedule specs are described by :meth:`relay.jobs.cron.ScheduleSpec.describe`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from relay.errors import InvalidLimitError
from relay.jobs.limits import format_rate, parse_limits
from relay.types import JSON, CatchUp, JobState, OrderingDead, QueueInfo, QueueLimits, RateLimit

LIMIT_FIELDS = ("rate", "burst", "key_rate", "key_burst", "concurrency", "key_concurrency", "ordering_dead")
_COUNT_FIELDS = frozenset({"burst", "key_burst", "concurrency", "key_concurrency"})
# What stands in for a rate already found wrong, so that checking the other fields goes on (and its
# burst is not refused for "needing a rate" only because the rate was mistyped); any other wrong field
# is left out, which is always valid. Never stored: a form with any error stores nothing.
_RATE_STAND_IN = 1.0
_INTEGER = re.compile(r"[+-]?\d{1,64}")
MAX_FIELD_CHARS = 64

ORDERING_WORDS = {
    OrderingDead.CONTINUE: "continue: the next job of its ordering key runs, the dead one waits in the DLQ",
    OrderingDead.BLOCK: "block: its ordering key waits until the dead job is requeued (and ends) or purged",
}
CATCH_UP_WORDS = {
    CatchUp.ONCE: "ticks missed while no scheduler ran: enqueued once",
    CatchUp.SKIP: "ticks missed while no scheduler ran: skipped",
}


def number(value: float) -> str:
    """``20``, ``12.5``, ``0.3``: a count of tokens for people."""
    return str(round(value)) if abs(value - round(value)) < 0.05 else f"{value:.1f}"


def rate_words(limit: RateLimit | None, per: str = "") -> str:
    """``100/s, bursts of 20`` (``per`` is added after the rate: ``10/m per rate key``)."""
    if limit is None:
        return "no limit"
    return f"{format_rate(limit.rate)}{per}, bursts of {limit.burst}"


def running(queue: QueueInfo) -> int:
    return queue.counts.get(JobState.RUNNING, 0)


@dataclass(frozen=True, slots=True)
class LimitsView:
    """A queue's limits and what they use now, in words (the queue page and its data endpoint)."""

    rate: str
    tokens: str
    key_rate: str
    concurrency: str
    key_concurrency: str
    ordering_dead: str
    compact: str  # the overview's cell: "50/s · 3/5 running", or "" without any limit

    def to_json(self) -> dict[str, JSON]:
        return {
            "rate": self.rate,
            "tokens": self.tokens,
            "key_rate": self.key_rate,
            "concurrency": self.concurrency,
            "key_concurrency": self.key_concurrency,
            "ordering_dead": self.ordering_dead,
            "compact": self.compact,
        }


def limits_view(queue: QueueInfo) -> LimitsView:
    limits, busy = queue.limits, running(queue)
    if limits.rate is None or queue.tokens is None:
        tokens = "—" if limits.rate is None else "unknown"
    else:
        tokens = f"{number(queue.tokens)} of {limits.rate.burst}"
    if limits.concurrency is None:
        concurrency = f"no limit ({busy:,} running)"
    else:
        slots = "slot" if limits.concurrency == 1 else "slots"
        concurrency = f"{busy:,} of {limits.concurrency:,} {slots} in use"
    key_concurrency = (
        "no limit"
        if limits.key_concurrency is None
        else f"at most {limits.key_concurrency:,} running per concurrency key"
    )
    return LimitsView(
        rate=rate_words(limits.rate),
        tokens=tokens,
        key_rate=rate_words(limits.key_rate, " per rate key"),
        concurrency=concurrency,
        key_concurrency=key_concurrency,
        ordering_dead=ORDERING_WORDS[limits.ordering_dead],
        compact=compact(queue),
    )


def compact_parts(queue: QueueInfo) -> list[tuple[str, str]]:
    """The overview's limits cell, in parts (a role for the script that keeps ``slots`` current, and
    the text): ``50/s``, ``10/m per key``, ``3/5 running``, ``1 running per key``."""
    limits = queue.limits
    parts = []
    if limits.rate is not None:
        parts.append(("rate", format_rate(limits.rate.rate)))
    if limits.key_rate is not None:
        parts.append(("key-rate", f"{format_rate(limits.key_rate.rate)} per key"))
    if limits.concurrency is not None:
        parts.append(("slots", f"{running(queue):,}/{limits.concurrency:,} running"))
    if limits.key_concurrency is not None:
        parts.append(("key-slots", f"{limits.key_concurrency:,} running per key"))
    return parts


def compact(queue: QueueInfo) -> str:
    """The overview's limits cell as one line: ``50/s · 3/5 running``; "" without any limit."""
    return " · ".join(text for _, text in compact_parts(queue))


def form_values(limits: QueueLimits) -> dict[str, str]:
    """The limits form filled in with ``limits`` (an empty field is "no limit")."""
    rate, key_rate = limits.rate, limits.key_rate
    return {
        "rate": "" if rate is None else format_rate(rate.rate),
        "burst": "" if rate is None else str(rate.burst),
        "key_rate": "" if key_rate is None else format_rate(key_rate.rate),
        "key_burst": "" if key_rate is None else str(key_rate.burst),
        "concurrency": "" if limits.concurrency is None else str(limits.concurrency),
        "key_concurrency": "" if limits.key_concurrency is None else str(limits.key_concurrency),
        "ordering_dead": limits.ordering_dead.value,
    }


def submitted(form: Mapping[str, str]) -> dict[str, str]:
    """The limits fields of a form post, as typed (trimmed), to show again with its errors."""
    return {name: form.get(name, "").strip()[:MAX_FIELD_CHARS] for name in LIMIT_FIELDS}


def _document(values: Mapping[str, str]) -> dict[str, JSON]:
    """The flat limits document of ``relay.jobs.limits`` from the form's text: an empty field is left
    out (no limit), a whole number in a count field is a number, anything else stays text (so that
    ``parse_limits`` says what is wrong with it)."""
    doc: dict[str, JSON] = {}
    for name in LIMIT_FIELDS:
        text = values.get(name, "")
        if not text:
            continue
        doc[name] = int(text) if name in _COUNT_FIELDS and _INTEGER.fullmatch(text) else text
    return doc


def check_limits(values: Mapping[str, str]) -> tuple[QueueLimits | None, dict[str, str]]:
    """The limits of a submitted form, or None and a message for each field that is wrong."""
    doc = _document(values)
    errors: dict[str, str] = {}
    for _ in range(len(LIMIT_FIELDS) + 1):  # each wrong field is set aside: one more pass, at most
        try:
            limits = parse_limits(doc)
        except InvalidLimitError as exc:
            field = exc.field.split(".")[0]
            if field not in LIMIT_FIELDS or field in errors:
                errors.setdefault(field if field in LIMIT_FIELDS else "form", exc.message)
                return None, errors
            errors[field] = exc.message
            if field in ("rate", "key_rate"):
                doc[field] = _RATE_STAND_IN
            else:
                doc.pop(field, None)
            continue
        return (None if errors else limits), errors
    return None, errors
