"""floodgate sweep / optimize / sensitivity: common random numbers, intervals, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import queue_scenario

from sim.cli import main
from sim.jsonout import loads_strict
from sim.search.metrics import interval
from sim.search.space import load_base, overrides_for, parse_grid, parse_param


def _queue(tmp_path, **kw):
    # M/M/c with a short horizon and two tiers: paid served first, free shed under load.
    tiers = [{"name": "paid", "share": 0.3, "priority": 0, "price_per_image": 0.01, "slo_s": 5},
             {"name": "free", "share": 0.7, "priority": 1, "price_per_image": 0, "slo_s": 20}]
    d = queue_scenario(5.0, 1.0, 6, 1500, seed=11, tiers=tiers, discipline="strict_priority",
                       warmup=100, policies=[{"policy": "shed_reserve", "tiers": ["free"],
                                              "queue_depth": {"free": 10}}], **kw)
    p = tmp_path / "q.yaml"
    p.write_text(json.dumps(d))
    return p


def test_grid_values_lists_and_ranges(tmp_path):
    b = load_base(_queue(tmp_path))
    assert parse_grid("fleet.pools.p.gpus=4:10:2", b).values == [4, 6, 8, 10]
    assert parse_grid("fleet.pools.p.gpus=1,3,5", b).values == [1, 3, 5]
    assert parse_grid("policies.shed_reserve.queue_depth.free=0.5:1.0:0.25", b).values == [0.5, 0.75, 1.0]
    p = parse_param("fleet.pools.p.gpus=2:9", b)
    assert (p.kind, p.log, p.low, p.high) == ("int", False, 2, 9)
    assert parse_param("fleet.pools.p.service_time_s=0.5:2:log", b).kind == "float"


def test_interval_covers_and_refuses_noise():
    # 95% t-interval of the mean: covers the true mean in about 95% of samples of 5
    rng = np.random.default_rng(3)
    hits = sum(lo <= 10 <= hi for _, lo, hi in (interval(rng.normal(10, 2, 5)) for _ in range(1000)))
    assert 0.93 < hits / 1000 < 0.97  # binomial sd 0.007: about 3 sd either side
    m, lo, hi = interval(np.array([3.0, 3.0, 3.0]))
    assert m == lo == hi == 3.0
    assert interval(np.array([1.0, np.nan]))[2] == float("inf")


def test_overrides_write_lists_whole(tmp_path):
    b = load_base(_queue(tmp_path))
    o = overrides_for(b.data, {"policies.shed_reserve.queue_depth.free": 4, "fleet.pools.p.gpus": 3})
    assert o["policies"][0]["queue_depth"] == {"free": 4}
    assert o["fleet"]["pools"][0]["gpus"] == 3 and o["fleet"]["pools"][0]["name"] == "p"
    assert set(o) == {"policies", "fleet"}


def test_sweep_is_on_common_random_numbers(tmp_path, capsys):
    """A cell's mean is the mean of plain runs at seeds seed..seed+R-1; the table is tidy."""
    import sim

    q = _queue(tmp_path)
    out = tmp_path / "sw"
    assert main(["sweep", str(q), "--grid", "fleet.pools.p.gpus=5,7", "--reps", "3",
                 "--jobs", "1", "--constraint", "paid:p95<=5s", "--objective", "free_goodput",
                 "--out", str(out), "--json", "--quiet"]) == 0
    line = loads_strict(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["cells"] == 2 and line["reps"] == 3
    t = pd.read_parquet(out / "sweep.parquet")
    assert t.equals(pd.read_csv(out / "sweep.csv")) or np.allclose(
        t["mean"], pd.read_csv(out / "sweep.csv")["mean"], equal_nan=True)
    assert len(t) == 2 * t["metric"].nunique() and set(t["reps"]) == {3}
    for gpus in (5, 7):
        direct = [sim.run(str(q), seed=11 + r, fleet={"pools": [{**json.loads(q.read_text())["fleet"]["pools"][0], "gpus": gpus}]})
                  for r in range(3)]
        row = t[(t["fleet.pools.p.gpus"] == gpus) & (t["metric"] == "free.goodput")]
        assert row["mean"].item() == pytest.approx(np.mean([d.summary["tiers"]["free"]["goodput"] for d in direct]))
    # more GPUs serve more free requests on the same demand
    g = t[t["metric"] == "free_goodput"].set_index("fleet.pools.p.gpus")["mean"]
    assert g[7] > g[5]
    assert line["best"] == {"fleet.pools.p.gpus": 7}
    assert (out / "report.html").exists() and list((out / "figures").glob("*.png"))


@pytest.mark.parametrize("argv,flag,why", [
    (["--grid", "fleet.pools.p.gpuz=1,2"], "--grid", "unknown key"),
    (["--grid", "fleet.pools.q.gpus=1,2"], "--grid", "no item named 'q'"),
    (["--grid", "fleet.pools.p.gpus=a,b"], "--grid", "integer"),
    (["--grid", "fleet.pools.p.gpus=9:3:1"], "--grid", "above HIGH"),
    (["--grid", "fleet.pools.p.gpus=1:3"], "--grid", "LOW:HIGH:STEP"),
    (["--grid", "fleet.pools.p.gpus=1,2", "--objective", "max:nope"], "--objective", "unknown metric"),
    (["--grid", "fleet.pools.p.gpus=1,2", "--constraint", "gold:p95<=3s"], "--constraint", "unknown tier"),
    (["--grid", "fleet.pools.p.gpus=1,2", "--reps", "0"], "--reps", "at least 1"),
])
def test_sweep_bad_input_is_one_error_line(tmp_path, capsys, argv, flag, why):
    q = _queue(tmp_path)
    rc = main(["sweep", str(q), *argv, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {flag}: ") and why in err[0]
    assert not (tmp_path / "o").exists()


def _optimize(q, out, *extra):
    return main(["optimize", str(q), "--param", "policies.shed_reserve.queue_depth.free=2:40",
                 "--param", "fleet.pools.p.gpus=4:8", "--objective", "free_goodput",
                 "--constraint", "paid:p95<=5s", "--reps", "2", "--trials", "6", "--batch", "3",
                 "--out", str(out), "--json", "--quiet", *extra])


def test_optimize_best_is_feasible_resumes_and_compare_takes_it(tmp_path, capsys):
    import yaml

    q = _queue(tmp_path)
    out = tmp_path / "opt"
    assert _optimize(q, out, "--jobs", "1") == 0
    line = loads_strict(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["trials"] == 6 and line["feasible"]
    t = pd.read_csv(out / "trials.csv")
    assert len(t) == 6
    feas = t[t["feasible"]]
    # constraints judged on the upper end of the interval, and the best is the feasible maximum
    assert (feas["paid.p95_s.high"] <= 5).all() and (t.loc[~t["feasible"], "max_violation"] > 0).all()
    assert line["best_value"] == pytest.approx(feas["free_goodput"].max())
    # resumes: 9 trials in all, the first 6 kept
    assert _optimize(q, out, "--jobs", "1", "--trials", "9") == 0
    capsys.readouterr()
    t2 = pd.read_csv(out / "trials.csv")
    assert len(t2) == 9 and t2.head(6)["free_goodput"].tolist() == t["free_goodput"].tolist()
    loads_strict((out / "optimize.json").read_text())
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["fleet"]["pools"][0]["gpus"] == json.loads((out / "optimize.json").read_text())["best"]["fleet.pools.p.gpus"]
    assert main(["compare", str(q), "--variant", f"best={out / 'best.yaml'}", "--jobs", "1",
                 "--out", str(tmp_path / "cmp"), "--json", "--quiet"]) == 0
    cmp = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(cmp["variants"]) == {"baseline", "best"}


@pytest.mark.parametrize("argv,flag,why", [
    (["--param", "fleet.pools.p.gpus=9:3"], "--param", "above HIGH"),
    (["--param", "fleet.pools.p.gpus=a:3"], "--param", "not a number"),
    (["--param", "fleet.pools.p.gpuz=1:3"], "--param", "unknown key"),
    (["--param", "fleet.pools.p.service_time_s=0:1:log"], "--param", "LOW > 0"),
    (["--param", "fleet.pools.p.gpus=1:3:cubic"], "--param", "unknown type"),
    (["--param", "fleet.pools.p.gpus=1:3", "--objective", "served_images", "--objective", "gpu_cost",
      "--objective", "free_goodput"], "--objective", "at most two"),
    (["--param", "fleet.pools.p.gpus=1:3", "--trials", "0"], "--trials", "at least 1"),
])
def test_optimize_bad_input_is_one_error_line(tmp_path, capsys, argv, flag, why):
    rc = main(["optimize", str(_queue(tmp_path)), *argv, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {flag}: ") and why in err[0]
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o*"))


@pytest.mark.slow
def test_dask_local_cluster_equals_the_process_pool(tmp_path, capsys):
    """The same sweep and study on a real Dask LocalCluster and on the process pool."""
    q = _queue(tmp_path)
    outs = {}
    for name, ex in (("pool", ["--jobs", "2"]), ("dask", ["--cluster", "local", "--jobs", "2"])):
        assert main(["sweep", str(q), "--grid", "fleet.pools.p.gpus=5,7", "--reps", "2",
                     "--out", str(tmp_path / f"sw-{name}"), "--quiet", "--json", *ex]) == 0
        assert _optimize(q, tmp_path / f"opt-{name}", *ex) == 0
        outs[name] = capsys.readouterr().out.strip().splitlines()
    assert outs["pool"] == outs["dask"]
    a, b = (pd.read_parquet(tmp_path / f"sw-{n}" / "sweep.parquet") for n in ("pool", "dask"))
    pd.testing.assert_frame_equal(a, b)
    a, b = (pd.read_csv(tmp_path / f"opt-{n}" / "trials.csv") for n in ("pool", "dask"))
    pd.testing.assert_frame_equal(a, b)


def test_morris_ranks_the_fleet_first_and_an_inert_input_at_zero(tmp_path, capsys):
    """demand.users does not change a points-curve's rate: its elementary effects are exactly 0
    on common random numbers; the fleet size moves the free tier's p95 most."""
    q = _queue(tmp_path)
    out = tmp_path / "sens"
    assert main(["sensitivity", str(q), "--factor", "fleet.pools.p.gpus=5:9",
                 "--factor", "demand.users=500:2000", "--metric", "free.p95_s", "--samples", "3",
                 "--reps", "1", "--jobs", "1", "--out", str(out), "--json", "--quiet"]) == 0
    line = loads_strict(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["ranking"]["free.p95_s"] == ["fleet.pools.p.gpus", "demand.users"]
    t = pd.read_csv(out / "sensitivity.csv").set_index("factor")
    assert t.loc["demand.users", "mu_star"] == 0 and t.loc["fleet.pools.p.gpus", "mu_star_low"] > 0


@pytest.mark.parametrize("argv,why", [
    (["--factor", "demand.users=2000:500"], "above HIGH"),
    (["--factor", "demand.userz=1:5"], "unknown key"),
    (["--factor", "demand.users=5:5"], "nothing to vary"),
])
def test_sensitivity_bad_factor_is_one_error_line(tmp_path, capsys, argv, why):
    rc = main(["sensitivity", str(_queue(tmp_path)), *argv, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --factor: ") and why in err[0]


@pytest.mark.slow
def test_search_reports_render_in_chromium(tmp_path, capsys):
    from browser import inspect_page

    q = _queue(tmp_path)
    common = ["--reps", "2", "--jobs", "1", "--quiet", "--constraint", "paid:p95<=5s"]
    assert main(["sweep", str(q), "--grid", "fleet.pools.p.gpus=5,7", "--grid",
                 "policies.shed_reserve.queue_depth.free=5,20", "--objective", "free_goodput",
                 "--out", str(tmp_path / "sweep2"), *common]) == 0
    assert main(["sweep", str(q), "--grid", "fleet.pools.p.gpus=5:7:1",
                 "--out", str(tmp_path / "sweep1"), *common]) == 0
    assert _optimize(q, tmp_path / "optimize", "--jobs", "1") == 0
    assert main(["sensitivity", str(q), "--factor", "fleet.pools.p.gpus=5:9", "--factor",
                 "policies.shed_reserve.queue_depth.free=5:30", "--samples", "2", "--reps", "1",
                 "--jobs", "1", "--quiet", "--out", str(tmp_path / "sensitivity")]) == 0
    capsys.readouterr()
    for kind in ("sweep2", "sweep1", "optimize", "sensitivity"):
        n = len(list((tmp_path / kind / "figures").glob("*.png")))
        assert n >= 1
        page = inspect_page(tmp_path / kind / "report.html")
        assert page["title"].startswith("Floodgate")
        assert len(page["images"]) == n
        for img in page["images"]:
            assert img["complete"] and img["w"] > 100 and img["h"] > 100
        assert page["errors"] == []


def test_sobol_total_index_of_an_inert_input_is_zero(tmp_path, capsys):
    """f(A) - f(AB_j) vanishes for an input the output does not depend on, so its total index
    is 0 exactly; the fleet size carries the variance of the free p95."""
    q = _queue(tmp_path)
    assert main(["sensitivity", str(q), "--method", "sobol", "--factor", "fleet.pools.p.gpus=5:9",
                 "--factor", "demand.users=500:2000", "--metric", "free.p95_s", "--samples", "4",
                 "--reps", "1", "--jobs", "1", "--out", str(tmp_path / "sob"), "--json", "--quiet"]) == 0
    line = loads_strict(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["points"] == 16 and line["ranking"]["free.p95_s"][0] == "fleet.pools.p.gpus"
    t = pd.read_csv(tmp_path / "sob" / "sensitivity.csv").set_index("factor")
    assert t.loc["demand.users", "ST"] == 0 and t.loc["fleet.pools.p.gpus", "ST"] > 0.5
    assert main(["sensitivity", str(q), "--method", "sobol", "--factor", "demand.users=5:9",
                 "--samples", "6", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "power of two" in capsys.readouterr().err


def test_three_axis_sweep_writes_its_table_without_figures(tmp_path, capsys):
    q = _queue(tmp_path)
    out = tmp_path / "s3"
    assert main(["sweep", str(q), "--grid", "fleet.pools.p.gpus=6", "--grid",
                 "policies.shed_reserve.queue_depth.free=5,20", "--grid", "tiers.free.slo_s=10",
                 "--reps", "1", "--jobs", "1", "--out", str(out), "--json", "--quiet"]) == 0
    line = loads_strict(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == {"cells": 2, "reps": 1, "best": None, "best_metrics": None}
    loads_strict((out / "sweep.json").read_text())
    t = pd.read_parquet(out / "sweep.parquet")
    assert set(t["tiers.free.slo_s"]) == {10} and not list((out / "figures").glob("*.png"))
    assert "one- or two-parameter" in (out / "report.html").read_text()


def test_two_objectives_give_a_pareto_front_of_nondominated_trials(tmp_path, capsys):
    """NSGA-II: more GPUs cost more and serve more, so the front trades one for the other."""
    q = _queue(tmp_path)
    out = tmp_path / "nsga"
    assert main(["optimize", str(q), "--set", "fleet.pools.p.price_per_gpu_hour=2.5",
                 "--param", "fleet.pools.p.gpus=3:9", "--objective",
                 "free_goodput", "--objective", "gpu_cost", "--reps", "1", "--trials", "8",
                 "--batch", "4", "--jobs", "1", "--out", str(out), "--json", "--quiet"]) == 0
    line = loads_strict(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["trials"] == 8 and line["feasible"]
    front = pd.read_csv(out / "pareto.csv").sort_values("gpu_cost")
    trials = pd.read_csv(out / "trials.csv")
    assert len(front) >= 2 and front["free_goodput"].is_monotonic_increasing
    for _, t in trials.iterrows():  # nothing outside the front beats a front trial on both
        assert not ((front["free_goodput"] < t["free_goodput"]) & (front["gpu_cost"] > t["gpu_cost"])).any()
    assert (out / "figures" / "pareto.png").exists()
