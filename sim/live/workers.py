"""The gateway's fleet: the simulator's own fleet loop (sim/fleet) driven on the wall clock.

SimPy's lesson (one model, two clocks): the simulator advances the fleet chunk by chunk;
here each arrival calls `advance(until=now)`, one timer is armed for the next instant the
fleet or a policy process changes by itself (a batch end, a patience expiry, the batch-wait
timer; an autoscaler, a failure, a schedule on a SimPy environment stepped at those same
instants), and request futures are resolved from the fleet's outbox (started, completed,
dropped, with the fleet's own times). Nothing here decides a queue, a batch or a worker.
With a runner (`--kernel torch`) a batch runs on the real denoiser and its end is reported
back to the fleet (`Fleet.complete`) instead of drawn from the cost model. With GPU worker
processes (`--gpu-procs K`, sim/live/gpu_worker.py) a batch runs in one of them (the real
denoiser, or a sleep until the cost model's drawn end) and its end is reported the same way;
a process that dies loses its batch, which is re-queued or failed as the scenario's failures
policy says (`lost_batch`, sim/policies/dynamics.py).
Times are simulated seconds: wall = t0 + t / time_scale.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from sim.classes import ClassMix, build_classes, routing
from sim.errors import InputError
from sim.fleet import kernel as K
from sim.fleet.fleet import Fleet, PoolSetup
from sim.fleet.gates import Gates
from sim.live.gpu_worker import WorkerLost
from sim.outcomes import KERNEL_REASONS, Reason
from sim.policies.dynamics import lost_batch
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
    steps: float = math.inf  # step cap sent to the fleet (inf: the pool's own steps)
    nominal: float = 0.0
    noise: float = 1.0  # exponential(1) draw: service noise of `exponential` pools
    z: float = 0.0  # standard normal draw: lognormal noise of `profile` pools
    fut: asyncio.Future | None = None
    start: float = math.nan
    done: float = math.nan
    batch: int = 0
    pool_name: str | None = None
    served_steps: float = math.nan  # steps its batch ran
    status: int = 0
    reason: str | None = None
    # forwarded by a replica (sim/live/replica.py): its name, its request number, and the
    # hop (simulated s from the replica's arrival to the fleet's); times are logged from
    # the replica's arrival
    replica: str | None = None
    seq: int = -1
    hop: float = 0.0
    cls: int = -1  # its request class (drawn once: a re-queued request keeps it)
    requeued: int = 0  # times its batch was lost with a GPU worker process and re-queued
    fault: str | None = None  # gpu_worker_lost: its (last) batch died with its process


def run_interval(sc: Scenario) -> float:
    """The fleet's series interval, as the simulator's run sets it (AIMD reads it)."""
    return sc.outputs.interval_s or max(sc.horizon / 1000.0, 1e-3)


class LiveFleet:
    """The fleet of one gateway, and the host its policies attach to (as to a Run): `gates`,
    `sync(now)`, `env`, `sc`, `pools`. Call `arrive` per admitted request; each one is
    finished (served, timeout, error, drain_timeout) through `on_final`, then its future is
    resolved. `arm(t)` sets the one timer (simulated time, inf: none) whose expiry calls
    `wake()`; `clock()` gives simulated now."""

    def __init__(self, sc: Scenario, pools: list[PoolSetup], clock: Callable[[], float],
                 on_final: Callable[[Req], None], users: int, arm: Callable[[float], None],
                 max_queue: float = INF, runner=None, procs=None,
                 wall: Callable[[float], float] | None = None):
        if sc.fleet.regions is not None:
            raise InputError(sc.source, "fleet.regions", "the live gateway serves one region; "
                             "simulate fleet regions with `floodgate run`")
        self.sc, self.pools, self.clock, self.on_final = sc, pools, clock, on_final
        self.runner = runner  # None: batch times from the cost model; else real batches
        # GPU worker processes (sim/live/gpu_worker.GpuProcs) run the batches: the real
        # denoiser, or the cost model's sleep until `wall(drawn end)` (unix time)
        self.procs, self.wall = procs, wall
        self.lost_batch = [lost_batch(sc, j) for j in range(len(pools))]
        self.requeued = 0  # requests re-queued after their process died
        self.arm = arm
        self.interval = run_interval(sc)
        # series sized past the horizon: a server may run longer than the scenario
        # request classes as the simulator's run resolves and draws them (sim.classes)
        self.classes = build_classes(sc, pools)
        self.mix = ClassMix.of(sc) if self.classes else None
        router, order = routing(sc, pools, self.classes)
        self.fleet = Fleet(pools, sc.tiers, sc.scheduler, 2 * sc.horizon, self.interval,
                           sc.outputs.warmup_s, sc.seed, outbox=True,
                           external=runner is not None or procs is not None,
                           max_queue=max_queue if math.isfinite(max_queue) else 2.0**62,
                           classes=self.classes, router=router, order=order)
        self.gates = Gates(self.fleet, pools, users)
        self.env = simpy.Environment()
        self.spot: list = []  # spot preemption processes (the gateway attaches them)
        self.reqs: dict[int, Req] = {}  # fleet request id -> request queued or in service
        self.next_id = 0
        self.in_system = 0
        self.batches = [0] * len(pools)
        self.batched = [0] * len(pools)
        self._open: dict[int, list[Req]] = {}  # worker -> requests of the batch starting
        self._running: dict[int, list[Req]] = {}  # worker -> requests of its batch
        self._failed: set[int] = set()  # workers whose real batch raised
        self._lost: set[int] = set()  # workers whose batch died with its process
        self._armed = -1.0
        self.closed = False
        self.tasks: set[asyncio.Task] = set()
        self.empty = asyncio.Event()  # set when nothing is queued or in service (drain)

    # -- the host interface of the policies --

    @property
    def gpu_log(self) -> list[tuple[float, int, int]]:
        return self.gates.gpu_log

    def sync(self, now: float) -> None:
        """Bring the fleet up to `now` and finish what it finished."""
        if self.closed or now < self.fleet.S.clock[0]:
            return
        e0, e1 = np.zeros(0), np.zeros(0, np.int64)
        self.fleet.advance(e0, e1, e1, e1, np.zeros(0, np.float32), e0, e0, now)
        self._drain()

    def catch_up(self, now: float) -> None:
        """Run the policy processes (schedules, autoscaler, failures...) due by `now`, each at
        its own instant (it syncs the fleet to it), then the fleet to now."""
        while self.env.peek() <= now:
            self.env.step()
        self.sync(now)

    def view(self) -> dict:
        return self.fleet.view()

    # -- events --

    def start(self) -> None:
        """Sim t = 0: processes start, cycling pools start their epochs."""
        self.catch_up(0.0)
        self._rearm()

    def arrive(self, req: Req) -> str | None:
        """Fleet-side admission of an admitted request at req.arrival (>= the fleet's clock):
        None (queued) or the fleet's rejection reason."""
        now = req.arrival
        self.catch_up(now)
        reason = self._enter(req, now)
        if reason is not None:
            return reason
        self.in_system += 1
        self.empty.clear()
        self._drain()
        self._rearm()
        return None

    def _enter(self, req: Req, now: float) -> str | None:
        """The request joins its tier queue at `now` (the fleet's clock): None, or the
        fleet's rejection reason."""
        rid = self.next_id
        self.next_id += 1
        self.reqs[rid] = req
        t, tier, noise = np.array([now]), np.array([req.tier], np.int64), np.array([req.noise])
        cls = None
        if self.mix is not None:
            if req.cls < 0:
                req.cls = int(self.mix.draw(t, tier, noise)[0])
            cls = np.array([req.cls], np.int16)
            req.nominal = self.classes.steps[req.cls]  # degraded: fewer steps than it asks for
        fate = self.fleet.advance(t, np.array([rid], np.int64), tier,
                                  np.array([req.user], np.int64),
                                  np.array([req.steps], np.float32), noise,
                                  np.array([req.z]), now, cls=cls)
        if fate[0] > 0:
            del self.reqs[rid]
            return KERNEL_REASONS[fate[0] - 1].label
        return None

    def wake(self) -> None:
        """The timer fired: everything due by now happens, at its own instant."""
        self._armed = -1.0
        if self.closed:
            return
        self.catch_up(self.clock())
        self._rearm()

    def _rearm(self) -> None:
        t = min(self.fleet.next_event(), self.env.peek())
        if t != self._armed:
            self._armed = t
            self.arm(t)

    def _drain(self) -> None:
        """Act on the fleet's outbox: starts, batch launches, completions, drops; then
        re-queue the requests of a batch lost with its process, and act on what follows."""
        S = self.fleet.S
        while True:
            again: list[Req] = []
            kinds, ids, ts, aux = self.fleet.outbox()
            for kind, i, t, a in zip(kinds.tolist(), ids.tolist(), ts.tolist(), aux.tolist(),
                                     strict=True):
                if kind == K.STARTED:
                    req = self.reqs[i]
                    req.start = t
                    self._open.setdefault(a, []).append(req)
                elif kind == K.BATCH:
                    w, b = i, a
                    batch = self._open.pop(w, [])
                    p = int(S.w_pool[w])
                    steps = float(S.w_steps[w])
                    for r in batch:
                        r.batch, r.pool_name, r.served_steps = b, self.pools[p].name, steps
                    self._running[w] = batch
                    self.batches[p] += 1
                    self.batched[p] += b
                    if self.runner is not None or self.procs is not None:
                        until = float(S.w_until[w])  # the cost model's drawn end
                        task = asyncio.get_running_loop().create_task(
                            self._real(w, p, b, int(round(steps)), until))
                        self.tasks.add(task)
                        task.add_done_callback(self.tasks.discard)
                elif kind == K.COMPLETED:
                    req = self.reqs.pop(i)
                    if a in self._lost:
                        req.fault = "gpu_worker_lost"
                        p = int(S.w_pool[a])
                        if self.lost_batch[p] == "requeue" and req.requeued == 0:
                            again.append(req)
                        else:
                            self.finish(req, Reason.ERROR.label, t)
                    else:
                        self.finish(req, Reason.ERROR.label if a in self._failed else None, t)
                    run = self._running.get(a)
                    if run is not None:
                        run.remove(req)
                        if not run:
                            del self._running[a]
                            self._failed.discard(a)
                            self._lost.discard(a)
                else:  # DROPPED: patience ran out, or CoDel
                    self.finish(self.reqs.pop(i), Reason.TIMEOUT.label, t)
            if not again:
                return
            now = float(S.clock[0])
            for req in again:  # at the back of its tier queue, as a new arrival would be
                req.requeued += 1
                self.requeued += 1
                req.start = math.nan
                reason = self._enter(req, now)
                if reason is not None:
                    self.finish(req, reason, now)

    async def _real(self, w: int, pool: int, b: int, steps: int, until: float) -> None:
        try:
            if self.procs is not None:
                sleeps = self.procs.torch_args is None and self.wall is not None
                end = self.wall(until) if sleeps else None
                await self.procs.run(w, pool, b, steps, end)
            else:
                await asyncio.to_thread(self.runner.run, pool, b, steps)
        except WorkerLost:  # its process died mid-batch: re-queued or failed, by policy
            self._lost.add(w)
        except Exception:  # a failed batch fails its requests, with a recorded reason
            self._failed.add(w)
        if self.closed:
            return
        now = self.clock()
        while self.env.peek() <= now:
            self.env.step()
        self.fleet.complete(w, max(now, float(self.fleet.S.clock[0])))
        self.sync(now)
        self._rearm()

    def finish(self, req: Req, reason: str | None, now: float) -> None:
        """An admitted request's final outcome: recorded, then its future resolved."""
        req.reason, req.done = reason, now
        self.on_final(req)
        if req.fut is not None and not req.fut.done():
            req.fut.set_result(req)
        self.in_system -= 1
        if self.in_system == 0:
            self.empty.set()

    # -- drain --

    async def wait_empty(self, timeout: float) -> bool:
        """Wait until no request is queued or in service; False on timeout."""
        if self.in_system == 0:
            return True
        try:
            await asyncio.wait_for(self.empty.wait(), timeout)
        except TimeoutError:
            return self.in_system == 0
        return True

    def abort(self, reason: str = "drain_timeout") -> int:
        """Finish everything still queued or in service with `reason`; returns how many.
        The fleet stops here (a real batch's thread cannot be stopped: its end is ignored)."""
        now = self.clock()
        self.closed = True
        self.arm(INF)
        n = 0
        for req in list(self.reqs.values()):
            self.finish(req, reason, now)
            n += 1
        self.reqs.clear()
        return n
