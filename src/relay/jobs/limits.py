"""Queue limits as people write them (``100/s``, burst 20, concurrency 5), checked, into QueueLimits.

The flat document the CLI, the HTTP API and the dashboard send (every field optional, null = no limit)::

    {"rate": "100/s", "burst": 20,           the whole queue: 100 jobs a second, bursts of 20
     "key_rate": "10/m", "key_burst": 10,    each rate_key: 10 a minute
     "concurrency": 5,                       at most 5 running at once, fleet-wide
     "key_concurrency": 1,                   at most 1 running per concurrency_key
     "ordering_dead": "continue"}            or "block" (docs/flow-control.md)

A rate is ``N/unit`` (``s``, ``m``, ``h``, ``d``, or a duration such as ``30s``: ``5/30s``) or a plain
number of jobs per second. A burst left out is one second's worth of the rate (at least 1).

>>> parse_limits({"rate": "100/s", "burst": 20, "concurrency": 5}).rate
RateLimit(rate=100.0, burst=20)
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BeforeValidator, Field

from relay.errors import InvalidJobError, InvalidLimitError
from relay.jobs.durations import parse_duration
from relay.jobs.json_values import short_repr
from relay.jobs.models import _Strict, validate_model
from relay.types import OrderingDead, QueueLimits, RateLimit

MAX_RATE = 1_000_000_000.0  # jobs a second: beyond it, a limit is a typo
MAX_COUNT = 1_000_000_000
_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_UNITS |= {"h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
_ORDERING = frozenset(choice.value for choice in OrderingDead)


def parse_rate(value: object) -> float:
    """Jobs per second from ``"100/s"``, ``"10/m"``, ``"5/30s"`` or a number; > 0 and finite."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a rate such as '100/s' or '10/m', got {short_repr(value)}")
    if isinstance(value, str):
        count_text, slash, unit = value.strip().partition("/")
        try:
            count = float(count_text)
        except ValueError:
            raise ValueError(f"expected a rate such as '100/s' or '10/m', got {short_repr(value)}") from None
        per = _per_seconds(unit.strip(), value) if slash else 1.0
        rate = count / per
    else:
        rate = float(value)
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"must be more than 0 jobs a second, got {short_repr(value)}")
    if rate > MAX_RATE:
        raise ValueError(f"must be at most {MAX_RATE:.0f} jobs a second, got {short_repr(value)}")
    return rate


def _per_seconds(unit: str, whole: str) -> float:
    if unit.lower() in _UNITS:
        return _UNITS[unit.lower()]
    try:
        seconds = parse_duration(unit, "")
    except InvalidJobError:
        raise ValueError(f"unknown unit {unit!r} in {whole!r}: expected s, m, h, d or a duration") from None
    if seconds <= 0:
        raise ValueError(f"the period of {whole!r} must be longer than 0")
    return seconds


def _rate(value: object) -> float:
    return parse_rate(value)


def _ordering(value: object) -> OrderingDead:
    if isinstance(value, str) and value.lower() in _ORDERING:
        return OrderingDead(value.lower())
    raise ValueError(f"expected 'continue' or 'block', got {short_repr(value)}")


Rate = Annotated[float, BeforeValidator(_rate), Field(description="jobs per second, or '100/s', '10/m'")]
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]


class LimitsDocument(_Strict):
    """A queue's limits as sent by the CLI, the API and the dashboard (see the module docstring)."""

    rate: Rate | None = None
    burst: Count | None = Field(None, description="the bucket's size (default: one second of rate)")
    key_rate: Rate | None = None
    key_burst: Count | None = None
    concurrency: Count | None = None
    key_concurrency: Count | None = None
    ordering_dead: Annotated[OrderingDead, BeforeValidator(_ordering)] = OrderingDead.CONTINUE


def parse_limits(doc: object, *, path: str = "") -> QueueLimits:
    """Checked :class:`QueueLimits` from a limits document; errors name the field."""
    parsed = validate_model(LimitsDocument, doc, path, InvalidLimitError)
    for rate, burst, name in (
        (parsed.rate, parsed.burst, "burst"),
        (parsed.key_rate, parsed.key_burst, "key_burst"),
    ):
        if rate is None and burst is not None:
            raise InvalidLimitError(name, f"a {name} needs a {name.replace('burst', 'rate')}")
    return QueueLimits(
        rate=_bucket(parsed.rate, parsed.burst),
        key_rate=_bucket(parsed.key_rate, parsed.key_burst),
        concurrency=parsed.concurrency,
        key_concurrency=parsed.key_concurrency,
        ordering_dead=parsed.ordering_dead,
    )


def _bucket(rate: float | None, burst: int | None) -> RateLimit | None:
    if rate is None:
        return None
    return RateLimit(rate, burst if burst is not None else default_burst(rate))


def default_burst(rate: float) -> int:
    """One second's worth of ``rate``, at least 1: a bucket that smooths without starving batches."""
    return max(1, min(MAX_COUNT, math.floor(rate)))


def format_rate(rate: float) -> str:
    """``100/s``, ``10/m``, ``2/h``: the largest unit that gives a whole number, for people."""
    for unit, seconds in (("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0)):
        count = rate * seconds
        if abs(count - round(count)) < 1e-9 and round(count) >= 1:
            return f"{round(count)}/{unit}"
    return f"{rate:g}/s"
