"""`floodgate sweep | optimize | sensitivity`: policy search on common random numbers.

Bad input is one `error:` line naming the flag (exit 2); `--json` prints one JSON line last.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sim.errors import InputError
from sim.report.write import check_out


def _common(p) -> None:
    p.add_argument("scenario")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="change one field for every point, e.g. horizon=1d (repeatable)")
    p.add_argument("--reps", type=int, default=3,
                   help="replications per point, seeds seed..seed+R-1 at every point (default 3)")
    p.add_argument("--jobs", type=int, help="local worker processes (default: all cores)")
    p.add_argument("--cluster", help="Dask scheduler tcp://HOST:PORT, or 'local' for a LocalCluster")
    p.add_argument("--out", help="output folder (default out/<scenario>/<command>)")
    p.add_argument("--json", action="store_true", help="print one JSON line of the result last")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _judging(p, multi: bool) -> None:
    p.add_argument("--constraint", action="append", default=[], metavar="C",
                   help="TIER:p95<=60s (plan's SLO syntax), TIER:rejected<=10%%, "
                   "TIER:rejected.shed<=0.2 or METRIC<=X (repeatable)")
    p.add_argument("--objective", action="append" if multi else "store",
                   default=[] if multi else None,
                   help=("one or two (repeat for a Pareto front): " if multi else "")
                   + "revenue_minus_gpu_cost, free_goodput, served_images, gpu_cost, "
                   "or max:METRIC / min:METRIC")


def _reps(n: int) -> int:
    if n < 1:
        raise InputError("--reps", str(n), "must be at least 1")
    return n


def cmd_sweep(args) -> int:
    from sim.search.metrics import metric_names, parse_constraints, parse_objective
    from sim.search.report import write_sweep
    from sim.search.space import load_base, parse_grid
    from sim.search.sweep import run_sweep
    from sim.sweep import Executor

    base = load_base(args.scenario, args.set)
    if not args.grid:
        raise InputError("--grid", "(none)", "give at least one --grid PATH=VALUES")
    axes = [parse_grid(g, base) for g in args.grid]
    if len({a.path for a in axes}) != len(axes):
        raise InputError("--grid", args.grid[-1], "a path appears twice")
    names = metric_names(base.sc)
    cons = [c for t in args.constraint for c in parse_constraints(t, base.sc, names)]
    obj = parse_objective(args.objective, names) if args.objective else None
    reps = _reps(args.reps)
    out = check_out(args.out if args.out is not None else Path("out") / base.sc.name / "sweep")
    with Executor(args.jobs, args.cluster, progress=not args.quiet) as ex:
        res = run_sweep(base, axes, reps, ex, cons, obj)
    write_sweep(res, out)
    print(f"wrote {out}/ ({len(res.points)} cells x {reps} replications)", file=sys.stderr)
    if args.json:
        print(json.dumps(res.headline()))
    else:
        print(res.cells.to_string(index=False))
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("sweep", help="grid of policy or fleet values, each cell replicated on "
                       "common random numbers",
                       description="Run every cell of a grid R times on the same seeds; write a "
                       "tidy table (CSV, Parquet), heatmaps or line plots with 95%% bands, and "
                       "report.html. Example: floodgate sweep S --grid "
                       "policies.daily_quota.limit=1,3,5,10 --grid fleet.pools.h100.gpus=900:1500:100")
    _common(s)
    s.add_argument("--grid", action="append", default=[], metavar="PATH=VALUES",
                   help="values as a list (1,3,5,10) or LOW:HIGH:STEP (900:1500:100) (repeatable)")
    _judging(s, False)
    s.set_defaults(func=cmd_sweep)
