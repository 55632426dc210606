"""Demand models: intensity against counts, Hawkes, Bass, trace replay, retries, the Ghibli figures."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest
from helpers import queue_scenario, run, unpos

from sim.cli import main
from sim.demand import build_demand
from sim.demand.base import Arrivals
from sim.demand.viral import ViralModel
from sim.metrics.summary import summarize
from sim.policies import REASONS, Policy, register
from sim.policies.base import Params
from sim.scenario import parse_scenario

TIERS = [{"name": "paid", "share": 0.2, "priority": 0, "price_per_image": 0.01, "slo_s": 60},
         {"name": "free", "share": 0.8, "priority": 1, "price_per_image": 0.0, "slo_s": 120}]


def scenario(demand: dict, horizon=86400.0, chunk_s=60.0, cell_fraction=1.0, **extra):
    d = {"name": "d", "seed": 7, "horizon": horizon, "chunk_s": chunk_s,
         "cell_fraction": cell_fraction, "demand": demand, "tiers": TIERS,
         "fleet": {"pools": [{"name": "p", "gpus": 1, "service_time_s": 1.0}]},
         "outputs": {"figures": False, "report": False}}
    d.update(extra)
    return parse_scenario(d)


def stream(sc, until=None):
    """All chunks of a scenario's demand, as the engine would draw them."""
    m = build_demand(sc)
    parts, k, c = [], 0, sc.chunk_s
    until = sc.horizon if until is None else until
    while k * c < until:
        parts.append(m.generate(k * c, min((k + 1) * c, until), np.random.default_rng([sc.seed, 1, k])))
        k += 1
    return m, Arrivals.concat(parts)


VIRAL = {
    "model": "viral",
    "waves": [{"name": "a", "start": "2h", "market": 2e6, "p": 0.5, "q": 3.0,
               "tiers": {"paid": 1.0}},
              {"name": "b", "start": "10h", "market": 3e6, "adoption": "logistic", "rate": 6,
               "i0": 0.01}],
    "sessions": {"repeat": 3.0, "novelty_s": "6h", "images": 1.0},
    "seasonality": {"diurnal_amplitude": 0.5, "weekend_factor": 1.3,
                    "regions": [{"name": "x", "share": 0.6, "utc_offset_h": -5},
                                {"name": "y", "share": 0.4, "utc_offset_h": 8}]},
}


def test_window_counts_match_integrated_intensity():
    sc = scenario(VIRAL, horizon=86400.0, cell_fraction=0.02)
    m, a = stream(sc)
    edges = np.arange(0.0, sc.horizon + 1, 1800.0)
    got = np.histogram(a.t, edges)[0]
    # first sessions follow N(t) to within a user per block; repeats are Poisson(Lambda)
    lam = np.diff(m.new_users(edges) + m.rep_rate.cumulative(edges))
    assert lam.sum() > 1e5
    assert np.all(np.abs(got - lam) < 4 * np.sqrt(lam) + 2 * len(m.M)), np.max(np.abs(got - lam) / np.sqrt(lam + 1))
    assert np.all(np.diff(a.t) >= 0) and a.t.min() >= 0 and a.t.max() < sc.horizon
    # the wave's tier mix: wave a's users are all paid
    first_b = m.off[m.b_wave == 1].min()
    assert np.all(a.tier[a.user < first_b] == 0)
    assert 0.7 < np.mean(a.tier[a.user >= first_b] == 1) < 0.9


def test_sessions_heavy_tails_and_expected_images():
    spec = dict(VIRAL, sessions={"repeat": 2.0, "novelty_s": "6h", "images": 3.0, "think_s": 30,
                                 "activity_tail": 1.5})
    sc = scenario(spec, horizon=86400.0, cell_fraction=0.01)
    m, a = stream(sc)
    exp = m.image_rate(sc.horizon)
    Lam = exp.cumulative(sc.horizon) - exp.cumulative(0.0)
    assert abs(len(a) - Lam) < 0.03 * Lam  # sessions x images, compound: a loose bound
    per_user = np.bincount(a.user)
    per_user = np.sort(per_user[per_user > 0])[::-1]
    top = per_user[: len(per_user) // 100].sum() / per_user.sum()
    assert top > 0.05  # the top 1% of users make well over 1% of the requests


def test_hawkes_mean_rate():
    mu, n = 20.0, 0.5
    d = {"points": [[0, mu]], "users": 1000,
         "social": {"branching": n, "kernel": "exponential", "scale_s": 10}}
    sc = scenario(d, horizon=20000.0, chunk_s=100.0)
    _, a = stream(sc)
    rate = np.sum(a.t >= 500) / (sc.horizon - 500)
    assert abs(rate / (mu / (1 - n)) - 1) < 0.03
    # power-law kernel, the same mean
    d["social"] = {"branching": n, "kernel": "power_law", "scale_s": 2, "exponent": 1.5,
                   "max_delay_s": 300}
    _, a = stream(scenario(d, horizon=20000.0, chunk_s=100.0))
    rate = np.sum(a.t >= 1000) / (20000.0 - 1000)
    assert abs(rate / (mu / (1 - n)) - 1) < 0.03


def test_hawkes_only_successful_through_the_run():
    q = queue_scenario(10.0, 1.0, 60, 20000.0, seed=4, chunk_s=5.0)
    q["demand"]["social"] = {"branching": 0.5, "scale_s": 60, "only_successful": True}
    r = run(q)
    s = summarize(r)
    rate = s["demand"]["offered"] / 20000.0
    assert abs(rate / 20.0 - 1) < 0.03
    assert s["demand"]["social_requests"] > 0


def bass_F(t, p, q):
    e = np.exp(-(p + q) * t)
    return (1 - e) / (1 + q / p * e)


def test_bass_cumulative_adopters_closed_form():
    p, q, m, start = 0.03, 0.9, 5e5, 3600.0
    spec = {"model": "viral", "waves": [{"start": start, "market": m, "p": p, "q": q}],
            "sessions": {"repeat": 0.0, "images": 1.0},
            "seasonality": {"regions": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}]}}
    sc = scenario(spec, horizon=10 * 86400.0, chunk_s=600.0)
    model, a = stream(sc)
    ts = np.arange(0.0, sc.horizon + 1, 6 * 3600.0)
    cum = np.searchsorted(a.t, ts)
    closed = m * bass_F(np.maximum(ts - start, 0) / 86400.0, p, q)
    assert np.all(np.abs(cum - closed) <= 2)  # one user per region block at most
    assert len(np.unique(a.user)) == len(a)  # each adopter once: its first session
    assert np.allclose(model.new_users(ts), closed, rtol=1e-12, atol=1e-6)


def test_logistic_and_sir_shapes():
    w = [{"market": 1e6, "adoption": "logistic", "rate": 2.0, "i0": 0.001},
         {"market": 1e6, "adoption": "sir", "beta": 3.0, "gamma": 1.0, "i0": 0.001}]
    m = ViralModel(scenario({"model": "viral", "waves": w}).demand,
                   parse_scenario_tiers(), 1.0, until=60 * 86400.0)
    t = np.linspace(0, 60 * 86400.0, 500)
    for a in m.adopt:
        F = a(t)
        assert np.all(np.diff(F) >= -1e-12) and F[0] == 0
        y = np.array([0.1, 0.3, 0.5])
        assert np.allclose(a(a.inverse(y)), y, atol=1e-6)
    assert abs(m.adopt[0](t[-1]) - 1) < 1e-6
    # SIR final size z: z = 1 - exp(-R0 z) with R0 = beta / gamma (ever infected, from i0 -> 0)
    z = m.adopt[1](t[-1])
    assert abs(z - (1 - np.exp(-3.0 * z))) < 5e-3


def parse_scenario_tiers():
    from sim.scenario import Tier

    return [Tier(**t) for t in TIERS]


def _trace_times(path):
    """Seconds since the first row, read independently of the model (integer nanoseconds)."""
    ns = []
    with open(path) as f:
        next(f)
        for line in f:
            ts = line.split(",")[0]
            day, frac = ts.split(".") if "." in ts else (ts, "0")
            sec = int(datetime.fromisoformat(day).timestamp())
            ns.append(sec * 10**9 + int(frac.ljust(9, "0")[:9]))
    ns = np.sort(np.array(ns, np.int64))
    return (ns - ns[0]) / 1e9


@pytest.mark.parametrize("name", ["azure_llm_2023_code.csv", "azure_llm_2023_conv.csv"])
def test_trace_replay_exact(root, name):
    path = root / "sim/data/traces" / name
    want = _trace_times(path)
    sc = scenario({"model": "trace", "path": str(path)}, horizon=want[-1] + 1, chunk_s=60.0)
    _, a = stream(sc)
    assert np.array_equal(a.t, want)
    # scaled, shifted, looped
    d = {"model": "trace", "path": name, "time_scale": 0.5, "shift": 100, "loop": True,
         "period": 2000}
    sc = scenario(d, horizon=100 + 2000 + want[-1] * 0.5 + 1, chunk_s=60.0)
    _, a = stream(sc)
    exp = np.concatenate([100 + 0.5 * want, 2100 + 0.5 * want])
    assert len(a) == len(exp) and np.allclose(a.t, exp, rtol=0, atol=1e-9)


def test_trace_through_the_run_and_bad_column(root, tmp_path):
    path = root / "sim/data/traces/azure_llm_2023_code.csv"
    n = sum(1 for _ in open(path)) - 1
    q = queue_scenario(5.0, 1.0, 10, 3700.0)
    q["demand"] = {"model": "trace", "path": str(path)}
    assert summarize(run(q))["demand"]["offered"] == n
    q["demand"] = {"model": "trace", "path": str(path), "column": "nope"}
    f = tmp_path / "s.yaml"
    import yaml

    f.write_text(yaml.safe_dump(q))
    assert main(["demand", str(f), "--json"]) == 2


class Coin(Policy):
    """Rejects each attempt independently with probability p (tests only)."""

    name = "test_coin"

    class Params(Params):
        p: float = 0.5

    def __init__(self, params, tiers, epoch=0.0):
        super().__init__(params, tiers, epoch)
        self.rng = np.random.default_rng(99)

    def admit_many(self, t, user, tier):
        ok = self.rng.random(len(t)) >= self.params.p
        code = np.where(ok, -1, REASONS.index("rate_limited")).astype(np.int8)
        return ok, code, np.full(len(t), np.nan)


register(Coin)


@pytest.mark.parametrize("jitter", ["full", "decorrelated"])
def test_retry_amplification(jitter):
    p, A = 0.4, 3
    q = queue_scenario(20.0, 1.0, 100, 10000.0, seed=5, chunk_s=1.0,
                       policies=[{"policy": "test_coin", "p": p}])
    q["demand"]["retry"] = {"max_attempts": A, "base_s": 1, "cap_s": 8, "jitter": jitter}
    s = summarize(run(q))["demand"]
    want = (1 - p**A) / (1 - p)
    assert abs(s["retry_amplification"] / want - 1) < 0.01
    assert s["offered"] == s["first_attempts"] + s["retries"]


def test_conversion_moves_quota_hitters_to_paid():
    q = queue_scenario(2.0, 1.0, 20, 3 * 86400.0, seed=1, chunk_s=300.0, tiers=TIERS,
                       policies=[{"policy": "daily_quota", "tiers": ["free"], "limit": 2}])
    q["demand"]["users"] = 2000
    base = summarize(run(q))
    q["demand"]["conversion"] = {"tiers": ["free"], "to": "paid", "probability": 0.5}
    s = summarize(run(q))
    assert s["demand"]["conversions"] > 300
    assert s["tiers"]["paid"]["offered"] > base["tiers"]["paid"]["offered"]
    assert s["tiers"]["free"]["rejected"]["quota_exceeded"] < base["tiers"]["free"]["rejected"]["quota_exceeded"]


def test_viral_run_deterministic_with_demand_section():
    spec = dict(VIRAL, retry={"max_attempts": 2}, social={"branching": 0.2, "scale_s": 600})
    d = queue_scenario(1.0, 1.0, 30, 43200.0, seed=3, chunk_s=60.0, tiers=TIERS,
                       cell_fraction=0.01)
    d["demand"] = spec
    a, b = summarize(run(d)), summarize(run(d))
    assert a == b
    assert a["demand"]["unique_users"] == a["demand"]["new_users"] > 0
    assert a["demand"]["social_requests"] > 0


def test_ghibli_figures(root, capsys):
    assert main(["demand", str(root / "scenarios/ghibli_2025.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(out["peak_new_users_per_hour"] / 1e6 - 1) < 0.1
    assert abs(out["users_first_8_days"] / 130e6 - 1) < 0.1
    assert abs(out["images_first_8_days"] / 700e6 - 1) < 0.1
    assert out["peak_requests_per_s"] > 1000


def test_demand_cli_plot_and_bad_input(tmp_path, root, capsys):
    png = tmp_path / "d" / "demand.png"
    assert main(["demand", str(root / "scenarios/ghibli_2025.yaml"), "--plot", str(png),
                 "--horizon", "2d"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["demand.png"]
    capsys.readouterr()
    import yaml

    d = yaml.safe_load((root / "scenarios/ghibli_2025.yaml").read_text())
    d["demand"]["waves"][1]["speed"] = 3
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(d))
    assert main(["demand", str(f), "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [unpos(e) for e in err] == [f"error: {f}: demand.waves[1].speed: unknown key"]


def test_user_bits_match_a_bool_array_per_user():
    # one bit per user (seen users, conversion decisions): growing, setting and reading agree
    # with a plain bool array, duplicates and ids past the end included
    from sim.demand.feedback import UserBits

    rng = np.random.default_rng(8)
    bits, ref = UserBits(), np.zeros(0, bool)
    for i in range(60):
        u = rng.integers(0, 50 * (i + 1) ** 2, rng.integers(0, 400))
        bits.set(u)
        if len(u) and u.max() >= len(ref):
            ref = np.concatenate([ref, np.zeros(u.max() + 1 - len(ref), bool)])
        ref[u] = True
        q = rng.integers(0, len(ref) + 9, 200)
        assert (bits.get(q) == np.array([x < len(ref) and ref[x] for x in q])).all()
    assert bits.count() == int(ref.sum())


@pytest.mark.parametrize("kind", ["uniform", "ties", "signed", "runs", "few", "clustered"])
def test_stable_argsort_is_numpys_stable_argsort(kind):
    # the radix path and the sorted-runs path give numpy's permutation exactly (ties in
    # index order, -0.0 equal to 0.0, infinities at the ends)
    from sim.demand.base import stable_argsort

    rng = np.random.default_rng(3)
    n = 20000
    t = {"uniform": lambda: rng.uniform(1e5, 1e5 + 300, n),
         "ties": lambda: np.round(rng.uniform(0, 30, n), 1),
         "signed": lambda: np.where(np.arange(n) % 7 == 0, -0.0, rng.normal(0, 1e3, n)),
         "runs": lambda: np.concatenate([np.sort(rng.uniform(0, 9, n // 2)), np.sort(rng.uniform(3, 5, n // 2))]),
         "few": lambda: rng.uniform(0, 1, 100),
         # one far outlier: every other time in one quantum (the insertion pass gives up)
         "clustered": lambda: np.append(rng.uniform(0, 1e-3, n), 1e9)}[kind]()
    if kind == "signed":
        t[::13], t[::17] = np.inf, -np.inf
    assert (stable_argsort(t) == np.argsort(t, kind="stable")).all()


def test_demand_thread_gives_the_same_run():
    # First attempts made ahead on a second thread (Run.threads): paid conversion, which
    # depends on the run, is applied when a chunk is taken, so nothing changes.
    from sim.engine import Run

    q = queue_scenario(2.0, 1.0, 20, 2 * 86400.0, seed=2, chunk_s=300.0, tiers=TIERS,
                       policies=[{"policy": "daily_quota", "tiers": ["free"], "limit": 2}])
    q["demand"]["users"] = 2000
    q["demand"]["conversion"] = {"tiers": ["free"], "to": "paid", "probability": 0.5}
    q["demand"]["retry"] = {"max_attempts": 3, "base_s": 1, "cap_s": 8}
    sc = parse_scenario(q)
    a, b = summarize(Run(sc, threads=False).execute()), summarize(Run(sc, threads=True).execute())
    assert a["demand"]["conversions"] > 100
    assert a == b


def test_tier_override_last_move_wins():
    from sim.demand.stream import TierOverride

    rng = np.random.default_rng(5)
    o, ref = TierOverride(), {}
    assert o.a is None
    for _ in range(30):
        users, k = rng.integers(0, 5000, rng.integers(1, 300)), int(rng.integers(0, 3))
        o.set(users, k)
        ref.update({int(u): k for u in users})
        q = rng.integers(0, 6000, 500)
        own = rng.integers(0, 3, 500)
        assert (o.apply(q, own) == np.array([ref.get(int(u), int(t)) for u, t in zip(q, own, strict=True)])).all()


def test_demand_figures_are_named_by_the_scenarios_own_window(root, tmp_path, capsys):
    # token_bucket.yaml: 3 h of a curve 8 -> 30 (1 h) -> 30 (2 h) -> 8 (3 h) requests/s
    assert main(["demand", str(root / "scenarios/policies/token_bucket.yaml"), "--json",
                 "--sample", "--plot", str(tmp_path / "d.png")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["window"] == "3 hours"
    assert not [k for k in out if "8_days" in k]
    area = 0.5 * (8 + 30) * 3600 * 2 + 30 * 3600
    assert out["images_first_3_hours"] == area
    assert out["mean_requests_per_s_first_3_hours"] == round(area / 10800, 3)
    # the generated requests over the same window: Poisson around the area (6 sigma)
    assert abs(out["sampled"]["images_first_3_hours"] - area) < 6 * area**0.5


def test_a_spike_is_clipped_and_annotated_not_left_to_flatten_the_curve():
    import pandas as pd

    from sim.report import figures

    n = 200
    t = np.arange(n) * 60.0
    offered = 50 + 10 * np.sin(t / 3000.0)
    offered[120] = 5000  # the retry wave at 00:00 UTC, one interval
    ts = pd.DataFrame({"t_s": t, "t_h": t / 3600, "time": pd.to_datetime(
        1743379200 + t, unit="s", utc=True), "a.offered": offered * 60, "a.completed": 40 * 60.0})
    fig = figures.demand_vs_capacity(ts, ["a"], np.full(n, 45.0))
    ax = fig.axes[0]
    assert 60 < ax.get_ylim()[1] < 100  # the body of the curve fills the axes
    notes = [c.get_text() for c in ax.texts]
    assert notes == ["spike clipped: 5,000 images/s at 2025-03-31 02:00 UTC"]
    ts.loc[120, "a.offered"] = 70 * 60  # no spike: nothing clipped
    ax = figures.demand_vs_capacity(ts, ["a"], np.full(n, 45.0)).axes[0]
    assert len(ax.texts) == 0 and ax.get_ylim()[1] >= 70


def test_demand_feed_hands_the_same_arrivals_in_any_windows_and_defers_created_ones():
    # The run's feed (sim/demand/feed.py): first attempts taken in uneven windows, or cut by a
    # limit, are the chunks' arrivals and noise in order; a created request inside the window
    # just taken waits for its end (counted), one after it keeps its time.
    from sim.demand.feed import DemandFeed, chunk_with_noise

    sc = parse_scenario(queue_scenario(50.0, 1.0, 1, 100.0, seed=3, chunk_s=10.0))
    dem = build_demand(sc)
    whole = [chunk_with_noise(dem, sc, k, sc.horizon) for k in range(10)]
    t = np.concatenate([a.t for a, _, _ in whole])
    e = np.concatenate([x for _, x, _ in whole])
    assert len(t) > 4000

    def drain(ends, limit=None):
        f = DemandFeed(dem, sc, 0.0, np.random.default_rng(0))
        got_t, got_e = [], []
        for u in ends:
            while True:
                a, ea, _, nxt = f.take(u, limit)
                got_t.append(a.t)
                got_e.append(ea)
                if nxt is None:
                    break
        return np.concatenate(got_t), np.concatenate(got_e)

    for ends, limit in (([100.0], None), ([3.3, 10.0, 10.0, 47.1, 100.0], None), ([100.0], 97)):
        gt, ge = drain(ends, limit)
        assert np.array_equal(gt, t) and np.array_equal(ge, e)

    f = DemandFeed(dem, sc, 0.0, np.random.default_rng(0))
    first, _, _, _ = f.take(20.0)
    f.defer_to = 20.0
    f.add(Arrivals(np.array([5.0, 25.0]), np.array([1, 2]), np.zeros(2, np.int64)))
    a, _, _, _ = f.take(30.0)
    assert f.deferred == 1
    assert np.count_nonzero(a.t == 20.0) >= 1 and 25.0 in a.t.tolist()
    assert len(a) == np.count_nonzero((t >= 20.0) & (t < 30.0)) + 2


def test_pending_hands_over_the_stable_time_sort_of_what_is_due_in_push_order():
    # sim/demand/feedback.py Pending: whatever pushes came in between, each flush hands the
    # run (its feed) every request whose bucket floor(t / chunk_s) ends by the next window,
    # by time, ties in push order; far pushes and ties included
    from sim.demand.feedback import Pending
    from sim.engine import Run

    sc = parse_scenario(queue_scenario(1.0, 1.0, 1, 10**6, seed=1, chunk_s=10.0))
    r = Run(sc)
    p, c = Pending(r), sc.chunk_s
    g = np.random.default_rng(4)
    pushed, seq, want = [], 0, []
    for _ in range(40):
        for _push in range(int(g.integers(0, 3))):
            n = int(g.integers(1, 300))
            span = c * (200 if g.random() < 0.3 else 8)  # some far ahead (a midnight)
            t = np.sort(r.cursor + np.round(g.uniform(0, span, n) / 2.5) * 2.5)  # ties
            att = g.integers(0, 3, n) if g.random() < 0.5 else None
            a = Arrivals(t, g.integers(0, 10**6, n), g.integers(0, 2, n), att)
            p.push(a)
            pushed += [(float(t[i]), seq, i, int(a.user[i]), int(a.tier[i]),
                        0 if att is None else int(att[i])) for i in range(n)]
            seq += 1
        r.cursor += float(g.choice([0.0, 3.0, c, 4 * c]))
        limit = np.floor((r.cursor + c) / c)
        due = sorted(x for x in pushed if np.floor(x[0] / c) <= limit)
        pushed = [x for x in pushed if np.floor(x[0] / c) > limit]
        before = len(r.feed._pending)
        p.flush()
        got = r.feed._pending[before:]
        assert len(got) == (1 if due else 0)
        if due:
            a = got[0][0]
            rows = list(zip(a.t.tolist(), a.user.tolist(), a.tier.tolist(), a.attempts().tolist(),
                            strict=True))
            assert rows == [(x[0], x[3], x[4], x[5]) for x in due]
            want += due
    assert len(want) > 2000 and pushed  # much handed over, some still held


def test_pending_merge_is_the_stable_sort_of_its_runs_in_their_dtypes():
    # feedback._merge (a compiled merge of neighbours, pairwise) against its definition, one
    # stable sort of the runs concatenated: same rows, same dtypes; ties, runs without
    # attempts, compact and wide dtypes, and a run out of order (sorted instead)
    from sim.demand.feedback import _merge, _sorted_merge

    g = np.random.default_rng(7)
    for case in range(60):
        runs = []
        for _ in range(int(g.integers(2, 7))):
            n = int(g.integers(0, 40))
            t = np.round(g.uniform(0, 20, n)) / 2
            t = t if case % 10 == 9 and not runs else np.sort(t)
            a = Arrivals(t, g.integers(0, 10**6, n), g.integers(0, 3, n),
                         g.integers(0, 3, n) if g.random() < 0.5 else None)
            runs.append(a.compact() if g.random() < 0.6 else a)
        got, want = _merge(runs), _sorted_merge(runs)
        for f in ("t", "user", "tier", "attempt"):
            x, y = getattr(got, f), getattr(want, f)
            assert (x is None) == (y is None), f
            if x is not None:
                assert x.dtype == y.dtype and np.array_equal(x, y), (case, f)


def test_feed_merge_is_the_stable_sort_of_its_parts_with_their_noise():
    # feed._merge_runs (base.merge2 pairwise, the noise carried in the same pass) against
    # DemandFeed._merged's definition, one stable sort of the parts concatenated: long
    # blocks of equal times (retries due at one midnight), ties across parts, compact and
    # wide dtypes, attempts on some parts; None where a part is out of order or has a NaN
    from sim.demand.feed import _merge_runs

    g = np.random.default_rng(12)
    for case in range(120):
        parts = []
        for _ in range(int(g.integers(1, 4))):
            blocks = [np.full(int(g.integers(0, 60)), float(g.integers(0, 8)))
                      if g.random() < 0.5 else np.round(g.uniform(0, 8, int(g.integers(0, 60))), 1)
                      for _ in range(int(g.integers(1, 4)))]
            t = np.sort(np.concatenate([np.zeros(1), *blocks]))
            n = len(t)
            a = Arrivals(t, g.integers(0, 10**6, n), g.integers(0, 3, n),
                         g.integers(0, 3, n) if g.random() < 0.5 else None)
            parts.append((a.compact() if g.random() < 0.5 else a, g.random(n), g.random(n)))
        bad = case % 20 == 19 and len(parts) > 1 and len(parts[-1][0]) > 2
        if bad:
            parts[-1][0].t[len(parts[-1][0]) // 2] = np.nan if case % 40 == 19 else -1.0
            assert _merge_runs(parts) is None
            continue
        got = _merge_runs(parts)
        o = np.argsort(np.concatenate([p[0].t for p in parts]), kind="stable")
        for f in ("t", "user", "tier"):
            x = getattr(got[0], f)
            assert np.array_equal(x, np.concatenate([getattr(p[0], f) for p in parts])[o]), (case, f)
            assert f == "t" or x.dtype == np.int64
        if any(p[0].attempt is not None for p in parts):
            want = np.concatenate([p[0].attempts() for p in parts])[o]
            assert got[0].attempt.dtype == np.int64 and np.array_equal(got[0].attempt, want)
        else:
            assert got[0].attempt is None
        for k in (1, 2):
            assert np.array_equal(got[k], np.concatenate([p[k] for p in parts])[o]), (case, k)


def test_tier_override_applies_the_last_move_as_the_per_tier_where_chain():
    # stream.TierOverride.apply (one compiled pass over every tier's bits) against its
    # definition: np.where(bits.get(user), k, out) for each tier moved to, in that order;
    # users past every bit array, tiers in int8 and int64, nobody moved (tier returned)
    from sim.demand.stream import TierOverride

    g = np.random.default_rng(5)
    for case in range(30):
        o = TierOverride()
        for _ in range(int(g.integers(1, 6))):
            o.set(g.integers(0, 500, int(g.integers(0, 40))), int(g.integers(0, 3)))
        user = g.integers(0, 700, 200)
        tier = g.integers(0, 3, 200).astype(np.int8 if case % 2 else np.int64)
        got = o.apply(user, tier)  # first: get() below grows the bit arrays
        want = tier
        for k, b in o.bits.items():
            want = np.where(b.get(user), k, want)
        assert got.dtype == want.dtype and np.array_equal(got, want), case
