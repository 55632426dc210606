"""Demand that reacts to the run: retries, paid conversion, social feedback from served images,
and the counts that separate unique demand from offered load.

All of it hangs on the engine's hooks (`run.retry`, `run.on_window`, `run.add_requests`) and
draws from `run.prng`, so a scenario and seed still give identical results. Requests created
here land in later windows: one whose time falls inside the window just processed is deferred
to its end (counted in `deferred`), so keep chunk_s small next to the shortest backoff and the
social kernel's time scale when their exact timing matters.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sim.demand.base import Arrivals, UserBits, merge_sorted, stable_argsort
from sim.demand.stream import Kernel
from sim.outcomes import REASONS
from sim.rng import keyed_uniform

QUOTA = REASONS.index("quota_exceeded")
TIMEOUT = REASONS.index("timeout")


@njit(cache=True, nogil=True)
def _undecided(code, tier, src, user, bits, quota):  # pragma: no cover - compiled
    # the users of rows rejected for the quota in a source tier whose bit is not set yet,
    # in row order, each once where its bit fits (set as it is found; one past the bits may
    # repeat: short True), in one pass
    out = np.empty(len(code), user.dtype)
    n = 0
    short = False
    for i in range(len(code)):
        if code[i] == quota and src[tier[i]]:
            u = user[i]
            b = u >> 3
            if b >= len(bits):
                short = True
            elif (bits[b] >> (u & 7)) & 1:
                continue
            else:
                bits[b] |= np.uint8(1 << (u & 7))
            out[n] = u
            n += 1
    return out[:n], short


@njit(cache=True, nogil=True)
def _offspring_of(g, n, code, t):  # pragma: no cover - compiled
    # g.poisson(n, served) for the rows served (code < 0), in row order (numba's Generator:
    # numpy's algorithm on g's bit generator, the same draws), then each served row's time
    # repeated as many times as its draw: np.repeat(t[code < 0], g.poisson(n, served))
    m = 0
    for c in code:
        if c < 0:
            m += 1
    k = g.poisson(n, m)
    tot = 0
    for x in k:
        tot += x
    out = np.empty(tot)
    w = j = 0
    for i in range(len(code)):
        if code[i] < 0:
            for _ in range(k[j]):
                out[w] = t[i]
                w += 1
            j += 1
    return out


@njit(cache=True, nogil=True)
def _shift_before(t, d, horizon):  # pragma: no cover - compiled
    # (t + d)[t + d < horizon] in one pass
    out = np.empty(len(t))
    n = 0
    for i in range(len(t)):
        x = t[i] + d[i]
        if x < horizon:
            out[n] = x
            n += 1
    return out[:n]


def _sorted_merge(runs: list[Arrivals]) -> Arrivals:
    """_merge by one stable sort of the runs concatenated (the definition)."""
    t = np.concatenate([a.t for a in runs])
    o = np.argsort(t, kind="stable")  # timsort: linear on a few sorted runs
    att = key = None
    if any(a.attempt is not None for a in runs):
        att = np.concatenate([a.attempt if a.attempt is not None else np.zeros(len(a), a.user.dtype)
                              for a in runs])[o]
    if any(a.key is not None for a in runs):
        key = np.concatenate([a.keys() for a in runs])[o]
    return Arrivals(t[o], np.concatenate([a.user for a in runs])[o],
                    np.concatenate([a.tier for a in runs])[o], att, key)


def _merge_two(a: Arrivals, b: Arrivals) -> Arrivals:
    got = merge_sorted(a, b)
    return _sorted_merge([a, b]) if got is None else got[0]


def _merge(runs: list[Arrivals]) -> Arrivals:
    """Time-sorted runs, oldest first, as one (stable: at equal times the older first), in
    the dtypes their concatenation has: the stable sort of the runs concatenated, made by
    merging neighbours pairwise (a run that is not sorted: by that sort)."""
    if any(a.key is not None for a in runs):  # a replay's keyed requests: sorted, rare
        return _sorted_merge(runs)
    while len(runs) > 1:
        nxt = [_merge_two(runs[i], runs[i + 1]) for i in range(0, len(runs) - 1, 2)]
        runs = nxt + ([runs[-1]] if len(runs) % 2 else [])
    return runs[0]


class Pending:
    """Requests created during the run, handed to the run (run.add_requests) one window
    ahead: the engine's list of pending batches stays short however far ahead retries are
    scheduled (a quota's Retry-After reaches to midnight). Socially triggered requests get
    their user when released (user -1 until then).

    Held as time-sorted runs in push order, in compact dtypes; the newest runs are merged
    while the one before is at most twice as long, so there are O(log n) runs and each
    request is merged O(log n) times. A request is due once its time bucket (chunk_s) is
    at most the one that ends the next window; a flush hands over the stable time sort of
    the due requests in push order, whatever the merging."""

    def __init__(self, run):
        self.run = run
        self.c = run.sc.chunk_s
        self.runs: list[Arrivals] = []

    def push(self, a: Arrivals) -> None:
        """Add time-sorted requests."""
        if len(a) == 0:
            return
        self.runs.append(a.compact())
        while len(self.runs) >= 2 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            self.runs[-2:] = [_merge(self.runs[-2:])]

    def _due(self, t: np.ndarray, limit: int) -> int:
        """How many of the sorted times t have floor(t / c) <= limit (exactly)."""
        c = self.c
        cut = int(np.searchsorted(t, (limit + 1) * c, side="left"))
        while cut < len(t) and np.floor(t[cut] / c) <= limit:
            cut += 1
        while cut > 0 and np.floor(t[cut - 1] / c) > limit:
            cut -= 1
        return cut

    def flush(self) -> None:
        """Hand over everything due before the end of the next window."""
        run = self.run
        limit = int(np.floor((run.cursor + self.c) / self.c))
        due, keep = [], []
        for a in self.runs:
            cut = self._due(a.t, limit)
            if cut:
                due.append(a.take(slice(0, cut)))
            if cut < len(a):
                keep.append(a.take(slice(cut, None)))
        self.runs = keep
        if not due:
            return
        a = due[0] if len(due) == 1 else _merge(due)  # compact: the run holds them so
        need = a.user < 0
        if need.any():
            u, t = run.demand.pick(a.t[need], run.prng)
            if int(u.max()) > np.iinfo(a.user.dtype).max:
                a = a.wide()  # picked ids past the compact dtype (widening all of a day's
                # retries due at midnight with them would cost ~0.5 GB at full scale)
            a.user[need] = u
            a.tier[need] = run.demand.tier_now(u, t)
        run.add_requests(a)


class Retry:
    """Exponential backoff with jitter, up to max_attempts tries; honours Retry-After.

    Backoff before retry r (r = 1 for the first): v = min(cap, base * 2^(r-1)); `none` waits v,
    `full` U(0, v), `equal` v/2 + U(0, v/2), `decorrelated` min(cap, U(base, 3 v)) (the AWS
    scheme with the previous sleep taken as v: the engine keeps no per-request state). With
    honour_retry_after the wait is at least the Retry-After, unless the user has since moved
    to another tier (paid conversion lifts the quota). A timed-out request is retried from
    the moment the user gave up (arrival + patience).

    A request that carries a key (a replayed schedule's id: Arrivals.key) draws its
    probability and backoff from sim.rng.keyed_uniform(seed, key, attempt), so the live
    load generator and the simulator's replay retry it alike; others draw from `rng`."""

    def __init__(self, spec, demand, tiers, pending: Pending | None = None, seed: int = 0):
        self.spec, self.demand, self.pending, self.seed = spec, demand, pending, int(seed)
        self.reasons = None if spec.reasons is None else np.array(
            [REASONS.index(r) for r in spec.reasons], np.int64)
        self.patience = np.array([t.patience_s or 0.0 for t in tiers])
        self.retries = 0

    def _draw(self, rng: np.random.Generator, key, att: np.ndarray, lane: str) -> np.ndarray:
        """Uniforms, one per request: rng's, or the request's own where it has a key."""
        u = rng.random(len(att))
        if key is not None and (m := key >= 0).any():
            u[m] = keyed_uniform(self.seed, key[m], att[m], lane)
        return u

    def backoff(self, r: np.ndarray, rng: np.random.Generator, u: np.ndarray | None = None) -> np.ndarray:
        sp = self.spec
        v = np.minimum(sp.cap_s, sp.base_s * 2.0 ** np.minimum(r - 1, 60))
        u = rng.random(len(r)) if u is None else u
        if sp.jitter == "full":
            return u * v
        if sp.jitter == "equal":
            return v / 2 + u * v / 2
        if sp.jitter == "decorrelated":
            return np.minimum(sp.cap_s, sp.base_s + u * np.maximum(3 * v - sp.base_s, 0.0))
        return v

    def after_reject(self, a: Arrivals, code: np.ndarray, retry_after: np.ndarray,
                     rng: np.random.Generator) -> Arrivals:
        sp = self.spec
        att = a.attempts()
        m = att + 1 < sp.max_attempts
        if self.reasons is not None:
            m &= np.isin(code, self.reasons)
        if sp.probability < 1:
            m &= self._draw(rng, a.key, att, "retry_probability") < sp.probability
        idx = np.flatnonzero(m)
        if len(idx) == 0:
            return Arrivals.empty()
        r = att[idx] + 1
        key = None if a.key is None else a.key[idx]
        d = self.backoff(r, rng, self._draw(rng, key, att[idx], "retry_backoff"))
        tier = self.demand.tier_now(a.user[idx], a.tier[idx])
        if sp.honour_retry_after:
            ra = retry_after[idx]
            use = np.isfinite(ra) & (tier == a.tier[idx])
            d = np.where(use, np.maximum(d, np.where(use, ra, 0.0)), d)
        t0 = a.t[idx] + np.where(code[idx] == TIMEOUT, self.patience[a.tier[idx]], 0.0)
        self.retries += len(idx)
        out = Arrivals(t0 + d, a.user[idx], tier, r.astype(np.int64), key)
        out = out.take(stable_argsort(out.t))
        if self.pending is None:
            return out
        self.pending.push(out)
        self.pending.flush()
        return Arrivals.empty()


class Conversion:
    """Free users who hit the quota upgrade with some probability: each user decides once, at
    their first quota_exceeded rejection; converts then make requests in the new tier."""

    def __init__(self, spec, demand, names):
        self.demand = demand
        self.src = np.array([names.index(t) for t in spec.tiers], np.int64)
        self.src_mask = np.isin(np.arange(len(names)), self.src)
        self.to = names.index(spec.to)
        self.p = spec.probability
        self.decided = UserBits()
        self.conversions = 0
        self._quota_seen = 0  # the run's quota rejections in the source tiers, so far

    def __call__(self, run, a, code, retry_after) -> None:
        # none this window (the run's counts of admission's rejections did not move): nobody
        # to decide, and no pass over the window (most windows of a run have no cap on)
        seen = int(run.rejected[self.src, QUOTA].sum())
        if seen == self._quota_seen:
            return
        self._quota_seen = seen
        # the quota's rejections in the source tiers, users not decided yet (most decided
        # at a first rejection), marked decided in the same pass; sorted, each once
        users, short = _undecided(np.asarray(code), np.asarray(a.tier), self.src_mask,
                                  np.asarray(a.user), self.decided.a, QUOTA)
        if short:  # some past the bits: as many times as rejected
            users = np.unique(users)
            self.decided.set(users)
        else:
            users = np.sort(users)
        if len(users) == 0:
            return
        conv = users[run.prng.random(len(users)) < self.p]
        self.demand.override.set(conv, self.to)
        self.conversions += len(conv)


class SocialOnSuccess:
    """Hawkes feedback where only requests that were not rejected excite: each triggers
    Poisson(branching) requests at delays drawn from the kernel (one generation per window;
    the offspring's own offspring come when they are served)."""

    def __init__(self, spec, demand, pending: Pending):
        self.pending = pending
        s = spec.social
        self.n = s.branching
        self.kernel = Kernel(s.kernel, s.scale_s, s.exponent, s.max_delay_s)
        self.demand = demand
        self.offspring = 0

    def __call__(self, run, a, code, retry_after) -> None:
        t = _offspring_of(run.prng, float(self.n), np.asarray(code), np.asarray(a.t, np.float64))
        if len(t) == 0:
            return
        t = _shift_before(t, self.kernel.sample(len(t), run.prng), float(run.sc.horizon))
        t = t[stable_argsort(t)]
        self.offspring += len(t)
        # user -1 (picked when due), tier 0: already in the compact dtypes Pending holds
        self.pending.push(Arrivals(t, np.full(len(t), -1, np.int32), np.zeros(len(t), np.int8)))


class DemandStats:
    """Offered requests, first attempts, unique users, per window."""

    def __init__(self):
        self.offered = 0
        self.first = 0
        self.seen = UserBits()
        self._setting = None  # the last window's users being set aside (run.aside)

    def __call__(self, run, a, code, retry_after) -> None:
        if len(a) == 0:
            return
        self.offered += len(a)
        self.first += int(np.count_nonzero(a.attempt == 0)) if a.attempt is not None else len(a)
        # set on the run's helper thread (engine.Aside); these bits are only touched here,
        # each time after the last window's are set
        self.users()
        self._setting = run.aside.submit(self.seen.set, a.user)

    def users(self) -> UserBits:
        """The users seen so far (waits for those being set)."""
        if self._setting is not None:
            self._setting.result()
            self._setting = None
        return self.seen


def attach(run) -> None:
    """Hook the scenario's retry, conversion and social-feedback models into a run."""
    sc, d = run.sc, run.sc.demand
    names = [t.name for t in sc.tiers]
    run.demand_stats = DemandStats()
    run.on_window.append(run.demand_stats)
    pending = Pending(run)
    if d.conversion is not None:
        run.conversion = Conversion(d.conversion, run.demand, names)
        run.on_window.append(run.conversion)
    if d.social is not None and d.social.only_successful:
        run.social = SocialOnSuccess(d, run.demand, pending)
        run.on_window.append(run.social)
    if d.retry is not None:
        run.retry = Retry(d.retry, run.demand, sc.tiers, pending, sc.seed)
    if run.social is not None or run.retry is not None:
        run.on_window.append(lambda run, a, code, ra: pending.flush())


def demand_summary(run) -> dict:
    """The `demand` section of summary.json: unique demand against offered load."""
    x = 1.0 / run.sc.cell_fraction
    st = run.demand_stats
    if st is None:
        return {}

    def n(v) -> int:
        return int(round(float(v) * x))

    dem = run.demand
    social = getattr(dem, "offspring", 0) + (run.social.offspring if run.social else 0)
    out = {
        "model": run.sc.demand.model,
        "offered": n(st.offered),
        "first_attempts": n(st.first),
        "retries": n(st.offered - st.first),
        "retry_amplification": round(st.offered / st.first, 6) if st.first else None,
        "unique_users": n(st.users().count()),
        "conversions": n(run.conversion.conversions) if run.conversion else 0,
        "social_requests": n(social),
        "deferred": n(run.deferred),
    }
    if hasattr(dem, "first_sessions"):
        out["new_users"] = n(dem.first_sessions)
        out["sessions"] = n(dem.sessions)
    return out
