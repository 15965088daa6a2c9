"""Schedule specs (relay.jobs.cron): cron through cronsim, aliases, intervals, timezones and DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relay.errors import InvalidScheduleError
from relay.jobs.cron import parse_spec

BERLIN_FALL_BACK = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)  # the night of Oct 24-25: 03:00 -> 02:00
BERLIN_SPRING_FORWARD = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)  # Mar 28-29: 02:00 -> 03:00


def ticks(spec: str, timezone: str, start: datetime, n: int) -> list[datetime]:
    parsed = parse_spec(spec, timezone)
    out: list[datetime] = []
    moment = start
    for _ in range(n):
        nxt = parsed.next_after(moment)
        assert nxt is not None
        out.append(nxt)
        moment = nxt
    return out


def test_five_fields_in_a_timezone() -> None:
    [tick] = ticks("0 9 * * 1-5", "Europe/Berlin", datetime(2026, 3, 6, 12, 0, tzinfo=UTC), 1)  # a Friday
    assert tick == datetime(2026, 3, 9, 8, 0, tzinfo=UTC)  # Monday 09:00 in Berlin (UTC+1)
    assert tick.tzinfo is UTC


def test_next_is_strictly_after_and_latest_is_at_or_before() -> None:
    spec = parse_spec("*/5 * * * *")
    on_tick = datetime(2026, 1, 1, 10, 5, tzinfo=UTC)
    assert spec.next_after(on_tick) == datetime(2026, 1, 1, 10, 10, tzinfo=UTC)
    assert spec.latest_at_or_before(on_tick) == on_tick
    assert spec.latest_at_or_before(on_tick + timedelta(minutes=4)) == on_tick


ALIASES = [
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@HOURLY", "0 * * * *"),
]


@pytest.mark.parametrize(("alias", "expanded"), ALIASES)
def test_aliases(alias: str, expanded: str) -> None:
    start = datetime(2026, 5, 17, 13, 30, tzinfo=UTC)
    assert parse_spec(alias).next_after(start) == parse_spec(expanded).next_after(start)


def test_a_daily_time_runs_once_on_the_night_the_clocks_go_back() -> None:
    runs = ticks("30 2 * * *", "Europe/Berlin", BERLIN_FALL_BACK, 2)
    assert runs == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST, the first of the two 02:30s
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET the next night
    ]


def test_a_daily_time_that_does_not_exist_runs_when_the_clocks_go_forward() -> None:
    runs = ticks("30 2 * * *", "Europe/Berlin", BERLIN_SPRING_FORWARD, 2)
    assert runs[0] == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST: 02:30 never happened
    assert runs[1] == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)


def test_an_hourly_schedule_keeps_real_hours_across_dst() -> None:
    runs = ticks("0 * * * *", "Europe/Berlin", datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 4)
    assert [r - runs[0] for r in runs] == [timedelta(hours=h) for h in range(4)]


def test_intervals_tick_at_multiples_since_the_epoch() -> None:
    spec = parse_spec("every 30s", "Asia/Tokyo")
    start = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
    assert spec.next_after(start) == datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert spec.latest_at_or_before(start) == datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert parse_spec("every 1h30m").interval == 5400.0
    assert parse_spec("EVERY   5m").interval == 300.0


def test_describe_says_it_in_words() -> None:
    assert parse_spec("@hourly").describe() == "At the start of every hour"
    assert parse_spec("every 30s").describe() == "every 30s"


@pytest.mark.parametrize(
    ("spec", "timezone", "field", "words"),
    [
        ("61 * * * *", "UTC", "schedule", "not a valid cron expression"),
        ("* * * *", "UTC", "schedule", "expected 5 fields"),
        ("* * * * * *", "UTC", "schedule", "expected 5 fields"),
        ("@reboot", "UTC", "schedule", "unknown alias"),
        ("0 0 30 2 *", "UTC", "schedule", "Bad day-of-month"),
        ("every 500ms", "UTC", "schedule", "at least 1s"),
        ("every soon", "UTC", "schedule", "needs a duration"),
        ("", "UTC", "schedule", "expected a cron expression"),
        ("* * * * *", "Mars/Olympus", "timezone", "unknown timezone"),
        ("* * * * *", "", "timezone", "IANA timezone"),
    ],
)
def test_bad_specs_name_the_field(spec: str, timezone: str, field: str, words: str) -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        parse_spec(spec, timezone, field="schedule")
    assert caught.value.field == field
    assert words in caught.value.message


@pytest.mark.parametrize("spec", ["every 1.1s", "every 0.7m", "every 1h0.3s"])
def test_an_interval_tick_is_never_its_own_next_tick(spec: str) -> None:
    """Ticks in whole microseconds: with floats, a tick of "every 1.1s" came back as its own next."""
    parsed = parse_spec(spec)
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        tick = parsed.next_after(moment)
        assert tick is not None
        assert tick > moment
        assert parsed.latest_at_or_before(tick) == tick
        moment = tick


@pytest.mark.parametrize(
    ("spec", "timezone"),
    [("30 2 * * *", "Europe/Berlin"), ("15 1 * * *", "America/New_York"), ("*/7 * * * *", "Europe/Berlin")],
)
def test_ticks_around_the_repeated_hour_are_on_the_right_side_of_the_moment(spec: str, timezone: str) -> None:
    """cronsim reads a time in the second run of a repeated hour as the first: the walk corrects it."""
    parsed = parse_spec(spec, timezone)
    fall_back = {
        "Europe/Berlin": datetime(2025, 10, 26, tzinfo=UTC),
        "America/New_York": datetime(2025, 11, 2, 3, tzinfo=UTC),
    }
    start = fall_back[timezone]
    for seconds in range(0, 4 * 3600, 53):
        moment = start + timedelta(seconds=seconds)
        after, before = parsed.next_after(moment), parsed.latest_at_or_before(moment)
        assert after is not None
        assert before is not None
        assert before <= moment < after
        assert parsed.next_after(before) == after  # no tick in between was skipped


def test_the_ticks_around_the_second_0210_of_the_night() -> None:
    # 01:10Z on 2025-10-26 is 02:10 CET, the second 02:10 of that night in Berlin.
    parsed = parse_spec("30 2 * * *", "Europe/Berlin")
    moment = datetime(2025, 10, 26, 1, 10, tzinfo=UTC)
    assert parsed.latest_at_or_before(moment) == datetime(2025, 10, 26, 0, 30, tzinfo=UTC)
    assert parsed.next_after(moment) == datetime(2025, 10, 27, 1, 30, tzinfo=UTC)
