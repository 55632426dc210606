"""One fleet, two clocks: the gateway's admission pipeline and fleet, driven on a fake clock
with the simulator's own arrivals and service noise, give every request the simulator's fate,
start and end time, batch size and pool, discipline by discipline and policy by policy.

The gateway here is the real `Gateway` (its admission pipeline, its `LiveFleet` driver, the
policies attached to the gateway's SimPy environment); only its clock and its one timer are
the test's: the loop below plays the event loop, firing the timer when it is due and handing
each arrival over at its simulated time.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from sim.demand.base import Arrivals
from sim.demand.feedback import Retry
from sim.engine import Run
from sim.fleet import kernel as K
from sim.live import schedule
from sim.live.keys import KeyTable, key_hash
from sim.live.refeed import FakeClockGateway
from sim.live.workers import Req
from sim.policies import REASONS
from sim.rng import request_noise
from sim.scenario import RetrySpec, parse_scenario

TIERS = [
    {"name": "paid", "share": 0.4, "priority": 0, "price_per_image": 0.01, "slo_s": 20},
    {"name": "free", "share": 0.6, "priority": 1, "price_per_image": 0.0, "slo_s": 60},
]


def scenario(*, rate: float = 3.0, horizon: float = 400.0, discipline: str = "strict_priority",
             tiers: list | None = None, policies: list | None = None, pools: list | None = None,
             **extra) -> dict:
    d = {
        "name": "twin", "seed": 11, "start": "2025-03-31T00:00:00Z", "horizon": horizon,
        "chunk_s": 10.0,
        "demand": {"points": [[0, rate * 0.5], [horizon / 2, rate * 1.6], [horizon, rate]],
                   "users": 60},
        "tiers": tiers or TIERS, "policies": policies or [],
        "scheduler": {"discipline": discipline},
        "fleet": {"pools": pools or [{"name": "p", "gpus": 3, "service_time_s": 1.5,
                                      "service_distribution": "exponential", "max_batch": 2,
                                      "max_wait_s": 0.3}]},
        "outputs": {"warmup_s": 0, "figures": False, "report": False},
    }
    d.update(extra)
    return d


def simulated(sc) -> tuple[Run, list[tuple]]:
    """The simulator's run, and each offered request's (fate, start, end)."""
    run = Run(sc, trace=True).execute()
    start, end, drop, worker, size = {}, {}, {}, {}, {}
    for kind, rid, t, a in run.trace_events:
        if kind == K.STARTED:
            start[rid], worker[rid] = t, a
        elif kind == K.BATCH:
            size[(rid, t)] = a
        elif kind == K.COMPLETED:
            end[rid] = t
        elif kind == K.DROPPED:
            drop[rid] = t
    pool = run.fleet.S.w_pool
    out = []
    for _t, _u, _k, _e, _z, code, rid in run.trace_offered:
        if code >= 0:
            out.append((REASONS[code], None, None, 0, None))
            continue
        b = (size[(worker[rid], start[rid])], run.pools[pool[worker[rid]]].name) if rid in start else (0, None)
        if rid in drop:
            out.append(("timeout", start.get(rid), drop[rid], *b))
        else:
            out.append(("served" if rid in end else "unfinished", start.get(rid), end.get(rid), *b))
    return run, out


def live(sc, run: Run, tmp_path, ids=None) -> tuple[FakeClockGateway, list[tuple]]:
    """The gateway on a fake clock, fed the run's offered requests with their noise (ids
    given: first attempts with those schedule ids, the noise the gateway's own)."""
    users = max(u for _, u, *_ in run.trace_offered) + 1
    keys = KeyTable.of({key_hash(f"k{u}"): (u, 0) for u in range(users)}, [t.name for t in sc.tiers])
    gw = FakeClockGateway(sc, keys, tmp_path / "requests.jsonl", 1.0, 10**9)
    gw.fleet.start()
    reqs = []
    for i, (t, u, k, e, z, _code, _rid) in enumerate(run.trace_offered):
        while gw.armed < t:  # the timer fires before this arrival
            gw.now = gw.armed
            gw.fleet.wake()
        gw.now = t
        if ids is not None:  # what Gateway.submit does with a request from a schedule
            e, z = gw.noise(int(ids[i]), 0, t)
        req = Req(i, 0, u, k, sc.tiers[k].name, t, t, noise=e, z=z)
        gw.admit(req)
        reqs.append(req)
    while gw.armed < sc.horizon:
        gw.now = gw.armed
        gw.fleet.wake()
    gw.now = sc.horizon
    gw.fleet.sync(sc.horizon)
    out = []
    for r in reqs:
        started = None if math.isnan(r.start) else r.start
        b = (r.batch, r.pool_name)
        if r.reason is not None and math.isnan(r.start) and r.done == r.arrival and r.reason != "timeout":
            out.append((r.reason, None, None, *b))
        elif r.reason == "timeout":
            out.append(("timeout", started, r.done, *b))
        elif math.isnan(r.done):
            out.append(("unfinished", started, None, *b))
        else:
            out.append(("served", started, r.done, *b))
    gw.log.close()
    return gw, out


def assert_twins(d: dict, tmp_path, acting=None) -> Run:
    sc = parse_scenario(d)
    run, want = simulated(sc)
    gw, got = live(sc, run, tmp_path)
    assert len(got) == len(want) > 100
    bad = [(i, w, g) for i, (w, g) in enumerate(zip(want, got, strict=True)) if w != g]
    assert not bad, f"{len(bad)} of {len(want)} differ; first: {bad[:3]}"
    fates = {f for f, *_ in want}
    assert "served" in fates
    if acting is not None:
        assert acting(want, run, gw), sorted(fates)
    return run


def _report(gw, i: int) -> dict:
    return gw.policies[i].active.policy.report()


def _some(reason):
    return lambda want, run, gw: any(f == reason for f, *_ in want)


CASES = {
    "strict": (dict(), None),
    "fifo": (dict(discipline="fifo"), None),
    "edf": (dict(discipline="edf"), None),
    "drr": (dict(discipline="drr", tiers=[{**TIERS[0], "weight": 3.0}, {**TIERS[1], "weight": 1.0}]),
            None),
    "lifo": (dict(tiers=[TIERS[0], {**TIERS[1], "lifo": True}], rate=4.0), None),
    "patience": (dict(tiers=[{**TIERS[0], "patience_s": 30}, {**TIERS[1], "patience_s": 8}], rate=4.0),
                 _some("timeout")),
    "queue_limits": (dict(tiers=[TIERS[0], {**TIERS[1], "queue_limit": 3}], rate=4.0),
                     _some("queue_full")),
    "codel": (dict(rate=4.0, policies=[{"policy": "codel", "target_s": 2, "interval_s": 5,
                                        "tiers": ["free"]}]), _some("timeout")),
    "concurrency_user": (dict(policies=[{"policy": "concurrency", "key": "user", "limit": 1}]),
                         _some("rate_limited")),
    "concurrency_tier": (dict(policies=[{"policy": "concurrency", "key": "tier", "limit": 4,
                                         "tiers": ["free"]}]), _some("rate_limited")),
    "shed_reserve": (dict(rate=4.0, policies=[{"policy": "shed_reserve", "tiers": ["free"],
                                               "utilization": {"free": 0.95},
                                               "predicted_wait_s": {"free": 4}}]), _some("shed")),
    "token_bucket_and_quota": (dict(policies=[
        {"policy": "token_bucket", "key": "user", "rate": 0.02, "burst": 3, "tiers": ["paid"]},
        {"policy": "daily_quota", "tiers": ["free"], "limit": 4}]), _some("quota_exceeded")),
    "schedule": (dict(policies=[{"policy": "concurrency", "key": "tier", "limit": 2,
                                 "enabled": False, "schedule": [{"at": 150, "enabled": True},
                                                                {"at": 300, "enabled": False}]}]),
                 _some("rate_limited")),
    "aimd": (dict(rate=4.0, policies=[{"policy": "aimd", "initial": 6, "window_s": 20,
                                       "latency_bound_s": 6}]), _some("rate_limited")),
    "gradient2": (dict(rate=4.0, policies=[{"policy": "gradient2", "initial": 8, "window_s": 20}]),
                  None),
    "autoscale": (dict(policies=[{"policy": "autoscale", "target": 0.6, "period_s": 20,
                                  "provisioning_delay_s": 30, "cooldown_s": 60, "min_gpus": 1,
                                  "max_gpus": 6}],
                       pools=[{"name": "p", "gpus": 2, "max_gpus": 6, "service_time_s": 1.5,
                               "service_distribution": "exponential", "max_batch": 2}]),
                  lambda want, run, gw: len(run.gpu_log) > 1 and gw.fleet.gates.gpu_log == run.gpu_log),
    "failures": (dict(policies=[{"policy": "failures", "mtbf_h": 0.02, "mttr_h": 0.01}]),
                 lambda want, run, gw: len(run.gpu_log) > 2 and gw.fleet.gates.gpu_log == run.gpu_log),
    "throttling": (dict(rate=4.0, policies=[{"policy": "throttling", "utilization": 0.8,
                                             "after_s": 30, "slowdown": 1.5, "cool_below": 0.5,
                                             "check_s": 10}]),
                   lambda want, run, gw: run.policies[0].policy.episodes > 0),
    "brownout": (dict(rate=4.0, policies=[{"policy": "brownout", "tiers": ["free"], "utilization": 0.9,
                                           "queue_depth": 4, "steps": 8}],
                      pools=[{"name": "h100", "gpus": 3, "profile": "placeholder-sdxl-h100",
                              "model": "sdxl", "steps": 20, "max_batch": 2, "max_wait_s": 0.2}]),
                 lambda want, run, gw: run.policies[0].policy.report()["degraded"]["free"] > 50
                 and run.policies[0].policy.report() == _report(gw, 0)),
    "shadow_shed": (dict(rate=4.0, policies=[{"policy": "shadow", "of": {
        "policy": "shed_reserve", "queue_depth": {"free": 3}}}]),
                    lambda want, run, gw: sum(_report(gw, 0)["would_block"].values()) > 0),
    "cycle_deterministic": (dict(pools=[{"name": "p", "gpus": 2, "service_time_s": 1.2,
                                         "service_distribution": "deterministic", "max_batch": 3,
                                         "launch": "cycle"}]), None),
    "cycle_exponential": (dict(pools=[{"name": "p", "gpus": 2, "service_time_s": 1.2,
                                       "service_distribution": "exponential", "max_batch": 3,
                                       "launch": "cycle"}]), None),
    "content_filter": (dict(policies=[{"policy": "content_filter", "strictness": 1.0}]),
                       _some("filtered")),
    "two_pools_profiles_and_steps": (dict(rate=3.0, discipline="drr", pools=[
        {"name": "h100", "gpus": 2, "profile": "placeholder-sdxl-h100", "model": "sdxl",
         "steps": 20, "max_batch": 4, "max_wait_s": 0.2},
        {"name": "a100", "gpus": 2, "profile": "placeholder-sdxl-a100", "model": "sdxl",
         "steps": 30, "max_batch": 2, "max_wait_s": 0.1}]), None),
    # request classes: lanes per batch group, pools holding models, model swaps with router
    # affinity, a mix schedule, DRR on class costs, brownout switching HD to standard
    "request_classes": (dict(
        rate=3.0, discipline="drr", tiers=[{**TIERS[0], "weight": 2.0}, TIERS[1]],
        request_classes={"classes": [
            {"name": "std", "model": "sdxl", "resolution": 1024, "steps": 20},
            {"name": "hd", "model": "sdxl", "resolution": 1024, "steps": 40},
            {"name": "edit", "model": "sdxl", "resolution": 1024, "steps": 20, "encode": True},
            {"name": "draft", "model": "sd15", "resolution": 512, "steps": 20}],
            "mix": {"paid": {"std": 0.3, "hd": 0.4, "edit": 0.2, "draft": 0.1},
                    "free": {"std": 0.5, "edit": 0.2, "draft": 0.3}},
            "schedule": [{"at": 200, "mix": {"free": {"hd": 0.5, "draft": 0.5}}}]},
        policies=[{"policy": "brownout", "tiers": ["free"], "utilization": 0.9,
                   "classes": {"hd": "std"}}],
        fleet={"router": "affinity", "pools": [
            {"name": "xl", "gpus": 2, "profile": "h100-bf16", "models": ["sdxl"], "max_batch": 4,
             "max_wait_s": 0.2},
            {"name": "mixed", "gpus": 2, "profile": "h100-bf16", "models": ["sdxl", "sd15"],
             "swap_s": 3, "max_batch": 4, "max_wait_s": 0.2}]}),
        lambda want, run, gw: run.policies[0].policy.report()["degraded"]["free"] > 20
        and run.policies[0].policy.report() == _report(gw, 0)
        and 0 < run.fleet.S.swaps[1] == gw.fleet.fleet.S.swaps[1]
        and (run.fleet.S.cls_stats == gw.fleet.fleet.S.cls_stats).all()),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gateway_fleet_is_the_simulators(case, tmp_path):
    kw, acting = CASES[case]
    assert_twins(scenario(**kw), tmp_path, acting)


def test_each_pool_serves_its_own_steps(tmp_path):
    """A second pool's `steps` is used (it was pool 0's for every request): the same
    constant-time pools differ only in steps, and so in batch time (profile cost per step)."""
    pools = [{"name": "a", "gpus": 1, "profile": "placeholder-sdxl-h100", "model": "sdxl",
              "steps": 10, "max_batch": 1},
             {"name": "b", "gpus": 1, "profile": "placeholder-sdxl-h100", "model": "sdxl",
              "steps": 40, "max_batch": 1}]
    sc = parse_scenario(scenario(rate=0.05, pools=pools, horizon=2000.0))
    run, want = simulated(sc)
    S = run.fleet.S
    dur = {0: [], 1: []}
    start = {}
    for kind, rid, t, w in run.trace_events:
        if kind == K.STARTED:
            start[rid] = t
        elif kind == K.COMPLETED:
            dur[int(S.w_pool[w])].append(t - start[rid])
    cost = run.pools[0].cost
    assert dur[0] and dur[1]
    assert np.allclose(dur[0], cost.batch_time(1, 10), rtol=0.5)  # lognormal profile noise
    assert np.median(dur[1]) / np.median(dur[0]) == pytest.approx(
        cost.batch_time(1, 40) / cost.batch_time(1, 10), rel=0.5)
    _, got = live(sc, run, tmp_path)
    assert got == want


def test_a_replayed_schedule_draws_the_gateways_noise(tmp_path):
    """Common random numbers for validation: the simulator's replay of a schedule keys each
    request's service noise by its schedule id, and so does the gateway for a request that
    comes from a schedule, so the two give every request the same fate, start and end with
    no noise handed over. Another seed draws other noise."""
    pools = [{"name": "h100", "gpus": 2, "profile": "placeholder-sdxl-h100", "model": "sdxl",
              "steps": 20, "max_batch": 2, "max_wait_s": 0.2},
             {"name": "p", "gpus": 1, "service_time_s": 1.5, "service_distribution": "exponential",
              "max_batch": 2}]
    sc = parse_scenario(scenario(rate=4.0, pools=pools, horizon=300.0,
                                 tiers=[TIERS[0], {**TIERS[1], "patience_s": 10}]))
    sched = schedule.generate(sc, sc.horizon)
    schedule.write(sched, tmp_path / "s.csv")
    t0 = float(sched["t"].iloc[0])
    rs = schedule.replay_scenario(sc, tmp_path / "s.csv", sc.horizon, t0, 10.0)
    run, want = simulated(rs)
    ids = sched["id"].to_numpy()
    assert len(run.trace_offered) == len(ids) > 500
    e, z = request_noise(sc.seed, ids, np.zeros(len(ids), np.int64))
    assert np.array_equal([o[3] for o in run.trace_offered], e)
    assert np.array_equal([o[4] for o in run.trace_offered], z)
    _, got = live(sc, run, tmp_path, ids=ids)
    assert got == want
    assert {"served", "timeout"} <= {f for f, *_ in want}
    other = schedule.replay_scenario(sc, tmp_path / "s.csv", sc.horizon, t0, 10.0, seed=sc.seed + 1)
    _, other_fates = simulated(other)
    e1 = np.array([o[3] for o in Run(other, trace=True).execute().trace_offered])
    assert np.abs(np.corrcoef(e, e1)[0, 1]) < 0.15 and other_fates != want


class FixedTiers:  # as the load generator's: a key's tier never changes
    @staticmethod
    def tier_now(user, tier):
        return tier


def test_keyed_retries_do_not_depend_on_who_draws_them():
    """The load generator retries one request at a time with its own generator, the
    simulator a window's batch with the run's: a keyed request's retry (whether, and when)
    is the same either way; an unkeyed one's follows the generator."""
    spec = RetrySpec(max_attempts=4, base_s=1.0, cap_s=8.0, jitter="full", probability=0.6)
    retry = Retry(spec, FixedTiers(), [SimpleNamespace(patience_s=None)] * 2, seed=11)
    n = 400
    g = np.random.default_rng(5)
    a = Arrivals(np.sort(g.random(n) * 100), g.integers(0, 50, n), g.integers(0, 2, n),
                 g.integers(0, 3, n), np.arange(n) * 7 + 3)
    code, ra = np.zeros(n, np.int64), np.full(n, np.nan)
    batch = retry.after_reject(a, code, ra, np.random.default_rng(1))
    ones = [retry.after_reject(a.take([i]), code[:1], ra[:1], np.random.default_rng(100 + i))
            for i in reversed(range(n))]
    def rows(x):
        return sorted(zip(x.key.tolist(), x.attempt.tolist(), x.t.tolist(), strict=True))
    assert rows(batch) == rows(Arrivals.concat(ones))
    assert 0.45 * n < len(batch) < 0.75 * n  # probability 0.6 of those with attempts left
    plain = a.with_(key=None)
    t1 = retry.after_reject(plain, code, ra, np.random.default_rng(1)).t
    t2 = retry.after_reject(plain, code, ra, np.random.default_rng(2)).t
    assert len(t1) != len(t2) or not np.array_equal(t1, t2)
