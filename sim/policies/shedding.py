"""Dropping load: shedding at arrival with capacity reserved for paid tiers, and CoDel at
dequeue. Both decide inside the fleet loop on its state at that instant, through the gates
(sim/fleet/gates.py) set in `attach` and `refresh`, in the simulator and the gateway alike."""

from __future__ import annotations

import math

from pydantic import Field

from sim.fleet.gates import R_SHED, R_TIMEOUT, off, shed_decision
from sim.policies.base import ADMIT, Decision, Params, Policy, by_tier, unknown_tier
from sim.units import Duration, PosDuration

# ---- shedding ----


class ShedParams(Params):
    utilization: dict[str, float] = Field(
        default_factory=dict, description="tier -> shed it at or above this busy share of the fleet")
    queue_depth: dict[str, float] = Field(
        default_factory=dict, description="tier -> shed it at or above this many queued requests")
    predicted_wait_s: dict[str, Duration] = Field(
        default_factory=dict, description="tier -> shed it when queued work would take this long")


class ShedReserve(Policy):
    """Reserve fleet capacity for paid tiers: less critical tiers are shed (503) at lower
    thresholds, so they go first (Stripe's fleet-usage shedder keeps ~20% for critical
    traffic: non-critical shed at 0.8). Thresholds per tier on utilisation, total queue depth
    or predicted wait (queued requests / the live fleet's images per second at max batch).

    The fleet loop decides per arrival through the shed gate with `shed_decision`; shadow
    evaluates `admit_with(view, ...)`, the same function on the fleet's state."""

    name = "shed_reserve"
    Params = ShedParams
    stage = "gate"
    shadowable = True  # through admit_with on the fleet's state

    @classmethod
    def check_tiers(cls, params, tiers):
        return unknown_tier({"utilization": params.utilization, "queue_depth": params.queue_depth,
                              "predicted_wait_s": params.predicted_wait_s}, tiers)

    def thresholds(self, tier_name: str, images_per_s: float) -> tuple[float, float]:
        p = self.params
        u = p.utilization.get(tier_name, math.inf)
        d = p.queue_depth.get(tier_name, math.inf)
        w = p.predicted_wait_s.get(tier_name)
        if w is not None:
            d = min(d, w * images_per_s)  # queued work / service rate = predicted wait
        return u, d

    def admit_with(self, view: dict, tier: int, images_per_s: float) -> Decision:
        u, d = self.thresholds(self.tiers[tier], images_per_s)
        if shed_decision(view["utilization"], view["queue_depth"], u, d):
            return Decision(False, "shed", 1.0)
        return ADMIT

    def attach(self, run, env, active) -> None:
        self.run, self.active = run, active
        self.refresh(run, active)
        if self.params.predicted_wait_s:
            env.process(self._follow_fleet(run, env, active))

    def refresh(self, run, active) -> None:
        ips = run.gates.images_per_s()
        for k, name in enumerate(self.tiers):
            if not active.tiers[k]:
                continue
            u, d = self.thresholds(name, ips)
            run.gates.shed(k, off(active.enabled, u), off(active.enabled, d))

    def _follow_fleet(self, run, env, active):
        """Predicted wait depends on the live fleet: refresh the depth thresholds."""
        while True:
            yield env.timeout(run.sc.chunk_s)
            self.refresh(run, active)

    def report(self) -> dict:
        p = self.params
        out = {"utilization": p.utilization, "queue_depth": p.queue_depth,
               "predicted_wait_s": p.predicted_wait_s}
        if hasattr(self, "run"):
            out["shed"] = by_tier(self, self.active.tiers, self.run.gates.rejected(R_SHED))
        return out


# ---- CoDel ----


class CodelParams(Params):
    target_s: PosDuration = Field(description="queueing delay allowed while the queue stays busy")
    interval_s: PosDuration = Field(description="the queue counts as standing after this long "
                              "without being empty")


class Codel(Policy):
    """CoDel for request queues (Facebook's server-queue form, "Fail at Scale", 2015): when a
    tier's queue has not been empty for `interval_s`, a request that has waited longer than
    `target_s` is dropped at dequeue (reason timeout) instead of served late; when the queue
    drains regularly, requests wait as long as their patience allows. Runs in the fleet loop
    (per-tier codel gate); combine with lifo tiers for adaptive LIFO."""

    name = "codel"
    Params = CodelParams
    stage = "gate"

    def attach(self, run, env, active) -> None:
        self.run, self.active = run, active
        self.refresh(run, active)

    def refresh(self, run, active) -> None:
        on = active.enabled
        run.gates.codel(active.tiers, off(on, self.params.target_s), off(on, self.params.interval_s))

    def report(self) -> dict:
        out = {"target_s": self.params.target_s, "interval_s": self.params.interval_s}
        if hasattr(self, "run"):
            out["dropped"] = by_tier(self, self.active.tiers, self.run.gates.rejected(R_TIMEOUT))
        return out
