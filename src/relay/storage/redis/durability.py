"""What a Redis server's persistence settings can lose, said plainly (DESIGN.md guarantee 1 on Redis).

Read at open from ``CONFIG GET`` (``appendonly``, ``appendfsync``, ``save``, ``maxmemory``,
``maxmemory-policy``), logged once by the backend, and kept for a ``/readyz`` detail. The judgement:

- ``appendonly yes`` with ``appendfsync always``: nothing acknowledged is lost, even on a power failure.
- ``appendonly yes`` with ``everysec`` (Redis's default AOF mode): a crash of Redis itself loses nothing
  (Redis writes the AOF before it replies); a power failure or kernel crash loses up to about a second
  of acknowledged writes (up to two when the disk is slow).
- ``appendonly yes`` with ``no``: as everysec, but the OS decides when to flush: often ~30 s at risk.
- RDB snapshots only: a restart loses everything since the last snapshot: minutes of jobs.
- no persistence: a restart loses every job.
- with a ``maxmemory`` limit, a ``maxmemory-policy`` other than ``noeviction`` or ``volatile-*`` lets
  Redis evict job keys under memory pressure (``volatile-*`` evict only keys with a TTL: Relay's jobs
  have none).

``durable`` is true with AOF on and no eviction of jobs, which is what ``Capabilities.durable`` reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

SETTINGS = ("appendonly", "appendfsync", "save", "maxmemory", "maxmemory-policy")

_AOF = {
    "always": "AOF with appendfsync always: no acknowledged job is lost, even on a power failure",
    "everysec": (
        "AOF with appendfsync everysec: a Redis crash or restart loses nothing; a power failure or OS "
        "crash can lose the last ~1 s (up to 2 s) of acknowledged writes (enqueued jobs, outcomes)"
    ),
    "no": (
        "AOF with appendfsync no: a Redis crash or restart loses nothing; a power failure or OS crash can "
        "lose what the OS had not flushed yet (often ~30 s of acknowledged writes)"
    ),
}


@dataclass(frozen=True, slots=True)
class DurabilityReport:
    settings: Mapping[str, str]  # the values read, by setting name ({} when CONFIG was refused)
    durable: bool
    summary: str  # one line, for people

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["settings"] = dict(self.settings)
        return out


UNKNOWN = DurabilityReport({}, False, "persistence settings not read yet (the storage is not open)")


async def read_report(client: Redis) -> DurabilityReport:
    """Ask the server for its settings (one ``CONFIG GET`` each: 6.2 takes one pattern per call)."""
    values: dict[str, str] = {}
    try:
        for name in SETTINGS:
            reply: dict[Any, Any] = await client.config_get(name)
            values[name] = _text(reply.get(name, reply.get(name.encode(), "")))
    except ResponseError as exc:
        return DurabilityReport(
            {},
            False,
            f"persistence settings unknown (CONFIG GET refused: {exc}); check appendonly, appendfsync "
            "and maxmemory-policy on the server: without AOF a Redis restart loses jobs",
        )
    return assess(values)


def assess(values: Mapping[str, str]) -> DurabilityReport:
    """Judge settings as read by :func:`read_report`.

    >>> assess({"appendonly": "yes", "appendfsync": "always", "maxmemory": "0"}).durable
    True
    """
    durable = values.get("appendonly") == "yes"
    if durable:
        summary = _AOF.get(values.get("appendfsync", ""), "AOF on, with an unknown appendfsync")
    elif values.get("save", "").strip():
        summary = (
            f"no AOF, RDB snapshots only (save {values['save']!r}): a Redis restart or crash loses every "
            "write since the last snapshot, minutes of acknowledged jobs; turn on appendonly"
        )
    else:
        summary = "no persistence (appendonly no, no save rules): a Redis restart loses every job"
    policy = values.get("maxmemory-policy", "noeviction")
    evicting = values.get("maxmemory", "0") != "0" and not (
        policy == "noeviction" or policy.startswith("volatile-")
    )
    if evicting:
        durable = False
        summary += f"; maxmemory-policy {policy} lets Redis evict jobs when memory runs out (use noeviction)"
    return DurabilityReport(dict(values), durable, summary)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
