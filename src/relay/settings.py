"""Settings, from arguments or ``RELAY_*`` environment variables.

``RELAY_DB_DSN`` is accepted as an alias of ``RELAY_DATABASE_URL`` (the name existing users know).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from relay.errors import ConfigurationError
from relay.storage.urls import DEFAULT_URL

LOG_LEVELS = ("debug", "info", "warning", "error")


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, not {raw!r}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_URL
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 10
    poll_interval: float = 1.0  # seconds between polls when no wake-up arrives (jittered ±10%)
    grace_period: float = 30.0  # seconds running jobs get to finish at shutdown
    cancel_grace: float = 5.0  # seconds a job asked to cancel gets before it is killed
    reaper_interval: float = 5.0
    scheduler_interval: float = 1.0
    cron_interval: float = 1.0  # seconds between two looks for due schedule ticks
    workflows_dir: str = "workflows"  # where the YAML workflow definitions are
    leader_ttl: float = 15.0
    retention: float = 7 * 86400.0  # seconds finished jobs are kept (0 keeps them forever)
    log_cap: int = 1_000_000  # bytes of output kept per attempt
    log_format: str = "text"  # or "json"
    # "info" logs one line per finished job; "debug" adds one per claim; "warning" keeps only trouble.
    log_level: str = "info"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``RELAY_*`` variables; keyword overrides that are not None win."""
        e = os.environ if env is None else env
        url = e.get("RELAY_DATABASE_URL") or e.get("RELAY_DB_DSN") or DEFAULT_URL
        queues = tuple(q.strip() for q in e.get("RELAY_QUEUES", "default").split(",") if q.strip())
        settings = cls(
            database_url=url,
            queues=queues or ("default",),
            concurrency=_int(e, "RELAY_CONCURRENCY", cls.concurrency),
            poll_interval=_float(e, "RELAY_POLL_INTERVAL", cls.poll_interval),
            grace_period=_float(e, "RELAY_GRACE_PERIOD", cls.grace_period),
            cancel_grace=_float(e, "RELAY_CANCEL_GRACE", cls.cancel_grace),
            reaper_interval=_float(e, "RELAY_REAPER_INTERVAL", cls.reaper_interval),
            scheduler_interval=_float(e, "RELAY_SCHEDULER_INTERVAL", cls.scheduler_interval),
            cron_interval=_float(e, "RELAY_CRON_INTERVAL", cls.cron_interval),
            workflows_dir=e.get("RELAY_WORKFLOWS_DIR") or cls.workflows_dir,
            leader_ttl=_float(e, "RELAY_LEADER_TTL", cls.leader_ttl),
            retention=_float(e, "RELAY_RETENTION", cls.retention),
            log_cap=_int(e, "RELAY_LOG_CAP", cls.log_cap),
            log_format=e.get("RELAY_LOG_FORMAT", cls.log_format),
            log_level=e.get("RELAY_LOG_LEVEL", cls.log_level).lower(),
        )
        return settings.with_overrides(**overrides)

    def with_overrides(self, **overrides: Any) -> Settings:
        chosen = {k: v for k, v in overrides.items() if v is not None}
        if "queues" in chosen and isinstance(chosen["queues"], str):
            chosen["queues"] = tuple(q.strip() for q in chosen["queues"].split(",") if q.strip())
        settings = replace(self, **chosen)
        if settings.concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        if settings.log_format not in ("text", "json"):
            raise ConfigurationError("log format must be 'text' or 'json'")
        if settings.log_level not in LOG_LEVELS:
            raise ConfigurationError(f"log level must be one of {', '.join(LOG_LEVELS)}")
        return settings
