"""open, close, migrate and capabilities (semantics.md rule 20)."""

from __future__ import annotations

from relay.storage.base import Storage
from relay.storage.params import Capabilities

from .helpers import insert_one


async def test_backend_implements_the_storage_protocol(storage: Storage) -> None:
    assert isinstance(storage, Storage)
    assert isinstance(storage.capabilities, Capabilities)
    assert storage.capabilities.name


async def test_open_is_idempotent(storage: Storage) -> None:
    job = await insert_one(storage)
    await storage.open()
    assert await storage.job_get(job.id) == job


async def test_migrate_after_open_has_nothing_left_to_apply(storage: Storage) -> None:
    assert await storage.migrate() == []
