"""The highest request rate one and four gateway replicas sustain with p99 admission latency
under 10 ms, on loopback, limiter state in a throwaway Redis.

A 50-user copy of validation_small whose only policy is a per-user token bucket that admits
one request and then (almost) never refills: after the first request per user every answer
is a 429 decided by a replica after its Redis check, so the client's round trip of a 429 is
the admission latency (HTTP in and out, key lookup, the store call), with no fleet in it.
For N = 1 and 4 replicas, open-loop Poisson steps of `--step-s` wall seconds at rising
rates (round robin over the replicas) until p99 passes 10 ms or the client falls behind
(its p99 send lag passes 10 ms: then the figure is the client's, and is reported as such).
Prints one line per step, then one JSON line.

    PYTHONPATH=. python benchmarks/replica_rate.py [--rates 25,50,100,200] [--step-s 5]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.jsonout import dumps  # noqa: E402
from sim.live.chaos import keys_of, stop  # noqa: E402
from sim.live.deploy import start_deployment  # noqa: E402
from sim.live.redis_server import start_redis, stop_redis  # noqa: E402
from sim.live.replica import FleetClient  # noqa: E402

LIMIT_MS = 10.0


def scenario(d: Path) -> Path:
    sc = yaml.safe_load((ROOT / "scenarios" / "validation_small.yaml").read_text())
    sc["demand"]["users"] = 50
    sc["policies"] = [{"policy": "token_bucket", "key": "user", "rate": 1e-6, "burst": 1}]
    p = d / "admission_only.yaml"
    p.write_text(yaml.safe_dump(sc, sort_keys=False))
    return p


async def step(urls: list[str], keys, rate: float, seconds: float, seed: int) -> dict:
    clients = [FleetClient(u) for u in urls]
    rng = random.Random(seed)
    lat, lag, status = [], [], {}
    t0 = time.monotonic()

    async def one(i: int, key: str, at: float):
        sent = time.monotonic()
        lag.append(sent - at)
        st, _, _ = await clients[i % len(clients)].post(
            "/v1/images", b'{"id":1}', {"Authorization": f"Bearer {key}"})
        if st == 429:  # decided at admission (a 200 waited for its image)
            lat.append(time.monotonic() - sent)
        status[st] = status.get(st, 0) + 1

    tasks, t, i = [], 0.0, 0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            break
        d = t0 + t - time.monotonic()
        if d > 0:
            await asyncio.sleep(d)
        tasks.append(asyncio.create_task(one(i, keys[rng.randrange(len(keys))][0], t0 + t)))
        i += 1
    await asyncio.gather(*tasks)
    for c in clients:
        await c.aclose()
    lat_ms, lag_ms = np.array(lat) * 1e3, np.array(lag) * 1e3
    return {"rate": rate, "sent": i, "achieved_per_s": round(i / seconds, 1),
            "p50_ms": round(float(np.median(lat_ms)), 3), "p99_ms": round(float(np.quantile(lat_ms, 0.99)), 3),
            "lag_p99_ms": round(float(np.quantile(lag_ms, 0.99)), 3),
            "status": {str(k): v for k, v in sorted(status.items())}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="25,50,100,200,400,800,1600")
    ap.add_argument("--step-s", type=float, default=5.0)
    ap.add_argument("--replicas", default="1,4")
    args = ap.parse_args()
    rates = [float(x) for x in args.rates.split(",")]
    out = {}
    with tempfile.TemporaryDirectory(prefix="fg-rate-") as tmp:
        tmp = Path(tmp)
        sc = scenario(tmp)
        for n in [int(x) for x in args.replicas.split(",")]:
            srv = start_redis()
            d = tmp / f"n{n}"
            proc, dep = start_deployment(d, sc, n, ["--redis", srv.url])
            try:
                keys = keys_of(d)
                best, steps = None, []
                for k, rate in enumerate(rates):
                    r = asyncio.run(step(dep["replicas"], keys, rate, args.step_s, k))
                    r["client_bound"] = r["lag_p99_ms"] > LIMIT_MS
                    steps.append(r)
                    print(f"replicas {n}: {rate:g}/s sent {r['achieved_per_s']}/s admission p50 "
                          f"{r['p50_ms']} ms p99 {r['p99_ms']} ms (send lag p99 {r['lag_p99_ms']} ms)"
                          f" {r['status']}", file=sys.stderr, flush=True)
                    if r["p99_ms"] > LIMIT_MS or r["client_bound"]:
                        break
                    best = rate
                out[n] = {"sustained_per_s": best, "steps": steps,
                          "stopped_by": "client" if steps[-1]["client_bound"] else
                          ("p99" if steps[-1]["p99_ms"] > LIMIT_MS else "last rate")}
            finally:
                stop(proc)
                stop_redis(srv)
    print(dumps({"limit_p99_ms": LIMIT_MS, **{f"replicas_{n}_per_s": v["sustained_per_s"] for n, v in out.items()},
                 **{f"replicas_{n}_stopped_by": v["stopped_by"] for n, v in out.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
