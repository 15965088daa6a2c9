"""What storing or reading thousands of jobs in one call needs from Python itself."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

PAUSE_FROM = 1000  # jobs in a batch from which packing it or building its results pauses the collector


@contextmanager
def collector_paused(size: int) -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a batch of ``size`` jobs is packed or its results
    are built.

    Why: the results of 10,000 jobs are some 40,000 objects the collector tracks (jobs, results, their
    JSON values), all alive until the batch returns. The collector counts them as survivors, promotes
    them to its oldest generation, and every second or third batch runs a full collection over every
    object of the process; in the bulk bench (which holds its 50,000 job specs) that was a third of the
    producer's CPU. None of these objects forms a reference cycle, so pausing frees nothing later than
    reference counting does. The collector is left as found: a caller that disabled it keeps it off."""
    if size < PAUSE_FROM or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
