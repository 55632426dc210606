"""The run: SimPy drives what shapes it; the fleet loop handles requests in between.

SimPy processes: the chunk clock (arrivals are generated and admitted a chunk at a time),
policy schedules ("from hour 36 the free tier gets 3/day"), and whatever else changes the
system at a given time. Each of them first calls `sync(now)`, which brings demand, admission
and the fleet exactly up to now, then makes its change: results do not depend on chunking.
"""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import simpy
from numba import njit

from sim import rng
from sim.classes import ClassMix, build_classes, routing
from sim.demand import Arrivals, build_demand
from sim.demand.feed import DemandFeed
from sim.errors import InputError
from sim.fleet.cost import CostModel, find_profile, load_profile
from sim.fleet.fleet import Fleet, PoolSetup
from sim.fleet.gates import Gates
from sim.fleet.purchase import Ledger, prices_of
from sim.outcomes import KERNEL_REASON, REASONS
from sim.policies.pipeline import ActivePolicy, admit_chunk, build_policies
from sim.regions import RegionSeries, build_regions
from sim.scenario import Scenario


@njit(cache=True, nogil=True)
def _offered(t, tier, interval, last, series, out, iv):  # pragma: no cover - compiled
    # each arrival's series interval (min(t / interval, last), truncated as astype does),
    # counted per (interval, tier) and per tier
    for i in range(len(t)):
        v = min(np.int64(t[i] / interval), last)
        iv[i] = v
        series[v, tier[i]] += 1
        out[tier[i]] += 1


@njit(cache=True, nogil=True)
def _bump_rows(series, iv, tier, rows, code, nr, out):  # pragma: no cover - compiled
    # series[iv[r], tier[r] * nr + code] += 1 for each rejected row r: by (interval, tier,
    # reason), and the totals per (tier, reason)
    for j in range(len(rows)):
        r = rows[j]
        c = tier[r] * nr + code[j]
        series[iv[r], c] += 1
        out[c] += 1


@njit(cache=True, nogil=True)
def _gather_in(j, t, tier, user, e, z, reg):  # pragma: no cover - compiled
    # the admitted rows j of the window's columns, in one pass (reg empty: no regions)
    n = len(j)
    T, K, U = np.empty(n, t.dtype), np.empty(n, tier.dtype), np.empty(n, user.dtype)
    E, Z = np.empty(n, e.dtype), np.empty(n, z.dtype)
    R = np.empty(n if len(reg) else 0, reg.dtype)
    for i in range(n):
        r = j[i]
        T[i], K[i], U[i], E[i], Z[i] = t[r], tier[r], user[r], e[r], z[r]
        if len(reg):
            R[i] = reg[r]
    return T, K, U, E, Z, R


@njit(cache=True, nogil=True)
def _rejected(code, ra, t, user, tier, att):  # pragma: no cover - compiled
    # the rows rejected (code >= 0), every column gathered in one pass: a.take(r),
    # code[r], ra[r] for r = flatnonzero(code >= 0) (att empty: the arrivals have none)
    n = 0
    for c in code:
        if c >= 0:
            n += 1
    T, U, K = np.empty(n, t.dtype), np.empty(n, user.dtype), np.empty(n, tier.dtype)
    A = np.empty(n if len(att) else 0, att.dtype)
    C, RA = np.empty(n, code.dtype), np.empty(n, ra.dtype)
    w = 0
    for i in range(len(code)):
        if code[i] >= 0:
            T[w], U[w], K[w], C[w], RA[w] = t[i], user[i], tier[i], code[i], ra[i]
            if len(att):
                A[w] = att[i]
            w += 1
    return T, U, K, A, C, RA


_NOREG = np.zeros(0, np.int16)
_NOATT = np.zeros(0, np.int64)


def build_pools(sc: Scenario) -> list[PoolSetup]:
    """Resolve each pool's cost model from its calibration profile (or fixed service time)."""
    return [pool_setup(sc, i) for i in range(len(sc.fleet.pools))]


def pool_setup(sc: Scenario, i: int) -> PoolSetup:
    """Pool i of the scenario with its cost model (`floodgate check` checks each pool)."""
    base = Path(sc.source).parent if sc.source and not sc.source.startswith("<") else None
    p = sc.fleet.pools[i]
    if p.service_time_s is not None:
        cost = CostModel.constant(p.service_time_s, p.max_batch, p.steps)
        dist = "exponential" if p.service_distribution == "profile" else p.service_distribution
    else:
        path = find_profile(p.profile, base)
        if path is None:
            raise InputError(
                sc.source, f"fleet.pools[{i}].profile",
                f"profile {p.profile!r} not found (looked in the scenario's folder, FLOODGATE_PROFILES and the shipped profiles; `floodgate profiles` lists them)",
            )
        prof = load_profile(path)
        model = p.model
        if model is None and sc.request_classes is not None:
            # the pool's own figure (images/s, plans): its first model of a class
            rc = sc.request_classes.classes
            model = (p.models or [c.model for c in rc if c.model] or [None])[0]
        cost = CostModel.from_profile(
            prof, str(path), model, p.resolution, p.steps, p.max_batch,
            field=f"fleet.pools[{i}] ({sc.source})",
        )
        dist = p.service_distribution
    f = sc.cell_fraction
    gpus = p.gpus if f == 1 or p.gpus == 0 else max(1, round(p.gpus * f))
    top = max(gpus, round((p.max_gpus or 0) * f))
    return PoolSetup(p.name, gpus, top, cost, p.max_batch, p.max_wait_s,
                     p.launch == "cycle", dist, p.price_per_gpu_hour, float(p.steps),
                     ledger_of(p, top, f))


def ledger_of(p, slots: int, f: float) -> Ledger:
    """The pool's purchase layout in the cell: reserved and spot counts scaled like its GPUs."""
    b = p.purchase
    r = 0 if b is None else min(slots, round(b.reserved * f))
    s = 0 if b is None else min(slots - r, round(b.spot * f))
    return Ledger(slots, r, s, prices_of(p))


def cell_users(sc: Scenario, demand) -> int:
    """Size of the per-user in-flight counts: the demand model's users in the cell."""
    n = getattr(demand, "users", None) or getattr(demand, "n_users", None)
    if not n:
        n = round(getattr(sc.demand, "users", 1 << 20) * sc.cell_fraction)
    return int(n) + 1


def apply_schedule(host, env: simpy.Environment, ap: ActivePolicy, spec):
    """SimPy process: switch a policy on/off or give it new parameters at its scheduled
    times, and start a watch for each entry with a trigger (sim/policies/triggers.py); the
    simulator's run and the live gateway both run this one."""
    from sim.policies.triggers import watch

    def change(when) -> None:
        if when.enabled is not None:
            ap.enabled = when.enabled
        if when.params:
            merged = spec.params(when)
            for pol in ap.each():
                pol.reconfigure(type(ap.policy).Params.model_validate(merged))
        ap.policy.refresh(host, ap)

    for i, when in enumerate(spec.schedule):
        if when.trigger is not None:
            env.process(watch(host, env, ap, spec, i, change))
    for when in sorted((w for w in spec.schedule if w.at is not None), key=lambda w: w.at):
        if when.at > env.now:
            yield env.timeout(when.at - env.now)
        host.sync(env.now)
        change(when)


class Aside:
    """Compiled per-arrival work that lets go of the GIL (a window's regions, the unique-user
    bits), done on a helper thread while the main thread goes on with the window's glue:
    with Run(threads=True) the second core idles outside the fleet loop. Without threads, done
    at once. The same results either way: a task only reads its arguments and writes its own
    arrays, and whoever needs its result waits for it (`Future.result`)."""

    def __init__(self, on: bool):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="floodgate-aside") if on else None

    def submit(self, fn, *args) -> Future:
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        f: Future = Future()
        f.set_result(fn(*args))
        return f

    def close(self) -> None:
        """Wait for what was submitted, then stop the thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


@dataclass
class Run:
    """One simulation of one scenario; `execute()` runs it, the attributes hold the counts."""

    sc: Scenario
    progress: bool = False
    threads: bool = False  # first attempts made ahead on a second thread (same results)
    # Warm start: simulate from here (rounded down to a chunk boundary) with an empty system,
    # for judging a late window (plan --window) without simulating the days before it.
    start: float = 0.0
    slice_requests: int = 1 << 20  # admitted requests handed to the fleet loop at a time
    # Arrivals admitted, served and fed back at a time: a window with more is cut short (at
    # the next arrival's time, which may be the same instant) and the rest follows as the
    # next window. Memory ~250 bytes per request of a window, so the midnight stampede of
    # the whole service (~15M) fits; a cut window draws the feedback's random numbers
    # window by window, so results depend on this size (fixed: same seed, same results).
    window_requests: int = 1 << 21
    trace: bool = False  # record each request's arrival, start and end (trace_* lists)
    fleet: Fleet = field(init=False)

    def __post_init__(self):
        sc = self.sc
        nk = len(sc.tiers)
        self.interval = sc.outputs.interval_s or max(sc.horizon / 1000.0, 1e-3)
        self.n_int = int(np.ceil(sc.horizon / self.interval)) + 1
        self.demand = build_demand(sc)
        self.pools = build_pools(sc)
        self.classes = build_classes(sc, self.pools)
        self.mix = ClassMix.of(sc) if self.classes else None
        router, order = routing(sc, self.pools, self.classes)
        self.regions = build_regions(sc)
        self.fleet = Fleet(self.pools, sc.tiers, sc.scheduler, sc.horizon, self.interval,
                           sc.outputs.warmup_s, sc.seed, outbox=self.trace, classes=self.classes,
                           router=router, order=order, regions=self.regions)
        self.gates = Gates(self.fleet, self.pools, cell_users(sc, self.demand))
        # the replica-to-fleet hop: every admitted request's latency and wait are the fleet's
        # plus the hop (summaries add it), so within SLO means fleet latency <= slo - hop
        if sc.gateway.hop_latency_s:
            self.fleet.S.slo[:] -= sc.gateway.hop_latency_s
        self.next_id = 0  # request ids handed to the fleet loop
        # with trace: (t, user, tier, noise, z, reason code or -1, request id or -1) per
        # offered arrival, and the fleet's outbox records (kind, id, t, aux); (key, attempt)
        # per offered arrival beside the first (a replay's schedule ids: live-vs-simulated pairs)
        self.trace_offered: list[tuple] = []
        self.trace_events: list[tuple] = []
        self.trace_keys: list[tuple] = []
        self.policies = build_policies(sc)
        self.spot: list = []  # spot preemption processes (sim/policies/dynamics.py)
        self.offered = np.zeros(nk, np.int64)
        self.rejected = np.zeros((nk, len(REASONS)), np.int64)
        self.ser_offered = np.zeros((self.n_int, nk), np.int64)
        self.ser_rejected = np.zeros((self.n_int, nk, len(REASONS)), np.int64)
        self.start = min(float(np.floor(max(self.start, 0.0) / sc.chunk_s) * sc.chunk_s), sc.horizon)
        # fleet regions: per users' region and interval, arrivals and those rejected on
        # arrival (admission or the fleet's gates; timeouts are the fleet's reg_drop)
        self.reg_series = (None if self.regions is None else RegionSeries(
            self.regions, self.n_int, self.interval, len(REASONS), self.start))
        self.cursor = self.start
        self._held = False  # the fleet's last call held at its end (kernel.advance)
        self.fleet.S.clock[0] = self.start
        self._rr = 0  # round robin over gateway replicas: the next request's replica
        # Demand that reacts to the run (sim/demand/feedback.py: attach sets those the
        # scenario asks for): retries, paid conversion, social offspring of served images,
        # and the counts of what was offered.
        self.retry = None  # Retry: after_reject(arrivals, reason, retry_after, rng) -> Arrivals
        self.conversion = None  # Conversion: free users turning paid
        self.social = None  # SocialOnSuccess: requests triggered by served images
        self.demand_stats = None  # DemandStats: offered, first attempts, unique users
        # Called after each window with (run, arrivals, reason or -1, retry_after): demand
        # feedback (e.g. self-exciting requests from served images) hooks in here.
        self.on_window: list = []
        self.prng = rng.stream("run", sc.seed)  # draws made during the run
        # the arrivals each window takes: first attempts and the requests created during the
        # run, with their service noise (created ones drawn from prng)
        self.feed = DemandFeed(self.demand, sc, self.start, self.prng, self.threads)
        self.aside = Aside(self.threads)
        # (time, pool, GPUs live from then on), kept by the gates: GPU cost per pool, figures
        self.gates.gpu_log = [(self.start, j, p.gpus) for j, p in enumerate(self.pools)]
        # Demand that reacts to the run: retries, paid conversion, social feedback, counts.
        from sim.demand.feedback import attach

        attach(self)

    # -- demand: first attempts and created requests, window by window (sim/demand/feed.py) --

    def add_requests(self, a: Arrivals) -> None:
        """Queue requests created during the run (retries, triggered requests) for later
        windows; `a` is time-sorted."""
        self.feed.add(a)

    @property
    def deferred(self) -> int:
        """Created requests deferred to the end of the window they fell in."""
        return self.feed.deferred

    # -- admission and the fleet --

    def sync(self, until: float) -> None:
        """Bring demand, admission and the fleet up to time `until`."""
        until = min(until, self.sc.horizon)
        self._held = False  # the fleet may have been changed since its last call
        while until > self.cursor:
            self._window(until)

    def _window(self, until: float) -> None:
        """Admit and serve the arrivals in [cursor, until), then run the feedback hooks; up
        to `window_requests` of them, else the first that many (a quota's midnight brings
        ~15M at one instant) with the window ending at the next one's time."""
        a, noise, z, nxt = self.feed.take(until, self.window_requests)
        end = until if nxt is None else nxt
        nk = len(self.sc.tiers)
        iv = np.empty(len(a), np.int64)
        got = np.zeros(nk, np.int64)
        _offered(a.t, a.tier, float(self.interval), self.n_int - 1, self.ser_offered, got, iv)
        self.offered += got
        count = partial(self._count_rows, iv, a.tier)
        # the replica each request reaches: round robin over offered requests, in time order
        R = self.sc.gateway.replicas
        rep = (self._rr + np.arange(len(a), dtype=np.int64)) % R if R > 1 else None
        self._rr = (self._rr + len(a)) % R
        ureg_f = None  # each arrival's region, made aside while admission runs
        if self.regions is not None:
            ureg_f = self.aside.submit(self.regions.user_region, self.demand, a.user)
        fates = admit_chunk(self.policies, a.t, a.user, a.tier, count, rep)
        code_all, retry_after = fates.code, fates.retry_after
        del count
        idx = np.flatnonzero(fates.admitted)
        del fates
        # each request gets its class's steps (no classes: its pool's); brownout lowers
        # them, or switches the class, per arrival inside the fleet
        steps = np.full(len(idx), np.inf, np.float32)
        cls = None
        if self.mix is not None:
            cls = self.mix.draw(a.t, a.tier, noise, idx)
        ureg = None if ureg_f is None else ureg_f.result()
        ids = np.arange(self.next_id, self.next_id + len(idx), dtype=np.int64)
        self.next_id += len(idx)
        # The fleet takes the admitted requests in slices of at most slice_requests, each run
        # up to the next slice's first arrival and held there (arrivals at that very instant
        # may follow: see kernel.advance): the same events in the same order, in bounded memory.
        n_in, lo = len(idx), 0
        while True:
            hi = min(n_in, lo + self.slice_requests)
            seg_until = float(a.t[idx[hi]]) if hi < n_in else end
            hold = hi < n_in or nxt is not None
            if lo == 0 and hi == len(a):  # nothing rejected, one slice: no gathers
                t_in, tier, user, e_in, z_in = a.t, a.tier, a.user, noise, z
                r_in = ureg
            else:
                t_in, tier, user, e_in, z_in, r_in = _gather_in(
                    idx[lo:hi], a.t, a.tier, a.user, noise, z, _NOREG if ureg is None else ureg)
                if ureg is None:
                    r_in = None
            self.feed.overlap(True)  # demand made ahead meanwhile (sim/demand/feed.py)
            try:
                fate = self.fleet.advance(t_in, ids[lo:hi], tier, user, steps[lo:hi], e_in, z_in,
                                          seg_until, hold, self._held,
                                          cls=None if cls is None else cls[lo:hi], reg=r_in)
            finally:
                self.feed.overlap(False)
            self._held = hold
            rej = fate > 0
            if rej.any():
                code_all[idx[lo:hi][rej]] = KERNEL_REASON[fate[rej] - 1]
            del t_in, tier, user, e_in, z_in, fate, rej
            if hi >= n_in:
                break
            lo = hi
        if ureg is not None:
            # the run's intervals: the region series has the same (interval, n_int)
            self.reg_series.arrivals(a.t, ureg, code_all, iv)
        del iv
        if self.trace:
            rid = np.full(len(a), -1, np.int64)
            rid[idx] = ids
            self.trace_offered += zip(a.t.tolist(), a.user.tolist(), a.tier.tolist(), noise.tolist(),
                                      z.tolist(), code_all.tolist(), rid.tolist(), strict=True)
            self.trace_events += zip(*(x.tolist() for x in self.fleet.outbox()), strict=True)
            self.trace_keys += zip(a.keys().tolist(), a.attempts().tolist(), strict=True)
        # a cut window still defers what its hooks create to its end, as a whole one would
        self.cursor, self.feed.defer_to = end, until
        if self.reg_series is not None:
            self.reg_series.tick(self.fleet.S, end)
        for hook in self.on_window:
            hook(self, a, code_all, retry_after)
        if self.retry is not None and a.key is None:
            t, user, tier, att, c, ra = _rejected(code_all, retry_after, a.t, a.user, a.tier,
                                                  _NOATT if a.attempt is None else a.attempt)
            if len(c):
                rej = Arrivals(t, user, tier, None if a.attempt is None else att)
                self.add_requests(self.retry.after_reject(rej, c, ra, self.prng))
        elif self.retry is not None and (code_all >= 0).any():  # a replay's keyed requests
            r = np.flatnonzero(code_all >= 0)
            self.add_requests(self.retry.after_reject(a.take(r), code_all[r], retry_after[r], self.prng))

    def _count_rows(self, iv, tier, rows, code) -> None:
        """Count admission's rejections `rows` (with their reason codes) per tier, reason and
        series interval."""
        nr = len(REASONS)
        out = np.zeros(self.rejected.size, np.int64)
        _bump_rows(self.ser_rejected.reshape(self.n_int, -1), iv, tier, rows,
                   code.astype(np.int64), nr, out)
        self.rejected += out.reshape(self.rejected.shape)

    # -- SimPy processes --

    def _clock(self, env: simpy.Environment, bar):
        c = self.sc.chunk_s
        while env.now < self.sc.horizon:
            yield env.timeout(min(c, self.sc.horizon - env.now))
            self.sync(env.now)
            if bar is not None:
                bar.update(env.now - bar.n)

    def execute(self) -> Run:
        env = simpy.Environment(initial_time=self.start)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.sc.horizon, initial=self.start, unit="sim-s", file=sys.stderr, delay=2.0,
                       desc=self.sc.name, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} sim-s [{elapsed}<{remaining}]")
        env.process(self._clock(env, bar))
        for ap in self.policies:
            for pol in ap.each():
                pol.attach(self, env, ap)
        from sim.policies.dynamics import attach_spot

        self.spot = attach_spot(self, env)
        for ap in self.policies:
            spec = self.sc.policies[ap.spec_index]
            if spec.schedule:
                env.process(apply_schedule(self, env, ap, spec))
        try:
            env.run(until=self.sc.horizon)
            self.sync(self.sc.horizon)
            if self.reg_series is not None:
                self.reg_series.finish(self.fleet.S)
        finally:
            self.feed.close()
            self.aside.close()
        if bar is not None:
            bar.update(self.sc.horizon - bar.n)
            bar.close()
        return self

    def set_gpus(self, pool: int, n: int) -> int:
        """Change a pool's live GPUs at the current time (call sync(now) first)."""
        return self.gates.set_gpus(pool, n)

    @property
    def gpu_log(self) -> list[tuple[float, int, int]]:
        """(time, pool, GPUs live from then on): GPU cost per pool and the figures."""
        return self.gates.gpu_log

    # -- totals that combine the two sides --

    @property
    def reg_offered(self) -> np.ndarray:
        """Arrivals per users' region so far (fleet regions; empty without)."""
        rs = self.reg_series
        return np.zeros(0, np.int64) if rs is None else rs.offered.sum(axis=0)

    @property
    def reg_rejected(self) -> np.ndarray:
        """[users' region, reason] rejected on arrival so far (timeouts: the fleet's reg_drop)."""
        rs = self.reg_series
        return np.zeros((0, len(REASONS)), np.int64) if rs is None else rs.rejected.sum(axis=0)

    def tier_counts(self, tier: int) -> tuple[int, int]:
        """Arrivals of the tier so far (retries included) and those rejected for any reason:
        admission policies, the fleet's gates, abandonment (incident triggers read these)."""
        return int(self.offered[tier]), int(self.rejections()[tier].sum())

    def rejections(self) -> np.ndarray:
        """[tier, reason] counts from admission policies and from inside the fleet."""
        S = self.fleet.S
        out = self.rejected.copy()
        for j, r in enumerate(KERNEL_REASON):
            out[:, r] += S.kernel_rej[:, j]
        out[:, REASONS.index("timeout")] += S.abandoned
        return out


def simulate(sc: Scenario, progress: bool = False, start: float = 0.0, threads: bool = False) -> Run:
    """Run a scenario to its horizon (from `start`, with an empty system: see Run.start);
    threads: first attempts made on a second thread (same results; for a lone run, not
    for a pool of runs that already fills the cores)."""
    return Run(sc, progress, threads=threads, start=start).execute()


