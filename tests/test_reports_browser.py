"""report.html of run, plan and compare, opened in a real headless Chromium."""

from __future__ import annotations

import json

import pytest
from browser import inspect_page
from helpers import queue_scenario

from sim.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reports(tmp_path_factory, ):
    from conftest import ROOT

    d = tmp_path_factory.mktemp("reports")
    sc = ROOT / "scenarios/ghibli_2025.yaml"
    assert main(["run", str(sc), "--out", str(d / "run"), "--quiet", "--horizon", "1d",
                 "--set", "cell_fraction=0.05"]) == 0
    q = queue_scenario(8.0, 1.0, 4, 5000, seed=1, warmup=200)
    (d / "q.json").write_text(json.dumps(q))
    assert main(["plan", str(d / "q.json"), "--slo", "a:p95<=5s", "--reps", "2", "--jobs", "1",
                 "--out", str(d / "plan"), "--quiet"]) == 0
    (d / "quota.yaml").write_text("policies: [{policy: daily_quota, tiers: [free], limit: 3}]\n")
    assert main(["compare", str(sc), "--variant", f"quota={d / 'quota.yaml'}", "--horizon", "1d",
                 "--set", "cell_fraction=0.05",
                 "--jobs", "1", "--out", str(d / "compare"), "--quiet"]) == 0
    return d


@pytest.mark.parametrize("kind,figures", [("run", 4), ("plan", 1), ("compare", 3)])
def test_report_renders_in_chromium(reports, kind, figures):
    page = inspect_page(reports / kind / "report.html")
    assert page["title"].startswith("Floodgate")
    assert len(page["images"]) == figures
    for img in page["images"]:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100
    assert page["errors"] == []
