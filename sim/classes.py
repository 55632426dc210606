"""Request classes: what a request asks for (model, size, steps, guidance, an input image to
encode), each tier's mix of them over time, and what each costs on each pool.

A batch group is the classes that can share a batch: same model, resolution (and `size`),
CFG and cost source, so one cost curve per pool. A non-square `size` is costed at its square
`resolution` times `size_scale` (default: the pixel ratio) for the step and the VAE. Steps, the input encode and the quality proxy stay per
class. A pool holds the models in its `models:` (default: every model its profile costs) and
only takes groups of those (sim/fleet/kernel.py); `router` orders the pools that could.

The class of a request is drawn from its tier's mix at its arrival with a uniform hashed from
the request's own service-noise draw (rng.uniform_of): a request keeps its class across
policy variants and chunkings (common random numbers), and no other stream moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from sim import rng
from sim.errors import InputError
from sim.fleet import kernel as K
from sim.fleet.cost import CostModel, encode_curve, find_profile, load_profile
from sim.fleet.fleet import ClassSetup, PoolSetup
from sim.scenario import Scenario

ROUTERS = {"listed": K.LISTED, "cheapest": K.CHEAPEST, "least_loaded": K.LEAST_LOADED,
           "affinity": K.AFFINITY}


def validate_classes(sc: Scenario) -> None:
    """Names the request classes, their mixes, pools and brownout refer to must exist; each
    tier's mix sums to 1; the schedule is in time order."""
    rc = sc.request_classes
    if rc is None:
        for i, spec in enumerate(sc.policies):
            if spec.policy == "brownout" and (spec.params().get("classes") or any(
                    (w.params or {}).get("classes") for w in spec.schedule)):
                raise InputError(sc.source, f"policies[{i}].classes", "needs request_classes")
        return
    names = [c.name for c in rc.classes]
    if len(set(names)) != len(names):
        raise InputError(sc.source, "request_classes.classes", "class names must be unique")
    tiers = [t.name for t in sc.tiers]
    mixes = [("request_classes.mix", rc.mix)]
    mixes += [(f"request_classes.schedule[{i}].mix", w.mix) for i, w in enumerate(rc.schedule)]
    for where, mix in mixes:
        for tier, shares in mix.items():
            if tier not in tiers:
                raise InputError(sc.source, where, f"unknown tier {tier!r}; tiers: {', '.join(tiers)}")
            for c in shares:
                if c not in names:
                    raise InputError(sc.source, f"{where}.{tier}",
                                     f"unknown class {c!r}; classes: {', '.join(names)}")
            total = sum(shares.values())
            if abs(total - 1.0) > 1e-6:
                raise InputError(sc.source, f"{where}.{tier}",
                                 f"shares must sum to 1 (they sum to {total:.6g})")
    ats = [w.at for w in rc.schedule]
    if ats != sorted(ats):
        raise InputError(sc.source, "request_classes.schedule", "must be in time order")
    models = {c.model for c in rc.classes if c.model is not None}
    for i, p in enumerate(sc.fleet.pools):
        for m in p.models or []:
            if m not in models and m != p.model:
                raise InputError(sc.source, f"fleet.pools[{i}].models",
                                 f"no request class asks for model {m!r}; "
                                 f"classes use {', '.join(sorted(models)) or 'each pool own model'}")
    for i, spec in enumerate(sc.policies):
        if spec.policy != "brownout":
            continue
        for j, when in enumerate([None, *spec.schedule]):
            params = spec.params() if when is None else (when.params or {})
            where = f"policies[{i}]" if when is None else f"policies[{i}].schedule[{j - 1}].params"
            for a, b in (params.get("classes") or {}).items():
                for c in (a, b):
                    if c not in names:
                        raise InputError(sc.source, f"{where}.classes",
                                         f"unknown class {c!r}; classes: {', '.join(names)}")


def _group_key(c) -> tuple:
    return (c.model, c.resolution, c.cfg, c.service_time_s, c.encode_s, c.size, c.scale())


def _group_name(k: tuple) -> str:
    model, res, cfg, fixed, enc, size, _ = k
    name = f"{model or '(pool model)'}@{size or res or '(pool resolution)'}"
    name += " no-cfg" if cfg is False else ""
    name += f" fixed {fixed:g}s" if fixed is not None else ""
    return name + (f" encode {enc:g}s" if enc is not None else "")


def build_classes(sc: Scenario, pools: list[PoolSetup]) -> ClassSetup | None:
    """Resolve the scenario's request classes against its pools (None: no classes)."""
    rc = sc.request_classes
    if rc is None:
        return None
    base = Path(sc.source).parent if sc.source and not sc.source.startswith("<") else None
    keys: list[tuple] = []
    group = []
    for c in rc.classes:
        k = _group_key(c)
        if k not in keys:
            keys.append(k)
        group.append(keys.index(k))
    first = [group.index(g) for g in range(len(keys))]  # a class standing for its group
    model_names = sorted({str(k[0]) for k in keys})
    cost: list[list[CostModel | None]] = []
    enc: list[list[np.ndarray | None]] = []
    for ps, p in zip(pools, sc.fleet.pools, strict=True):
        prof, path = None, None
        if p.profile is not None:
            path = find_profile(p.profile, base)
            prof = load_profile(path)  # build_pools found it already
        row, erow = [], []
        for g in range(len(keys)):
            c = rc.classes[first[g]]
            model = c.model or p.model
            if p.models is not None and model not in p.models:
                row.append(None)
                erow.append(None)
                continue
            if c.service_time_s is not None:
                cm = CostModel.constant(c.service_time_s, p.max_batch, c.steps)
            elif prof is None:
                cm = ps.cost  # a pool of fixed batch time serves every class at that time
            else:
                try:
                    cm = CostModel.from_profile(prof, str(path), model, c.resolution or p.resolution,
                                                c.steps, p.max_batch, cfg=c.cfg,
                                                field=f"request_classes.classes[{first[g]}]",
                                                size_scale=c.scale())
                except InputError:
                    if p.models is not None:  # declared: its profile must cost it
                        raise
                    row.append(None)
                    erow.append(None)
                    continue
            row.append(cm)
            e = None
            if any(cc.encode for cc, gg in zip(rc.classes, group, strict=True) if gg == g):
                if c.encode_s is not None:
                    e = c.encode_s * np.arange(p.max_batch + 1, dtype=float)
                elif prof is not None:
                    # measured encode, else the decode of the same VAE as an upper bound
                    e = encode_curve(prof, cm.model, cm.resolution, p.max_batch,
                                     size_scale=c.scale())
                    if e is None:
                        e = encode_curve(prof, cm.model, cm.resolution, p.max_batch, "vae_decode",
                                         c.scale())
            erow.append(e)
        cost.append(row)
        enc.append(erow)
    for g in range(len(keys)):
        if all(cost[j][g] is None for j in range(len(pools))):
            raise InputError(sc.source, f"request_classes.classes[{first[g]}]",
                             "no pool holds this model at this resolution (fleet.pools[].models, profile)")
    return ClassSetup(
        names=[c.name for c in rc.classes], group=group,
        steps=[float(c.steps) for c in rc.classes], encode=[c.encode for c in rc.classes],
        quality=[c.quality for c in rc.classes],
        group_names=[_group_name(k) for k in keys],
        group_model=[model_names.index(str(k[0])) for k in keys],
        cost=cost, enc=enc,
        swap_s=[p.swap_s for p in sc.fleet.pools],
    )


def routing(sc: Scenario, pools: list[PoolSetup], classes: ClassSetup | None) -> tuple[int, list[int] | None]:
    """The fleet loop's router and, for `cheapest`, the pools by price per image of the first
    batch group each holds (its own cost without request classes)."""
    if sc.fleet.router != "cheapest":
        return ROUTERS[sc.fleet.router], None

    def per_image(j: int) -> float:
        own = [c for c in classes.cost[j] if c is not None] if classes else []
        cm = own[0] if own else pools[j].cost
        b = pools[j].max_batch
        return pools[j].price_per_gpu_hour * cm.batch_time(b) / b

    return K.CHEAPEST, sorted(range(len(pools)), key=per_image)


@dataclass
class ClassMix:
    """Each tier's mix of classes over time: cum[m, tier] are the cumulative shares from
    times[m] on (times[0] = 0)."""

    times: np.ndarray
    cum: np.ndarray

    @classmethod
    def of(cls, sc: Scenario) -> ClassMix:
        rc = sc.request_classes
        names = [c.name for c in rc.classes]
        tiers = [t.name for t in sc.tiers]
        share = np.zeros((len(tiers), len(names)))
        share[:, 0] = 1.0  # a tier not named asks for the first class
        rows, times = [], [0.0]
        for m, mix in enumerate([rc.mix, *[w.mix for w in rc.schedule]]):
            share = share.copy()
            for tier, shares in mix.items():
                share[tiers.index(tier)] = [shares.get(c, 0.0) for c in names]
            if m:
                times.append(rc.schedule[m - 1].at)
            rows.append(np.cumsum(share, axis=1) / share.sum(axis=1, keepdims=True))
        return cls(np.array(times), np.array(rows))

    def draw(self, t: np.ndarray, tier: np.ndarray, noise: np.ndarray,
             idx: np.ndarray | None = None) -> np.ndarray:
        """The class of each request (arrival t, tier, its exponential service-noise draw);
        of the requests idx only when given (the same as of t[idx], tier[idx], noise[idx])."""
        C = self.cum.shape[2]
        n = len(t) if idx is None else len(idx)
        if C == 1 or n == 0:
            return np.zeros(n, np.int16)
        if idx is None:
            idx = np.arange(n)
        out = np.empty(n, np.int16)
        _draw(np.ascontiguousarray(t, np.float64), np.ascontiguousarray(tier, np.int64),
              np.ascontiguousarray(noise, np.float64).view(np.uint64), idx,
              rng.stream_salt("classes"), self.times, self.cum, out)
        return out


@njit(cache=True, nogil=True)
def _draw(t, tier, bits, idx, salt, times, cum, out):  # pragma: no cover - compiled
    # for each request: u = rng.uniform_of(noise, "classes"), its mix row m (the last
    # schedule time <= t), and its class: how many cumulative shares of its tier u reaches
    M, C = len(times), cum.shape[2]
    for j in range(len(idx)):
        i = idx[j]
        u = rng.unit_of(bits[i], salt)
        m = np.searchsorted(times, t[i], side="right") - 1
        if m < 0:
            m += M  # as numpy indexing reads -1
        row = cum[m, tier[i]]
        k = 0
        for c in range(C - 1):
            if u >= row[c]:
                k += 1
        out[j] = k
