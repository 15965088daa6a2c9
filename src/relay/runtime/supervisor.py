"""Run N worker processes, restart those that die, stop them all on SIGTERM/SIGINT.

``relay worker --processes N`` runs this: the supervisor itself runs no job; each child is the same
``relay worker …`` command with ``--processes 1``. Guarantee 4 of DESIGN.md needs it: a job that kills
its own worker process is retried (after its lease expires) by a worker that is still, or again, alive.

The life of a slot (one per process)::

    spawn ──▶ running ──exit 0──────────────────────────────▶ done (burst mode: nothing left to do)
                 │ ──exit ≠ 0 or killed, no stop requested ─▶ waiting (backoff) ──▶ spawn
                 │ ──exit with the usage-error code 2 ──────▶ stop everything (a restart cannot help)
                 └──exit after a stop was requested ────────▶ done

Signals: the first SIGTERM/SIGINT is forwarded to every child (phase one: no new jobs, running jobs get
their grace period); the second is forwarded too, so children go straight to phase two (release what
still runs); a third kills the children (SIGKILL). The second is sent as the *other* stop signal
(SIGTERM after SIGINT, SIGINT after SIGTERM): the kernel merges two pending signals of the same number
into one, so a child that had not yet run when both arrived would see only phase one. Children run in
their own process group, so that a Ctrl-C in a terminal reaches the supervisor only and each child
hears it exactly once, forwarded.

Only the main thread touches this object. Signal handlers only record the signal; ``signal.set_wakeup_fd``
wakes the ``select`` of the main loop, so that no signal is handled late and nothing polls while idle
(a long timeout remains as a safety net).
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

log = logging.getLogger("relay.supervisor")

USAGE_ERROR = 2  # the exit code of a command-line error: restarting the same command cannot help
SAFETY_POLL = 5.0  # seconds: the longest the loop sleeps without a signal
STABLE_AFTER = 30.0  # seconds: a child that ran this long resets its slot's backoff
_PR_SET_PDEATHSIG = 1


@dataclass
class Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # time.monotonic() of the last spawn
    failures: int = 0  # unexpected exits in a row
    restart_at: float | None = None  # when a failed slot is spawned again
    done: bool = False


class Supervisor:
    """Supervise ``processes`` children running ``relay <argv_for_child>``.

    >>> Supervisor(["worker", "--queues", "default", "--processes", "1"], processes=4).run()  # doctest: +SKIP
    0
    """

    def __init__(
        self,
        argv_for_child: Sequence[str],
        processes: int,
        *,
        command_prefix: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        prefix = list(command_prefix) if command_prefix is not None else [sys.executable, "-m", "relay"]
        self.command = [*prefix, *argv_for_child]
        self.env = dict(env) if env is not None else None
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.slots = [Slot(i) for i in range(processes)]
        self._preexec = _parent_death_signal()
        self.restarts = 0  # children restarted after an unexpected exit (for logs and tests)
        self._signals: list[int] = []  # appended by the signal handler, drained by the main loop
        self._stop_signals = 0
        self._first_sent = 0  # the signal forwarded at the first stop
        self._exit_code = 0

    # -- main loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until every child has exited after a stop (or, in burst mode, by itself)."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        previous = self._install_signals(write_fd)
        try:
            for slot in self.slots:
                self._spawn(slot)
            while not all(slot.done for slot in self.slots):
                select.select([read_fd], [], [], self._timeout())
                self._drain(read_fd)
                self._handle_signals()
                self._reap()
                self._restart_due()
        finally:
            self._restore_signals(previous)
            os.close(read_fd)
            os.close(write_fd)
        log.info("all worker processes have exited")
        return self._exit_code

    def _install_signals(self, write_fd: int) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            previous[sig] = signal.signal(sig, self._record_signal)
        previous[-1] = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        signal.set_wakeup_fd(previous.pop(-1))
        for sig, handler in previous.items():
            # None: a handler installed from C, which Python cannot reinstate; the default is closest.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    def _record_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.append(signum)

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass

    def _timeout(self) -> float:
        waits = [slot.restart_at - time.monotonic() for slot in self.slots if slot.restart_at is not None]
        return max(0.0, min([SAFETY_POLL, *waits]))

    # -- signals --------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, []
        for signum in signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.stop(signum)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Forward a stop signal to every child: phase one, then phase two, then SIGKILL."""
        self._stop_signals += 1
        send, phase = self._forwarded(signum)
        log.info("%s: stopping %d worker processes (%s)", _signal_name(signum), self._alive(), phase)
        for slot in self.slots:
            slot.restart_at = None  # a pending restart is moot once a stop is requested
            if slot.process is None:
                slot.done = True
            elif slot.process.poll() is None:
                slot.process.send_signal(send)

    def _forwarded(self, signum: int) -> tuple[int, str]:
        """The signal to send at this stop, and what it asks of the children."""
        if self._stop_signals == 1:
            self._first_sent = signum
            return signum, "finish running jobs, then exit"
        if self._stop_signals == 2:
            # Not the number sent first: two pending equal signals merge (see the module docstring).
            other = signal.SIGTERM if self._first_sent == signal.SIGINT else signal.SIGINT
            return other, "release running jobs now"
        return signal.SIGKILL, "killing them"

    @property
    def stopping(self) -> bool:
        return self._stop_signals > 0

    def _alive(self) -> int:
        return sum(1 for s in self.slots if s.process is not None and s.process.poll() is None)

    # -- children -------------------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> None:
        slot.restart_at = None
        slot.process = subprocess.Popen(self.command, env=self.env, process_group=0, preexec_fn=self._preexec)
        slot.started = time.monotonic()
        log.info("started worker process %d (slot %d)", slot.process.pid, slot.index)

    def _reap(self) -> None:
        for slot in self.slots:
            if slot.process is None or slot.done:
                continue
            code = slot.process.poll()
            if code is not None:
                self._exited(slot, slot.process.pid, code)

    def _exited(self, slot: Slot, pid: int, code: int) -> None:
        slot.process = None
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
        if self.stopping or code == 0:
            log.info("worker process %d %s", pid, how)
            slot.done = True
            if code != 0 and not _stopped_by_signal(code):
                self._exit_code = self._exit_code or 1
            return
        if code == USAGE_ERROR:
            log.error("worker process %d %s (a usage error): stopping", pid, how)
            self._exit_code = USAGE_ERROR
            slot.done = True
            self.stop()
            return
        self._schedule_restart(slot, pid, how)

    def _schedule_restart(self, slot: Slot, pid: int, how: str) -> None:
        if time.monotonic() - slot.started >= STABLE_AFTER:
            slot.failures = 0
        slot.failures += 1
        delay = min(self.backoff * 2 ** (slot.failures - 1), self.max_backoff)
        slot.restart_at = time.monotonic() + delay
        log.warning("worker process %d %s unexpectedly; restarting it in %.1fs", pid, how, delay)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and slot.restart_at <= now and not self.stopping:
                self.restarts += 1
                self._spawn(slot)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _stopped_by_signal(code: int) -> bool:
    """Whether an exit code after a stop says "stopped by the signal we sent": killed by it, or the
    128 + signal code a child exits with when the signal lands before its handlers are installed."""
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)
    return code in {-s for s in stops} | {128 + s for s in stops}


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM (a graceful stop) when the supervisor dies,
    even by SIGKILL, so that no worker is left behind unsupervised. Linux only; None elsewhere.

    libc is resolved here, in the parent: between fork and exec the child only calls ``prctl``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, sigterm = os.getpid(), int(signal.SIGTERM)

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, sigterm)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)

    return set_parent_death_signal
