"""Durations as job documents write them: seconds as numbers, or strings such as ``"30s"`` or ``"1h30m"``.

Accepted forms (DESIGN.md section 3):

- a number of seconds ``>= 0`` (``int`` or ``float``, never ``bool``): ``30``, ``1.5``;
- a numeric string: ``"30"``, ``"1.5"``;
- one or more ``<number><unit>`` parts with units ``d``, ``h``, ``m``, ``s``, ``ms``, largest first and
  each at most once: ``"250ms"``, ``"5m"``, ``"1h30m"``, ``"1.5h"``.

Units are lowercase only: ``"5M"`` could mean minutes or months, so it is rejected rather than guessed.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from relay.errors import InvalidJobError
from relay.jobs.json_values import json_type, short_repr

#: The longest duration accepted: 100 years. Anything longer is a mistake, and ``now + duration`` must
#: stay inside ``datetime``'s range for every delay, timeout and backoff computed from it.
MAX_DURATION_SECONDS = 100 * 365 * 86_400.0

# Largest unit first: the order in which the parts of a compound must appear.
_UNIT_SECONDS: dict[str, Decimal] = {
    "d": Decimal(86_400),
    "h": Decimal(3_600),
    "m": Decimal(60),
    "s": Decimal(1),
    "ms": Decimal("0.001"),
}
_UNIT_RANK = {unit: rank for rank, unit in enumerate(_UNIT_SECONDS)}
_NUMBER = r"\d+(?:\.\d+)?"
_NUMERIC_STRING = re.compile(_NUMBER)
# "ms" is tried before "m" so that "250ms" is not read as 250 minutes followed by a stray "s".
_PART = re.compile(rf"({_NUMBER})(ms|d|h|m|s)")
_COMPOUND = re.compile(rf"(?:{_NUMBER}(?:ms|d|h|m|s))+")

#: What the error messages say is accepted.
EXPECTED = (
    "expected a duration: a number of seconds >= 0, or a string such as "
    "'250ms', '30s', '5m', '1h', '2d' or '1h30m'"
)


def parse_duration(value: object, field: str) -> float:
    """Seconds from a duration written in a job document; ``field`` names it in errors.

    >>> parse_duration("1h30m", "timeout")
    5400.0
    >>> parse_duration(2, "delay")
    2.0

    Raises :class:`~relay.errors.InvalidJobError` (with ``field``) for anything else: negative or
    non-finite numbers, booleans, unknown units, and durations longer than 100 years.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidJobError(field, f"{EXPECTED}; got {json_type(value)} {short_repr(value)}")
    if isinstance(value, str):
        seconds = _parse_string(value, field)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidJobError(field, f"{EXPECTED}; got {short_repr(value)}")
    else:
        seconds = value
    if seconds < 0:
        raise InvalidJobError(field, f"{EXPECTED}; got a negative duration {short_repr(value)}")
    # Compared before converting: an int too large for a float would raise OverflowError in float().
    if seconds > MAX_DURATION_SECONDS:
        raise InvalidJobError(
            field, f"must be at most 100 years ({MAX_DURATION_SECONDS:.0f}s); got {short_repr(value)}"
        )
    return float(seconds)


def _parse_string(text: str, field: str) -> float:
    stripped = text.strip()
    if _NUMERIC_STRING.fullmatch(stripped):
        return float(stripped)
    if not _COMPOUND.fullmatch(stripped):
        raise InvalidJobError(field, f"{EXPECTED}; got {short_repr(text)}")
    total = Decimal(0)
    last_rank = -1
    for number, unit in _PART.findall(stripped):
        if _UNIT_RANK[unit] <= last_rank:
            raise InvalidJobError(
                field,
                f"{EXPECTED}, with units from largest to smallest, each at most once (d h m s ms); "
                f"got {short_repr(text)}",
            )
        last_rank = _UNIT_RANK[unit]
        # Decimal keeps "1.1h" at exactly 3960 seconds; floats would drift before the final rounding.
        total += Decimal(number) * _UNIT_SECONDS[unit]
    return float(total)


def format_duration(seconds: float) -> str:
    """A duration for people, to the millisecond, in the compound form :func:`parse_duration` reads.

    >>> format_duration(90)
    '1m30s'
    >>> format_duration(0.25)
    '250ms'
    >>> format_duration(93784.5)
    '1d2h3m4.5s'
    """
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    # Whole milliseconds, so that the split below is exact integer arithmetic.
    total_ms = round(seconds * 1000)
    if total_ms < 1000:
        return f"{total_ms}ms" if total_ms else "0s"
    days, rest = divmod(total_ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    if millis:
        parts.append(f"{secs}.{millis:03d}".rstrip("0") + "s")
    elif secs:
        parts.append(f"{secs}s")
    return "".join(parts)
