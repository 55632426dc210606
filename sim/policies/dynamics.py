"""Fleet dynamics: autoscaling within a GPU budget, failures and repair, thermal throttling.

These change the fleet over time: SimPy processes started by `attach` on the host's
environment (the simulator's, or the gateway's stepped on the wall clock); each first syncs
the host to its instant, then acts through the gates (sim/fleet/gates.py).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from sim.policies.base import Params, Policy
from sim.rng import stream
from sim.units import Duration, Hours, PosDuration


def _pool(run, name: str | None) -> int:
    names = [p.name for p in run.pools]
    return names.index(name) if name in names else 0


class _Meter:
    """Utilisation of the live fleet since the last reading (from the fleet's series)."""

    def __init__(self, gates):
        self.gates = gates
        self.busy, self.active = gates.busy_area()

    def read(self) -> float:
        b, a = self.gates.busy_area()
        db, da = b - self.busy, a - self.active
        self.busy, self.active = b, a
        return db / da if da > 0 else 0.0


class AutoscaleParams(Params):
    pool: str | None = None
    metric: Literal["utilization", "queue"] = "utilization"
    target: float = Field(0.7, gt=0, le=1e6, description="utilization: target busy share; queue: "
                          "queued requests one more GPU should absorb")
    period_s: Duration = Field(60.0, ge=1.0, description="decides this often")
    provisioning_delay_s: Duration = Field(300.0, description="from decision to GPU serving")
    cooldown_s: Duration = Field(600.0, description="no scale-in sooner than this after a change")
    min_gpus: int = Field(1, ge=0, le=10**6)
    max_gpus: int | None = Field(None, ge=1, le=10**6, description="budget ceiling (whole service)")
    budget_per_hour: float | None = Field(None, gt=0, le=1e12, description="or a ceiling in $/h "
                                          "(reserved GPUs, paid live or not, included)")


class Autoscale(Policy):
    """Target-tracking autoscaler, every period_s: desired = ceil(live x utilisation over the
    period / target) (metric utilization) or ceil(busy GPUs + queued requests / target)
    (metric queue). Scale-out takes effect after the provisioning delay; scale-in waits for
    the cool-down since the last change and for no GPU to be pending; never below min_gpus nor
    above the budget (max_gpus, budget_per_hour, the pool's max_gpus). GPU counts in the
    parameters and the report are whole-service figures (scaled by cell_fraction)."""

    name = "autoscale"
    Params = AutoscaleParams
    stage = "dynamics"

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.added = self.removed = 0
        self.max_live = 0
        self.pending = 0

    def attach(self, run, env, active) -> None:
        env.process(self._loop(run, env, active))

    def ceiling(self, run, j: int) -> int:
        p = self.params
        f = run.sc.cell_fraction
        cap = run.gates.slots(j)
        if p.max_gpus is not None:
            cap = min(cap, max(1, round(p.max_gpus * f)))
        led = run.pools[j].ledger
        if p.budget_per_hour is not None and led is not None and led.hourly(cap) > 0:
            # buying order reserved -> on demand -> spot (the ledger's slot layout): the most
            # GPUs whose hourly bill (every reserved GPU included) fits the budget
            cap = min(cap, max(1, led.most_within(p.budget_per_hour * f)))
        return cap

    def _loop(self, run, env, active):
        p = self.params
        j = _pool(run, p.pool)
        g = run.gates
        meter = _Meter(g)
        last_change = -math.inf
        floor = max(0, round(p.min_gpus * run.sc.cell_fraction))
        while True:
            yield env.timeout(p.period_s)
            run.sync(env.now)
            util = meter.read()
            if not active.enabled:
                continue
            live = g.gpus(j)
            self.max_live = max(self.max_live, live)
            if p.metric == "utilization":
                desired = math.ceil(live * util / p.target) if live else 1
            else:
                desired = math.ceil(g.busy(j) + g.queued() / p.target)
            desired = min(max(desired, floor), self.ceiling(run, j))
            if desired > live + self.pending:
                add = desired - live - self.pending
                self.pending += add
                env.process(self._provision(run, env, j, add))
                last_change = env.now
            elif desired < live and env.now - last_change >= p.cooldown_s and self.pending == 0:
                g.set_gpus(j, desired)
                self.removed += live - desired
                last_change = env.now

    def _provision(self, run, env, j: int, add: int):
        yield env.timeout(self.params.provisioning_delay_s)
        run.sync(env.now)
        live = run.gates.gpus(j)
        n = run.gates.set_gpus(j, min(live + add, self.ceiling(run, j)))
        self.added += n - live
        self.pending -= add
        self.max_live = max(self.max_live, n)

    def report(self) -> dict:
        return {"gpus_added": self.n(self.added), "gpus_removed": self.n(self.removed),
                "max_live_gpus": self.n(self.max_live)}


def back_after(run, env, j: int, delay_s: float, before=None):
    """A GPU of pool j that left serves again after `delay_s` (a repair, a spot replacement);
    `before(now)` runs just before it does."""
    yield env.timeout(delay_s)
    run.sync(env.now)
    if before is not None:
        before(env.now)
    run.gates.set_gpus(j, run.gates.gpus(j) + 1)


class FailureParams(Params):
    pool: str | None = None
    mtbf_h: Hours = Field(ge=1e-3, le=1e9, description="mean time between failures of one GPU, "
                          "hours (or a duration: 30d)")
    mttr_h: Hours = Field(ge=1e-4, le=1e9, description="mean time to repair, hours (or 15m)")
    seed: int = Field(0, ge=0, le=2**63 - 1)
    lost_batch: Literal["requeue", "fail"] = Field(
        "requeue", description="live fleet only: the batch of a GPU worker process that dies "
        "mid-batch is re-queued (each request once, at the back of its tier queue; lost "
        "again, it fails) or failed (500 error), its log lines marked gpu_worker_lost. The "
        "simulator's failed GPU finishes its batch in hand")


def lost_batch(sc, pool: int) -> str:
    """What the live fleet does with pool `pool`'s batch when its GPU worker process dies:
    the `lost_batch` of the scenario's failures policy for that pool (its `pool`, or the
    first pool when it names none, as the policy itself resolves it); requeue without one."""
    names = [p.name for p in sc.fleet.pools]
    for spec in sc.policies:
        if spec.policy == Failures.name:
            prm = FailureParams.model_validate(spec.params())
            if (names.index(prm.pool) if prm.pool in names else 0) == pool:
                return prm.lost_batch
    return "requeue"


class Failures(Policy):
    """GPUs fail (exponential, rate live/MTBF) and come back after an exponential repair.
    A failed GPU is retired the way set_gpus retires one: an idle GPU leaves at once, a busy one
    finishes the batch in hand (counted as served; the failure is taken to be detected when
    the GPU next asks for work) and then leaves. Repair brings one GPU back. Counts in the
    report are whole-service figures (scaled by cell_fraction)."""

    name = "failures"
    Params = FailureParams
    stage = "dynamics"

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.failed = self.repaired = 0
        self.down = 0

    def attach(self, run, env, active) -> None:
        self.rng = stream("failures", run.sc.seed, self.params.seed)
        self.run = run
        self.down_s = 0.0
        self._since = 0.0
        env.process(self._loop(run, env, active))

    def _loop(self, run, env, active):
        j = _pool(run, self.params.pool)
        g = run.gates
        while True:
            live = max(g.gpus(j), 1)
            yield env.timeout(self.rng.exponential(self.params.mtbf_h * 3600 / live))
            if not active.enabled or g.gpus(j) == 0:
                continue
            run.sync(env.now)
            g.set_gpus(j, g.gpus(j) - 1)
            self._tally(env.now)
            self.failed += 1
            self.down += 1
            env.process(self._repair(run, env, j))

    def _repair(self, run, env, j: int):
        yield from back_after(run, env, j, self.rng.exponential(self.params.mttr_h * 3600))
        self._tally(env.now)
        self.repaired += 1
        self.down -= 1

    def _tally(self, now: float) -> None:
        self.down_s += self.down * (now - self._since)
        self._since = now

    def report(self) -> dict:
        if hasattr(self, "run"):
            self._tally(self.run.sc.horizon)
        return {"failures": self.n(self.failed), "repairs": self.n(self.repaired),
                "down_at_end": self.n(self.down),
                "gpu_hours_down": round(getattr(self, "down_s", 0.0) * self.scale / 3600, 3)}


class SpotPreemption:
    """Spot GPUs of one pool preempted at `preemptions_per_gpu_day` each (a Poisson process
    while spot GPUs are live): a preempted GPU keeps serving for the notice period, then leaves
    the way a failed one does (the batch in hand finishes), and a replacement serves
    `restore_s` later, as a repair does in `Failures` (both through `back_after`). Not a
    scenario policy: the engine starts one per pool whose purchase block has spot GPUs
    (sim/fleet/purchase.py).

    Exact for a count that changes under it (autoscaling, earlier preemptions): candidate
    instants at the rate of all the pool's spot slots, each kept with probability (spot GPUs
    live and not yet noticed) / slots (thinning)."""

    def __init__(self, run, j: int, start: float):
        self.run, self.j, self.t0 = run, j, start
        self.led = run.pools[j].ledger
        b = run.sc.fleet.pools[j].purchase
        self.rate = b.preemptions_per_gpu_day / 86400.0
        self.notice_s, self.restore_s = b.notice_s, b.restore_s
        self.rng = stream("spot", run.sc.seed, b.seed, j)
        self.noticed = 0  # preempted, still serving their notice
        self.notices: list[float] = []  # when each notice came
        self.left: list[float] = []  # when each preempted GPU left
        self.restored = 0
        # spot GPU-seconds at risk (live, not yet noticed), tallied at this process's own
        # events: exact while nothing else changes the pool (the rate test's fixed fleet)
        self.exposure_s = 0.0
        self._since = start

    def eligible(self) -> int:
        return max(0, self.led.split(self.run.gates.gpus(self.j))["spot"] - self.noticed)

    def _tally(self, now: float) -> None:
        self.exposure_s += self.eligible() * (now - self._since)
        self._since = now

    def loop(self, env):
        S = self.led.spot
        while True:
            yield env.timeout(self.rng.exponential(1.0 / (S * self.rate)))
            self.run.sync(env.now)
            if self.rng.random() * S >= self.eligible():
                continue
            self._tally(env.now)
            self.noticed += 1
            self.notices.append(env.now)
            env.process(self._leave(env))

    def _leave(self, env):
        yield env.timeout(self.notice_s)
        self.run.sync(env.now)
        self._tally(env.now)
        g = self.run.gates
        self.noticed -= 1
        if self.led.split(g.gpus(self.j))["spot"] > 0:
            g.set_gpus(self.j, g.gpus(self.j) - 1)
            self.left.append(env.now)
            yield from back_after(self.run, env, self.j, self.restore_s, self._tally)
            self.restored += 1

    def report(self, scale: float) -> dict:
        self._tally(max(self._since, self.run.sc.horizon))
        log = [(t, n) for t, pool, n in self.run.gpu_log if pool == self.j]
        c = self.led.cost(log, self.t0, self.run.sc.horizon)["spot"]
        price = self.led.prices.spot_per_hour
        return {"preemptions": int(round(len(self.notices) * scale)),
                "left": int(round(len(self.left) * scale)),
                "restored": int(round(self.restored * scale)),
                "spot_gpu_hours": round(c / price * scale, 3) if price > 0 else None,
                "rate_per_gpu_day": round(self.rate * 86400, 6)}


def attach_spot(run, env) -> list[SpotPreemption]:
    """One preemption process per pool with spot GPUs and a rate above 0, from env.now (the
    run's start; the live fleet's t = 0)."""
    out = []
    for j, p in enumerate(run.pools):
        b = run.sc.fleet.pools[j].purchase
        if p.ledger is not None and p.ledger.spot > 0 and b is not None and b.preemptions_per_gpu_day > 0:
            sp = SpotPreemption(run, j, env.now)
            env.process(sp.loop(env))
            out.append(sp)
    return out


class ThrottleParams(Params):
    pool: str | None = None
    utilization: float = Field(0.9, gt=0, le=1, description="'hot' at or above this busy share")
    after_s: PosDuration = Field(1800.0, description="sustained heat before throttling")
    slowdown: float = Field(1.25, ge=1, le=1e3, description="service time multiplier while throttled")
    cool_below: float = Field(0.7, gt=0, le=1, description="recovers once utilisation falls below")
    check_s: Duration = Field(60.0, ge=1.0)


class Throttling(Policy):
    """Thermal throttling ("GPUs melting"): after `after_s` above the utilisation threshold,
    the pool's GPUs run `slowdown` times slower until utilisation drops below `cool_below`."""

    name = "throttling"
    Params = ThrottleParams
    stage = "dynamics"

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.hot = 0.0
        self.throttled_s = 0.0
        self.episodes = 0

    def attach(self, run, env, active) -> None:
        env.process(self._loop(run, env, active))

    def _loop(self, run, env, active):
        p = self.params
        j = _pool(run, p.pool)
        meter = _Meter(run.gates)
        on = False
        while True:
            yield env.timeout(p.check_s)
            run.sync(env.now)
            util = meter.read()
            if on:
                self.throttled_s += p.check_s
            if util >= p.utilization:
                self.hot += p.check_s
            elif util < p.cool_below:
                self.hot = 0.0
            want = active.enabled and self.hot >= p.after_s
            if want != on:
                run.gates.speed(j, p.slowdown if want else 1.0)
                on = want
                self.episodes += int(want)

    def report(self) -> dict:
        return {"throttled_hours": round(self.throttled_s / 3600, 3), "episodes": self.episodes}


class RegionOutageParams(Params):
    region: str = Field(description="the fleet region whose GPUs are out while this is enabled")


class RegionOutage(Policy):
    """A fleet region's GPUs go away while enabled (give `enabled: false` and a schedule: on
    at t1, off at t2, or on a trigger). Its GPUs retire (batches running finish), the
    requests queued there move by the spill-over rule, arrivals from its users go elsewhere
    (sim/regions.py); when it ends the GPUs come back (as many as the autoscaler or failures
    last set for them). Counts in the report are whole-service figures."""

    name = "region_outage"
    Params = RegionOutageParams
    stage = "dynamics"

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.outages = 0
        self.moved = 0
        self.out_s = 0.0
        self._since: float | None = None
        self.host = None

    def attach(self, run, env, active) -> None:
        if run.fleet.regions is None:
            raise ValueError("region_outage needs fleet.regions")  # scenario checks refuse it first
        self.host = run
        self.r = run.fleet.regions.names.index(self.params.region)
        self.refresh(run, active)

    def refresh(self, run, active) -> None:
        out = bool(active.enabled)
        if out == bool(run.fleet.S.reg_down[self.r]):
            return
        now = run.gates.now()
        if out:
            self.outages += 1
            self._since = now
        elif self._since is not None:
            self.out_s += now - self._since
            self._since = None
        self.moved += run.gates.region_out(self.r, out)

    def report(self) -> dict:
        out_s = self.out_s
        if self._since is not None and self.host is not None:
            out_s += self.host.sc.horizon - self._since
        return {"region": self.params.region, "outages": self.outages,
                "hours_out": round(out_s / 3600, 4), "requests_moved": self.n(self.moved)}
