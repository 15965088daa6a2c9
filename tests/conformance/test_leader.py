"""leader_elect and leader_resign (semantics.md rule 9): one holder at a time, by the storage's clock."""

from __future__ import annotations

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.storage.params import LeaderParams


def term(holder: str, ttl: float = 10.0, name: str = "maintenance") -> LeaderParams:
    return LeaderParams(name=name, holder=holder, ttl=ttl)


async def test_one_holder_at_a_time(storage: Storage) -> None:
    assert await storage.leader_elect(term("a")) is True
    assert await storage.leader_elect(term("b")) is False
    assert await storage.leader_elect(term("c")) is False
    assert await storage.leader_elect(term("a")) is True  # the holder stays leader


async def test_renewal_extends_the_term(storage: Storage, clock: ManualClock) -> None:
    assert await storage.leader_elect(term("a", ttl=10)) is True
    clock.advance(8)
    assert await storage.leader_elect(term("a", ttl=10)) is True  # now held until +18
    clock.advance(4)  # +12: the first term would have lapsed
    assert await storage.leader_elect(term("b", ttl=10)) is False
    clock.advance(5.9)  # +17.9
    assert await storage.leader_elect(term("b", ttl=10)) is False


async def test_takeover_after_the_term_lapses(storage: Storage, clock: ManualClock) -> None:
    assert await storage.leader_elect(term("a", ttl=10)) is True
    clock.advance(9.5)
    assert await storage.leader_elect(term("b", ttl=10)) is False
    clock.advance(0.5)  # expires_at == now: lapsed
    assert await storage.leader_elect(term("b", ttl=10)) is True
    assert await storage.leader_elect(term("a", ttl=10)) is False  # the old holder lost it


async def test_resign_lets_another_take_over_at_once(storage: Storage) -> None:
    assert await storage.leader_elect(term("a", ttl=60)) is True
    await storage.leader_resign(term("a"))
    assert await storage.leader_elect(term("b", ttl=60)) is True
    assert await storage.leader_elect(term("a", ttl=60)) is False


async def test_resign_by_a_non_holder_changes_nothing(storage: Storage) -> None:
    await storage.leader_resign(term("nobody"))  # no leader yet: no error
    assert await storage.leader_elect(term("a", ttl=60)) is True
    await storage.leader_resign(term("b"))
    assert await storage.leader_elect(term("b", ttl=60)) is False
    assert await storage.leader_elect(term("a", ttl=60)) is True


async def test_leaderships_of_different_names_are_independent(storage: Storage, clock: ManualClock) -> None:
    assert await storage.leader_elect(term("a", name="reaper")) is True
    assert await storage.leader_elect(term("b", name="pruner")) is True
    assert await storage.leader_elect(term("b", name="reaper")) is False
    await storage.leader_resign(term("a", name="pruner"))  # a does not hold "pruner"
    assert await storage.leader_elect(term("a", name="pruner")) is False
