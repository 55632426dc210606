"""Limiters: property tests of their exact semantics (../shared/reference/policies.md)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.policies import REGISTRY
from sim.policies.limits import Gcra, TokenBucket

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


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3 * DAY), st.integers(0, 4)), min_size=1, max_size=300),
       st.sampled_from(sorted(LIMITERS)), st.integers(1, 5))
def test_admit_many_equals_admit_in_order(reqs, name, pieces):
    reqs.sort()
    t = np.array([r[0] for r in reqs])
    user = np.array([r[1] for r in reqs], np.int64)
    tier = np.zeros(len(t), np.int64)
    a, b = make(name, **LIMITERS[name]), make(name, **LIMITERS[name])
    cuts = np.linspace(0, len(t), pieces + 1).astype(int)
    ok_many = np.concatenate([a.admit_many(t[i:j], user[i:j], tier[i:j])[0]
                              for i, j in zip(cuts[:-1], cuts[1:], strict=True)])
    ok_one = np.array([b.admit(float(x), int(u), 0).ok for x, u in zip(t, user, strict=True)])
    assert (ok_many == ok_one).all()


def test_keys_user_tier_global():
    per_user = make("token_bucket", rate=0.001, burst=1, key="user")
    glob = make("token_bucket", rate=0.001, burst=1, key="global")
    assert per_user.admit(0, 1, 0).ok and per_user.admit(0, 2, 0).ok
    assert glob.admit(0, 1, 0).ok and not glob.admit(0, 2, 0).ok
    assert isinstance(per_user, TokenBucket) and not isinstance(per_user, Gcra)
