"""Timing the engine's parts from a benchmark (sim_speed.py, full_scale.py): wrappers that add
each call's seconds to a running total."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def timed(f: Callable, acc: dict, part: str, clock: Callable[[], float] = time.thread_time) -> Callable:
    """f, adding the seconds of each call (by `clock`) to acc[part]."""
    def call(*a):
        t0 = clock()
        try:
            return f(*a)
        finally:
            acc[part] += clock() - t0
    return call


@contextmanager
def fleet_loop_timed(acc: dict, part: str = "fleet_loop",
                     clock: Callable[[], float] = time.thread_time) -> Iterator[dict]:
    """Within it, every call of the compiled fleet loop (its entry point, sim/fleet/fleet.py)
    adds its seconds to acc[part]."""
    from sim.fleet.fleet import Fleet

    kernel = Fleet._kernel
    Fleet._kernel = lambda self, *arrays: timed(kernel(self, *arrays), acc, part, clock)
    try:
        yield acc
    finally:
        Fleet._kernel = kernel
