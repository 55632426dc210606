"""The scenario's policies, built as sim/engine.py builds them, with the stage each declares
(`Policy.stage`), and the IETF RateLimit header fields (httpapi draft-10) of their decisions.

- admission: `admit(now, user, tier)` before the queue, in scenario order (limiters, quotas,
  the content filter, shadow);
- gate: set the fleet loop's gates through `host.gates` (concurrency, shed_reserve, codel,
  aimd, gradient2), as in the simulator;
- degrade: brownout, through the fleet loop's brownout gate (decided per arrival);
- dynamics: SimPy processes on the gateway's environment (autoscale, failures, throttling).
Every registered policy runs live: the gateway attaches each to its fleet as Run does.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from sim.policies import Decision, Policy
from sim.policies.concurrency import Concurrency
from sim.policies.limits import Gcra, TokenBucket
from sim.policies.pipeline import ActivePolicy
from sim.policies.pipeline import build_policies as engine_policies
from sim.policies.quota import DAY, DailyQuota
from sim.scenario import Scenario


@dataclass
class LivePolicy:
    active: ActivePolicy  # the engine's: policy object, tier mask, enabled flag
    kind: str  # the policy's stage; "none" for the base policy (it does nothing)
    header: str  # its name in RateLimit fields


def build_policies(sc: Scenario) -> list[LivePolicy]:
    """The simulator's own policy objects (sim.policies.pipeline.build_policies), with their stages."""
    count = Counter(s.policy for s in sc.policies)
    out = []
    for ap, spec in zip(engine_policies(sc), sc.policies, strict=True):
        header = spec.policy if count[spec.policy] == 1 else f"{spec.policy}-{ap.spec_index}"
        kind = "none" if type(ap.policy) is Policy else ap.policy.stage
        out.append(LivePolicy(ap, kind, header))
    return out


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
