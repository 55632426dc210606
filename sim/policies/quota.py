"""Per-user daily quota: the free tier's "3 images a day"."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numba import njit
from pydantic import Field

from sim.demand.base import grown
from sim.policies.base import ADMIT, REASON_CODE, Decision, Params, Policy
from sim.policies.limits import EPS

DAY = 86400.0
QUOTA = REASON_CODE["quota_exceeded"]


class DailyQuotaParams(Params):
    limit: int = Field(ge=0, le=10**9, description="images per user per day")
    window: Literal["calendar", "rolling"] = "calendar"


NO_DAY = -(2**15)  # int16: a user without a count
SPAN = 2**15 - 1  # days either side of the epoch's UTC day that an int16 holds (~89 years)


class _AbsoluteDays:
    """`_day[user]`: the UTC day (since 1970) of a user's count, -1 for none (as the live
    gateway reads it); stored as int16 days from the epoch's day."""

    def __init__(self, q: DailyQuota):
        self.q = q

    def __getitem__(self, user: int) -> int:
        v = int(self.q._dday[user])
        return -1 if v == NO_DAY else v + self.q._day0


@njit(cache=True, nogil=True)
def wait_until(now, at):  # pragma: no cover - compiled
    """The smallest wait w >= at - now with now + w >= at in float arithmetic: a retry made
    at now + w (what the client computes) is not before `at`. at - now alone can round so
    that now + (at - now) < at."""
    w = at - now
    while now + w < at:
        w = np.nextafter(w, np.inf)
    return w


@njit(cache=True, nogil=True)
def until_reset(epoch, now):  # pragma: no cover - compiled
    """Seconds from `now` (since t = 0) to the next 00:00 UTC, so that a retry at
    now + wait lands on or after the reset on both clocks: the run's (t = reset - epoch: its
    series bucket is the new day's) and the quota's (epoch + t counts in the new day).
    (day + 1) * DAY - (epoch + now) alone lands up to an ulp of epoch + now (~0.2 us for
    2025) before midnight, where the same quota rejects it again."""
    x = epoch + now
    reset = (np.floor(x / DAY) + 1.0) * DAY
    w = wait_until(now, reset - epoch)
    while epoch + (now + w) < reset:
        w = np.nextafter(w, np.inf)
    return w


@njit(cache=True, nogil=True)
def _calendar(t, user, epoch, day0, lim, day_a, count_a, ok, retry):  # pragma: no cover - compiled
    # admit() in order, one request at a time: the definition, compiled
    for i in range(len(t)):
        u = user[i]
        x = epoch + t[i]
        d = np.floor(x / DAY)
        rel = d - day0
        if day_a[u] != rel:
            day_a[u] = rel
            count_a[u] = 0
        if count_a[u] >= lim:
            ok[i] = False
            retry[i] = until_reset(epoch, t[i])
        else:
            count_a[u] += 1


@njit(cache=True, nogil=True)
def _rolling(t, user, lim, tat_a, ok, retry):  # pragma: no cover - compiled
    T = DAY / lim if lim else np.inf
    tau = (lim - 1) * T if lim else 0.0
    for i in range(len(t)):
        u, now = user[i], t[i]
        tat = max(tat_a[u], now)
        if lim == 0 or now < tat - tau - EPS * T:
            ok[i] = False
            retry[i] = wait_until(now, tat - tau) if lim else DAY
        else:
            tat_a[u] = tat + T


class DailyQuota(Policy):
    """`calendar`: a count per user per UTC day, reset at 00:00 UTC (stampede at reset).
    `rolling`: GCRA with period 24 h, so a limit of 3 gives one image back every 8 h.

    State is per user in the narrowest dtypes that hold it (the whole service has ~130M
    users): the UTC day of the count (int16, days from the epoch's) and the count (a byte
    while the limit fits), side by side in one aligned 4-byte record: a request's lookup is
    one cache miss, not two (two arrays cost ~2x per request at full scale)."""

    name = "daily_quota"
    Params = DailyQuotaParams
    shadowable = True

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self._day0 = int(np.floor(epoch / DAY))
        # calendar: per user, the UTC day of the count and the count (_dday, _count: views)
        self._set_rec(np.zeros(0, self._rec_dtype(params.limit)))
        self._tat = np.zeros(0)  # rolling: theoretical arrival time (GCRA)
        self._users = 0  # the host's users, once attached

    @staticmethod
    def _count_dtype(limit: int):
        return np.uint8 if limit < 255 else np.int64

    @classmethod
    def _rec_dtype(cls, limit: int) -> np.dtype:
        return np.dtype([("day", np.int16), ("count", cls._count_dtype(limit))], align=True)

    def _set_rec(self, rec: np.ndarray) -> None:
        # _dday and _count: the records' fields (views, kept: a gateway admits one at a time)
        self._rec, self._dday, self._count = rec, rec["day"], rec["count"]

    def reconfigure(self, params) -> None:
        super().reconfigure(params)
        dt = self._rec_dtype(params.limit)
        if dt["count"].itemsize > self._rec.dtype["count"].itemsize:
            rec = np.empty(len(self._rec), dt)
            rec["day"], rec["count"] = self._rec["day"], self._rec["count"]
            self._set_rec(rec)

    def attach(self, run, env, active) -> None:
        # the host's users (gates.users: the demand's users in the cell, or the gateway's
        # key table): the per-user arrays are made that size at once when first needed, not
        # grown a quarter at a time (at full scale each growth copies ~400 MB)
        self._users = int(getattr(getattr(run, "gates", None), "users", 0) or 0)

    def _grow(self, n: int) -> None:
        if n > len(self._dday if self.params.window == "calendar" else self._tat):
            n = max(n, self._users)
        if self.params.window == "rolling":
            self._tat = grown(self._tat, n, -np.inf)
        else:
            self._set_rec(grown(self._rec, n, (NO_DAY, 0)))

    @property
    def _day(self) -> _AbsoluteDays:
        return _AbsoluteDays(self)

    def _day_of(self, now):
        return np.floor((self.epoch + now) / DAY).astype(np.int64)

    def _check_span(self, t0: float, t1: float) -> None:
        for x in (t0, t1):
            if abs(int(self._day_of(x)) - self._day0) > SPAN:
                raise ValueError(f"daily_quota: t = {x} is more than {SPAN} days from the epoch")

    def admit(self, now: float, user: int, tier: int) -> Decision:
        self._grow(user + 1)
        lim = self.params.limit
        if self.params.window == "rolling":
            T = DAY / lim if lim else np.inf
            tau = (lim - 1) * T if lim else 0.0
            tat = max(self._tat[user], now)
            # tat is a sum of floats: tolerate its rounding, as Gcra does, or the limit-th
            # request at one instant can be refused
            if lim == 0 or now < tat - tau - EPS * T:
                return Decision(False, "quota_exceeded", float(wait_until(now, tat - tau)) if lim else DAY,
                                lim, 0)
            self._tat[user] = tat + T
            return ADMIT
        day = int(self._day_of(now))
        self._check_span(now, now)
        if int(self._dday[user]) != day - self._day0:
            self._dday[user], self._count[user] = day - self._day0, 0
        if self._count[user] >= lim:
            reset = until_reset(float(self.epoch), float(now))
            return Decision(False, "quota_exceeded", float(reset), lim, 0, float(reset))
        self._count[user] += 1
        return ADMIT

    def left(self, user: int, now: float) -> Decision | None:
        """What a calendar quota leaves a user at `now` (limit, remaining, reset), for the
        RateLimit headers of an admitted request; None for rolling (a GCRA keeps no count)."""
        if self.params.window != "calendar":
            return None
        day = math.floor((self.epoch + now) / DAY)
        used = int(self._count[user]) if user < len(self._dday) and self._day[user] == day else 0
        reset = float(until_reset(float(self.epoch), float(now)))
        return Decision(True, limit=self.params.limit, remaining=max(0, self.params.limit - used),
                        reset_after=reset)

    def report(self) -> dict:
        return {"limit": self.params.limit, "window": self.params.window, **self.counts_report()}

    def admit_many(self, t, user, tier):
        ok, code, retry = self._admit_many(t, user, tier)
        self.count(tier, ok)
        return ok, code, retry

    def _admit_many(self, t, user, tier):
        n = len(t)
        ok = np.ones(n, dtype=bool)
        retry = np.full(n, np.nan)
        if n:
            self._grow(int(user.max()) + 1)
            t = np.ascontiguousarray(t, dtype=np.float64)
            if self.params.window == "rolling":
                _rolling(t, user, self.params.limit, self._tat, ok, retry)
            else:
                self._check_span(float(t[0]), float(t[-1]))
                _calendar(t, user, float(self.epoch), float(self._day0), self.params.limit, self._dday,
                          self._count, ok, retry)
        code = np.where(ok, -1, QUOTA).astype(np.int8)
        return ok, code, retry
