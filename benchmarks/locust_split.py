"""Send lag of Locust replaying a fast schedule: one process against a master and K workers
(`validate --locust-workers K`, the schedule split by user), on loopback.

A 200-user scenario whose only policy is a per-user token bucket that admits one request
and then (almost) never refills: after the first request per user every answer is a 429
from the gateway's admission, so the gateway answers at once and the figure is the client's.
For each rate (requests per wall second, uniform times, users drawn at random), the same
schedule is replayed by one Locust process and by a master with K workers (run_live, as
`floodgate validate` runs them); send lag = send - scheduled, wall seconds. Prints one line
per run, then one JSON line.

    PYTHONPATH=. python benchmarks/locust_split.py [--rates 200,800] [--seconds 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.jsonout import dumps  # noqa: E402
from sim.live import schedule  # noqa: E402
from sim.live.fidelity import Setup  # noqa: E402
from sim.live.validate import run_live  # noqa: E402
from sim.scenario import load_scenario  # noqa: E402

SCENARIO = """
name: locust_split
seed: 1
horizon: 60s
demand: {model: curve, users: 200, points: [[0, 1]]}
tiers:
- {name: free, share: 1, priority: 0, price_per_image: 0, slo_s: 60}
policies:
- {policy: token_bucket, key: user, rate: 1.0e-6, burst: 1}
fleet:
  pools:
  - {name: p, gpus: 4, service_time_s: 0.05, service_distribution: deterministic}
"""


def lag_of(path: Path) -> dict:
    cl = pd.read_json(path, lines=True)
    lag = cl["lag_s"].to_numpy(float)
    return {"sent": int(len(cl)), "lag_p50_ms": round(float(np.median(lag)) * 1e3, 2),
            "lag_p99_ms": round(float(np.percentile(lag, 99)) * 1e3, 2),
            "lag_max_ms": round(float(lag.max()) * 1e3, 2),
            "unanswered": int(cl["status"].isna().sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="200,800")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        sc_path = Path(tmp) / "split.yaml"
        sc_path.write_text(SCENARIO)
        sc = load_scenario(sc_path)
        for rate in (float(r) for r in args.rates.split(",")):
            n = int(rate * args.seconds)
            t = np.sort(rng.uniform(0.0, args.seconds, n))
            users = rng.integers(0, 200, n)
            df = pd.DataFrame({"id": np.arange(n), "t": t, "user": users, "tier": "free"})
            row = {"rate": rate, "requests": n}
            for k in (0, args.workers):
                d = Path(tmp) / f"r{int(rate)}-k{k}"
                d.mkdir()
                schedule.write(df, d / "schedule.csv")
                schedule.write_keys(df, d / "keys.csv")
                st = Setup(sc, sc_path, args.seconds, 1.0, 5.0, 1, "model")
                paths = run_live(st, d, log=open("/dev/null", "w"), locust_workers=k)  # noqa: SIM115
                fig = lag_of(paths["client"])
                row["one_process" if k == 0 else f"workers_{k}"] = fig
                print(f"rate {rate:g}/s, {'1 process' if k == 0 else f'{k} workers'}: sent "
                      f"{fig['sent']}, lag p50 {fig['lag_p50_ms']} ms, p99 {fig['lag_p99_ms']} ms, "
                      f"max {fig['lag_max_ms']} ms", file=sys.stderr, flush=True)
            out.append(row)
    print(dumps({"benchmark": "locust_split", "workers": args.workers, "seconds": args.seconds,
                 "runs": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
