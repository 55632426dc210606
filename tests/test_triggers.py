"""Incident-response triggers: a policy change fires when a metric stays beyond a threshold,
after the operator's reaction delay; the summary says when and why."""

from __future__ import annotations

import pytest
from helpers import queue_scenario

from sim.engine import Run
from sim.errors import InputError
from sim.metrics.summary import summarize
from sim.scenario import parse_scenario

QUOTA = {"policy": "daily_quota", "limit": 1, "window": "calendar", "enabled": False}


def overload(trigger: dict, delay: float = 200.0, **tier) -> dict:
    """2 GPUs of 1 s each: 0.5 requests/s until t = 300 s, then 5/s (overloaded); a trigger
    switches on a 1-a-day quota (each user: 1 request a day, so its rejections show when)."""
    tiers = [{"name": "a", "share": 1, "priority": 0, "price_per_image": 0, "slo_s": 1e9, **tier}]
    pol = [{**QUOTA, "schedule": [{"trigger": trigger, "delay_s": delay, "enabled": True}]}]
    return queue_scenario(0.5, 1.0, 2, 1500, seed=4, dist="deterministic", tiers=tiers, policies=pol,
                          demand={"points": [[0, 0.5], [299.999, 0.5], [300, 5.0], [1500, 5.0]],
                                  "users": 10**6, "interpolation": "step"},
                          outputs={"interval_s": 10, "warmup_s": 0, "figures": False, "report": False})


def fired(d: dict) -> tuple[list[dict], Run]:
    r = Run(parse_scenario(d), trace=True).execute()
    return summarize(r)["policies"]["daily_quota"].get("fired", []), r


def test_a_trigger_fires_after_its_duration_and_lands_after_the_operator_delay():
    f, r = fired(overload({"metric": "utilization", "above": 0.9, "for": "120s", "check_s": 60}))
    # the check at 360 s reads 300-360 s (busy), so above since 300; held 120 s at 420 s
    assert len(f) == 1
    assert f[0]["above_since_h"] == pytest.approx(300 / 3600, abs=1e-4)
    assert f[0]["fired_h"] == pytest.approx(420 / 3600, abs=1e-4)
    assert f[0]["applied_h"] == pytest.approx(620 / 3600, abs=1e-4)
    assert "utilization" in f[0]["why"] and f[0]["change"] == "on"
    quota = [t for t, _, _, _, _, code, _ in r.trace_offered if code >= 0]
    assert quota and min(quota) >= 620.0  # nothing rejected before the change landed


@pytest.mark.parametrize("trigger, extra", [
    ({"metric": "queue_wait", "tier": "a", "above": 20.0}, {}),
    ({"metric": "p95", "tier": "a", "above": 20.0}, {}),
    ({"metric": "rejection_share", "tier": "a", "above": 0.3}, {"queue_limit": 50}),
])
def test_each_tier_metric_fires_in_the_overload_and_not_before(trigger, extra):
    f, _ = fired(overload({**trigger, "for": "60s", "check_s": 30}, delay=0.0, **extra))
    assert len(f) == 1
    # the queue needs a few windows to build: after 300 s, within 300 s of it
    assert 300 / 3600 < f[0]["fired_h"] < 600 / 3600
    assert f[0]["value"] > trigger["above"] and f[0]["applied_h"] == f[0]["fired_h"]


def test_a_threshold_never_reached_never_fires():
    f, _ = fired(overload({"metric": "utilization", "above": 0.999999, "for": "1h", "check_s": 60}))
    assert f == []


@pytest.mark.parametrize("when, field", [
    ({"trigger": {"metric": "p95", "above": 1}}, "policies[0].schedule[0].trigger"),
    ({"trigger": {"metric": "p95", "tier": "zz", "above": 1}}, "policies[0].schedule[0].trigger.tier"),
    ({"at": 5, "trigger": {"metric": "utilization", "above": 1}}, "policies[0].schedule[0]"),
    ({"at": 5, "delay_s": 3}, "policies[0].schedule[0]"),
])
def test_bad_triggers_name_the_field(when, field):
    d = queue_scenario(1.0, 1.0, 1, 10, policies=[{**QUOTA, "schedule": [when]}])
    with pytest.raises(InputError) as e:
        parse_scenario(d)
    assert e.value.field == field


def test_the_policy_search_tunes_a_triggers_threshold_and_delay(tmp_path, capsys):
    import json

    import pandas as pd
    import yaml

    from sim.cli import main

    p = tmp_path / "s.yaml"
    d = overload({"metric": "utilization", "above": 0.9, "for": "60s", "check_s": 60})
    d["horizon"] = 900
    d["demand"]["points"] = [[0, 0.5], [299.999, 0.5], [300, 5.0], [900, 5.0]]
    p.write_text(yaml.safe_dump(d))
    thr, delay = "policies.daily_quota.schedule.0.trigger.above", "policies.daily_quota.schedule.0.delay_s"
    out = tmp_path / "opt"
    assert main(["optimize", str(p), "--param", f"{thr}=0.5:0.99", "--param", f"{delay}=0:600",
                 "--objective", "served_images", "--reps", "1", "--trials", "4", "--batch", "2",
                 "--jobs", "1", "--out", str(out), "--json", "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["trials"] == 4
    trials = pd.read_csv(out / "trials.csv")
    assert trials[thr].between(0.5, 0.99).all() and trials[delay].between(0, 600).all()
    assert trials[thr].nunique() == 4
