"""Brownout: fewer denoising steps under load instead of longer waits (the degrade stage),
decided per arrival by the fleet loop's brownout gate."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, model_validator

from sim.fleet.gates import off, shed_decision
from sim.policies.base import Params, Policy, unknown_tier

# ---- brownout ----

TierNumber = float | dict[str, float]


class BrownoutParams(Params):
    utilization: TierNumber = Field(0.9, description="degrade at or above this busy share "
                                    "(a number, or tier -> number)")
    queue_depth: TierNumber = Field(math.inf, description="... or this many queued requests")
    steps: int | dict[str, int] | None = Field(
        None, description="denoising steps when degraded (e.g. 4 for a distilled model; without "
        "request classes a cheaper model or lower resolution as the step count of equal GPU cost)")
    classes: dict[str, str] | None = Field(
        None, description="request classes: the class a degraded request gets instead "
        "(e.g. t2i-1536-hd: t2i-1024-standard); its cost and quality follow")

    @model_validator(mode="after")
    def _positive(self):
        if self.steps is None and not self.classes:
            raise ValueError("give steps, classes or both")
        for f in ("utilization", "queue_depth", "steps"):
            v = getattr(self, f)
            for x in v.values() if isinstance(v, dict) else [] if v is None else [v]:
                if not x > 0:
                    raise ValueError(f"{f}: must be greater than 0")
        return self


class Brownout(Policy):
    """Under load, admitted requests of its tiers get fewer denoising steps or a cheaper
    request class (a cheaper, lower-quality image) instead of waiting longer. Thresholds and steps may differ per tier
    (degrade free first and deepest). The fleet loop decides per arrival through the
    brownout gate (the same `shed_decision` on utilisation and queue depth as shedding), in
    the simulator and the gateway alike.
    Reports per tier: the share degraded and a quality proxy, steps served / nominal steps
    (the largest pool's); with request classes, the mean of the served class's quality x
    its steps served / the class's steps."""

    name = "brownout"
    Params = BrownoutParams
    stage = "degrade"

    @classmethod
    def check_tiers(cls, params, tiers):
        return unknown_tier({"utilization": params.utilization, "queue_depth": params.queue_depth,
                              "steps": params.steps or 1}, tiers)

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self._arrays()

    def reconfigure(self, params) -> None:
        super().reconfigure(params)
        self._arrays()

    def _arrays(self) -> None:
        def arr(v, default):
            if isinstance(v, dict):
                return np.array([v.get(t, default) for t in self.tiers], float)
            return np.full(len(self.tiers), float(v))

        p = self.params
        self.thr_util = arr(p.utilization, math.inf)
        self.thr_depth = arr(p.queue_depth, math.inf)
        self.low_steps = arr(p.steps if p.steps is not None else math.inf, math.inf)

    def overloaded(self, view: dict, tier: int = 0) -> bool:
        return shed_decision(view["utilization"], view["queue_depth"], self.thr_util[tier],
                             self.thr_depth[tier])

    def attach(self, run, env, active) -> None:
        self.run, self.active = run, active
        self.refresh(run, active)

    def refresh(self, run, active) -> None:
        on = active.enabled
        names = run.gates.class_names()
        swap = None
        if on and self.params.classes and names is not None:
            swap = {names.index(a): names.index(b) for a, b in self.params.classes.items()}
        for k in np.flatnonzero(active.tiers):
            run.gates.brownout(int(k), self.thr_util[k], self.thr_depth[k],
                               off(on, self.low_steps[k]), swap)

    def report(self) -> dict:
        if not hasattr(self, "run"):
            return {}
        c = self.run.gates.brownout_counts()
        nominal = self.run.gates.nominal_steps()
        ks = [(k, t) for k, t in enumerate(self.tiers) if self.active.tiers[k] and c[k, 0]]
        if self.run.gates.class_names() is not None:
            q = {t: round(float(c[k, 3] / c[k, 0]), 6) for k, t in ks}
        else:
            q = {t: round(float(c[k, 2] / (c[k, 0] * nominal)), 6) for k, t in ks}
        return {"degraded": {t: self.n(c[k, 1]) for k, t in ks},
                "degraded_share": {t: round(float(c[k, 1] / c[k, 0]), 6) for k, t in ks},
                "quality_proxy": q}
