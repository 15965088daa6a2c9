"""A job's children: the ``on_success`` / ``on_failure`` jobs its outcomes enqueued.

The storage seam cannot list jobs by ``parent_id`` (``ListParams`` has no such filter), so this looks
for them the cheap ways it can, with a bound:

1. a chained document with a client-chosen ``id`` is read directly (``job_get``);
2. otherwise the newest jobs of the chain's queue and kind are scanned, page by page, for
   ``parent_id == job.id``, stopping at jobs created before the parent (a child is always younger)
   or after ``SCAN_LIMIT`` jobs; :attr:`Children.complete` says whether the scan reached its end.

A ``parent_id`` filter on ``ListParams`` (an indexed column on every backend) would make this one
exact query; until then the job page says when it stopped looking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.storage.base import Admin
from relay.storage.params import ListParams
from relay.types import Job, NewJob

SCAN_LIMIT = 1000
PAGE = 200


@dataclass
class Children:
    jobs: list[Job] = field(default_factory=list)
    complete: bool = True  # False: SCAN_LIMIT jobs were read and older ones were not


async def find_children(storage: Admin, job: Job) -> Children:
    chains = [c for c in (job.on_success, job.on_failure) if c is not None]
    if not chains or job.attempt == 0:
        return Children()  # it never ran: no outcome, no child
    found: dict[str, Job] = {}
    complete = True
    scanned: set[tuple[str, str]] = set()
    for chain in chains:
        if chain.id is not None:
            child = await storage.job_get(chain.id)
            if child is not None and child.parent_id == job.id:
                found[child.id] = child
            continue
        if (chain.queue, chain.kind.value) not in scanned:
            scanned.add((chain.queue, chain.kind.value))
            jobs, done = await _scan(storage, job, chain)
            found |= {child.id: child for child in jobs}
            complete = complete and done
    return Children(sorted(found.values(), key=lambda j: j.created_at), complete)


async def _scan(storage: Admin, parent: Job, chain: NewJob) -> tuple[list[Job], bool]:
    params = ListParams(queues=(chain.queue,), kinds=(chain.kind,), limit=PAGE)
    children: list[Job] = []
    read = 0
    while read < SCAN_LIMIT:
        page = await storage.job_list(params)
        read += len(page.jobs)
        children += [j for j in page.jobs if j.parent_id == parent.id]
        older = page.jobs and page.jobs[-1].created_at < parent.created_at
        if older or page.next_cursor is None:
            return children, True
        params = ListParams(queues=params.queues, kinds=params.kinds, limit=PAGE, cursor=page.next_cursor)
    return children, False
