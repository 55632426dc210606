"""Per-user daily quota: the free tier's "3 images a day"."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from sim.policies.base import ADMIT, REASON_CODE, Decision, Params, Policy

DAY = 86400.0


class DailyQuotaParams(Params):
    limit: int = Field(ge=0, le=10**9, description="images per user per day")
    window: Literal["calendar", "rolling"] = "calendar"


class DailyQuota(Policy):
    """`calendar`: a count per user per UTC day, reset at 00:00 UTC (stampede at reset).
    `rolling`: GCRA with period 24 h, so a limit of 3 gives one image back every 8 h."""

    name = "daily_quota"
    Params = DailyQuotaParams
    shadowable = True

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self._day = np.full(0, -1, dtype=np.int64)  # calendar: day of the count
        self._count = np.zeros(0, dtype=np.int64)
        self._tat = np.zeros(0)  # rolling: theoretical arrival time (GCRA)

    def _grow(self, n: int) -> None:
        if n > len(self._day):
            m = max(n, 2 * len(self._day), 1024)
            self._day = np.concatenate([self._day, np.full(m - len(self._day), -1, np.int64)])
            self._count = np.concatenate([self._count, np.zeros(m - len(self._count), np.int64)])
            self._tat = np.concatenate([self._tat, np.full(m - len(self._tat), -np.inf)])

    def _day_of(self, now):
        return np.floor((self.epoch + now) / DAY).astype(np.int64)

    def admit(self, now: float, user: int, tier: int) -> Decision:
        self._grow(user + 1)
        lim = self.params.limit
        if self.params.window == "rolling":
            T = DAY / lim if lim else np.inf
            tau = (lim - 1) * T if lim else 0.0
            tat = max(self._tat[user], now)
            if lim == 0 or now < tat - tau:
                return Decision(False, "quota_exceeded", float(tat - tau - now) if lim else DAY, lim, 0)
            self._tat[user] = tat + T
            return ADMIT
        day = int(self._day_of(now))
        if self._day[user] != day:
            self._day[user], self._count[user] = day, 0
        if self._count[user] >= lim:
            reset = (day + 1) * DAY - (self.epoch + now)
            return Decision(False, "quota_exceeded", float(reset), lim, 0, float(reset))
        self._count[user] += 1
        return ADMIT

    def report(self) -> dict:
        return {"limit": self.params.limit, "window": self.params.window, **self.counts_report()}

    def admit_many(self, t, user, tier):
        ok, code, retry = self._admit_many(t, user, tier)
        self.count(tier, ok)
        return ok, code, retry

    def _admit_many(self, t, user, tier):
        if self.params.window == "rolling" or len(t) == 0:
            return super().admit_many(t, user, tier)
        # Calendar window, vectorised: within each (user, day) group the k-th request passes
        # while count_before + k < limit; this is exactly what admit() in order gives.
        self._grow(int(user.max()) + 1)
        day = self._day_of(t)
        order = np.lexsort((np.arange(len(t)), day, user))
        u, d = user[order], day[order]
        start = np.ones(len(t), dtype=bool)
        start[1:] = (u[1:] != u[:-1]) | (d[1:] != d[:-1])
        gidx = np.cumsum(start) - 1
        first = np.flatnonzero(start)
        rank = np.arange(len(t)) - first[gidx]
        before = np.where(self._day[u] == d, self._count[u], 0)
        ok_sorted = before + rank < self.params.limit
        # Write back the end-of-chunk state for each (user, day), later days last.
        last = np.append(first[1:] - 1, len(t) - 1)
        admitted = np.minimum(before[first] + (last - first + 1), np.maximum(before[first], self.params.limit))
        self._day[u[first]] = d[first]
        self._count[u[first]] = admitted
        ok = np.empty(len(t), dtype=bool)
        ok[order] = ok_sorted
        code = np.where(ok, -1, REASON_CODE["quota_exceeded"]).astype(np.int8)
        reset = (day + 1) * DAY - (self.epoch + t)
        retry = np.where(ok, np.nan, reset)
        return ok, code, retry
