"""What every admission policy is: a plain object, the clock passed in, no SimPy inside.

The simulator and the live gateway call the same objects. `admit` decides one request;
`admit_many` decides a time-sorted chunk and must give exactly what calling `admit` in order
would (policies override it with a vectorised version where that pays).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numba import njit
from pydantic import BaseModel, ConfigDict

from sim.errors import did_you_mean
from sim.outcomes import REASON_CODE, REASONS  # noqa: F401 (the reasons' one definition)


class Params(BaseModel):
    """Parameters of a policy as written in a scenario; unknown keys are errors."""

    # strict like the scenario (sim/scenario.py): no bool for a number, no inf or NaN
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


@dataclass
class Decision:
    ok: bool
    reason: str | None = None
    retry_after: float | None = None  # seconds until the request would pass, when known
    limit: int | None = None
    remaining: int | None = None
    reset_after: float | None = None
    lease_id: str | None = None  # a concurrency lease from a limiter store (sim/live/store.py)


ADMIT = Decision(True)


@njit(cache=True, nogil=True)
def _count(tier, ok, checked, blocked):  # pragma: no cover - compiled
    # Policy.count in one pass: np.bincount(tier) and np.bincount(tier[~ok]), cut at K
    K = len(checked)
    for i in range(len(tier)):
        k = tier[i]
        if 0 <= k < K:
            checked[k] += 1
            if not ok[i]:
                blocked[k] += 1


class Policy:
    """Base admission policy: admits everything. Subclasses set `name` and `Params`."""

    name: ClassVar[str] = "none"
    Params: ClassVar[type[Params]] = Params
    # Where it acts, the same in simulator and gateway: "admission" (admit/admit_many before
    # the queue, in scenario order), "gate" (sets the fleet loop's gates through
    # host.gates: concurrency, shedding, CoDel), "degrade" (lowers the steps of admitted
    # requests, through the brownout gate), "dynamics" (changes the fleet over time: GPUs, speed).
    stage: ClassVar[str] = "admission"
    # True when admit/admit_many decide before the queue, so `shadow` can dark-launch it
    shadowable: ClassVar[bool] = False

    def __init__(self, params: Params, tiers: list[str], epoch: float = 0.0):
        self.params = params
        self.tiers = tiers
        self.epoch = epoch  # unix time of t = 0, for calendar windows (UTC days)

    def admit(self, now: float, user: int, tier: int) -> Decision:
        return ADMIT

    def admit_many(
        self, t: np.ndarray, user: np.ndarray, tier: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ok mask, reason code or -1, retry_after or nan) for a time-sorted chunk."""
        n = len(t)
        ok = np.ones(n, dtype=bool)
        code = np.full(n, -1, dtype=np.int8)
        retry = np.full(n, np.nan)
        for i in range(n):
            d = self.admit(float(t[i]), int(user[i]), int(tier[i]))
            if not d.ok:
                ok[i] = False
                code[i] = REASON_CODE[d.reason]
                if d.retry_after is not None:
                    retry[i] = d.retry_after
        return ok, code, retry

    def attach(self, run, env, active) -> None:
        """Hook into a host at its start: the simulator's Run or the gateway's LiveFleet,
        both with `gates` (sim/fleet/gates.py), `sync(now)`, `sc`, `pools`; `env` is the
        host's SimPy environment (stepped on the wall clock live), for processes such as an
        autoscaler. `active` is the engine's ActivePolicy (enabled flag, tier mask)."""

    def refresh(self, run, active) -> None:
        """Re-apply gate settings after a schedule switched the policy on or off or gave it
        new parameters."""

    def report(self) -> dict:
        """Figures for summary.json's `policies` section (what the policy did)."""
        return {}

    @classmethod
    def check_tiers(cls, params: Params, tiers: list[str]) -> tuple[str, str] | None:
        """(field, message) when the parameters name a tier that does not exist."""
        return None

    # -- per-tier counts of what an admission policy decided (simulator path) --

    def count(self, tier: np.ndarray, ok: np.ndarray) -> None:
        """Each request checked in its tier, and blocked where not ok (tiers past the
        policy's own are not counted)."""
        K = len(self.tiers)
        if not hasattr(self, "_checked"):
            self._checked = np.zeros(K, np.int64)
            self._blocked = np.zeros(K, np.int64)
        _count(np.asarray(tier), np.asarray(ok, np.bool_), self._checked, self._blocked)

    # Reports give whole-service counts: summarize sets `scale` = 1 / cell_fraction.
    scale: float = 1.0

    def n(self, v) -> int:
        """A count of the simulated cell, scaled to the whole service."""
        return int(round(float(v) * self.scale))

    def counts_report(self) -> dict:
        if not hasattr(self, "_checked"):
            return {}
        return {
            "checked": {t: self.n(self._checked[k]) for k, t in enumerate(self.tiers) if self._checked[k]},
            "blocked": {t: self.n(self._blocked[k]) for k, t in enumerate(self.tiers) if self._checked[k]},
            "blocked_share": {t: round(float(self._blocked[k] / self._checked[k]), 6)
                              for k, t in enumerate(self.tiers) if self._checked[k]},
        }

    def reconfigure(self, params: Params) -> None:
        """New parameters from a schedule; state (counters, buckets) is kept."""
        self.params = params


# ---- helpers shared by the policy modules ----


def pass_all(n: int):
    """admit_many that lets everything through (shadow: it only counts)."""
    return np.ones(n, bool), np.full(n, -1, np.int8), np.full(n, np.nan)


def by_tier(pol: Policy, mask, values) -> dict:
    return {t: pol.n(values[k]) for k, t in enumerate(pol.tiers) if mask is None or mask[k]}


def unknown_tier(maps: dict[str, Any], tiers: list[str]) -> tuple[str, str] | None:
    for field, m in maps.items():
        if isinstance(m, dict):
            for t in m:
                if t not in tiers:
                    return field, f"unknown tier {t!r}{did_you_mean(t, tiers) or ';'} tiers: {', '.join(tiers)}"
    return None
