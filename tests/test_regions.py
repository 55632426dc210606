"""Fleet regions (sim/regions.py): home routing, spill-over, outages, per-region counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import queue_scenario, run
from queueing import batch_means_halfwidth, mmc_wq

from sim.engine import Run
from sim.errors import InputError
from sim.fleet import kernel as K
from sim.metrics.summary import summarize
from sim.outcomes import REASONS
from sim.regions import build_regions
from sim.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "scenarios" / "regions_demo.yaml"


def _demo(**changes) -> dict:
    d = yaml.safe_load(DEMO.read_text())
    d["outputs"] = {"interval_s": 60, "figures": False, "report": False}
    d.update(changes)
    return d


def _regional(lam: float, mu: float, gpus: list[int], net: list[list[float]], horizon: float,
              seed: int = 0, spill: dict | None = None, outage: tuple | None = None,
              dist: str = "exponential", users: int = 100_000, **extra) -> dict:
    """A Poisson stream from users in regions a, b (half each) onto fleet regions ra, rb
    with `gpus` GPUs of fixed mean batch time 1/mu; net[user region][fleet region]."""
    d = queue_scenario(lam, mu, 1, horizon, seed=seed, dist=dist, **extra)
    d["demand"]["users"] = users
    d["demand"]["regions"] = [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}]
    pool = d["fleet"]["pools"][0]
    d["fleet"] = {
        "regions": [{"name": "ra", "latency_s": {"a": net[0][0], "b": net[1][0]}},
                    {"name": "rb", "latency_s": {"a": net[0][1], "b": net[1][1]}}],
        "pools": [{**pool, "name": "pa", "gpus": gpus[0], "region": "ra"},
                  {**pool, "name": "pb", "gpus": gpus[1], "region": "rb"}],
    }
    if spill is not None:
        d["fleet"]["spill_over"] = spill
    if outage is not None:
        region, t1, t2 = outage
        sched = [{"at": t1, "enabled": True}] + ([{"at": t2, "enabled": False}] if t2 else [])
        d["policies"] = [{"policy": "region_outage", "region": region, "enabled": t1 == 0,
                          "schedule": sched if t1 else sched[1:]}]
    return d


def _conserved(r: Run) -> None:
    """offered = completed + rejected + timeouts + in flight, per users' region and in all."""
    S = r.fleet.S
    t_out = REASONS.index("timeout")
    total = 0
    for u in range(len(r.regions.users)):
        rej = r.reg_rejected[u].sum() + S.reg_drop[u]
        assert r.reg_offered[u] == S.reg_done[u].sum() + rej + S.reg_nsys[u] > 0, u
        total += r.reg_offered[u]
    assert total == r.offered.sum()
    assert S.reg_done.sum() == S.completed.sum()
    assert S.reg_nsys.sum() == S.n_sys.sum()
    assert S.reg_drop.sum() == S.abandoned.sum() + S.kernel_rej[:, K.R_TIMEOUT].sum()
    assert r.reg_rejected.sum() + S.reg_drop.sum() == r.rejections().sum()
    s = summarize(r)
    for name, v in s["regions"]["users"].items():
        assert v["offered"] == v["completed"] + sum(v["rejected"].values()) + v["in_system_end"], name
        u = r.regions.users.index(name)
        assert v["rejected"]["timeout"] == r.reg_rejected[u, t_out] + S.reg_drop[u]


def test_spill_over_and_an_outage_conserve_requests_per_region():
    d = _demo(horizon="150m")
    d["policies"][0]["schedule"] = [{"at": "1h", "enabled": True}, {"at": "2h", "enabled": False}]
    r = run(d)
    _conserved(r)
    S = r.fleet.S
    assert S.reg_spill.sum() > 0  # the outage (and the peak) sent requests away from home
    eu = r.regions.names.index("eu")
    europe = r.regions.users.index("europe")
    assert S.reg_done[europe, eu] < S.reg_done[europe].sum()  # europe was served elsewhere too
    pol = summarize(r)["policies"]["region_outage"]
    assert pol["outages"] == 1 and pol["hours_out"] == 1.0


def test_per_region_series_add_up_to_the_summary_and_show_the_outage():
    from sim.metrics.summary import timeseries

    d = _demo(horizon="150m")
    d["policies"][0]["schedule"] = [{"at": "1h", "enabled": True}, {"at": "2h", "enabled": False}]
    r = run(d)
    s, ts = summarize(r)["regions"], timeseries(r)
    for name, v in s["users"].items():  # every interval's counts, summed, are the totals
        c = f"region.{name}"
        assert ts[f"{c}.offered"].sum() == v["offered"] > 0
        assert ts[f"{c}.completed"].sum() == v["completed"]
        assert ts[f"{c}.rejected"].sum() == sum(v["rejected"].values())
        assert ts[f"{c}.rejected.timeout"].sum() == v["rejected"]["timeout"]
        assert ts[f"{c}.spilled"].sum() == v["spilled"]
        assert np.isfinite(ts[f"{c}.latency_p95_s"]).sum() > 0.9 * len(ts)
    for name, v in s["fleet"].items():
        assert ts[f"fleet_region.{name}.completed"].sum() == v["completed"]
    out = (ts["t_s"] >= 3600) & (ts["t_s"] < 7200)
    assert (ts.loc[out, "fleet_region.eu.gpus_live"] == 0).all()
    assert (ts.loc[~out, "fleet_region.eu.gpus_live"] == d["fleet"]["pools"][1]["gpus"]).all()
    assert (ts.loc[out, "fleet_region.eu.completed"].iloc[1:] == 0).all()  # batches running finish
    # europe's users spill once their region is out (home is ample before it)
    before = ts["t_s"] < 3600
    assert ts.loc[before, "region.europe.spilled"].sum() < 0.01 * ts.loc[out, "region.europe.spilled"].sum()
    # each interval's p95 is the quantile of the requests completing in it: europe's rises
    # while its users are served across the Atlantic, in queues the others already fill
    e95 = ts["region.europe.latency_p95_s"]
    assert e95[out].median() > e95[ts["t_s"] < 3600].median()
    # a run started late (a plan's warm start) fills its own intervals only
    late = Run(parse_scenario(d), start=1800.0).execute()
    s, ts = summarize(late)["regions"], timeseries(late)
    early = ts["t_s"] < 1800
    for name, v in s["users"].items():
        assert ts[f"region.{name}.completed"].sum() == v["completed"] > 0
        assert (ts.loc[early, f"region.{name}.completed"] == 0).all()
        assert ts.loc[~early, f"region.{name}.completed"].iloc[0] > 0


def test_no_request_starts_in_a_region_whose_gpus_are_out():
    d = _demo(horizon="150m")
    d["policies"][0]["schedule"] = [{"at": "1h", "enabled": True}, {"at": "2h", "enabled": False}]
    r = Run(parse_scenario(d), trace=True).execute()
    S = r.fleet.S
    eu = r.regions.names.index("eu")
    region_of_worker = r.regions.pool_region[S.w_pool]
    starts = [(t, w) for kind, _, t, w in r.trace_events if kind == K.STARTED]
    during = [t for t, w in starts if region_of_worker[w] == eu and 3600 <= t < 7200]
    assert not during
    assert any(region_of_worker[w] == eu and t >= 7200 for t, w in starts)  # back after
    assert any(region_of_worker[w] == eu and t < 3600 for t, w in starts)
    # the gpus came back as they were
    assert r.fleet.gpus(r.regions.pool_region.tolist().index(eu)) == d["fleet"]["pools"][1]["gpus"]
    _conserved(r)


def test_spilled_requests_pay_exactly_the_configured_network_latency():
    # home region ra is out all along: every request is served in rb, 1 s batches, no queue
    d = _regional(0.2, 1.0, [2, 4], [[0.01, 0.25], [0.2, 0.04]], 2000, dist="deterministic",
                  outage=("ra", 0, None))
    r = run(d)
    S, rg = r.fleet.S, r.regions
    a, b = rg.users.index("a"), rg.users.index("b")
    assert S.reg_done[:, 0].sum() == 0  # nothing served in ra
    n_a, n_b = S.reg_stats[a, 0], S.reg_stats[b, 0]
    assert n_a > 100 and n_b > 100
    assert S.reg_spill[a] == r.reg_offered[a] and S.reg_spill[b] == 0
    assert S.reg_stats[a, 3] == pytest.approx(0.25 * n_a, rel=1e-12)  # network latency, summed
    assert S.reg_stats[b, 3] == pytest.approx(0.04 * n_b, rel=1e-12)
    # with deterministic 1 s batches and an idle fleet, each latency is 1 s + the network's
    assert S.reg_stats[a, 1] == pytest.approx(1.25 * n_a, rel=1e-9)
    assert S.reg_stats[b, 1] == pytest.approx(1.04 * n_b, rel=1e-9)
    # tier latency includes the network, Little's time in system does not
    assert S.sum_lat[0] - S.sum_sys[0] == pytest.approx(0.25 * n_a + 0.04 * n_b, rel=1e-9)
    s = summarize(r)["regions"]["users"]
    assert s["a"]["network_latency_mean_s"] == 0.25 and s["b"]["served_by"]["ra"] == 0


def test_spill_over_sends_work_away_only_above_the_threshold():
    # region a's users have 1 GPU at home (rho 1.6 there) and 4 idle ones 50 ms away
    base = dict(lam=3.2, mu=1.0, gpus=[1, 4], net=[[0.01, 0.05], [0.05, 0.01]], horizon=3000)
    none = run(_regional(**base))
    spill = run(_regional(**base, spill={"predicted_wait_s": 5}))
    far = run(_regional(**base, spill={"predicted_wait_s": 5, "max_latency_s": 0.02}))
    for r in (none, spill, far):
        _conserved(r)
    assert none.fleet.S.reg_spill.sum() == 0 and far.fleet.S.reg_spill.sum() == 0
    a = spill.regions.users.index("a")
    S = spill.fleet.S
    assert S.reg_spill[a] > 0 and S.reg_done[a, 1] > 0
    assert S.reg_spill[1 - a] == 0  # b's home is never busy enough
    # spilling keeps region a's wait near the threshold; without it the queue grows
    la = summarize(spill)["regions"]["users"]["a"]["latency_s"]["mean"]
    assert la < 15 < summarize(none)["regions"]["users"]["a"]["latency_s"]["mean"]


@pytest.mark.slow
def test_two_regions_without_spill_are_two_independent_mmc_queues():
    """Users split over two regions by a hash of their id: each region is an M/M/c of the
    region's share of the arrivals (lambda_a = lambda x users in a / users), against Erlang C.
    Seeds 700-705 (apart from test_theory's)."""
    lam, mu, c, horizon = 3.4, 1.0, [2, 2], 100_000  # rho = 0.85 in each region
    errs = {0: [], 1: []}
    for seed in range(700, 706):
        d = _regional(lam, mu, c, [[0.0, 0.1], [0.1, 0.0]], horizon, seed=seed, users=1_000_000)
        r = run(d)
        rg = r.regions
        frac = np.bincount(rg.user_region(r.demand, np.arange(1_000_000)), minlength=2) / 1e6
        S = r.fleet.S
        assert S.reg_spill.sum() == 0 and S.reg_done[0, 1] == S.reg_done[1, 0] == 0
        for u in (0, 1):
            h = int(rg.home[u])
            w = S.reg_stats[u, 1] / S.reg_stats[u, 0] - 1 / mu  # latency - service: the wait
            errs[u].append(w / mmc_wq(lam * frac[u], mu, c[h]) - 1)
    for u in (0, 1):
        e = np.array(errs[u])
        hw = batch_means_halfwidth(e)
        assert hw < 0.05, f"too noisy for a 5% check: {hw:.3%}"
        assert abs(e.mean()) < 0.05, f"region {u}: Wq off Erlang C by {e.mean():.3%} (±{hw:.3%})"


def test_users_keep_their_region_and_shares_hold():
    d = _regional(1.0, 1.0, [1, 1], [[0, 0.1], [0.1, 0]], 100, users=200_000)
    sc = parse_scenario(d)
    rg = build_regions(sc)
    r = Run(sc)
    users = np.arange(200_000)
    reg = rg.user_region(r.demand, users)
    assert abs(reg.mean() - 0.5) < 0.005  # 5 sigma at n = 200k
    assert (rg.user_region(r.demand, users[::-1])[::-1] == reg).all()
    # the viral model: a user's region is its block's, in the seasonality's shares
    v = load_scenario(ROOT / "scenarios" / "ghibli_2025.yaml", sets=["cell_fraction=0.001"])
    from sim.demand import build_demand

    dm = build_demand(v)
    got = np.bincount(dm.region_of(np.arange(dm.n_users)), minlength=3) / dm.n_users
    want = [x.share for x in v.demand.seasonality.regions]
    assert np.allclose(got, want, atol=1e-3)


@pytest.mark.parametrize("change,field,msg", [
    (lambda d: d["fleet"]["pools"][0].update(region="moon"), "fleet.pools[0].region", "unknown region 'moon'"),
    (lambda d: d["fleet"]["pools"][0].pop("region"), "fleet.pools[0].region", "missing"),
    (lambda d: d["fleet"]["regions"][0]["latency_s"].pop("asia"), "fleet.regions[0].latency_s", "no latency from asia"),
    (lambda d: d["fleet"]["regions"][0]["latency_s"].update(asai=0.1), "fleet.regions[0].latency_s.asai", "did you mean 'asia'"),
    (lambda d: d["fleet"]["regions"][0].update(max_gpus=4), "fleet.regions[0].max_gpus", "over its capacity"),
    (lambda d: d["policies"][0].update(region="us-east"), "policies[0].region", "unknown region"),
    (lambda d: d["fleet"].pop("regions"), "fleet.spill_over", "needs fleet.regions"),
    (lambda d: d["fleet"]["spill_over"].update(wait=3), "fleet.spill_over.wait", "unknown key"),
])
def test_region_errors_name_the_field(change, field, msg):
    d = _demo()
    change(d)
    with pytest.raises(InputError) as e:
        parse_scenario(d, "demo.yaml")
    assert e.value.field == field and msg in str(e.value), str(e.value)


def test_region_capacity_caps_the_gpus_a_pool_gets():
    d = _demo(horizon="10m")
    d["fleet"]["pools"][0]["max_gpus"] = 20
    r = Run(parse_scenario(d))
    us = [p.name for p in r.pools].index("us-h100")
    assert r.gates.set_gpus(us, 40) == 12  # the us region's max_gpus
    assert r.fleet.gpus(us) == 12


def test_check_and_run_know_regions(tmp_path, capsys):
    from helpers import unpos

    from sim.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO.read_text().replace("region: eu\n", "region: euu\n"))
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert unpos(err[0]) == (f"error: {bad}: policies[0].region: unknown region 'euu'; did you "
                             "mean 'eu'? regions: us, eu, ap")
    assert main(["check", str(DEMO)]) == 0
    out = tmp_path / "out"
    assert main(["run", str(DEMO), "--horizon", "20m", "--quiet", "--out", str(out),
                 "--set", "outputs.figures=false"]) == 0
    import json

    s = json.loads((out / "summary.json").read_text())
    assert set(s["regions"]["users"]) == {"americas", "europe", "asia"}
    assert set(s["regions"]["fleet"]) == {"us", "eu", "ap"}
    page = (out / "report.html").read_text()
    assert "<h2>Regions</h2>" in page and "fleet region" in page


def test_an_outage_holds_the_gpus_an_autoscaler_asks_for_until_it_ends():
    d = _demo(horizon="10m")
    d["fleet"]["pools"][1]["max_gpus"] = 12
    r = Run(parse_scenario(d))
    eu = r.regions.names.index("eu")
    j = [p.name for p in r.pools].index("eu-h100")
    r.gates.region_out(eu, True)
    assert r.fleet.gpus(j) == 0 and r.gates.gpus(j) == 8  # none live, 8 to come back
    assert r.gates.set_gpus(j, 11) == 0  # an autoscaler's order lands on the held count
    assert r.gates.gpus(j) == 11 and r.fleet.gpus(j) == 0
    r.gates.region_out(eu, False)
    assert r.fleet.gpus(j) == 11 and not r.fleet.S.reg_down[eu]
    live = [n for t, pool, n in r.gpu_log if pool == j]
    assert live == [8, 0, 11]  # the cost log: nothing live (or billed on demand) while out


def test_regions_never_send_a_request_to_a_pool_without_its_model():
    # region ra holds model m1 only; a's users asking for m2 are served in rb, 50 ms away
    d = _regional(1.5, 1.0, [3, 3], [[0.01, 0.05], [0.05, 0.01]], 3000, dist="deterministic")
    d["request_classes"] = {
        "classes": [{"name": "std", "model": "m1", "service_time_s": 1.0},
                    {"name": "alt", "model": "m2", "service_time_s": 1.0}],
        "mix": {"a": {"std": 0.5, "alt": 0.5}}}
    d["fleet"]["pools"][0]["models"] = ["m1"]
    d["fleet"]["pools"][1]["models"] = ["m1", "m2"]
    r = Run(parse_scenario(d), trace=True).execute()
    S, cs = r.fleet.S, r.classes
    rid = {row[6]: row for row in r.trace_offered if row[6] >= 0}
    ids = np.array(sorted(rid))
    t, tier, noise = (np.array([rid[i][j] for i in ids]) for j in (0, 2, 3))
    cls = dict(zip(ids.tolist(), r.mix.draw(t, tier, noise).tolist(), strict=True))
    served = {(int(S.w_pool[w]), cls[i]) for kind, i, _, w in r.trace_events if kind == K.STARTED}
    assert {c for _, c in served} == {0, 1}
    for pool, c in served:
        assert cs.cost[pool][cs.group[c]] is not None, (pool, cs.names[c])
    assert (0, 1) not in served and (1, 1) in served
    a = r.regions.users.index("a")
    assert S.reg_spill[a] > 0 and S.reg_done[a, 1] > 0
    _conserved(r)


def test_regions_and_unique_users_made_aside_give_the_same_run():
    # Run(threads=True) makes each window's regions and the unique-user bits on a helper
    # thread (engine.Aside) while admission runs: the same summary and series as in line
    d = _demo(horizon="150m")
    d["policies"][0]["schedule"] = [{"at": "1h", "enabled": True}, {"at": "2h", "enabled": False}]
    sc = parse_scenario(d)
    a, b = Run(sc, threads=False).execute(), Run(sc, threads=True).execute()
    sa, sb = summarize(a), summarize(b)
    assert sa["demand"]["unique_users"] > 100 and a.fleet.S.reg_spill.sum() > 0
    assert sa == sb
    assert np.array_equal(a.fleet.S.reg_done, b.fleet.S.reg_done)
