"""Rate and concurrency limits on SQLite: the claim of limited queues, token buckets, queue limits.

A claim that names a limited queue (one with a rate, key_rate, concurrency or key_concurrency) is
decided in Python by :class:`relay.storage.flow_control.ClaimPlanner`, the same rules the memory
backend applies, inside the claim's ``BEGIN IMMEDIATE`` transaction: what it reads (running counts,
buckets) stays true until it commits, so claims racing from several processes never exceed a limit.

The walk (:func:`claim_limited`): one lazily stepped cursor per wanted queue (job_claim_walk, the
jobs_claim index in claim order), merged by claim order; each candidate is offered to the planner.
A queue the planner closes (its rate or concurrency is spent) drops out of the merge at once; a job
refused for its key is passed over. The walk ends when ``limit`` jobs are taken, every cursor is
done, or :data:`SCAN_BOUND` jobs were passed over: past that many refusals in one claim a backlog
of one key costs the claim more than it gains (the rest are found by the next claim, after that
key's jobs ran). Then one UPDATE marks the chosen jobs (job_claim_seqs) and the buckets drawn from
are written back.

Buckets (``rate_buckets``): one row per (queue, scope, key), ``scope`` 'queue' for the queue's own
bucket (key '') and 'key' for a rate_key's; a bucket never stored is full.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime

from relay.storage.flow_control import Bucket, BucketKey, ClaimPlanner, is_full, tokens_now
from relay.storage.params import ClaimedJobs, ClaimParams
from relay.storage.sql_rows import Row, dumps
from relay.storage.sqlite.rows import claim_order, from_us, job_from_row, to_us
from relay.storage.sqlite.sql import Q
from relay.types import NO_LIMITS, OrderingDead, QueueLimits, RateLimit

#: Jobs a claim of limited queues may pass over (refused for their key) before it stops looking.
SCAN_BOUND = 1_000

_QUEUE_SCOPE, _KEY_SCOPE = "queue", "key"


# -- limits ----------------------------------------------------------------------------------------


def limits_from(
    rate: float | None,
    burst: int | None,
    key_rate: float | None,
    key_burst: int | None,
    concurrency: int | None,
    key_concurrency: int | None,
    ordering_dead: str,
) -> QueueLimits:
    """A queue's limits from its columns (queries.sql: queue_names, queue_limits_claimed)."""
    limits = QueueLimits(
        rate=None if rate is None or burst is None else RateLimit(rate, burst),
        key_rate=None if key_rate is None or key_burst is None else RateLimit(key_rate, key_burst),
        concurrency=concurrency,
        key_concurrency=key_concurrency,
        ordering_dead=OrderingDead(ordering_dead),
    )
    return NO_LIMITS if limits == NO_LIMITS else limits


def claimed_queues(conn: sqlite3.Connection, queues: str) -> dict[str, tuple[bool, QueueLimits]]:
    """Those of ``queues`` (a JSON array) that are limited or paused: name -> (paused, limits).
    A claim whose queues are none of them limited takes the fast path (job_claim)."""
    return {
        name: (bool(paused), limits_from(*columns))
        for name, paused, *columns in conn.execute(Q["queue_limits_claimed"], {"queues": queues})
    }


def any_limited(queues: dict[str, tuple[bool, QueueLimits]]) -> bool:
    return any(limits.limited for _paused, limits in queues.values())


def set_limits(conn: sqlite3.Connection, now: datetime, name: str, limits: QueueLimits) -> None:
    """Store ``limits`` (registering the queue), and cut the queue's buckets to the new bursts."""
    rate, key_rate = limits.rate, limits.key_rate
    conn.execute(
        Q["queue_limits_set"],
        {
            "name": name,
            "rate": None if rate is None else rate.rate,
            "burst": None if rate is None else rate.burst,
            "key_rate": None if key_rate is None else key_rate.rate,
            "key_burst": None if key_rate is None else key_rate.burst,
            "concurrency": limits.concurrency,
            "key_concurrency": limits.key_concurrency,
            "ordering_dead": str(limits.ordering_dead),
        },
    )
    # A bucket of a limit that is gone keeps its row until rate_buckets_prune, untouched.
    now_us = to_us(now)
    for scope, limit in ((_QUEUE_SCOPE, rate), (_KEY_SCOPE, key_rate)):
        if limit is not None:
            params = {"queue": name, "scope": scope, "now": now_us, "rate": limit.rate, "burst": limit.burst}
            conn.execute(Q["rate_buckets_cut"], params)


def queue_tokens(limits: QueueLimits, tokens: float | None, at: int | None, now: datetime) -> float | None:
    """What the queue's own bucket holds at ``now`` (full when never stored); None without a rate."""
    if limits.rate is None:
        return None
    bucket = None if tokens is None or at is None else Bucket(tokens, from_us(at))
    return tokens_now(bucket, limits.rate, now)


def prune_buckets(conn: sqlite3.Connection, now: datetime) -> int:
    """Delete the buckets full again at ``now`` and those whose limit is gone; returns how many."""
    doomed = []
    for queue, scope, key, tokens, at, rate, burst in conn.execute(Q["rate_buckets_with_limits"]):
        limit = None if rate is None or burst is None else RateLimit(rate, burst)
        if is_full(Bucket(tokens, from_us(at)), limit, now):
            doomed.append((queue, scope, key))
    conn.executemany(Q["rate_bucket_delete"], doomed)
    return len(doomed)


# -- the claim of limited queues -------------------------------------------------------------------


def claim_limited(
    conn: sqlite3.Connection,
    now: datetime,
    p: ClaimParams,
    queues: Sequence[str],
    claimed: dict[str, tuple[bool, QueueLimits]],
) -> ClaimedJobs:
    """Claim from ``queues`` (distinct; ``claimed`` holds those limited or paused) by the planner's
    rules. A queue without limits passes every offer: its cursor reads at most ``limit`` rows."""
    now_us = to_us(now)
    open_queues = [q for q in queues if not claimed.get(q, (False, NO_LIMITS))[0]]
    limits = {name: lim for name, (_paused, lim) in claimed.items() if lim.limited}
    running, running_by_key = _running_counts(conn, [q for q in open_queues if _counts_slots(limits.get(q))])
    planner = ClaimPlanner(now, limits, running, running_by_key, lambda key: _load_bucket(conn, key))
    kinds = dumps([str(k) for k in p.kinds])
    cursors = [
        _walk(conn, queue, now_us, kinds, p.limit + SCAN_BOUND if queue in limits else p.limit)
        for queue in open_queues
    ]
    chosen = _choose(planner, open_queues, cursors, p.limit)
    for cursor in cursors:
        cursor.close()  # before the UPDATE below writes the rows they walk
    rows: list[Row] = []
    if chosen:
        params = {"now": now_us, "worker_id": p.worker_id, "seqs": dumps(chosen)}
        rows = conn.execute(Q["job_claim_seqs"], params).fetchall()
        rows.sort(key=claim_order)
    _store_buckets(conn, planner.drawn())
    return ClaimedJobs([job_from_row(r) for r in rows], planner.retry_after)


def _counts_slots(limits: QueueLimits | None) -> bool:
    return limits is not None and (limits.concurrency is not None or limits.key_concurrency is not None)


def _running_counts(
    conn: sqlite3.Connection, queues: list[str]
) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    running: dict[str, int] = {}
    by_key: dict[tuple[str, str], int] = {}
    if not queues:
        return running, by_key
    for queue, key, n in conn.execute(Q["job_running_counts"], {"queues": dumps(queues)}):
        running[queue] = running.get(queue, 0) + n
        if key is not None:
            by_key[(queue, key)] = n
    return running, by_key


def _walk(conn: sqlite3.Connection, queue: str, now_us: int, kinds: str, bound: int) -> sqlite3.Cursor:
    params = {"queue": queue, "now": now_us, "kinds": kinds, "bound": bound}
    return conn.execute(Q["job_claim_walk"], params)


def _choose(planner: ClaimPlanner, queues: list[str], cursors: list[sqlite3.Cursor], limit: int) -> list[int]:
    """The seqs of the jobs taken, in claim order, offering the merged candidates of ``queues`` (one
    cursor each) one by one.

    The heap holds each queue's next candidate as ((-priority, run_at, seq), index, rate_key,
    concurrency_key); ``seq`` is unique, so ties never reach the later fields."""
    walks: list[Iterator[Row]] = [iter(c) for c in cursors]
    heap: list[tuple[tuple[int, int, int], int, str | None, str | None]] = []
    for i, walk in enumerate(walks):
        _push(heap, walk, i)
    chosen: list[int] = []
    passed = 0
    while heap and len(chosen) < limit:
        order, i, rate_key, concurrency_key = heapq.heappop(heap)
        queue = queues[i]
        if not planner.queue_open(queue):
            continue  # its cursor is not read again: the queue is done for this claim
        if planner.offer(queue, rate_key, concurrency_key):
            chosen.append(order[2])
        else:
            passed += 1
            if passed >= SCAN_BOUND:
                break
        _push(heap, walks[i], i)
    return chosen


def _push(
    heap: list[tuple[tuple[int, int, int], int, str | None, str | None]], walk: Iterator[Row], i: int
) -> None:
    row = next(walk, None)
    if row is not None:
        seq, priority, run_at, rate_key, concurrency_key = row
        heapq.heappush(heap, ((-priority, run_at, seq), i, rate_key, concurrency_key))


def _load_bucket(conn: sqlite3.Connection, key: BucketKey) -> Bucket | None:
    queue, rate_key = key
    params = {
        "queue": queue,
        "scope": _QUEUE_SCOPE if rate_key is None else _KEY_SCOPE,
        "key": "" if rate_key is None else rate_key,
    }
    row = conn.execute(Q["rate_bucket_get"], params).fetchone()
    return None if row is None else Bucket(row[0], from_us(row[1]))


def _store_buckets(conn: sqlite3.Connection, buckets: dict[BucketKey, Bucket]) -> None:
    """Write back the buckets the claim drew from, as they are now (refilled, minus what was drawn)."""
    conn.executemany(
        Q["rate_bucket_put"],
        [
            {
                "queue": queue,
                "scope": _QUEUE_SCOPE if rate_key is None else _KEY_SCOPE,
                "key": "" if rate_key is None else rate_key,
                "tokens": bucket.tokens,
                "at": to_us(bucket.at),
            }
            for (queue, rate_key), bucket in buckets.items()
        ],
    )
