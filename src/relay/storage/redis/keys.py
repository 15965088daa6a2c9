"""Every Redis key Relay uses, in one place: the templates the Python side and the Lua scripts share.

Each key is ``<prefix>:<template>``, the prefix coming from the URL (``?prefix=``, default ``relay``).
The templates below are ``%s`` format strings; :mod:`.scripts` renders this table into a Lua table that
is prepended to every script, so the Lua side builds exactly the same names (``key('job', id)``). A
free-form part (a job id, a queue name) always comes last, so no two templates can produce one key.

Layout (``P`` = the prefix; times are integer microseconds since the epoch, "seq" is the insertion
order)::

    P:layout                    string  the layout version below (LAYOUT), set by the first insert
    P:seq                       string  INCR counter: each job's seq (insertion order)
    P:job:<id>                  hash    one job: ``doc`` (what never changes, as JSON) and one field
                                        per attribute that changes (see :mod:`.codec`)
    P:idem                      hash    idempotency key -> job id
    P:queues                    hash    every known queue -> "1" paused / "0" not
    P:idx:<state>:<queue>       zset    job ids of one queue in one state, score seq: counts, filtered
                                        listing, bulk requeue / purge (never a keyspace scan)
    P:ready:<kind>:<queue>      zset    pending jobs, score -priority, member
                                        "<run_at %016d><seq %016d><id>": claim order is ZRANGE order
    P:waiting:<kind>:<queue>    zset    scheduled and failed jobs, score run_at: promoted when due
    P:running                   zset    running jobs, score lease_expires_at: what the reaper reads
    P:finished:<state>          zset    completed / dead / cancelled jobs, score finished_at: retention
    P:logs:<id>                 list    a job's log lines "seq\\tattempt\\tat\\tstream\\ttext", capped
    P:workers                   hash    worker id -> WorkerInfo as JSON
    P:leader:<name>             hash    holder, expires_at (judged by the storage clock; the key's own
                                        TTL only collects abandoned leaderships)
    P:wake                      channel pub/sub wake-ups: a JSON array [origin, queue, queue, ...]

Ready members sort by bytes within one score (Redis compares equal scores by member), so fixed-width
decimal run_at then seq give priority DESC, run_at, seq in one ``ZRANGE``; run_at is clamped to
[0, 10^16) µs (1970 to 2286) for that member only, the job keeps its real run_at.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

#: name -> template after the prefix. The Lua side reads this very table (see ``lua_table``).
TEMPLATES: Mapping[str, str] = MappingProxyType(
    {
        "layout": "layout",
        "seq": "seq",
        "job": "job:%s",
        "idem": "idem",
        "queues": "queues",
        "idx": "idx:%s:%s",  # state, queue
        "ready": "ready:%s:%s",  # kind, queue
        "waiting": "waiting:%s:%s",  # kind, queue
        "running": "running",
        "finished": "finished:%s",  # state
        "logs": "logs:%s",  # job id
        "workers": "workers",
        "leader": "leader:%s",  # leadership name
        "wake": "wake",
    }
)

DEFAULT_PREFIX = "relay"

#: The version of the layout above and of the job hash (:mod:`.codec`), stored in ``P:layout`` by the
#: first insert; a store written with another version is refused at open. 2: the job's unchanging
#: attributes in one ``doc`` field, no ``id`` field (Relay before that wrote no ``P:layout``).
LAYOUT = "2"


class Keys:
    """The key names of one store (one prefix), for the few commands Python runs outside scripts.

    >>> Keys("relay").job("0190-abc")
    'relay:job:0190-abc'
    """

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix

    def _key(self, name: str, *parts: str) -> str:
        return f"{self.prefix}:{TEMPLATES[name] % parts}"

    def job(self, job_id: str) -> str:
        return self._key("job", job_id)

    @property
    def layout(self) -> str:
        return self._key("layout")

    @property
    def seq(self) -> str:
        return self._key("seq")

    @property
    def workers(self) -> str:
        return self._key("workers")

    @property
    def wake(self) -> str:
        return self._key("wake")

    def pattern(self) -> str:
        """A SCAN pattern for every key of this store (tests delete a store with it)."""
        escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix)
        return f"{escaped}:*"


def lua_table() -> str:
    """``TEMPLATES`` as a Lua table constructor, for the script prelude."""
    entries = ", ".join(f"{name} = '{template}'" for name, template in TEMPLATES.items())
    return "{" + entries + "}"
