"""A cell checks its own regime: a cell too small to fill batches or to multiplex like the
whole service is flagged in the report and on stderr; --check-cell compares two cell sizes."""

from __future__ import annotations

import json

from helpers import queue_scenario

from sim.cell import regime
from sim.cli import main
from sim.demand import build_demand
from sim.engine import build_pools
from sim.scenario import load_scenario, parse_scenario


def _regime(root, f):
    sc = load_scenario(root / "scenarios/ghibli_2025.yaml", {"cell_fraction": f})
    return regime(sc, build_demand(sc), build_pools(sc))


def test_one_percent_ghibli_cell_is_flagged_and_ten_percent_is_not(root):
    small, big = _regime(root, 0.01), _regime(root, 0.1)
    assert small["warnings"] and any("max_batch 8" in w for w in small["warnings"])
    # three regional H100 pools (533 / 456 / 531 GPUs) and the A100 and H200 pools at 0
    h100 = slice(0, 3)
    assert sum(p["gpus"] for p in small["pools"]) == 15
    assert all(p["batch_fill"] < 1 for p in small["pools"][h100])
    assert big["warnings"] == []
    assert sum(p["gpus"] for p in big["pools"]) == 152
    assert all(p["batch_fill"] > 1 for p in big["pools"][h100])
    # the same peak, scaled: the estimate is the model's intensity, not a sample
    assert abs(big["peak_rate_per_s"] / small["peak_rate_per_s"] - 10) < 1e-3  # rounded to 3 d.p.
    assert _regime(root, 1.0)["warnings"] == []


def test_small_cell_warns_on_stderr_and_in_the_report(tmp_path, root, capsys):
    out = tmp_path / "o"
    assert main(["run", str(root / "scenarios/ghibli_2025.yaml"), "--set", "cell_fraction=0.005",
                 "--horizon", "6h", "--quiet", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: pool h100-americas:" in err and "too small to stand for the whole service" in err
    s = json.loads((out / "summary.json").read_text())
    assert s["cell"]["cell_fraction"] == 0.005 and s["cell"]["warnings"]
    assert "Cell regime" in (out / "report.html").read_text()


def test_check_cell_reports_the_difference_of_headline_figures(tmp_path, capsys):
    d = queue_scenario(40.0, 1.0, 6, 3000, seed=5, max_batch=4, cell_fraction=0.5)
    d["fleet"]["pools"][0]["max_wait_s"] = 0.2
    (tmp_path / "q.json").write_text(json.dumps(d))
    parse_scenario(d)  # valid as written
    assert main(["run", str(tmp_path / "q.json"), "--check-cell", "1", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    res = json.loads(lines[-1])
    assert res["cell_fraction"] == 0.5 and res["other_cell_fraction"] == 1.0
    figs = {r["figure"]: r for r in res["figures"]}
    assert {"a p95 s", "mean batch", "GPU-hours"} <= set(figs)
    for r in figs.values():
        if r["other"]:
            assert abs(r["rel_diff"] - (r["cell"] - r["other"]) / abs(r["other"])) < 1e-3
    assert any(line.startswith("mean batch") for line in lines)
