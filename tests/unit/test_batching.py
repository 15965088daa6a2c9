"""Ids for a batch of jobs, and the collector pause around building one."""

from __future__ import annotations

import gc
import uuid

from relay.storage.batching import collector_paused
from relay.types import new_job_id, new_job_ids


def test_batch_ids_have_the_shape_of_single_ids() -> None:
    ids = new_job_ids(2000)
    assert len(set(ids)) == 2000
    single = uuid.UUID(new_job_id())
    assert (single.version, single.variant) == (7, uuid.RFC_4122)
    for value in ids[:50]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert abs((parsed.int >> 80) - (single.int >> 80)) < 60_000  # milliseconds apart, at most
    assert new_job_ids(0) == []


def test_the_collector_pause_leaves_the_collector_as_found() -> None:
    assert gc.isenabled()
    with collector_paused(10):  # a small batch: not paused
        assert gc.isenabled()
    with collector_paused(10_000):
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused(10_000):
            assert not gc.isenabled()
        assert not gc.isenabled()  # the caller's choice is kept
    finally:
        gc.enable()
