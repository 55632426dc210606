"""Capacity plan: the smallest fleet that meets every tier's SLO over the demand curve.

Each candidate fleet size runs R replications with common random numbers (the same seeds for
every size, so sizes are compared on the same demand). A size is feasible when, for every
tier with an SLO, the mean over replications of the p95 latency is within the target and at
least 99% of admitted requests completed rather than abandoned (a fleet cannot pass by
letting users give up).
When the pools serve different request classes (different models, say), each pool is
sized on its own (sim/mix.py, run_per_pool: the fewest GPUs in all, per pool on the grid).
Search: galloping from the scenario's size, then bisection. The confidence interval brackets
the answer with the 95% bounds of the p95 estimates: ci_high is the smallest size whose upper
bound meets every SLO, ci_low the smallest whose lower bound does.

`run_plan` first screens: a search on one replication (the first seed, so its runs are
reused as the first replication of the sizes judged later), on a smaller cell of the service
when that cell stands for it (sim/cell.py: batches fill, enough GPUs), walking out from the
scenario's size. Then it judges with every replication only the sizes around the screened
answer: first, in one map, the guess and the two sizes below it (what the answer and the
bracket's lower end most often need; `prefetch`), then walking from it a step at a time
(the step doubling while the answer is not bracketed), each walk reading the sizes already
judged before running any: the answer is still the smallest size whose R replications meet
the SLOs with the size below failing, and likewise for the bracket; the screen only decides
where the search looks first. A walk's map whose runs would leave a worker idle in its last
round runs the next size's replications in that slot (`judge`'s fill): whole rounds on the
workers, the extra runs kept for when that size is judged; a map left with one run alone in
its last round runs it threaded (sweep.alone_last).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from sim.errors import Infeasible, InputError
from sim.scenario import Scenario
from sim.sweep import Executor, Job, run_job

SERVED_SHARE = 0.99


@dataclass
class Slo:
    tier: str
    quantile: str  # "p50" | "p95" | "p99"
    seconds: float


def parse_slo(text: str, sc: Scenario) -> Slo:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*:\s*(p50|p95|p99)\s*<=\s*([0-9.]+)\s*(ms|s|m)?\s*", text)
    if not m:
        raise InputError("--slo", text, "expected TIER:p95<=60s (p50, p95 or p99; s, ms or m)")
    tier, q, v, unit = m.groups()
    if tier not in [t.name for t in sc.tiers]:
        raise InputError("--slo", text, f"unknown tier {tier!r}; tiers: {', '.join(t.name for t in sc.tiers)}")
    scale = {"ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}[unit]
    return Slo(tier, q, float(v) * scale)


@dataclass
class Evaluation:
    gpus: int | tuple[int, ...]  # a fleet size, or GPUs per pool (plan --mix)
    p: dict[str, np.ndarray]  # tier -> per-replication quantile
    served: dict[str, float]  # tier -> min over replications of completed/admitted

    def bounds(self, slo: Slo) -> tuple[float, float, float]:
        x = self.p[slo.tier]
        x = x[np.isfinite(x)]
        if len(x) == 0:
            return math.inf, math.inf, math.inf
        m = float(np.mean(x))
        if len(x) < 2:
            return m, m, m
        from scipy.stats import t

        # Quantiles of queues are skewed: the interval is taken on the log scale.
        lx = np.log(np.maximum(x, 1e-9))
        hw = float(t.ppf(0.975, len(x) - 1) * np.std(lx, ddof=1) / math.sqrt(len(x)))
        g = float(np.mean(lx))
        return m, math.exp(g - hw), math.exp(g + hw)

    def meets(self, slos: list[Slo], which: int = 0) -> bool:
        """which: 0 mean, 1 lower bound, 2 upper bound of the quantile estimate."""
        return all(self.bounds(s)[which] <= s.seconds and self.served[s.tier] >= SERVED_SHARE
                   for s in slos)


@dataclass
class Plan:
    sc: Scenario
    slos: list[Slo]
    reps: int
    executor: Executor
    window: tuple[float, float] | None = None
    without: tuple[str, ...] = ()
    # With a window: each run starts this long before the window, with an empty system
    # (engine Run.start), instead of simulating everything before it. None: from t = 0.
    warm_s: float | None = None
    step: int | None = None  # GPUs between sizes judged (None: from the fleet's size)
    evals: dict[int, Evaluation] = field(default_factory=dict)
    # Replications run so far, (tag, key, replication) -> (quantile per tier, served per
    # tier): a key judged with more replications later reuses those it has (same seeds).
    runs: dict = field(default_factory=dict)
    screen_fraction: float | None = None  # the screen's cell (None: the scenario's own)

    def _mix(self) -> np.ndarray:
        return shares([p.gpus for p in self.sc.fleet.pools])

    def _scenario(self, gpus: int, seed: int) -> dict:
        return self.fixed(split_fleet(gpus, self._mix()), seed)

    def _screen_scenario(self, gpus: int, seed: int) -> dict:
        d = self._scenario(gpus, seed)
        if self.screen_fraction is not None:
            d["cell_fraction"] = self.screen_fraction
        return d

    def fixed(self, counts, seed: int, change=None) -> dict:
        """The scenario as a plan judges it: these GPUs per pool (whole service), this seed,
        no autoscaler nor the policies left out; `change(pool dict, j)` edits each pool."""
        d = self.sc.model_dump(mode="json", exclude={"source"})
        for j, (p, n) in enumerate(zip(d["fleet"]["pools"], counts, strict=True)):
            p["gpus"] = int(n)
            if p.get("max_gpus") is not None:
                p["max_gpus"] = max(p["max_gpus"], int(n))
            if change is not None:
                change(p, j)
        d["seed"] = seed
        # The plan sizes a fixed fleet: an autoscaler would move the size it is judging.
        drop = {"autoscale", *self.without}
        d["policies"] = [q for q in d["policies"] if q["policy"] not in drop]
        d["outputs"]["figures"] = False
        d["outputs"]["report"] = False
        if self.window:
            d["outputs"]["warmup_s"] = self.window[0]
            d["horizon"] = self.window[1]
        return d

    def evaluate(self, sizes: list[int], fill=()) -> None:
        self.judge(sizes, self.evals, self._scenario, fill=fill)

    def judge(self, keys: list, cache: dict, scenario, reps: int | None = None,
              tag: str | None = None, fill=()) -> None:
        """Evaluate the keys not in `cache` (a fleet size, or GPUs per pool): `scenario(key,
        seed)` is the scenario dict; R replications each (`reps`, default the plan's), seeds
        seed..seed+R-1 for every key (common random numbers), all keys' runs not yet made
        (under `tag`: one per scenario function) in one executor map. A map whose runs do not
        fill the executor's workers in whole rounds would leave a worker idle while the last
        round finishes: those slots run the next replications of the keys in `fill` (the
        sizes the search would judge next), kept in `runs` for when they are judged."""
        R = self.reps if reps is None else reps
        todo = [n for n in dict.fromkeys(keys) if n not in cache]
        start = 0.0
        if self.window and self.warm_s is not None:
            start = max(0.0, self.window[0] - self.warm_s)
        need = [(n, r) for n in todo for r in range(R) if (tag, n, r) not in self.runs]
        w = max(1, int(self.executor.jobs))
        spare = [(n, r) for r in range(R) for n in dict.fromkeys(fill)
                 if n not in cache and n not in todo and (tag, n, r) not in self.runs]
        if need and w > 1:
            need += spare[:(-len(need)) % w]
        jobs = [Job(scenario(n, self.sc.seed + r), self.sc.source, start) for n, r in need]
        res = self.executor.map(run_job, jobs, desc="plan runs")
        for (n, r), out in zip(need, res, strict=True):
            self.runs[(tag, n, r)] = (
                {s.tier: _q(out["tiers"][s.tier]["latency_s"][s.quantile]) for s in self.slos},
                {s.tier: _served(out["tiers"][s.tier]) for s in self.slos})
        for n in todo:
            runs = [self.runs[(tag, n, r)] for r in range(R)]
            p = {s.tier: np.array([q[s.tier] for q, _ in runs]) for s in self.slos}
            served = {s.tier: min(v[s.tier] for _, v in runs) for s in self.slos}
            cache[n] = Evaluation(n, p, served)

    def width(self) -> int:
        """Fleet sizes judged per round: enough that their replications fill the executor's
        workers in whole rounds (2 workers, 3 replications: 2 sizes, 6 runs), at most 4."""
        w = max(1, int(self.executor.jobs))
        return max(1, min(4, w // math.gcd(w, self.reps)))

    def smallest(self, which: int = 0, start: int | None = None, cap: int = 1 << 22) -> int:
        """Galloping then k-ary search for the smallest size meeting the SLOs (monotone);
        each round judges `width()` sizes at once."""
        step, m = self._step(), self.width()

        def ok(n: int) -> bool:
            return self.evals[n].meets(self.slos, which)

        n = max(step, start or sum(p.gpus for p in self.sc.fleet.pools))
        n = _round_up(n, step)
        self.evaluate([n])
        if ok(n):
            hi, lo = n, 0
            while hi > step and lo == 0:
                chain = []
                c = hi
                for _ in range(m):  # hi/2, hi/4, ...
                    nxt = _round_up(c // 2, step)
                    if nxt >= c:
                        break
                    chain.append(nxt)
                    c = nxt
                if not chain:
                    break
                self.evaluate(chain)
                for c in chain:
                    if ok(c):
                        hi = c
                    else:
                        lo = c
                        break
        else:
            lo = n
            while True:
                chain = [lo * 2 ** (j + 1) for j in range(m)]  # 2 lo, 4 lo, ...
                self.evaluate(chain)
                prev = lo
                for c in chain:
                    if ok(c):
                        hi = c
                        break
                    if c > cap or not self._improves(prev, c):
                        raise self._out_of_reach(c, self.evals)
                    prev = lo = c
                else:
                    continue
                break
        return narrow(lo, hi, step, m, self.evaluate, ok)

    def _out_of_reach(self, n: int, evals: dict) -> Infeasible:
        worst = ", ".join(f"{s.tier} {s.quantile} {evals[n].bounds(s)[0]:.3g}s" for s in self.slos)
        return Infeasible(self.sc.source, "tiers",
                          f"SLO out of reach: at {n} GPUs still {worst} (service time alone is too long)")

    def _improves(self, lo: int, hi: int, evals: dict | None = None) -> bool:
        """Did doubling the fleet cut some missed quantile by more than 2%?"""
        evals = self.evals if evals is None else evals
        for s in self.slos:
            a, b = evals[lo].bounds(s)[0], evals[hi].bounds(s)[0]
            if a > s.seconds and (not math.isfinite(a) or b < 0.98 * a):
                return True
            if evals[hi].served[s.tier] > evals[lo].served[s.tier] + 0.001:
                return True
        return False

    def screen(self, start: int | None = None) -> int:
        """A first guess of the answer: the search on one replication (the first seed), on
        the screen's cell when `screen_cell` gives one. Its runs on the scenario's own cell
        are the first replication of the sizes judged later (the same jobs)."""
        self.screen_fraction = self.screen_cell()
        self.screened: dict[int, Evaluation] = {}
        if self.screen_fraction is None:
            tag, scen = None, self._scenario  # the same runs as replication 0
        else:
            tag, scen = f"cell {self.screen_fraction:g}", self._screen_scenario
        w = max(1, int(self.executor.jobs))
        n = start or sum(p.gpus for p in self.sc.fleet.pools)
        return self.nearest(0, n, evals=self.screened, width=min(4, w),
                            evaluate=lambda keys, fill=(): self.judge(keys, self.screened, scen, 1, tag, fill))

    def prefetch(self, guess: int) -> None:
        """Judge, in one map, the sizes the answer and its bracket most often need around the
        screen's guess (the screen found `guess` meeting and the size below failing on one
        replication): guess - 2 steps to guess, i.e. the answer at guess or a step below
        with the size under it failing, and the lower end of the bracket a step lower. With 3
        replications on 2 workers: 9 runs, the last alone in its round and threaded
        (sweep.alone_last), where walking one size at a time took 7 rounds. No run ahead
        fills that round: guess + a step is needed only when the answer is the guess and
        its upper bound misses, and the threaded run saves ~20% of a run every time. The
        walks that follow read these before running anything."""
        st = self._step()
        g = max(st, _round_up(guess, st))
        self.evaluate([c for c in (g - 2 * st, g - st, g) if c >= st])  # no fleet of 0 GPUs

    def screen_cell(self) -> float | None:
        """A cell a tenth of the scenario's for the screen, when every size on the plan's grid
        is whole GPUs there and the cell stands for the service at the scenario's fleet
        (sim/cell.py: no regime warning, so batches fill and pools keep >= 30 GPUs)."""
        from sim.cell import regime
        from sim.demand import build_demand
        from sim.engine import build_pools
        from sim.scenario import parse_scenario

        f = self.sc.cell_fraction / 10
        step = self._step()
        if step * f < 1 or abs(step * f - round(step * f)) > 1e-9:
            return None
        total = sum(p.gpus for p in self.sc.fleet.pools)
        d = self._screen_scenario(total, self.sc.seed)
        d["cell_fraction"] = f
        cell = parse_scenario(d, self.sc.source)
        return None if regime(cell, build_demand(cell), build_pools(cell))["warnings"] else f

    def nearest(self, which: int, start: int, cap: int = 1 << 22, evals: dict | None = None,
                evaluate=None, width: int = 1) -> int:
        """The smallest size meeting the SLOs searched from `start`: outwards a step at a
        time, doubling the step while the answer is not bracketed, then k-ary search;
        `width` sizes a round. First judges start and the size below it together (the pair
        that confirms an answer at start). Sizes already judged next to the walk's end are
        read before anything new is run (free: the screen's or another walk's), and a round
        that would leave a worker idle runs the next size's replications in its place
        (`judge`'s fill). The screen passes its own evals; plan --mix a GPU type's line."""
        step = self._step()
        evals = self.evals if evals is None else evals
        evaluate = self.evaluate if evaluate is None else evaluate

        def ok(n: int) -> bool:
            return evals[n].meets(self.slos, which)

        def chain(base: int, d: int, sign: int) -> tuple[list[int], int]:
            out = []
            for _ in range(width):
                base += sign * d
                if base < step:
                    break
                out.append(base)
                d *= 2
            return out, d

        def judged(base: int, sign: int) -> list[int]:
            """The sizes already judged next to base outwards, one step apart."""
            out, c = [], base + sign * step
            while c >= step and c in evals:
                out.append(c)
                c += sign * step
            return out

        def walk(base: int, d: int, sign: int) -> tuple[list[int], int]:
            cs = judged(base, sign)
            if cs:
                return cs, d
            cs, d = chain(base, d, sign)
            if cs:
                evaluate(cs, [c for c in chain(cs[-1], d, sign)[0][:1]])
            return cs, d

        n = max(step, _round_up(start, step))
        evaluate([c for c in (n - step, n) if c >= step])
        if ok(n):
            hi, lo, d = n, 0, step
            while True:
                cs, d = walk(hi, d, -1)
                if not cs:
                    break
                for c in cs:  # descending: the last that meets is the new hi
                    if not ok(c):
                        lo = c
                        break
                    hi = c
                if lo:
                    break
        else:
            lo, d = n, step
            hi = None
            base = n  # the fleet must keep improving each time it doubles (as in smallest)
            while hi is None:
                cs, d = walk(lo, d, 1)
                for c in cs:
                    if ok(c):
                        hi = c
                        break
                    stuck = c >= 2 * base and not self._improves(base, c, evals)
                    if c >= 2 * base:
                        base = c
                    if c > cap or stuck:
                        raise self._out_of_reach(c, evals)
                    lo = c
        return narrow(lo, hi, step, width, evaluate, ok, evals)

    def _step(self) -> int:
        """Sizes are whole GPUs of the simulated cell, and no finer than a power of ten of
        about 2% of the scenario's fleet (950 GPUs: steps of 10), which replications could
        not tell apart anyway; `step` overrides."""
        cell = max(1, round(1 / self.sc.cell_fraction))
        if self.step is not None:
            return max(cell, int(self.step))
        total = sum(p.gpus for p in self.sc.fleet.pools)
        return max(cell, 10 ** int(math.floor(math.log10(total / 50))) if total >= 50 else 1)


def _served(t: dict) -> float:
    """Share of admitted requests that completed rather than gave up waiting (requests still
    in the system at the end of the window are neither)."""
    done = t["completed"] + t["abandoned"]
    return t["completed"] / done if done else 1.0


def _q(v) -> float:
    return math.inf if v is None else float(v)


def _round_up(n: int, step: int) -> int:
    return int(math.ceil(n / step) * step)


def narrow(lo: int, hi: int, step: int, width: int, evaluate, ok, known=()) -> int:
    """k-ary search between a failing `lo` (0 or below: none) and a meeting `hi` for the
    smallest size on the `step` grid that meets (monotone): each round `evaluate`s up to
    `width` sizes at once; the smallest that meets is the new hi, the one below it the new lo.
    Sizes in `known` (already judged) between the ends are read first, for free."""
    known = sorted(known)
    while hi - lo > step:
        cs = [c for c in known if lo < c < hi]
        if not cs:
            cs = sorted({_round_up(lo + (hi - lo) * (j + 1) // (width + 1), step) for j in range(width)})
            cs = [c for c in cs if lo < c < hi]
            if not cs:
                break
            evaluate(cs)
        for c in cs:
            if ok(c):
                hi = c
                break
            lo = c
    return hi


def shares(gpus) -> np.ndarray:
    """Each pool's share of a fleet of pools of these sizes (equal shares when all are 0)."""
    g = np.array(gpus, float)
    return g / g.sum() if g.sum() else np.full(len(g), 1.0 / len(g))


def split_fleet(total: int, mix: np.ndarray) -> np.ndarray:
    """Whole GPUs per pool at the mix, summing to total (largest remainders). A total grown by
    at least 1 / share GPUs of every pool with a share never leaves a pool fewer (the floor
    alone rises by one)."""
    raw = total * mix
    out = np.floor(raw).astype(int)
    for j in np.argsort(-(raw - out))[: total - out.sum()]:
        out[j] += 1
    return out


def run_plan(sc: Scenario, slos: list[Slo], reps: int, executor: Executor,
             window: tuple[float, float] | None = None,
             without: tuple[str, ...] = (), warm_s: float | None = None,
             step: int | None = None) -> tuple[Plan, dict]:
    """Plan a fixed fleet; `without` names policies to leave out (e.g. shedding, which
    would otherwise let a small fleet pass by rejecting the overflow); `warm_s`: runs start
    that long before the window (None: at t = 0)."""
    plan = Plan(sc, slos, reps, executor, window, tuple(without), warm_s, step)
    if serve_different(sc):
        from sim.mix import run_per_pool  # the per-pool search is plan --mix's, on GPU counts

        return plan, run_per_pool(plan)
    guess = plan.screen()
    plan.prefetch(guess)
    best = plan.nearest(0, guess)
    ci_high = plan.nearest(2, best)
    ci_low = plan.nearest(1, best)
    counts = split_fleet(best, plan._mix())
    result = {
        "scenario": sc.name,
        "min_gpus": int(best),
        "ci_low": int(min(ci_low, best)),
        "ci_high": int(max(ci_high, best)),
        "gpu_cost_per_day": round(fixed_cost_per_day(sc, counts), 2),
        "evaluations": len(plan.evals),
        "replications": reps,
        "runs": sum(1 for k in plan.runs if k[0] is None),
        "screen": {"cell_fraction": plan.screen_fraction or sc.cell_fraction, "guess": int(guess),
                   "sizes": len(plan.screened),
                   "runs": sum(1 for k in plan.runs if k[0] is not None) if plan.screen_fraction else len(plan.screened),
                   "curve": [{"gpus": n, **{f"{s.tier}.{s.quantile}": _r(e.bounds(s)[0]) for s in slos},
                              "meets": e.meets(slos)} for n, e in sorted(plan.screened.items())]},
        "pools": {p.name: int(n) for p, n in zip(sc.fleet.pools, counts, strict=True)},
        "slos": [f"{s.tier}:{s.quantile}<={s.seconds:g}s" for s in slos],
        "window_s": list(window) if window else None,
        "warm_s": warm_s if window else None,
        "sizes_per_round": plan.width(),
        "step_gpus": plan._step(),
        "ignored_policies": sorted({q.policy for q in sc.policies
                                    if q.policy in {"autoscale", *without}}),
        "curve": [
            {"gpus": n, **{f"{s.tier}.{s.quantile}": _r(e.bounds(s)[0]) for s in slos},
             "meets": e.meets(slos)}
            for n, e in sorted(plan.evals.items())
        ],
    }
    return plan, result


def serve_different(sc: Scenario) -> bool:
    """Do the pools serve different request classes (models they hold, or sizes their
    profiles cost)? Then one scale factor over the scenario's pool sizes is no answer: each
    pool is sized to its own classes' load (sim/mix.py, run_per_pool)."""
    if sc.request_classes is None or len(sc.fleet.pools) < 2:
        return False
    from sim.classes import build_classes
    from sim.engine import build_pools

    cs = build_classes(sc, build_pools(sc))
    return len({tuple(c is not None for c in row) for row in cs.cost}) > 1


def fixed_cost_per_day(sc: Scenario, counts) -> float:
    """$/day of a fixed fleet of these GPUs per pool (whole service), all live: each pool's
    bill at its purchase layout (sim/fleet/purchase.py; reserved first, spot last)."""
    from sim.engine import ledger_of

    total = 0.0
    for p, n in zip(sc.fleet.pools, counts, strict=True):
        total += 24 * ledger_of(p, max(int(n), p.max_gpus or 0), 1.0).hourly(int(n))
    return total


def _r(x: float) -> float | None:
    return None if not math.isfinite(x) else round(x, 4)


def plan_over_draws(scenarios: list[Scenario], slos: list[Slo], reps: int, executor: Executor,
                    quantile: float, window: tuple[float, float] | None = None,
                    without: tuple[str, ...] = (), start: int | None = None,
                    warm_s: float | None = None, step: int | None = None) -> dict:
    """Plan under uncertain demand: the smallest fleet meeting the SLOs for each of the
    demand draws `scenarios` (each with the same seeds at every size: common random numbers),
    and the size that suffices for a share `quantile` of them (the inverted-CDF quantile of
    the per-draw sizes; sizes are monotone per draw, so it is the smallest fleet that passes
    in at least that share of the draws)."""
    sizes = [Plan(s, slos, reps, executor, window, tuple(without), warm_s, step).smallest(0, start=start)
             for s in scenarios]
    q = int(np.quantile(np.array(sizes), quantile, method="inverted_cdf"))
    return {"quantile": quantile, "min_gpus": q, "draws": len(sizes), "per_draw": sizes,
            "band": [int(min(sizes)), int(np.median(sizes)), int(max(sizes))]}


def plan_pools_over_draws(scenarios: list[Scenario], slos: list[Slo], reps: int,
                          executor: Executor, quantile: float,
                          window: tuple[float, float] | None = None, without: tuple[str, ...] = (),
                          warm_s: float | None = None, step: int | None = None) -> dict:
    """plan_over_draws when the pools serve different classes (serve_different): each draw's
    fewest GPUs per pool (sim/mix.py, run_per_pool), then the fleet per pool that covers a
    share `quantile` of the draws (k = ceil(quantile x draws), as the inverted-CDF quantile):
    a fleet with at least a draw's answer in every pool meets that draw's SLOs (more GPUs in a
    pool never hurt, the per-pool search's own assumption), so the answer is the fewest GPUs
    in all over the elementwise maxima of k of the draws' answers, every k-subset tried (up to
    20,000 of them; beyond, each pool's own quantile, which may cover fewer draws:
    `covered` says how many it does)."""
    from itertools import combinations

    from sim.mix import run_per_pool

    per = []
    names: list[str] = []
    for s in scenarios:
        res = run_per_pool(Plan(s, slos, reps, executor, window, tuple(without), warm_s, step))
        names = list(res["pools"])
        per.append([res["pools"][n] for n in names])
    a = np.array(per, dtype=np.int64)  # [draw, pool]
    n = len(a)
    k = max(1, min(n, math.ceil(quantile * n - 1e-12)))
    if math.comb(n, k) <= 20_000:
        best = min((a[list(c)].max(axis=0) for c in combinations(range(n), k)),
                   key=lambda v: (int(v.sum()), tuple(v)))
    else:
        best = np.array([np.quantile(a[:, j], quantile, method="inverted_cdf") for j in range(a.shape[1])])
    covered = int((a <= best).all(axis=1).sum())
    tot = a.sum(axis=1)
    return {"quantile": quantile, "per_pool": True, "min_gpus": int(best.sum()),
            "pools": {m: int(x) for m, x in zip(names, best, strict=True)},
            "draws": n, "covered": covered,
            "per_draw": [int(x) for x in tot],
            "per_draw_pools": [{m: int(x) for m, x in zip(names, row, strict=True)} for row in a],
            "band": [int(tot.min()), int(np.median(tot)), int(tot.max())],
            "pools_band": {m: [int(a[:, j].min()), int(a[:, j].max())] for j, m in enumerate(names)}}
