"""The Python API gives what the CLI gives, as Python objects, and leaves pyplot alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import yaml
from helpers import queue_scenario
from matplotlib.figure import Figure

import sim
from sim.cli import main


def _tiers():
    return [{"name": "paid", "share": 0.3, "priority": 0, "price_per_image": 0.04, "slo_s": 5},
            {"name": "free", "share": 0.7, "priority": 1, "price_per_image": 0, "slo_s": 60}]


def test_run_equals_the_cli_summary(tmp_path):
    d = queue_scenario(6.0, 1.0, 8, 2000.0, seed=11, tiers=_tiers(), discipline="strict_priority")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    r = sim.run(tmp_path / "s.yaml")
    assert json.loads((tmp_path / "o" / "summary.json").read_text()) == json.loads(json.dumps(r.summary))
    assert list(r.tiers.index) == ["paid", "free"]
    assert r.tiers.loc["paid", "completed"] == r.summary["tiers"]["paid"]["completed"] > 0
    ts = r.timeseries
    assert ts.columns[0] == "time" and str(ts["time"].dt.tz) == "UTC"
    assert (ts["time"].diff().dropna() == pd.Timedelta(seconds=ts["t_s"].iloc[1])).all()
    # a dict and overrides give the same as the file with the same override
    assert sim.run(d, seed=12).summary == sim.run(tmp_path / "s.yaml", seed=12).summary
    assert sim.run(d, seed=12).summary != r.summary


def test_figures_are_objects_and_pyplot_is_untouched():
    code = """
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
import sim, sim.report.run_report, sim.report.plan_report, sim.report.compare_report
from helpers import queue_scenario
r = sim.run(queue_scenario(3.0, 1.0, 4, 300.0, seed=1))
figs = [getattr(r.plot, n)() for n in dir(r.plot)]
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert plt.get_fignums() == [], plt.get_fignums()
print(len(figs), all(type(f).__name__ == "Figure" for f in figs))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=str(__import__("pathlib").Path(__file__).parent))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["4", "True"]


def test_plan_and_compare_match_their_commands(tmp_path):
    d = queue_scenario(8.0, 1.0, 4, 3000.0, seed=2, warmup=100)
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(d))
    assert main(["plan", str(tmp_path / "q.yaml"), "--slo", "a:p95<=5s", "--reps", "2",
                 "--jobs", "1", "--out", str(tmp_path / "p"), "--quiet"]) == 0
    p = sim.plan(tmp_path / "q.yaml", slo=["a:p95<=5s"], reps=2, jobs=1)
    assert json.loads((tmp_path / "p" / "plan.json").read_text()) == json.loads(json.dumps(p.result))
    assert p.min_gpus == p.result["min_gpus"] and p.min_gpus in p.curve.index
    assert isinstance(p.plot.capacity_vs_slo(), Figure)
    c = sim.compare(d, {"more": {"fleet": {"pools": [{**d["fleet"]["pools"][0], "gpus": 12}]}}},
                    jobs=1)
    assert list(c.table.index) == ["baseline", "more"]
    assert c.table.loc["more", "a p95 s"] < c.table.loc["baseline", "a p95 s"]
    assert isinstance(c.plot.goodput(), Figure)
