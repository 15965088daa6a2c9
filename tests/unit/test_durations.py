"""Durations: what job documents may write, what they may not, and how Relay prints them back."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.errors import InvalidJobError
from relay.jobs.durations import MAX_DURATION_SECONDS, format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
        ("30", 30.0),
        ("1.5", 1.5),
        (" 45 ", 45.0),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172_800.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("1.1h", 3960.0),  # exact: no float drift from 1.1 * 3600
        ("1d2h3m4s5ms", 93_784.005),
        ("0s", 0.0),
        (MAX_DURATION_SECONDS, MAX_DURATION_SECONDS),
    ],
)
def test_accepted_durations(value: object, seconds: float) -> None:
    result = parse_duration(value, "timeout")
    assert result == seconds
    assert type(result) is float


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        -1,
        -0.5,
        math.nan,
        math.inf,
        "",
        "   ",
        "abc",
        "5x",
        "-5s",
        "+5s",
        "5 m",
        "1h 30m",
        "30m1h",  # smallest unit first
        "1m1m",  # a unit twice
        "5M",  # uppercase: minutes or months?
        "1e3",
        "1.",
        ".5s",
        "s",
        [],
        {},
        10**400,
        MAX_DURATION_SECONDS + 1,
        "36501d",
    ],
)
def test_rejected_durations_name_the_field_and_say_what_is_accepted(value: object) -> None:
    with pytest.raises(InvalidJobError) as caught:
        parse_duration(value, "payload.timeout")
    assert caught.value.field == "payload.timeout"
    assert str(caught.value).startswith("payload.timeout: ")
    assert "'30s'" in caught.value.message or "at most 100 years" in caught.value.message


def test_unit_order_error_explains_the_order() -> None:
    with pytest.raises(InvalidJobError, match="largest to smallest"):
        parse_duration("30m1h", "delay")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "0s"),
        (0.25, "250ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (90, "1m30s"),
        (300, "5m"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86_400 * 2 + 3600, "2d1h"),
        (93_784.5, "1d2h3m4.5s"),
        (61.005, "1m1.005s"),
        (59.9996, "1m"),  # rounded to the millisecond, then carried
        (-90, "-1m30s"),
        (math.inf, "inf"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=int(MAX_DURATION_SECONDS) * 1000))
def test_format_then_parse_round_trips_whole_milliseconds(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds), "delay") == seconds


@given(st.floats(min_value=0, max_value=MAX_DURATION_SECONDS))
def test_numbers_of_seconds_are_taken_as_they_are(seconds: float) -> None:
    assert parse_duration(seconds, "delay") == seconds


@given(st.integers(min_value=0, max_value=10**9), st.from_regex(r"[0-9]{1,6}", fullmatch=True))
def test_numeric_strings_read_like_floats(whole: int, fraction: str) -> None:
    text = f"{whole}.{fraction}"
    assert parse_duration(text, "delay") == float(text)
