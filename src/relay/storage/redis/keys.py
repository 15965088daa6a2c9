"""Every Redis key Relay uses, in one place: the templates the Python side and the Lua scripts share.

Each key is ``<prefix>:<template>``, the prefix coming from the URL (``?prefix=``, default ``relay``).
The templates below are ``%s`` format strings; :mod:`.scripts` renders this table into a Lua table that
is prepended to every script, so the Lua side builds exactly the same names (``key('job', id)``). A
free-form part (a job id, a queue name) always comes last, so no two templates can produce one key;
a key of two free-form parts (a queue and a key of its jobs) starts with the first one's length.

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

Flow control (issue 12; a store without limits, ordering keys or schedules has none of these)::

    P:limits                    hash    queue -> its QueueLimits as JSON (codec.limits_json); absent:
                                        no limits. A claim reads its queues' entries with one HMGET
    P:buckets:<queue>           hash    token buckets of a queue: field '' the queue-wide one, else
                                        a rate_key's; value "<tokens %.17g> <at µs>" (tokens at that
                                        time); no field: a full bucket
    P:conc:<n>:<queue>:<key>    set     ids of the running jobs of (queue, concurrency_key); n is the
                                        queue's length in bytes, so no (queue, key) reads as another
                                        pair. Claims add, every way out of running removes (SREM)
    P:heads:<queue>             hash    ordering key -> the key's one unheld blocking job
    P:held:<n>:<queue>:<key>    zset    held jobs of (queue, ordering_key), score seq: the first is
                                        released when the head stops blocking. Held jobs are in
                                        P:idx (they count as pending or scheduled) but in no ready
                                        or waiting set, so claims never walk them
    P:schedule:<name>           hash    one schedule (see schedules.py)
    P:schedules                 zset    every schedule name, score 0: listed by name
    P:schedules-due             zset    names of the schedules not paused with a next run, score
                                        next_run_at: what schedule_due reads

Workflow runs (issue 13; a store without runs has none of these)::

    P:run:<id>                  hash    one run: workflow, policy (stop / continue), params (JSON),
                                        created_at (µs), seq, batch (the token of the start call),
                                        cancelled ("1" while cancelled; absent: not), graph (JSON:
                                        per step in definition order [name, job id, depends_on,
                                        allow_failure]). Its steps' states are their jobs'
    P:run-seq                   string  INCR counter: each run's seq (the listing's order and cursor)
    P:runs                      zset    every run id, score seq: listed newest first
    P:runs-of:<workflow>        zset    the run ids of one workflow, score seq

A step's job carries ``workflow_run_id`` (a hash field, beside its copy in ``doc``): a job without it
is no step. A held step (waiting for the steps it depends on) is in ``P:idx`` but in no ready or
waiting set, like a job held by its ordering key; the step whose end releases it puts it there.

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
        "limits": "limits",
        "buckets": "buckets:%s",  # queue
        "conc": "conc:%s:%s:%s",  # len(queue), queue, concurrency key
        "heads": "heads:%s",  # queue
        "held": "held:%s:%s:%s",  # len(queue), queue, ordering key
        "schedule": "schedule:%s",  # schedule name
        "schedules": "schedules",
        "schedules_due": "schedules-due",
        "run": "run:%s",  # workflow run id
        "runs": "runs",
        "runs_of": "runs-of:%s",  # workflow name
        "run_seq": "run-seq",
    }
)

DEFAULT_PREFIX = "relay"

#: The version of the layout above and of the job hash (:mod:`.codec`), stored in ``P:layout`` by the
#: first insert; a store written with another version is refused at open. 2: the job's unchanging
#: attributes in one ``doc`` field, no ``id`` field (Relay before that wrote no ``P:layout``).
#: Flow control added keys and optional job fields only (a layout-2 store without them reads as one
#: without limits, ordering keys or schedules), so it is still 2.
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

    def schedule(self, name: str) -> str:
        return self._key("schedule", name)

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
