"""Request classes, models and routing (sim/classes.py, the lanes of sim/fleet/kernel.py).

Each request costs its own class; a batch holds one batch group; a pool serves only the
models it holds; brownout may switch a request's class. The closed-form checks are in
test_theory.py (two-class M/G/1 against Pollaczek-Khinchine and Cobham).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from sim.engine import Run
from sim.errors import InputError
from sim.fleet import kernel as K
from sim.fleet.cost import CostModel, find_profile, load_profile
from sim.metrics.summary import summarize
from sim.scenario import parse_scenario

TIERS = [
    {"name": "paid", "share": 0.3, "priority": 0, "price_per_image": 0.04, "slo_s": 30},
    {"name": "free", "share": 0.7, "priority": 1, "price_per_image": 0.0, "slo_s": 120},
]
CLASSES = [
    {"name": "t2i-1024", "model": "sdxl", "resolution": 1024, "steps": 30},
    {"name": "edit-1024", "model": "sdxl", "resolution": 1024, "steps": 20, "encode": True},
    {"name": "t2i-512", "model": "sd15", "resolution": 512, "steps": 20, "quality": 0.5},
    {"name": "sd3-1024", "model": "sd3-medium", "resolution": 1024, "steps": 28},
]
MIX = {"paid": {"t2i-1024": 0.5, "edit-1024": 0.2, "t2i-512": 0.1, "sd3-1024": 0.2},
       "free": {"t2i-1024": 0.2, "edit-1024": 0.2, "t2i-512": 0.5, "sd3-1024": 0.1}}


def scenario(rate: float = 4.0, horizon: float = 3000.0, seed: int = 0, **extra) -> dict:
    pool = {"profile": "h100-bf16", "max_batch": 8, "max_wait_s": 0.2}
    d = {
        "name": "classes", "seed": seed, "horizon": horizon, "chunk_s": 60,
        "demand": {"points": [[0, rate]], "users": 5000},
        "tiers": TIERS, "scheduler": {"discipline": "strict_priority"},
        "fleet": {"pools": [
            {"name": "xl", "gpus": 3, "models": ["sdxl"], "price_per_gpu_hour": 4.0, **pool},
            {"name": "small", "gpus": 1, "models": ["sd15"], "price_per_gpu_hour": 3.0, **pool},
            # no `models`: all its profile costs; cheapest per image (router cheapest)
            {"name": "any", "gpus": 2, "price_per_gpu_hour": 1.0, **pool},
        ]},
        "request_classes": copy.deepcopy({"classes": CLASSES, "mix": MIX}),
        "outputs": {"warmup_s": 0, "figures": False, "report": False},
    }
    d.update(extra)
    return d


def traced(d: dict) -> Run:
    return Run(parse_scenario(d), trace=True).execute()


def served(r: Run) -> tuple[dict, list[list[int]]]:
    """Each started request's class and worker, and the requests of each batch, from the
    trace: a BATCH record follows the STARTED records of its requests."""
    t, _, tier, noise, _, code, rid = (np.array(x) for x in zip(*r.trace_offered, strict=True))
    ok = rid >= 0
    cls = dict(zip(rid[ok].tolist(), r.mix.draw(t[ok], tier[ok], noise[ok]).tolist(), strict=True))
    worker, batches, open_ = {}, [], {}
    for kind, i, _, aux in r.trace_events:
        if kind == K.STARTED:
            worker[i] = aux
            open_.setdefault(aux, []).append(i)
        elif kind == K.BATCH:
            batches.append(open_.pop(i))
    return {i: (cls[i], w) for i, w in worker.items()}, batches


@pytest.mark.parametrize("router", ["listed", "cheapest", "least_loaded", "affinity"])
def test_routing_never_sends_a_request_to_a_pool_without_its_model(router):
    d = scenario(seed=2100)
    d["fleet"]["router"] = router
    d["fleet"]["pools"][2]["swap_s"] = 5.0
    r = traced(d)
    sc = r.sc
    holds = {j: set(p.models) if p.models else {"sdxl", "sd15", "sd3-medium"}
             for j, p in enumerate(sc.fleet.pools)}
    model = [c["model"] for c in CLASSES]
    pool_of = r.fleet.S.w_pool
    by_pool = np.zeros((3, len(CLASSES)), int)
    for c, w in served(r)[0].values():
        p = int(pool_of[w])
        assert model[c] in holds[p], f"{CLASSES[c]['name']} ran on {sc.fleet.pools[p].name}"
        by_pool[p, c] += 1
    # not vacuous: each pool served, the shared pool more than one model
    assert (by_pool.sum(axis=1) > 0).all(), by_pool
    assert (by_pool[2] > 0).sum() >= 2, by_pool
    assert by_pool[:, 3].sum() == by_pool[2, 3] > 0  # sd3 only where it is held
    if router == "cheapest":
        # price per image of the first model each holds: small (sd15), any (sdxl, $1), xl
        assert r.fleet.S.pool_order.tolist() == [1, 2, 0]
    s = summarize(r)
    for t in s["tiers"].values():  # every admitted request is accounted for
        assert t["admitted"] == t["completed"] + t["abandoned"] + t["in_system_end"]


def test_a_batch_holds_one_batch_group_and_fill_is_reported_per_class():
    r = traced(scenario(seed=2101))
    started, batches = served(r)
    cls_of = {i: c for i, (c, _) in started.items()}
    group = r.classes.group
    assert group[0] == group[1] != group[2]  # t2i and edit at sdxl@1024 share batches
    sizes = []
    for b in batches:
        assert len({group[cls_of[i]] for i in b}) == 1
        sizes.append(len(b))
    assert max(sizes) > 1  # it did batch
    per = summarize(r)["classes"]["per_class"]
    started = sum(v["started"] for v in per.values())
    assert started == sum(sizes)
    for v in per.values():
        assert 1 <= v["mean_batch_size"] <= 8 and 0 < v["batch_fill"] <= 1
        assert v["batch_fill"] == pytest.approx(v["mean_batch_size"] / 8, abs=1e-6)


def test_one_class_asking_for_the_pools_own_image_changes_nothing():
    # The class path (lanes, class steps instead of pool steps) against the pool path.
    base = scenario(rate=20.0, seed=2102)
    base["fleet"]["pools"] = [{"name": "xl", "gpus": 4, "profile": "h100-bf16", "model": "sdxl",
                               "steps": 20, "max_batch": 8, "max_wait_s": 0.2}]
    del base["request_classes"]
    base["policies"] = [{"policy": "brownout", "tiers": ["free"], "utilization": 0.9, "steps": 8}]
    one = copy.deepcopy(base)
    one["request_classes"] = {"classes": [{"name": "std", "model": "sdxl", "resolution": 1024,
                                           "steps": 20}]}
    a, b = summarize(traced(base)), summarize(traced(one))
    assert b.pop("classes")["per_class"]["std"]["started"] > 0
    a["policies"]["brownout"].pop("quality_proxy")  # classes: quality x steps share
    qb = b["policies"]["brownout"].pop("quality_proxy")
    assert a == b
    assert 0 < qb["free"] < 1


def test_brownout_switches_class_and_quality_follows():
    d = scenario(seed=2103, rate=12.0)  # overloaded: busy from the first seconds on
    d["policies"] = [{"policy": "brownout", "utilization": 0.5,
                      "classes": {"t2i-1024": "t2i-512", "sd3-1024": "t2i-512"}}]
    r = traced(d)
    per = summarize(r)["classes"]["per_class"]
    n = sum(v["started"] for v in per.values())
    assert per["t2i-1024"]["started"] + per["sd3-1024"]["started"] < 0.01 * n
    assert per["t2i-512"]["started"] > 0 and per["edit-1024"]["started"] > 0
    rep = summarize(r)["policies"]["brownout"]
    # quality: 0.5 for t2i-512 (switched or asked for), 1 for the edits left alone
    for t in ("paid", "free"):
        e, s512 = MIX[t]["edit-1024"], 1 - MIX[t]["edit-1024"]
        assert rep["quality_proxy"][t] == pytest.approx(e + 0.5 * s512, abs=0.03)
        assert rep["degraded_share"][t] == pytest.approx(MIX[t]["t2i-1024"] + MIX[t]["sd3-1024"], abs=0.03)


def test_affinity_swaps_models_less_than_listed():
    d = scenario(seed=2104, rate=10.0)
    for p in d["fleet"]["pools"]:
        p.pop("models", None)
        p["swap_s"] = 2.0
    swaps = {}
    for router in ("listed", "affinity"):
        d["fleet"]["router"] = router
        swaps[router] = sum(summarize(traced(d))["classes"]["model_swaps"].values())
    assert 0 < swaps["affinity"] < swaps["listed"] / 2, swaps


def test_a_schedule_changes_the_mix_at_its_time():
    d = scenario(seed=2105, horizon=2000)
    d["request_classes"]["mix"] = {"paid": {"t2i-1024": 1.0}, "free": {"t2i-512": 1.0}}
    d["request_classes"]["schedule"] = [{"at": 1000, "mix": {"free": {"t2i-1024": 1.0}}}]
    r = traced(d)
    rows = [(x[0], x[2], x[6]) for x in r.trace_offered if x[6] >= 0]
    t, tier, rid = (np.array(v) for v in zip(*rows, strict=True))
    noise = np.array([x[3] for x in r.trace_offered if x[6] >= 0])
    cls = r.mix.draw(t, tier, noise)
    free = tier == 1
    assert (cls[free & (t < 1000)] == 2).all() and (cls[free & (t >= 1000)] == 0).all()
    assert (cls[~free] == 0).all()


def test_the_class_draw_is_the_mix_row_of_its_time_and_tier_at_the_requests_own_uniform():
    # ClassMix.draw (compiled) against its definition in numpy: u = uniform_of(noise), the
    # mix row in force at t, the class where u falls among the tier's cumulative shares;
    # drawing the rows idx is drawing the gathered requests
    from sim import rng
    from sim.classes import ClassMix

    d = scenario(seed=5, horizon=2000)
    d["request_classes"]["mix"] = {"paid": {"t2i-1024": 0.5, "edit-1024": 0.3, "t2i-512": 0.2},
                                   "free": {"t2i-512": 0.7, "sd3-1024": 0.3}}
    d["request_classes"]["schedule"] = [{"at": 500, "mix": {"free": {"t2i-1024": 1.0}}},
                                        {"at": 1500, "mix": {"paid": {"sd3-1024": 1.0}}}]
    mix = ClassMix.of(parse_scenario(d))
    g = np.random.default_rng(9)
    n = 20_000
    t = np.sort(g.uniform(0, 2000, n))
    t[:3] = [0.0, 500.0, 1500.0]  # at a switch the new mix holds
    tier, noise = g.integers(0, 2, n), g.exponential(1.0, n)
    u = rng.uniform_of(noise, "classes")
    row = mix.cum[np.searchsorted(mix.times, t, side="right") - 1, tier]
    want = (u[:, None] >= row[:, :-1]).sum(axis=1)
    got = mix.draw(t, tier, noise)
    assert got.dtype == np.int16 and np.array_equal(got, want)
    idx = np.flatnonzero(g.random(n) < 0.6)
    assert np.array_equal(mix.draw(t, tier, noise, idx), want[idx])
    assert set(np.unique(got[(tier == 1) & (t >= 500)]).tolist()) == {0}
    assert len(mix.draw(t[:0], tier[:0], noise[:0])) == 0


def test_cfg_off_costs_a_cfg_batch_of_half_the_size():
    path = find_profile("h100-bf16")
    prof = load_profile(path)
    on = CostModel.from_profile(prof, str(path), "sdxl", 1024, 20, 16, cfg=True)
    off = CostModel.from_profile(prof, str(path), "sdxl", 1024, 20, 16, cfg=False)
    assert off.step[2] == pytest.approx(on.step[1])
    assert off.step[16] == pytest.approx(on.step[8])
    assert off.step[1] == pytest.approx(on.step[1])  # never below the smallest measured batch


def test_edit_encode_costs_extra():
    d = scenario(seed=2106)
    r = Run(parse_scenario(d))
    g = r.classes.group[1]
    assert r.fleet.S.cost_enc[0, g, 4] > r.fleet.S.cost_enc[0, g, 1] > 0


@pytest.mark.parametrize("change,field", [
    (lambda d: d["request_classes"]["mix"]["paid"].update({"t2i-1024": 0.9}), "request_classes.mix.paid"),
    (lambda d: d["request_classes"]["mix"].update({"gold": {"t2i-1024": 1.0}}), "request_classes.mix"),
    (lambda d: d["request_classes"]["mix"]["free"].update({"hd": 0.0}), "request_classes.mix.free"),
    (lambda d: d["fleet"]["pools"][0].update({"models": ["sdxll"]}), "fleet.pools[0].models"),
    (lambda d: d.update({"policies": [{"policy": "brownout", "classes": {"t2i-1024": "nope"}}]}),
     "policies[0].classes"),
    (lambda d: (d.pop("request_classes"), d.update(
        {"policies": [{"policy": "brownout", "classes": {"a": "b"}}]})), "policies[0].classes"),
])
def test_bad_class_references_are_input_errors(change, field):
    d = scenario()
    change(d)
    with pytest.raises(InputError) as e:
        parse_scenario(d)
    assert e.value.field == field


def test_a_class_no_pool_holds_is_an_input_error():
    d = scenario()
    d["fleet"]["pools"] = d["fleet"]["pools"][:2]  # nobody holds sd3-medium
    with pytest.raises(InputError) as e:
        Run(parse_scenario(d))
    assert e.value.field == "request_classes.classes[3]"


@pytest.mark.parametrize("router,first", [("listed", 0), ("cheapest", 1), ("least_loaded", None)])
def test_router_orders_pools_without_request_classes(router, first):
    # Light load on two pools of fixed batch time: the router decides who takes the work.
    pools = [{"name": "dear", "gpus": 4, "service_time_s": 1.0, "price_per_gpu_hour": 4.0},
             {"name": "cheap", "gpus": 4, "service_time_s": 1.0, "price_per_gpu_hour": 1.0}]
    d = scenario(rate=1.0, seed=2107, horizon=2000)
    del d["request_classes"]
    d["fleet"] = {"router": router, "pools": pools}
    r = traced(d)
    pool_of = r.fleet.S.w_pool
    n = np.bincount([int(pool_of[w]) for kind, _, _, w in r.trace_events if kind == K.STARTED],
                    minlength=2)
    assert "classes" not in summarize(r)
    if first is None:  # the less busy share first: both pools take work
        assert min(n) > 0.3 * n.sum(), n
    else:
        assert n[first] > 0.9 * n.sum(), n


def test_a_portrait_size_costs_its_pixel_ratio_of_the_square_step_and_vae():
    d = scenario(seed=2108)
    d["request_classes"]["classes"] += [
        {"name": "t2i-portrait", "model": "sdxl", "resolution": 1024, "size": "1024x1536", "steps": 30},
        {"name": "t2i-flops", "model": "sdxl", "resolution": 1024, "size": "1024x1536",
         "size_scale": 1.58, "steps": 30, "encode": True}]
    r = Run(parse_scenario(d))
    S, g = r.fleet.S, r.classes.group
    sq, pt, fl = g[0], g[4], g[5]
    assert len({sq, pt, fl}) == 3  # three batch groups: sizes never share a batch
    path = find_profile("h100-bf16")
    text = CostModel.from_profile(load_profile(path), str(path), "sdxl", 1024, 30, 8).fixed
    for b in (1, 8):
        assert S.cost_step[0, pt, b] == pytest.approx(1.5 * S.cost_step[0, sq, b])
        assert S.cost_step[0, fl, b] == pytest.approx(1.58 * S.cost_step[0, sq, b])
        # the VAE decode scales, the text encoder (same prompt tokens) does not
        tenc = text[b] - CostModel.from_profile(load_profile(path), str(path), "sdxl", 1024, 30, 8,
                                                size_scale=2.0).fixed[b] + text[b]
        assert S.cost_fixed[0, pt, b] == pytest.approx(1.5 * text[b] - 0.5 * tenc)
    assert S.cost_enc[0, fl, 4] > 0
    with pytest.raises(InputError):
        parse_scenario({**d, "request_classes": {"classes": [{"name": "x", "size": "1024x1536"}]}})
