"""Limiters: property tests of their exact semantics (../shared/reference/policies.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import unpos
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.policies import REGISTRY

DAY = 86400.0
EPOCH = 1743379200.0  # 2025-03-31T00:00:00Z

times = st.lists(st.floats(0, 600, allow_nan=False), min_size=1, max_size=200).map(sorted)


def make(name: str, **params):
    cls = REGISTRY[name]
    return cls(cls.Params.model_validate(params), ["free"], EPOCH)


def admitted(pol, ts, user=0):
    return np.array([t for t in ts if pol.admit(t, user, 0).ok])


@settings(max_examples=150, deadline=None)
@given(times, st.floats(0.05, 5), st.integers(1, 10))
def test_token_bucket_never_exceeds_burst_plus_rate_t(ts, rate, burst):
    a = admitted(make("token_bucket", rate=rate, burst=burst), ts)
    for i in range(len(a)):
        for j in range(i, len(a)):
            assert j - i + 1 <= burst + rate * (a[j] - a[i]) + 1e-9


@settings(max_examples=150, deadline=None)
@given(times, st.integers(1, 20), st.floats(1, 120), st.integers(0, 6))
def test_gcra_admits_exactly_what_the_token_bucket_does(ts, count, period, burst):
    g = make("gcra", count=count, period_s=period, burst=burst)
    b = make("token_bucket", rate=count / period, burst=burst + 1)
    for t in ts:
        dg, db = g.admit(t, 0, 0), b.admit(t, 0, 0)
        assert dg.ok == db.ok, t
        if not dg.ok:
            # both say when the next request would pass
            assert abs(dg.retry_after - db.retry_after) < 1e-6


def test_gcra_reports_like_redis_cell():
    g = make("gcra", count=10, period_s=60, burst=4)  # T = 6 s, capacity 5
    ds = [g.admit(0.0, 1, 0) for _ in range(6)]
    assert [d.ok for d in ds] == [True] * 5 + [False]
    assert [d.remaining for d in ds[:5]] == [4, 3, 2, 1, 0]
    assert ds[5].retry_after == 6.0 and ds[5].limit == 5
    assert ds[4].reset_after == 30.0


@settings(max_examples=150, deadline=None)
@given(times, st.integers(1, 8), st.floats(1, 100))
def test_sliding_log_never_exceeds_its_count_in_any_window(ts, limit, w):
    a = admitted(make("sliding_log", limit=limit, window_s=w), ts)
    for j in range(len(a)):
        assert np.sum((a > a[j] - w) & (a <= a[j])) <= limit


@settings(max_examples=150, deadline=None)
@given(times, st.integers(1, 8), st.floats(1, 100))
def test_sliding_counter_bounds(ts, limit, w):
    a = admitted(make("sliding_counter", limit=limit, window_s=w), ts)
    win = np.floor((EPOCH + a) / w)
    assert np.bincount((win - win.min()).astype(int)).max(initial=0) <= limit
    for j in range(len(a)):  # an estimate, not a log: within 2x of the count in any window
        assert np.sum((a > a[j] - w) & (a <= a[j])) <= 2 * limit


@settings(max_examples=100, deadline=None)
@given(times, st.integers(1, 8), st.sampled_from([10.0, 60.0, 3600.0]))
def test_fixed_window_counts_per_aligned_window_and_resets(ts, limit, w):
    pol = make("fixed_window", limit=limit, window_s=w)
    a = admitted(pol, ts)
    win = np.floor((EPOCH + a) / w)
    assert np.bincount((win - win.min()).astype(int)).max(initial=0) <= limit
    # a request right after the next boundary passes, whatever happened before
    nxt = (np.floor((EPOCH + ts[-1]) / w) + 1) * w - EPOCH
    assert pol.admit(nxt + 1e-6, 0, 0).ok


def test_daily_quota_resets_at_utc_midnight():
    q = make("daily_quota", limit=3)
    t0 = 20 * 3600.0  # 20:00 UTC
    assert [q.admit(t0 + i, 7, 0).ok for i in range(5)] == [True, True, True, False, False]
    d = q.admit(t0 + 10, 7, 0)
    assert d.reason == "quota_exceeded" and abs(d.retry_after - (4 * 3600 - 10)) < 1e-6
    assert not q.admit(DAY - 1e-3, 7, 0).ok
    assert q.admit(DAY + 1e-3, 7, 0).ok  # 00:00 UTC: a new day
    assert q.admit(t0, 8, 0).ok  # other users are independent


def test_quota_retry_after_lands_on_or_after_midnight_on_both_clocks():
    # A retry is made at t + Retry-After and bucketed by that time; the quota counts its day
    # from epoch + t. midnight - (epoch + t) rounds (an ulp of epoch + t) so that t + wait is
    # just before midnight for about half of all times: the retry sat in the 23:50 bucket.
    epoch = 1742860800.0  # 2025-03-25T00:00:00Z, the ghibli scenario's start
    t = np.sort(np.random.default_rng(14).uniform(0, 8 * DAY, 2000))
    x = epoch + t
    midnight = (np.floor(x / DAY) + 1) * DAY - epoch
    naive = (np.floor(x / DAY) + 1) * DAY - x
    assert (t + naive < midnight).mean() > 0.3  # the rounding this guards against is there
    cls = REGISTRY["daily_quota"]
    q = cls(cls.Params.model_validate({"limit": 1}), ["free"], epoch)
    users, tier = np.arange(len(t)), np.zeros(len(t), np.int64)
    assert q.admit_many(t, users, tier)[0].all()
    ok, _, ra = q.admit_many(t, users, tier)
    assert not ok.any()
    assert (t + ra >= midnight).all()
    assert (np.floor((epoch + (t + ra)) / DAY) == np.floor(x / DAY) + 1).all()
    assert np.abs(ra - naive).max() < 1e-6  # the same wait, up to rounding
    scalar = [q.admit(float(v), int(u), 0).retry_after for v, u in zip(t[:200], users[:200], strict=True)]
    np.testing.assert_array_equal(scalar, ra[:200])
    assert q.admit_many(t + ra, users, tier)[0].all()  # the retry is the new day's first image


def test_rolling_quota_retry_after_is_not_early():
    # each user spends its 3 at t (or tries to), is rejected at t + s, and retries at t + s + Retry-After
    q = make("daily_quota", limit=3, window="rolling")
    rng = np.random.default_rng(15)
    t, s = rng.uniform(0, 3 * DAY, 2000), rng.uniform(0, 3600, 2000)
    late = []
    for u in range(len(t)):
        for _ in range(3):
            q.admit(float(t[u]), u, 0)
        d = q.admit(float(t[u] + s[u]), u, 0)
        assert not d.ok
        late.append(q.admit(float(t[u] + s[u]) + d.retry_after, u, 0).ok)
    assert all(late)


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 8 * DAY, allow_nan=False), st.integers(1, 40))
def test_rolling_quota_admits_the_whole_limit_at_one_instant(t, limit):
    # tat grows by sums of floats: t + T + T - 2T can exceed t by an ulp and refuse the last one
    q = make("daily_quota", limit=limit, window="rolling")
    assert [q.admit(t, 0, 0).ok for _ in range(limit + 1)] == [True] * limit + [False]
    ok, _, _ = q.admit_many(np.full(limit + 1, t), np.ones(limit + 1, dtype=np.int64),
                            np.zeros(limit + 1, dtype=np.int8))
    assert ok.tolist() == [True] * limit + [False]


def test_rolling_quota_gives_one_back_after_period_over_count():
    q = make("daily_quota", limit=3, window="rolling")
    assert [q.admit(0.0, 1, 0).ok for _ in range(4)] == [True, True, True, False]
    d = q.admit(100.0, 1, 0)
    assert not d.ok and abs(d.retry_after - (8 * 3600 - 100)) < 1e-6
    assert not q.admit(8 * 3600 - 1, 1, 0).ok
    assert q.admit(8 * 3600, 1, 0).ok
    assert not q.admit(8 * 3600 + 1, 1, 0).ok


LIMITERS = {
    "token_bucket": dict(rate=0.2, burst=3),
    "gcra": dict(count=5, period_s=30, burst=2),
    "fixed_window": dict(limit=4, window_s=20),
    "sliding_log": dict(limit=4, window_s=20),
    "sliding_counter": dict(limit=4, window_s=20),
    "daily_quota": dict(limit=3),
}


LIMITERS.update({
    "daily_quota_rolling": dict(limit=3, window="rolling"),
    "content_filter": dict(strictness=0.7, violating_share=0.2, seed=3),
})
KEYED = {"token_bucket", "gcra", "fixed_window", "sliding_log", "sliding_counter"}


def make2(name: str, key: str, **params):
    """Two tiers; `name` may carry a suffix naming a variant of the same policy."""
    base = name.removesuffix("_rolling")
    cls = REGISTRY[base]
    if base in KEYED:
        params = {**params, "key": key}
    return cls(cls.Params.model_validate(params), ["paid", "free"], EPOCH)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3 * DAY), st.integers(0, 4), st.integers(0, 1)),
                min_size=1, max_size=300),
       st.sampled_from(sorted(LIMITERS)), st.integers(1, 5),
       st.sampled_from(["user", "tier", "global"]))
def test_admit_many_equals_admit_in_order(reqs, name, pieces, key):
    reqs.sort()
    t = np.array([r[0] for r in reqs])
    user = np.array([r[1] for r in reqs], np.int64)
    tier = np.array([r[2] for r in reqs], np.int64)
    a, b = make2(name, key, **LIMITERS[name]), make2(name, key, **LIMITERS[name])
    cuts = np.linspace(0, len(t), pieces + 1).astype(int)
    ok_many = np.concatenate([a.admit_many(t[i:j], user[i:j], tier[i:j])[0]
                              for i, j in zip(cuts[:-1], cuts[1:], strict=True)])
    ok_one = np.array([b.admit(float(x), int(u), int(k)).ok
                       for x, u, k in zip(t, user, tier, strict=True)])
    assert (ok_many == ok_one).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3 * DAY), st.integers(0, 2000), st.integers(0, 1)),
                min_size=1, max_size=300),
       st.sampled_from(sorted(LIMITERS)), st.lists(st.booleans(), min_size=1, max_size=6),
       st.sampled_from(["user", "tier", "global"]))
def test_compiled_admit_many_mixes_with_admit_and_gives_its_retry_after(reqs, name, scalar, key):
    # The compiled admit_many and the scalar admit share one state: any interleaving of the two
    # on one object decides like admit alone, with the same Retry-After (retries depend on it).
    reqs.sort()
    t = np.array([r[0] for r in reqs])
    user = np.array([r[1] for r in reqs], np.int64)
    tier = np.array([r[2] for r in reqs], np.int64)
    a, b = make2(name, key, **LIMITERS[name]), make2(name, key, **LIMITERS[name])
    cuts = np.linspace(0, len(t), len(scalar) + 1).astype(int)
    ok_a, ra_a = [], []
    for one, i, j in zip(scalar, cuts[:-1], cuts[1:], strict=True):
        if one:
            ds = [a.admit(float(x), int(u), int(k)) for x, u, k in zip(t[i:j], user[i:j], tier[i:j], strict=True)]
            ok_a += [d.ok for d in ds]
            ra_a += [np.nan if d.ok or d.retry_after is None else d.retry_after for d in ds]
        else:
            ok, _, ra = a.admit_many(t[i:j], user[i:j], tier[i:j])
            ok_a += list(ok)
            ra_a += list(ra)
    ds = [b.admit(float(x), int(u), int(k)) for x, u, k in zip(t, user, tier, strict=True)]
    assert ok_a == [d.ok for d in ds]
    ra_b = [np.nan if d.ok or d.retry_after is None else d.retry_after for d in ds]
    np.testing.assert_array_equal(np.array(ra_a), np.array(ra_b))


def test_keys_user_tier_global():
    per_user = make("token_bucket", rate=0.001, burst=1, key="user")
    glob = make("token_bucket", rate=0.001, burst=1, key="global")
    assert per_user.admit(0, 1, 0).ok and per_user.admit(0, 2, 0).ok
    assert glob.admit(0, 1, 0).ok and not glob.admit(0, 2, 0).ok
    # a token every 1000 s: per user, each bucket refills on its own; the global one is shared
    assert not per_user.admit(999, 1, 0).ok and per_user.admit(1000, 1, 0).ok
    assert per_user.admit(1000, 2, 0).ok
    assert glob.admit(1000, 1, 0).ok and not glob.admit(1000, 2, 0).ok


# ---- adaptive concurrency, shedding, brownout, filter, shadow ----


def test_aimd_follows_the_netflix_formula():
    a = make("aimd", initial=100, min_limit=5, latency_bound_s=10)
    assert a.update(5.0, False, 50) == 101  # 2 * inflight >= L: additive increase
    assert a.update(5.0, False, 10) == 101  # too little in flight: unchanged
    assert a.update(5.0, True, 10) == max(5, min(100, 0.9 * 101))  # drop: multiplicative
    assert a.update(11.0, False, 90) == 0.9 * 90.9  # latency over the bound counts as a drop
    for _ in range(200):
        a.update(20.0, False, 0)
    assert a.limit == 5  # never below the floor


def test_gradient2_shrinks_on_rising_latency_and_holds_when_app_limited():
    g = make("gradient2", initial=100, queue_size=4, smoothing=0.2, long_window=100)
    assert g.update(2.0, False, 100) == 0.8 * 100 + 0.2 * (100 + 4)  # steady: + queue_size
    L = g.limit
    assert g.update(10.0, False, 5) == L  # inflight < L/2: app-limited, unchanged
    before = g.limit
    g.update(100.0, False, 200)  # short >> long (mean of 2, 10, 100): gradient clamped at 0.5
    assert g.limit == 0.8 * before + 0.2 * (before * 0.5 + 4)


def test_shed_reserve_sheds_less_critical_tiers_first():
    cls = REGISTRY["shed_reserve"]
    p = cls(cls.Params.model_validate({"utilization": {"free": 0.8, "plus": 0.95},
                                       "predicted_wait_s": {"free": 60}}),
            ["pro", "plus", "free"], EPOCH)
    view = {"utilization": 0.85, "queue_depth": 10}
    assert [p.admit_with(view, k, 1.0).ok for k in range(3)] == [True, True, False]
    view = {"utilization": 0.97, "queue_depth": 10}
    assert [p.admit_with(view, k, 1.0).ok for k in range(3)] == [True, False, False]
    d = p.admit_with({"utilization": 0.1, "queue_depth": 61}, 2, 1.0)  # 61 s of queued work
    assert not d.ok and d.reason == "shed"


def test_brownout_per_tier_thresholds_and_quality_proxy():
    """Brownout decides per arrival inside the fleet loop: one GPU busy from t = 0, six
    arrivals meet queue depths 0, 0, 1, 2, 3, 4; free degrades from depth 1 to 4 steps, paid
    from depth 3 to 10 (nominal 20)."""
    from types import SimpleNamespace

    from sim.engine import build_pools
    from sim.fleet.fleet import Fleet
    from sim.fleet.gates import Gates
    from sim.policies.pipeline import ActivePolicy
    from sim.scenario import parse_scenario

    tiers = [{"name": "paid", "share": 0.5, "priority": 0, "price_per_image": 0, "slo_s": 60},
             {"name": "free", "share": 0.5, "priority": 1, "price_per_image": 0, "slo_s": 60}]
    sc = parse_scenario({"name": "b", "seed": 1, "horizon": 100, "demand": {"points": [[0, 1]], "users": 10},
                         "tiers": tiers, "fleet": {"pools": [{"name": "p", "gpus": 1, "steps": 20,
                                                              "service_time_s": 5.0}]}})
    pools = build_pools(sc)
    fleet = Fleet(pools, sc.tiers, sc.scheduler, 100, 1.0, 0.0, 0)
    host = SimpleNamespace(gates=Gates(fleet, pools, 10))
    cls = REGISTRY["brownout"]
    b = cls(cls.Params.model_validate({"utilization": 2.0, "queue_depth": {"free": 1, "paid": 3},
                                       "steps": {"free": 4, "paid": 10}}), ["paid", "free"], EPOCH)
    b.attach(host, None, ActivePolicy(0, b, np.array([True, True]), True))
    tier = np.array([0, 1, 1, 0, 0, 1])
    n = len(tier)
    fleet.advance(np.arange(n) * 0.01, np.arange(n), tier, np.full(n, -1), np.full(n, np.inf, np.float32),
                  np.ones(n), np.zeros(n), 0.05)
    S = fleet.S
    assert S.w_steps[0] == 20  # the first was served at once, at the pool's steps
    def queued(ln):  # a lane's requests in queue order (its ring from the head)
        return S.q_steps[ln, (S.q_head[ln] + np.arange(S.q_n[ln])) % S.q_steps.shape[1]].tolist()

    assert queued(1) == [np.inf, 4, 4] and queued(0) == [np.inf, 10]  # (the first was served)
    r = b.report()
    assert r["degraded_share"] == {"paid": round(1 / 3, 6), "free": round(2 / 3, 6)}
    assert r["quality_proxy"] == {"paid": round(50 / 60, 6), "free": round(28 / 60, 6)}


@settings(max_examples=30, deadline=None)
@given(st.floats(0, 1))
def test_content_filter_false_positives_rise_with_strictness(s):
    cls = REGISTRY["content_filter"]

    def fpr(x):
        return cls(cls.Params.model_validate({"strictness": x}), ["free"], EPOCH).rates()

    (r0, f0), (r1, f1) = fpr(s), fpr(min(1.0, s + 0.1))
    assert f1 >= f0 and r1 >= r0


def test_content_filter_counts_false_blocks_per_tier():
    cls = REGISTRY["content_filter"]
    f = cls(cls.Params.model_validate({"strictness": 1.0, "violating_share": 0.1}), ["paid", "free"], EPOCH)
    n = 200_000
    tier = np.arange(n) % 2
    ok, code, _ = f.admit_many(np.zeros(n), np.arange(n), tier)
    r = f.report()
    assert (code[~ok] == 3).all()  # filtered
    assert sum(r["true_blocks"].values()) + sum(r["false_blocks"].values()) == (~ok).sum()
    assert abs(r["false_block_share"]["free"] - r["false_positive_rate"]) < 0.005
    assert abs(sum(r["missed"].values()) / (0.1 * n) - (1 - r["recall"])) < 0.01


def test_shadow_counts_what_it_would_block_and_blocks_nothing():
    sh = make("shadow", of={"policy": "token_bucket", "rate": 0.1, "burst": 2})
    tb = make("token_bucket", rate=0.1, burst=2)
    t = np.sort(np.random.default_rng(0).uniform(0, 100, 300))
    u = np.zeros(300, np.int64)
    ok, _, _ = sh.admit_many(t, u, u)
    assert ok.all()
    assert sh.report()["would_block"]["free"] == sum(not tb.admit(x, 0, 0).ok for x in t)


def test_bad_policy_input_gives_one_line_and_exit_2(tmp_path, capsys):
    from sim.cli import main

    base = (Path(__file__).resolve().parents[1] / "scenarios/policies/shed_reserve.yaml").read_text()
    cases = {
        "utilization: {free: 0.9}": ("utilization: {fre: 0.9}", "policies[0].utilization", "unknown tier 'fre'"),
        "- policy: shed_reserve": ("- policy: shed_reservoir", "policies[0].policy", "unknown policy"),
        "  queue_depth: {free: 60}": ("  queue_depth: {free: 60}\n  bogus: 1", "policies[0].bogus", "unknown key"),
        "  tiers: [free]\n  utilization": ("  tiers: [free]\n  of: {policy: autoscale}\n  utilization",
                                            "policies[0].of", "policy: 'autoscale' cannot be dark-launched"),
    }
    for old, (new, field, msg) in cases.items():
        text = base.replace(old, new)
        if "autoscale" in new:
            text = text.replace("policy: shed_reserve", "policy: shadow")
            text = text.replace("  utilization: {free: 0.9}\n  queue_depth: {free: 60}\n", "")
        f = tmp_path / "bad.yaml"
        f.write_text(text)
        assert main(["run", str(f), "--out", str(tmp_path / "o"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and unpos(err[0]).startswith(f"error: {f}: {field}"), err
        assert msg in err[0], err


# ---- the admission pipeline: one rule for the simulator's chunks and the gateway's requests ----

PIPELINE_POLICIES = [  # scenario order matters: the first rejection decides
    {"policy": "daily_quota", "limit": 3, "tiers": ["free"]},
    {"policy": "token_bucket", "rate": 0.2, "burst": 2},
    {"policy": "sliding_log", "window_s": 30, "limit": 2, "key": "tier", "tiers": ["plus"]},
    {"policy": "fixed_window", "window_s": 60, "limit": 5, "key": "global", "enabled": False},
]


def pipeline_scenario() -> dict:
    from helpers import queue_scenario

    d = queue_scenario(1.0, 1.0, 1, 600, seed=3)
    d["tiers"] = [{"name": "free", "share": 0.5, "priority": 1, "slo_s": 60, "price_per_image": 0},
                  {"name": "plus", "share": 0.5, "priority": 0, "slo_s": 60, "price_per_image": 0.01}]
    d["policies"] = PIPELINE_POLICIES
    return d


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 2 * DAY, allow_nan=False), st.integers(0, 4),
                          st.integers(0, 1)), min_size=1, max_size=120))
def test_pipeline_one_request_at_a_time_equals_the_chunk(reqs):
    """Gateway.admit (admit_one) and Run.sync (admit_chunk) run one rule: fresh policies
    give the same fate, reason and retry-after for every request of a sorted sequence."""
    from sim.outcomes import REASON_CODE
    from sim.policies.pipeline import admit_chunk, admit_one, build_policies
    from sim.scenario import parse_scenario

    sc = parse_scenario(pipeline_scenario())
    reqs = sorted(reqs)
    t = np.array([r[0] for r in reqs])
    user = np.array([r[1] for r in reqs], np.int64)
    tier = np.array([r[2] for r in reqs], np.int64)
    chunk = admit_chunk(build_policies(sc), t, user, tier)
    one = build_policies(sc)
    for i in range(len(t)):
        rejected, met = admit_one(one, float(t[i]), int(user[i]), int(tier[i]))
        assert (rejected is None) == bool(chunk.admitted[i]), i
        if rejected is not None:
            ap, d = rejected
            assert REASON_CODE[d.reason] == chunk.code[i]
            ra = chunk.retry_after[i]
            assert (d.retry_after is None and np.isnan(ra)) or abs(d.retry_after - ra) < 1e-6
            # the policies before the one that rejected all admitted it
            assert all(d2.ok for _, d2 in met) and all(a2.spec_index < ap.spec_index for a2, _ in met)


def test_pipeline_first_rejection_decides():
    """A request the quota rejects is never seen by the token bucket behind it."""
    from sim.policies.pipeline import admit_one, build_policies
    from sim.scenario import parse_scenario

    pols = build_policies(parse_scenario(pipeline_scenario()))
    for k in range(3):  # 3/day free; the bucket (burst 2, 0.2/s) refills in 10 s
        assert admit_one(pols, 100.0 * k, 7, 0)[0] is None
    rejected, met = admit_one(pols, 400.0, 7, 0)
    assert rejected[0].policy.name == "daily_quota" and rejected[1].reason == "quota_exceeded" and met == []
    tb = pols[1].policy
    assert admit_one(pols, 401.0, 7, 1)[0] is None  # the same user on plus: quota not met
    assert tb.admit(401.5, 7, 0).ok  # the bucket only counted what reached it
