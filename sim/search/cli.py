"""`floodgate sweep | optimize | sensitivity`: policy search on common random numbers.

Bad input is one `error:` line naming the flag (exit 2); `--json` prints one JSON line last.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sim.errors import InputError
from sim.jsonout import dumps
from sim.report.write import check_out


def _common(p) -> None:
    p.add_argument("scenario")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="change one field for every point, e.g. horizon=1d (repeatable)")
    p.add_argument("--warm", metavar="D", help="start each run D before outputs.warmup_s with an "
                   "empty system instead of simulating all before it (as plan --warm), e.g. 2h")
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


def _warm(text: str | None) -> float | None:
    if text is None:
        return None
    from sim.scenario import _duration

    try:
        v = float(_duration(text))
    except (ValueError, TypeError):
        raise InputError("--warm", text, "expected a duration, e.g. 2h") from None
    if not 0 <= v < float("inf"):
        raise InputError("--warm", text, "must be a finite duration of at least 0")
    return v


def _reps(n: int) -> int:
    if n < 1:
        raise InputError("--reps", str(n), "must be at least 1")
    return n


def cmd_sweep(args) -> int:
    import pyarrow  # noqa: F401  (the Parquet table; missing: one line naming the extra, before any run)

    from sim.search.metrics import metric_names, parse_constraints, parse_objective
    from sim.search.report import write_sweep
    from sim.search.space import load_base, parse_grid
    from sim.search.sweep import run_sweep
    from sim.sweep import Executor

    base = load_base(args.scenario, args.set, warm_s=_warm(args.warm))
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
        print(dumps(res.headline()))
    else:
        print(res.cells.to_string(index=False))
    return 0


def cmd_optimize(args) -> int:
    import shutil
    import tempfile

    from sim.search.metrics import metric_names, parse_constraints, parse_objective
    from sim.search.optimize import run_optimize
    from sim.search.report import write_optimize
    from sim.search.space import load_base, parse_param
    from sim.sweep import Executor

    base = load_base(args.scenario, args.set, warm_s=_warm(args.warm))
    if not args.param:
        raise InputError("--param", "(none)", "give at least one --param PATH=LOW:HIGH")
    params = [parse_param(t, base) for t in args.param]
    if len({p.path for p in params}) != len(params):
        raise InputError("--param", args.param[-1], "a path appears twice")
    names = metric_names(base.sc)
    objs = [parse_objective(t, names) for t in (args.objective or ["revenue_minus_gpu_cost"])]
    if len(objs) > 2:
        raise InputError("--objective", args.objective[2], "at most two objectives (a Pareto front)")
    cons = [c for t in args.constraint for c in parse_constraints(t, base.sc, names)]
    reps = _reps(args.reps)
    if args.trials < 1:
        raise InputError("--trials", str(args.trials), "must be at least 1")
    if args.batch < 1:
        raise InputError("--batch", str(args.batch), "must be at least 1")
    out = check_out(args.out if args.out is not None else Path("out") / base.sc.name / "optimize")
    # The study lives in --study FILE when given (updated in place), else in OUT/study.db: it is
    # worked on in a temporary copy and moves into the new output with the rest.
    tmp = None
    if args.study:
        study = Path(args.study)
        if study.exists() and not study.is_file():
            raise InputError("--study", args.study, "is not a file")
        study.parent.mkdir(parents=True, exist_ok=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.study-", suffix=".db", dir=out.parent)
        import os

        os.close(fd)
        tmp = study = Path(name)
        if (out / "study.db").is_file():
            shutil.copyfile(out / "study.db", tmp)
        else:
            tmp.unlink()
    try:
        with Executor(args.jobs, args.cluster, progress=False) as ex:
            res = run_optimize(base, params, objs, cons, reps, args.trials, ex,
                               f"sqlite:///{study.resolve()}", args.batch, args.seed,
                               progress=not args.quiet)
        write_optimize(res, out, study)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    print(f"wrote {out}/ ({len(res.trials)} trials x {reps} replications, "
          f"{res.wall_s:.0f} s)", file=sys.stderr)
    if args.json:
        print(dumps(res.headline()))
    else:
        h = res.headline()
        print("best:", dumps(h["best"]), "value:", h["best_value"], "feasible:", h["feasible"])
    return 0


def cmd_sensitivity(args) -> int:
    from sim.search.metrics import metric_names
    from sim.search.report import ranking, write_sensitivity
    from sim.search.sensitivity import run_sensitivity
    from sim.search.space import load_base, parse_param
    from sim.sweep import Executor

    base = load_base(args.scenario, args.set, warm_s=_warm(args.warm))
    if not args.factor:
        raise InputError("--factor", "(none)", "give at least one --factor PATH=LOW:HIGH")
    factors = [parse_param(t, base, "--factor") for t in args.factor]
    if len({f.path for f in factors}) != len(factors):
        raise InputError("--factor", args.factor[-1], "a path appears twice")
    for f in factors:
        if f.low == f.high:
            raise InputError("--factor", f.text, "LOW equals HIGH: nothing to vary")
    names = metric_names(base.sc)
    metrics = args.metric or [f"{t.name}.p95_s" for t in base.sc.tiers
                              if t.price_per_image > 0] + ["gpu_hours"]
    for m in metrics:
        if m not in names:
            from sim.search.metrics import _near

            raise InputError("--metric", m, f"unknown metric{_near(m, names)}")
    reps = _reps(args.reps)
    if args.samples < 2:
        raise InputError("--samples", str(args.samples), "must be at least 2")
    out = check_out(args.out if args.out is not None else Path("out") / base.sc.name / "sensitivity")
    with Executor(args.jobs, args.cluster, progress=not args.quiet) as ex:
        res = run_sensitivity(base, factors, metrics, args.method, args.samples, reps, ex, args.seed)
    write_sensitivity(res, out)
    print(f"wrote {out}/ ({len(res.points)} points x {reps} replications)", file=sys.stderr)
    if args.json:
        print(dumps({"method": res.method, "points": len(res.points), "reps": reps,
                          "ranking": ranking(res)}))
    else:
        print(res.table.to_string(index=False))
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("sweep",
                       description="Run every cell of a grid R times on the same seeds; write a "
                       "tidy table (CSV, Parquet), heatmaps or line plots with 95%% bands, and "
                       "report.html. Example: floodgate sweep S --grid "
                       "policies.daily_quota.limit=1,3,5,10 --grid fleet.pools.h100.gpus=900:1500:100")
    _common(s)
    s.add_argument("--grid", action="append", default=[], metavar="PATH=VALUES",
                   help="values as a list (1,3,5,10) or LOW:HIGH:STEP (900:1500:100) (repeatable)")
    _judging(s, False)
    s.set_defaults(func=cmd_sweep)
    o = sub.add_parser("optimize",
                       description="Optuna over PATH=LOW:HIGH parameters (TPE for one objective, "
                       "NSGA-II for two), every trial replicated on the same seeds, constraints "
                       "judged on the pessimistic end of the 95%% interval; writes best.yaml (a "
                       "compare --variant), the Pareto front, trials.csv and the study (SQLite, "
                       "resumes). Example: floodgate optimize S --param "
                       "policies.daily_quota.limit=1:20 --objective free_goodput "
                       "--constraint 'plus:p95<=60s' --trials 40")
    _common(o)
    o.add_argument("--param", action="append", default=[], metavar="PATH=LOW:HIGH[:int|:log]",
                   help="a range to search; integer bounds search integers (repeatable)")
    _judging(o, True)
    o.add_argument("--trials", type=int, default=40, help="total trials (a resumed study counts "
                   "the ones it has; default 40)")
    o.add_argument("--batch", type=int, default=4, help="trials asked and run at once (default 4)")
    o.add_argument("--seed", type=int, help="sampler seed (default: the scenario's seed)")
    o.add_argument("--study", help="keep the study in this SQLite file (default OUT/study.db)")
    o.set_defaults(func=cmd_optimize)
    e = sub.add_parser("sensitivity",
                       description="Vary PATH=LOW:HIGH factors over a Morris or Sobol design, "
                       "every point replicated on the same seeds; writes a mu*-sigma chart "
                       "(Morris) or a tornado of Sobol indices and a table with 95%% intervals. "
                       "Example: floodgate sensitivity S --factor demand.social.branching=0.05:0.3 "
                       "--factor demand.retry.probability=0.3:0.9")
    _common(e)
    e.add_argument("--factor", action="append", default=[], metavar="PATH=LOW:HIGH",
                   help="an uncertain input and its range (repeatable)")
    e.add_argument("--method", choices=["morris", "sobol"], default="morris")
    e.add_argument("--samples", type=int, default=10, help="Morris trajectories, or Sobol base "
                   "samples (a power of two) (default 10)")
    e.add_argument("--metric", action="append", default=[], help="output to explain (repeatable; "
                   "default: each paid tier's p95 and gpu_hours)")
    e.add_argument("--seed", type=int, help="design seed (default: the scenario's seed)")
    e.set_defaults(func=cmd_sensitivity)
