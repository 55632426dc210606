"""The engine end to end: determinism, sync points, bad input, outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers import queue_scenario, run, unpos

from sim.cli import main
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
    assert html.count("data:image/png;base64,") == 4
    assert sorted(p.name for p in (a / "figures").iterdir()) == [
        "demand_vs_capacity.png", "latency.png", "rejections.png", "utilization.png"]


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
