"""`floodgate fit OBSERVED --scenario S`: fit the demand to the counts so far, and forecast."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cmd_fit(args) -> int:
    from sim.errors import InputError
    from sim.fit.fit import check_prior, fit, parse_prior
    from sim.fit.forecast import forecast
    from sim.fit.model import catalogue
    from sim.fit.observed import read_observed
    from sim.fit.report import write_fit
    from sim.report.write import check_out
    from sim.scenario import _duration, load_scenario

    sc = load_scenario(args.scenario)
    if args.arrivals:
        return _fit_arrivals(args, sc)
    obs = read_observed(args.observed, [t.name for t in sc.tiers], sc.epoch)
    until = None
    if args.until is not None:
        try:
            until = float(_duration(args.until))
        except ValueError:
            raise InputError("--until", args.until, "not a duration (e.g. 36h)") from None
        if until <= obs.start:
            raise InputError("--until", args.until, f"before the first observation ({obs.start / 3600:g} h)")
    for name in ("boot", "starts"):
        if getattr(args, name) < 0:
            raise InputError(f"--{name}", str(getattr(args, name)), "must be >= 0")
    prior = dict(parse_prior(t) for t in args.prior)
    check_prior(catalogue(sc), prior)
    out = check_out(args.out if args.out is not None else Path("out") / sc.name / "fit")
    f = fit(sc, obs, until, starts=args.starts, boot=args.boot, seed=args.seed,
            progress=not args.quiet, prior=prior)
    fc = forecast(f, seed=args.seed)
    res = write_fit(f, fc, out)
    for w in f.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not args.json:
        for k, v in res["parameters"].items():
            iv = (f"[{v['low_90']:.4g}, {v['high_90']:.4g}]" if "low_90" in v else
                  f"held ({v['reason']})")
            print(f"{k:32s} {v['estimate']:12.4g}  {iv}")
        for k, v in fc["totals"].items():
            print(f"{k:32s} {v['estimate']:14,.0f}  90%: {v.get('p5', float('nan')):,.0f}"
                  f" - {v.get('p95', float('nan')):,.0f}")
    print(f"wrote {out}/", file=sys.stderr)
    print(json.dumps({"out": str(out), "loglik": round(res["loglik"], 3),
                      "window_s": res["window_s"], "warnings": len(f.warnings),
                      **{k: round(v["estimate"]) for k, v in fc["totals"].items()}}))
    return 0


def _fit_arrivals(args, sc) -> int:
    """`fit --arrivals`: self-excitation and diurnal amplitude from a trace's arrival times."""
    from sim.fit.hawkes import fit_trace, read_arrivals, write_trace_fit
    from sim.report.write import check_out

    out = check_out(args.out if args.out is not None else Path("out") / sc.name / "fit")
    tr = read_arrivals(args.observed, args.column)
    tf = fit_trace(sc, tr, starts=args.starts, seed=args.seed)
    res = write_trace_fit(sc, tr, tf, out)
    if not args.json:
        for k, v in res["parameters"].items():
            iv = (f"[{v['low_90']:.4g}, {v['high_90']:.4g}]" if "low_90" in v else
                  f"held ({v['reason']})")
            print(f"{k:32s} {v['estimate']:12.4g}  {iv}")
    print(f"wrote {out}/", file=sys.stderr)
    print(json.dumps({"out": str(out), "events": tf.n_events, "loglik": round(tf.loglik, 3),
                      **{k: round(v["estimate"], 6) for k, v in res["parameters"].items()
                         if v["status"] == "estimated"}}))
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("fit",)
    p.add_argument("observed", help="CSV: t (or timestamp), new_users, requests, "
                   "requests_<tier>, cumulative_users")
    p.add_argument("--scenario", required=True, help="scenario whose demand model is fitted")
    p.add_argument("--until", help="use data up to this time only, e.g. 36h")
    p.add_argument("--out", help="output folder (default out/<scenario>/fit)")
    p.add_argument("--boot", type=int, default=40, help="parametric bootstrap refits (default 40)")
    p.add_argument("--starts", type=int, default=3, help="random starts besides the scenario's values")
    p.add_argument("--prior", action="append", default=[], metavar="PATH=LOW:HIGH[:log]",
                   help="range of a demand parameter (e.g. sessions.repeat=0.5:2): if the fit holds "
                   "it (not identified, or a wave not begun), each bootstrap draw takes it from "
                   "this range (uniform, or log-uniform) so the intervals carry that uncertainty")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arrivals", action="store_true", help="OBSERVED is a trace of arrival "
                   "times (e.g. sim/data/traces/*.csv): fit self-excitation and diurnal amplitude")
    p.add_argument("--column", default="TIMESTAMP", help="with --arrivals: the timestamp column")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_fit)


def _check_quantile(q) -> None:
    from sim.errors import InputError

    if q is not None and not 0 < q < 1:
        raise InputError("--quantile", str(q), "must be between 0 and 1")


def plan_forecast(args, sc, slos, ex, window, warm_s=None) -> dict:
    """`plan --forecast`: the plan on the fit's point estimate, with the size that meets the
    SLOs in a share --quantile of --draws demand draws beside it (see sim.planner.plan_over_draws;
    per pool when the pools serve different classes: plan_pools_over_draws)."""
    from sim.errors import InputError
    from sim.fit.draws import load_fit, point, stratified
    from sim.planner import plan_over_draws, plan_pools_over_draws, run_plan, serve_different

    _check_quantile(args.quantile)
    if args.draws < 1:
        raise InputError("--draws", str(args.draws), "must be at least 1")
    fres = load_fit(args.forecast, sc)
    draws = stratified(sc, fres, args.draws, window)
    step = getattr(args, "step", None)
    est = point(sc, fres)
    _, res = run_plan(est, slos, args.reps, ex, window, tuple(args.without), warm_s, step)
    if serve_different(est):  # each pool sized to its own classes' load, draw by draw
        fc = plan_pools_over_draws(draws, slos, args.reps, ex, args.quantile, window,
                                   tuple(args.without), warm_s=warm_s, step=step)
    else:
        fc = plan_over_draws(draws, slos, args.reps, ex, args.quantile, window, tuple(args.without),
                             start=res["min_gpus"], warm_s=warm_s, step=step)
    res["forecast"] = {"fit": str(args.forecast), "fit_window_s": fres["window_s"], **fc}
    return res


def forecast_scenario(sc, fit_dir, quantile):
    """`compare --forecast`: the scenario with the fitted demand (point estimate, or the draw
    at `quantile` of the peak request rate)."""
    from sim.fit.draws import load_fit, point, stratified

    _check_quantile(quantile)
    fres = load_fit(fit_dir, sc)
    return point(sc, fres) if quantile is None else stratified(sc, fres, 1, None, quantile)[0]
