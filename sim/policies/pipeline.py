"""The admission pipeline: which policies a request meets before the queue, in what order,
and what stops it. One rule, in two shapes, used by the simulator (`Run.sync`, a chunk at a
time) and by the live gateway (`Gateway.admit`, one request at a time):

    the scenario's admission-stage policies, in scenario order, each only where enabled and
    where its tier mask holds the request's tier; the first that rejects decides the
    request's reason and retry-after, and later policies never see it.

Invariant (tests/test_policies.py): for fresh policies, `admit_one` over a time-sorted
sequence gives exactly the fates, reasons and retry-afters of one `admit_chunk` over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim.policies import REGISTRY
from sim.policies.base import Decision, Policy

if TYPE_CHECKING:  # the scenario is the layer above: only its type is needed here
    from sim.scenario import Scenario


@dataclass
class ActivePolicy:
    spec_index: int
    policy: Policy
    tiers: np.ndarray  # bool mask over tiers it applies to
    enabled: bool

    @property
    def admits(self) -> bool:
        """Decides before the queue (the base policy admits everything: skipped)."""
        return self.policy.stage == "admission" and type(self.policy) is not Policy

    def meets(self, tier: int) -> bool:
        return self.enabled and self.admits and bool(self.tiers[tier])


def build_policies(sc: Scenario) -> list[ActivePolicy]:
    """The scenario's policy objects in scenario order, each with its tier mask and enabled
    flag; the simulator and the live gateway both start from these."""
    names = [t.name for t in sc.tiers]
    out = []
    for i, spec in enumerate(sc.policies):
        cls = REGISTRY[spec.policy]
        pol = cls(cls.Params.model_validate(spec.params()), names, sc.epoch)
        mask = np.array([spec.tiers is None or n in spec.tiers for n in names])
        out.append(ActivePolicy(i, pol, mask, spec.enabled))
    return out


@dataclass
class ChunkFates:
    """What admission decided for a chunk: `code` is the reason code of each rejection
    (sim.outcomes.REASONS index) or -1 for an admitted request."""

    code: np.ndarray  # int8
    retry_after: np.ndarray  # float64, nan where unknown or admitted

    @property
    def admitted(self) -> np.ndarray:
        return self.code < 0


def admit_chunk(policies: list[ActivePolicy], t: np.ndarray, user: np.ndarray,
                tier: np.ndarray, on_reject=None) -> ChunkFates:
    """The pipeline over a time-sorted chunk; `on_reject(rows, codes)` is told each
    policy's rejections as they are made (the run's counts)."""
    n = len(t)
    keep = np.ones(n, dtype=bool)
    code_all = np.full(n, -1, np.int8)
    retry_after = np.full(n, np.nan)
    for ap in policies:
        if not ap.enabled or not ap.admits:
            continue
        sel = np.flatnonzero(keep & ap.tiers[tier])
        if len(sel) == 0:
            continue
        ok, code, ra = ap.policy.admit_many(t[sel], user[sel], tier[sel])
        bad = sel[~ok]
        keep[bad] = False
        code_all[bad] = code[~ok]
        retry_after[bad] = ra[~ok]
        if on_reject is not None and len(bad):
            on_reject(bad, code[~ok])
    return ChunkFates(code_all, retry_after)


def admit_one(policies: list[ActivePolicy], now: float, user: int, tier: int, decide=None
              ) -> tuple[tuple[ActivePolicy, Decision] | None, list[tuple[ActivePolicy, Decision]]]:
    """The pipeline for one request at `now`: (the policy that rejected it and its decision,
    or None when admitted; every decision it met before that, for response headers).
    `decide(ap, now, user, tier)`: who decides for a policy (default its own `admit`; a
    gateway replica asks its limiter store, sim/live/replica.py)."""
    met: list[tuple[ActivePolicy, Decision]] = []
    for ap in policies:
        if not ap.meets(tier):
            continue
        d = ap.policy.admit(now, user, tier) if decide is None else decide(ap, now, user, tier)
        if not d.ok:
            return (ap, d), met
        met.append((ap, d))
    return None, met
