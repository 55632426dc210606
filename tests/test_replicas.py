"""Gateway replicas in the simulator: per-replica limiter state over-admits, by exactly as
much as N independent limiters fed round robin do; a shared state does not; the hop adds
to latency."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import poisson

from sim.engine import simulate
from sim.metrics.summary import summarize
from sim.scenario import parse_scenario
from tests.helpers import queue_scenario

ONE_TIER = [{"name": "a", "share": 1, "priority": 0, "price_per_image": 0, "slo_s": 1e9}]


def _trace_scenario(path, n_users: int, gateway: dict, policy: dict) -> dict:
    return {
        "name": "rr", "seed": 1, "horizon": 100, "chunk_s": 1,
        "demand": {"model": "trace", "path": str(path), "column": "t", "user_column": "user"},
        "tiers": ONE_TIER, "policies": [policy], "gateway": gateway,
        "fleet": {"pools": [{"name": "p", "gpus": 4, "service_time_s": 0.01,
                             "service_distribution": "deterministic"}]},
        "outputs": {"figures": False, "report": False},
    }


@pytest.mark.parametrize("replicas", [1, 3, 4])
def test_per_replica_token_buckets_admit_the_round_robin_count(tmp_path, replicas):
    """Two users alternate, 40 requests, buckets of 3 that do not refill: request i reaches
    replica i mod N, so user u gets min(3, requests of u at replica j) from each replica j.
    N = 4: 2 users x 2 replicas x 3 = 12; N = 3: 2 x 9 = 18; N = 1 (or shared): 6."""
    n, burst = 40, 3
    user = np.arange(n) % 2
    p = tmp_path / "t.csv"
    p.write_text("t,user\n" + "".join(f"{0.1 * i:.1f},{u}\n" for i, u in enumerate(user)))
    bucket = {"policy": "token_bucket", "key": "user", "rate": 1e-9, "burst": burst}
    expect = sum(min(burst, int(((user == u) & (np.arange(n) % replicas == j)).sum()))
                 for u in (0, 1) for j in range(replicas))
    assert expect == {1: 6, 3: 18, 4: 12}[replicas]
    per = summarize(simulate(parse_scenario(_trace_scenario(
        p, 2, {"replicas": replicas, "limiter_state": "per_replica"}, bucket))))
    shared = summarize(simulate(parse_scenario(_trace_scenario(
        p, 2, {"replicas": replicas, "limiter_state": "shared"}, bucket))))
    assert per["tiers"]["a"]["admitted"] == expect
    assert shared["tiers"]["a"]["admitted"] == 2 * burst
    assert per["tiers"]["a"]["rejected"]["rate_limited"] == n - expect
    if replicas > 1:  # each replica's bucket reports what it decided
        reps = per["policies"]["token_bucket"]["per_replica"]
        assert len(reps) == replicas
        assert sum(sum(r["checked"].values()) for r in reps) == n
        assert sum(sum(r["blocked"].values()) for r in reps) == n - expect


def _window_admits(limit: int, mean: float) -> float:
    """E[min(limit, Poisson(mean))]: requests a fixed window of `limit` admits."""
    k = np.arange(limit)
    return float(limit - ((limit - k) * poisson.pmf(k, mean)).sum())


def test_per_replica_fixed_windows_over_admit_as_thinned_poisson():
    """Many users, each a Poisson stream of rate lam, a per-user fixed window (limit L per
    W s, epoch-aligned). Shared: E[min(L, Pois(lam W))] per user-window. N replicas with
    their own windows, requests spread round robin across many interleaved users (each
    user's requests land on replicas as independent uniform draws, to a good approximation):
    N E[min(L, Pois(lam W / N))]. 4,000 user-windows: the means' standard errors are ~0.02;
    the tolerance is 0.1 (5 SE), and the two predictions differ by 1.7."""
    U, lam, W, L, H, N = 200, 0.5, 10.0, 3, 200.0, 4
    base = queue_scenario(U * lam, 1000.0, 200, H, seed=7, tiers=ONE_TIER, warmup=0.0,
                          policies=[{"policy": "fixed_window", "key": "user", "limit": L,
                                     "window_s": W}])
    base["demand"]["users"] = U
    got = {}
    for state in ("shared", "per_replica"):
        d = {**base, "gateway": {"replicas": N, "limiter_state": state}}
        s = summarize(simulate(parse_scenario(d)))["tiers"]["a"]
        got[state] = s["admitted"] / (U * H / W)
    assert got["shared"] == pytest.approx(_window_admits(L, lam * W), abs=0.1)
    assert got["per_replica"] == pytest.approx(N * _window_admits(L, lam * W / N), abs=0.1)
    assert got["per_replica"] - got["shared"] > 1.5


def test_the_hop_adds_to_latency_and_wait():
    """M/D/1 with a hop h: every latency and wait percentile moves by exactly h."""
    d = queue_scenario(0.5, 1.0, 1, 2000.0, seed=3, dist="deterministic", tiers=ONE_TIER)
    a = summarize(simulate(parse_scenario(d)))["tiers"]["a"]
    b = summarize(simulate(parse_scenario({**d, "gateway": {"hop_latency_s": 0.25}})))["tiers"]["a"]
    for f in ("latency_s", "wait_s"):
        for q in ("p50", "p95", "p99", "mean"):
            assert b[f][q] == pytest.approx(a[f][q] + 0.25, abs=1e-6)
    assert b["completed"] == a["completed"]
    assert math.isclose(b["latency_s"]["p50"] - a["latency_s"]["p50"], 0.25, abs_tol=1e-6)


@pytest.mark.parametrize("args, field", [
    (["--role", "replica"], "--fleet"),
    (["--role", "replica", "--fleet", "http://10.0.0.9:8000"], "--fleet"),
    (["--role", "fleet", "--host", "0.0.0.0"], "--host"),
    (["--replicas", "2", "--redis", "http://x"], "--redis"),
])
def test_serve_roles_refuse_bad_topologies(args, field):
    """One line `error: ...: <field>: ...`, exit 2, before anything starts."""
    import subprocess
    import sys
    from pathlib import Path

    sc = Path(__file__).resolve().parents[1] / "scenarios" / "validation_small.yaml"
    r = subprocess.run([sys.executable, "-m", "sim", "serve", str(sc), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: "), lines
