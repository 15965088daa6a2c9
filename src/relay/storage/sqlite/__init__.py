"""The SQLite backend (``sqlite:///relay.db``): see :mod:`relay.storage.sqlite.backend`."""

from __future__ import annotations

from relay.storage.sqlite.backend import SQLiteStorage

__all__ = ["SQLiteStorage"]
