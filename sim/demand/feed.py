"""The run's arrivals: first attempts chunk by chunk (made ahead on a second thread) and the
requests created during the run, merged window by window (DemandFeed, what `Run` takes).

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

from sim.demand.base import Arrivals, gather, merge_sorted
from sim.rng import request_noise, service_noise


def chunk_with_noise(model, sc, k: int, until: float) -> tuple[Arrivals, np.ndarray, np.ndarray]:
    """Chunk k of first attempts (sim.demand.chunk_arrivals, before conversion) and the
    service noise of each request: exponential(1) and standard normal draws."""
    from sim.demand import chunk_arrivals

    a = chunk_arrivals(model, sc, k, until, convert=False)
    srng = np.random.default_rng([sc.seed, 2, k])
    n = len(a)
    e, z = service_noise(srng, n)
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


def _merge_runs(parts) -> tuple[Arrivals, np.ndarray, np.ndarray] | None:
    """DemandFeed._merged(parts, None) for unkeyed parts, merged pairwise from the left in
    one compiled pass each, noise included (base.merge_sorted: earlier parts first at ties,
    so the same order as the stable sort); None when a part is not time-sorted (the caller
    sorts instead)."""
    a, e, z = parts[0]
    for b, eb, zb in parts[1:]:
        got = merge_sorted(a, b, ((e, z), (eb, zb)), wide=True)
        if got is None:
            return None
        a, e, z = got
    return a.wide(), e, z


class ChunkFeed:
    """Chunks first, first + 1, ... up to `until`, taken in order with `get(k)`; `ahead` chunks are made
    in advance on a daemon thread (thread=False: made on demand, same results).

    The thread starts a chunk only while the consumer is in compiled code that has let go of
    the GIL (`overlap(True)`: the run's fleet loop) or is waiting for a chunk: the two
    threads' Python and numpy glue would otherwise take turns at the GIL, each wait up to
    the interpreter's switch interval (5 ms), and the run's thread is the one that sets the
    pace. Which thread makes a chunk when never changes what it holds."""

    def __init__(self, model, sc, until: float, ahead: int = 4, thread: bool = True, first: int = 0):
        self.model, self.sc, self.until = model, sc, until
        self.first = self.next = first
        self._q: queue.Queue | None = None
        self._stop = threading.Event()
        self._go = threading.Event()  # the consumer has let go of the GIL, or waits
        self._overlap = False
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
                while not self._go.wait(0.5) and not self._stop.is_set():
                    continue
                if self._stop.is_set():
                    return
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

    def overlap(self, on: bool) -> None:
        """The consumer enters (True) or leaves (False) code that lets go of the GIL."""
        self._overlap = on
        if on:
            self._go.set()
        else:
            self._go.clear()

    def get(self, k: int) -> tuple[Arrivals, np.ndarray, np.ndarray]:
        if k != self.next:
            raise ValueError(f"chunk {k} asked for, {self.next} is next")
        self.next += 1
        if self._q is None:
            return chunk_with_noise(self.model, self.sc, k, self.until)
        try:
            got, item = self._q.get_nowait()
        except queue.Empty:
            self._go.set()  # waiting: the thread may work
            got, item = self._q.get()
            if not self._overlap:
                self._go.clear()
        if got < 0:
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._go.set()


class DemandFeed:
    """What a run's windows take: first attempts chunk by chunk on the fixed grid (common
    random numbers across variants), merged in time order with the requests created during
    the run (retries, socially triggered requests), each with its service noise.

    `take(until, limit)` hands over the arrivals in [cursor, until); `add(a)` queues created
    requests for later windows. One created inside the window being processed is deferred to
    `defer_to` (the window's end, set by the run); keep chunk_s below the shortest retry
    backoff for exact timing. `prng` is the run's stream (sim.rng "run"): a created request's
    noise is drawn from it, interleaved with the run's other draws."""

    def __init__(self, demand, sc, start: float, prng: np.random.Generator, threads: bool = False):
        self.demand, self.sc, self.start, self.prng, self.threads = demand, sc, start, prng, threads
        self.defer_to = start  # requests created before this wait for it: the window's end
        self.deferred = 0  # created requests moved to defer_to
        self._chunk = -1
        self._buf = Arrivals.empty()
        self._noise = (np.zeros(0), np.zeros(0))
        self._pos = 0
        self._feed: ChunkFeed | None = None
        self._pending: list[tuple[Arrivals, np.ndarray, np.ndarray]] = []

    def _load_chunk(self, k: int) -> None:
        if self._feed is None:
            self._feed = ChunkFeed(self.demand, self.sc, self.sc.horizon, thread=self.threads,
                                   first=k)
        a, e, z = self._feed.get(k)
        if self.demand.override.a is not None and len(a):  # paid conversion so far
            a = a.with_(tier=self.demand.tier_now(a.user, a.tier))
        self._buf, self._noise = a, (e, z)
        self._chunk, self._pos = k, 0

    def take(self, until: float, limit: int | None = None
             ) -> tuple[Arrivals, np.ndarray, np.ndarray, float | None]:
        """Arrivals in [cursor, until) with their service noise, and None; or, when there are
        more than `limit`, the first `limit` of them in time order and the time of the first
        one left (the rest wait at the front of the pending batches)."""
        parts = []
        if self._chunk < 0:
            self._load_chunk(int(self.start // self.sc.chunk_s))
            self._pos = int(np.searchsorted(self._buf.t, self.start, side="left"))
        while True:
            end = self._pos + int(np.searchsorted(self._buf.t[self._pos:], until, side="left"))
            sl = slice(self._pos, end)
            parts.append((self._buf.take(sl), self._noise[0][sl], self._noise[1][sl]))
            self._pos = end
            chunk_end = (self._chunk + 1) * self.sc.chunk_s
            if chunk_end >= until or chunk_end >= self.sc.horizon:
                break
            self._load_chunk(self._chunk + 1)
        keep = []
        for a, e, z in self._pending:
            cut = int(np.searchsorted(a.t, until, side="left"))  # pending batches are time-sorted
            if cut:
                parts.append((a.take(slice(0, cut)), e[:cut], z[:cut]))
            if cut < len(a):
                keep.append((a.take(slice(cut, None)), e[cut:], z[cut:]))
        self._pending = keep
        parts = [p for p in parts if len(p[0])]
        if not parts:
            return Arrivals.empty(), np.zeros(0), np.zeros(0), None
        if limit is not None and sum(len(p[0]) for p in parts) > limit:
            return self._take_first(parts, limit)
        if len(parts) == 1:
            a, e, z = parts[0]
            return a.wide(), e, z, None
        return (*self._merged(parts, None), None)

    @staticmethod
    def _merged(parts, order) -> tuple[Arrivals, np.ndarray, np.ndarray]:
        """The parts as one, by one stable sort by time (earlier parts first at ties: numpy's
        timsort merges the time-sorted parts), or gathered by `order` (indices into the parts
        concatenated) when given; users, tiers and attempts as int64."""
        if order is None and all(p[0].key is None for p in parts):
            got = _merge_runs(parts)
            if got is not None:
                return got
        t = np.concatenate([p[0].t for p in parts])
        if order is None:
            order = np.argsort(t, kind="stable")
        att = key = None
        if any(p[0].attempt is not None for p in parts):
            att = gather([p[0].attempts() for p in parts], order, np.int64)
        if any(p[0].key is not None for p in parts):
            key = gather([p[0].keys() for p in parts], order)
        a = Arrivals(gather([t], order), gather([p[0].user for p in parts], order, np.int64),
                     gather([p[0].tier for p in parts], order, np.int64), att, key)
        return a, gather([p[1] for p in parts], order), gather([p[2] for p in parts], order)

    def _take_first(self, parts, limit: int) -> tuple[Arrivals, np.ndarray, np.ndarray, float]:
        """The first `limit` of the parts' merged order (a prefix of each part), the rest put
        back at the front of the pending batches (all before `until`: no ties with the rest
        of those, which are at or after it), and the time of the first one left."""
        pre = [(p[0].take(slice(0, limit)), p[1][:limit], p[2][:limit]) for p in parts]
        t = np.concatenate([p[0].t for p in pre])
        order = np.argsort(t, kind="stable")[:limit]
        del t
        src = np.repeat(np.arange(len(pre)), [len(p[0]) for p in pre])[order]
        took = np.bincount(src, minlength=len(pre))
        del src
        a, e, z = self._merged(pre, order)
        left = [(p[0].take(slice(c, None)), p[1][c:], p[2][c:])
                for p, c in zip(parts, took.tolist(), strict=True) if c < len(p[0])]
        self._pending = left + self._pending
        return a, e, z, min(float(p[0].t[0]) for p in left)

    def add(self, a: Arrivals) -> None:
        """Queue requests created during the run (retries, triggered requests) for later
        windows; `a` is time-sorted."""
        if len(a) == 0:
            return
        late = a.t < self.defer_to
        if late.any():
            self.deferred += int(late.sum())
            a = a.with_(t=np.maximum(a.t, self.defer_to))
        n = len(a)
        e, z = service_noise(self.prng, n)
        if a.key is not None:  # a replayed request's retry: its own noise (sim.rng)
            e, z = keyed_noise(self.sc.seed, a, e, z)
        self._pending.append((a.compact(), e, z))

    def overlap(self, on: bool) -> None:
        """The run enters (True) or leaves (False) its compiled fleet loop, which lets go of
        the GIL: the time the thread making chunks ahead uses (ChunkFeed)."""
        if self._feed is not None:
            self._feed.overlap(on)

    def close(self) -> None:
        """Stop the thread making chunks ahead, if one runs."""
        if self._feed is not None:
            self._feed.close()
