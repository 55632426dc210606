"""The fleet loop against closed-form queueing results (../shared/reference/queueing_oracles.md).

Each check averages R independent replications (fixed seeds). The tolerance is the issue's;
each test also asserts that the 95% confidence half-width of its estimate (batch means over
the replications) is below that tolerance, so a pass is not luck of a short run.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import queue_scenario, run
from queueing import batch_means_halfwidth, bulk_lq, cobham_mg1, md1_wq, mmc_wq

from sim.metrics.summary import summarize


def _rel_errors(runs, theory, tier=0, field="sum_wait"):
    out = []
    for r in runs:
        S = r.fleet.S
        out.append(getattr(S, field)[tier] / S.done_stats[tier] / theory - 1)
    return np.array(out)


def _check_little_and_conservation(r):
    s = summarize(r)
    for name, t in s["tiers"].items():
        lit = t["little"]
        assert lit["L"] == pytest.approx(lit["lambda"] * lit["W"], rel=0.01), name
        rej = sum(t["rejected"].values()) - t["rejected"]["timeout"]
        assert t["offered"] == t["admitted"] + rej
        assert t["admitted"] == t["completed"] + t["abandoned"] + t["in_system_end"]


@pytest.mark.parametrize(
    "lam,c,horizon,reps",
    [
        (16.0, 20, 150_000, 6),  # rho = 0.8, ~2.4M customers a replication
        (19.0, 20, 450_000, 12),  # rho = 0.95, ~8.5M customers a replication
    ],
)
def test_mmc_fifo_mean_wait_matches_erlang_c(lam, c, horizon, reps):
    runs = [run(queue_scenario(lam, 1.0, c, horizon, seed=s)) for s in range(reps)]
    err = _rel_errors(runs, mmc_wq(lam, 1.0, c))
    hw = batch_means_halfwidth(err)
    assert hw < 0.02, f"run too short for a 2% check: half-width {hw:.3%}"
    assert abs(err.mean()) < 0.02, f"Wq off Erlang C by {err.mean():.3%} (±{hw:.3%})"
    _check_little_and_conservation(runs[0])


def test_md1_mean_wait_matches_pollaczek_khinchine():
    runs = [run(queue_scenario(0.8, 1.0, 1, 1_500_000, seed=s, dist="deterministic")) for s in range(5)]
    err = _rel_errors(runs, md1_wq(0.8, 1.0))
    hw = batch_means_halfwidth(err)
    assert hw < 0.02
    assert abs(err.mean()) < 0.02, f"Wq off P-K by {err.mean():.3%} (±{hw:.3%})"
    _check_little_and_conservation(runs[0])


def test_two_class_priority_matches_cobham():
    lam1, lam2 = 0.3, 0.5  # rho = 0.8 on one server, exponential service of mean 1
    tiers = [
        {"name": "paid", "share": lam1 / (lam1 + lam2), "priority": 0, "price_per_image": 0, "slo_s": 1e9},
        {"name": "free", "share": lam2 / (lam1 + lam2), "priority": 1, "price_per_image": 0, "slo_s": 1e9},
    ]
    runs = [
        run(queue_scenario(lam1 + lam2, 1.0, 1, 1_000_000, seed=s, tiers=tiers,
                           discipline="strict_priority"))
        for s in range(6)
    ]
    theory = cobham_mg1([lam1, lam2], [1.0, 1.0], [2.0, 2.0])
    for k in range(2):
        err = _rel_errors(runs, theory[k], tier=k)
        hw = batch_means_halfwidth(err)
        assert hw < 0.03
        assert abs(err.mean()) < 0.03, f"class {k}: off Cobham by {err.mean():.3%} (±{hw:.3%})"
    _check_little_and_conservation(runs[0])


def test_bulk_service_matches_mmk1_formula():
    # Server always cycling (launch: cycle): batch epochs at rate mu, each takes up to K waiting.
    lam, mu, K = 3.0, 1.0, 4
    runs = [
        run(queue_scenario(lam, mu, 1, 600_000, seed=s, max_batch=K, launch="cycle"))
        for s in range(6)
    ]
    wq = bulk_lq(lam, mu, K) / lam  # Little: Wq = Lq / lambda
    err = _rel_errors(runs, wq)
    hw = batch_means_halfwidth(err)
    assert hw < 0.03
    assert abs(err.mean()) < 0.03, f"Wq off the bulk formula by {err.mean():.3%} (±{hw:.3%})"
    _check_little_and_conservation(runs[0])


def test_on_demand_batching_waits_less_than_cycling():
    # The formula does not describe a server that idles and starts a batch of one on the next
    # arrival: that variant must come out lower (reference note).
    lam, mu, K = 3.0, 1.0, 4
    cyc = run(queue_scenario(lam, mu, 1, 200_000, seed=1, max_batch=K, launch="cycle"))
    dem = run(queue_scenario(lam, mu, 1, 200_000, seed=1, max_batch=K, launch="on_demand"))
    w = [r.fleet.S.sum_wait[0] / r.fleet.S.done_stats[0] for r in (cyc, dem)]
    assert w[1] < w[0]


# ---- request classes: each request costs its own class's service time (sim/classes.py) ----
# Seeds 2000+: independent of the checks above.

P_SHORT, S_SHORT, S_LONG = 0.6, 0.5, 2.0  # a short class 0.5 s, a long one 2 s: E[S] = 1.1
CLASSES = [{"name": "short", "service_time_s": S_SHORT}, {"name": "long", "service_time_s": S_LONG}]


@pytest.mark.slow
@pytest.mark.parametrize("dist,m2", [("deterministic", 1.0), ("exponential", 2.0)])
def test_two_class_mg1_matches_pollaczek_khinchine_for_the_mixed_service(dist, m2):
    # One tier asking for 60% short, 40% long on one server (rho = 0.8): an M/G/1 queue whose
    # service time is the mixture, so Wq = lam E[S^2] / (2 (1 - rho)) with E[S^2] the
    # mixture's (m2 = E[X^2] of the noise: 1 deterministic, 2 exponential).
    es = P_SHORT * S_SHORT + (1 - P_SHORT) * S_LONG
    lam = 0.8 / es
    es2 = m2 * (P_SHORT * S_SHORT**2 + (1 - P_SHORT) * S_LONG**2)
    runs = []
    for s in range(2000, 2006):
        d = queue_scenario(lam, 1.0, 1, 1_500_000, seed=s, dist=dist)
        d["request_classes"] = {"classes": CLASSES, "mix": {"a": {"short": P_SHORT, "long": 1 - P_SHORT}}}
        runs.append(run(d))
    err = _rel_errors(runs, lam * es2 / (2 * (1 - 0.8)))
    hw = batch_means_halfwidth(err)
    assert hw < 0.02, f"run too short for a 2% check: half-width {hw:.3%}"
    assert abs(err.mean()) < 0.02, f"Wq off P-K by {err.mean():.3%} (±{hw:.3%})"
    # the mix itself: the short share of requests started within 4 binomial sigmas
    n = sum(r.fleet.S.cls_stats[:, 0].sum() for r in runs)
    short = sum(r.fleet.S.cls_stats[0, 0] for r in runs)
    assert abs(short / n - P_SHORT) < 4 * np.sqrt(P_SHORT * (1 - P_SHORT) / n)
    _check_little_and_conservation(runs[0])


@pytest.mark.slow
def test_two_classes_of_different_service_under_priority_match_cobham():
    # paid asks for the short class only, free for the long one; strict priority on one
    # server (rho = 0.8): non-preemptive priority M/G/1 with per-class deterministic service.
    lam = 0.8 / (P_SHORT * S_SHORT + (1 - P_SHORT) * S_LONG)
    lam1, lam2 = lam * P_SHORT, lam * (1 - P_SHORT)
    tiers = [
        {"name": "paid", "share": P_SHORT, "priority": 0, "price_per_image": 0, "slo_s": 1e9},
        {"name": "free", "share": 1 - P_SHORT, "priority": 1, "price_per_image": 0, "slo_s": 1e9},
    ]
    runs = []
    for s in range(2010, 2016):
        d = queue_scenario(lam, 1.0, 1, 1_000_000, seed=s, tiers=tiers, dist="deterministic",
                           discipline="strict_priority")
        d["request_classes"] = {"classes": CLASSES, "mix": {"paid": {"short": 1.0}, "free": {"long": 1.0}}}
        runs.append(run(d))
    theory = cobham_mg1([lam1, lam2], [S_SHORT, S_LONG], [S_SHORT**2, S_LONG**2])
    for k in range(2):
        err = _rel_errors(runs, theory[k], tier=k)
        hw = batch_means_halfwidth(err)
        assert hw < 0.03
        assert abs(err.mean()) < 0.03, f"tier {k}: off Cobham by {err.mean():.3%} (±{hw:.3%})"
    _check_little_and_conservation(runs[0])
