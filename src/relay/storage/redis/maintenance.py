"""The leader's duties on Redis: reap, promote, prune, prune token buckets, elect (semantics.md rules 6
to 9).

Each function is one script call, run on the backend's private loop inside
:func:`relay.storage.redis.session.run`.
"""

from __future__ import annotations

import orjson

from relay.storage.params import LeaderParams, PruneParams, ReapResult
from relay.storage.redis.codec import duration_us, to_us
from relay.storage.redis.session import Session

LEASE_EXPIRED_MESSAGE = "lease expired: the worker stopped heartbeating"
# The message as a JSON string literal, ready for reap.lua to splice into the error object it writes.
_MESSAGE_JSON = orjson.dumps(LEASE_EXPIRED_MESSAGE).decode()


async def reap_expired(s: Session) -> ReapResult:
    """Rule 6."""
    requeued, dead, cancelled, woken = await s.scripts.reap(s.now(), s.origin, _MESSAGE_JSON)
    s.wake_from(woken)
    return ReapResult(
        requeued=tuple(i.decode() for i in requeued),
        dead=tuple(i.decode() for i in dead),
        cancelled=tuple(i.decode() for i in cancelled),
    )


async def promote_due(s: Session) -> int:
    """Rule 7."""
    return await s.scripts.promote(s.now())


async def prune(s: Session, p: PruneParams) -> int:
    """Rule 8 (the caller returned 0 for a limit below 1 or no states)."""
    states = [str(state) for state in dict.fromkeys(p.states)]
    deleted, woken = await s.scripts.prune(s.now(), s.origin, to_us(p.finished_before), p.limit, states)
    s.wake_from(woken)
    return int(deleted)


async def rate_buckets_prune(s: Session) -> int:
    """Token buckets full again, or whose limit is gone."""
    return await s.scripts.buckets_prune(s.now())


async def leader_elect(s: Session, p: LeaderParams) -> bool:
    """Rule 9."""
    return await s.scripts.leader_elect(s.now(), p.name, p.holder, duration_us(p.ttl))


async def leader_resign(s: Session, p: LeaderParams) -> None:
    await s.scripts.leader_resign(s.now(), p.name, p.holder)
