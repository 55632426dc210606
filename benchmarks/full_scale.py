"""The whole service: scenarios/ghibli_2025.yaml (cell_fraction 1: ~718M requests from ~130M
users over 8 days) through demand, quotas, shedding, autoscaling and the fleet.

The run happens in a child process, so the peak RSS reported is that run's own
(resource.getrusage of the child), not this script's. Prints figures, then one JSON line:
requests, wall_s, req_per_s, peak_rss_gb (targets on the 2-core CI machine: <= 120 s,
<= 3 GiB), and the headline figures of the run; target and met (each target), and where a
wall-time miss comes from: the child's CPU seconds over this machine's cores (no schedule
beats it: cpu_bound_wall_s) and the fleet loop's seconds on the run's thread (fleet_loop_s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_WALL_S, TARGET_RSS_GB = 120.0, 3.0  # issue #14, on the 2-core CI machine


def child(args) -> None:
    from bench_timing import fleet_loop_timed

    from sim.engine import Run
    from sim.metrics.summary import summarize
    from sim.scenario import load_scenario

    over = {}
    if args.cell_fraction is not None:
        over["cell_fraction"] = args.cell_fraction
    if args.horizon:
        over["horizon"] = args.horizon
    sc = load_scenario(args.scenario, over)
    loop = {"fleet_loop": 0.0}  # wall seconds of the run's thread in the compiled loop
    with fleet_loop_timed(loop, clock=time.perf_counter):
        t0 = time.perf_counter()
        run = Run(sc, progress=args.progress, threads=args.threads).execute()
        wall = time.perf_counter() - t0
    s = summarize(run)
    tiers = s["tiers"]
    print(json.dumps({
        "requests": int(run.offered.sum()), "wall_s": wall, "cell_fraction": sc.cell_fraction,
        "offered": {k: v["offered"] for k, v in tiers.items()},
        "completed": {k: v["completed"] for k, v in tiers.items()},
        "shed": {k: v["rejected"].get("shed", 0) for k, v in tiers.items()},
        "p50_s": {k: v["latency_s"]["p50"] for k, v in tiers.items()},
        "p95_s": {k: v["latency_s"]["p95"] for k, v in tiers.items()},
        "mean_batch": s["fleet"].get("mean_batch_size"),
        "gpu_hours": s["fleet"]["gpu_hours"],
        "fleet_loop_s": round(loop["fleet_loop"], 1),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default=str(ROOT / "scenarios/ghibli_2025.yaml"))
    ap.add_argument("--cell-fraction", type=float, help="override the scenario's (default: as shipped)")
    ap.add_argument("--horizon", help="override the horizon, e.g. 2d")
    ap.add_argument("--threads", action=argparse.BooleanOptionalAction, default=True,
                    help="make first attempts on a second thread, as `floodgate run` does (default)")
    ap.add_argument("--progress", action="store_true", help="progress bar on stderr")
    ap.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    cmd = [sys.executable, __file__, "--child", "--scenario", args.scenario]
    for flag, v in (("--cell-fraction", args.cell_fraction), ("--horizon", args.horizon)):
        if v is not None:
            cmd += [flag, str(v)]
    cmd += ["--threads" if args.threads else "--no-threads"] + ["--progress"] * args.progress
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if p.returncode:
        sys.exit(p.returncode)
    got = json.loads(p.stdout.strip().splitlines()[-1])
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss = ru.ru_maxrss * 1024 / 2**30  # KiB on Linux
    cpu = ru.ru_utime + ru.ru_stime  # of the whole child (start-up and summary included)
    n, wall = got.pop("requests"), got.pop("wall_s")
    print(f"{Path(args.scenario).name} at cell_fraction {got['cell_fraction']}: {n:,} requests "
          f"in {wall:.1f} s ({n / wall:,.0f} req/s), peak RSS {rss:.2f} GiB; the child used "
          f"{cpu:.1f} CPU-s (wall above CPU: other load on the machine)", file=sys.stderr)
    for k in ("offered", "completed", "shed", "p50_s", "p95_s"):
        print(f"  {k:<10} " + "  ".join(f"{t}={v:,}" if isinstance(v, int) else f"{t}={v}"
                                        for t, v in got[k].items()), file=sys.stderr)
    print(f"  mean batch {got['mean_batch']}, GPU-hours {got['gpu_hours']:,}", file=sys.stderr)
    cores = os.cpu_count() or 1
    shipped = (args.cell_fraction is None and args.horizon is None
               and Path(args.scenario).resolve() == ROOT / "scenarios/ghibli_2025.yaml")
    # the targets are the shipped scenario's (the whole service, 8 days); other runs: None
    met = ({"wall_s": wall <= TARGET_WALL_S, "peak_rss_gb": rss <= TARGET_RSS_GB} if shipped
           else None)
    # no schedule of the child's CPU seconds on this machine's cores beats cpu / cores; the
    # fleet loop's seconds run on the run's thread, each window's after the glue that feeds it
    bound = cpu / cores
    if met is not None and not met["wall_s"]:
        print(f"  target {TARGET_WALL_S:.0f} s not met: the child's {cpu:.0f} CPU-s need at least "
              f"{bound:.0f} s on {cores} cores; the fleet loop ran {got['fleet_loop_s']} s of the "
              f"run's thread, in series with the glue that feeds each window", file=sys.stderr)
    print(json.dumps({"requests": n, "wall_s": round(wall, 2), "req_per_s": round(n / wall),
                      "peak_rss_gb": round(rss, 3), "child_cpu_s": round(cpu, 1),
                      "target": {"wall_s": TARGET_WALL_S, "peak_rss_gb": TARGET_RSS_GB},
                      "met": met, "cores": cores, "cpu_bound_wall_s": round(bound, 1), **got}))


if __name__ == "__main__":
    main()
