"""The one timing helper the benchmark scripts share."""
from __future__ import annotations

import statistics
import time


def median_time(fn, repeats, sync=None):
    """Median wall time of ``repeats`` calls of ``fn`` (seconds).

    ``sync`` (e.g. a GPU synchronize) is called before each clock read, so that
    asynchronous work is inside the measured interval.
    """
    times = []
    for _ in range(repeats):
        if sync is not None:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
