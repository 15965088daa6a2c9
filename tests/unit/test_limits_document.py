"""Queue limits as people write them (relay.jobs.limits): rates, bursts, counts, and the errors."""

from __future__ import annotations

import pytest

from relay.client.wire import limits_from_json, limits_to_json
from relay.errors import InvalidLimitError
from relay.jobs.limits import format_rate, parse_limits, parse_rate
from relay.types import NO_LIMITS, OrderingDead, QueueLimits, RateLimit


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        ("100/s", 100.0),
        ("10/m", 10 / 60),
        ("10/min", 10 / 60),
        ("3/h", 3 / 3600),
        ("24/d", 24 / 86400),
        ("5/30s", 5 / 30),
        ("1/1h30m", 1 / 5400),
        ("2.5/second", 2.5),
        (" 7 / minute ", 7 / 60),
        (50, 50.0),
        (0.5, 0.5),
        ("12", 12.0),
    ],
)
def test_rates(text: object, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize(
    "bad", ["0/s", "-1/s", 0, -3, "fast", "10/fortnight", "10/0s", "nan/s", True, None, []]
)
def test_bad_rates(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_rate(bad)


def test_a_burst_left_out_is_one_second_of_the_rate() -> None:
    assert parse_limits({"rate": "100/s"}).rate == RateLimit(100.0, 100)
    assert parse_limits({"rate": "10/m"}).rate == RateLimit(10 / 60, 1)
    assert parse_limits({"key_rate": "2.5/s", "key_burst": 7}).key_rate == RateLimit(2.5, 7)


def test_every_field() -> None:
    limits = parse_limits(
        {
            "rate": "100/s",
            "burst": 20,
            "key_rate": "10/m",
            "key_burst": 10,
            "concurrency": 5,
            "key_concurrency": 1,
            "ordering_dead": "BLOCK",
        }
    )
    assert limits == QueueLimits(
        rate=RateLimit(100.0, 20),
        key_rate=RateLimit(10 / 60, 10),
        concurrency=5,
        key_concurrency=1,
        ordering_dead=OrderingDead.BLOCK,
    )
    assert parse_limits({}) == NO_LIMITS
    assert parse_limits({"rate": None, "concurrency": None}) == NO_LIMITS


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        ({"rate": "0/s"}, "rate", "more than 0"),
        ({"rate": -5}, "rate", "more than 0"),
        ({"rate": "10/s", "burst": 0}, "burst", "at least 1"),
        ({"burst": 5}, "burst", "needs a rate"),
        ({"key_burst": 5}, "key_burst", "needs a key_rate"),
        ({"concurrency": 0}, "concurrency", "at least 1"),
        ({"key_concurrency": -1}, "key_concurrency", "at least 1"),
        ({"concurrency": "5"}, "concurrency", "expected an integer"),
        ({"concurrency": 2.5}, "concurrency", "expected an integer"),
        ({"ordering_dead": "skip"}, "ordering_dead", "'continue' or 'block'"),
        ({"rate_limit": 5}, "rate_limit", "unknown field"),
    ],
)
def test_bad_limits_name_the_field(doc: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(InvalidLimitError) as caught:
        parse_limits(doc)
    assert caught.value.field == field
    assert words in caught.value.message


def test_the_wire_form_reads_back_as_the_same_limits() -> None:
    limits = QueueLimits(RateLimit(100.0, 20), RateLimit(1 / 60, 3), 5, 2, OrderingDead.BLOCK)
    assert limits_from_json(limits_to_json(limits)) == limits
    assert parse_limits(limits_to_json(limits)) == limits  # what the API answers, it also accepts
    assert limits_from_json(limits_to_json(NO_LIMITS)) == NO_LIMITS


@pytest.mark.parametrize(
    ("rate", "text"),
    [(100.0, "100/s"), (10 / 60, "10/m"), (1 / 3600, "1/h"), (2 / 86400, "2/d"), (0.3, "18/m")],
)
def test_format_rate(rate: float, text: str) -> None:
    assert format_rate(rate) == text
