"""Concurrency limits: a fixed cap per user or tier, and adaptive ones (AIMD, Gradient2)
that follow latency. All are gates of the fleet loop (tier_limit / user_limit), set through
the host's gates (sim/fleet/gates.py) in the simulator and the gateway alike; rejections
are rate_limited."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from sim.fleet.gates import R_CONCURRENCY
from sim.policies.base import Params, Policy, by_tier
from sim.units import Duration, PosDuration

# ---- concurrency ----


class ConcurrencyParams(Params):
    limit: int = Field(ge=1, le=10**12, description="requests in flight (queued or in service)")
    key: Literal["user", "tier"] = "user"


class Concurrency(Policy):
    """At most `limit` requests in flight per user or per tier (Stripe's concurrent-requests
    limiter; by Little's law limit ~ rate x latency). Rejections are `rate_limited`."""

    name = "concurrency"
    Params = ConcurrencyParams
    stage = "gate"  # in-flight counts live in the fleet loop (tier_limit / user_limit gates)

    def attach(self, run, env, active) -> None:
        self.run, self.active = run, active
        self.refresh(run, active)

    def refresh(self, run, active) -> None:
        lim = self.params.limit if active.enabled else None
        if self.params.key == "tier":
            run.gates.tier_limit(active.tiers, lim)
        else:  # users of these tiers
            run.gates.user_limit(active.tiers, lim)

    def report(self) -> dict:
        out = {"key": self.params.key, "limit": self.params.limit}
        if hasattr(self, "run"):
            out["blocked"] = by_tier(self, self.active.tiers, self.run.gates.rejected(R_CONCURRENCY))
        return out


# ---- adaptive concurrency (Netflix concurrency-limits) ----


class AdaptiveParams(Params):
    initial: int = Field(100, ge=1, le=10**9)
    min_limit: int = Field(1, ge=1, le=10**9)
    max_limit: int = Field(100000, ge=1, le=10**9)
    window_s: Duration = Field(60.0, ge=0.1, description="how often the limit is updated")
    latency_bound_s: PosDuration = Field(60.0, description="AIMD: backs off when the window's "
                                   "p95 latency is above this (Netflix: the timeout)")
    backoff: float = Field(0.9, gt=0, lt=1)
    smoothing: float = Field(0.2, gt=0, le=1)
    queue_size: float = Field(4, ge=0, le=1e9, description="Gradient2 headroom")
    long_window: int = Field(100, ge=1, le=10**6, description="Gradient2: windows in the long-term average")


class LatencyWindow:
    """Latency histogram of completions of some tiers since the last reading, from the fleet
    loop's per-interval series (rows before the current one are final and folded once)."""

    def __init__(self, gates, mask):
        self.gates, self.mask = gates, mask
        self.rows = 0
        bins = gates.latency_series()[0].shape[-1]
        self.base = np.zeros(bins, np.int64)
        self.prev = np.zeros(bins, np.int64)

    def read(self) -> np.ndarray:
        h, i = self.gates.latency_series()
        if i > self.rows:
            self.base += h[self.rows:i][:, self.mask].sum(axis=(0, 1))
            self.rows = i
        cum = self.base + h[i][self.mask].sum(axis=0)
        out, self.prev = cum - self.prev, cum
        return out


class Aimd(Policy):
    """AIMD on the tiers' in-flight cap: on drops (abandoned or CoDel-dropped requests) or the
    window's p95 latency over the bound, L = max(min, min(L-1, backoff*L)); else if
    2*inflight >= L then L+1. The limit is split evenly over the policy's tiers and enforced
    per arrival by the fleet loop (tier_limit); rejections are rate_limited."""

    name = "aimd"
    Params = AdaptiveParams
    stage = "gate"

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.limit = float(params.initial)
        self.history: list[tuple[float, float]] = []

    def update(self, rtt: float, dropped: bool, inflight: int) -> float:
        p = self.params
        if dropped or rtt > p.latency_bound_s:
            self.limit = max(p.min_limit, min(self.limit - 1, p.backoff * self.limit))
        elif 2 * inflight >= self.limit:
            self.limit = min(p.max_limit, self.limit + 1)
        return self.limit

    def sample(self, hist: np.ndarray) -> float:
        """The window's latency: p95 (AIMD compares it with the bound)."""
        from sim.metrics.sketch import quantiles

        return float(quantiles(hist, (0.95,), series=True)[0])

    def attach(self, run, env, active) -> None:
        self.run, self.active = run, active
        self.apply(run, active)
        env.process(self._loop(run, env, active))

    def refresh(self, run, active) -> None:
        self.apply(run, active)

    def apply(self, run, active) -> None:
        lim = max(1, int(self.limit) // max(1, int(active.tiers.sum()))) if active.enabled else None
        run.gates.tier_limit(active.tiers, lim)

    def _loop(self, run, env, active):
        g = run.gates
        win = LatencyWindow(g, active.tiers)
        last_drop = g.dropped(active.tiers)
        while True:
            yield env.timeout(self.params.window_s)
            run.sync(env.now)
            hist = win.read()
            drops = g.dropped(active.tiers)
            if hist.sum() or drops > last_drop:
                rtt = self.sample(hist) if hist.sum() else 0.0
                self.update(rtt, drops > last_drop, g.in_system(active.tiers))
            last_drop = drops
            self.apply(run, active)
            self.history.append((env.now, self.limit))

    def report(self) -> dict:
        lims = [x for _, x in self.history]
        out = {"limit_end": round(self.limit, 2), "limit_min": round(min(lims), 2) if lims else None,
               "limit_max": round(max(lims), 2) if lims else None, "updates": len(lims),
               "decreases": sum(1 for x, y in zip(lims, lims[1:], strict=False) if y < x)}
        if hasattr(self, "run"):
            out["blocked"] = by_tier(self, self.active.tiers, self.run.gates.rejected(R_CONCURRENCY))
        return out


class Gradient2(Aimd):
    """Gradient2 (Netflix concurrency-limits), one sample per window: short = the window's mean
    latency, long = its exponential average over `long_window` windows (cut by 5% when
    long/short > 2); app-limited (inflight < L/2): unchanged; else g = clamp(long/short, 0.5, 1),
    L' = L*g + queue_size, L = (1-smoothing)*L + smoothing*L', within [min, max]."""

    name = "gradient2"
    Params = AdaptiveParams

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.long_rtt: float | None = None
        self.samples = 0

    def sample(self, hist: np.ndarray) -> float:
        from sim.metrics.sketch import mean

        return float(mean(hist, series=True))

    def update(self, rtt: float, dropped: bool, inflight: int) -> float:
        p = self.params
        if rtt <= 0:
            return self.limit
        short = rtt
        self.samples += 1
        if self.long_rtt is None:
            self.long_rtt = short
        else:  # warm-up: a plain mean of the first samples, then exponential
            a = 1.0 / self.samples if self.samples <= 10 else 2.0 / (p.long_window + 1)
            self.long_rtt += a * (short - self.long_rtt)
        if self.long_rtt / short > 2:
            self.long_rtt *= 0.95
        if inflight < self.limit / 2:
            return self.limit  # app-limited: no evidence for a new limit
        g = min(1.0, max(0.5, self.long_rtt / short))
        new = self.limit * g + p.queue_size
        new = (1 - p.smoothing) * self.limit + p.smoothing * new
        self.limit = min(p.max_limit, max(p.min_limit, new))
        return self.limit
