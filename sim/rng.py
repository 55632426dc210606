"""Named random streams: every draw of a run comes from one of these, keyed by the scenario's
seed, so a scenario and seed give identical results and a change to one stream leaves the
others alone (common random numbers across policy variants).

`stream(name, seed, *more)` is numpy's default_rng([seed, KEY, *more]). The keys are the
numbers the streams have always had, so summaries stay byte-identical.
"""

from __future__ import annotations

import numpy as np

STREAMS = {
    "arrivals": 1,  # chunk k of demand: sim.demand.chunk_arrivals ([seed, 1, k])
    "service_noise": 2,  # chunk k's per-request service noise (exponential, normal)
    "run": 3,  # draws made during a run: retries, conversions, social offspring
    "gateway_noise": 4,  # the live gateway's per-request service noise
    "failures": 5,  # GPU failure and repair times (+ the policy's own seed)
    "content_filter": 77,  # the content filter's verdicts (+ the policy's own seed)
    "epochs": 6,  # lengths of a cycling pool's empty epochs (sim.fleet.kernel)
    "classes": 8,  # request classes, hashed from each request's service noise (sim.classes)
}


def stream(name: str, seed: int, *more: int) -> np.random.Generator:
    """The generator of a named stream for this seed (and sub-keys)."""
    return np.random.default_rng([int(seed), STREAMS[name], *(int(x) for x in more)])


def key(name: str, seed: int) -> int:
    """A 63-bit integer key of a stream, for generators outside numpy (the fleet loop's
    counter-based draws)."""
    return int(np.random.SeedSequence([int(seed), STREAMS[name]]).generate_state(1, np.uint64)[0] >> 1)


def uniform_of(x: np.ndarray, name: str) -> np.ndarray:
    """A uniform [0, 1) per value of x, a splitmix64 hash of its float bits keyed by a stream:
    a draw tied to a request's own random variate (common random numbers with no new
    sequence). Independent of x in practice: the hash scrambles every bit."""
    with np.errstate(over="ignore"):
        z = np.ascontiguousarray(x, np.float64).view(np.uint64) + np.uint64(STREAMS[name]) * np.uint64(
            0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
