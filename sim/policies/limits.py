"""Rate limiters with exact semantics (../shared/reference/policies.md), keyed per user,
per tier or globally. Scalar `admit` is the definition; `admit_many` runs a compiled loop over
the same key-indexed state arrays and must match it (tests/test_policies.py).

State lives in arrays indexed by key (the user id, the tier, or 0), grown as keys appear, so
a chunk of requests is decided in one compiled pass, as fast as the daily quota's."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numba import njit
from pydantic import Field

from sim.demand.base import grown
from sim.policies.base import REASON_CODE, Decision, Params, Policy
from sim.units import PosDuration

EPS = 1e-9
NO_WINDOW = -(2**62)  # a key that has never been seen (window counters)
RATE_LIMITED = REASON_CODE["rate_limited"]


class KeyedParams(Params):
    key: Literal["user", "tier", "global"] = "user"


class Keyed(Policy):
    """A limiter whose state is per user, per tier or one for everyone."""

    shadowable = True

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self._nkeys = 0  # keys with state
        self._init_state()

    def _init_state(self) -> None:
        raise NotImplementedError

    def _grow_state(self, n: int) -> None:
        raise NotImplementedError

    def _key(self, user: int, tier: int) -> int:
        k = self.params.key
        key = user if k == "user" else tier if k == "tier" else 0
        if key >= self._nkeys:
            self._grow_state(key + 1)
        return key

    def _keys(self, user: np.ndarray, tier: np.ndarray) -> np.ndarray:
        k = self.params.key
        key = user if k == "user" else tier if k == "tier" else np.zeros(len(user), np.int64)
        key = np.ascontiguousarray(key, dtype=np.int64)
        if len(key):
            m = int(key.max()) + 1
            if m > self._nkeys:
                self._grow_state(m)
        return key

    def _run(self, t, key, ok, retry) -> None:
        raise NotImplementedError

    def admit_many(self, t, user, tier):
        n = len(t)
        ok = np.ones(n, dtype=bool)
        retry = np.full(n, np.nan)
        if n:
            self._run(np.ascontiguousarray(t, dtype=np.float64), self._keys(user, tier), ok, retry)
        code = np.where(ok, -1, RATE_LIMITED).astype(np.int8)
        self.count(tier, ok)
        return ok, code, retry

    def report(self) -> dict:
        return {"key": self.params.key, **self.counts_report()}


class TokenBucketParams(KeyedParams):
    rate: float = Field(ge=1e-9, le=1e9, description="tokens per second")
    burst: float = Field(ge=1, le=1e12, description="bucket capacity")


@njit(cache=True, nogil=True)
def _token_bucket(t, key, rate, burst, tokens_a, last_a, ok, retry):  # pragma: no cover
    for i in range(len(t)):
        k, now = key[i], t[i]
        if math.isnan(last_a[k]):
            tokens, last = burst, now
        else:
            tokens, last = tokens_a[k], last_a[k]
        tokens = min(burst, tokens + (now - last) * rate)
        last_a[k] = now
        if tokens >= 1.0 - EPS:
            tokens_a[k] = max(tokens - 1.0, 0.0)
        else:
            tokens_a[k] = tokens
            ok[i] = False
            retry[i] = (1.0 - tokens) / rate


class TokenBucket(Keyed):
    """Starts full, refills continuously at `rate`, never above `burst`; a request costs 1.
    In any window of length t at most burst + rate*t pass."""

    name = "token_bucket"
    Params = TokenBucketParams

    def _init_state(self) -> None:
        self.tokens = np.zeros(0)
        self.last = np.zeros(0)  # NaN: a key never seen (its bucket starts full)

    def _grow_state(self, n: int) -> None:
        self.tokens = grown(self.tokens, n, 0.0)
        self.last = grown(self.last, n, np.nan)
        self._nkeys = len(self.last)

    def admit(self, now: float, user: int, tier: int) -> Decision:
        p = self.params
        k = self._key(user, tier)
        last = float(self.last[k])
        tokens, last = (p.burst, now) if math.isnan(last) else (float(self.tokens[k]), last)
        tokens = min(p.burst, tokens + (now - last) * p.rate)
        self.last[k] = now
        if tokens >= 1.0 - EPS:  # refills are sums of floats: tolerate rounding
            self.tokens[k] = max(tokens - 1.0, 0.0)
            return Decision(True, limit=int(p.burst), remaining=int(tokens - 1.0))
        self.tokens[k] = tokens
        wait = (1.0 - tokens) / p.rate
        return Decision(False, "rate_limited", wait, int(p.burst), 0, (p.burst - tokens) / p.rate)

    def _run(self, t, key, ok, retry) -> None:
        p = self.params
        _token_bucket(t, key, float(p.rate), float(p.burst), self.tokens, self.last, ok, retry)


class GcraParams(KeyedParams):
    count: int = Field(gt=0, le=10**12, description="requests per period")
    period_s: PosDuration
    burst: int = Field(0, ge=0, le=10**12, description="extra requests allowed at once")


@njit(cache=True, nogil=True)
def _gcra(t, key, T, tau, tat_a, ok, retry):  # pragma: no cover - compiled
    for i in range(len(t)):
        k, now = key[i], t[i]
        tat = max(tat_a[k], now)
        allow_at = tat - tau
        if now < allow_at - EPS * max(1.0, T):
            ok[i] = False
            retry[i] = allow_at - now
        else:
            tat_a[k] = tat + T


class Gcra(Keyed):
    """Generic cell rate algorithm as in redis-cell: T = period/count, tau = burst*T; one
    stored time (TAT) per key. Same admissions as a token bucket of rate 1/T, capacity burst+1."""

    name = "gcra"
    Params = GcraParams

    def _init_state(self) -> None:
        self.tat = np.zeros(0)  # -inf: never seen (the TAT is then now)

    def _grow_state(self, n: int) -> None:
        self.tat = grown(self.tat, n, -np.inf)
        self._nkeys = len(self.tat)

    def admit(self, now: float, user: int, tier: int) -> Decision:
        p = self.params
        T = p.period_s / p.count
        tau = p.burst * T
        k = self._key(user, tier)
        tat = max(float(self.tat[k]), now)
        allow_at = tat - tau
        limit = p.burst + 1
        if now < allow_at - EPS * max(1.0, T):
            return Decision(False, "rate_limited", allow_at - now, limit, 0, tat - now)
        new = tat + T
        self.tat[k] = new
        # tokens left in the equivalent bucket of capacity burst + 1
        remaining = int(math.floor((now - new + tau + T) / T + 1e-9))
        return Decision(True, limit=limit, remaining=max(0, remaining), reset_after=new - now)

    def _run(self, t, key, ok, retry) -> None:
        p = self.params
        T = p.period_s / p.count
        _gcra(t, key, T, p.burst * T, self.tat, ok, retry)


class FixedWindowParams(KeyedParams):
    limit: int = Field(ge=0, le=10**12)
    window_s: PosDuration = Field(description="aligned to the epoch: 86400 resets at 00:00 UTC")


@njit(cache=True, nogil=True)
def _fixed_window(t, key, epoch, window_s, limit, win_a, n_a, ok, retry):  # pragma: no cover
    for i in range(len(t)):
        k, now = key[i], t[i]
        w = np.int64(math.floor((epoch + now) / window_s))
        n = n_a[k] if win_a[k] == w else 0
        win_a[k] = w
        if n >= limit:
            n_a[k] = n
            ok[i] = False
            retry[i] = (w + 1) * window_s - (epoch + now)
        else:
            n_a[k] = n + 1


class FixedWindow(Keyed):
    """A count per epoch-aligned window; allows 2x bursts at the edge."""

    name = "fixed_window"
    Params = FixedWindowParams

    def _init_state(self) -> None:
        self.win = np.zeros(0, np.int64)
        self.cnt = np.zeros(0, np.int64)

    def _grow_state(self, n: int) -> None:
        self.win = grown(self.win, n, NO_WINDOW)
        self.cnt = grown(self.cnt, n, 0)
        self._nkeys = len(self.win)

    def admit(self, now: float, user: int, tier: int) -> Decision:
        p = self.params
        k = self._key(user, tier)
        w = int(math.floor((self.epoch + now) / p.window_s))
        n = int(self.cnt[k]) if int(self.win[k]) == w else 0
        self.win[k] = w
        reset = (w + 1) * p.window_s - (self.epoch + now)
        if n >= p.limit:
            self.cnt[k] = n
            return Decision(False, "rate_limited", reset, p.limit, 0, reset)
        self.cnt[k] = n + 1
        return Decision(True, limit=p.limit, remaining=p.limit - n - 1, reset_after=reset)

    def _run(self, t, key, ok, retry) -> None:
        p = self.params
        _fixed_window(t, key, float(self.epoch), float(p.window_s), p.limit, self.win, self.cnt, ok, retry)


class SlidingParams(KeyedParams):
    limit: int = Field(ge=0, le=10**12)
    window_s: PosDuration = Field(ge=1e-3)


@njit(cache=True, nogil=True)
def _sliding_log(t, key, window_s, limit, q, head, size, ok, retry):  # pragma: no cover
    cap = q.shape[1]
    for i in range(len(t)):
        k, now = key[i], t[i]
        while size[k] > 0 and q[k, head[k]] <= now - window_s:
            head[k] = (head[k] + 1) % cap
            size[k] -= 1
        if size[k] >= limit:
            ok[i] = False
            retry[i] = q[k, head[k]] + window_s - now if size[k] > 0 else window_s
        else:
            q[k, (head[k] + size[k]) % cap] = now
            size[k] += 1


class SlidingLog(Keyed):
    """Pass if fewer than `limit` requests passed in the last window_s seconds. Each key keeps
    the times that passed within the window, at most `limit` of them (a ring per key)."""

    name = "sliding_log"
    Params = SlidingParams

    def _init_state(self) -> None:
        self.q = np.zeros((0, max(self.params.limit, 1)))
        self.head = np.zeros(0, np.int64)
        self.size = np.zeros(0, np.int64)

    def _grow_state(self, n: int) -> None:
        self.head = grown(self.head, n, 0)
        self.size = grown(self.size, n, 0)
        if len(self.head) > len(self.q):
            q = np.zeros((len(self.head), self.q.shape[1]))
            q[: len(self.q)] = self.q
            self.q = q
        self._nkeys = len(self.head)

    def reconfigure(self, params) -> None:
        super().reconfigure(params)
        cap = self.q.shape[1]
        if params.limit > cap:  # a wider ring, each key's times unrolled to start at 0
            q = np.zeros((len(self.q), params.limit))
            for k in range(len(self.q)):
                idx = (self.head[k] + np.arange(self.size[k])) % cap
                q[k, : self.size[k]] = self.q[k, idx]
            self.q, self.head[:] = q, 0

    def admit(self, now: float, user: int, tier: int) -> Decision:
        p = self.params
        k = self._key(user, tier)
        cap = self.q.shape[1]
        while self.size[k] > 0 and self.q[k, self.head[k]] <= now - p.window_s:
            self.head[k] = (self.head[k] + 1) % cap
            self.size[k] -= 1
        n = int(self.size[k])
        if n >= p.limit:
            wait = float(self.q[k, self.head[k]]) + p.window_s - now if n else p.window_s
            return Decision(False, "rate_limited", wait, p.limit, 0, wait)
        self.q[k, (self.head[k] + n) % cap] = now
        self.size[k] = n + 1
        return Decision(True, limit=p.limit, remaining=p.limit - n - 1)

    def _run(self, t, key, ok, retry) -> None:
        p = self.params
        _sliding_log(t, key, float(p.window_s), p.limit, self.q, self.head, self.size, ok, retry)


@njit(cache=True, nogil=True)
def _sliding_counter(t, key, epoch, window_s, limit, win_a, cur_a, prev_a, ok, retry):  # pragma: no cover
    for i in range(len(t)):
        k, now = key[i], t[i]
        x = (epoch + now) / window_s
        w = np.int64(math.floor(x))
        win, cur, prev = win_a[k], cur_a[k], prev_a[k]
        if win == NO_WINDOW:
            win, cur, prev = w, 0, 0
        if w == win + 1:
            prev, cur = cur, 0
        elif w != win:
            prev, cur = 0, 0
        est = cur + prev * (1.0 - (x - w))
        win_a[k], prev_a[k] = w, prev
        if est >= limit:
            cur_a[k] = cur
            ok[i] = False
            retry[i] = (w + 1 - x) * window_s
        else:
            cur_a[k] = cur + 1


class SlidingCounter(Keyed):
    """Estimate = current window's count + previous window's count x the share of it still
    inside the sliding window; pass while the estimate is below the limit."""

    name = "sliding_counter"
    Params = SlidingParams

    def _init_state(self) -> None:
        self.win = np.zeros(0, np.int64)
        self.cur = np.zeros(0, np.int64)
        self.prev = np.zeros(0, np.int64)

    def _grow_state(self, n: int) -> None:
        self.win = grown(self.win, n, NO_WINDOW)
        self.cur = grown(self.cur, n, 0)
        self.prev = grown(self.prev, n, 0)
        self._nkeys = len(self.win)

    def admit(self, now: float, user: int, tier: int) -> Decision:
        p = self.params
        k = self._key(user, tier)
        x = (self.epoch + now) / p.window_s
        w = int(math.floor(x))
        win, cur, prev = int(self.win[k]), int(self.cur[k]), int(self.prev[k])
        if win == NO_WINDOW:
            win, cur, prev = w, 0, 0
        if w == win + 1:
            prev, cur = cur, 0
        elif w != win:
            prev, cur = 0, 0
        est = cur + prev * (1.0 - (x - w))
        self.win[k], self.prev[k] = w, prev
        if est >= p.limit:
            self.cur[k] = cur
            wait = (w + 1 - x) * p.window_s
            return Decision(False, "rate_limited", wait, p.limit, 0, wait)
        self.cur[k] = cur + 1
        return Decision(True, limit=p.limit, remaining=max(0, int(p.limit - est - 1)))

    def _run(self, t, key, ok, retry) -> None:
        p = self.params
        _sliding_counter(t, key, float(self.epoch), float(p.window_s), p.limit, self.win, self.cur,
                         self.prev, ok, retry)


LIMITERS = (TokenBucket, Gcra, FixedWindow, SlidingLog, SlidingCounter)
