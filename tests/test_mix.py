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
    assert res["mix"]["slow"] == {o: n for o, n in mp.split(1, point[1]).items() if n}
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
    assert set(line) >= {"mix", "cost_per_day", "single_type_cost_per_day", "evaluations"}
    assert set(line["mix"]) <= {"fast", "slow"} and line["cost_per_day"] <= line["single_type_cost_per_day"]
    saved = json.loads((tmp_path / "o" / "mix.json").read_text())
    assert saved["mix"] == line["mix"]
