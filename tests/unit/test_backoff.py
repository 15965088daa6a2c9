"""Retry backoff: worked examples, then the properties every policy keeps for every attempt."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.jobs.backoff import backoff_ceiling, retry_delay
from relay.types import Backoff, BackoffKind

EXPONENTIAL = BackoffKind.EXPONENTIAL
LINEAR = BackoffKind.LINEAR
FIXED = BackoffKind.FIXED


@st.composite
def policies(draw: st.DrawFn, kinds: tuple[BackoffKind, ...] = tuple(BackoffKind)) -> Backoff:
    """Valid policies, as relay.jobs.document builds them: 0 < base <= max."""
    base = draw(st.floats(min_value=1e-3, max_value=1e6))
    cap = base * draw(st.floats(min_value=1.0, max_value=1e6))
    return Backoff(draw(st.sampled_from(kinds)), base, cap)


attempts = st.integers(min_value=1, max_value=10_000)
# Past 10**13 even the slowest generated policy (max = base * 1e6) sits at its max.
huge_attempts = st.integers(min_value=10**13, max_value=10**400)


def test_exponential_ceiling_doubles_up_to_max() -> None:
    policy = Backoff(EXPONENTIAL, base=1.0, max=5.0)
    assert [backoff_ceiling(policy, n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_linear_and_fixed_delays_are_their_ceilings() -> None:
    linear = Backoff(LINEAR, base=2.0, max=7.0)
    fixed = Backoff(FIXED, base=3.0, max=10.0)
    assert [retry_delay(linear, n) for n in range(1, 5)] == [2.0, 4.0, 6.0, 7.0]
    assert [retry_delay(fixed, n) for n in range(1, 4)] == [3.0, 3.0, 3.0]


def test_fixed_base_above_max_is_capped() -> None:
    assert retry_delay(Backoff(FIXED, base=30.0, max=10.0), 1) == 10.0


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    # Full jitter, not "half" or "equal" jitter: draws reach both ends of [0, ceiling].
    policy = Backoff(EXPONENTIAL, base=1.0, max=3600.0)
    rng = random.Random(7)
    draws = [retry_delay(policy, 4, rng) for _ in range(2000)]
    assert min(draws) < 0.1
    assert max(draws) > 7.9
    assert all(0.0 <= d <= 8.0 for d in draws)


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_start_at_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        retry_delay(Backoff(), attempt)


@given(policies(), attempts)
def test_never_negative_and_never_above_max(policy: Backoff, attempt: int) -> None:
    delay = retry_delay(policy, attempt)
    assert 0.0 <= delay <= policy.max
    assert 0.0 <= backoff_ceiling(policy, attempt) <= policy.max


@given(policies((EXPONENTIAL,)), attempts, st.integers())
def test_exponential_never_above_its_ceiling(policy: Backoff, attempt: int, seed: int) -> None:
    assert retry_delay(policy, attempt, random.Random(seed)) <= backoff_ceiling(policy, attempt)


@given(policies((EXPONENTIAL, LINEAR)), attempts)
def test_ceiling_is_non_decreasing_in_attempt(policy: Backoff, attempt: int) -> None:
    assert backoff_ceiling(policy, attempt) <= backoff_ceiling(policy, attempt + 1)


@given(policies((LINEAR,)), attempts)
def test_linear_delay_is_non_decreasing(policy: Backoff, attempt: int) -> None:
    assert retry_delay(policy, attempt) <= retry_delay(policy, attempt + 1)


@given(policies((FIXED,)), attempts, attempts)
def test_fixed_delay_is_constant(policy: Backoff, first: int, second: int) -> None:
    assert retry_delay(policy, first) == retry_delay(policy, second) == policy.base


@given(policies(), st.integers(), st.lists(attempts, min_size=1, max_size=20))
def test_same_seed_same_delays(policy: Backoff, seed: int, sequence: list[int]) -> None:
    rng_a, rng_b = random.Random(seed), random.Random(seed)
    assert [retry_delay(policy, n, rng_a) for n in sequence] == [
        retry_delay(policy, n, rng_b) for n in sequence
    ]


@given(policies(), huge_attempts)
def test_huge_attempts_do_not_overflow(policy: Backoff, attempt: int) -> None:
    delay = retry_delay(policy, attempt, random.Random(0))
    assert 0.0 <= delay <= policy.max
    if policy.kind is not FIXED:
        assert backoff_ceiling(policy, attempt) == policy.max
