"""The scenario's policies, built as sim/engine.py builds them, sorted by where the gateway
runs them, and the IETF RateLimit header fields (httpapi draft-10) of their decisions.

- admission: `admit(now, user, tier)` before the queue, in scenario order (limiters, quotas,
  the content filter, shadow);
- fleet: gates of the fleet loop (concurrency, shed_reserve, codel), set as their `refresh`
  sets the simulator's arrays;
- degrade: brownout's `degrade` on the fleet's state at arrival.
Policies that change the fleet over time or read the simulator's internals (autoscale,
failures, throttling, aimd, gradient2) exist in the simulator only.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from sim.engine import ActivePolicy
from sim.engine import build_policies as engine_policies
from sim.errors import InputError
from sim.fleet.fleet import PoolSetup
from sim.policies import REGISTRY, Decision, Policy
from sim.policies.limits import Gcra, TokenBucket
from sim.policies.overload import Codel, Concurrency, Shadow, ShedReserve
from sim.policies.quota import DAY, DailyQuota
from sim.scenario import Scenario

FLEET_SIDE = (Concurrency, ShedReserve, Codel)
SIM_ONLY = ("aimd", "gradient2", "autoscale", "failures", "throttling")


def live_kind(cls: type[Policy]) -> str | None:
    """Where the gateway runs a policy class: admission, fleet, degrade; None: it cannot."""
    if cls.name in SIM_ONLY:
        return None
    if issubclass(cls, FLEET_SIDE):
        return "fleet"
    if cls.degrade is not Policy.degrade:
        return "degrade"
    if cls.attach is not Policy.attach and cls is not Shadow:
        return None  # hooks into a simulator run: nothing to call live
    return "admission"


def check_live(sc: Scenario) -> None:
    """InputError for the first policy the live gateway cannot run."""
    for i, spec in enumerate(sc.policies):
        if live_kind(REGISTRY[spec.policy]) is None:
            raise InputError(sc.source, f"policies[{i}].policy",
                             f"{spec.policy!r} is not supported by the live gateway")


@dataclass
class LivePolicy:
    active: ActivePolicy  # the engine's: policy object, tier mask, enabled flag
    kind: str
    header: str  # its name in RateLimit fields


def build_policies(sc: Scenario) -> list[LivePolicy]:
    """The simulator's own policy objects (sim.engine.build_policies), with where each runs."""
    check_live(sc)
    count = Counter(s.policy for s in sc.policies)
    out = []
    for ap, spec in zip(engine_policies(sc), sc.policies, strict=True):
        header = spec.policy if count[spec.policy] == 1 else f"{spec.policy}-{ap.spec_index}"
        out.append(LivePolicy(ap, live_kind(type(ap.policy)), header))
    return out


def images_per_s(pools: list[PoolSetup]) -> float:
    """The fleet's images per second at max batch (shed_reserve's predicted wait)."""
    return sum(p.cost.images_per_s(p.max_batch) * p.gpus for p in pools)


def apply_fleet(lp: LivePolicy, fleet, ips: float) -> None:
    """Set the fleet loop's gates of a fleet-side policy, as its `refresh` does."""
    ap = lp.active
    pol, on, ks = ap.policy, ap.enabled, np.flatnonzero(ap.tiers)
    for k in ks:
        if isinstance(pol, Concurrency):
            gate = fleet.tier_limit if pol.params.key == "tier" else fleet.user_limit
            gate[k] = pol.params.limit if on else math.inf
        elif isinstance(pol, ShedReserve):
            u, d = pol.thresholds(pol.tiers[k], ips)
            fleet.shed_util[k] = u if on else math.inf
            fleet.shed_depth[k] = d if on else math.inf
        elif isinstance(pol, Codel):
            fleet.codel[k][0] = pol.params.target_s if on else math.inf
            fleet.codel[k][1] = pol.params.interval_s if on else math.inf


def concurrency_decision(policies: list[LivePolicy], tier: int) -> tuple[LivePolicy, Decision] | None:
    """The concurrency policy behind a fleet-side rate_limited rejection (for its headers)."""
    for lp in policies:
        ap = lp.active
        if isinstance(ap.policy, Concurrency) and ap.enabled and ap.tiers[tier]:
            return lp, Decision(False, "rate_limited", None, ap.policy.params.limit, 0)
    return None


# ---- RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-10) ----


def quota(pol: Policy, d: Decision) -> tuple[int, float | None]:
    """(q, w): the policy's quota and its window in simulated seconds (None: no window)."""
    p = pol.params
    if isinstance(pol, TokenBucket):
        return int(p.burst), p.burst / p.rate
    if isinstance(pol, Gcra):
        return p.burst + 1, (p.burst + 1) * p.period_s / p.count
    if isinstance(pol, DailyQuota):
        return p.limit, DAY
    if isinstance(pol, Concurrency):
        return p.limit, None
    return int(d.limit), getattr(p, "window_s", None)


def wall_s(sim_s: float, time_scale: float, least: int = 0) -> int:
    """Whole wall-clock seconds for a span of simulated seconds, rounded up."""
    return max(least, math.ceil(sim_s / time_scale - 1e-9))


def ratelimit_fields(infos: list[tuple[LivePolicy, Decision]], time_scale: float) -> dict[str, str]:
    """RateLimit-Policy and RateLimit for the decisions of the policies a request met.
    Times are wall-clock seconds, like Retry-After."""
    if not infos:
        return {}
    pols, lims = [], []
    for lp, d in infos:
        q, w = quota(lp.active.policy, d)
        name = f'"{lp.header}"'
        pols.append(f"{name};q={q}" + (f";w={wall_s(w, time_scale, 1)}" if w else ""))
        r = d.remaining if d.remaining is not None else (0 if not d.ok else None)
        if r is None:
            continue
        t = d.reset_after if d.reset_after is not None else (d.retry_after if not d.ok else None)
        lims.append(f"{name};r={max(0, int(r))}" + (f";t={wall_s(t, time_scale)}" if t is not None else ""))
    out = {"RateLimit-Policy": ", ".join(pols)}
    if lims:
        out["RateLimit"] = ", ".join(lims)
    return out
