"""The run's first attempts, chunk by chunk, made ahead on a second thread.

First attempts do not depend on the run (common random numbers: chunk k draws from
rng([seed, 1, k]), its service noise from rng([seed, 2, k]), or a replayed schedule's request
its own, keyed by its id: sim.rng.request_noise), so a thread can make chunk k + 1
while the run admits and serves chunk k: numpy and the compiled loops release the GIL, and
the two cores overlap. What does depend on the run (paid conversion changing a user's tier)
is applied by the consumer, when it takes the chunk, exactly where the sequential run did.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from sim.demand.base import Arrivals
from sim.rng import request_noise


def chunk_with_noise(model, sc, k: int, until: float) -> tuple[Arrivals, np.ndarray, np.ndarray]:
    """Chunk k of first attempts (sim.demand.chunk_arrivals, before conversion) and the
    service noise of each request: exponential(1) and standard normal draws."""
    from sim.demand import chunk_arrivals

    a = chunk_arrivals(model, sc, k, until, convert=False)
    srng = np.random.default_rng([sc.seed, 2, k])
    n = len(a)
    e, z = srng.exponential(1.0, n), srng.standard_normal(n)
    if a.key is not None:  # a replayed schedule: each request's own noise
        e, z = keyed_noise(sc.seed, a, e, z)
    return a, e, z


def keyed_noise(seed: int, a: Arrivals, e: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The noise (e, z) with each request that has a key (Arrivals.key >= 0) given its own,
    sim.rng.request_noise(seed, key, attempt): what the live gateway gives the same request."""
    m = a.key >= 0
    if m.any():
        e, z = e.copy(), z.copy()
        e[m], z[m] = request_noise(seed, a.key[m], a.attempts()[m])
    return e, z


class ChunkFeed:
    """Chunks first, first + 1, ... up to `until`, taken in order with `get(k)`; `ahead` chunks are made
    in advance on a daemon thread (thread=False: made on demand, same results)."""

    def __init__(self, model, sc, until: float, ahead: int = 2, thread: bool = True, first: int = 0):
        self.model, self.sc, self.until = model, sc, until
        self.first = self.next = first
        self._q: queue.Queue | None = None
        self._stop = threading.Event()
        if thread:
            self._q = queue.Queue(maxsize=ahead)
            self._t = threading.Thread(target=self._work, name="floodgate-demand", daemon=True)
            self._t.start()

    def _last(self) -> int:
        c, k = self.sc.chunk_s, self.first
        while (k + 1) * c < self.until:  # the engine loads chunk k + 1 only while this holds
            k += 1
        return k

    def _work(self) -> None:
        try:
            for k in range(self.first, self._last() + 1):
                item = chunk_with_noise(self.model, self.sc, k, self.until)
                while not self._stop.is_set():
                    try:
                        self._q.put((k, item), timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._q.put((-1, e))

    def get(self, k: int) -> tuple[Arrivals, np.ndarray, np.ndarray]:
        if k != self.next:
            raise ValueError(f"chunk {k} asked for, {self.next} is next")
        self.next += 1
        if self._q is None:
            return chunk_with_noise(self.model, self.sc, k, self.until)
        got, item = self._q.get()
        if got < 0:
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
