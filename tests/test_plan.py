"""Capacity plans against the M/M/c sojourn-time distribution, and the executors' agreement."""

from __future__ import annotations

import json
import math

import pytest
from helpers import queue_scenario
from queueing import erlang_c
from scipy.optimize import brentq

from sim.cli import main
from sim.scenario import parse_scenario
from sim.sweep import Executor, Job, alone_last, run_job


def mmc_sojourn_quantile(lam: float, mu: float, c: int, q: float) -> float:
    """Quantile of the FIFO M/M/c sojourn time: Wq (atom at 0 + exponential) plus Exp(mu)."""
    C, th = erlang_c(lam, mu, c), c * mu - lam

    def tail(t):
        if abs(th - mu) < 1e-12:
            return math.exp(-mu * t) * (1 + mu * t)
        return (th * math.exp(-mu * t) - mu * math.exp(-th * t)) / (th - mu)

    return brentq(lambda t: (1 - C) * math.exp(-mu * t) + C * tail(t) - (1 - q), 0, 1e4)


def test_plan_finds_the_analytic_minimum(tmp_path):
    lam, slo = 8.0, 4.0
    # analytic: 9 GPUs give p95 4.34 s (miss), 10 give 3.33 s (meet)
    assert mmc_sojourn_quantile(lam, 1.0, 9, 0.95) > slo > mmc_sojourn_quantile(lam, 1.0, 10, 0.95)
    d = queue_scenario(lam, 1.0, 4, 20000, seed=1, warmup=500)
    d["fleet"]["pools"][0]["price_per_gpu_hour"] = 2.0
    path = tmp_path / "s.json"
    path.write_text(json.dumps(d))  # JSON is YAML
    out = tmp_path / "plan"
    assert main(["plan", str(path), "--slo", f"a:p95<={slo}s", "--reps", "3", "--jobs", "2",
                 "--out", str(out), "--json", "--quiet"]) == 0
    res = json.loads((out / "plan.json").read_text())
    assert res["min_gpus"] == 10
    assert res["ci_low"] <= 10 <= res["ci_high"]
    assert res["gpu_cost_per_day"] == pytest.approx(10 * 2.0 * 24)
    row = {r["gpus"]: r for r in res["curve"]}
    assert row[10]["a.p95"] == pytest.approx(mmc_sojourn_quantile(lam, 1.0, 10, 0.95), rel=0.03)
    assert not row[9]["meets"]
    assert {"plan.json", "plan.md", "capacity_vs_slo.png", "report.html"} <= {p.name for p in out.iterdir()}


def test_unreachable_slo_is_a_clear_error(tmp_path, capsys):
    d = queue_scenario(2.0, 1.0, 4, 2000, seed=1)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(d))
    # p95 of the service time alone is 3 s: no fleet gives 1 s
    # exit 3: the input is fine, the question has no answer within bounds
    assert main(["plan", str(path), "--slo", "a:p95<=1s", "--reps", "2", "--jobs", "1", "--quiet",
                 "--out", str(tmp_path / "p")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SLO out of reach" in err[0]
    assert main(["plan", str(path), "--slo", "nosuch:p95<=1s", "--quiet"]) == 2


def test_compare_json_line(tmp_path, capsys):
    d = queue_scenario(6.0, 1.0, 8, 2000, seed=4)
    (tmp_path / "s.json").write_text(json.dumps(d))
    (tmp_path / "v.yaml").write_text("fleet: {pools: [{name: p, gpus: 12, service_time_s: 1.0, "
                                     "service_distribution: exponential}]}\n")
    assert main(["compare", str(tmp_path / "s.json"), "--variant", f"big={tmp_path / 'v.yaml'}",
                 "--jobs", "1", "--quiet", "--json", "--out", str(tmp_path / "c")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line["variants"]) == {"baseline", "big"}
    base, big = line["variants"]["baseline"]["tiers"]["a"], line["variants"]["big"]["tiers"]["a"]
    assert big["p95_s"] < base["p95_s"] and line["variants"]["big"]["gpu_cost"] >= 0


def test_dask_local_cluster_equals_process_pool():
    jobs = [Job(queue_scenario(7.0, 1.0, 8, 3000, seed=s), "<test>") for s in range(4)]
    with Executor(jobs=2) as ex:
        local = ex.map(run_job, jobs)
    with Executor(jobs=2, cluster="local") as ex:
        dask = ex.map(run_job, jobs)
    serial = [run_job(j) for j in jobs]
    assert local == dask == serial
    assert len({json.dumps(r["tiers"]) for r in local}) == 4  # the seeds differ
    parse_scenario(jobs[0].scenario)  # still a valid scenario after the round trip


def test_a_run_alone_in_the_last_round_is_threaded_with_the_same_results():
    # sweep.alone_last: 3 runs on 2 workers leave the third alone in its round, so it makes
    # its first attempts on a second thread (the idle core); its summary is the unthreaded one
    jobs = [Job(queue_scenario(7.0, 1.0, 8, 3000, seed=s), "<test>") for s in range(4)]
    assert [j.threads for j in alone_last(jobs[:3], 2)] == [False, False, True]
    assert [j.threads for j in alone_last(jobs[:1], 2)] == [True]
    assert not any(j.threads for j in alone_last(jobs, 2) + alone_last(jobs[:3], 1))
    assert [j.threads for j in alone_last(jobs, 3)] == [False, False, False, True]
    with Executor(jobs=2) as ex:
        got = ex.map(run_job, jobs[:3])
    assert got == [run_job(j) for j in jobs[:3]]


def test_a_worker_frees_each_run_before_its_next():
    # a Run sits in reference cycles (hooks and policies hold it): run_job frees it itself,
    # or a plan's worker kept several whole-service runs (~1 GB each) until a full pass of
    # the collector. With the collector off, no Run may outlive its job.
    import gc

    from sim.engine import Run

    job = Job(queue_scenario(7.0, 1.0, 8, 3000, seed=3), "<test>")
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):
            run_job(job)
            assert not [o for o in gc.get_objects() if isinstance(o, Run)]
    finally:
        gc.enable()


def test_plan_judges_several_sizes_per_round_and_dask_agrees_with_the_pool():
    from sim.planner import parse_slo, run_plan

    sc = parse_scenario(queue_scenario(8.0, 1.0, 4, 6000, seed=2, warmup=300))
    slos = [parse_slo("a:p95<=4s", sc)]
    with Executor(jobs=2) as ex:
        plan, pool = run_plan(sc, slos, 3, ex)
    with Executor(jobs=2, cluster="local") as ex:
        _, dask = run_plan(sc, slos, 3, ex)
    assert plan.width() == 2 and pool["sizes_per_round"] == 2 and pool["step_gpus"] == 1
    assert pool == dask
    assert 9 <= pool["min_gpus"] <= 11  # the analytic minimum is 10 (test above)


def test_warm_start_simulates_only_from_its_start():
    # A run from `start` sees exactly the first attempts at or after it, and its fleet is
    # charged from then on; from 0 it is the ordinary run, byte for byte.
    from sim.demand import build_demand, chunk_arrivals
    from sim.engine import Run, simulate
    from sim.metrics.summary import summarize

    sc = parse_scenario(queue_scenario(6.0, 1.0, 8, 4000, seed=4, warmup=2500))
    assert summarize(Run(sc, start=0.0).execute()) == summarize(simulate(sc))
    warm = Run(sc, start=2000.0).execute()
    model = build_demand(sc)
    c = sc.chunk_s
    firsts = sum(int((chunk_arrivals(model, sc, k, sc.horizon).t >= 2000.0).sum())
                 for k in range(int(math.ceil(sc.horizon / c))))
    assert int(warm.offered.sum()) == firsts
    assert warm.gpu_log[0][0] == 2000.0
    s, full = summarize(warm), summarize(simulate(sc))
    # the window after the warm-up is judged alike (M/M/8 at rho 0.75 forgets in seconds)
    assert s["fleet"]["gpu_hours"] == full["fleet"]["gpu_hours"]
    assert abs(s["tiers"]["a"]["latency_s"]["p95"] / full["tiers"]["a"]["latency_s"]["p95"] - 1) < 0.05


def test_plan_warm_start_on_the_cli(tmp_path, capsys):
    d = queue_scenario(6.0, 1.0, 8, 4000, seed=4)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(d))
    assert main(["plan", str(path), "--slo", "a:p95<=5s", "--warm", "10m", "--quiet"]) == 2
    assert "--warm" in capsys.readouterr().err  # needs --window
    out = tmp_path / "plan"
    assert main(["plan", str(path), "--slo", "a:p95<=5s", "--window", "3000:4000", "--warm", "10m",
                 "--reps", "2", "--jobs", "1", "--out", str(out), "--json", "--quiet"]) == 0
    res = json.loads((out / "plan.json").read_text())
    assert res["warm_s"] == 600.0 and res["window_s"] == [3000.0, 4000.0] and res["min_gpus"] >= 7


def test_plan_step_is_coarse_for_a_big_fleet(root):
    from sim.planner import Plan, parse_slo
    from sim.scenario import load_scenario

    sc = load_scenario(root / "scenarios/ghibli_2025.yaml")  # 1,520 GPUs, the whole service
    slos = [parse_slo("pro:p95<=30s", sc)]
    assert Plan(sc, slos, 3, Executor(jobs=1))._step() == 10
    assert Plan(sc, slos, 3, Executor(jobs=1), step=25)._step() == 25
    cell = load_scenario(root / "scenarios/ghibli_2025.yaml", {"cell_fraction": 0.01})
    assert Plan(cell, slos, 3, Executor(jobs=1))._step() == 100  # one GPU of the cell


@pytest.mark.slow
def test_search_from_a_guess_finds_what_the_global_search_finds():
    # run_plan walks from the screen's guess: from any start, near or far, on either side,
    # the same smallest size (with every replication) as galloping from the fleet's size
    from sim.planner import Plan, parse_slo

    sc = parse_scenario(queue_scenario(8.0, 1.0, 4, 3000, seed=2, warmup=300))
    slos = [parse_slo("a:p95<=4s", sc)]
    with Executor(jobs=1) as ex:
        p = Plan(sc, slos, 3, ex)  # one cache of evaluations: each size is run once
        want = [p.smallest(w) for w in (0, 2, 1)]
        for start in (1, 9, 11, 40):
            assert [p.nearest(w, start) for w in (0, 2, 1)] == want


@pytest.mark.slow
def test_plan_screens_on_one_replication_and_reuses_it():
    from sim.planner import parse_slo, run_plan

    sc = parse_scenario(queue_scenario(8.0, 1.0, 4, 6000, seed=2, warmup=300))
    with Executor(jobs=2) as ex:
        plan, res = run_plan(sc, [parse_slo("a:p95<=4s", sc)], 3, ex)
    assert res["screen"]["cell_fraction"] == 1.0 and res["screen"]["guess"] == res["min_gpus"]
    # every size judged with 3 replications holds the screen's run as its first (same seed)
    assert all((None, n, 0) in plan.runs for n in plan.evals)
    assert res["runs"] == len(plan.runs) < 3 * (res["evaluations"] + res["screen"]["sizes"])
    assert not plan.evals[res["min_gpus"] - 1].meets(plan.slos)


def test_screen_cell_only_where_the_cell_stands_for_the_service(root):
    from sim.planner import Plan, parse_slo
    from sim.scenario import load_scenario

    sc = load_scenario(root / "scenarios/ghibli_2025.yaml")  # the whole service: 10% screens
    slos = [parse_slo("pro:p95<=30s", sc)]
    assert Plan(sc, slos, 3, Executor(jobs=1)).screen_cell() == 0.1
    cell = load_scenario(root / "scenarios/ghibli_2025.yaml", {"cell_fraction": 0.1})
    assert Plan(cell, slos, 3, Executor(jobs=1)).screen_cell() is None  # 1% would not
    small = parse_scenario(queue_scenario(8.0, 1.0, 4, 6000, seed=2))
    assert Plan(small, [parse_slo("a:p95<=4s", small)], 3, Executor(jobs=1)).screen_cell() is None


class Counting(Executor):
    """The real process pool, recording how many runs each map is given."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.maps: list[tuple[int, bool]] = []

    def map(self, fn, items, desc="runs"):
        items = list(items)
        self.maps.append((len(items), bool(items) and alone_last(items, self.jobs)[-1].threads))
        return super().map(fn, items, desc)


@pytest.mark.slow
def test_plan_fills_its_rounds_and_answers_as_the_global_search():
    # The judged phase prefetches the sizes around the screen's guess, and the walks fill the
    # workers' idle slots with the next size's replications: every map is whole rounds on 2
    # workers or ends with one run alone, threaded; no run is made twice, and the answer and
    # bracket are those of galloping from the fleet's size with every replication (a fresh
    # cache).
    from sim.planner import Plan, parse_slo, run_plan

    sc = parse_scenario(queue_scenario(8.0, 1.0, 4, 3000, seed=2, warmup=300))
    slos = [parse_slo("a:p95<=4s", sc)]
    with Counting(jobs=2) as ex:
        plan, res = run_plan(sc, slos, 3, ex)
        maps = list(ex.maps)
        p = Plan(sc, slos, 3, ex)
        want = [p.smallest(w) for w in (0, 2, 1)]
    assert res["min_gpus"] == want[0]
    assert (res["ci_low"], res["ci_high"]) == (min(want[2], want[0]), max(want[1], want[0]))
    assert all(k % 2 == 0 or threaded for k, threaded in maps), maps
    assert sum(k for k, _ in maps) == len(plan.runs) == res["runs"]  # each (size, replication) run once
    assert not plan.evals[res["min_gpus"] - 1].meets(plan.slos)


@pytest.mark.slow
def test_a_remote_cluster_sets_the_rounds_by_its_worker_threads():
    # plan's sizes per round and idle-slot fill count the executor's workers: on a scheduler
    # address that is the cluster's threads (here 3, in one worker), not this machine's cores
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=3, processes=True, dashboard_address=None) as lc:
        with Executor(cluster=lc.scheduler_address) as ex:
            assert ex.jobs == 3
            jobs = [Job(queue_scenario(7.0, 1.0, 8, 500, seed=s), "<test>") for s in range(2)]
            assert ex.map(run_job, jobs) == [run_job(j) for j in jobs]
