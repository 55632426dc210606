"""Arrivals and the non-homogeneous Poisson sampler every demand model shares."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _digit_pass(k, idx, k2, i2, cnt, shift, mask):  # pragma: no cover - compiled
    # One stable counting-sort pass of (k, idx) into (k2, i2) on the 11-bit digit
    # (k >> shift) & mask: the step both radix sorts below repeat.
    cnt[:] = 0
    for i in range(len(k)):
        cnt[(k[i] >> shift) & mask] += 1
    tot = 0
    for d in range(len(cnt)):
        c = cnt[d]
        cnt[d] = tot
        tot += c
    for i in range(len(k)):
        d = (k[i] >> shift) & mask
        j = cnt[d]
        cnt[d] = j + 1
        k2[j] = k[i]
        i2[j] = idx[i]


@njit(cache=True, nogil=True)
def _radix_argsort(key):  # pragma: no cover - compiled
    # LSD radix sort on 11-bit digits of uint64 keys, only over the bits that vary: stable
    n = len(key)
    v = np.uint64(0)
    for i in range(n):
        v |= key[i] ^ key[0]
    bits = 0
    while v:
        v >>= np.uint64(1)
        bits += 1
    idx = np.arange(n)
    if bits == 0:
        return idx
    k = key.copy()
    k2 = np.empty_like(k)
    i2 = np.empty_like(idx)
    cnt = np.empty(2048, np.int64)
    shift = 0
    while shift < bits:
        _digit_pass(k, idx, k2, i2, cnt, np.uint64(shift), np.uint64(2047))
        k, k2 = k2, k
        idx, i2 = i2, idx
        shift += 11
    return idx


@njit(cache=True, nogil=True)
def _quantized_argsort(t, lo, scale):  # pragma: no cover - compiled
    # Stable radix sort on a 22-bit quantisation of t (monotone in t: equal times share a
    # key), then a stable insertion pass on the exact times, which only moves neighbours
    # within a quantum. Gives up (ok False) if that pass does too much work.
    n = len(t)
    q = np.empty(n, np.uint32)
    top = np.uint32((1 << 22) - 1)
    for i in range(n):
        q[i] = min(np.uint32((t[i] - lo) * scale), top)
    idx = np.arange(n)
    i2 = np.empty_like(idx)
    q2 = np.empty_like(q)
    cnt = np.empty(2048, np.int64)
    for shift in (0, 11):
        _digit_pass(q, idx, q2, i2, cnt, np.uint32(shift), np.uint32(2047))
        q, q2 = q2, q
        idx, i2 = i2, idx
    moves = 0
    for i in range(1, n):
        v = idx[i]
        tv = t[v]
        j = i
        while j > 0 and t[idx[j - 1]] > tv:
            idx[j] = idx[j - 1]
            j -= 1
        moves += i - j
        idx[j] = v
        if moves > 8 * n:
            return idx, False
    return idx, True


def stable_argsort(t: np.ndarray) -> np.ndarray:
    """np.argsort(t, kind="stable") for float64 times without NaN, in O(n): numpy's timsort
    when t is a few sorted runs, else a radix sort (on a quantisation of the times, fixed up
    by an insertion pass; on the order-preserving integer image of each float when that does
    not pay: infinities, tight clusters). Every path gives the same permutation."""
    t = np.ascontiguousarray(t, dtype=np.float64)
    if len(t) < 256 or np.count_nonzero(t[1:] < t[:-1]) < 16:
        return np.argsort(t, kind="stable")  # a few sorted runs: timsort merges them in O(n)
    lo, hi = float(t.min()), float(t.max())
    if np.isfinite(hi - lo) and hi > lo:
        idx, ok = _quantized_argsort(t, lo, ((1 << 22) - 1) / (hi - lo))
        if ok:
            return idx
    u = (t + 0.0).view(np.uint64)
    neg = (u >> np.uint64(63)).astype(bool)
    key = np.where(neg, ~u, u | np.uint64(1 << 63))
    return _radix_argsort(key)


@njit(cache=True, nogil=True)
def _take_into(src, order, out):  # pragma: no cover - compiled
    for i in range(len(order)):
        out[i] = src[order[i]]


def gather(cols: list[np.ndarray], order: np.ndarray, dtype=None) -> np.ndarray:
    """np.concatenate(cols)[order].astype(dtype) (default: the concatenation's dtype) in one
    compiled pass."""
    src = cols[0] if len(cols) == 1 else np.concatenate(cols)
    out = np.empty(len(order), src.dtype if dtype is None else dtype)
    _take_into(src, order, out)
    return out


@njit(cache=True, nogil=True)
def merge2(ta, ua, ra, aa, tb, ub, rb, ab, has_a, has_b, t, u, r, att,
           ea, za, eb, zb, e, z):  # pragma: no cover - compiled
    # two time-sorted runs as one, a's first at equal times: the stable sort by time of a
    # then b, every field in one pass (attempts 0 for a run without; att, and the service
    # noise e and z, only where their outputs are not empty). False (the outputs partly
    # written: discard them) when a run is not ascending or has a NaN time (the caller
    # sorts instead); checked as each time is taken, not in passes of their own. (Galloping
    # through long one-run blocks, as timsort does, was measured: 2.8 -> 2.3 ns a row on
    # blocks, which the branch predictor already handles, and 6.7 -> 7.7 on interleaved runs.)
    na, nb = len(ta), len(tb)
    wa = len(att) > 0
    wn = len(e) > 0
    i = j = 0
    for w in range(na + nb):
        if j < nb and (i >= na or tb[j] < ta[i]):
            x = tb[j]
            if x != x or (j and x < tb[j - 1]):
                return False
            t[w], u[w], r[w] = x, ub[j], rb[j]
            if wa:
                att[w] = ab[j] if has_b else 0
            if wn:
                e[w], z[w] = eb[j], zb[j]
            j += 1
        else:
            x = ta[i]
            if x != x or (i and x < ta[i - 1]):
                return False
            t[w], u[w], r[w] = x, ua[i], ra[i]
            if wa:
                att[w] = aa[i] if has_a else 0
            if wn:
                e[w], z[w] = ea[i], za[i]
            i += 1
    return True


def _att_dtype(a: Arrivals):
    # what a stable sort of runs concatenated holds for a run's attempts: its own, else
    # zeros of its users' dtype
    return a.user.dtype if a.attempt is None else a.attempt.dtype


def merge_sorted(a: Arrivals, b: Arrivals, noise=None, wide: bool = False
                 ) -> tuple[Arrivals, np.ndarray, np.ndarray] | None:
    """Two time-sorted, unkeyed runs as one by merge2 (the stable sort by time, a's first at
    ties), with each run's service noise merged alongside when `noise` = ((ea, za), (eb, zb))
    (else the noise returned is empty). Users, tiers and attempts in the dtypes the runs'
    concatenation has, or int64 when `wide`. None when a run is not ascending or has a NaN
    time (the caller sorts instead)."""
    n = len(a) + len(b)
    with_att = a.attempt is not None or b.attempt is not None
    i64 = np.dtype(np.int64)
    att = np.empty(n if with_att else 0, i64 if wide else np.result_type(_att_dtype(a), _att_dtype(b)))
    t = np.empty(n)
    u = np.empty(n, i64 if wide else np.result_type(a.user, b.user))
    r = np.empty(n, i64 if wide else np.result_type(a.tier, b.tier))
    if noise is None:
        ea = za = eb = zb = e = z = np.zeros(0)
    else:
        (ea, za), (eb, zb) = noise
        e, z = np.empty(n, np.result_type(ea, eb)), np.empty(n, np.result_type(za, zb))
    none = np.zeros(0, np.int8)
    if not merge2(a.t, a.user, a.tier, none if a.attempt is None else a.attempt,
                  b.t, b.user, b.tier, none if b.attempt is None else b.attempt,
                  a.attempt is not None, b.attempt is not None, t, u, r, att,
                  ea, za, eb, zb, e, z):
        return None
    return Arrivals(t, u, r, att if with_att else None), e, z


@njit(cache=True, nogil=True)
def _set_bits(bits, users):  # pragma: no cover - compiled
    for u in users:
        bits[u >> 3] |= np.uint8(1 << (u & 7))


@njit(cache=True, nogil=True)
def _set_fit(bits, users):  # pragma: no cover - compiled
    # the bits of the users that fit set; returns the largest user (-1: none)
    top = -1
    n = len(bits)
    for u in users:
        if u > top:
            top = u
        if (u >> 3) < n:
            bits[u >> 3] |= np.uint8(1 << (u & 7))
    return top


@njit(cache=True, nogil=True)
def _clear_bits(bits, users):  # pragma: no cover - compiled
    for u in users:
        bits[u >> 3] &= np.uint8(~(1 << (u & 7)) & 255)


@njit(cache=True, nogil=True)
def _get_bits(bits, users, out):  # pragma: no cover - compiled
    for j in range(len(users)):
        u = users[j]
        out[j] = (bits[u >> 3] >> (u & 7)) & 1


class UserBits:
    """One bit per user id (the whole service has ~130M users: 16 MB, not 130 MB), growing to
    the largest id seen."""

    def __init__(self):
        self.a = np.zeros(0, np.uint8)

    def _ensure(self, users: np.ndarray) -> np.ndarray:
        users = np.ascontiguousarray(users, dtype=np.int64)
        if len(users):
            self.a = grown(self.a, (int(users.max()) >> 3) + 1, 0)
        return users

    def set(self, users: np.ndarray) -> None:
        if len(users):
            users = np.ascontiguousarray(users, dtype=np.int64)
            top = int(_set_fit(self.a, users))  # the max in the same pass
            if (top >> 3) + 1 > len(self.a):  # some did not fit: grown, then all set
                self.a = grown(self.a, (top >> 3) + 1, 0)
                _set_bits(self.a, users)

    def get(self, users: np.ndarray) -> np.ndarray:
        users = self._ensure(users)
        out = np.zeros(len(users), np.uint8)
        _get_bits(self.a, users, out)
        return out.astype(bool)

    def clear(self, users: np.ndarray) -> None:
        users = np.ascontiguousarray(users, dtype=np.int64)
        users = users[users < 8 * len(self.a)]
        if len(users):
            _clear_bits(self.a, users)

    def count(self) -> int:
        return int(np.unpackbits(self.a).sum(dtype=np.int64))


@dataclass
class Arrivals:
    """A time-sorted chunk of requests."""

    t: np.ndarray  # float64, seconds since t = 0
    user: np.ndarray  # int64, dense user index
    tier: np.ndarray  # int64, index into scenario.tiers
    attempt: np.ndarray | None = None  # int64, 0 for a first try (None: all first tries)
    # int64 request ids keying the request's own draws (sim.rng.keyed_uniform: a replayed
    # schedule's ids, so the simulator and the live gateway draw alike); -1 or None: unkeyed
    key: np.ndarray | None = None

    FIELDS = ("t", "user", "tier", "attempt", "key")

    def __len__(self) -> int:
        return len(self.t)

    def attempts(self) -> np.ndarray:
        return np.zeros(len(self.t), np.int64) if self.attempt is None else self.attempt

    def keys(self) -> np.ndarray:
        return np.full(len(self.t), -1, np.int64) if self.key is None else self.key

    def take(self, idx) -> Arrivals:
        att = None if self.attempt is None else self.attempt[idx]
        key = None if self.key is None else self.key[idx]
        return Arrivals(self.t[idx], self.user[idx], self.tier[idx], att, key)

    def with_(self, **fields) -> Arrivals:
        """A copy with some fields replaced (the others, the key among them, kept)."""
        return dataclasses.replace(self, **fields)

    def compact(self) -> Arrivals:
        """As held while pending (tens of millions wait for a quota's midnight): users as
        int32 where the ids fit, tiers and attempts as bytes (max_attempts <= 100)."""
        big = len(self.user) and int(self.user.max()) >= 2**31
        att = None if self.attempt is None else self.attempt.astype(np.int8, copy=False)
        return Arrivals(self.t, self.user if big else self.user.astype(np.int32, copy=False),
                        self.tier.astype(np.int8, copy=False), att, self.key)

    def wide(self) -> Arrivals:
        """In the engine's dtypes (int64 users, tiers and attempts)."""
        att = None if self.attempt is None else self.attempt.astype(np.int64, copy=False)
        return Arrivals(self.t, self.user.astype(np.int64, copy=False),
                        self.tier.astype(np.int64, copy=False), att, self.key)

    @staticmethod
    def empty() -> Arrivals:
        return Arrivals(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))

    @staticmethod
    def concat(parts: list[Arrivals]) -> Arrivals:
        """Merge chunks into one, sorted by time (stable: earlier parts first at ties)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return Arrivals.empty()
        if len(parts) == 1:
            return parts[0]
        if len(parts) == 2 and all(p.attempt is None and p.key is None for p in parts):
            # two runs (a chunk's carry and what follows): merged in one pass
            if (got := merge_sorted(*parts)) is not None:
                return got[0]
        att = key = None
        if any(p.attempt is not None for p in parts):
            att = np.concatenate([p.attempts() for p in parts])
        if any(p.key is not None for p in parts):
            key = np.concatenate([p.keys() for p in parts])
        a = Arrivals(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("t", "user", "tier")),
                     att, key)
        return a.take(stable_argsort(a.t))


def grown(a: np.ndarray, n: int, fill) -> np.ndarray:
    """`a` extended to at least n entries with `fill` (by a quarter more, to amortise: per-user
    arrays of the whole service hold ~130M entries, and doubling would waste up to half)."""
    if n <= len(a):
        return a
    b = np.empty(max(n, len(a) + len(a) // 4, 1024), a.dtype)
    b[: len(a)] = a
    rest = b[len(a):]
    if a.dtype.names and a.dtype.itemsize in (1, 2, 4, 8):
        # a record's fill as one machine word: numpy assigns a tuple to records field by
        # field (~1 s for the daily quota's 145M records; this, ~0.1 s)
        one = np.zeros(1, a.dtype)
        one[0] = fill
        word = np.dtype(f"u{a.dtype.itemsize}")
        rest.view(word)[:] = one.view(word)[0]
    else:
        rest[:] = fill
    return b


class PiecewiseLinearRate:
    """lambda(t) linear between knots (constant outside); exact inverse-cumulative sampling."""

    def __init__(self, knots_t, knots_rate):
        self.t = np.asarray(knots_t, dtype=float)
        self.r = np.asarray(knots_rate, dtype=float)
        if np.any(self.r < 0):
            raise ValueError("negative rate")
        dt = np.diff(self.t)
        seg = dt * (self.r[:-1] + self.r[1:]) / 2
        self.cum = np.concatenate([[0.0], np.cumsum(seg)])
        with np.errstate(divide="ignore", invalid="ignore"):
            sl = np.where(dt > 0, np.diff(self.r) / dt, 0.0)
        self.slope = np.append(sl, 0.0)  # the rate stays constant after the last knot

    def rate(self, t) -> np.ndarray:
        return np.interp(t, self.t, self.r)

    def cumulative(self, t) -> np.ndarray:
        """Lambda(t) = integral of the rate from knot 0 (negative before it)."""
        t = np.asarray(t, dtype=float)
        i = np.clip(np.searchsorted(self.t, t, side="right") - 1, 0, len(self.t) - 1)
        dt = t - self.t[i]
        a = self.r[i]
        slope = np.where(t < self.t[0], 0.0, self.slope[i])
        return self.cum[i] + a * dt + slope * dt * dt / 2

    def inverse(self, L) -> np.ndarray:
        """t such that Lambda(t) = L (L within the knots' range or past the end)."""
        L = np.ascontiguousarray(L, dtype=float)
        return _inverse(self.t, self.r, self.cum, self.slope, L.ravel(), -np.inf, np.inf).reshape(L.shape)

    def sample(self, t0: float, t1: float, rng: np.random.Generator) -> np.ndarray:
        """Sorted arrival times of the Poisson process on [t0, t1)."""
        L0, L1 = self.cumulative([t0, t1])
        n = rng.poisson(L1 - L0)
        u = rng.uniform(L0, L1, n)
        u = u[stable_argsort(u)]
        return _inverse(self.t, self.r, self.cum, self.slope, u, t0, np.nextafter(t1, t0))


@njit(cache=True, nogil=True)
def _inverse(kt, kr, cum, kslope, L, lo, hi):  # pragma: no cover - compiled
    # PiecewiseLinearRate.inverse, clipped to [lo, hi], in one pass: the same IEEE operations
    # in the same order as the numpy expression it replaced (a chunk's overhead was its ~10
    # temporaries), so the same times to the bit.
    n = len(L)
    out = np.empty(n)
    last = len(kt) - 1
    for j in range(n):
        v = L[j]
        i = np.searchsorted(cum, v, side="right") - 1
        i = min(max(i, 0), last)
        d = v - cum[i]
        a = kr[i]
        disc = math.sqrt(max(a * a + 2 * kslope[i] * d, 0.0))
        x = 2 * d / (a + disc) if a + disc > 0 else 0.0
        t = kt[i] + x
        out[j] = min(max(t, lo), hi)
    return out


def tier_users(shares: list[float], users: int) -> tuple[np.ndarray, np.ndarray]:
    """First user index and user count of each tier: tiers own contiguous id ranges."""
    counts = np.maximum(1, np.round(np.asarray(shares) / np.sum(shares) * users)).astype(np.int64)
    return np.concatenate([[0], np.cumsum(counts)[:-1]]), counts


def assign(t: np.ndarray, shares, users: int, rng: np.random.Generator) -> Arrivals:
    """Give each request a tier (by share) and a user uniformly within the tier."""
    p = np.asarray(shares, dtype=float) / np.sum(shares)
    # rng.choice(len(p), size=len(t), p=p), as numpy's Generator computes it (the cdf, one
    # uniform a request, searchsorted right): the same draws without its argument checks
    cdf = p.cumsum()
    cdf /= cdf[-1]
    tier = cdf.searchsorted(rng.random(len(t)), side="right").astype(np.int64, copy=False)
    first, count = tier_users(shares, users)
    user = first[tier] + (rng.random(len(t)) * count[tier]).astype(np.int64)
    return Arrivals(t, user, tier)
