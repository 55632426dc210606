"""Overload policies: concurrency caps, shedding with reserved paid capacity, adaptive
concurrency (AIMD, Gradient2), brownout, the content filter, and shadow (dark) launches.

Decisions read the fleet's state (utilisation, queue depth) at the arrival instant. In the
simulator the fleet loop evaluates them per request through gate arrays set in `attach`;
the gateway calls `admit_with(view, ...)` with the same thresholds and the same function.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from sim.fleet.kernel import shed_decision
from sim.policies.base import ADMIT, REASON_CODE, Decision, Params, Policy

# ---- concurrency ----


class ConcurrencyParams(Params):
    limit: int = Field(ge=1, description="requests in flight (queued or in service)")
    key: Literal["user", "tier"] = "user"


class Concurrency(Policy):
    """At most `limit` requests in flight per user or per tier (Stripe's concurrent-requests
    limiter; by Little's law limit ~ rate x latency). Rejections are `rate_limited`."""

    name = "concurrency"
    Params = ConcurrencyParams

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.inflight: dict[int, int] = {}

    def admit(self, now: float, user: int, tier: int) -> Decision:  # gateway path
        k = user if self.params.key == "user" else tier
        n = self.inflight.get(k, 0)
        if n >= self.params.limit:
            return Decision(False, "rate_limited", 1.0, self.params.limit, 0)
        self.inflight[k] = n + 1
        return Decision(True, limit=self.params.limit, remaining=self.params.limit - n - 1)

    def release(self, user: int, tier: int) -> None:
        k = user if self.params.key == "user" else tier
        self.inflight[k] = max(0, self.inflight.get(k, 0) - 1)

    def admit_many(self, t, user, tier):  # the simulator enforces it inside the fleet loop
        n = len(t)
        return np.ones(n, bool), np.full(n, -1, np.int8), np.full(n, np.nan)

    def attach(self, run, env, active) -> None:
        if self.params.key == "user":
            users = _max_users(run)
            run.fleet.S = run.fleet.S._replace(user_inflight=np.zeros(users, np.int64))
        self.refresh(run, active)

    def refresh(self, run, active) -> None:
        S = run.fleet.S
        lim = self.params.limit if active.enabled else 2 ** 62
        if self.params.key == "tier":
            S.tier_limit[active.tiers] = lim
        else:
            S.user_limit[0] = lim


def _max_users(run) -> int:
    """Size of the per-user in-flight array: the demand model's users in the cell."""
    n = getattr(run.demand, "users", None) or getattr(run.demand, "n_users", None)
    if not n:
        d = run.sc.demand
        n = round(getattr(d, "users", 1 << 20) * run.sc.cell_fraction)
    return int(n) + 1


# ---- shedding ----


class ShedParams(Params):
    utilization: dict[str, float] = Field(
        default_factory=dict, description="tier -> shed it at or above this busy share of the fleet")
    queue_depth: dict[str, float] = Field(
        default_factory=dict, description="tier -> shed it at or above this many queued requests")
    predicted_wait_s: dict[str, float] = Field(
        default_factory=dict, description="tier -> shed it when queued work would take this long")


class ShedReserve(Policy):
    """Reserve fleet capacity for paid tiers: less critical tiers are shed (503) at lower
    thresholds (Stripe's fleet-usage shedder keeps ~20% for critical traffic: free at 0.8)."""

    name = "shed_reserve"
    Params = ShedParams

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

    def admit_many(self, t, user, tier):
        n = len(t)
        return np.ones(n, bool), np.full(n, -1, np.int8), np.full(n, np.nan)

    def attach(self, run, env, active) -> None:
        self.refresh(run, active)
        if self.params.predicted_wait_s:
            env.process(self._follow_fleet(run, env, active))

    def refresh(self, run, active) -> None:
        S = run.fleet.S
        ips = sum(p.cost.images_per_s(p.max_batch) * run.fleet.gpus(j) for j, p in enumerate(run.pools))
        for k, name in enumerate(self.tiers):
            u, d = self.thresholds(name, ips)
            on = active.enabled
            S.shed_util[k] = u if on else math.inf
            S.shed_depth[k] = d if on else math.inf

    def _follow_fleet(self, run, env, active):
        """Predicted wait depends on the live fleet: refresh the depth thresholds."""
        while True:
            yield env.timeout(run.sc.chunk_s)
            self.refresh(run, active)


# ---- adaptive concurrency (Netflix concurrency-limits) ----


class AdaptiveParams(Params):
    initial: int = Field(100, ge=1)
    min_limit: int = Field(1, ge=1)
    max_limit: int = Field(100000, ge=1)
    window_s: float = Field(60.0, gt=0, description="how often the limit is updated")
    latency_bound_s: float = Field(60.0, gt=0, description="AIMD: backs off above this p95")
    backoff: float = Field(0.9, gt=0, lt=1)
    smoothing: float = Field(0.2, gt=0, le=1)
    queue_size: float = Field(4, ge=0, description="Gradient2 headroom")


class Aimd(Policy):
    """AIMD on the tier's in-flight cap: on drops or p95 over the bound L = max(min,
    min(L-1, backoff*L)); else if 2*inflight >= L then L+1. Rejections: rate_limited."""

    name = "aimd"
    Params = AdaptiveParams

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.limit = float(params.initial)
        self.history: list[tuple[float, float]] = []

    def update(self, p95: float, dropped: bool, inflight: int, short=None) -> float:
        p = self.params
        if dropped or p95 > p.latency_bound_s:
            self.limit = max(p.min_limit, min(self.limit - 1, p.backoff * self.limit))
        elif 2 * inflight >= self.limit:
            self.limit = min(p.max_limit, self.limit + 1)
        return self.limit

    def admit_many(self, t, user, tier):
        n = len(t)
        return np.ones(n, bool), np.full(n, -1, np.int8), np.full(n, np.nan)

    def attach(self, run, env, active) -> None:
        env.process(self._loop(run, env, active))

    def _loop(self, run, env, active):
        from sim.metrics.sketch import quantiles

        last_drop = int(run.fleet.S.abandoned.sum())
        while True:
            yield env.timeout(self.params.window_s)
            run.sync(env.now)
            S = run.fleet.S
            i = min(int(env.now / run.interval), S.ser_lat_hist.shape[0] - 1)
            hist = S.ser_lat_hist[max(0, i - 1), active.tiers].sum(axis=0)
            p95 = float(quantiles(hist, (0.95,), series=True)[0]) if hist.sum() else 0.0
            drops = int(S.abandoned.sum())  # requests that timed out waiting count as drops
            inflight = int(S.n_sys[active.tiers].sum())
            self.update(p95, drops > last_drop, inflight, p95)
            last_drop = drops
            lim = int(self.limit) if active.enabled else 2 ** 62
            S.tier_limit[active.tiers] = max(1, lim // max(1, int(active.tiers.sum())))
            self.history.append((env.now, self.limit))

    def report(self) -> dict:
        lims = [x for _, x in self.history]
        return {"limit_end": round(self.limit, 2), "limit_min": min(lims) if lims else None,
                "limit_max": max(lims) if lims else None, "updates": len(lims)}


class Gradient2(Aimd):
    """Gradient2: g = clamp(long_rtt / short_rtt, 0.5, 1); L' = L*g + queue_size, smoothed."""

    name = "gradient2"
    Params = AdaptiveParams

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.long_rtt: float | None = None

    def update(self, p95: float, dropped: bool, inflight: int, short=None) -> float:
        p = self.params
        short = max(short or 0.0, 1e-9)
        self.long_rtt = short if self.long_rtt is None else 0.95 * self.long_rtt + 0.05 * short
        g = min(1.0, max(0.5, self.long_rtt / short))
        new = self.limit * g + p.queue_size
        self.limit = min(p.max_limit, max(p.min_limit, (1 - p.smoothing) * self.limit + p.smoothing * new))
        return self.limit


# ---- brownout ----


class BrownoutParams(Params):
    utilization: float = Field(0.9, gt=0, le=1, description="degrade at or above this busy share")
    queue_depth: float = Field(math.inf, gt=0, description="... or this many queued requests")
    steps: int = Field(gt=0, description="denoising steps when degraded (e.g. 4 for a distilled model)")


class Brownout(Policy):
    """Under load, admitted requests of its tiers get fewer denoising steps (a cheaper,
    lower-quality image) instead of waiting. Reports the share degraded and a quality proxy:
    steps served / nominal steps, averaged over images."""

    name = "brownout"
    Params = BrownoutParams

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.n = np.zeros(len(tiers), np.int64)
        self.degraded = np.zeros(len(tiers), np.int64)
        self.steps_sum = np.zeros(len(tiers))
        self.nominal_sum = np.zeros(len(tiers))

    def overloaded(self, view: dict) -> bool:
        return shed_decision(view["utilization"], view["queue_depth"], self.params.utilization,
                             self.params.queue_depth)

    def degrade(self, view, t, tier, steps, tiers_mask):
        nominal = steps.copy()
        if self.overloaded(view):
            m = tiers_mask[tier]
            steps = steps.copy()
            steps[m] = np.minimum(steps[m], self.params.steps)
        sel = tiers_mask[tier]
        K = len(self.tiers)
        self.n += np.bincount(tier[sel], minlength=K)
        self.degraded += np.bincount(tier[sel & (steps < nominal)], minlength=K)
        self.steps_sum += np.bincount(tier[sel], weights=steps[sel], minlength=K)
        self.nominal_sum += np.bincount(tier[sel], weights=nominal[sel], minlength=K)
        return steps

    def report(self) -> dict:
        share = {t: round(float(self.degraded[k] / self.n[k]), 6) for k, t in enumerate(self.tiers) if self.n[k]}
        q = {t: round(float(self.steps_sum[k] / self.nominal_sum[k]), 6) for k, t in enumerate(self.tiers) if self.n[k]}
        return {"degraded": {t: int(self.degraded[k]) for k, t in enumerate(self.tiers) if self.n[k]},
                "degraded_share": share, "quality_proxy": q}


# ---- content filter ----


class FilterParams(Params):
    strictness: float = Field(0.5, ge=0, le=1)
    violating_share: float = Field(0.02, ge=0, le=1, description="requests that truly break policy")
    base_false_positive: float = Field(0.002, ge=0, le=1)
    false_positive_slope: float = Field(0.08, ge=0, description="fpr = base + slope*strictness^2")
    cost_s: float = Field(0.05, ge=0, description="classifier CPU-seconds per request")
    price_per_cpu_hour: float = Field(0.05, ge=0)
    seed: int = 0


class ContentFilter(Policy):
    """A classifier before the queue. Recall rises with strictness (0.6 + 0.4 s), and so does
    the false-positive rate (base + slope s^2): legitimate requests wrongly blocked. The
    filter's own cost is counted in CPU-hours and dollars."""

    name = "content_filter"
    Params = FilterParams

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.rng = np.random.default_rng([params.seed, 77])
        K = len(tiers)
        self.checked = np.zeros(K, np.int64)
        self.true_blocks = np.zeros(K, np.int64)
        self.false_blocks = np.zeros(K, np.int64)

    def rates(self) -> tuple[float, float]:
        s = self.params.strictness
        return 0.6 + 0.4 * s, min(1.0, self.params.base_false_positive + self.params.false_positive_slope * s * s)

    def admit_many(self, t, user, tier):
        n = len(t)
        tpr, fpr = self.rates()
        u = self.rng.random((2, n))
        bad = u[0] < self.params.violating_share
        block = np.where(bad, u[1] < tpr, u[1] < fpr)
        K = len(self.tiers)
        self.checked += np.bincount(tier, minlength=K)
        self.true_blocks += np.bincount(tier[block & bad], minlength=K)
        self.false_blocks += np.bincount(tier[block & ~bad], minlength=K)
        code = np.where(block, REASON_CODE["filtered"], -1).astype(np.int8)
        return ~block, code, np.full(n, np.nan)

    def admit(self, now: float, user: int, tier: int) -> Decision:
        ok, _, _ = self.admit_many(np.array([now]), np.array([user]), np.array([tier]))
        return ADMIT if ok[0] else Decision(False, "filtered")

    def report(self) -> dict:
        tpr, fpr = self.rates()
        cpu_h = float(self.checked.sum()) * self.params.cost_s / 3600
        return {
            "strictness": self.params.strictness, "recall": tpr, "false_positive_rate": fpr,
            "true_blocks": {t: int(self.true_blocks[k]) for k, t in enumerate(self.tiers)},
            "false_blocks": {t: int(self.false_blocks[k]) for k, t in enumerate(self.tiers)},
            "cpu_hours": round(cpu_h, 3), "cost": round(cpu_h * self.params.price_per_cpu_hour, 2),
        }


# ---- shadow ----


class ShadowParams(Params):
    of: dict[str, Any] = Field(description="the policy to dark-launch: {policy: name, ...params}")

    @model_validator(mode="after")
    def _inner(self):
        from sim.policies import REGISTRY

        spec = dict(self.of)
        name = spec.pop("policy", None)
        if name not in REGISTRY or name == "shadow":
            raise ValueError(f"of.policy: unknown policy {name!r}; known: {', '.join(sorted(REGISTRY))}")
        REGISTRY[name].Params.model_validate(spec)
        return self


class Shadow(Policy):
    """Evaluate a policy without enforcing it, and count what it would have blocked."""

    name = "shadow"
    Params = ShadowParams

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        from sim.policies import REGISTRY

        spec = dict(params.of)
        cls = REGISTRY[spec.pop("policy")]
        self.inner = cls(cls.Params.model_validate(spec), tiers, epoch)
        self.would_block = np.zeros(len(tiers), np.int64)
        self.seen = np.zeros(len(tiers), np.int64)

    def admit_many(self, t, user, tier):
        ok, _, _ = self.inner.admit_many(t, user, tier)
        K = len(self.tiers)
        self.seen += np.bincount(tier, minlength=K)
        self.would_block += np.bincount(tier[~ok], minlength=K)
        n = len(t)
        return np.ones(n, bool), np.full(n, -1, np.int8), np.full(n, np.nan)

    def admit(self, now: float, user: int, tier: int) -> Decision:
        d = self.inner.admit(now, user, tier)
        self.seen[tier] += 1
        self.would_block[tier] += 0 if d.ok else 1
        return ADMIT

    def report(self) -> dict:
        return {"shadow_of": self.inner.name,
                "would_block": {t: int(self.would_block[k]) for k, t in enumerate(self.tiers)},
                "would_block_share": {t: round(float(self.would_block[k] / self.seen[k]), 6)
                                      for k, t in enumerate(self.tiers) if self.seen[k]}}
