"""Overload policies: concurrency caps, shedding with reserved paid capacity, adaptive
concurrency (AIMD, Gradient2), brownout, the content filter, and shadow (dark) launches.

Decisions read the fleet's state (utilisation, queue depth) at the arrival instant: the fleet
loop evaluates them per request through the gates (sim/fleet/gates.py) set in `attach` and
`refresh`, in the simulator and the gateway alike.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from sim.fleet.gates import off
from sim.fleet.kernel import (
    R_CONCURRENCY,
    R_SHED,
    R_TIMEOUT,
    SERIES_BINS,
    SERIES_GAMMA,
    SERIES_MIN,
    shed_decision,
)
from sim.policies.base import ADMIT, REASON_CODE, Decision, Params, Policy


def _pass(n: int):
    """admit_many that lets everything through (shadow: it only counts)."""
    return np.ones(n, bool), np.full(n, -1, np.int8), np.full(n, np.nan)


def _by_tier(pol: Policy, mask, values) -> dict:
    return {t: pol.n(values[k]) for k, t in enumerate(pol.tiers) if mask is None or mask[k]}


def _unknown_tier(maps: dict[str, Any], tiers: list[str]) -> tuple[str, str] | None:
    for field, m in maps.items():
        if isinstance(m, dict):
            for t in m:
                if t not in tiers:
                    return field, f"unknown tier {t!r}; tiers: {', '.join(tiers)}"
    return None

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
            out["blocked"] = _by_tier(self, self.active.tiers, self.run.gates.rejected(R_CONCURRENCY))
        return out


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
        return _unknown_tier({"utilization": params.utilization, "queue_depth": params.queue_depth,
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
            out["shed"] = _by_tier(self, self.active.tiers, self.run.gates.rejected(R_SHED))
        return out


# ---- adaptive concurrency (Netflix concurrency-limits) ----


class AdaptiveParams(Params):
    initial: int = Field(100, ge=1, le=10**9)
    min_limit: int = Field(1, ge=1, le=10**9)
    max_limit: int = Field(100000, ge=1, le=10**9)
    window_s: float = Field(60.0, ge=0.1, le=1e10, description="how often the limit is updated")
    latency_bound_s: float = Field(60.0, ge=1e-6, le=1e10, description="AIMD: backs off when the window's "
                                   "p95 latency is above this (Netflix: the timeout)")
    backoff: float = Field(0.9, gt=0, lt=1)
    smoothing: float = Field(0.2, gt=0, le=1)
    queue_size: float = Field(4, ge=0, le=1e9, description="Gradient2 headroom")
    long_window: int = Field(100, ge=1, le=10**6, description="Gradient2: windows in the long-term average")


class _LatencyWindow:
    """Latency histogram of completions of some tiers since the last reading, from the fleet
    loop's per-interval series (rows before the current one are final and folded once)."""

    def __init__(self, gates, mask):
        self.gates, self.mask = gates, mask
        self.rows = 0
        self.base = np.zeros(SERIES_BINS, np.int64)
        self.prev = np.zeros(SERIES_BINS, np.int64)

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
        win = _LatencyWindow(g, active.tiers)
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
            out["blocked"] = _by_tier(self, self.active.tiers, self.run.gates.rejected(R_CONCURRENCY))
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
        from sim.metrics.sketch import _rep

        v = _rep(np.arange(len(hist)), SERIES_MIN, SERIES_GAMMA)
        return float((hist * v).sum() / hist.sum())

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


# ---- CoDel ----


class CodelParams(Params):
    target_s: float = Field(ge=1e-6, le=1e10, description="queueing delay allowed while the queue stays busy")
    interval_s: float = Field(ge=1e-6, le=1e10, description="the queue counts as standing after this long "
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
            out["dropped"] = _by_tier(self, self.active.tiers, self.run.gates.rejected(R_TIMEOUT))
        return out


# ---- brownout ----

TierNumber = float | dict[str, float]


class BrownoutParams(Params):
    utilization: TierNumber = Field(0.9, description="degrade at or above this busy share "
                                    "(a number, or tier -> number)")
    queue_depth: TierNumber = Field(math.inf, description="... or this many queued requests")
    steps: int | dict[str, int] = Field(description="denoising steps when degraded (e.g. 4 for a "
                                        "distilled model; a cheaper model or lower resolution "
                                        "as the step count of equal GPU cost)")

    @model_validator(mode="after")
    def _positive(self):
        for f in ("utilization", "queue_depth", "steps"):
            v = getattr(self, f)
            for x in v.values() if isinstance(v, dict) else [v]:
                if not x > 0:
                    raise ValueError(f"{f}: must be greater than 0")
        return self


class Brownout(Policy):
    """Under load, admitted requests of its tiers get fewer denoising steps (a cheaper,
    lower-quality image) instead of waiting longer. Thresholds and steps may differ per tier
    (degrade free first and deepest). The fleet loop decides per arrival through the
    brownout gate (the same `shed_decision` on utilisation and queue depth as shedding), in
    the simulator and the gateway alike.
    Reports per tier: the share degraded and a quality proxy, steps served / nominal steps
    (the largest pool's)."""

    name = "brownout"
    Params = BrownoutParams
    stage = "degrade"

    @classmethod
    def check_tiers(cls, params, tiers):
        return _unknown_tier({"utilization": params.utilization, "queue_depth": params.queue_depth,
                              "steps": params.steps}, tiers)

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
        self.low_steps = arr(p.steps, math.inf)

    def overloaded(self, view: dict, tier: int = 0) -> bool:
        return shed_decision(view["utilization"], view["queue_depth"], self.thr_util[tier],
                             self.thr_depth[tier])

    def attach(self, run, env, active) -> None:
        self.run, self.active = run, active
        self.refresh(run, active)

    def refresh(self, run, active) -> None:
        on = active.enabled
        for k in np.flatnonzero(active.tiers):
            run.gates.brownout(int(k), self.thr_util[k], self.thr_depth[k],
                               off(on, self.low_steps[k]))

    def report(self) -> dict:
        if not hasattr(self, "run"):
            return {}
        c = self.run.gates.brownout_counts()
        nominal = self.run.gates.nominal_steps()
        ks = [(k, t) for k, t in enumerate(self.tiers) if self.active.tiers[k] and c[k, 0]]
        return {"degraded": {t: self.n(c[k, 1]) for k, t in ks},
                "degraded_share": {t: round(float(c[k, 1] / c[k, 0]), 6) for k, t in ks},
                "quality_proxy": {t: round(float(c[k, 2] / (c[k, 0] * nominal)), 6) for k, t in ks}}


# ---- content filter ----


class FilterParams(Params):
    strictness: float = Field(0.5, ge=0, le=1)
    violating_share: float = Field(0.02, ge=0, le=1, description="requests that truly break policy")
    base_false_positive: float = Field(0.002, ge=0, le=1)
    false_positive_slope: float = Field(0.08, ge=0, le=1, description="fpr = base + slope*strictness^2")
    cost_s: float = Field(0.05, ge=0, le=1e6, description="classifier CPU-seconds per request")
    price_per_cpu_hour: float = Field(0.05, ge=0, le=1e6)
    seed: int = Field(0, ge=0, le=2**63 - 1)


class ContentFilter(Policy):
    """A prompt classifier before the queue. Recall rises with strictness (0.6 + 0.4 s), and
    so does the false-positive rate (base + slope s^2): legitimate requests wrongly blocked.
    Caught violations and false blocks are both rejected as `filtered`; the report separates
    them per tier, with the violations that got through (missed).

    Cost: the classifier runs on CPUs at the gateway, so its cost is CPU-seconds per request
    (cost_s), reported as CPU-hours and dollars; it takes no GPU time and, being far shorter
    than a generation, adds no latency in the model."""

    name = "content_filter"
    Params = FilterParams
    shadowable = True

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.rng = np.random.default_rng([params.seed, 77])
        K = len(tiers)
        self.checked = np.zeros(K, np.int64)
        self.legit = np.zeros(K, np.int64)
        self.true_blocks = np.zeros(K, np.int64)
        self.false_blocks = np.zeros(K, np.int64)
        self.missed = np.zeros(K, np.int64)

    def rates(self) -> tuple[float, float]:
        s = self.params.strictness
        return 0.6 + 0.4 * s, min(1.0, self.params.base_false_positive + self.params.false_positive_slope * s * s)

    def admit_many(self, t, user, tier):
        n = len(t)
        tpr, fpr = self.rates()
        u = self.rng.random((n, 2))  # two draws per request, in order: admit() gives the same
        bad = u[:, 0] < self.params.violating_share
        block = np.where(bad, u[:, 1] < tpr, u[:, 1] < fpr)
        K = len(self.tiers)
        self.checked += np.bincount(tier, minlength=K)
        self.legit += np.bincount(tier[~bad], minlength=K)
        self.true_blocks += np.bincount(tier[block & bad], minlength=K)
        self.false_blocks += np.bincount(tier[block & ~bad], minlength=K)
        self.missed += np.bincount(tier[~block & bad], minlength=K)
        code = np.where(block, REASON_CODE["filtered"], -1).astype(np.int8)
        return ~block, code, np.full(n, np.nan)

    def admit(self, now: float, user: int, tier: int) -> Decision:
        ok, _, _ = self.admit_many(np.array([now]), np.array([user]), np.array([tier]))
        return ADMIT if ok[0] else Decision(False, "filtered")

    def report(self) -> dict:
        tpr, fpr = self.rates()
        cpu_h = float(self.checked.sum()) * self.params.cost_s / 3600
        ks = [(k, t) for k, t in enumerate(self.tiers) if self.checked[k]]
        return {
            "strictness": self.params.strictness, "recall": round(tpr, 6),
            "false_positive_rate": round(fpr, 6),
            "true_blocks": {t: self.n(self.true_blocks[k]) for k, t in ks},
            "false_blocks": {t: self.n(self.false_blocks[k]) for k, t in ks},
            "false_block_share": {t: round(float(self.false_blocks[k] / max(1, self.legit[k])), 6)
                                  for k, t in ks},
            "missed": {t: self.n(self.missed[k]) for k, t in ks},
            "cpu_hours": round(cpu_h * self.scale, 3),
            "cost": round(cpu_h * self.scale * self.params.price_per_cpu_hour, 2),
        }


# ---- shadow ----


class ShadowParams(Params):
    of: dict[str, Any] = Field(description="the policy to dark-launch: {policy: name, ...params}")

    @field_validator("of")
    @classmethod
    def _inner(cls, v):
        from pydantic import ValidationError

        from sim.policies import REGISTRY

        spec = dict(v)
        name = spec.pop("policy", None)
        ok = sorted(n for n, c in REGISTRY.items() if c.shadowable)
        if name not in REGISTRY:
            raise ValueError(f"policy: unknown policy {name!r}; can be dark-launched: {', '.join(ok)}")
        if not REGISTRY[name].shadowable:
            raise ValueError(f"policy: {name!r} cannot be dark-launched; these can: {', '.join(ok)}")
        try:
            REGISTRY[name].Params.model_validate(spec)
        except ValidationError as e:  # one line: the first error, with its field
            err = e.errors()[0]
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            raise ValueError(f"{'.'.join(map(str, err['loc'])) or name}: {msg}") from None
        return v


class Shadow(Policy):
    """Evaluate an admission policy without enforcing it (Stripe's dark launch), and count
    per tier what it would have blocked. The inner policy keeps its own state as if it were
    enforcing (a token bucket is charged only by the requests it would have let through).
    A shedder is evaluated on the fleet's state at the start of each admission window."""

    name = "shadow"
    Params = ShadowParams

    @classmethod
    def check_tiers(cls, params, tiers):
        spec = dict(params.of)
        inner = _lookup(spec.pop("policy"))
        return inner.check_tiers(inner.Params.model_validate(spec), tiers)

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        spec = dict(params.of)
        cls = _lookup(spec.pop("policy"))
        self.inner = cls(cls.Params.model_validate(spec), tiers, epoch)
        self.would_block = np.zeros(len(tiers), np.int64)
        self.seen = np.zeros(len(tiers), np.int64)
        self.run = None

    def attach(self, run, env, active) -> None:
        self.run = run

    def _inner_many(self, t, user, tier):
        if isinstance(self.inner, ShedReserve):
            # a shedder decides on the fleet's state: the host's now (the window's start in
            # the simulator, the arrival live)
            ok = np.ones(len(t), bool)
            if self.run is not None and len(t):
                view = self.run.gates.view()
                ips = self.run.gates.images_per_s()
                for k in np.unique(tier):
                    ok[tier == k] = self.inner.admit_with(view, int(k), ips).ok
            return ok
        return self.inner.admit_many(t, user, tier)[0]

    def admit_many(self, t, user, tier):
        ok = self._inner_many(t, user, tier)
        K = len(self.tiers)
        self.seen += np.bincount(tier, minlength=K)
        self.would_block += np.bincount(tier[~ok], minlength=K)
        return _pass(len(t))

    def admit(self, now: float, user: int, tier: int) -> Decision:
        # the same path as a window of one request (a shedder's block counts live too)
        self.admit_many(np.array([now]), np.array([user]), np.array([tier]))
        return ADMIT

    def report(self) -> dict:
        ks = [(k, t) for k, t in enumerate(self.tiers) if self.seen[k]]
        return {"shadow_of": self.inner.name,
                "would_block": {t: self.n(self.would_block[k]) for k, t in ks},
                "would_block_share": {t: round(float(self.would_block[k] / self.seen[k]), 6)
                                      for k, t in ks}}


def _lookup(name: str) -> type[Policy]:
    from sim.policies import REGISTRY

    return REGISTRY[name]
