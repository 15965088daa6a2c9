"""The in-memory storage backend: for tests and ``relay.testing``; passes the same conformance suite."""

from __future__ import annotations

from relay.storage.memory.backend import MemoryStorage

__all__ = ["MemoryStorage"]
