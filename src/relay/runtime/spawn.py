"""Starting a command in a session of its own, and learning when it exits, at the cost of a plain spawn.

``spawn`` starts an argv with stdin on ``/dev/null`` and stdout / stderr on the descriptors it is given,
in a new session (``setsid``): the child leads a new process group whose id is its pid, so that one
``killpg`` reaches everything it starts. It returns a :class:`Child`, whose ``exited`` future gets the
exit code (negative: killed by that signal, as asyncio and subprocess report it).

Why not ``asyncio.create_subprocess_exec``: its spawn is the same ``vfork`` + ``exec`` (on Python 3.11,
``start_new_session`` does not prevent ``vfork``), but asyncio's default child watcher
(``ThreadedChildWatcher``) starts one thread per child to block in ``waitpid``, and its subprocess and pipe
transports cost several more turns of the loop. Measured in the shell benchmark, a worker spent 0.7-0.8 ms
of its own CPU per ``/bin/true`` job that way, and 0.3 ms this way (0.1 ms of which any job costs). Here:

- the child is started by ``os.posix_spawn`` (glibc runs it with ``clone(CLONE_VM|CLONE_VFORK)``: the
  worker's memory is never copied) with ``POSIX_SPAWN_SETSID``. Signals that Python ignores (SIGPIPE,
  SIGXFSZ) are reset to their default, as subprocess does; the program is looked up in the child's
  ``PATH``, and a missing one raises ``FileNotFoundError`` naming it, as subprocess does.
  ``posix_spawn`` has no ``chdir`` on Python 3.11, so a command with a working directory is started by
  ``subprocess.Popen`` (``vfork`` too, a little more Python, and the same errors for a missing directory).
- its exit is watched through a pidfd (``pidfd_open``, Linux >= 5.3) registered with the event loop, and
  it is reaped by ``waitpid`` on its own pid once the pidfd is readable: no thread, no ``SIGCHLD``
  handler, no other child of the worker ever reaped by us. Asyncio's child watcher never hears of it, so
  it does not wait for it either. Where no pidfd can be had, one thread per child blocks in ``waitpid``,
  as asyncio's watcher would.

``posix_spawn`` holds the GIL and blocks the loop until the child has called ``exec``: about 0.1 ms, more
when every core is busy and the child waits for one. Spawning from a thread instead, with ``Popen``
(which releases the GIL meanwhile), doubled the worker's CPU per job in the same benchmark.

Descriptors: the child gets 0, 1, 2 and nothing that is close-on-exec. Python opens every descriptor
that way (PEP 446), and so do SQLite, libpq and the Redis client's sockets; but unlike subprocess's
``close_fds=True``, ``posix_spawn`` cannot close the others on Python 3.11, so a descriptor that a C
extension opened without ``O_CLOEXEC`` is inherited (Python >= 3.13 offers ``POSIX_SPAWN_CLOSEFROM``:
it is used when present).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger("relay.worker")

# What subprocess's restore_signals resets: Python ignores these, and an ignored signal survives exec.
_RESTORED_SIGNALS = tuple(
    sig for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if (sig := getattr(signal, name, None)) is not None
)
# glibc's posix_spawn runs the child in our memory until it execs (no copy), and has POSIX_SPAWN_SETSID;
# elsewhere we make no such assumption and use Popen.
_POSIX_SPAWN = sys.platform == "linux"
# Python >= 3.13 (glibc >= 2.34): close every descriptor from 3 up in the child, as close_fds does.
_CLOSEFROM: int | None = getattr(os, "POSIX_SPAWN_CLOSEFROM", None)
LOST_EXIT_CODE = 255  # reported, as asyncio does, when something else reaped the child: its status is lost


class Child:
    """A started child process, reaped as soon as it exits. Only the event loop's thread touches it."""

    def __init__(
        self, pid: int, loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes] | None
    ) -> None:
        self.pid = pid
        #: The exit code once reaped. Shared: wait with ``asyncio.wait`` or ``asyncio.shield``, never
        #: cancel it (``asyncio.wait_for`` would).
        self.exited: asyncio.Future[int] = loop.create_future()
        self._loop = loop
        self._popen = popen

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    def _watch(self) -> None:
        try:
            pidfd = os.pidfd_open(self.pid)  # close-on-exec: no later child inherits it
        except (AttributeError, OSError):
            # Not Linux, Linux < 5.3, a sandbox that forbids it, or no descriptor left (EMFILE).
            self._wait_in_thread()
            return

        def readable() -> None:
            code = _reap(self.pid, block=False)
            if code is None:
                return  # readable means exited: WNOHANG only guards against a surprise
            self._loop.remove_reader(pidfd)
            os.close(pidfd)
            self._reaped(code)

        self._loop.add_reader(pidfd, readable)

    def _wait_in_thread(self) -> None:
        def wait() -> None:
            code = _reap(self.pid, block=True)
            assert code is not None  # a blocking waitpid returns once the child has exited
            # RuntimeError: the loop was closed meanwhile, and nobody waits for this child any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._reaped, code)

        threading.Thread(target=wait, name=f"relay-waitpid-{self.pid}", daemon=True).start()

    def _reaped(self, code: int) -> None:
        if self._popen is not None:
            # Popen must never waitpid this pid again (its __del__, or subprocess's cleanup of children
            # it believes alive, would): it is reaped, and the pid may already be another process's.
            self._popen.returncode = code
        if not self.exited.done():  # only if someone cancelled it despite the warning above
            self.exited.set_result(code)


def spawn(argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None, stdout: int, stderr: int) -> Child:
    """Start ``argv`` in a new session; see the module docstring. Call it from the event loop's thread.

    ``env`` is added to the worker's environment. Raises what subprocess raises: ``OSError``
    (``FileNotFoundError`` naming the program, or the ``cwd`` that does not exist...), ``ValueError`` or
    ``TypeError`` for a NUL byte, a bad variable name or a non-string in ``argv`` or ``env``.
    """
    loop = asyncio.get_running_loop()  # before starting anything: a child must never go unwatched
    if _POSIX_SPAWN and cwd is None and stdout > 2 and stderr > 2:
        child = Child(_posix_spawn(argv, _ENVIRON.with_added(env), stdout, stderr), loop, None)
    else:
        # A working directory (or our pipes on 0-2, should the worker's own be closed): Popen deals with
        # both, and reports a missing directory as subprocess always did.
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, **env} if env else None,  # None: the worker's, without copying it
            cwd=cwd,
            start_new_session=True,
        )
        child = Child(popen.pid, loop, popen)
    child._watch()
    return child


def _posix_spawn(argv: Sequence[str], env: Mapping[bytes, bytes], stdout: int, stderr: int) -> int:
    if not argv:
        raise ValueError("argv is empty")
    actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        # dup2 clears close-on-exec on the copy only: our own ends of the pipes still close at exec.
        (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    if _CLOSEFROM is not None:
        actions.append((_CLOSEFROM, 3))
    return os.posix_spawn(
        _find_executable(argv[0], env),
        list(argv),
        env,
        file_actions=actions,
        setsid=True,
        setsigdef=_RESTORED_SIGNALS,
    )


def _find_executable(program: str, env: Mapping[bytes, bytes]) -> str:
    """Search the child's PATH as ``execvpe`` (and subprocess) would, with a ``stat`` per directory
    rather than an attempt to exec each candidate.

    Found only without execute permission (or as a directory): ``PermissionError``, as exec reports it;
    found nowhere: ``FileNotFoundError`` naming the program.
    """
    if os.sep in program:
        return program
    denied: str | None = None
    path = env.get(b"PATH")
    for directory in os.get_exec_path({"PATH": os.fsdecode(path)} if path is not None else {}):
        candidate = os.path.join(directory, program)
        try:
            st = os.stat(candidate)
        except OSError:  # ENOENT, ENOTDIR, ELOOP...: exec would try the next directory too
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
        denied = denied or candidate
    if denied is not None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), denied)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


class _Environ:
    """The worker's environment encoded for the child, copied again only when it changed.

    Copying ``os.environ`` decodes and re-encodes every variable in Python: measured 30-40 µs a spawn
    for 35 variables, a quarter of what the rest of a spawn costs the worker. ``os.environ`` keeps the
    encoded variables in a dict (a CPython detail, checked at each use); comparing that dict with our
    copy is a loop in C, under a microsecond.
    """

    def __init__(self) -> None:
        self._copy: dict[bytes, bytes] | None = None

    def with_added(self, added: Mapping[str, str]) -> Mapping[bytes, bytes]:
        data = getattr(os.environ, "_data", None)
        if not isinstance(data, dict):
            base = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
        else:
            if self._copy is None or data != self._copy:
                self._copy = dict(data)
            base = self._copy
        if not added:
            return base  # never changed: posix_spawn only reads it
        return {**base, **{os.fsencode(k): os.fsencode(v) for k, v in added.items()}}


_ENVIRON = _Environ()


def _reap(pid: int, *, block: bool) -> int | None:
    try:
        reaped, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        # Something else in this process reaped it (a waitpid(-1) of its own): the status is lost.
        log.warning("child process %d was reaped elsewhere: reporting exit code %d", pid, LOST_EXIT_CODE)
        return LOST_EXIT_CODE
    if reaped == 0:
        return None
    return os.waitstatus_to_exitcode(status)
