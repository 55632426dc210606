"""The shared limiter store against a real Redis server (tests/redis_server.py): every Lua
script decides as the Python `admit` it names, on the same timestamp sequences; concurrent
callers from several processes never double-admit; leases and keys expire."""

from __future__ import annotations

import math
import multiprocessing as mp
import sys
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_server import need

from sim.live.store import Leases, MemoryStore, decide, open_store
from sim.policies import REGISTRY
from sim.policies.base import Decision

DAY = 86400.0
TIERS = ["free", "plus"]
# Both sides compute in IEEE doubles in the same order, and the scripts reply with %.17g
# strings (Redis would truncate a Lua number reply to an integer: 0.7 -> 0), so decisions
# agree to the bit in practice. 1e-6 s only allows a last-place libm difference (floor,
# division); a wrong formula is off by the order of the parameters (>= 1e-3 s here).
TOL = 1e-6
EPOCHS = st.sampled_from([0.0, 1743379200.0, 1742860800.0 + 86399.3])  # 2025-03-31, 03-25 23:59:59.3


def make(name: str, epoch: float = 0.0, **params):
    cls = REGISTRY[name]
    return cls(cls.Params.model_validate(params), TIERS, epoch)


def redis_store(url: str, policies, **kw):
    from sim.live.redis_store import RedisStore

    return RedisStore(url, policies, prefix=f"t{uuid.uuid4().hex[:12]}", **kw)


def keys_of(store) -> list[bytes]:
    return list(store.r.scan_iter(match=f"{store.prefix}:*"))


def same(a: Decision, b: Decision, where: str = "") -> None:
    assert (a.ok, a.reason, a.limit, a.remaining) == (b.ok, b.reason, b.limit, b.remaining), \
        f"{where}: python {a} redis {b}"
    for f in ("retry_after", "reset_after"):
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), f"{where}: {f}: python {x} redis {y}"
        if x is not None:
            assert math.isclose(x, y, rel_tol=0, abs_tol=TOL), f"{where}: {f}: python {x} redis {y}"


# timestamp sequences: ties, sub-second gaps, minutes, and jumps of days (calendar resets)
gaps = st.one_of(st.just(0.0), st.floats(0, 1.5), st.floats(0, 120), st.floats(0, 2 * DAY))
events = st.lists(st.tuples(gaps, st.integers(0, 3), st.integers(0, 1)), min_size=1, max_size=30)
keys = st.sampled_from(["user", "tier", "global"])

LIMITERS = {
    "token_bucket": st.fixed_dictionaries({"rate": st.floats(0.01, 10), "key": keys,
                                           "burst": st.one_of(st.integers(1, 6), st.floats(1, 6))}),
    "gcra": st.fixed_dictionaries({"count": st.integers(1, 10), "period_s": st.floats(0.1, 300),
                                   "burst": st.integers(0, 5), "key": keys}),
    "fixed_window": st.fixed_dictionaries({"limit": st.integers(0, 5), "key": keys,
                                           "window_s": st.one_of(st.floats(0.01, 300), st.just(DAY))}),
    "sliding_log": st.fixed_dictionaries({"limit": st.integers(0, 5), "window_s": st.floats(0.01, 300),
                                          "key": keys}),
    "sliding_counter": st.fixed_dictionaries({"limit": st.integers(0, 5), "key": keys,
                                              "window_s": st.one_of(st.floats(0.01, 300), st.just(60.0))}),
    "daily_quota": st.fixed_dictionaries({"limit": st.integers(0, 5),
                                          "window": st.sampled_from(["calendar", "rolling"])}),
}


@pytest.mark.parametrize("name", sorted(LIMITERS))
def test_script_decides_as_the_python_admit(redis_server, name):
    @settings(max_examples=100, deadline=None)
    @given(LIMITERS[name], EPOCHS, events)
    def check(params, epoch, evs):
        py = make(name, epoch, **params)  # the definition
        store = redis_store(redis_server.url, {"p": make(name, epoch, **params)})
        t = 0.0
        for i, (gap, user, tier) in enumerate(evs):
            t += gap
            same(decide(py, t, user, tier), store.admit("p", t, user, tier), f"{name} #{i} t={t}")
        store.close()

    check()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 3), st.sampled_from(["user", "tier"]), st.floats(0.5, 20),
       st.lists(st.tuples(st.floats(0, 8), st.integers(0, 2), st.integers(0, 1), st.booleans(),
                          st.integers(0, 10)), min_size=1, max_size=30))
def test_concurrency_leases_decide_as_the_python_leases(redis_server, limit, key, ttl, ops):
    py = Leases(make("concurrency", limit=limit, key=key), ttl)
    store = redis_store(redis_server.url, {"c": make("concurrency", limit=limit, key=key)},
                        lease_ttl_s=ttl)
    held: list[tuple[int, int, str, str]] = []  # (user, tier, python lease, redis lease)
    t = 0.0
    for i, (gap, user, tier, release, pick) in enumerate(ops):
        t += gap
        if release and held:
            u, k, a, b = held.pop(pick % len(held))
            py.release(u, k, a)
            store.release("c", u, k, b)
            continue
        a, b = py.admit(t, user, tier), store.admit("c", t, user, tier)
        assert (a.lease_id is None) == (b.lease_id is None) == (not a.ok)
        la, lb = a.lease_id, b.lease_id
        a.lease_id = b.lease_id = None
        same(a, b, f"#{i} t={t}")
        if la:
            held.append((user, tier, la, lb))
    store.close()


def test_gcra_reports_like_redis_cell(redis_server):
    # CL.THROTTLE user 4 10 60: T = 6 s, capacity 5 (tests/test_policies.py, the same figures)
    store = redis_store(redis_server.url, {"g": make("gcra", count=10, period_s=60, burst=4)})
    ds = [store.admit("g", 0.0, 1, 0) for _ in range(6)]
    assert [d.ok for d in ds] == [True] * 5 + [False]
    assert [d.remaining for d in ds[:5]] == [4, 3, 2, 1, 0]
    assert ds[5].retry_after == 6.0 and ds[5].limit == 5 and ds[5].reason == "rate_limited"
    assert ds[4].reset_after == 30.0


def test_calendar_quota_tells_what_is_left_and_resets_at_midnight_utc(redis_server):
    epoch = 1743379200.0  # 00:00 UTC
    store = redis_store(redis_server.url, {"q": make("daily_quota", epoch, limit=3)})
    ds = [store.admit("q", 3600.0 * 23, 7, 0) for _ in range(4)]
    assert [(d.ok, d.remaining, d.reset_after) for d in ds] == \
        [(True, 2, 3600.0), (True, 1, 3600.0), (True, 0, 3600.0), (False, 0, 3600.0)]
    assert ds[3].reason == "quota_exceeded" and ds[3].retry_after == 3600.0
    assert store.admit("q", DAY, 7, 0).ok  # the next UTC day


def test_reconfigured_policy_is_read_at_each_call(redis_server):
    py, pol = make("fixed_window", limit=1, window_s=100.0), make("fixed_window", limit=1, window_s=100.0)
    store = redis_store(redis_server.url, {"w": pol})
    for t, new in ((1.0, None), (2.0, None), (3.0, 3), (4.0, None), (5.0, None)):
        if new is not None:  # a schedule gives the policy new parameters mid-window
            py.reconfigure(py.Params(limit=new, window_s=100.0))
            pol.reconfigure(pol.Params(limit=new, window_s=100.0))
        same(decide(py, t, 0, 0), store.admit("w", t, 0, 0), f"t={t}")


def test_unscripted_policies_are_decided_in_process(redis_server):
    a = make("content_filter", strictness=1.0, violating_share=0.5, seed=3)
    b = make("content_filter", strictness=1.0, violating_share=0.5, seed=3)
    store = redis_store(redis_server.url, {"f": b})
    assert store.local.policies == {"f": b}
    got = [store.admit("f", float(i), i, 0) for i in range(50)]
    assert got == [a.admit(float(i), i, 0) for i in range(50)]
    assert any(not d.ok for d in got) and not keys_of(store)


def test_clocks(redis_server):
    with pytest.raises(ValueError, match="needs now"):
        redis_store(redis_server.url, {"g": make("gcra", count=1, period_s=1000)}).admit("g", None, 0, 0)
    # production: two replicas, each with its own (here: wildly wrong) idea of the time,
    # both read Redis TIME, so the second sees the first's request a moment ago
    pols = {"g": make("gcra", count=1, period_s=1000)}
    a = redis_store(redis_server.url, pols, clock="redis", origin=time.time() - 5.0)
    from sim.live.redis_store import RedisStore

    b = RedisStore(redis_server.url, pols, prefix=a.prefix, clock="redis", origin=a.origin)
    assert a.admit("g", None, 0, 0).ok
    d = b.admit("g", None, 0, 0)
    assert not d.ok and 999.0 < d.retry_after <= 1000.0
    # time_scale: 100 store seconds a wall second; 1000 s pass in 10 s of wall time
    c = redis_store(redis_server.url, pols, clock="redis", origin=time.time(), time_scale=100.0)
    assert c.admit("g", None, 0, 0).ok
    d = c.admit("g", None, 0, 0)
    assert not d.ok and 900.0 < d.retry_after <= 1000.0
    m = MemoryStore(pols, now_fn=lambda: 5.0)
    assert m.admit("g", None, 0, 0).ok and m.admit("g", 5.0, 0, 0).retry_after == 1000.0


def test_leases_expire_so_a_dead_replicas_slots_come_back(redis_server):
    pol = make("concurrency", limit=2)
    for store in (MemoryStore({"c": pol}, lease_ttl_s=10.0),
                  redis_store(redis_server.url, {"c": pol}, lease_ttl_s=10.0)):
        a, b = store.admit("c", 0.0, 1, 0), store.admit("c", 1.0, 1, 0)
        assert a.ok and b.ok and a.lease_id != b.lease_id and b.remaining == 0
        assert store.admit("c", 1.0, 2, 0).ok  # another user: another key
        assert not store.admit("c", 9.99, 1, 0).ok
        store.release("c", 1, 0, b.lease_id)  # released: the slot is free at once
        c = store.admit("c", 9.99, 1, 0)
        assert c.ok and not store.admit("c", 9.99, 1, 0).ok
        # the replica holding `a` died: its lease expires at 10.0 and the slot comes back
        assert store.admit("c", 10.0, 1, 0).ok
        store.release("c", 1, 0, "not-a-lease")  # unknown: nothing happens
        store.close()


def test_leases_expire_on_the_redis_clock(redis_server):
    store = redis_store(redis_server.url, {"c": make("concurrency", limit=1)}, clock="redis",
                        lease_ttl_s=0.2, origin=time.time())
    assert store.admit("c", None, 0, 0).ok and not store.admit("c", None, 0, 0).ok
    (key,) = keys_of(store)
    assert 0 < store.r.pttl(key) <= 201
    time.sleep(0.3)
    assert not keys_of(store)  # nothing held: the key went with its last lease
    assert store.admit("c", None, 0, 0).ok


# each limiter with state that stops mattering within ~0.2 s of wall time, and the key
# lifetime that means: (name, params, epoch, now, store seconds until it no longer matters)
SHORT = [
    ("token_bucket", {"rate": 10.0, "burst": 2}, 0.0, 5.0, 0.1),  # refilled in 0.1 s
    ("gcra", {"count": 10, "period_s": 1.0, "burst": 3}, 0.0, 5.0, 0.1),  # TAT = now + T
    ("fixed_window", {"limit": 2, "window_s": 0.2}, 0.0, 0.05, 0.15),  # the window ends
    ("sliding_log", {"limit": 2, "window_s": 0.2}, 0.0, 5.0, 0.2),  # the time leaves the window
    ("sliding_counter", {"limit": 2, "window_s": 0.1}, 0.0, 0.05, 0.15),  # two windows on
    ("daily_quota", {"limit": 3}, 1743379200.0 - 0.2, 0.0, 0.2),  # midnight UTC
    ("daily_quota", {"limit": 864000, "window": "rolling"}, 0.0, 5.0, 0.1),  # TAT = now + 0.1 s
]


@pytest.mark.parametrize("name,params,epoch,now,ttl", SHORT, ids=[f"{s[0]}-{i}" for i, s in enumerate(SHORT)])
def test_keys_expire_when_they_no_longer_matter(redis_server, name, params, epoch, now, ttl):
    from sim.live.redis_store import wall_ms

    store = redis_store(redis_server.url, {"p": make(name, epoch, **params)})
    t0 = time.monotonic()
    for user in range(50):  # 50 active users, one key each
        assert store.admit("p", now, user, 0).ok
    ks = keys_of(store)
    assert len(ks) == (50 if params.get("key", "user") == "user" else 1)
    left = [store.r.pttl(k) for k in ks]
    elapsed_ms = (time.monotonic() - t0) * 1000
    most = wall_ms(ttl) + 1  # + 1: the script's ttl is a float sum, 0.15000000000000002 -> 152
    assert all(0 < x <= most for x in left), (left, most)  # never -1: no key lives on
    # the lifetime the state needs, not shorter: set after t0, read before now
    assert min(left) >= most - elapsed_ms - 3, (left, most, elapsed_ms)
    time.sleep(ttl + 0.1)
    assert not keys_of(store)  # memory bounded by the users still inside a window
    # and a missing key decides as the state would have
    py = make(name, epoch, **params)
    later = now + ttl + 0.1
    for user in range(3):
        py.admit(now, user, 0)
        same(decide(py, later, user, 0), store.admit("p", later, user, 0), f"{name} after expiry")


def test_time_scale_shortens_key_lifetimes_in_wall_time(redis_server):
    # 100 store seconds a wall second: a 60 s window is 0.6 wall seconds
    store = redis_store(redis_server.url, {"w": make("fixed_window", limit=5, window_s=60.0)},
                        time_scale=100.0)
    store.admit("w", 0.0, 0, 0)
    (k,) = keys_of(store)
    assert 500 < store.r.pttl(k) <= 601


def test_open_store_and_the_missing_extra(redis_server, monkeypatch):
    pols = {"b": make("token_bucket", rate=1.0, burst=2)}
    m = open_store(None, pols, prefix="x", clock="redis", lease_ttl_s=5.0)  # Redis-only keys ignored
    assert isinstance(m, MemoryStore) and m.admit("b", 0.0, 0, 0).ok
    r = open_store(redis_server.url, pols, prefix=f"o{uuid.uuid4().hex[:8]}", now_fn=time.time)
    assert type(r).__name__ == "RedisStore" and r.ping() and r.admit("b", 0.0, 0, 0).ok
    with pytest.raises(ValueError, match="redis:// URL"):
        open_store("http://127.0.0.1:1", pols)
    # no `redis` package: the error names the module, which the CLI maps to its extra
    from sim.cli import EXTRAS

    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "sim.live.redis_store", raising=False)
    with pytest.raises(ModuleNotFoundError) as e:
        open_store(redis_server.url, pols)
    assert EXTRAS[e.value.name] == "serve"


# ---- several processes on one key: no double admission ----

LIMIT = 120
HAMMERED = {
    "token_bucket": {"rate": 1e-9, "burst": LIMIT},
    "gcra": {"count": 1, "period_s": 1e6, "burst": LIMIT - 1},
    "fixed_window": {"limit": LIMIT, "window_s": 3600.0},
    "sliding_log": {"limit": LIMIT, "window_s": 3600.0},
    "sliding_counter": {"limit": LIMIT, "window_s": 3600.0},
    "daily_quota": {"limit": LIMIT},
    "concurrency": {"limit": LIMIT},
}
EXACT_REMAINING = {"token_bucket", "gcra", "fixed_window", "sliding_log", "sliding_counter",
                   "daily_quota", "concurrency"}


def _hammer(url, prefix, barrier, attempts, out):
    from sim.live.redis_store import RedisStore

    pols = {n: make(n, 0.0, **p) for n, p in HAMMERED.items()}
    store = RedisStore(url, pols, prefix=prefix)
    barrier.wait()
    got: dict[str, list[int]] = {n: [] for n in pols}
    for _ in range(attempts):
        for n in pols:  # every process on the same key (user 0), the caller's clock fixed
            d = store.admit(n, 100.0, 0, 0)
            if d.ok:
                got[n].append(-1 if d.remaining is None else d.remaining)
    out.put(got)
    store.close()


@pytest.mark.slow
def test_processes_hammering_one_key_never_double_admit(redis_server):
    ctx = mp.get_context("fork")
    procs, attempts = 4, LIMIT // 2 + 20  # 4 x 80 = 320 tries for 120 places
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    prefix = f"h{uuid.uuid4().hex[:8]}"
    ps = [ctx.Process(target=_hammer, args=(redis_server.url, prefix, barrier, attempts, out))
          for _ in range(procs)]
    for p in ps:
        p.start()
    results = [out.get(timeout=120) for _ in ps]
    for p in ps:
        p.join(30)
        assert p.exitcode == 0
    assert sum(any(res.values()) for res in results) >= 2  # they really raced
    for n in HAMMERED:
        rem = [r for res in results for r in res[n]]
        assert len(rem) == LIMIT, n  # exactly the limit, whoever asked
        if n in EXACT_REMAINING:  # each admission saw the one before it: no two the same
            assert sorted(rem) == list(range(LIMIT)), n


def test_redis_down_raises_and_a_restart_reloads_the_scripts():
    import redis

    from sim.live.redis_server import redis_server_exe, start_redis, stop_redis

    if redis_server_exe() is None:
        need("redis-server is not installed")
    srv = start_redis()
    store = redis_store(srv.url, {"b": make("token_bucket", rate=1.0, burst=1)}, socket_timeout=0.5)
    try:
        assert store.admit("b", 0.0, 0, 0).ok and not store.admit("b", 0.0, 0, 0).ok
        stop_redis(srv)
        with pytest.raises(redis.exceptions.ConnectionError):  # the gateway fails open or closed
            store.admit("b", 0.0, 0, 0)
        srv = start_redis(srv.port)  # an empty server: state and loaded scripts are gone
        assert store.admit("b", 0.0, 0, 0).ok  # EVALSHA -> NOSCRIPT -> loaded again
    finally:
        store.close()
        stop_redis(srv)


def test_quota_retry_after_from_redis_lands_on_or_after_midnight(redis_server):
    """The script's Retry-After to 00:00 UTC is the Python quota's, to the bit: a retry made
    at t + Retry-After is the new day's on both clocks (not an ulp before midnight)."""
    import numpy as np

    epoch = 1742860800.0  # 2025-03-25T00:00:00Z, the ghibli scenario's start
    t = np.sort(np.random.default_rng(1413).uniform(0, 8 * DAY, 60))
    q = make("daily_quota", epoch, limit=1)
    py = make("daily_quota", epoch, limit=1)
    store = redis_store(redis_server.url, {"q": q})
    try:
        for i, v in enumerate(t):
            assert store.admit("q", float(v), i, 0).ok and py.admit(float(v), i, 0).ok
            d, dp = store.admit("q", float(v), i, 0), py.admit(float(v), i, 0)
            assert not d.ok and d.retry_after == dp.retry_after, (v, d, dp)
            midnight = (math.floor((epoch + v) / DAY) + 1) * DAY
            assert v + d.retry_after >= midnight - epoch and epoch + (v + d.retry_after) >= midnight
    finally:
        store.close()
