"""The simplest demand: a rate curve given point by point."""

from __future__ import annotations

import numpy as np

from sim.demand.base import Arrivals, PiecewiseLinearRate, assign


class CurveModel:
    """Poisson arrivals on a piecewise-linear (or step) rate curve."""

    def __init__(self, spec, tiers, scale: float = 1.0):
        ts = [p[0] for p in spec.points]
        rs = [p[1] * scale for p in spec.points]
        if spec.interpolation == "step":  # a step is two knots an instant apart
            ts2, rs2 = [], []
            for j, (t, r) in enumerate(zip(ts, rs, strict=True)):
                if j:
                    ts2.append(np.nextafter(t, -np.inf))
                    rs2.append(rs[j - 1])
                ts2.append(t)
                rs2.append(r)
            ts, rs = ts2, rs2
        self.rate_fn = PiecewiseLinearRate(ts, rs)
        self.shares = [t.share for t in tiers]
        self.users = max(1, round(spec.users * scale))

    def rate(self, t) -> np.ndarray:
        return self.rate_fn.rate(t)

    def generate(self, t0: float, t1: float, rng: np.random.Generator) -> Arrivals:
        return assign(self.rate_fn.sample(t0, t1, rng), self.shares, self.users, rng)
