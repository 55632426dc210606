"""Per-request cost of shared limiter state: admission through RedisStore (a real
redis-server on loopback, one atomic Lua script per policy) against MemoryStore (the policy
objects in process), for the Ghibli stack on the free tier: a calendar daily quota of 3, then
a per-user token bucket, in the gateway's order (a request the quota refuses stops there).

One stream (Poisson arrivals over many users, the caller's clock) is decided by each store in
turn, in one run; each request is timed alone (perf_counter_ns around its admits), so the
figures are the latency a gateway adds per request, not a batch's throughput. Also checks that
both stores gave the same decisions. Prints a table, then one JSON line: memory/redis p50 and
p99 in microseconds, the ratio of the p50s, requests, hiredis.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.live.redis_server import start_redis, stop_redis  # noqa: E402
from sim.live.redis_store import RedisStore  # noqa: E402
from sim.live.store import MemoryStore  # noqa: E402
from sim.policies import REGISTRY  # noqa: E402

EPOCH = 1742860800.0  # 2025-03-25 00:00 UTC
STACK = [("daily_quota", {"limit": 3, "window": "calendar"}),
         ("token_bucket", {"rate": 1 / 60, "burst": 5, "key": "user"})]


def policies() -> dict:
    out = {}
    for name, params in STACK:
        cls = REGISTRY[name]
        out[name] = cls(cls.Params.model_validate(params), ["free"], EPOCH)
    return out


def stream(n: int, rate: float, users: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return np.cumsum(g.exponential(1 / rate, n)), g.integers(0, users, n)


def timed(store, t: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, list[tuple]]:
    lat = np.empty(len(t))
    out = []
    names = [n for n, _ in STACK]
    clock = time.perf_counter_ns
    for i in range(len(t)):
        now, user = float(t[i]), int(u[i])
        t0 = clock()
        for name in names:
            d = store.admit(name, now, user, 0)
            if not d.ok:
                break
        lat[i] = clock() - t0
        out.append((d.ok, d.reason, d.retry_after))
    return lat / 1e3, out  # microseconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--rate", type=float, default=500.0, help="simulated requests per second")
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--url", help="an existing Redis (default: start redis-server on a free port)")
    ap.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = ap.parse_args()
    t, u = stream(args.requests, args.rate, args.users, seed=25)
    srv = None if args.url else start_redis()
    url = args.url or srv.url
    try:
        red = RedisStore(url, policies(), prefix=f"bench{uuid.uuid4().hex[:8]}")
        mem = MemoryStore(policies())
        timed(RedisStore(url, policies(), prefix="warm"), t[:2000], u[:2000])  # connect, load scripts
        timed(MemoryStore(policies()), t[:2000], u[:2000])
        lm, dm = timed(mem, t, u)
        lr, dr = timed(red, t, u)
        keys = red.r.dbsize()
        red.r.flushdb()
        red.close()
    finally:
        if srv is not None:
            stop_redis(srv)
    import redis.utils

    same = sum(a[0] == b[0] and a[1] == b[1] for a, b in zip(dm, dr, strict=True))
    ok = sum(a[0] for a in dm)
    fig = {}
    for name, lat in (("memory", lm), ("redis", lr)):
        p50, p99 = np.percentile(lat, [50, 99])
        fig[name] = {"p50_us": round(float(p50), 1), "p99_us": round(float(p99), 1),
                     "mean_us": round(float(lat.mean()), 1)}
    print(f"{args.requests:,} requests over {args.users:,} users, daily_quota(3) + token_bucket "
          f"(1/min, burst 5); {ok:,} admitted; same decisions: {same:,}/{args.requests:,}",
          file=sys.stderr)
    print(f"{'store':<8} {'p50 us':>9} {'p99 us':>9} {'mean us':>9}", file=sys.stderr)
    for name, f in fig.items():
        print(f"{name:<8} {f['p50_us']:>9.1f} {f['p99_us']:>9.1f} {f['mean_us']:>9.1f}", file=sys.stderr)
    ratio = fig["redis"]["p50_us"] / max(fig["memory"]["p50_us"], 1e-9)
    print(f"redis / memory p50: {ratio:.1f}x; redis keys at the end: {keys:,} "
          f"(hiredis: {redis.utils.HIREDIS_AVAILABLE})", file=sys.stderr)
    print(json.dumps({"requests": args.requests, "admitted": ok, "same_decisions": same,
                      "memory_p50_us": fig["memory"]["p50_us"], "memory_p99_us": fig["memory"]["p99_us"],
                      "redis_p50_us": fig["redis"]["p50_us"], "redis_p99_us": fig["redis"]["p99_us"],
                      "redis_p50_ms": round(fig["redis"]["p50_us"] / 1e3, 4),
                      "redis_p99_ms": round(fig["redis"]["p99_us"] / 1e3, 4),
                      "p50_ratio": round(ratio, 2), "redis_keys": keys,
                      "hiredis": bool(redis.utils.HIREDIS_AVAILABLE)}))


if __name__ == "__main__":
    main()
