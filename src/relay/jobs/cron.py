"""Schedule specs: when a schedule's ticks fall. Parsed here, never in storage (SQL and Lua cannot).

Three forms, each in an IANA timezone (``UTC`` by default)::

    "*/5 * * * *"      a standard 5-field cron expression (minute hour day-of-month month day-of-week),
                       evaluated by cronsim, which also handles the DST changes of the timezone: a daily
                       02:30 runs once on the night the clocks go back, and at 03:00 on the night they
                       go forward (as Debian's cron does)
    "@hourly"          an alias: @yearly (@annually), @monthly, @weekly, @daily (@midnight), @hourly
    "every 30s"        a fixed interval (any duration of relay.jobs.durations, at least 1s), its ticks at
                       the multiples of the interval since the Unix epoch, so every node computes the
                       same ones whatever its start time; the timezone plays no part

Ticks are aware datetimes in UTC. A tick is a point in time, not a run: the scheduler enqueues one job
for it (``relay.runtime.maintenance.cron``).

>>> spec = parse_spec("0 9 * * 1-5", "Europe/Berlin")
>>> spec.next_after(datetime(2026, 3, 6, 12, 0, tzinfo=UTC)).isoformat()
'2026-03-09T08:00:00+00:00'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from relay.errors import InvalidJobError, InvalidScheduleError
from relay.jobs.durations import parse_duration

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EVERY = "every "
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A parsed spec: ``cron`` (5 fields, an alias already expanded) or ``interval`` seconds."""

    text: str
    timezone: str
    cron: str | None = None
    interval: float | None = None

    def next_after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after ``moment`` (cronsim refuses expressions that never match, such
        as February 30th, when they are parsed); None past the last date cronsim can reach."""
        if self.interval is not None:
            since = (moment - _EPOCH).total_seconds()
            return _EPOCH + timedelta(seconds=(math.floor(since / self.interval) + 1) * self.interval)
        assert self.cron is not None
        local = moment.astimezone(ZoneInfo(self.timezone))
        try:
            return next(CronSim(self.cron, local)).astimezone(UTC)
        except (StopIteration, CronSimError):
            return None

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last tick at or before ``moment`` (the one a late scheduler fires); None if none."""
        if self.interval is not None:
            since = (moment - _EPOCH).total_seconds()
            return _EPOCH + timedelta(seconds=math.floor(since / self.interval) * self.interval)
        assert self.cron is not None
        local = (moment + timedelta(microseconds=1)).astimezone(ZoneInfo(self.timezone))
        try:
            return next(CronSim(self.cron, local, reverse=True)).astimezone(UTC)
        except (StopIteration, CronSimError):
            return None

    def describe(self) -> str:
        """In words, for people: "At the start of every hour", "every 30s"."""
        if self.interval is not None:
            return self.text
        assert self.cron is not None
        try:
            return str(CronSim(self.cron, datetime.now(ZoneInfo(self.timezone))).explain())
        except Exception:  # explain() covers most expressions, not all: the expression says it too
            return self.cron


def parse_spec(text: object, timezone: object = "UTC", *, field: str = "spec") -> ScheduleSpec:
    """A :class:`ScheduleSpec`, or :class:`InvalidScheduleError` naming ``field`` (or ``timezone``)."""
    zone = parse_timezone(timezone)
    if not isinstance(text, str) or not text.strip():
        raise InvalidScheduleError(
            field, "expected a cron expression, an alias such as @hourly, or 'every 30s'"
        )
    spec = " ".join(text.split())
    if spec.lower().startswith(_EVERY):
        return ScheduleSpec(spec, zone, interval=_interval(spec[len(_EVERY) :], field))
    cron = ALIASES.get(spec.lower(), spec)
    if cron.startswith("@"):
        raise InvalidScheduleError(field, f"unknown alias {spec!r}; expected one of {', '.join(ALIASES)}")
    if len(cron.split()) != 5:
        raise InvalidScheduleError(
            field, f"expected 5 fields (minute hour day month weekday), got {len(cron.split())}: {spec!r}"
        )
    try:
        CronSim(cron, datetime.now(UTC))
    except CronSimError as exc:
        raise InvalidScheduleError(field, f"not a valid cron expression {spec!r}: {exc}") from None
    return ScheduleSpec(spec, zone, cron=cron)


def parse_timezone(value: object, *, field: str = "timezone") -> str:
    """An IANA timezone name that this machine knows (``tzdata``), such as ``Europe/Berlin``."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidScheduleError(field, "expected an IANA timezone name such as 'Europe/Berlin' or 'UTC'")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidScheduleError(field, f"unknown timezone {value!r}") from None
    return value


def _interval(text: str, field: str) -> float:
    try:
        seconds = parse_duration(text.strip(), field)
    except InvalidJobError as exc:
        raise InvalidScheduleError(
            field, f"'every' needs a duration such as 30s or 5m: {exc.message}"
        ) from None
    if seconds < 1:
        raise InvalidScheduleError(field, f"an interval must be at least 1s, got {text.strip()!r}")
    return seconds


def describe_spec(spec: str, timezone: str) -> str:
    """A stored schedule's spec in words; the spec itself when this machine cannot parse it (written
    by a newer Relay, or a timezone its tzdata does not know)."""
    try:
        return parse_spec(spec, timezone).describe()
    except InvalidScheduleError:
        return spec
