"""plan --mix: the search's cheapest mix equals an exhaustive search over the same grid."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import queue_scenario

from sim.cli import main
from sim.mix import MixPlan, exhaustive, run_mix
from sim.planner import Plan, parse_slo
from sim.scenario import parse_scenario
from sim.sweep import Executor


def two_types() -> dict:
    """A fast dear GPU and a slow cheap one whose service alone (exponential, mean 2.5 s: p95
    7.5 s) cannot meet a 6 s p95: only a mix uses it; the slow pool buys spot (preempted
    often) and reserved GPUs within caps."""
    d = queue_scenario(5.0, 1.0, 4, 400, seed=5, dist="exponential")
    d["fleet"]["pools"] = [
        {"name": "fast", "gpus": 4, "service_time_s": 1.0, "service_distribution": "exponential",
         "price_per_gpu_hour": 2.0},
        {"name": "slow", "gpus": 8, "service_time_s": 2.5, "service_distribution": "exponential",
         "price_per_gpu_hour": 1.0, "purchase": {"reserved": 3, "spot": 4, "preemptions_per_gpu_day": 20,
                                                 "notice_s": 30, "restore_s": 120}}]
    return d


@pytest.mark.slow
def test_the_cheapest_mix_equals_an_exhaustive_search_over_the_same_grid():
    sc = parse_scenario(two_types())
    slos = [parse_slo("a:p95<=6s", sc)]
    with Executor(1) as ex:
        res = run_mix(Plan(sc, slos, 1, ex, step=2))
        mp = MixPlan(Plan(sc, slos, 1, ex, step=2))  # a fresh cache: every point judged anew
        best = res["single_type_cost_per_day"]
        grid = [range(0, mp.bound(j, best) + 1, 2) for j in range(2)]
        cost, point = exhaustive(mp, grid)
    assert point == tuple(res["gpus"].values()) and cost == pytest.approx(res["cost_per_day"], abs=0.01)
    assert all(n % 2 == 0 for n in point)  # on the grid of 2-GPU steps
    assert res["mix"]["slow"] == {o: n for o, n in mp.split(point)[1].items() if n}
    assert res["single_type"]["slow"] is None and res["single_type"]["fast"] is not None
    assert res["cost_per_day"] < res["single_type_cost_per_day"]  # mixing pays here
    assert res["evaluations"] < len(mp.evals) / 2  # and the staircase judged far fewer
    lo, hi = res["cost_band_per_day"]
    assert lo <= res["cost_per_day"] <= hi


def test_plan_mix_prints_one_json_line_last(tmp_path, capsys):
    d = two_types()
    d["horizon"] = 200
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    assert main(["plan", str(p), "--mix", "--slo", "a:p95<=6s", "--reps", "1", "--step", "1",
                 "--jobs", "1", "--quiet", "--json", "--out", str(tmp_path / "o")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line) >= {"mix", "types", "cost_per_day", "single_type_cost_per_day", "evaluations"}
    assert sum(sum(t.values()) for t in line["types"].values()) == sum(sum(m.values()) for m in line["mix"].values())
    assert set(line["mix"]) <= {"fast", "slow"} and line["cost_per_day"] <= line["single_type_cost_per_day"]
    saved = json.loads((tmp_path / "o" / "mix.json").read_text())
    assert saved["mix"] == line["mix"]


def two_models() -> dict:
    """Two pools holding different models: `ma` images take 1 s, `mb` images 2.5 s
    (exponential), half the requests each; neither pool can serve the other's."""
    d = queue_scenario(4.0, 1.0, 4, 400, seed=11, dist="exponential")
    d["fleet"]["pools"] = [
        {"name": "pa", "gpus": 4, "models": ["ma"], "service_time_s": 1.0,
         "service_distribution": "exponential", "price_per_gpu_hour": 2.0},
        {"name": "pb", "gpus": 4, "models": ["mb"], "service_time_s": 2.5,
         "service_distribution": "exponential", "price_per_gpu_hour": 2.0}]
    d["request_classes"] = {
        "classes": [{"name": "a-img", "model": "ma", "service_time_s": 1.0},
                    {"name": "b-img", "model": "mb", "service_time_s": 2.5}],
        "mix": {"a": {"a-img": 0.5, "b-img": 0.5}}}
    return d


@pytest.mark.slow
def test_plan_sizes_each_pool_when_pools_hold_different_models_as_an_exhaustive_search_does():
    from sim.planner import run_plan, serve_different

    sc = parse_scenario(two_models())
    slos = [parse_slo("a:p95<=9s", sc)]
    assert serve_different(sc)
    with Executor(1) as ex:
        _, res = run_plan(sc, slos, 1, ex, step=1)
        mp = MixPlan(Plan(sc, slos, 1, ex, step=1), objective="gpus")  # a fresh cache
        # every point of the grid with at most the answer's GPUs (none with more is better)
        top = res["min_gpus"]
        pts = [(x, y) for x in range(top + 1) for y in range(top + 1) if x + y <= top]
        mp.evaluate(pts)
        best = min(sum(p) for p in pts if mp.ok(p))
        scaled = Plan(sc, slos, 1, ex, step=1).smallest(0)  # one factor on the 4:4 layout
    assert not mp.serves((top, 0)) and not mp.ok((top, 0))  # pb's model needs pb's GPUs
    assert res["per_pool"] and res["min_gpus"] == best
    assert mp.ok(tuple(res["pools"].values()))  # the answer meets the SLOs in the exhaustive runs too
    # the load is 2 Erlangs of pa and 5 of pb: pb needs more than pa
    assert res["pools"]["pb"] > res["pools"]["pa"] >= 3
    assert scaled > res["min_gpus"]  # a single scale factor over 4:4 buys more GPUs
    for lo, hi in res["pools_band"].values():
        assert lo is not None and hi is not None
    assert res["ci_low"] <= res["min_gpus"] <= res["ci_high"]
    assert res["evaluations"] < len(mp.evals)


@pytest.mark.slow
def test_three_pools_the_outer_loop_and_floors_keep_the_search_exact():
    """A third type (1.6 s, 2 spot on offer): the search loops over the pool with the
    fewest levels and staircases the other two from their floors; still the exhaustive
    answer, with a fraction of its runs."""
    d = two_types()
    d["horizon"] = 300
    d["fleet"]["pools"].append({"name": "mid", "gpus": 2, "service_time_s": 1.6,
                                "service_distribution": "exponential", "price_per_gpu_hour": 1.5,
                                "purchase": {"spot": 2}})
    sc = parse_scenario(d)
    slos = [parse_slo("a:p95<=6s", sc)]
    with Executor(1) as ex:
        res = run_mix(Plan(sc, slos, 1, ex, step=2))
        mp = MixPlan(Plan(sc, slos, 1, ex, step=2))
        best = res["single_type_cost_per_day"]
        cost, point = exhaustive(mp, [range(0, mp.bound(j, best) + 1, 2) for j in range(3)])
    assert point == tuple(res["gpus"].values()) and cost == pytest.approx(res["cost_per_day"], abs=0.01)
    assert res["evaluations"] < len(mp.evals) / 3


def test_a_pool_alone_bounded_by_the_best_is_judged_at_its_bound_first():
    # The slow pool alone cannot meet a 6 s p95 (its service alone has p95 7.5 s): bounded by
    # a best cost, one judged point (its bound) settles it. The fast pool alone, searched
    # from its own size in the scenario, answers as an exhaustive scan of its counts does.
    sc = parse_scenario(two_types())
    slos = [parse_slo("a:p95<=6s", sc)]
    with Executor(1) as ex:
        mp = MixPlan(Plan(sc, slos, 1, ex, step=1))
        assert mp.alone(1, 12, bounded=True) is None and len(mp.evals) == 1
        fast = mp.alone(0, 40)
        scan = MixPlan(Plan(sc, slos, 1, ex, step=1))
        scan.evaluate([(n, 0) for n in range(1, 13)])
    assert fast == min(n for n in range(1, 13) if scan.ok((n, 0)))
    assert len(mp.evals) - 1 < 12


def two_regions() -> dict:
    """two_types in two regions: users in a and b (half each), each type in both regions
    (pools alike but for region, size and purchase caps: the fast type's reserved GPUs in ra,
    its spot in rb; the slow type's reserved in rb, spot in ra), spill-over above 2 s of
    predicted wait."""
    d = two_types()
    d["horizon"] = 300
    d["demand"]["regions"] = [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}]
    fast, slow = d["fleet"]["pools"]
    d["fleet"] = {
        "regions": [{"name": "ra", "latency_s": {"a": 0.01, "b": 0.05}},
                    {"name": "rb", "latency_s": {"a": 0.05, "b": 0.01}}],
        "spill_over": {"predicted_wait_s": 2},
        "pools": [{**fast, "name": "fast-ra", "region": "ra", "gpus": 3, "purchase": {"reserved": 1}},
                  {**slow, "name": "slow-ra", "region": "ra", "gpus": 4,
                   "purchase": {**slow["purchase"], "reserved": 0, "spot": 4}},
                  {**fast, "name": "fast-rb", "region": "rb", "gpus": 3, "purchase": {"spot": 2}},
                  {**slow, "name": "slow-rb", "region": "rb", "gpus": 4,
                   "purchase": {**slow["purchase"], "reserved": 3, "spot": 0}}]}
    return d


@pytest.mark.slow
def test_a_type_in_two_regions_is_one_dimension_split_by_the_pool_sizes_as_plan_splits():
    # A 9 s p95: the slow type alone can meet it too, with more GPUs than a few of it
    # beside the fast type (2 fast per region are over-loaded alone: 2.5 Erlangs each).
    from sim.planner import shares, split_fleet

    sc = parse_scenario(two_regions())
    slos = [parse_slo("a:p95<=9s", sc)]
    with Executor(1) as ex:
        res = run_mix(Plan(sc, slos, 1, ex, step=2))
        mp = MixPlan(Plan(sc, slos, 1, ex, step=2))
        best = res["single_type_cost_per_day"]
        cost, point = exhaustive(mp, [range(0, mp.bound(j, best) + 1, 2) for j in range(2)])
    assert [(t.name, t.pools) for t in mp.types] == [("fast", (0, 2)), ("slow", (1, 3))]
    assert point == (res["types"]["fast"]["gpus"], res["types"]["slow"]["gpus"])
    assert cost == pytest.approx(res["cost_per_day"], abs=0.01) and cost < best  # mixing pays
    assert res["evaluations"] < len(mp.evals)
    # each type's GPUs split over its regions as plan splits a fleet, each pool bought
    # cheapest first within its own caps
    fa, fb = split_fleet(point[0], shares([3, 3]))
    sa, sb = split_fleet(point[1], shares([4, 4]))
    assert res["gpus"] == {"fast-ra": fa, "slow-ra": sa, "fast-rb": fb, "slow-rb": sb}
    assert res["types"]["slow"]["pools"] == {"slow-ra": sa, "slow-rb": sb}
    assert min(fa, fb, sa, sb) > 0
    assert res["mix"]["fast-ra"] == {"reserved": 1, **({"on_demand": fa - 1} if fa > 1 else {})}
    assert res["mix"]["fast-rb"] == {"spot": min(2, fb), **({"on_demand": fb - 2} if fb > 2 else {})}
    assert res["mix"]["slow-ra"]["spot"] == min(4, sa) and "reserved" not in res["mix"]["slow-ra"]
    assert res["mix"]["slow-rb"]["reserved"] == min(3, sb) and "spot" not in res["mix"]["slow-rb"]
    assert sum(t["cost_per_day"] for t in res["types"].values()) == pytest.approx(res["cost_per_day"], abs=0.02)
