"""Purchase options: reserved, on-demand and spot GPUs, their bill, spot preemptions at the
configured rate, and the autoscaler's buying order within a budget."""

from __future__ import annotations

import pytest
from helpers import queue_scenario
from scipy.stats import poisson

from sim.engine import Run
from sim.errors import InputError
from sim.fleet.purchase import HOURS_PER_MONTH, Ledger, Prices, fixed_split
from sim.metrics.summary import summarize
from sim.scenario import parse_scenario

PRICES = Prices(reserved_per_month=1.2 * HOURS_PER_MONTH, on_demand_per_hour=2.0, spot_per_hour=0.7)


def test_ledger_fills_reserved_then_on_demand_then_spot_and_bills_reserved_live_or_not():
    led = Ledger(slots=10, reserved=3, spot=4, prices=PRICES)
    assert led.split(2) == {"reserved": 2, "on_demand": 0, "spot": 0}
    assert led.split(5) == {"reserved": 3, "on_demand": 2, "spot": 0}
    assert led.split(9) == {"reserved": 3, "on_demand": 3, "spot": 3}
    assert led.hourly(0) == pytest.approx(3 * 1.2)  # reserved GPUs are paid while off
    assert led.hourly(9) == pytest.approx(3 * 1.2 + 3 * 2.0 + 3 * 0.7)
    assert led.most_within(3 * 1.2 + 2 * 2.0) == 5
    assert led.most_within(1.0) == 3  # the reserved ones cost nothing more when live
    # 2 h at 9 live, then 1 h at 4 live
    c = led.cost([(0.0, 9), (7200.0, 4)], 0.0, 10800.0)
    assert c == pytest.approx({"reserved": 3 * 1.2 * 3, "on_demand": 2 * 3 * 2.0 + 1 * 2.0,
                               "spot": 2 * 3 * 0.7})


def test_a_fixed_fleet_is_bought_cheapest_first_within_each_cap():
    assert fixed_split(10, {"reserved": 4, "spot": 3}, PRICES) == {"reserved": 4, "on_demand": 3, "spot": 3}
    assert fixed_split(2, {"reserved": 4, "spot": 3}, PRICES) == {"reserved": 0, "on_demand": 0, "spot": 2}
    dear_spot = Prices(1.2 * HOURS_PER_MONTH, 2.0, 2.5)
    assert fixed_split(10, {"reserved": 4, "spot": 3}, dear_spot) == {"reserved": 4, "on_demand": 6, "spot": 0}


def test_spot_preemptions_come_at_the_configured_rate_and_leave_after_the_notice():
    """40 spot GPUs at 1 preemption per GPU-day over 200 h: the count is Poisson with mean
    rate x spot GPU-hours at risk (~333); it must fall in the central 99.9% interval of that
    Poisson law, and of the nominal 40 x 200 h one. Each preempted GPU leaves exactly the
    notice after its notice and a replacement serves restore_s later. The bill: reserved GPUs
    every hour, spot ones while live."""
    rate, hours, spot = 1.0, 200.0, 40
    d = queue_scenario(0.05, 1.0, 50, hours * 3600, seed=11, dist="deterministic")
    d["fleet"]["pools"][0].update(price_per_gpu_hour=2.0, purchase={
        "reserved": 10, "spot": spot, "preemptions_per_gpu_day": rate, "notice_s": 120,
        "restore_s": 600})
    r = Run(parse_scenario(d)).execute()
    s = summarize(r)
    sp = r.spot[0]
    n = len(sp.notices)
    mean = rate / 24 * sp.exposure_s / 3600
    assert mean == pytest.approx(rate / 24 * spot * hours, rel=0.02)  # little time away
    for mu in (mean, rate / 24 * spot * hours):
        lo, hi = poisson.interval(0.999, mu)
        assert lo <= n <= hi, (n, mu)
    assert s["fleet"]["spot"]["p"]["preemptions"] == n
    end = hours * 3600
    served = [a for a in sp.notices if a + 120 <= end]  # notices that ran out before the end
    assert [round(b - a, 9) for a, b in zip(served, sp.left, strict=True)] == [120.0] * len(served)
    log = [(t, m) for t, _, m in r.gpu_log]
    ups = [t for (t, m), (_, m0) in zip(log[1:], log, strict=False) if m > m0]
    assert ups == pytest.approx([x + 600 for x in sp.left if x + 600 <= end], abs=1e-6)
    by = s["money"]["gpu_cost_by_option"]
    assert by["reserved"] == pytest.approx(10 * 1.2 * hours)  # 60% of $2, live or not
    spot_hours = spot * hours - sum(min(600.0, end - x) for x in sp.left) / 3600
    assert by["spot"] == pytest.approx(0.35 * 2.0 * spot_hours, rel=1e-6)
    assert by["on_demand"] == 0
    assert s["money"]["gpu_cost_per_day"] == pytest.approx(s["money"]["gpu_cost"] / (hours / 24), abs=0.01)


def test_the_autoscaler_buys_reserved_then_on_demand_then_spot_within_the_budget():
    """Overloaded from the start: 2 reserved live, 2 on-demand and 4 spot slots above; a budget
    of the reserved bill plus 2 on demand plus 1 spot per hour stops it at 5 GPUs."""
    pol = [{"policy": "autoscale", "target": 0.5, "period_s": 10, "provisioning_delay_s": 5,
            "cooldown_s": 1e6, "min_gpus": 1, "budget_per_hour": 2 * 1.2 + 2 * 2.0 + 0.7}]
    d = queue_scenario(20.0, 1.0, 2, 300, seed=3, dist="deterministic", policies=pol)
    d["fleet"]["pools"][0].update(max_gpus=8, price_per_gpu_hour=2.0, purchase={
        "reserved": 2, "spot": 4, "preemptions_per_gpu_day": 0})
    r = Run(parse_scenario(d)).execute()
    assert max(n for _, _, n in r.gpu_log) == 5
    by = summarize(r)["money"]["gpu_cost_by_option"]
    assert by["spot"] > 0 and by["on_demand"] > 2 * by["spot"]


def test_reserved_and_spot_must_fit_the_pool():
    d = queue_scenario(1.0, 1.0, 4, 10)
    d["fleet"]["pools"][0]["purchase"] = {"reserved": 3, "spot": 2}
    with pytest.raises(InputError, match=r"fleet.pools\[0\].*exceed the pool's GPUs"):
        parse_scenario(d)
