"""Storage URLs: which backend, and where. Parsing only; ``relay.app`` opens the backend."""

from __future__ import annotations

from dataclasses import dataclass

from relay.errors import ConfigurationError

DEFAULT_URL = "sqlite:///relay.db"


@dataclass(frozen=True, slots=True)
class StorageURL:
    scheme: str  # "sqlite", "memory", "postgresql", "redis"
    url: str  # the whole URL, as given
    path: str | None = None  # sqlite: the database file


def parse_storage_url(url: str) -> StorageURL:
    """Parse ``sqlite:///relay.db`` (relative), ``sqlite:////var/lib/relay.db`` (absolute),
    ``memory://``, ``postgresql://…`` and ``redis://…``.

    >>> parse_storage_url("sqlite:///relay.db").path
    'relay.db'
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigurationError(f"not a storage URL: {url!r} (try sqlite:///relay.db)")
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ConfigurationError(f"a SQLite URL names a file: sqlite:///relay.db, not {url!r}")
        return StorageURL("sqlite", url, rest[1:])
    if scheme == "memory":
        return StorageURL("memory", url)
    if scheme in ("postgres", "postgresql"):
        return StorageURL("postgresql", url)
    if scheme in ("redis", "rediss", "unix"):
        return StorageURL("redis", url)
    raise ConfigurationError(
        f"unknown storage URL scheme {scheme!r} in {url!r}: use sqlite://, postgresql:// or redis://"
    )
