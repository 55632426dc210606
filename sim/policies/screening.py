"""Screening before the queue: the content filter, and shadow (dark) launches of another
admission policy."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, field_validator

from sim.policies.base import ADMIT, REASON_CODE, Decision, Params, Policy, pass_all
from sim.policies.shedding import ShedReserve
from sim.rng import stream
from sim.units import Duration

# ---- content filter ----


class FilterParams(Params):
    strictness: float = Field(0.5, ge=0, le=1)
    violating_share: float = Field(0.02, ge=0, le=1, description="requests that truly break policy")
    base_false_positive: float = Field(0.002, ge=0, le=1)
    false_positive_slope: float = Field(0.08, ge=0, le=1, description="fpr = base + slope*strictness^2")
    cost_s: Duration = Field(0.05, le=1e6, description="classifier CPU-seconds per request")
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
        # verdicts keyed by the scenario's seed once attached (alone: by the policy's seed)
        self.rng = stream("content_filter", params.seed)
        K = len(tiers)
        self.checked = np.zeros(K, np.int64)
        self.legit = np.zeros(K, np.int64)
        self.true_blocks = np.zeros(K, np.int64)
        self.false_blocks = np.zeros(K, np.int64)
        self.missed = np.zeros(K, np.int64)

    def attach(self, run, env, active) -> None:
        # another scenario seed, other verdicts (the policy's seed still picks among them)
        self.rng = stream("content_filter", run.sc.seed, self.params.seed)

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
        return pass_all(len(t))

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
