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

from collections.abc import Iterator
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
_FOLD_STEPS = 2_000  # ticks on the wrong side of a moment in a repeated hour: an hour of minutes, with room


def _to_us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


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
            step = self._step_us()
            return _from_us((_to_us(moment) // step + 1) * step)
        # cronsim reads the local wall time and ignores `fold`: during the hour repeated when the clocks
        # go back, it answers from the first of the two, which may be before `moment`. Walk on until
        # the answer is really after it (at most a tick or two).
        for tick in self._walk(moment, reverse=False):
            if tick > moment:
                return tick
        return None

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last tick at or before ``moment`` (the one a late scheduler fires); None if none."""
        if self.interval is not None:
            step = self._step_us()
            return _from_us(_to_us(moment) // step * step)
        for tick in self._walk(moment + timedelta(microseconds=1), reverse=True):
            if tick <= moment:
                return tick
        return None

    def _step_us(self) -> int:
        # Whole microseconds: with floats, a tick of "every 1.1s" divided back by the interval could land
        # just below its own multiple, and the tick after a tick would be the tick itself.
        assert self.interval is not None
        return max(1, round(self.interval * 1_000_000))

    def _walk(self, start: datetime, *, reverse: bool) -> Iterator[datetime]:
        """Ticks from ``start`` on (or back), in UTC; a bounded number, enough to step over a DST fold.

        cronsim reads a local wall time as its first occurrence: a ``start`` in the second run of a
        repeated hour reads as up to an hour earlier. Forward, the caller skips the ticks before it;
        backward, the walk starts that much later, so that no tick between is missed."""
        assert self.cron is not None
        local = start.astimezone(ZoneInfo(self.timezone))
        if reverse and local.fold:
            first, second = local.replace(fold=0).utcoffset(), local.utcoffset()
            if first is not None and second is not None:
                local = (start + (first - second)).astimezone(ZoneInfo(self.timezone))
        try:
            ticks = CronSim(self.cron, local, reverse=reverse)
            for _ in range(_FOLD_STEPS):
                yield next(ticks).astimezone(UTC)
        except (StopIteration, CronSimError):
            return

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
