"""Tier queues, the scheduler and batching GPU workers, live on asyncio.

This is the fleet loop of sim/fleet/kernel.py with its events on real timers: the same
fleet-side admission (queue limit, shed_decision, concurrency), the same dispatch rule (an idle
worker takes up to max_batch requests, waiting at most max_wait_s for the oldest to fill the
batch), the same disciplines (strict_priority, fifo, edf, drr, lifo tiers), patience and
CoDel drops, and the same batch time (cost model x the first request's service noise).
Times are simulated seconds; a batch of d simulated seconds sleeps d / time_scale.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sim.fleet import kernel as K
from sim.fleet.fleet import DISCIPLINES, DISTRIBUTIONS, PoolSetup
from sim.fleet.kernel import shed_decision
from sim.live.metrics import STATUS
from sim.scenario import Scenario

INF = math.inf


@dataclass(slots=True, eq=False)
class Req:
    """One request while the gateway holds it (dropped after its response)."""

    id: int
    attempt: int
    user: int
    tier: int
    tier_name: str
    scheduled_t: float | None
    arrival: float
    steps: float = 0.0
    nominal: float = 0.0
    noise: float = 1.0  # exponential(1) draw: service noise of `exponential` pools
    z: float = 0.0  # standard normal draw: lognormal noise of `profile` pools
    fut: asyncio.Future | None = None
    start: float = math.nan
    done: float = math.nan
    batch: int = 0
    pool_name: str | None = None
    status: int = 0
    reason: str | None = None


class Worker:
    __slots__ = ("pool", "batch", "handle", "gen", "start")

    def __init__(self, pool: int):
        self.pool = pool
        self.batch: list[Req] = []
        self.handle: asyncio.TimerHandle | asyncio.Task | None = None
        self.gen = 0  # bumped when a batch is aborted: its completion is then ignored
        self.start = 0.0


class LiveFleet:
    """The fleet of one gateway: call `arrive` per admitted request; it finishes each one
    (served, timeout, drain_timeout or error) through `on_final`, then resolves its future."""

    def __init__(self, sc: Scenario, pools: list[PoolSetup], clock: Callable[[], float],
                 time_scale: float, on_final: Callable[[Req], None], rng: np.random.Generator,
                 max_queue: float = INF, runner=None):
        tiers = sc.tiers
        nk = len(tiers)
        self.clock, self.X, self.on_final, self.rng = clock, time_scale, on_final, rng
        self.t0 = 0.0  # monotonic time of sim t = 0 (set by start)
        self.max_queue = max_queue
        self.runner = runner  # None: sleep the cost model; else runs batches for real
        self.queues: list[deque[Req]] = [deque() for _ in range(nk)]
        self.total = 0  # queued, all tiers
        self.n_sys = [0] * nk  # queued or in service
        self.in_system = 0
        self.user_inflight: dict[int, int] = {}
        # kernel gates, set by fleet-side policies (inf: off)
        self.q_limit = [t.queue_limit if t.queue_limit is not None else INF for t in tiers]
        self.tier_limit = [INF] * nk
        self.user_limit = [INF] * nk
        self.shed_util = [INF] * nk
        self.shed_depth = [INF] * nk
        self.codel = [[INF, INF, 0.0] for _ in range(nk)]  # target, interval, last empty
        self.patience = [t.patience_s or INF for t in tiers]
        self.lifo = [t.lifo for t in tiers]
        self.deadline = [t.slo_s for t in tiers]
        self.prio_order = [int(k) for k in np.argsort([t.priority for t in tiers], kind="stable")]
        self.disc = DISCIPLINES[sc.scheduler.discipline]
        self.drr_quantum = [t.weight * sc.scheduler.quantum_s for t in tiers]
        self.drr_deficit = [0.0] * nk
        self.drr_ptr = [0, 0]
        c0 = pools[0].cost  # DRR charges a request's GPU-seconds at batch 1 on pool 0
        self.drr_cost = (float(c0.fixed[1]), float(c0.step[1]))
        self.pools = pools
        self.dist = [DISTRIBUTIONS[p.distribution] for p in pools]
        self.workers = [Worker(j) for j, p in enumerate(pools) for _ in range(p.gpus)]
        self.idle = [[w for w, x in enumerate(self.workers) if x.pool == j] for j in range(len(pools))]
        self.n_active = len(self.workers)
        self.n_busy = 0
        self.batches = [0] * len(pools)
        self.batched = [0] * len(pools)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = INF
        self.empty = asyncio.Event()  # set when nothing is queued or in service (drain)
        shed_decision(0.0, 0.0, INF, INF)  # compile (or load) before the first request

    # -- what policies see --

    def utilization(self) -> float:
        return self.n_busy / self.n_active if self.n_active else 1.0

    def view(self) -> dict:
        return {"now": self.clock(), "busy": self.n_busy, "active": self.n_active,
                "utilization": self.utilization(), "queue_depth": self.total,
                "tier_queue": np.array([len(q) for q in self.queues]),
                "in_system": np.array(self.n_sys)}

    # -- events --

    def start(self, t0: float) -> None:
        """Sim t = 0 is monotonic time t0; cycling pools start their epochs now."""
        self.t0 = t0
        self._run(self.clock())

    def arrive(self, req: Req) -> str | None:
        """Fleet-side admission of an admitted request at req.arrival: None (queued) or the
        rejection reason, decided as the kernel decides an arrival."""
        now = req.arrival
        self._abandon(now)
        k, u = req.tier, req.user
        if len(self.queues[k]) >= self.q_limit[k] or self.total >= self.max_queue:
            return "queue_full"
        if shed_decision(float(self.utilization()), float(self.total),
                         float(self.shed_util[k]), float(self.shed_depth[k])):
            return "shed"
        if self.n_sys[k] >= self.tier_limit[k] or self.user_inflight.get(u, 0) >= self.user_limit[k]:
            return "rate_limited"  # concurrency: the kernel's R_CONCURRENCY
        if not self.queues[k]:
            self.codel[k][2] = now  # CoDel: the last instant the tier's queue was empty
        self.queues[k].append(req)
        self.total += 1
        self.n_sys[k] += 1
        self.in_system += 1
        self.user_inflight[u] = self.user_inflight.get(u, 0) + 1
        self._run(now)
        return None

    def _wake(self) -> None:
        self._timer, self._timer_at = None, INF
        self._run(self.clock())

    def _run(self, now: float) -> None:
        self._abandon(now)
        timer = self._dispatch(now)
        self._arm(now, timer)

    def _leave(self, req: Req) -> None:
        """Bookkeeping of a request leaving the system (any outcome)."""
        self.n_sys[req.tier] -= 1
        self.in_system -= 1
        n = self.user_inflight.get(req.user, 0) - 1
        if n > 0:
            self.user_inflight[req.user] = n
        else:
            self.user_inflight.pop(req.user, None)  # keep the dict as small as the system

    def finish(self, req: Req, reason: str | None, now: float) -> None:
        req.reason, req.status, req.done = reason, STATUS[reason], now
        self.on_final(req)
        if req.fut is not None and not req.fut.done():
            req.fut.set_result(req)
        if self.in_system == 0:
            self.empty.set()

    def _abandon(self, now: float) -> None:
        """Waiting requests whose patience ran out leave (the oldest is at the front)."""
        for k, q in enumerate(self.queues):
            p = self.patience[k]
            while q and q[0].arrival + p <= now:
                req = q.popleft()
                self.total -= 1
                self._leave(req)
                self.finish(req, "timeout", now)

    # -- dispatch: the kernel's rule --

    def _pick(self) -> int:
        queues = self.queues
        if self.disc == K.STRICT:
            for k in self.prio_order:
                if queues[k]:
                    return k
            return -1
        if self.disc in (K.FIFO, K.EDF):
            best, kk = INF, -1
            for k, q in enumerate(queues):
                if q:
                    v = q[0].arrival + (self.deadline[k] if self.disc == K.EDF else 0.0)
                    if v < best:
                        best, kk = v, k
            return kk
        # DRR: a tier gets its quantum once per visit and serves while its deficit covers
        # the next request's cost (GPU-seconds at batch 1)
        nk, ptr, deficit = len(queues), self.drr_ptr, self.drr_deficit
        while True:
            k = ptr[0]
            q = queues[k]
            if not q:
                deficit[k] = 0.0
                ptr[0], ptr[1] = (k + 1) % nk, 0
                continue
            if ptr[1] == 0:
                deficit[k] += self.drr_quantum[k]
                ptr[1] = 1
            r = q[-1] if self.lifo[k] else q[0]
            c = self.drr_cost[0] + r.steps * self.drr_cost[1]
            if deficit[k] >= c:
                deficit[k] -= c
                return k
            ptr[0], ptr[1] = (k + 1) % nk, 0

    def _dispatch(self, now: float) -> float:
        """Idle workers take batches; returns when the batch-wait timer must fire."""
        timer = INF
        for p, pool in enumerate(self.pools):
            idle = self.idle[p]
            cycle = pool.cycle
            while idle:
                if not cycle:
                    if self.total == 0:
                        break
                    oldest = min(q[0].arrival for q in self.queues if q)
                    if self.total < pool.max_batch and now < oldest + pool.max_wait_s:
                        timer = min(timer, oldest + pool.max_wait_s)
                        break
                w = idle.pop()
                b = min(self.total, pool.max_batch)
                batch: list[Req] = []
                maxsteps, noise = 0.0, 1.0
                while len(batch) < b and self.total > 0:
                    k = self._pick()
                    q = self.queues[k]
                    req = q.pop() if self.lifo[k] else q.popleft()
                    self.total -= 1
                    cd = self.codel[k]
                    if now - req.arrival > cd[0] and now - cd[2] > cd[1]:
                        # CoDel: the queue has not been empty for an interval and this
                        # request waited over the target: dropped instead of served late
                        self._leave(req)
                        self.finish(req, "timeout", now)
                        continue
                    if not batch:  # the batch's noise comes from its first request
                        if self.dist[p] == 1:
                            noise = req.noise
                        elif self.dist[p] == 2:
                            sg = pool.cost.sigma
                            noise = math.exp(sg * req.z - sg * sg / 2)
                    maxsteps = max(maxsteps, req.steps)
                    req.start = now
                    batch.append(req)
                if not batch and b > 0 and not cycle:  # CoDel dropped all that was queued
                    idle.append(w)
                    break
                if batch:
                    dur = pool.cost.batch_time(len(batch), maxsteps) * noise
                    self.batches[p] += 1
                    self.batched[p] += len(batch)
                else:  # an empty epoch of a cycling worker
                    dur = pool.cost.batch_time(1) * (self.rng.exponential() if self.dist[p] == 1 else 1.0)
                self._launch(w, batch, now, dur, int(round(maxsteps)))
        return timer

    def _launch(self, w: int, batch: list[Req], now: float, dur: float, steps: int) -> None:
        wk = self.workers[w]
        wk.batch, wk.start = batch, now
        name = self.pools[wk.pool].name
        for r in batch:
            r.batch, r.pool_name = len(batch), name
        self.n_busy += 1
        if self.runner is not None and batch:
            wk.handle = asyncio.get_running_loop().create_task(self._real(w, wk.gen, len(batch), steps))
        else:
            delay = self.t0 + (now + dur) / self.X - time.monotonic()
            wk.handle = asyncio.get_running_loop().call_later(max(0.0, delay), self._complete, w, wk.gen, None)

    async def _real(self, w: int, gen: int, b: int, steps: int) -> None:
        error = None
        try:
            await asyncio.to_thread(self.runner.run, self.workers[w].pool, b, steps)
        except Exception as e:  # a failed batch fails its requests, with a recorded reason
            error = e
        self._complete(w, gen, error)

    def _complete(self, w: int, gen: int, error: BaseException | None) -> None:
        wk = self.workers[w]
        if wk.gen != gen:
            return  # aborted by a drain timeout
        now = self.clock()
        batch, wk.batch, wk.handle = wk.batch, [], None
        self.n_busy -= 1
        self.idle[wk.pool].append(w)
        for req in batch:
            self._leave(req)
            self.finish(req, None if error is None else "error", now)
        self._run(now)

    def _arm(self, now: float, timer: float) -> None:
        """One timer for the next batch-wait expiry or patience expiry."""
        for k, q in enumerate(self.queues):
            if q and self.patience[k] < INF:
                timer = min(timer, q[0].arrival + self.patience[k])
        if timer == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = timer
        if timer < INF:
            delay = self.t0 + timer / self.X - time.monotonic()
            self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._wake)

    # -- drain --

    async def wait_empty(self, timeout: float) -> bool:
        """Wait until no request is queued or in service; False on timeout."""
        if self.in_system == 0:
            return True
        self.empty.clear()
        try:
            await asyncio.wait_for(self.empty.wait(), timeout)
        except TimeoutError:
            return self.in_system == 0
        return True

    def abort(self, reason: str = "drain_timeout") -> int:
        """Finish everything still queued or in service with `reason`; returns how many."""
        now = self.clock()
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, INF
        n = 0
        for q in self.queues:
            while q:
                req = q.popleft()
                self.total -= 1
                self._leave(req)
                self.finish(req, reason, now)
                n += 1
        for w, wk in enumerate(self.workers):
            if wk.handle is None:
                continue
            wk.gen += 1
            if isinstance(wk.handle, asyncio.TimerHandle):
                wk.handle.cancel()  # a real batch's thread cannot be stopped: its result is ignored
            batch, wk.batch, wk.handle = wk.batch, [], None
            self.n_busy -= 1
            self.idle[wk.pool].append(w)
            for req in batch:
                self._leave(req)
                self.finish(req, reason, now)
                n += 1
        return n
