"""Ordering keys on SQLite: which jobs are ``held``, and releasing the next one when a key goes free.

The rule (``relay.storage.base``): per (queue, ordering_key), at most one *blocking* job (pending,
scheduled, running, failed; dead too where the queue's ``ordering_dead`` is ``block``) is not held.
The ``held`` column carries it, so a claim only has to skip ``held = 1`` rows (the jobs_claim index
leaves them out); everything else happens at the few transitions that can change a key's line, in the
transaction of the transition:

- insert (``writes.insert_jobs``): a job is held when its key has an unheld blocking job, stored
  (one :func:`blocked` lookup for the batch's keys) or inserted earlier in the same batch;
- a job leaves the blocking states or the table (complete, cancel, dead, purge, prune; the callers
  know which rows): :func:`release` frees, for each key left without an unheld blocking job, its held
  job inserted first, in one statement;
- requeue (:func:`rejoin`): a job that was out of its key's line (cancelled, or dead under
  ``continue``) comes back held when its key has an unheld blocking job.

Each function runs on the connection's thread inside the caller's ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from relay.storage.sql_rows import dumps
from relay.storage.sqlite.sql import Q

#: (queue, ordering_key)
Pair = tuple[str, str]


def blocked(conn: sqlite3.Connection, pairs: Iterable[Pair]) -> set[Pair]:
    """Those of ``pairs`` that have an unheld blocking job now."""
    wanted = list(dict.fromkeys(pairs))
    if not wanted:
        return set()
    return {(q, k) for q, k in conn.execute(Q["ordering_blocked"], {"pairs": dumps(wanted)})}


def release(conn: sqlite3.Connection, pairs: Iterable[Pair]) -> list[str]:
    """After jobs of ``pairs`` left the blocking states (or the table): release the next held job of
    each key that no unheld job blocks any more. Returns the queues of the released jobs."""
    wanted = list(dict.fromkeys(pairs))
    if not wanted:
        return []
    return [queue for (queue,) in conn.execute(Q["ordering_release"], {"pairs": dumps(wanted)})]


def rejoin(conn: sqlite3.Connection, candidates: Sequence[tuple[int, str, str, int]]) -> set[int]:
    """Before a requeue moves ``candidates`` (``seq, queue, ordering_key, out_of_line`` rows of
    job_requeue_lookup_*, by seq) back to pending: the seqs that must come back held.

    A job out of its key's line rejoins it behind the key's unheld blocking job, if there is one, and
    behind an earlier job of the same requeue. Jobs still in line (failed, dead under ``block``) keep
    their place and count as blocking."""
    rejoining = [(seq, (queue, key)) for seq, queue, key, out in candidates if out]
    if not rejoining:
        return set()
    busy = blocked(conn, (pair for _, pair in rejoining))
    hold: set[int] = set()
    for seq, pair in rejoining:
        if pair in busy:
            hold.add(seq)
        busy.add(pair)
    return hold


def hold(conn: sqlite3.Connection, seqs: Iterable[int]) -> None:
    wanted = list(seqs)
    if wanted:
        conn.execute(Q["job_hold"], {"seqs": dumps(wanted)})
