"""The simplest demand: a rate curve given point by point."""

from __future__ import annotations

import numpy as np

from sim.demand.base import PiecewiseLinearRate, assign
from sim.demand.stream import Stream, expected_with_feedback


class CurveModel(Stream):
    """Poisson arrivals on a piecewise-linear (or step) rate curve (+ social feedback)."""

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
        self.scale = scale
        self._init_stream(spec)

    @classmethod
    def from_scenario(cls, sc, scale: float | None = None):
        return cls(sc.demand, sc.tiers, sc.cell_fraction if scale is None else scale)

    def rate(self, t) -> np.ndarray:
        """Mean requests/s (social feedback included in its stationary approximation)."""
        return self.rate_fn.rate(t) * self.social_factor()

    def _base(self, t0, t1, rng):
        return assign(self.rate_fn.sample(t0, t1, rng), self.shares, self.users, rng)

    def pick(self, t, rng):
        a = assign(t, self.shares, self.users, rng)
        return a.user, a.tier

    def expected(self, t_end: float, step: float = 60.0) -> dict:
        """Mean requests/s, and users who have made a request by t (users drawn uniformly)."""
        rate = self.image_rate(t_end, step)
        U = float(self.users)
        return {"rate": rate, "new_users": None,
                "unique_users": lambda t: U * -np.expm1(-rate.cumulative(t) / U)}

    def image_rate(self, t_end: float, step: float = 60.0) -> PiecewiseLinearRate:
        n = self.spec.social.branching if self.spec.social is not None else 0.0
        return expected_with_feedback(self.rate_fn, n, self.kernel, step, t_end)
