"""Rate limiters with exact semantics (../shared/reference/policies.md), keyed per user,
per tier or globally. Scalar `admit` is the definition; the vectorised paths must match it."""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

from pydantic import Field

from sim.policies.base import Decision, Params, Policy

EPS = 1e-9


class KeyedParams(Params):
    key: Literal["user", "tier", "global"] = "user"


class Keyed(Policy):
    """A limiter whose state is per user, per tier or one for everyone."""

    shadowable = True

    def _key(self, user: int, tier: int) -> int:
        k = self.params.key
        return user if k == "user" else tier if k == "tier" else 0

    def admit_many(self, t, user, tier):
        ok, code, retry = super().admit_many(t, user, tier)  # admit() in order: the definition
        self.count(tier, ok)
        return ok, code, retry

    def report(self) -> dict:
        return {"key": self.params.key, **self.counts_report()}


class TokenBucketParams(KeyedParams):
    rate: float = Field(ge=1e-9, le=1e9, description="tokens per second")
    burst: float = Field(ge=1, le=1e12, description="bucket capacity")


class TokenBucket(Keyed):
    """Starts full, refills continuously at `rate`, never above `burst`; a request costs 1.
    In any window of length t at most burst + rate*t pass."""

    name = "token_bucket"
    Params = TokenBucketParams

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.state: dict[int, tuple[float, float]] = {}  # key -> (tokens, last time)

    def admit(self, now: float, user: int, tier: int) -> Decision:
        p = self.params
        k = self._key(user, tier)
        tokens, last = self.state.get(k, (p.burst, now))
        tokens = min(p.burst, tokens + (now - last) * p.rate)
        if tokens >= 1.0 - EPS:  # refills are sums of floats: tolerate rounding
            self.state[k] = (max(tokens - 1.0, 0.0), now)
            return Decision(True, limit=int(p.burst), remaining=int(tokens - 1.0))
        self.state[k] = (tokens, now)
        wait = (1.0 - tokens) / p.rate
        return Decision(False, "rate_limited", wait, int(p.burst), 0, (p.burst - tokens) / p.rate)


class GcraParams(KeyedParams):
    count: int = Field(gt=0, le=10**12, description="requests per period")
    period_s: float = Field(ge=1e-6, le=1e10)
    burst: int = Field(0, ge=0, le=10**12, description="extra requests allowed at once")


class Gcra(Keyed):
    """Generic cell rate algorithm as in redis-cell: T = period/count, tau = burst*T; one
    stored time (TAT) per key. Same admissions as a token bucket of rate 1/T, capacity burst+1."""

    name = "gcra"
    Params = GcraParams

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.tat: dict[int, float] = {}

    def admit(self, now: float, user: int, tier: int) -> Decision:
        p = self.params
        T = p.period_s / p.count
        tau = p.burst * T
        k = self._key(user, tier)
        tat = max(self.tat.get(k, now), now)
        allow_at = tat - tau
        limit = p.burst + 1
        if now < allow_at - EPS * max(1.0, T):
            return Decision(False, "rate_limited", allow_at - now, limit, 0, tat - now)
        new = tat + T
        self.tat[k] = new
        # tokens left in the equivalent bucket of capacity burst + 1
        remaining = int(math.floor((now - new + tau + T) / T + 1e-9))
        return Decision(True, limit=limit, remaining=max(0, remaining), reset_after=new - now)


class FixedWindowParams(KeyedParams):
    limit: int = Field(ge=0, le=10**12)
    window_s: float = Field(ge=1e-6, le=1e10, description="aligned to the epoch: 86400 resets at 00:00 UTC")


class FixedWindow(Keyed):
    """A count per epoch-aligned window; allows 2x bursts at the edge."""

    name = "fixed_window"
    Params = FixedWindowParams

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.state: dict[int, tuple[int, int]] = {}

    def admit(self, now: float, user: int, tier: int) -> Decision:
        p = self.params
        k = self._key(user, tier)
        w = int(math.floor((self.epoch + now) / p.window_s))
        win, n = self.state.get(k, (w, 0))
        if win != w:
            n = 0
        reset = (w + 1) * p.window_s - (self.epoch + now)
        if n >= p.limit:
            self.state[k] = (w, n)
            return Decision(False, "rate_limited", reset, p.limit, 0, reset)
        self.state[k] = (w, n + 1)
        return Decision(True, limit=p.limit, remaining=p.limit - n - 1, reset_after=reset)


class SlidingParams(KeyedParams):
    limit: int = Field(ge=0, le=10**12)
    window_s: float = Field(ge=1e-3, le=1e10)


class SlidingLog(Keyed):
    """Pass if fewer than `limit` requests passed in the last window_s seconds."""

    name = "sliding_log"
    Params = SlidingParams

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.log: dict[int, deque] = {}

    def admit(self, now: float, user: int, tier: int) -> Decision:
        p = self.params
        q = self.log.setdefault(self._key(user, tier), deque())
        while q and q[0] <= now - p.window_s:
            q.popleft()
        if len(q) >= p.limit:
            wait = q[0] + p.window_s - now if q else p.window_s
            return Decision(False, "rate_limited", wait, p.limit, 0, wait)
        q.append(now)
        return Decision(True, limit=p.limit, remaining=p.limit - len(q))


class SlidingCounter(Keyed):
    """Estimate = current window's count + previous window's count x the share of it still
    inside the sliding window; pass while the estimate is below the limit."""

    name = "sliding_counter"
    Params = SlidingParams

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.state: dict[int, tuple[int, int, int]] = {}  # key -> (window, current, previous)

    def admit(self, now: float, user: int, tier: int) -> Decision:
        p = self.params
        k = self._key(user, tier)
        x = (self.epoch + now) / p.window_s
        w = int(math.floor(x))
        win, cur, prev = self.state.get(k, (w, 0, 0))
        if w == win + 1:
            prev, cur = cur, 0
        elif w != win:
            prev, cur = 0, 0
        est = cur + prev * (1.0 - (x - w))
        if est >= p.limit:
            self.state[k] = (w, cur, prev)
            wait = (w + 1 - x) * p.window_s
            return Decision(False, "rate_limited", wait, p.limit, 0, wait)
        self.state[k] = (w, cur + 1, prev)
        return Decision(True, limit=p.limit, remaining=max(0, int(p.limit - est - 1)))


LIMITERS = (TokenBucket, Gcra, FixedWindow, SlidingLog, SlidingCounter)
