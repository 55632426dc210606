"""The findings block: computed from the run, and it names what a reader of averages would miss."""

from __future__ import annotations

import yaml

import sim
from sim.cli import main
from sim.examples import example_path
from sim.report.findings import findings


def _midnight_quota() -> dict:
    """Free users capped at 3/day from 20:00 UTC; retries honour Retry-After (the reset)."""
    d = yaml.safe_load(example_path("policies/daily_quota").read_text())
    d.update(start="2025-03-31T20:00:00Z", horizon="8h")
    d["demand"]["points"] = [["0h", 20], ["8h", 20]]
    d["demand"]["retry"] = {"max_attempts": 3, "base_s": "2s", "cap_s": "2m",
                            "honour_retry_after": True, "probability": 0.9}
    d["policies"][0]["schedule"] = [{"at": "0h", "enabled": True}]
    return d


def test_findings_name_tiers_peak_rejections_and_the_reset_stampede():
    r = sim.run(_midnight_quota())
    f = findings(r.summary, r.timeseries, ["daily_quota"])
    assert f[0].startswith("paid met its SLO") and "rejected" not in f[0]
    assert f[1].startswith("free ") and "rejected, mostly quota_exceeded" in f[1]
    share = sum(r.summary["tiers"]["free"]["rejected"].values()) / r.summary["tiers"]["free"]["offered"]
    assert f"{share * 100:.0f}% of its requests" in f[1]
    busiest = next(x for x in f if x.startswith("The busiest hour"))
    assert "31 Mar 2025 23:00 UTC" in busiest or "01 Apr 2025 00:00 UTC" in busiest
    spike = [x for x in f if x.startswith("A spike") and "01 Apr 2025 00:00 UTC" in x]
    assert spike and "quota reset at 00:00 UTC" in spike[0]


def test_no_spike_on_a_flat_day_and_missed_slo_in_words():
    d = _midnight_quota()
    d["policies"] = []
    d["fleet"]["pools"][0]["gpus"] = 2  # overloaded: paid misses, free is starved
    r = sim.run(d)
    f = findings(r.summary, r.timeseries, [])
    assert not [x for x in f if x.startswith("A spike")]
    assert f[0].startswith("paid MISSED its SLO") and "times its 30 s target" in f[0]
    assert f[1].startswith("free met its SLO") and "99% of its requests were rejected" in f[1]


def test_report_opens_with_the_findings(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_midnight_quota()))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    html = (tmp_path / "o" / "report.html").read_text()
    body = html[html.index("<body"):]
    assert body.index('class="findings"') < body.index("<h2>Tiers</h2>")
    assert "quota reset at 00:00 UTC" in html and "{" not in body[body.index("<h2>Policies"):]
