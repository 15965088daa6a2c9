"""Retry delays: pure functions of a :class:`~relay.types.Backoff` policy and the attempt that failed.

For the ``n``-th attempt (``n >= 1``), with ``base`` and ``max`` in seconds:

============  =====================================  ===============================
kind          ceiling                                delay
============  =====================================  ===============================
exponential   ``min(max, base * 2**(n-1))``          ``uniform(0, ceiling)`` (full jitter)
linear        ``min(max, base * n)``                 the ceiling
fixed         ``min(max, base)``                     the ceiling
============  =====================================  ===============================

Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter") spreads the retries of jobs that
failed together, such as after an outage of the service they call, instead of retrying them in waves.
"""

from __future__ import annotations

import random

from relay.types import Backoff, BackoffKind

# 2.0 ** 1024 raises OverflowError. From 2 ** 1023 on, any realistic ``base`` already exceeds any
# ``max``; capping the exponent keeps the ceiling non-decreasing and the arithmetic in floats.
_MAX_EXPONENT = 1023
# An int attempt past 2**53 can't be converted exactly, and past ~1e308 not at all; the cap is far
# above any real attempt count, and float multiplication saturates to inf instead of raising.
_MAX_LINEAR_FACTOR = 2**53

# Not the module-level ``random`` functions: a program seeding those for its own reasons must not
# make every worker retry on the same schedule.
_default_rng = random.Random()


def backoff_ceiling(policy: Backoff, attempt: int) -> float:
    """The un-jittered bound of the delay after ``attempt`` (>= 1) failed, in seconds.

    >>> backoff_ceiling(Backoff(BackoffKind.EXPONENTIAL, base=1.0, max=60.0), 4)
    8.0
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1 (the attempt that just failed), got {attempt}")
    if policy.kind is BackoffKind.FIXED:
        raw = policy.base
    elif policy.kind is BackoffKind.LINEAR:
        raw = policy.base * min(attempt, _MAX_LINEAR_FACTOR)
    else:
        raw = policy.base * 2.0 ** min(attempt - 1, _MAX_EXPONENT)
    return max(0.0, min(policy.max, raw))


def retry_delay(policy: Backoff, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retrying, after ``attempt`` (>= 1) failed.

    Exponential backoff draws from ``uniform(0, ceiling)``; pass a seeded ``rng`` for repeatable
    delays. Linear and fixed backoff return their ceiling.

    >>> retry_delay(Backoff(BackoffKind.LINEAR, base=2.0, max=60.0), 3)
    6.0
    """
    ceiling = backoff_ceiling(policy, attempt)
    if policy.kind is not BackoffKind.EXPONENTIAL:
        return ceiling
    return (rng if rng is not None else _default_rng).uniform(0.0, ceiling)
