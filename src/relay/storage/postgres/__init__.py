"""PostgreSQL storage backend (skeleton; filled in by issue 4)."""

from __future__ import annotations

from relay.storage.postgres.backend import PostgresStorage

__all__ = ["PostgresStorage"]
