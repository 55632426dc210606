"""plan --mix: the cheapest GPUs per GPU type and purchase option meeting every SLO.

Mixing GPU types can cost less than the best single type (Mélange, arXiv 2404.14527, up to
77% for LLM serving): a cheap slow type carries the bulk and a few fast GPUs keep the tail
within the SLO, or whole GPUs of one type overshoot where another's finer step fits. The
search's dimensions are GPU types, not pools (the planner's question is how many H100s, A100s
and H200s, bought how): pools alike but for their region, size and purchase caps (`gpu_types`:
the same profile, prices and serving set-up) are one type, whose count is split over its
pools by the scenario's pool sizes as `plan` splits a fleet (planner.split_fleet). Each
candidate is a fixed fleet, GPUs per type on the plan's grid of sizes, judged like `plan`
(R replications on common random numbers, mean p95 within each SLO, 99% served), spot
preemptions included. A pool's GPUs are bought cheapest per live hour first within the caps
its own purchase block sets (reserved: what is contracted; spot: what is on offer; on
demand: no cap), so cost per day is a non-decreasing function of each type's count (for a
grid step of at least 1 / share GPUs of each of its pools, which split_fleet needs). A type
is bought up to what is on offer: where its pools set max_gpus, no more than each pool's
max_gpus (an A100 pool of 300 spot and max_gpus 300 offers 300 GPUs, not on demand beyond).

Search, exact on the grid if meeting the SLOs is monotone in each type's count (more GPUs
never hurt; the plan assumes the same): each type alone first (its single-type answer; the
first searched by the plan's own walk from its size in the scenario, the others judged at
the count where they stop being cheaper than the best so far, and searched below it only if
that count meets), which bounds every count (a count whose cost alone reaches the best
single-type cost cannot be in a cheaper mix); then for each combination of the other types,
a staircase over the last two: the fewest GPUs of the last type that meet the SLOs cannot
rise as the second-last grows, so one walk visits each level of either at most about once,
testing only points that would be cheaper than the best so far.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from sim.errors import Infeasible
from sim.fleet.purchase import OPTIONS, fixed_cost_per_day, fixed_split, prices_of
from sim.planner import Evaluation, Plan, _r, narrow, shares, split_fleet
from sim.planner import fixed_cost_per_day as plan_cost


@dataclass(frozen=True)
class GpuType:
    """One dimension of the search: pools (indices into fleet.pools) alike but for region,
    size and purchase caps; a count of the type is split over them by `share`."""

    name: str
    pools: tuple[int, ...]
    share: tuple[float, ...]


SEPARATORS = "-_."  # where a type's name may end within its pools' names


def gpu_types(sc) -> list[GpuType]:
    """The scenario's pools grouped into GPU types, in the order each type's first pool is
    listed: the same pool but for name, region, gpus, max_gpus and the reserved and spot counts
    (so the same profile or service time, prices, preemptions, models and batching). A type's
    name: its pools' common name prefix up to a separator (h100-americas, h100-europe: h100),
    else their names joined with +."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(sc.fleet.pools):
        d = p.model_dump(mode="json", exclude={"name", "region", "gpus", "max_gpus"})
        if d.get("purchase"):
            d["purchase"] = {k: v for k, v in d["purchase"].items() if k not in ("reserved", "spot")}
        groups.setdefault(repr(sorted(d.items())), []).append(i)
    pools = sc.fleet.pools
    out = []
    for members in groups.values():
        names = [pools[i].name for i in members]
        name = names[0]
        if len(names) > 1:
            pre = os.path.commonprefix(names)
            if any(n[len(pre):len(pre) + 1] not in SEPARATORS for n in names):  # mid-word
                pre = pre[:max((pre.rfind(c) for c in SEPARATORS), default=-1) + 1] or pre
            name = pre.rstrip(SEPARATORS) or "+".join(names)
        out.append(GpuType(name, tuple(members), tuple(map(float, shares([pools[i].gpus for i in members])))))
    if len({t.name for t in out}) < len(out):  # a prefix equal to another type's name
        out = [GpuType(pools[t.pools[0]].name if len(t.pools) == 1 else
                       "+".join(pools[i].name for i in t.pools), t.pools, t.share) for t in out]
    return out


class _Line(Mapping):
    """The judged points of type j alone, keyed by its count: the evaluations Plan.nearest
    walks when it searches that type's single-type answer."""

    def __init__(self, mp: MixPlan, j: int):
        self.mp, self.j = mp, j

    def __getitem__(self, n: int) -> Evaluation:
        return self.mp.evals[self.mp._unit(self.j, n)]

    def __contains__(self, n) -> bool:
        return self.mp._unit(self.j, n) in self.mp.evals

    def __iter__(self) -> Iterator[int]:
        return (k[self.j] for k in self.mp.evals if k == self.mp._unit(self.j, k[self.j]))

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass
class MixPlan:
    plan: Plan
    which: int = 0  # 0 mean, 1 lower, 2 upper bound of the quantile estimates
    evals: dict[tuple[int, ...], Evaluation] = field(default_factory=dict)
    objective: str = "cost"  # "cost": $/day; "gpus": GPUs in all (plan per pool)
    # The search's dimensions: GPU types (gpu_types), or each pool its own (plan per pool,
    # whose answer is GPUs per pool).
    by_type: bool = True

    def __post_init__(self):
        sc = self.plan.sc
        self.pools = sc.fleet.pools
        self.types = gpu_types(sc) if self.by_type else \
            [GpuType(p.name, (i,), (1.0,)) for i, p in enumerate(self.pools)]
        self.P = len(self.types)
        self.prices = [prices_of(p) for p in self.pools]  # per pool
        self.caps = [{"reserved": p.purchase.reserved if p.purchase else 0,
                      "spot": p.purchase.spot if p.purchase else 0} for p in self.pools]
        self.step = self.plan._step()
        # which types can serve each batch group of request classes (one group without them);
        # a type's pools all hold the same models
        self.holders = [{j for j, t in enumerate(self.types) if t.pools[0] in h} for h in _holders(sc)]
        self.whole = [all(j in h for h in self.holders) for j in range(self.P)]
        self._floors: list[int] | None = None  # each type's floor with the others at the cap
        self._costs: dict[tuple[int, int], float] = {}
        # The mix buys what is on offer: a type's GPUs at most what its pools' max_gpus allow
        # (each pool's share of the count within its own; None: no pool limits it). `plan`
        # per pool, like `plan`, sizes past max_gpus (the autoscaler's ceiling there).
        self.limits = [self._limit(t) if self.objective == "cost" else None for t in self.types]

    def _limit(self, t: GpuType) -> int | None:
        tops = [self.pools[i].max_gpus for i in t.pools]
        if any(m is None for m in tops):
            return None
        n = sum(tops)
        while n > 0 and any(c > m for c, m in zip(split_fleet(n, np.array(t.share)), tops, strict=True)):
            n -= 1
        return n

    # -- one candidate --

    def counts(self, point: tuple[int, ...]) -> list[int]:
        """GPUs per pool: each type's count split over its pools by their shares."""
        out = [0] * len(self.pools)
        for t, n in zip(self.types, point, strict=True):
            for i, c in zip(t.pools, split_fleet(n, np.array(t.share)), strict=True):
                out[i] = int(c)
        return out

    def split(self, point: tuple[int, ...]) -> list[dict[str, int]]:
        """GPUs per pool and purchase option: each pool's bought cheapest first within its caps."""
        return [fixed_split(n, self.caps[i], self.prices[i]) for i, n in enumerate(self.counts(point))]

    def type_cost(self, j: int, n: int) -> float:
        """$/day of n GPUs of type j (its pools' bills at their splits)."""
        key = (j, n)
        if key not in self._costs:
            t = self.types[j]
            parts = split_fleet(n, np.array(t.share))
            self._costs[key] = sum(
                fixed_cost_per_day(fixed_split(int(c), self.caps[i], self.prices[i]), self.prices[i])
                for i, c in zip(t.pools, parts, strict=True))
        return self._costs[key]

    def cost(self, point: tuple[int, ...]) -> float:
        if self.objective == "gpus":
            return float(sum(point))
        return sum(self.type_cost(j, n) for j, n in enumerate(point))

    def _scenario(self, point: tuple[int, ...], seed: int) -> dict:
        counts = self.counts(point)

        def buy(p: dict, i: int) -> None:
            s = fixed_split(counts[i], self.caps[i], self.prices[i])
            p["max_gpus"] = counts[i]  # a fixed fleet: every slot live
            p["purchase"] = {**(p.get("purchase") or {}), "reserved": s["reserved"], "spot": s["spot"]}

        return self.plan.fixed(counts, seed, buy)

    def serves(self, point: tuple[int, ...]) -> bool:
        """Does every class have a type with GPUs holding its model? (Else its requests wait
        for ever, neither served nor abandoned, and the judged figures would not see them.)"""
        return all(any(point[j] > 0 for j in h) for h in self.holders)

    def evaluate(self, points: list[tuple[int, ...]], fill=(), infer: bool = True) -> None:
        """Judge the points not judged yet, except (`infer`) those a judged point settles."""
        def todo(ps):
            return [p for p in ps if self.serves(p) and (not infer or self.implied(p) is None)]

        self.plan.judge(todo(points), self.evals, self._scenario, fill=todo(fill))

    def implied(self, point: tuple[int, ...]) -> bool | None:
        """What the judged points say of this one, more GPUs never hurting (the search's own
        assumption): it meets if a point with no more GPUs of any type meets, fails if one
        with no fewer fails; None: neither (nor judged itself)."""
        if point in self.evals:
            return self.evals[point].meets(self.plan.slos, self.which)
        for q, e in self.evals.items():
            m = e.meets(self.plan.slos, self.which)
            if m and all(a <= b for a, b in zip(q, point, strict=True)):
                return True
            if not m and all(a >= b for a, b in zip(q, point, strict=True)):
                return False
        return None

    def ok(self, point: tuple[int, ...]) -> bool:
        if not self.serves(point):
            return False
        if point in self.evals:
            return self.evals[point].meets(self.plan.slos, self.which)
        got = self.implied(point)
        if got is None:
            raise KeyError(point)  # neither judged nor settled by a judged point
        return got

    # -- the search --

    def _unit(self, j: int, n: int) -> tuple[int, ...]:
        return tuple(n if i == j else 0 for i in range(self.P))

    def size(self, j: int) -> int:
        """Type j's GPUs in the scenario."""
        return sum(self.pools[i].gpus for i in self.types[j].pools)

    def alone(self, j: int, cap: int, bounded: bool = False) -> int | None:
        """Fewest GPUs of type j alone meeting the SLOs, on the grid, at most `cap` (None:
        none does). `bounded`: cap is where the type alone stops being cheaper than the best
        so far, so cap is judged first and, when it fails, no fewer GPUs can meet (more
        GPUs never hurt) and nothing more is run; else a bisection below it. Unbounded: the
        plan's own walk (Plan.nearest) on the type's line, from its size in the scenario
        (where a planner would look first; a single step when it has none), `width` sizes a
        round; None where the walk finds the SLOs out of reach or passes `cap`."""
        st = self.step

        def unit(c: int) -> tuple[int, ...]:
            return self._unit(j, c)

        top = max(st, cap // st * st)
        if bounded:
            self.evaluate([unit(top)])
            return self._fewest(unit, 0, top) if self.ok(unit(top)) else None
        try:
            n = self.plan.nearest(
                self.which, min(top, max(st, self.size(j))), top, _Line(self, j),
                # the walk reads each count's own runs (its out-of-reach test compares them)
                lambda cs, fill=(): self.evaluate([unit(c) for c in cs], [unit(c) for c in fill], False),
                self.plan.width())
        except Infeasible:
            return None
        return n if n <= top else None

    def bound(self, j: int, best: float) -> int:
        """Largest grid count of type j whose cost alone stays below `best`."""
        n = 0
        while self.cost(self._unit(j, n + self.step)) < best - 1e-9:
            n += self.step
            if n > 1 << 24:
                break
        return n

    def _fewest(self, point, lo: int, hi: int) -> int:
        """Smallest grid n in (lo, hi] with point(n) meeting the SLOs, given that point(hi)
        meets and point(lo) does not (or lo < 0); k-ary bisection, `width` sizes a round."""
        # the counts already judged on this line are read first (the band's searches reuse
        # the answer's runs)
        ref = point(0)
        varies = [i for i, (a, b) in enumerate(zip(ref, point(self.step), strict=True)) if a != b]
        known = [k[varies[0]] for k in self.evals
                 if all(k[i] == ref[i] for i in range(len(ref)) if i not in varies)]
        return narrow(lo, hi, self.step, self.plan.width(),
                      lambda cs: self.evaluate([point(c) for c in cs]), lambda c: self.ok(point(c)), known)

    def floors(self, ub: list[int]) -> list[int] | None:
        """Each type's fewest GPUs meeting the SLOs with every other type at its `ub`: no
        point within ub meets with fewer (more GPUs never hurt). None: the box's top fails."""
        top = tuple(ub)
        self.evaluate([top])
        if not self.ok(top):
            return None
        def point(j: int, n: int) -> tuple[int, ...]:
            return tuple(n if i == j else ub[i] for i in range(len(ub)))

        # With the others at their tops a type is often not needed at all: none of it is
        # judged first for every type, in one map, and only a type needed there is narrowed
        # (a floor of 0 keeps the mixes without that type in the search).
        self.evaluate([point(j, 0) for j in range(len(ub)) if ub[j] > 0])
        out = []
        for j in range(len(ub)):
            if ub[j] <= 0 or self.ok(point(j, 0)):
                out.append(0)
            else:
                out.append(self._fewest(lambda n, j=j: point(j, n), 0, ub[j]))
        return out

    def joint(self, tops: list[int]) -> tuple[int, ...]:
        """A point meeting the SLOs when no type alone does (pools holding different models,
        say): every type from its floor with the others at their `tops`, then all grown
        together by 1, 2, 4, ... steps until it meets."""
        m, st = self.plan.width(), self.step
        f = self._floors = self.floors(list(tops))
        if f is None:
            raise Infeasible(self.plan.sc.source, "fleet.pools",
                             f"the SLOs are not met even with {', '.join(map(str, tops))} GPUs "
                             f"of {', '.join(t.name for t in self.types)}")
        k = 0
        while True:
            chain = [tuple(min(t, n + st * (2 ** i - 1 if i else 0)) for n, t in zip(f, tops, strict=True))
                     for i in range(k, k + m)]
            self.evaluate(chain)
            for c in chain:
                if self.ok(c):
                    return c
            k += m

    def _bounds(self, best: float, floors: list[int]) -> list[int]:
        """Largest grid count of each type whose cost, with the other types at their floors,
        stays below `best` (cost is a sum over types, each non-decreasing)."""
        P, st = self.P, self.step
        out = []
        for j in range(P):
            def at(n: int, j: int = j) -> tuple[int, ...]:
                return tuple(n if i == j else floors[i] for i in range(P))
            n = floors[j]
            while self.cost(at(n + st)) < best - 1e-9 and n < 1 << 24:
                n += st
            out.append(n)
        return out

    def search(self, cap: int) -> dict:
        """The cheapest point with at most `cap` GPUs of each type (and its limit)."""
        P, st = self.P, self.step
        tops = [cap if lim is None else min(cap, lim) // st * st for lim in self.limits]
        singles: dict[str, int | None] = {}
        best, best_pt = math.inf, None
        for j in range(P):  # a type alone is searched only as far as it could beat the best so far
            top = tops[j] if best_pt is None else min(tops[j], self.bound(j, best))
            n = self.alone(j, top, best_pt is not None) if top >= st and self.whole[j] else None
            singles[self.types[j].name] = n
            if n is not None and self.cost(self._unit(j, n)) < best:
                best, best_pt = self.cost(self._unit(j, n)), self._unit(j, n)
        single_cost = best if best_pt is not None else None
        if best_pt is None:  # no type alone serves everything
            if P < 2:
                raise Infeasible(self.plan.sc.source, "fleet.pools",
                                 f"no single GPU type meets the SLOs with up to {cap} GPUs")
            best_pt = self.joint(tops)
            best = self.cost(best_pt)
        if P >= 2:
            ub = [min(t, self.bound(j, best)) for j, t in enumerate(tops)]
            # Floors prune the levels below them: the joint search found them already; with
            # three types or more they save more whole staircases than they cost.
            lo = self._floors if single_cost is None else None
            if lo is None and P >= 3:
                lo = self.floors([max(u, n) for u, n in zip(ub, best_pt, strict=True)])
            lo = lo or [0] * P
            ub = [max(lo_j, min(t, u)) for lo_j, t, u in zip(lo, tops, self._bounds(best, lo), strict=True)]
            # The types with the fewest levels in their box are the outer loop; the two with
            # the most are the staircase's x and y (a walk costs about levels(x) + levels(y)).
            order = sorted(range(P), key=lambda j: ((ub[j] - lo[j]) // st, j))
            heads, (jx, jy) = order[:P - 2], order[P - 2:]
            outer = [range(lo[j], ub[j] + 1, st) for j in heads]
            for head in itertools.product(*outer):
                def place(x: int, y: int, head=head) -> tuple[int, ...]:
                    out = [0] * P
                    for j, n in zip(heads, head, strict=True):
                        out[j] = n
                    out[jx], out[jy] = x, y
                    return tuple(out)
                if self.cost(place(lo[jx], lo[jy])) >= best - 1e-9:
                    continue
                got = self._staircase(place, ub[jx], ub[jy], best, lo[jx], lo[jy])
                if got is not None and got[0] < best - 1e-9:
                    best, best_pt = got
        return {"point": best_pt, "cost_per_day": best, "single_type": singles,
                "single_type_cost_per_day": single_cost}

    def _staircase(self, pt, ux: int, uy: int, best: float, lx: int = 0, ly: int = 0):
        """Cheapest point pt(x, y) meeting the SLOs and cheaper than `best`, or None,
        with x >= lx and y >= ly (the floors: no fewer meet). f(x), the fewest y meeting at
        x, is non-increasing in x; `top` is a y known to meet at the current x (None: none
        known)."""
        st, m = self.step, self.plan.width()
        found = None
        top: int | None = None

        for x in range(lx, ux + 1, st):
            if self.cost(pt(x, ly)) >= best - 1e-9:
                break  # every y costs at least this from here on
            ylim = ly - st  # largest grid y that would still be cheaper than the best
            while ylim + st <= uy and self.cost(pt(x, ylim + st)) < best - 1e-9:
                ylim += st
            if ylim < ly:
                continue
            if top is None or top > ylim:
                self.evaluate([pt(x, ylim)])
                if not self.ok(pt(x, ylim)):
                    continue  # nothing cheaper at this x; `top` still bounds f
                top = ylim
            while top > ly:  # walk down, `width` levels a round
                chain = [top - st * (i + 1) for i in range(m) if top - st * (i + 1) >= ly]
                self.evaluate([pt(x, y) for y in chain])
                for y in chain:
                    if not self.ok(pt(x, y)):
                        break
                    top = y
                else:
                    continue
                break
            c = self.cost(pt(x, top))
            if c < best - 1e-9:
                best, found = c, (c, pt(x, top))
        return found


def _holders(sc) -> list[set[int]]:
    """Per batch group of request classes, the pools that can serve it (one group of every
    pool without classes)."""
    P = len(sc.fleet.pools)
    if sc.request_classes is None:
        return [set(range(P))]
    from sim.classes import build_classes
    from sim.engine import build_pools

    cost = build_classes(sc, build_pools(sc)).cost
    return [{j for j in range(P) if cost[j][g] is not None} for g in range(len(cost[0]))]


def exhaustive(mp: MixPlan, levels: list[range]) -> tuple[float, tuple[int, ...]] | None:
    """Every point of the grid judged: the cheapest that meets the SLOs (the check the
    search is tested against)."""
    pts = [p for p in itertools.product(*levels) if mp.serves(p)]
    mp.evaluate(pts, infer=False)
    ok = [(mp.cost(p), p) for p in pts if mp.ok(p)]
    return min(ok) if ok else None


def run_mix(plan: Plan, cap: int | None = None) -> dict:
    """The cheapest mix, its band (the same search on the lower and upper 95% bounds of the
    p95 estimates, reusing the runs), and the best single-type fleet; per GPU type (`types`:
    its GPUs, their split over its pools, options bought, $/day) and per pool (`mix`, `gpus`).
    `single_type` gives each type's fewest GPUs alone; None: none meets the SLOs for less
    than the best single type (or within `cap`)."""
    cap = cap or max(64 * plan._step(), 8 * sum(max(p.gpus, p.max_gpus or 0) for p in plan.sc.fleet.pools))
    mp = MixPlan(plan)
    res = mp.search(cap)
    band = {}
    for which, name in ((1, "low"), (2, "high")):
        other = MixPlan(plan, which, mp.evals)
        try:
            band[name] = round(other.search(cap)["cost_per_day"], 2)
        except Infeasible:
            band[name] = None
    pt, single = res["point"], res["single_type_cost_per_day"]
    counts, bought = mp.counts(pt), mp.split(pt)
    names, tnames = [p.name for p in mp.pools], [t.name for t in mp.types]
    types = {}
    for j, t in enumerate(mp.types):
        opts = {o: sum(bought[i][o] for i in t.pools) for o in OPTIONS}
        types[t.name] = {"gpus": int(pt[j]), "pools": {names[i]: counts[i] for i in t.pools},
                         "options": {o: n for o, n in opts.items() if n},
                         "cost_per_day": round(mp.type_cost(j, pt[j]), 2)}
    sc = plan.sc
    return {
        "scenario": sc.name,
        "mix": {names[i]: {o: n for o, n in bought[i].items() if n} for i in range(len(names)) if counts[i]},
        "types": types,
        "gpus": dict(zip(names, counts, strict=True)),
        "cost_per_day": round(res["cost_per_day"], 2),
        "cost_band_per_day": [band["low"], band["high"]],
        "single_type": dict(res["single_type"]),
        "single_type_cost_per_day": None if single is None else round(single, 2),
        "saving": None if single is None else round(1 - res["cost_per_day"] / single, 4),
        "prices_per_gpu_hour": {t.name: {o: round(mp.prices[t.pools[0]].per_hour(o), 4) for o in OPTIONS}
                                for t in mp.types},
        "evaluations": len(mp.evals),
        "replications": plan.reps,
        "step_gpus": mp.step,
        "slos": [f"{s.tier}:{s.quantile}<={s.seconds:g}s" for s in plan.slos],
        "window_s": list(plan.window) if plan.window else None,
        "warm_s": plan.warm_s if plan.window else None,
        # every candidate judged, in the order judged: GPUs per type, $/day, the mean quantiles
        "candidates": [
            {"gpus": dict(zip(tnames, map(int, k), strict=True)), "cost_per_day": round(mp.cost(k), 2),
             **{f"{s.tier}.{s.quantile}": _r(e.bounds(s)[0]) for s in plan.slos},
             "meets": e.meets(plan.slos)}
            for k, e in mp.evals.items()],
    }


def run_per_pool(plan: Plan, cap: int | None = None) -> dict:
    """`plan` when pools serve different classes: the fewest GPUs in all, per pool on the
    plan's grid, meeting every SLO (the mix search on GPU counts: pools alone where one can
    serve everything, else each pool's floor with the others ample, then a staircase over the
    counts; exact on the grid when more GPUs never hurt). The bracket is the same search on
    the lower and upper 95% bounds of the p95 estimates, reusing the runs."""
    sc = plan.sc
    cap = cap or max(64 * plan._step(), 8 * sum(max(p.gpus, p.max_gpus or 0) for p in sc.fleet.pools))
    mp = MixPlan(plan, objective="gpus", by_type=False)
    pt = mp.search(cap)["point"]
    band = {}
    for which, name in ((1, "low"), (2, "high")):
        try:
            band[name] = MixPlan(plan, which, mp.evals, "gpus", by_type=False).search(cap)["point"]
        except Infeasible:
            band[name] = None
    names = [p.name for p in mp.pools]
    lo, hi = band["low"], band["high"]
    return {
        "scenario": sc.name,
        "per_pool": True,
        "min_gpus": int(sum(pt)),
        "ci_low": int(min(sum(lo), sum(pt))) if lo else None,
        "ci_high": int(max(sum(hi), sum(pt))) if hi else None,
        "gpu_cost_per_day": round(plan_cost(sc, pt), 2),
        "evaluations": len(mp.evals),
        "replications": plan.reps,
        "pools": dict(zip(names, map(int, pt), strict=True)),
        "pools_band": {n: [None if lo is None else int(lo[j]), None if hi is None else int(hi[j])]
                       for j, n in enumerate(names)},
        "slos": [f"{s.tier}:{s.quantile}<={s.seconds:g}s" for s in plan.slos],
        "window_s": list(plan.window) if plan.window else None,
        "warm_s": plan.warm_s if plan.window else None,
        "sizes_per_round": plan.width(),
        "step_gpus": mp.step,
        "ignored_policies": sorted({q.policy for q in sc.policies
                                    if q.policy in {"autoscale", *plan.without}}),
        "curve": [
            {"gpus": int(sum(k)), "pools": dict(zip(names, map(int, k), strict=True)),
             **{f"{s.tier}.{s.quantile}": _r(e.bounds(s)[0]) for s in plan.slos},
             "meets": e.meets(plan.slos)}
            for k, e in sorted(mp.evals.items(), key=lambda kv: (sum(kv[0]), kv[0]))
        ],
    }
