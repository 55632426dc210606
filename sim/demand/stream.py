"""What all demand models share: chunked generation with a carry-over of requests that spill
past the chunk (sessions, social offspring), the Hawkes cluster construction, and the per-user
tier override that paid conversion writes.

Memory is bounded by one chunk plus the carry (requests already created for later chunks:
the rest of open sessions and pending offspring), never by the total number of requests.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sim.demand.base import Arrivals, PiecewiseLinearRate, UserBits


@njit(cache=True, nogil=True)
def _apply_bits(user, tier, bits, to, out):  # pragma: no cover - compiled
    # out[i]: the last tier to[k] whose bits hold user[i] (a bit past the array: not set),
    # else tier[i]; True if any user was moved
    moved = False
    for i in range(len(user)):
        u = user[i]
        b = u >> 3
        v = tier[i]
        for k in range(len(to)):
            bk = bits[k]
            if b < len(bk) and (bk[b] >> (u & 7)) & 1:
                v = to[k]
                moved = True
        out[i] = v
    return moved


class TierOverride:
    """Per-user tier after conversion: one bit per user for each tier users were moved to
    (the last move wins). `a` is None until the first conversion, so runs without
    conversions allocate nothing."""

    def __init__(self):
        self.bits: dict[int, UserBits] = {}

    @property
    def a(self) -> dict | None:
        return self.bits or None

    def set(self, users: np.ndarray, tier: int) -> None:
        if len(users) == 0:
            return
        for k, b in self.bits.items():
            if k != tier:
                b.clear(users)
        self.bits.setdefault(int(tier), UserBits()).set(users)

    def apply(self, user: np.ndarray, tier: np.ndarray) -> np.ndarray:
        if not self.bits or len(user) == 0:
            return tier
        # the last move wins: each tier's bits in the order first moved to, in one pass
        # (np.where(bits.get(user), k, out) per tier, in tier's dtype)
        tier = np.asarray(tier)
        out = np.empty(len(tier), tier.dtype)
        bits = tuple(b.a for b in self.bits.values())
        to = np.array(list(self.bits), np.int64)
        if not _apply_bits(np.ascontiguousarray(user, dtype=np.int64), tier, bits, to, out):
            return tier
        return out


class Kernel:
    """A delay distribution (density integrating to 1): exponential or truncated power law
    (Lomax: density (a/s) (1 + t/s)^-(1+a))."""

    def __init__(self, kind: str, scale: float, exponent: float = 1.5, max_delay: float | None = None):
        self.kind, self.scale, self.exponent = kind, float(scale), float(exponent)
        self.max_delay = float(max_delay) if max_delay is not None else (
            np.inf if kind == "exponential" else 1000.0 * scale)
        self._fmax = self.cdf(self.max_delay) if np.isfinite(self.max_delay) else 1.0

    def cdf(self, t) -> np.ndarray:
        t = np.maximum(np.asarray(t, float), 0.0)
        if self.kind == "exponential":
            return -np.expm1(-t / self.scale)
        return 1.0 - (1.0 + t / self.scale) ** (-self.exponent)

    def density(self, t) -> np.ndarray:
        t = np.maximum(np.asarray(t, float), 0.0)
        if self.kind == "exponential":
            d = np.exp(-t / self.scale) / self.scale
        else:
            d = self.exponent / self.scale * (1.0 + t / self.scale) ** (-(1.0 + self.exponent))
        return np.where(t <= self.max_delay, d / self._fmax, 0.0)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(n) * self._fmax
        if self.kind == "exponential":
            return -self.scale * np.log1p(-u)
        return self.scale * ((1.0 - u) ** (-1.0 / self.exponent) - 1.0)

    def binned(self, step: float, n: int) -> np.ndarray:
        """Mass of the kernel in lag bins [(d - 1/2) step, (d + 1/2) step), d = 0..n-1."""
        edges = np.concatenate([[0.0], (np.arange(n) + 0.5) * step])
        F = np.minimum(self.cdf(edges), self._fmax) / self._fmax
        return np.diff(F)


def social_kernel(spec) -> Kernel | None:
    s = spec.social
    if s is None:
        return None
    return Kernel(s.kernel, s.scale_s, s.exponent, s.max_delay_s)


def expected_with_feedback(rate: PiecewiseLinearRate, n: float, kernel: Kernel | None,
                           step: float, t_end: float) -> PiecewiseLinearRate:
    """Mean intensity of a Hawkes process with immigrant intensity `rate`: the solution of
    m = mu + n (k * m), on a grid (fixed-point iteration, FFT convolutions)."""
    t = np.arange(0.0, t_end + step, step)
    mu = rate.rate(t)
    if kernel is None or n == 0:
        return PiecewiseLinearRate(t, mu)
    kb = kernel.binned(step, len(t))
    size = 1 << int(np.ceil(np.log2(2 * len(t))))
    K = np.fft.rfft(kb, size)
    m = mu.copy()
    for _ in range(200):
        new = mu + n * np.fft.irfft(np.fft.rfft(m, size) * K, size)[: len(t)]
        new = np.maximum(new, 0.0)
        done = np.max(np.abs(new - m)) <= 1e-10 * max(np.max(new), 1e-300)
        m = new
        if done:
            break
    return PiecewiseLinearRate(t, m)


class Stream:
    """Base of the demand models. Subclasses give `_base(t0, t1, rng)` (requests created in
    [t0, t1), possibly with times past t1) and `pick(t, rng)` (who makes a request at t)."""

    shares: list[float]
    spec = None

    def _init_stream(self, spec) -> None:
        self.spec = spec
        self.override = TierOverride()
        self.kernel = social_kernel(spec)
        self.cluster = spec.social is not None and not spec.social.only_successful
        self._carry = Arrivals.empty()
        self._next = 0.0
        self._until = 0.0  # requests up to here have been created
        self.generated = 0  # requests handed out (all chunks so far)
        self.offspring = 0  # of which socially triggered (cluster construction)

    def _base(self, t0: float, t1: float, rng: np.random.Generator) -> Arrivals:
        raise NotImplementedError

    def pick(self, t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def tier_now(self, user: np.ndarray, tier: np.ndarray) -> np.ndarray:
        """A user's tier after any conversion."""
        return self.override.apply(user, tier)

    def descendants(self, t: np.ndarray, rng: np.random.Generator) -> Arrivals:
        """All socially triggered requests of requests at times t (every generation)."""
        n = self.spec.social.branching
        parts, gen = [], t
        while len(gen):
            k = rng.poisson(n, len(gen))
            child = np.repeat(gen, k) + self.kernel.sample(int(k.sum()), rng)
            if len(child):
                user, tier = self.pick(child, rng)
                parts.append(Arrivals(child, user, tier))
            gen = child
        return Arrivals.concat(parts)

    def _batch_end(self, t0: float, t1: float) -> float:
        """How far one call of _base goes: past t1 when chunks are short (the rest waits in
        the carry), to spare the per-call overhead."""
        return t1

    def generate(self, t0: float, t1: float, rng: np.random.Generator, convert: bool = True) -> Arrivals:
        """Requests in [t0, t1), time-sorted. Chunks must come in order (the engine's do); a
        chunk out of order restarts the carry. The chunk's rng makes whatever it generates
        (a chunk inside a batch already generated draws nothing). convert=False: tiers before
        paid conversion (the caller applies tier_now)."""
        if t0 != self._next:
            self._carry = Arrivals.empty()
            self._until = t0
        self._next = t1
        new = Arrivals.empty()
        if t1 > self._until:
            end = max(t1, self._batch_end(t0, t1))
            new = self._base(self._until, end, rng)
            self._until = end
            if self.cluster and len(new):
                kids = self.descendants(new.t, rng)
                self.offspring += len(kids)
                new = Arrivals.concat([new, kids])
        if len(self._carry) == 0 and (len(new) == 0 or new.t[-1] < t1):
            out = new
        else:
            allr = Arrivals.concat([self._carry, new])
            cut = int(np.searchsorted(allr.t, t1, side="left"))
            out, self._carry = allr.take(slice(0, cut)), allr.take(slice(cut, None))
        if convert and self.override.a is not None and len(out):
            out = out.with_(tier=self.tier_now(out.user, out.tier))
        self.generated += len(out)
        return out

    # -- expected figures (the `floodgate demand` command) --

    def social_factor(self) -> float:
        s = self.spec.social
        return 1.0 / (1.0 - s.branching) if s is not None else 1.0
