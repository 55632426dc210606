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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

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
    # gateway.limiter_state per_replica: one object per gateway replica, replicas[0] is
    # `policy` (empty: one state for all)
    replicas: list = field(default_factory=list)

    def each(self) -> list:
        """The policy object of every replica (one with shared state)."""
        return self.replicas or [self.policy]
    fired: list = field(default_factory=list)  # triggers that fired: when and why (triggers.py)

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
    g = sc.gateway
    for i, spec in enumerate(sc.policies):
        cls = REGISTRY[spec.policy]

        def make(cls=cls, spec=spec):
            return cls(cls.Params.model_validate(spec.params()), names, sc.epoch)

        pol = make()
        mask = np.array([spec.tiers is None or n in spec.tiers for n in names])
        ap = ActivePolicy(i, pol, mask, spec.enabled)
        if g.limiter_state == "per_replica" and g.replicas > 1 and pol.stage == "admission":
            ap.replicas = [pol] + [make() for _ in range(g.replicas - 1)]
        out.append(ap)
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


def _per_replica(pols: list, rep: np.ndarray, t, user, tier):
    """admit_many of per-replica limiters: each replica's own object decides the requests
    that reach it (in time order), as N gateways with local state do."""
    n = len(t)
    ok, code, ra = np.ones(n, bool), np.full(n, -1, np.int8), np.full(n, np.nan)
    for j, pol in enumerate(pols):
        s = np.flatnonzero(rep == j)
        if len(s):
            ok[s], code[s], ra[s] = pol.admit_many(t[s], user[s], tier[s])
    return ok, code, ra


@njit(cache=True, nogil=True)
def _select(keep, mask, tier):  # pragma: no cover - compiled
    # flatnonzero(keep & mask[tier]): the rows still in that the policy's tiers hold
    out = np.empty(len(tier), np.int64)
    n = 0
    for i in range(len(tier)):
        if keep[i] and mask[tier[i]]:
            out[n] = i
            n += 1
    return out[:n]


@njit(cache=True, nogil=True)
def _reject(sel, ok, code, ra, keep, code_all, retry_after):  # pragma: no cover - compiled
    # the rows sel[~ok] out, with their codes and retry-afters; returns them and their codes
    m = 0
    for j in range(len(ok)):
        if not ok[j]:
            m += 1
    bad = np.empty(m, np.int64)
    bcode = np.empty(m, code.dtype)
    m = 0
    for j in range(len(ok)):
        if not ok[j]:
            r = sel[j]
            keep[r] = False
            code_all[r] = code[j]
            retry_after[r] = ra[j]
            bad[m] = r
            bcode[m] = code[j]
            m += 1
    return bad, bcode


def admit_chunk(policies: list[ActivePolicy], t: np.ndarray, user: np.ndarray,
                tier: np.ndarray, on_reject=None, replica: np.ndarray | None = None) -> ChunkFates:
    """The pipeline over a time-sorted chunk; `on_reject(rows, codes)` is told each
    policy's rejections as they are made (the run's counts). `replica`: the gateway
    replica of each request, for policies with per-replica state (`ActivePolicy.replicas`)."""
    n = len(t)
    keep = np.ones(n, dtype=bool)
    code_all = np.full(n, -1, np.int8)
    retry_after = np.full(n, np.nan)
    for ap in policies:
        if not ap.enabled or not ap.admits:
            continue
        sel = _select(keep, np.ascontiguousarray(ap.tiers, dtype=np.bool_),
                      np.ascontiguousarray(tier, dtype=np.int64))
        if len(sel) == 0:
            continue
        whole = len(sel) == n  # every row: no gathers
        ts, us, rs = (t, user, tier) if whole else (t[sel], user[sel], tier[sel])
        if ap.replicas:
            ok, code, ra = _per_replica(ap.replicas, replica[sel], ts, us, rs)
        else:
            ok, code, ra = ap.policy.admit_many(ts, us, rs)
        del ts, us, rs
        bad, bcode = _reject(sel, np.ascontiguousarray(ok, dtype=np.bool_), np.asarray(code),
                             np.asarray(ra, dtype=np.float64), keep, code_all, retry_after)
        if on_reject is not None and len(bad):
            on_reject(bad, bcode)
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
