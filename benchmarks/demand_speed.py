"""Demand-generation throughput: requests generated per second of wall time, and peak memory.

    .venv/bin/python benchmarks/demand_speed.py [--scenario FILE] [--cell-fraction F] [--days D]

Generates the scenario's demand chunk by chunk exactly as a run does (same chunk grid and
seeds), counting and dropping each chunk: memory must stay flat however many requests go by.
The default is the Ghibli scenario for its first 8 days at cell_fraction 0.25 (~175M
requests, a quarter of the whole service). The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.demand import build_demand  # noqa: E402
from sim.scenario import load_scenario  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default=str(ROOT / "scenarios/ghibli_2025.yaml"))
    ap.add_argument("--cell-fraction", type=float, default=0.25)
    ap.add_argument("--days", type=float, default=8.0)
    args = ap.parse_args()
    span = args.days * 86400.0
    sc = load_scenario(args.scenario, {"cell_fraction": args.cell_fraction, "horizon": span})
    tracemalloc.start()
    t_build = time.perf_counter()
    model = build_demand(sc)
    t0 = time.perf_counter()
    n, k, c = 0, 0, sc.chunk_s
    biggest = 0
    marks = []
    while k * c < span:
        a = model.generate(k * c, min((k + 1) * c, span), np.random.default_rng([sc.seed, 1, k]))
        n += len(a)
        biggest = max(biggest, len(a))
        k += 1
        if k % max(1, int(span / c / 8)) == 0:
            marks.append(tracemalloc.get_traced_memory()[0])
    wall = time.perf_counter() - t0
    cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {
        "scenario": sc.name, "model": sc.demand.model, "cell_fraction": sc.cell_fraction,
        "days": args.days, "chunks": k, "requests": n, "largest_chunk": biggest,
        "build_s": round(t0 - t_build, 3), "wall_s": round(wall, 3),
        "requests_per_s": round(n / wall), "peak_traced_mb": round(peak / 2**20, 1),
        "traced_mb_through_run": [round(m / 2**20, 1) for m in marks],
        "max_rss_mb": round(rss, 1),
    }
    print(f"{n:,} requests in {wall:.1f} s: {n / wall:,.0f} requests/s; peak traced memory "
          f"{peak / 2**20:.0f} MiB (flat through the run: {out['traced_mb_through_run']}), "
          f"max RSS {rss:.0f} MiB")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
