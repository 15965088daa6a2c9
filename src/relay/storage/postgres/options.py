"""What a ``postgresql://`` URL says: where to connect (for libpq) and how Relay uses it (query params).

Relay's own settings ride in the URL's query string next to libpq's and are removed before the URL reaches
libpq (which refuses parameters it does not know)::

    postgresql://relay:secret@db.internal/app?pool_size=20&sslmode=require

- ``pool_size``: most pooled connections this process opens (default 10, at least 1). The process also
  keeps one LISTEN connection and, while it takes part in leader elections, one leader connection.
- ``pool_timeout``: seconds an operation waits for a free pooled connection (default 30).
- ``prepare_threshold``: executions of a query before psycopg prepares it server-side (default 5);
  ``none`` turns prepared statements off, for poolers that do not support them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from relay.errors import ConfigurationError

DEFAULT_POOL_SIZE = 10
DEFAULT_POOL_TIMEOUT = 30.0
DEFAULT_PREPARE_THRESHOLD = 5


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    conninfo: str  # the URL without Relay's parameters, for libpq
    pool_size: int = DEFAULT_POOL_SIZE
    pool_timeout: float = DEFAULT_POOL_TIMEOUT
    prepare_threshold: int | None = DEFAULT_PREPARE_THRESHOLD


_RELAY_PARAMS = ("pool_size", "pool_timeout", "prepare_threshold")


def parse_options(url: str, overrides: dict[str, Any]) -> PostgresOptions:
    """Split ``url`` into libpq's part and Relay's options; constructor ``overrides`` win over the URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = {k: v for k, v in query if k in _RELAY_PARAMS}
    unknown = set(overrides) - set(_RELAY_PARAMS)
    if unknown:
        raise ConfigurationError(f"unknown PostgreSQL storage options: {', '.join(sorted(unknown))}")
    given.update({k: v for k, v in overrides.items() if v is not None})
    rest = urlencode([(k, v) for k, v in query if k not in _RELAY_PARAMS])
    conninfo = urlunsplit(parts._replace(query=rest))
    return PostgresOptions(
        conninfo=conninfo,
        pool_size=_pool_size(given.get("pool_size", DEFAULT_POOL_SIZE)),
        pool_timeout=_positive("pool_timeout", given.get("pool_timeout", DEFAULT_POOL_TIMEOUT)),
        prepare_threshold=_threshold(given.get("prepare_threshold", DEFAULT_PREPARE_THRESHOLD)),
    )


def _pool_size(raw: object) -> int:
    try:
        size = int(str(raw))
    except ValueError:
        raise ConfigurationError(f"pool_size must be a whole number, not {raw!r}") from None
    if size < 1:
        raise ConfigurationError(f"pool_size must be at least 1, not {size}")
    return size


def _positive(name: str, raw: object) -> float:
    try:
        value = float(str(raw))
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, not {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive, not {value:g}")
    return value


def _threshold(raw: object) -> int | None:
    if raw is None or str(raw).lower() in ("none", "off", ""):
        return None
    try:
        return max(0, int(str(raw)))
    except ValueError:
        raise ConfigurationError(f"prepare_threshold must be a whole number or none, not {raw!r}") from None
