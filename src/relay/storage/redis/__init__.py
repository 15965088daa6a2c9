"""The Redis storage backend (``redis://``, ``rediss://``, ``unix://`` URLs): Redis 6.2 or newer.

Internal, like the rest of ``relay.storage``: only the composition root (``relay.app``) picks it.
See :mod:`relay.storage.redis.backend` for how it works and docs/redis.md for the guarantees it keeps.
"""

from __future__ import annotations

from relay.storage.redis.backend import RedisStorage

__all__ = ["RedisStorage"]
