"""Time, injectable. Storage decides leases and schedules with a clock; tests move it instead of sleeping."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

#: Tests of whole processes move their clocks through a file: see :class:`FileClock`.
CLOCK_FILE_ENV = "RELAY_TEST_CLOCK_FILE"


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The machine's wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to: for tests.

    >>> clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    >>> clock.advance(30)
    >>> clock.now().second
    30
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start if start is not None else datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    def set(self, when: datetime) -> None:
        self._now = when


class FileClock:
    """The time written in a file (an ISO 8601 date-time), read again whenever the file changes: how
    end-to-end tests move the clock of real ``relay`` processes, several at once, without sleeping.

    Only for tests: a process uses it when ``RELAY_TEST_CLOCK_FILE`` names the file (see
    :func:`clock_from_env`). Storage then judges leases, rate limits and schedules by it.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._now = datetime(1970, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        stat = self._path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            text = self._path.read_text().strip()
            if text:  # a writer that truncated the file and has not written yet: keep the last time
                self._now = datetime.fromisoformat(text).astimezone(UTC)
                self._stamp = stamp
        return self._now


def clock_from_env(env: Mapping[str, str] | None = None) -> Clock | None:
    """The clock a process was told to use for testing, or None for the real ones."""
    path = (os.environ if env is None else env).get(CLOCK_FILE_ENV)
    return FileClock(path) if path else None
