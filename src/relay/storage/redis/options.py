"""The Redis storage URL: where the server is (redis-py's own URL syntax), plus Relay's options.

``redis://[[user]:password@]host[:port][/db][?option=value&...]``, ``rediss://`` (TLS) and
``unix:///path/to/redis.sock[?db=N&...]`` are read by redis-py. Relay takes its own options out of the
query before handing the rest to redis-py:

- ``prefix`` (default ``relay``): the first part of every key, so that several Relay stores (or Relay
  and other programs) share one Redis database. Wrap it in braces (``{relay}``) to keep every key in
  one Redis Cluster hash slot (Cluster itself is not supported).
- ``log_max_lines`` (default 100000): log lines kept per job; older lines are dropped first.
- ``socket_timeout`` (default 10 s): how long one command may wait for its reply.
- ``retry_deadline`` (default 10 s): how long an operation keeps retrying while the server cannot be
  reached (a restart, a failover) before ``StorageUnavailableError``.

Keyword options given to :class:`RedisStorage` override the URL's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from relay.errors import ConfigurationError
from relay.storage.redis.keys import DEFAULT_PREFIX


@dataclass(frozen=True, slots=True)
class RedisOptions:
    url: str  # for redis-py: the URL without Relay's options
    prefix: str = DEFAULT_PREFIX
    log_max_lines: int = 100_000
    socket_timeout: float = 10.0
    retry_deadline: float = 10.0


_CONVERTERS: Mapping[str, type] = {
    "prefix": str,
    "log_max_lines": int,
    "socket_timeout": float,
    "retry_deadline": float,
}


def parse_options(url: str, overrides: Mapping[str, Any] | None = None) -> RedisOptions:
    """Split ``url`` into redis-py's URL and Relay's options.

    >>> parse_options("redis://localhost:6379/0?prefix=jobs").prefix
    'jobs'
    """
    parts = urlsplit(url)
    ours: dict[str, Any] = {}
    theirs: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _CONVERTERS:
            ours[name] = _convert(name, value, url)
        else:
            theirs.append((name, value))
    options = RedisOptions(url=urlunsplit(parts._replace(query=urlencode(theirs))), **ours)
    known = {f.name for f in fields(RedisOptions)} - {"url"}
    unknown = set(overrides or {}) - known
    if unknown:
        raise ConfigurationError(f"unknown Redis storage options: {', '.join(sorted(unknown))}")
    options = replace(options, **dict(overrides or {}))
    if not options.prefix or options.log_max_lines < 1:
        raise ConfigurationError(
            f"invalid Redis storage options in {redacted(url)!r}: empty prefix or log_max_lines < 1"
        )
    return options


def _convert(name: str, value: str, url: str) -> Any:
    try:
        return _CONVERTERS[name](value)
    except ValueError:
        raise ConfigurationError(f"invalid {name}={value!r} in the Redis URL {redacted(url)!r}") from None


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs.

    >>> redacted("redis://:s3cret@cache:6379/0")
    'redis://:***@cache:6379/0'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))
