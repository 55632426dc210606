"""report.html of run, plan and compare, opened in a real headless Chromium."""

from __future__ import annotations

import json

import numpy as np
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


@pytest.mark.parametrize("kind,figures", [("run", 5), ("plan", 1), ("compare", 3)])  # run: ghibli has regions
def test_report_renders_in_chromium(reports, kind, figures):
    page = inspect_page(reports / kind / "report.html")
    assert page["title"].startswith("Floodgate")
    assert len(page["images"]) == figures
    for img in page["images"]:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100
    assert page["errors"] == []


def _region(img, box) -> np.ndarray:
    x, y, w, h = (int(round(box[k])) for k in ("x", "y", "w", "h"))
    return np.asarray(img.convert("L"))[y:y + h, x:x + w].astype(float)


def test_findings_and_figures_are_visible_on_the_screenshot(reports):
    """The findings block and every figure are on the rendered page: shown, of a real size,
    the images decoded, and the screenshot's pixels there are not blank (text on the
    findings, plotted lines on each figure)."""
    import io

    from PIL import Image

    page = inspect_page(reports / "run" / "report.html", boxes=["#findings", "#findings li"])
    assert page["errors"] == []
    b = page["boxes"]
    shot = Image.open(io.BytesIO(page["screenshot"]))
    assert shot.size == (b["page"]["w"], b["page"]["h"])
    f = b["#findings"]
    assert f is not None and f["shown"] and f["w"] > 300 and f["h"] > 40
    assert b["#findings li"]["shown"] and b["#findings li"]["h"] > 5
    assert f["y"] < 400  # findings first: at the top, above the tables and figures
    text = _region(shot, f)
    assert (text < 100).mean() > 0.01 and text.std() > 20  # dark glyphs on a light block
    assert len(b["images"]) == 5  # the four and the per-region figure
    for img in b["images"]:
        assert img["shown"] and img["w_nat"] > 100 and img["w"] > 300 and img["h"] > 150
        assert img["y"] > f["y"] + f["h"] - 1  # below the findings
        px = _region(shot, img)
        assert px.shape[0] > 150 and px.shape[1] > 300
        # a drawn figure: mostly white background with axes, lines and labels in it
        assert 0.5 < (px > 245).mean() < 0.995 and (px < 128).mean() > 0.002, img
