"""Wake-ups between processes on one SQLite file: a UNIX datagram socket per listening process.

SQLite has no LISTEN/NOTIFY, so a worker in another process than the producer would see a new job only
at its next poll. Instead, each process that waits for jobs on a file binds a datagram socket in a
directory beside it, and each process that makes jobs claimable sends, after its commit, one datagram
naming their queues to every socket there::

    /srv/relay.db
    /srv/relay.db-wake/          modes from the database file's (searchable where readable)
        4242-9f3ab1c0.sock       one per listening process: <pid>-<random>.sock

The directory is ``<database>-wake`` beside the file, or ``/tmp/relay-wake-<hash of its real path>`` when
that would make a socket path longer than a UNIX socket address holds. Every process derives it from the
file's real path by the same rule, so they all meet in one place.

- **Listening** (:meth:`WakeChannel.listen`): the first storage of this process that waits for jobs on
  the file binds the socket; a thread receives the datagrams and hands their queue names to the file's
  :class:`LocalNotifier`, which wakes the waiters of those queues. The socket is removed when the last of
  those storages closes (and the directory with it, once empty).
- **Sending** (:meth:`WakeChannel.send`): non-blocking, one ``sendto`` per socket but this process's own
  (its waiters were woken in-process). A full receive queue (EAGAIN) means that listener has wake-ups
  pending already; a socket nobody holds any more (ECONNREFUSED: its process died) is unlinked. The
  directory listing is cached, read again when the directory's mtime changes and at least every second
  (an mtime has a coarse granularity: a socket bound in the same tick as the last read would go unseen).
  So a commit costs one ``lstat`` and one ``sendto`` per listening process.
- **A hint only**, like every notifier: a lost datagram costs a poll interval of latency, never a job.
  Whatever fails here (a read-only directory, a permission) is logged once and leaves polling to do it.

A datagram is a JSON array of queue names; an empty one means "any queue" (too many names to send).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import logging
import os
import secrets
import socket
import stat
import sys
import threading
import time
from collections.abc import Sequence

import orjson

from relay.storage.local_notifier import LocalNotifier

log = logging.getLogger("relay.storage.sqlite")

#: Bytes of a socket path, its terminating NUL excluded (``sun_path`` is 108 bytes on Linux, 104 on BSDs).
_SUN_PATH_MAX = 107 if sys.platform.startswith("linux") else 103
_NAME_ROOM = 24  # bytes kept for "/<pid>-<random>.sock": at most 1 + 7 + 1 + 8 + 5
_SUFFIX = ".sock"
# Not tempfile.gettempdir(): it follows TMPDIR, which two processes on the same file may not share.
_FALLBACK_ROOT = "/tmp"
_LISTING_TTL = 1.0  # seconds a directory listing is trusted while the directory's mtime is unchanged
_MAX_PAYLOAD = 4096  # bytes of queue names in one datagram; longer lists are sent as "any queue"
_RECEIVE_SIZE = 65536
_DRAIN_MAX = 64  # datagrams merged into one wake-up, at most
_STOP_TIMEOUT = 5.0  # seconds to wait for the receiving thread when the last listener closes
_IN_MEMORY = frozenset({"", ":memory:"})  # SQLite databases private to one connection: nothing to wake


def wake_directory(db_path: str) -> str:
    """Where the sockets of the database at ``db_path`` (a real path) live."""
    beside = db_path + "-wake"
    if len(os.fsencode(beside)) + _NAME_ROOM <= _SUN_PATH_MAX:
        return beside
    digest = hashlib.sha256(os.fsencode(db_path)).hexdigest()[:32]
    return os.path.join(_FALLBACK_ROOT, f"relay-wake-{digest}")


def _encode(queues: Sequence[str]) -> bytes:
    payload = orjson.dumps(list(queues))
    return payload if len(payload) <= _MAX_PAYLOAD else b""


def _decode(data: bytes) -> list[str] | None:
    """The queue names of a datagram, or None for any queue (empty, or not a list of names)."""
    if not data:
        return None
    try:
        queues = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(queues, list) and all(isinstance(q, str) for q in queues):
        return queues
    return None


class _Sender:
    """One unbound datagram socket for every send of this process: ``sendto`` names the address, so
    one socket serves every file and listener (and a test session opening a thousand files opens one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None

    def close(self) -> None:
        with self._lock:
            sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def socket(self) -> socket.socket:
        sock = self._socket
        if sock is not None:
            return sock
        with self._lock:
            if self._socket is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
                self._socket = sock
            return self._socket


_SENDER = _Sender()


class _Listener:
    """This process's socket on one file, and the thread that turns its datagrams into wake-ups."""

    def __init__(self, sock: socket.socket, path: str, notifier: LocalNotifier) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.pid = os.getpid()
        self._socket = sock
        self._notifier = notifier
        self._stopping = False
        self._thread = threading.Thread(target=self._receive, name="relay-sqlite-wake", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                data = self._socket.recv(_RECEIVE_SIZE)
            except OSError:
                return
            if self._stopping:
                return
            try:
                self._notifier.notify_threadsafe(self._with_pending(_decode(data)))
            except Exception:  # this thread must outlive any one wake-up: polling would cover, slower
                log.exception("delivering a wake-up from another process failed")

    def _with_pending(self, queues: list[str] | None) -> list[str] | None:
        """``queues`` and those of the datagrams already queued behind it: one wake-up for the lot, so
        that a burst of inserts does not leave the receive queue full (and later senders refused)."""
        for _ in range(_DRAIN_MAX):
            if self._stopping:  # a shut-down socket returns b"" at once, forever
                break
            try:
                data = self._socket.recv(_RECEIVE_SIZE, socket.MSG_DONTWAIT)
            except OSError:  # BlockingIOError: nothing more queued
                break
            more = _decode(data)
            if queues is None or more is None:
                queues = None
            else:
                queues.extend(more)
        return queues

    def stop(self, *, join: bool = True) -> None:
        self._stopping = True
        # Wakes the thread's blocking recv() (it returns b""); a datagram sent meanwhile is refused.
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RD)
        if join:
            self._thread.join(_STOP_TIMEOUT)
        self._socket.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        # The last socket out takes the directory with it; ENOTEMPTY when another process listens still.
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(self.path))

    def forget(self) -> None:
        """In a forked child: drop the parent's socket without touching its file (the parent's own)."""
        with contextlib.suppress(OSError):
            self._socket.close()


class WakeChannel:
    """Wake-ups for one database file in this process: its :class:`LocalNotifier`, this process's
    listening socket (while some storage waits on the file), and the sends to other processes."""

    def __init__(self, db_path: str) -> None:
        self.notifier = LocalNotifier()
        self.db_path = db_path
        # None: a database private to one connection (":memory:"), or no UNIX sockets on this system.
        self.directory = (
            wake_directory(db_path) if db_path not in _IN_MEMORY and hasattr(socket, "AF_UNIX") else None
        )
        self._lock = threading.Lock()
        self._owners: set[object] = set()  # the storages that wait on this file
        self._listener: _Listener | None = None
        self._warned = False
        # The sockets to send to (own excluded), and what the listing was read at: the directory's
        # (inode, mtime) and time.monotonic().
        self._peers: tuple[str, ...] = ()
        self._listing_key: tuple[int, int] | None = None
        self._listed_at = 0.0

    @property
    def socket_path(self) -> str | None:
        """This process's socket on the file, while it listens."""
        listener = self._listener
        return None if listener is None else listener.path

    # -- listening ------------------------------------------------------------------------------

    def listen(self, owner: object) -> None:
        """``owner`` (a storage) waits for jobs on the file: listen, unless already listening. Cheap
        when already listening: it is called before every wait."""
        if self.directory is None or owner in self._owners:
            return
        with self._lock:
            self._owners.add(owner)
            if self._listener is None:
                self._listener = self._start()
                self._listing_key = None  # our own socket is now one to leave out

    def unlisten(self, owner: object) -> None:
        """``owner`` closed: the socket goes with the last owner."""
        with self._lock:
            self._owners.discard(owner)
            if self._owners or self._listener is None:
                return
            listener, self._listener = self._listener, None
            self._listing_key = None
        listener.stop()

    def _start(self) -> _Listener | None:
        assert self.directory is not None
        try:
            sock, path = self._bind(self.directory)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.info(
                    "no wake-ups from other processes on %s (%s): new jobs are found by polling",
                    self.db_path,
                    exc,
                )
            return None
        return _Listener(sock, path, self.notifier)

    def _bind(self, directory: str) -> tuple[socket.socket, str]:
        dir_mode, socket_mode = self._modes()
        for _ in range(3):  # the last process out may remove the directory between mkdir and bind
            self._make_directory(directory, dir_mode)
            path = os.path.join(directory, f"{os.getpid()}-{secrets.token_hex(4)}{_SUFFIX}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(path)
                if socket_mode is not None:
                    os.chmod(path, socket_mode)
            except FileNotFoundError:
                sock.close()
                continue
            except BaseException:
                sock.close()
                raise
            return sock, path
        raise OSError(errno.ENOENT, "the wake-up directory kept disappearing", directory)

    def _make_directory(self, directory: str, mode: int | None) -> None:
        try:
            os.mkdir(directory, 0o700 if mode is None else mode)
        except FileExistsError:
            pass
        else:
            if mode is not None:
                os.chmod(directory, mode)  # mkdir's mode is cut by the umask
        st = os.lstat(directory)
        if not self._trusted(st):
            raise PermissionError(errno.EPERM, "not a directory of this user or the database's", directory)

    def _modes(self) -> tuple[int | None, int | None]:
        """(directory, socket) modes from the database file's: whoever may write the file may wake its
        workers (connecting to a socket takes write permission) and listen (create a socket)."""
        try:
            perm = stat.S_IMODE(os.stat(self.db_path).st_mode) & 0o666
        except OSError:
            return None, None
        return perm | (perm & 0o444) >> 2, perm

    def _trusted(self, st: os.stat_result) -> bool:
        """A real directory (not a symlink: in /tmp anyone could plant one) owned by root, this user or
        the database file's owner."""
        if not stat.S_ISDIR(st.st_mode):
            return False
        owners = {0, os.geteuid()}
        with contextlib.suppress(OSError):
            owners.add(os.stat(self.db_path).st_uid)
        return st.st_uid in owners

    # -- sending --------------------------------------------------------------------------------

    def send(self, queues: Sequence[str]) -> None:
        """Wake the other processes listening on the file for ``queues``; never blocks, never raises."""
        directory = self.directory
        if directory is None or not queues:
            return
        peers = self._current_peers(directory)
        if not peers:
            return
        payload = _encode(queues)
        try:
            sock = _SENDER.socket()
        except OSError:  # out of file descriptors, say: the commit stands, polling finds its jobs
            return
        for path in peers:
            try:
                sock.sendto(payload, path)
            except OSError as exc:
                self._on_send_error(path, exc)

    def _on_send_error(self, path: str, exc: OSError) -> None:
        if exc.errno == errno.ECONNREFUSED:
            # Nobody holds that socket: its process died without removing it. The directory goes too
            # if that was the last one (ENOTEMPTY otherwise), as a clean close would have done.
            with contextlib.suppress(OSError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))
            self._listing_key = None
        elif exc.errno == errno.ENOENT:
            self._listing_key = None
        # EAGAIN (its queue is full: it has wake-ups pending), EPIPE (it is closing), EACCES (another
        # user's): nothing to do, polling covers it.

    def _current_peers(self, directory: str) -> tuple[str, ...]:
        try:
            st = os.lstat(directory)
        except OSError:
            return ()
        key = (st.st_ino, st.st_mtime_ns)
        now = time.monotonic()
        if key == self._listing_key and now - self._listed_at < _LISTING_TTL:
            return self._peers
        with self._lock:
            self._peers = self._read_peers(directory, st)
            self._listing_key, self._listed_at = key, now
            return self._peers

    def _read_peers(self, directory: str, st: os.stat_result) -> tuple[str, ...]:
        if not self._trusted(st):
            return ()
        try:
            names = os.listdir(directory)
        except OSError:
            return ()
        own = None if self._listener is None else self._listener.name
        return tuple(os.path.join(directory, n) for n in names if n.endswith(_SUFFIX) and n != own)

    # -- process life ---------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """The child inherits the parent's listener without its thread: forget both (the parent still
        listens), so that a storage waiting in the child binds a socket of its own."""
        self._lock = threading.Lock()  # another thread of the parent may have held it at fork
        listener, self._listener = self._listener, None
        self._owners = set()
        self._listing_key = None
        if listener is not None:
            listener.forget()

    def _at_exit(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and listener.pid == os.getpid():
            listener.stop(join=False)  # its thread is a daemon: the interpreter is going anyway


_channels: dict[str, WakeChannel] = {}
_channels_lock = threading.Lock()


def channel_for(path: str) -> WakeChannel:
    """The one channel of the database file at ``path`` in this process, so that every instance on the
    file shares its notifier and its socket (a producer's instance wakes a worker's in-process)."""
    key = path if path in _IN_MEMORY else os.path.realpath(path)
    with _channels_lock:
        channel = _channels.get(key)
        if channel is None:
            channel = _channels[key] = WakeChannel(key)
        return channel


def _after_fork_in_child() -> None:
    global _channels_lock, _SENDER
    _channels_lock = threading.Lock()
    _SENDER = _Sender()  # the parent's would do (it is unbound), but its lock may be held
    for channel in list(_channels.values()):
        channel._after_fork_in_child()


def _at_exit() -> None:
    """Remove this process's sockets if it exits without closing its storages (a crash leaves them to
    the next sender, which unlinks a socket that refuses), and close the sending socket."""
    for channel in list(_channels.values()):
        channel._at_exit()
    _SENDER.close()


if hasattr(os, "register_at_fork"):  # POSIX only, as is everything above
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
