"""The gates: the one way policies reach the fleet, in the simulator and the gateway alike.

A policy never writes the fleet loop's arrays: it sets a gate (tier or user concurrency
limit, shed thresholds, CoDel, worker speed, GPUs per pool) or reads a figure through this
object. Simulator (sim/engine.py) and live gateway (sim/live/workers.py) each hold one
around their own `Fleet`, so a policy object behaves the same on either clock.
"""

from __future__ import annotations

import math

import numpy as np

from sim.fleet import kernel as K
from sim.fleet.fleet import Fleet, PoolSetup

# The gates' vocabulary, defined once by the fleet loop: the reasons a gate rejects for (read
# back with `Gates.rejected`) and the shed rule the loop applies per arrival, which shadow
# and brownout policies evaluate themselves on `Gates.view()`.
R_CONCURRENCY = K.R_CONCURRENCY
R_SHED = K.R_SHED
R_TIMEOUT = K.R_TIMEOUT
shed_decision = K.shed_decision

NO_LIMIT = 2**62


class Gates:
    """Settings and readings of one fleet. `users` sizes the per-user in-flight counts (the
    demand model's users in the cell, or the gateway's key table)."""

    def __init__(self, fleet: Fleet, pools: list[PoolSetup], users: int):
        self.fleet = fleet
        self.pools = pools
        self.users = int(users)
        # (time, pool, GPUs live from then on): GPU cost per pool and the figures
        self.gpu_log: list[tuple[float, int, int]] = [(0.0, j, p.gpus) for j, p in enumerate(pools)]
        # fleet regions: pools of a region that is out, with the GPUs they come back with
        self.held: dict[int, int] = {}

    # -- settings (at the fleet's current clock) --

    def tier_limit(self, tiers: np.ndarray, limit: int | None) -> None:
        """At most `limit` requests of each of these tiers in the system (None: no cap)."""
        self.fleet.S.tier_limit[tiers] = NO_LIMIT if limit is None else int(limit)

    def user_limit(self, tiers: np.ndarray, limit: int | None) -> None:
        """At most `limit` requests in the system per user of these tiers (None: no cap).
        The first call sizes the per-user counts (call it at attach, before any arrival)."""
        S = self.fleet.S
        if len(S.user_inflight) < self.users:
            self.fleet.S = S._replace(user_inflight=np.zeros(self.users, np.int64))
            S = self.fleet.S
        S.user_limit[tiers] = NO_LIMIT if limit is None else int(limit)

    def shed(self, tier: int, utilization: float, depth: float) -> None:
        """Shed the tier's arrivals at or above this busy share or total queue depth."""
        S = self.fleet.S
        S.shed_util[tier] = utilization
        S.shed_depth[tier] = depth

    def codel(self, tiers: np.ndarray, target_s: float, interval_s: float) -> None:
        """CoDel at dequeue for these tiers (inf, inf: off)."""
        c = self.fleet.S.codel
        c[tiers, 0] = target_s
        c[tiers, 1] = interval_s

    def brownout(self, tier: int, utilization: float, depth: float, steps: float,
                 classes: dict[int, int] | None = None) -> None:
        """Arrivals of the tier get at most `steps` denoising steps, and class a becomes
        class classes[a], while the fleet is at or above this busy share or total queue
        depth (steps inf and no classes: off)."""
        S = self.fleet.S
        on = steps < math.inf or bool(classes)
        S.deg[tier] = (utilization, depth, steps, 1.0 if on else 0.0)
        S.deg_cls[tier] = np.arange(S.deg_cls.shape[1])
        for a, b in (classes or {}).items():
            S.deg_cls[tier, a] = b

    def brownout_counts(self) -> np.ndarray:
        """Per tier: [requests brownout saw, degraded, steps given, quality given] so far
        (quality: with request classes, the class's quality x its share of steps)."""
        return self.fleet.S.deg_stats

    def class_names(self) -> list[str] | None:
        """The request classes in index order (None: the scenario has none)."""
        c = self.fleet.classes
        return None if c is None else list(c.names)

    def nominal_steps(self) -> float:
        """The largest pool's steps: brownout degrades below it."""
        return float(self.fleet.S.cfg[4])

    def speed(self, pool: int, slowdown: float) -> None:
        """Service time multiplier of the pool's GPUs (throttling); applies to new batches."""
        S = self.fleet.S
        S.w_speed[S.w_pool == pool] = slowdown

    def set_gpus(self, pool: int, n: int) -> int:
        """Provision or retire GPUs of a pool now (retiring ones finish their batch). With
        fleet regions, never above the region's capacity; while its region is out, the
        count is what the pool comes back with (it has none live)."""
        rg = self.fleet.regions
        if rg is not None:
            r = int(rg.pool_region[pool])
            cap = rg.max_gpus[r]
            if cap is not None:
                others = sum(self.gpus(j) for j in np.flatnonzero(rg.pool_region == r) if j != pool)
                n = min(n, max(cap - others, 0))
            if pool in self.held:
                self.held[pool] = max(int(n), 0)
                return 0
        n = self.fleet.set_gpus(pool, n)
        self.gpu_log.append((float(self.fleet.S.clock[0]), pool, n))
        return n

    def region_out(self, region: int, out: bool) -> int:
        """A fleet region's GPUs go away (out) or come back: its pools' GPUs are retired
        (batches running finish) and kept for its return; while out, arrivals route around
        it and its queued requests move (Fleet.region_out). Returns the requests moved."""
        rg = self.fleet.regions
        pools = [int(j) for j in np.flatnonzero(rg.pool_region == region)]
        if out == bool(self.fleet.S.reg_down[region]):
            return 0
        if out:
            for j in pools:
                n = self.gpus(j)
                self.set_gpus(j, 0)
                self.held[j] = n
            return self.fleet.region_out(region, True)
        self.fleet.region_out(region, False)
        for j in pools:
            self.set_gpus(j, self.held.pop(j))
        return 0

    # -- readings --

    def now(self) -> float:
        return float(self.fleet.S.clock[0])

    def view(self) -> dict:
        return self.fleet.view()

    def gpus(self, pool: int) -> int:
        """GPUs of the pool serving (idle or busy, not retiring); while its region is out,
        those it comes back with (an autoscaler, failures and repairs change that count)."""
        if pool in self.held:
            return self.held[pool]
        return self.fleet.gpus(pool)

    def slots(self, pool: int) -> int:
        """GPUs the pool can have at most."""
        return int(np.sum(self.fleet.S.w_pool == pool))

    def busy(self, pool: int) -> int:
        S = self.fleet.S
        return int(np.sum((S.w_state == K.BUSY) & (S.w_pool == pool)))

    def queued(self) -> int:
        return int(self.fleet.S.q_size.sum())

    def in_system(self, tiers: np.ndarray) -> int:
        return int(self.fleet.S.n_sys[tiers].sum())

    def images_per_s(self) -> float:
        """The live fleet's images per second at max batch (shed_reserve's predicted wait)."""
        return sum(p.cost.images_per_s(p.max_batch) * self.fleet.gpus(j) for j, p in enumerate(self.pools))

    def rejected(self, reason: int) -> np.ndarray:
        """Per tier: arrivals the fleet rejected (or CoDel dropped) for a kernel reason."""
        return self.fleet.S.kernel_rej[:, reason]

    def dropped(self, tiers: np.ndarray) -> int:
        """Requests of these tiers that left unserved (patience or CoDel) so far."""
        S = self.fleet.S
        return int(S.abandoned[tiers].sum() + S.kernel_rej[tiers, K.R_TIMEOUT].sum())

    def queue_area(self, tier: int) -> tuple[float, int]:
        """Request-seconds the tier has spent queued so far, and its requests started (their
        ratio over a window is the window's mean wait, by Little's law)."""
        S = self.fleet.S
        return float(S.ser_queue[:, tier].sum()), int(S.ser_started[:, tier].sum())

    def tier_counts(self, tier: int) -> tuple[int, int]:
        """Arrivals of the tier that reached the fleet so far, and those it rejected there."""
        S = self.fleet.S
        rej = int(S.kernel_rej[tier].sum())
        return int(S.admitted[tier]) + rej, rej

    def busy_area(self) -> tuple[float, float]:
        """GPU-seconds busy and live so far (from the fleet's series)."""
        S = self.fleet.S
        return float(S.ser_busy.sum()), float(S.ser_active.sum())

    def latency_series(self) -> tuple[np.ndarray, int]:
        """Per-interval latency histograms of completions, and the current interval's row."""
        S = self.fleet.S
        h = S.ser_lat_hist
        return h, min(int(S.clock[0] / self.fleet.interval), h.shape[0] - 1)


def off(on: bool, value: float) -> float:
    """A gate's value while its policy is enabled, inf (open) otherwise."""
    return value if on else math.inf
