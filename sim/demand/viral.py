"""Viral demand: adoption waves (Bass, logistic/SI, SIR), per-user sessions with novelty decay
and heavy tails, diurnal and weekly seasonality over a mix of time zones.

How a request comes about, and how it is generated (vectorised, a chunk at a time):

* Adoption. Wave w brings N_w(t) = m_w F_w(t - start_w) users (closed-form F for Bass and
  logistic, a tabulated ODE solution for SIR), split over regions by share. Users are dense
  ids in one block per (wave, region), in adoption order: user i of a block adopts at
  F^-1((i + u_i) / M) with u_i a low-discrepancy offset, so cumulative adopters follow the
  curve to within one user (no noise to average out), and a user's adoption time, tier (from
  its wave's tier mix) and region are functions of its id: no per-user arrays.
* First session at adoption (a user exists once they have made a request: unique users are
  the adopters), then repeat sessions: R per user over a lifetime, at rate R k(age) with k the
  novelty-decay density (exponential or power law), times the seasonality of the user's
  region. Summed over users this is the intensity lambda_rep(t) = R sum_w (dN_w * k)(t) x
  S(t), computed on a grid (grid_s) into a PiecewiseLinearRate and sampled exactly.
* Who: a repeat session at t belongs to cohort (adoption bin) j of block b with probability
  proportional to users(b, j) k(t - s_j) D_region(t) (evaluated at the grid cell's middle),
  and within the cohort to a user by Pareto rank (activity_tail): per-user activity is
  heavy-tailed, with the heavy users the first ids of each cohort.
* A session makes K images, K - 1 Poisson with a lognormal or Pareto mean (mean `images`),
  spaced by exponential think times; images past the chunk carry over to the next.

Memory: one chunk of requests, the carry, and arrays over the grid and blocks.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit

from sim.demand.base import Arrivals, PiecewiseLinearRate, stable_argsort
from sim.demand.stream import Kernel, Stream, expected_with_feedback

DAY = 86400.0
G1, G2 = 0.7548776662466927, 0.5698402909980532  # R2 low-discrepancy sequence
MAX_COHORTS = 4096


@njit(cache=True, nogil=True)
def _tier_of(user, off, salt, b_wave, mix):  # pragma: no cover - compiled
    # the block of each user (blocks are few), its low-discrepancy draw, its wave's tier mix
    out = np.empty(len(user), np.int64)
    nb, nt = len(off), mix.shape[1] - 1
    for j in range(len(user)):
        u = user[j]
        b = nb - 1
        while b > 0 and off[b] > u:
            b -= 1
        v = (0.5 + (u - off[b]) * G1 + salt[b]) % 1.0
        w = b_wave[b]
        k = 0
        for m in range(nt):
            if v >= mix[w, m]:
                k += 1
        out[j] = k
    return out


@njit(cache=True, nogil=True)
def _images_of(t, u, r, k, tot, gaps, spaced):  # pragma: no cover - compiled
    # each session's k images: its user and tier each, at its time, then (spaced) spaced by
    # the think gaps, the first image's gap 0: (t + cs) - cs_first with cs the running sum
    # of the gaps, the same IEEE operations in the same order as the numpy expression
    # t + cs - repeat(cs[first], k) it replaced (the same times to the bit)
    T = np.empty(tot)
    U = np.empty(tot, u.dtype)
    R = np.empty(tot, r.dtype)
    w = 0
    cs = 0.0
    for s in range(len(k)):
        cf = 0.0
        for i in range(k[s]):
            if spaced:
                if i:
                    cs += gaps[w]
                else:  # a gap of 0: cs + 0.0 is cs (cs >= 0, never -0.0)
                    cf = cs
                T[w] = (t[s] + cs) - cf
            else:
                T[w] = t[s]
            U[w] = u[s]
            R[w] = r[s]
            w += 1
    return T, U, R


@njit(cache=True, nogil=True)
def _take3(o, t, u, r):  # pragma: no cover - compiled
    # t[o], u[o], r[o] in one pass
    n = len(o)
    T = np.empty(n)
    U = np.empty(n, u.dtype)
    R = np.empty(n, r.dtype)
    for j in range(n):
        i = o[j]
        T[j] = t[i]
        U[j] = u[i]
        R[j] = r[i]
    return T, U, R


@njit(cache=True, nogil=True)
def _region_of(user, off, b_reg):  # pragma: no cover - compiled
    # the block of each user (searchsorted(off, u, "right") - 1, clipped: blocks are few),
    # and its region
    out = np.empty(len(user), np.int16)
    nb = len(off)
    for j in range(len(user)):
        u = user[j]
        b = nb - 1
        while b > 0 and off[b] > u:
            b -= 1
        out[j] = b_reg[b]
    return out


@njit(cache=True, nogil=True)
def _pick_cohort(x1, x2, cum, guide, lo, cnt, k, off, out):  # pragma: no cover - compiled
    # cohort = searchsorted(cum, x1, "right") (clipped), found from the guide table in O(1);
    # then the user at Pareto rank x2 within it
    n, G, total = len(cum), len(guide), cum[-1]
    for j in range(len(x1)):
        x = x1[j]
        g = min(max(int(x / total * G), 0), G - 1)
        i = guide[g]
        while i > 0 and cum[i - 1] > x:
            i -= 1
        while i < n and cum[i] <= x:
            i += 1
        cell = min(i, n - 1)
        c = cnt[cell]
        out[j] = off[cell // k] + lo[cell] + min(np.int64(x2[j] * c), c - 1)


@njit(cache=True, nogil=True)
def _cells(t, g, top):  # pragma: no cover - compiled
    # grid cell of each time (min(t / g, top), truncated as astype does); when they are
    # ascending, the start of each run of equal cells and len(t) (else no cuts)
    n = len(t)
    cells = np.empty(n, np.int64)
    ordered = True
    runs = 1 if n else 0
    for i in range(n):
        c = min(np.int64(t[i] / g), top)
        cells[i] = c
        if i:
            if c < cells[i - 1]:
                ordered = False
            elif c != cells[i - 1]:
                runs += 1
    cuts = np.empty(runs + 1 if ordered else 0, np.int64)
    if ordered:
        k = 0
        for i in range(n):
            if i == 0 or cells[i] != cells[i - 1]:
                cuts[k] = i
                k += 1
        cuts[k] = n
    return cells, cuts, ordered


class Adoption:
    """Fraction F(x) of a wave's market adopted x seconds after its start, and its inverse."""

    def __init__(self, w, t_end: float):
        self.kind = w.adoption
        self.w = w
        if self.kind == "sir":
            self._tabulate(w, max(t_end - w.start, 1.0))

    def _tabulate(self, w, span: float) -> None:
        b, g = w.beta / DAY, w.gamma / DAY
        h = min(60.0, span / 1000.0)
        n = int(np.ceil(span / h)) + 1
        s, i = 1.0 - w.i0, w.i0
        S = np.empty(n)
        S[0] = s
        for k in range(1, n):  # RK4 on (s, i)
            def f(s, i):
                return -b * s * i, b * s * i - g * i
            a1 = f(s, i)
            a2 = f(s + h / 2 * a1[0], i + h / 2 * a1[1])
            a3 = f(s + h / 2 * a2[0], i + h / 2 * a2[1])
            a4 = f(s + h * a3[0], i + h * a3[1])
            s += h / 6 * (a1[0] + 2 * a2[0] + 2 * a3[0] + a4[0])
            i += h / 6 * (a1[1] + 2 * a2[1] + 2 * a3[1] + a4[1])
            S[k] = s
        self.x = np.arange(n) * h
        self.F = np.maximum.accumulate(np.maximum(S[0] - S, 0.0))

    def __call__(self, x) -> np.ndarray:
        x = np.maximum(np.asarray(x, float), 0.0)
        w = self.w
        if self.kind == "bass":
            P, Q = w.p / DAY, w.q / DAY
            e = np.exp(-(P + Q) * x)
            return (1.0 - e) / (1.0 + Q / P * e)
        if self.kind == "logistic":
            r, i0 = w.rate / DAY, w.i0
            e = np.exp(np.minimum(r * x, 700.0))
            i = i0 * e / (1.0 - i0 + i0 * e)
            return (i - i0) / (1.0 - i0)
        return np.interp(x, self.x, self.F)

    def inverse(self, y) -> np.ndarray:
        y = np.asarray(y, float)
        w = self.w
        if self.kind == "bass":
            P, Q = w.p / DAY, w.q / DAY
            y = np.clip(y, 0.0, np.nextafter(1.0, 0.0))
            return -np.log((1.0 - y) / (1.0 + y * Q / P)) / (P + Q)
        if self.kind == "logistic":
            r, i0 = w.rate / DAY, w.i0
            i = np.clip(i0 + y * (1.0 - i0), i0, np.nextafter(1.0, 0.0))
            return np.log(i * (1.0 - i0) / (i0 * (1.0 - i))) / r
        return np.interp(y, self.F, self.x)


class ViralModel(Stream):
    def __init__(self, spec, tiers, scale: float = 1.0, until: float = DAY, epoch: float = 0.0):
        self._init_stream(spec)
        self.scale, self.epoch = scale, epoch
        names = [t.name for t in tiers]
        self.shares = [t.share for t in tiers]
        ss, se = spec.sessions, spec.seasonality
        self.g = g = float(spec.grid_s)
        self.t_end = until
        self.grid = np.arange(0.0, until + 2 * g, g)  # one cell past the end
        # regions
        rs = np.array([r.share for r in se.regions], float)
        self.reg_share = rs / rs.sum()
        self.reg_off = np.array([r.utc_offset_h for r in se.regions], float)
        # waves and blocks (wave x region)
        self.waves = spec.waves
        self.adopt = [Adoption(w, until + 2 * g) for w in spec.waves]
        self.start = np.array([w.start for w in spec.waves], float)
        mix = []
        for w in spec.waves:
            m = np.array([(w.tiers or {}).get(n, 0.0) for n in names]) if w.tiers else np.array(self.shares)
            mix.append(np.cumsum(m / m.sum()))
        self.mix = np.array(mix)
        nw, nr = len(spec.waves), len(rs)
        self.b_wave = np.repeat(np.arange(nw), nr)
        self.b_reg = np.tile(np.arange(nr), nw)
        self.M = np.array([w.market for w in spec.waves])[self.b_wave] * scale * self.reg_share[self.b_reg]
        size = np.ceil(self.M).astype(np.int64) + 1
        self.off = np.concatenate([[0], np.cumsum(size)[:-1]])
        self.n_users = int(size.sum())
        self.salt = (np.arange(len(self.M)) * 0.6180339887498949) % 1.0
        # per-user behaviour
        self.novelty = Kernel(ss.novelty, ss.novelty_s, ss.novelty_exponent)
        self.R = ss.repeat
        self.tail = ss.activity_tail
        self.mean_k = ss.images
        # cohorts: adoption bins on a (possibly coarser) grid
        step = g * max(1, int(np.ceil(len(self.grid) / MAX_COHORTS)))
        self.edges = np.arange(0.0, until + 2 * step, step)
        self.C = np.floor(self._block_N(self.edges) + 1e-9).astype(np.int64)  # [B, edges]
        # intensity of repeat sessions on the grid
        Nw = np.array([m * scale * a(self.grid - s) for m, a, s in
                       zip([w.market for w in spec.waves], self.adopt, self.start, strict=True)])
        self.N_grid = Nw.sum(axis=0)
        dN = np.diff(Nw, axis=1, prepend=0.0)  # adopters in (t_{j-1}, t_j]
        kap = self.novelty.density((np.arange(len(self.grid)) + 0.5) * g)
        size = 1 << int(np.ceil(np.log2(2 * len(self.grid))))
        conv = np.fft.irfft(np.fft.rfft(dN, size, axis=1) * np.fft.rfft(kap, size), size, axis=1)
        conv = np.maximum(conv[:, : len(self.grid)], 0.0)
        self.rep_wave = self.R * conv  # [W, grid], unseasoned
        rep = (self.rep_wave.sum(axis=0)) * self.season(self.grid)
        self.rep_rate = PiecewiseLinearRate(self.grid, rep)
        # cohort weights of recent grid cells, shared: the run's picks (triggered requests
        # due in the next window) find the cells the demand thread has just made
        self._cache: dict = {}
        self._cache_lock = threading.Lock()
        self.first_sessions = 0
        self.sessions = 0

    @classmethod
    def from_scenario(cls, sc, scale: float | None = None, until: float | None = None):
        return cls(sc.demand, sc.tiers, sc.cell_fraction if scale is None else scale,
                   sc.horizon if until is None else until, sc.epoch)

    # -- the pieces --

    def _block_N(self, t) -> np.ndarray:
        """Adopters (real) of each block by time t: [B, len(t)]."""
        t = np.asarray(t, float)
        F = np.array([a(t - s) for a, s in zip(self.adopt, self.start, strict=True)])
        return self.M[:, None] * F[self.b_wave]

    def region_factor(self, t) -> np.ndarray:
        """Seasonality D_g(t) of each region: [regions, len(t)], mean 1 over a week."""
        se = self.spec.seasonality
        t = np.atleast_1d(np.asarray(t, float))
        local = (self.epoch + t)[None, :] + self.reg_off[:, None] * 3600.0
        hour = (local / 3600.0) % 24.0
        d = 1.0 + se.diurnal_amplitude * np.cos(2 * np.pi * (hour - se.peak_hour) / 24.0)
        if se.weekend_factor != 1.0:
            wd = (np.floor(local / DAY).astype(np.int64) + 3) % 7  # Monday = 0
            f = 7.0 / (5.0 + 2.0 * se.weekend_factor)
            d = d * np.where(wd >= 5, se.weekend_factor * f, f)
        return d

    def season(self, t) -> np.ndarray:
        return self.reg_share @ self.region_factor(t)

    def tier_of(self, user: np.ndarray) -> np.ndarray:
        """A user's own tier (its wave's mix), before any conversion."""
        return _tier_of(np.ascontiguousarray(user, dtype=np.int64), self.off, self.salt,
                        self.b_wave, self.mix)

    def region_of(self, user: np.ndarray) -> np.ndarray:
        """A user's region (index into seasonality.regions, int16): its block's."""
        return _region_of(np.ascontiguousarray(user, dtype=np.int64), self.off, self.b_reg)

    def _weights(self, cell: int):
        """Cumulative cohort weights for repeat sessions in grid cell `cell` (cached)."""
        cache = self._cache
        hit = cache.get(cell)
        if hit is not None:
            return hit
        tm = (cell + 0.5) * self.g
        k = int(np.searchsorted(self.edges, tm, side="right"))  # edges <= tm
        Ct = np.floor(self._block_N([tm])[:, 0] + 1e-9).astype(np.int64)
        lo = self.C[:, :k]
        cnt = np.diff(np.concatenate([lo, Ct[:, None]], axis=1), axis=1)
        mids = (self.edges[:k] + np.append(self.edges[1:k], tm)) / 2
        w = cnt * self.novelty.density(tm - mids)[None, :]
        w = w * self.region_factor([tm])[self.b_reg, 0][:, None]
        cum = np.cumsum(w.ravel())
        # guide table: where searchsorted lands for u * cum[-1], u on a grid of len(cum) steps
        guide = (np.searchsorted(cum, np.arange(len(cum)) / len(cum) * cum[-1], side="right")
                 if len(cum) and cum[-1] > 0 else np.zeros(0, np.int64))
        hit = (cum, np.ascontiguousarray(lo.ravel()), np.ascontiguousarray(cnt.ravel()), k, guide)
        with self._cache_lock:  # a pure function of the cell: either thread's copy will do
            if len(cache) >= 16:  # times move forward: drop the earliest cell
                del cache[min(cache)]
            cache[cell] = hit
        return hit

    def pick(self, t, rng):
        """Users of repeat sessions (or triggered requests) at times t."""
        t = np.ascontiguousarray(t, dtype=float)
        user = np.zeros(len(t), np.int64)
        ok = np.ones(len(t), bool)
        # requests grouped by grid cell, cells ascending, each group in index order (what
        # np.unique + flatnonzero per cell gave, without a pass over t per cell)
        cells, cuts, ordered = _cells(t, self.g, len(self.grid) - 2)
        order = None if ordered else np.argsort(cells, kind="stable")
        cs = cells if ordered else cells[order]
        if not ordered:
            cuts = np.concatenate([[0], np.flatnonzero(cs[1:] != cs[:-1]) + 1, [len(t)]])
        for lo_i, hi_i in zip(cuts[:-1], cuts[1:], strict=True):
            if hi_i <= lo_i:
                continue
            sel = slice(lo_i, hi_i) if ordered else order[lo_i:hi_i]
            c = cs[lo_i]
            cum, lo, cnt, k, guide = self._weights(int(c))
            if len(cum) == 0 or cum[-1] <= 0:
                ok[sel] = False
                continue
            m = hi_i - lo_i
            x1 = rng.random(m) * cum[-1]  # cohort (block x adoption bin) by weight
            x2 = rng.random(m) ** (self.tail / (self.tail - 1.0))  # Pareto rank within it
            out = user[sel] if ordered else np.empty(m, np.int64)  # a view: written in place
            _pick_cohort(x1, x2, cum, guide, lo, cnt, k, self.off, out)
            if not ordered:
                user[sel] = out
        if not ok.all():  # nobody has adopted yet: the earliest adopters of the first block
            user[~ok] = 0
        return user, self.tier_of(user)

    def _first(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """Adoptions (first sessions) in [t0, t1): times and users, all blocks at once."""
        x = self._block_N([t0, t1])
        lo = np.maximum(np.floor(x[:, 0]).astype(np.int64) - 1, 0)
        hi = np.where(x[:, 1] > x[:, 0], np.ceil(x[:, 1]).astype(np.int64) + 1, lo)
        cnt = hi - lo
        tot = int(cnt.sum())
        if tot == 0:
            return np.zeros(0), np.zeros(0, np.int64)
        b = np.repeat(np.arange(len(cnt)), cnt)
        i = np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(tot)
        y = i + (0.5 + i * G2 + self.salt[b]) % 1.0  # user i of block b adopts at F^-1(y / M)
        keep = (y >= x[b, 0]) & (y < x[b, 1]) & (y < self.M[b])
        b, i, y = b[keep], i[keep], y[keep]
        w = self.b_wave[b]
        t = np.empty(len(y))
        for j in np.unique(w):
            s = w == j
            t[s] = self.start[j] + self.adopt[j].inverse(y[s] / self.M[b[s]])
        t = np.clip(t, t0, np.nextafter(t1, t0))
        o = stable_argsort(t)
        return t[o], (self.off[b] + i)[o]

    def _batch_end(self, t0: float, t1: float) -> float:
        return float(np.ceil(t1 / self.g) * self.g)

    def _images(self, n: int, rng) -> np.ndarray:
        """Images per session, K >= 1 with mean `images`, heavy-tailed."""
        ss = self.spec.sessions
        m = ss.images - 1.0
        if m <= 0:
            return np.ones(n, np.int64)
        if ss.images_dist == "lognormal":
            y = rng.lognormal(np.log(m) - ss.images_sigma ** 2 / 2, ss.images_sigma, n)
        else:
            a = ss.images_alpha
            y = m * (a - 1.0) / a * (1.0 + rng.pareto(a, n))
        return 1 + rng.poisson(y)

    def _base(self, t0, t1, rng):
        tf, uf = self._first(t0, t1)
        # a session's user and tier (a user's tier is a function of its id: each image's)
        parts_t, parts_u, parts_r = [tf], [uf], [self.tier_of(uf)]
        c0, c1 = int(t0 // self.g), int(np.ceil(t1 / self.g))
        for c in range(c0, c1):  # repeat sessions, grid cell by grid cell
            a, b = max(t0, c * self.g), min(t1, (c + 1) * self.g)
            if b <= a:
                continue
            t = self.rep_rate.sample(a, b, rng)
            if len(t):
                u, r = self.pick(t, rng)
                parts_t.append(t)
                parts_u.append(u)
                parts_r.append(r)
        t, u = np.concatenate(parts_t), np.concatenate(parts_u)
        r = np.concatenate(parts_r)
        self.first_sessions += len(tf)
        self.sessions += len(t)
        k = self._images(len(t), rng)
        tot = int(k.sum())
        think = self.spec.sessions.think_s
        spaced = think > 0 and tot > len(k)
        gaps = rng.exponential(think, tot) if spaced else np.zeros(0)
        t, u, r = _images_of(t, u, r, k, tot, gaps, spaced)
        o = stable_argsort(t)
        return Arrivals(*_take3(o, t, u, r))

    # -- expected figures --

    def new_users(self, t) -> np.ndarray:
        """Cumulative adopters by t (this model's scale)."""
        return self._block_N(np.atleast_1d(t)).sum(axis=0)

    def session_rate(self) -> PiecewiseLinearRate:
        a = np.gradient(self.N_grid, self.g)
        return PiecewiseLinearRate(self.grid, np.maximum(a, 0.0) + self.rep_rate.r)

    def image_rate(self, t_end: float | None = None, step: float | None = None) -> PiecewiseLinearRate:
        base = self.session_rate()
        base = PiecewiseLinearRate(base.t, base.r * self.mean_k)
        n = self.spec.social.branching if self.spec.social is not None else 0.0
        return expected_with_feedback(base, n, self.kernel, step or self.g,
                                      self.t_end if t_end is None else t_end)

    def rate(self, t) -> np.ndarray:
        if not hasattr(self, "_img"):
            self._img = self.image_rate()
        return self._img.rate(t)

    def expected(self, t_end: float, step: float | None = None) -> dict:
        return {"rate": self.image_rate(t_end, step), "new_users": self.new_users,
                "unique_users": self.new_users}
