"""The engine end to end: determinism, sync points, bad input, outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import queue_scenario, run, unpos

from sim.cli import main
from sim.demand.base import Arrivals
from sim.metrics.summary import summarize, timeseries
from sim.policies.quota import DailyQuota, DailyQuotaParams

GHIBLI_KEYS = {"offered", "admitted", "completed", "rejected", "latency_s", "wait_s", "goodput"}


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True, cwd=cwd)


def test_same_seed_same_bytes(tmp_path, root):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main(["run", str(root / "scenarios/ghibli_2025.yaml"), "--out", str(out), "--quiet",
                     "--horizon", "2d", "--set", "cell_fraction=0.01"]) == 0
    assert (a / "summary.json").read_bytes() == (b / "summary.json").read_bytes()
    s = json.loads((a / "summary.json").read_text())
    assert {"scenario", "seed", "tiers", "fleet", "money"} <= set(s)
    for t in s["tiers"].values():
        assert GHIBLI_KEYS <= set(t)
        assert {"p50", "p95", "p99"} <= set(t["latency_s"])
    assert {"gpu_hours", "utilization_mean"} <= set(s["fleet"])
    assert {"revenue", "gpu_cost"} <= set(s["money"])
    html = (a / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5  # ghibli has fleet regions: their figure
    assert sorted(p.name for p in (a / "figures").iterdir()) == [
        "demand_vs_capacity.png", "latency.png", "regions.png", "rejections.png", "utilization.png"]
    ts = pd.read_csv(a / "timeseries.csv")
    for u in s["regions"]["users"]:  # per users' region over time
        assert {f"region.{u}.latency_p95_s", f"region.{u}.rejected"} <= set(ts.columns)


def test_results_do_not_depend_on_sync_points():
    # A schedule entry forces a sync at an odd instant; a different chunk clock on the same
    # demand grid cannot change a single count either.
    base = queue_scenario(9.0, 1.0, 10, 3000, seed=3, discipline="strict_priority")
    r1 = summarize(run(base))
    odd = dict(base, policies=[{"policy": "none", "schedule": [{"at": 1234.567}, {"at": 2001.1}]}])
    r2 = summarize(run(odd))
    assert r1["tiers"] == r2["tiers"]


def test_conservation_with_abandonment_and_queue_limits():
    tiers = [
        {"name": "paid", "share": 0.3, "priority": 0, "price_per_image": 0.01, "slo_s": 5},
        {"name": "free", "share": 0.7, "priority": 1, "price_per_image": 0, "slo_s": 10,
         "patience_s": 4, "queue_limit": 50},
    ]
    r = run(queue_scenario(14.0, 1.0, 10, 5000, seed=2, tiers=tiers, discipline="strict_priority",
                           policies=[{"policy": "daily_quota", "tiers": ["free"], "limit": 20}]))
    s = summarize(r)
    free = s["tiers"]["free"]
    assert free["rejected"]["queue_full"] > 0 and free["abandoned"] > 0
    assert free["rejected"]["quota_exceeded"] > 0
    for t in s["tiers"].values():
        pre = sum(v for k, v in t["rejected"].items() if k != "timeout")
        assert t["offered"] == t["admitted"] + pre
        assert t["admitted"] == t["completed"] + t["abandoned"] + t["in_system_end"]
        assert t["rejected"]["timeout"] == t["abandoned"]
        lit = t["little"]
        assert lit["L"] == pytest.approx(lit["lambda"] * lit["W"], rel=0.01)
    # overload: paid is protected by priority, free waits or leaves
    assert s["tiers"]["paid"]["latency_s"]["p95"] < s["tiers"]["free"]["latency_s"]["p95"]
    ts = timeseries(r)
    assert ts["free.offered"].sum() == free["offered"]
    assert ts["free.rejected.queue_full"].sum() == free["rejected"]["queue_full"]
    assert ts["paid.completed"].sum() == s["tiers"]["paid"]["completed"]


def test_daily_quota_vectorised_equals_one_by_one():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 5 * 86400, 4000))
    user = rng.integers(0, 50, len(t))
    tier = np.zeros(len(t), np.int64)
    a = DailyQuota(DailyQuotaParams(limit=3), ["free"], epoch=1742860800.0 + 3600 * 7)
    b = DailyQuota(DailyQuotaParams(limit=3), ["free"], epoch=1742860800.0 + 3600 * 7)
    ok_vec = np.concatenate([a.admit_many(t[i:i + 700], user[i:i + 700], tier[i:i + 700])[0]
                             for i in range(0, len(t), 700)])
    ok_one = np.array([b.admit(float(x), int(u), 0).ok for x, u in zip(t, user, strict=True)])
    assert (ok_vec == ok_one).all()
    # never more than 3 a UTC day per user
    day = np.floor((a.epoch + t) / 86400)
    for u in range(50):
        m = (user == u) & ok_vec
        assert np.bincount(day[m].astype(int) - int(day.min())).max() <= 3


BAD = {
    "malformed YAML": ("name: x\n  horizon: [1,\n", "line"),
    "unknown key": ({"colour": "red"}, "colour: unknown key"),
    "unknown policy": ({"policies": [{"policy": "bogus"}]}, "policies[0].policy: unknown policy 'bogus'; known:"),
    "wrong type": ({"seed": "abc"}, "seed:"),
    "negative rate": ({"demand": {"points": [[0, -5]], "users": 10}},
                      "points[0][1]: Input should be greater than or equal to 0"),
    "bad policy param": ({"policies": [{"policy": "daily_quota", "limit": -1}]}, "policies[0].limit:"),
    "missing profile": ({"fleet": {"pools": [{"name": "p", "gpus": 1, "profile": "no-such-profile"}]}},
                        "fleet.pools[0].profile: profile 'no-such-profile' not found"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, case):
    body, expect = BAD[case]
    path = tmp_path / "bad.yaml"
    if isinstance(body, str):
        path.write_text(body)
    else:
        d = queue_scenario(1.0, 1.0, 1, 100)
        d.update(body)
        path.write_text(yaml.safe_dump(d))
    out = tmp_path / "out"
    p = _cli("run", str(path), "--out", str(out), "--quiet")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert unpos(lines[0]).startswith(f"error: {path}: ")
    assert expect in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == [path]


def test_missing_file_and_malformed_profile(tmp_path):
    p = _cli("run", str(tmp_path / "nope.yaml"))
    assert p.returncode == 2 and p.stderr.strip() == f"error: {tmp_path / 'nope.yaml'}: (file): no such file"
    prof = tmp_path / "broken.json"
    prof.write_text('{"schema": "floodgate.profile/1", "entries": [{"model": "m"}]}')
    d = queue_scenario(1.0, 1.0, 1, 100)
    d["fleet"]["pools"][0] = {"name": "p", "gpus": 1, "profile": "broken.json"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    p = _cli("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"))
    assert p.returncode == 2
    assert p.stderr.strip() == f"error: {prof}: entries[0].component: missing"
    assert not (tmp_path / "o").exists()


def test_failed_run_leaves_previous_output_intact(tmp_path, root):
    out = tmp_path / "o"
    assert main(["run", str(root / "scenarios/ghibli_2025.yaml"), "--out", str(out), "--quiet",
                 "--horizon", "6h"]) == 0
    before = (out / "summary.json").read_bytes()
    assert main(["run", str(root / "scenarios/ghibli_2025.yaml"), "--out", str(out), "--quiet",
                 "--horizon=-3h"]) == 2
    assert (out / "summary.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["o"]


def test_interval_boundaries_under_rounding():
    # horizon / 1000 is not representable: the series clock must still step over boundaries
    r = run(queue_scenario(45.0, 1.0, 50, 20000 / 45, seed=1))
    assert r.fleet.S.completed.sum() > 19000


@pytest.mark.parametrize("name", ["ghibli_2025", "policies/brownout", "policies/codel"])
def test_fleet_slices_change_nothing(root, name):
    # A window's admitted requests reach the fleet loop in slices (bounded memory when a
    # quota's midnight brings millions at once): tiny slices give the same summary.
    from sim.engine import Run
    from sim.scenario import load_scenario

    over = {"cell_fraction": 0.003, "horizon": "2d"} if name == "ghibli_2025" else {}
    runs = [summarize(Run(load_scenario(root / f"scenarios/{name}.yaml", over), slice_requests=n).execute())
            for n in (1 << 20, 53)]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", ["policies/brownout", "policies/daily_quota", "policies/codel"])
def test_cut_windows_change_nothing_without_feedback(root, name):
    # A window of more than window_requests arrivals is admitted and served in pieces (the
    # midnight stampede of the whole service), one instant's arrivals split across them: with
    # no demand feedback (which draws random numbers per window) the summary is the same.
    from sim.engine import Run
    from sim.scenario import load_scenario

    sc = load_scenario(root / f"scenarios/{name}.yaml")
    assert sc.demand.retry is None and sc.demand.social is None
    runs = [Run(sc, window_requests=n, slice_requests=s).execute() for n, s in ((1 << 21, 1 << 20), (37, 11))]
    assert runs[0].offered.sum() > 10 * 37
    assert summarize(runs[0]) == summarize(runs[1])


def test_cut_windows_bound_one_instants_stampede_and_defer_like_a_whole_window():
    # 3000 requests at one instant (retries all due at a quota's reset), cut into windows of
    # 100: each piece is served in time order, and what the pieces' rejections retry waits
    # for the end of the whole window, as it would uncut. Same seed, same results.
    from sim.engine import Run
    from sim.scenario import parse_scenario

    d = queue_scenario(1.0, 1.0, 4, 40.0, seed=7, chunk_s=10.0, max_batch=1,
                       tiers=[{"name": "a", "share": 1, "priority": 0, "price_per_image": 0,
                               "slo_s": 1e9, "queue_limit": 50}])
    d["demand"]["retry"] = {"max_attempts": 2, "base_s": 0.1, "cap_s": 0.2, "jitter": "full"}
    runs = []
    for n in (1 << 21, 100, 100):
        r = Run(parse_scenario(d), window_requests=n)
        r.add_requests(Arrivals(np.full(3000, 10.0), np.arange(3000) % 1000, np.zeros(3000, np.int64)))
        sizes = []
        orig = r._window

        def window(until, orig=orig, sizes=sizes, r=r):
            c = r.cursor
            orig(until)
            sizes.append((c, r.cursor))

        r._window = window
        runs.append((summarize(r.execute()), r.deferred, sizes))
    whole, cut, again = runs
    assert cut == again
    assert len(cut[2]) > len(whole[2]) + 25  # the instant came in pieces
    assert whole[0]["demand"]["offered"] == cut[0]["demand"]["offered"]
    # the rejected half of the stampede retries within the window: deferred to its end either way
    assert whole[1] > 2000 and cut[1] == whole[1]


def test_held_pieces_of_an_instant_serve_like_one_call():
    # One request at 0, a batch wait of 0.5 s, three more at exactly 0.5: in one call the
    # first of them arrives before the wait's timer fires (a batch of 2 starts). Fed in pieces
    # split at 0.5, each holding at its end and the next continuing: the same batches, not
    # the batch of 1 an unheld split starts (its timer, or the next call's dispatch, first).
    from sim.engine import Run
    from sim.scenario import parse_scenario

    d = queue_scenario(1.0, 1.0, 1, 10.0, seed=1, max_batch=4)
    d["fleet"]["pools"][0]["max_wait_s"] = 0.5
    t = np.array([0.0, 0.5, 0.5, 0.5, 0.7])
    n = len(t)
    args = (np.arange(n), np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, np.inf, np.float32),
            np.ones(n), np.zeros(n))

    def batches(cuts, hold):
        f = Run(parse_scenario(d)).fleet
        for k, (i, j) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
            last = j == n
            f.advance(t[i:j], *(x[i:j] for x in args), 10.0 if last else float(t[j]),
                      hold=hold and not last, cont=hold and k > 0)
        return f.S.batches.tolist(), f.S.completed.tolist(), np.round(f.S.sum_lat, 9).tolist()

    one = batches([0, n], False)
    # two at 0.5 (0 and one of 0.5: 1.0 s after warm-up), the rest when that batch ends at 1.5
    assert one == ([2, 5], [5], [1.0 + 2.0 + 2.0 + 1.8])
    for cuts in ([0, 1, n], [0, 2, n], [0, 1, 2, 3, n]):
        assert batches(cuts, True) == one, cuts
    assert batches([0, 1, n], False) != one
