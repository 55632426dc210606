"""Command line: `floodgate <command>`. Bad input prints one `error:` line and exits 2."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

from sim.args import Parser, float_in, int_in, seed, size
from sim.errors import InputError, Interrupted
from sim.report.write import check_out


def dumps(obj) -> str:
    from sim.jsonout import dumps as strict

    return strict(obj)


def cmd_run(args) -> int:
    from sim.engine import simulate
    from sim.report.run_report import write_run
    from sim.scenario import load_scenario

    over = {}
    if args.seed is not None:
        over["seed"] = args.seed
    if args.horizon is not None:
        over["horizon"] = args.horizon
    sc = load_scenario(args.scenario, over, args.set)
    if args.check_cell is not None:
        _check_budget(args, sc)
        return _check_cell(sc, args)
    out = check_out(args.out if args.out is not None else Path("out") / sc.name)
    _check_budget(args, sc)
    t0 = time.perf_counter()
    run = simulate(sc, progress=not args.quiet, threads=True)  # one run: use a second core
    wall = time.perf_counter() - t0
    from sim.cell import regime

    cell = regime(sc, run.demand, run.pools)
    for w in cell["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    summary = write_run(run, out, {"cell": cell} if sc.cell_fraction < 1 else None)
    offered = sum(t["offered"] for t in summary["tiers"].values())
    print(f"wrote {out}/ ({offered:,} requests simulated in {wall:.1f} s)", file=sys.stderr)
    if args.json:
        print(dumps({"out": str(out), "wall_s": round(wall, 3), **summary["money"],
                          "tiers": {k: {"p95_s": v["latency_s"]["p95"], "slo_met": v["slo_met"]}
                                    for k, v in summary["tiers"].items()}}))
    return 0


def _check_cell(sc, args) -> int:
    from sim.cell import check_cell

    f = sc.cell_fraction
    other = args.check_cell or (min(1.0, 10 * f) if f < 1 else 0.1)
    if not 0 < other <= 1:
        raise InputError("--check-cell", str(other), "must be in (0, 1]")
    res = check_cell(sc, other)
    print(f"{'figure':<24} {'cell ' + format(f, 'g'):>14} {'cell ' + format(other, 'g'):>14} {'rel diff':>9}")
    for r in res["figures"]:
        print(f"{r['figure']:<24} {r['cell']:>14,.6g} {r['other']:>14,.6g} {r['rel_diff']:>+9.2%}")
    if args.json:
        print(dumps(res))
    return 0


def cmd_plan(args) -> int:
    from sim.planner import parse_slo, run_plan
    from sim.report.plan_report import markdown, write_plan
    from sim.scenario import _duration, load_scenario
    from sim.sweep import Executor

    sc = load_scenario(args.scenario, sets=args.set)
    _check_budget(args, sc, copies=args.jobs or os.cpu_count() or 1)
    slos = [parse_slo(s, sc) for s in args.slo] or [
        parse_slo(f"{t.name}:p95<={t.slo_s}s", sc) for t in sc.tiers]
    window = None
    if args.window:
        try:
            a, b = (float(_duration(x)) for x in args.window.split(":"))
        except ValueError:
            raise InputError("--window", args.window, "expected FROM:UNTIL, e.g. 144h:168h") from None
        if not 0 <= a < b:
            raise InputError("--window", args.window, "needs 0 <= FROM < UNTIL")
        window = (a, b)
    warm = None
    if args.warm is not None:
        if window is None:
            raise InputError("--warm", args.warm, "needs --window (runs start that long before it)")
        try:
            warm = float(_duration(args.warm))
        except ValueError:
            raise InputError("--warm", args.warm, "expected a duration, e.g. 2h") from None
        if warm < 0:
            raise InputError("--warm", args.warm, "must not be negative")
    if args.step is not None and args.step < 1:
        raise InputError("--step", str(args.step), "must be at least 1")
    if args.reps < 1:
        raise InputError("--reps", str(args.reps), "must be at least 1")
    out = check_out(args.out if args.out is not None else Path("out") / sc.name / "plan")
    with Executor(args.jobs, args.cluster, progress=not args.quiet) as ex:
        known = {q.policy for q in sc.policies}
        for w in args.without:
            if w not in known:
                raise InputError("--without", w, f"no such policy in the scenario; it has {', '.join(sorted(known)) or 'none'}")
        if args.mix:  # GPU types x purchase options (sim/mix.py)
            if args.forecast:
                raise InputError("--mix", "--forecast", "plan one or the other")
            from sim.mix import run_mix
            from sim.planner import Plan
            from sim.report.plan_report import mix_markdown, write_mix

            res = run_mix(Plan(sc, slos, args.reps, ex, window, tuple(args.without), warm, args.step))
            write_mix(res, out)
            if args.json:
                line = {k: res[k] for k in ("mix", "cost_per_day", "single_type_cost_per_day",
                                            "evaluations", "cost_band_per_day", "gpus", "single_type")}
                line["types"] = {t: v["options"] for t, v in res["types"].items() if v["gpus"]}
                print(dumps(line))
            else:
                print(mix_markdown(res))
            return 0
        if args.forecast:  # the fit's point estimate, and its draws at --quantile
            from sim.fit.cli import plan_forecast

            res = plan_forecast(args, sc, slos, ex, window, warm)
        else:
            _, res = run_plan(sc, slos, args.reps, ex, window, tuple(args.without), warm, args.step)
    write_plan(res, out)
    if args.json:
        print(dumps({k: res[k] for k in ("min_gpus", "ci_low", "ci_high", "gpu_cost_per_day",
                                          "evaluations", "replications", "pools", "pools_band", "forecast")
                     if k in res}))
    else:
        print(markdown(res))
    return 0


def cmd_compare(args) -> int:
    from sim.report.compare_report import markdown, write_compare
    from sim.scenario import load_scenario
    from sim.sweep import Executor
    from sim.variants import load_variant, run_compare

    sc = load_scenario(args.scenario, sets=args.set)
    extra = [load_variant(v) for v in args.variant]
    if not sc.variants and not extra:
        raise InputError(sc.source, "variants", "nothing to compare: give --variant NAME=FILE or a variants: section")
    over = {}
    if args.horizon:
        over["horizon"] = args.horizon
    if over:
        sc = load_scenario(args.scenario, over, args.set)
    from sim.scenario import parse_scenario
    from sim.variants import variant_dicts

    for name, d in variant_dicts(sc, extra).items():
        _check_budget(args, parse_scenario(d, f"{sc.source} (variant {name})"),
                      copies=args.jobs or os.cpu_count() or 1)
    if args.forecast:
        from sim.fit.cli import forecast_scenario

        sc = forecast_scenario(sc, args.forecast, args.quantile)
    out = check_out(args.out if args.out is not None else Path("out") / sc.name / "compare")
    with Executor(args.jobs, args.cluster, progress=not args.quiet) as ex:
        res, series = run_compare(sc, extra, ex)
    write_compare(res, series, [t.name for t in sc.tiers], [t.slo_s for t in sc.tiers], out)
    if args.json:
        print(dumps({"out": str(out), "seed": res["seed"], "variants": {
            n: {"gpu_cost": v["gpu_cost"], "revenue": v["revenue"], "utilization": v["utilization"],
                "tiers": {t: {"p95_s": x["p95_s"], "goodput": x["goodput"],
                              "rejected": sum(x["rejected"].values())}
                          for t, x in v["tiers"].items()}}
            for n, v in res["variants"].items()}}))
    else:
        print(markdown(res))
    print(f"wrote {out}/", file=sys.stderr)
    return 0


def cmd_check(args) -> int:
    from sim.check import check_file

    bad = 0
    for path in args.scenario:
        lines, sc = check_file(path, args.variant)
        for line in lines:
            print(line, file=sys.stderr)
        if lines:
            bad += 1
        elif sc is None:  # a profile
            print(f"{path}: ok: a floodgate.profile/1 calibration profile")
        else:
            pools = ", ".join(f"{p.name} ({p.gpus:,} GPUs)" for p in sc.fleet.pools)
            print(f"{path}: ok: {sc.name}, {len(sc.tiers)} tiers, {len(sc.policies)} policies, "
                  f"fleet {pools}")
    return 2 if bad else 0


def cmd_schema(args) -> int:
    import json

    if args.profile:
        from sim.fleet.cost import profile_schema

        sch = profile_schema()
    else:
        from sim.scenario import json_schema

        sch = json_schema()
    print(json.dumps(sch, indent=1, sort_keys=False))
    return 0


def cmd_init(args) -> int:
    from sim.examples import example_path, list_examples
    from sim.report.write import write_file

    src = example_path(args.example)
    if src is None:
        names = list_examples()
        raise InputError("--example", args.example,
                         f"no such example; there are: {', '.join(names) or 'none in this install'}")
    d = Path(args.dir)
    if d.exists() and not d.is_dir():
        raise InputError("DIR", args.dir, "exists and is not a folder")
    dest = d / "scenario.yaml"
    if dest.exists() or dest.is_symlink():
        raise InputError("DIR", args.dir, "already holds a scenario.yaml; it is left as it is")
    try:
        write_file(dest, src.read_bytes())
    except OSError as e:
        raise InputError("DIR", args.dir, f"cannot write: {e.strerror}") from None
    print(f"wrote {dest} (from the {args.example} example); run it with: floodgate run {dest}",
          file=sys.stderr)
    return 0


# Which extra brings which import: a missing one is a one-line hint, not a traceback.
EXTRAS = {"fastapi": "serve", "uvicorn": "serve", "httpx": "serve", "locust": "serve",
          "starlette": "serve", "redis": "serve", "dask": "cluster", "distributed": "cluster",
          "optuna": "search", "SALib": "search", "pyarrow": "search",
          "torch": "calibrate", "diffusers": "calibrate", "transformers": "calibrate"}


EPILOG = """exit codes: 0 done; 1 validate: the live stack failed; 2 bad input (one line: error:
FILE[:LINE:COL]: FIELD: WHAT; check lists every one); 3 no answer within bounds (plan: no fleet
size meets an SLO); 130/143 interrupted (nothing written)"""


def _check_budget(args, sc, copies: int = 1) -> None:
    """Refuse a run above --max-requests / --max-memory before it starts (sim/budget.py);
    with progress on, say what it will take."""
    from sim.budget import check

    e = check(sc, args.max_requests, args.max_memory, copies)
    if not getattr(args, "quiet", False):
        print(e.line(sc.name), file=sys.stderr)


def _budget_flags(p) -> None:
    p.add_argument("--max-requests", type=float_in(1, 1e15), metavar="N",
                   help="refuse a run estimated above N requests of work (default 1e9)")
    p.add_argument("--max-memory", type=size, metavar="SIZE",
                   help="refuse a run estimated above SIZE of arrays, e.g. 16G (default: half the RAM)")


def build_parser(argv: list[str] | None = None) -> Parser:
    from sim import __version__

    ap = Parser(prog="floodgate", description="Capacity and rate-limit simulator for image-generation surges.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"floodgate {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    i = sub.add_parser("init", help="write DIR/scenario.yaml from an example to start from",
                       description="Write DIR/scenario.yaml, a runnable copy of a shipped example "
                       "(its profiles resolve from the package). Example: floodgate init my-surge")
    i.add_argument("dir", metavar="DIR")
    i.add_argument("--example", default="ghibli_2025",
                   help="example name (default ghibli_2025; e.g. policies/token_bucket)")
    i.set_defaults(func=cmd_init)
    k = sub.add_parser("check", help="validate scenarios (or .json profiles) without running them: "
                       "every problem, each with its line and column",
                       description="Validate scenario files (and the profiles, trace and variants "
                       "they name) without running them. Every problem is one line "
                       "`error: FILE:LINE:COL: FIELD: WHAT`; exit 2 if any, 0 if none. "
                       "Example: floodgate check scenarios/ghibli_2025.yaml")
    k.add_argument("scenario", nargs="+")
    k.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES.yaml",
                   help="also check these overrides merged in, as compare --variant (repeatable)")
    k.set_defaults(func=cmd_check)
    m = sub.add_parser("schema", help="print the scenario JSON Schema (for editors)",
                       description="Print the JSON Schema of scenario files, from the same "
                       "pydantic models `check` and `run` validate with. Example: floodgate "
                       "schema > floodgate.schema.json")
    m.add_argument("--profile", action="store_true",
                   help="the schema of calibration profiles (floodgate.profile/1) instead")
    m.set_defaults(func=cmd_schema)
    r = sub.add_parser("run", help="simulate a scenario and write its report")
    r.add_argument("scenario")
    r.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="change one field, e.g. fleet.pools.h100.gpus=900 or policies.daily_quota.limit=5 (repeatable)")
    r.add_argument("--out", help="output folder (default out/<scenario name>)")
    r.add_argument("--seed", type=seed, help="override the seed (0..2**63-1)")
    r.add_argument("--horizon", help="override the horizon, e.g. 6h")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--json", action="store_true", help="print a JSON line of headline figures")
    _budget_flags(r)
    r.add_argument("--check-cell", type=float_in(0, 1, low_open=True), nargs="?", const=0.0, default=None, metavar="F",
                   help="run at the scenario's cell size and at F (default 10x, at most 1) on "
                        "common random numbers and print the difference of the headline figures")
    r.set_defaults(func=cmd_run)
    p = sub.add_parser("plan", help="smallest fleet that meets every tier's SLO")
    p.add_argument("scenario")
    p.add_argument("--slo", action="append", default=[], help="TIER:p95<=60s (repeatable; default: each tier's slo_s on p95)")
    p.add_argument("--reps", type=int_in(1, 1000), default=3, help="replications per fleet size (common random numbers)")
    p.add_argument("--window", help="judge SLOs over FROM:UNTIL of the curve only, e.g. 144h:168h")
    p.add_argument("--step", type=int_in(1, 10**6), help="GPUs between fleet sizes judged (default: a power of "
                   "ten near 2%% of the scenario's fleet, at least one GPU of the cell)")
    p.add_argument("--warm", help="start each run this long before the window with an empty "
                   "system (e.g. 2h) instead of simulating everything before it")
    p.add_argument("--without", action="append", default=[], help="leave a policy out, e.g. shed_reserve (repeatable)")
    p.add_argument("--jobs", type=int_in(1, 1024), help="local worker processes (default: all cores)")
    p.add_argument("--cluster", help="Dask scheduler tcp://HOST:PORT, or 'local' for a LocalCluster")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="change one field, e.g. fleet.pools.h100.gpus=900 or policies.daily_quota.limit=5 (repeatable)")
    p.add_argument("--forecast", metavar="FIT_DIR", help="plan for the demand fitted by `floodgate fit`")
    p.add_argument("--quantile", type=float, default=0.9, help="with --forecast: the share of draws to cover")
    p.add_argument("--draws", type=int, default=8, help="with --forecast: demand draws to plan for")
    p.add_argument("--mix", action="store_true", help="cheapest GPUs per GPU type (pools alike but for "
                   "region, split by their sizes) and purchase option (reserved, on demand, spot within "
                   "each pool's purchase caps) meeting the SLOs")
    p.add_argument("--out", help="output folder (default out/<scenario>/plan)")
    p.add_argument("--json", action="store_true", help="print one JSON line of the result last")
    p.add_argument("--quiet", action="store_true")
    _budget_flags(p)
    p.set_defaults(func=cmd_plan)
    c = sub.add_parser("compare", help="policy variants side by side on the same random numbers")
    c.add_argument("scenario")
    c.add_argument("--variant", action="append", default=[], help="NAME=OVERRIDES.yaml (repeatable)")
    c.add_argument("--horizon", help="override the horizon of every variant, e.g. 2d")
    c.add_argument("--jobs", type=int_in(1, 1024), help="local worker processes (default: all cores)")
    c.add_argument("--cluster", help="Dask scheduler tcp://HOST:PORT, or 'local'")
    c.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="change one field, e.g. fleet.pools.h100.gpus=900 or policies.daily_quota.limit=5 (repeatable)")
    c.add_argument("--forecast", metavar="FIT_DIR", help="compare on the demand fitted by `floodgate fit`")
    c.add_argument("--quantile", type=float, help="with --forecast: the draw at this quantile of the "
                   "peak rate instead of the point estimate")
    c.add_argument("--out", help="output folder (default out/<scenario>/compare)")
    c.add_argument("--json", action="store_true", help="print one JSON line of each variant's headline figures instead of the table")
    c.add_argument("--quiet", action="store_true")
    _budget_flags(c)
    c.set_defaults(func=cmd_compare)
    # The other commands' modules import numpy, pandas, numba or pydantic: only the one whose
    # command is invoked is imported (`floodgate --help` lists the rest from COMMANDS).
    wanted = _command(argv, sub.choices)
    done: set[str] = set()
    for name, (module, summary) in COMMANDS.items():
        if name in done or name in sub.choices:
            continue
        if wanted in (None, "help") or COMMANDS.get(wanted, (None,))[0] != module:
            sub.add_parser(name, help=summary, add_help=False)
            continue
        importlib.import_module(module).add_parsers(_Summaries(sub))
        done.update(n for n, (m, _) in COMMANDS.items() if m == module)
    return ap


# command -> (module whose add_parsers defines it, the one-line summary `--help` lists).
COMMANDS: dict[str, tuple[str, str]] = {
    "demand": ("sim.demand.cli", "the demand of a scenario alone: adoption, load, peaks"),
    "fit": ("sim.fit.cli", "fit the demand to counts observed so far, and forecast"),
    "sweep": ("sim.search.cli", "grid of policy or fleet values, each cell replicated on "
              "common random numbers"),
    "optimize": ("sim.search.cli", "search policy parameters for the best objective under "
                 "constraints (Optuna)"),
    "sensitivity": ("sim.search.cli", "which uncertain inputs move the answer most (Morris or Sobol, SALib)"),
    "calibrate": ("sim.calibration.cli", "time the diffusion kernels on this machine and write "
                  "a profile"),
    "profiles": ("sim.calibration.cli", "list calibration profiles with images/s at the best batch"),
    "serve": ("sim.live.cli", "run the scenario's policies as a live HTTP gateway"),
    "validate": ("sim.live.cli", "the simulator against a live gateway driven by Locust"),
}


# command -> an example its --help ends with (where its module's description has none)
EXAMPLES: dict[str, str] = {
    "demand": "floodgate demand scenarios/ghibli_2025.yaml --plot demand.png",
    "fit": "floodgate fit observed.csv --scenario scenarios/ghibli_2025.yaml --until 150h",
    "calibrate": "floodgate calibrate --device cpu --quick --out my-card.json",
    "profiles": "floodgate profiles",
    "serve": "floodgate serve scenarios/validation_small.yaml --port 8000",
    "validate": "floodgate validate scenarios/validation_small.yaml --json --check",
}


def _command(argv: list[str] | None, builtin) -> str | None:
    """The command named on the command line (the first word that is one), or None."""
    for a in sys.argv[1:] if argv is None else argv:
        if a == "--":
            return None
        if a in COMMANDS or a in builtin:
            return a
    return None


class _Summaries:
    """The subparsers object handed to a command module: each command's summary is COMMANDS'
    (one definition), whatever the module passes."""

    def __init__(self, sub):
        self._sub = sub

    def add_parser(self, name: str, **kw):
        kw["help"] = COMMANDS[name][1]
        kw.setdefault("description", COMMANDS[name][1][:1].upper() + COMMANDS[name][1][1:] + ".")
        if name in EXAMPLES and "Example" not in kw["description"]:
            kw.setdefault("epilog", f"Example: {EXAMPLES[name]}")
        return self._sub.add_parser(name, **kw)


def _on_sigterm(signum, frame):
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as e:  # a usage error (one line, sim.args.Parser), --help or --version
        return e.code if isinstance(e.code, int) else 2
    # SIGTERM unwinds like Ctrl-C, so temporary output folders are removed on the way out
    # (`serve` installs uvicorn's own handlers when it starts).
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except InputError as e:
        print(e.one_line(), file=sys.stderr)
        return e.exit_code
    except ModuleNotFoundError as e:
        extra = EXTRAS.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"error: floodgate {args.command} needs: pip install 'floodgate[{extra}]' "
              f"({e.name} is not installed)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("interrupted: nothing written", file=sys.stderr)
        return 128 + getattr(e, "signum", signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
