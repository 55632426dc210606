"""Nowcast backtest: fit the surge's first hours, forecast the rest, and compare with the truth.

    .venv/bin/python benchmarks/nowcast_backtest.py [--surges 50] [--boot 20] [--jobs 2]

Truth: ghibli_2025's own demand realised with its known parameters (sim/fit/synth.py: the
demand generator at `--scale` of the service, first attempts plus the social offspring of
every image, retries and conversion left out since they need a run), counted per hour and
scaled back to the whole service. The fit starts from the scenario's own values (it knows the
model, not the draw); for each cut-off (12 h, 24 h and 48 h after the paid launch at 17 h, the
free opening at 144 h + 6 h and + 24 h) it reports the relative error of the fitted peak new users/hour (over the 8 days),
8-day images and 8-day users against the realised truth, with the forecast's 90% interval.

GPUs, the engine's plan (`--plan-cell`, 0 to skip): `plan` as `make plan` runs it (the peak
day, hours 144-168, each run started 2 h before it, shed_reserve left out, every tier's SLO)
on a cell of the service, once on the scenario itself (the plan made on the truth) and once
on the opening + 6 h fit's point estimate (as `plan --forecast` plans it), common random
numbers; the JSON's gpus_rel_err is this one when it runs.
GPUs, the stand-in (every cut-off, cheap): the fleet that serves the peak hour of the peak day
at full batches, ceil(peak hourly requests/s / images per second of one GPU at its max batch,
from the scenario's profile), fitted against the same figure on the realised truth; the band
is that of the bootstrap draws. No admission policy is applied to either: it compares demand
forecasts in GPUs, not plans.

Calibration: `--surges` synthetic surges with random parameters (two Bass waves starting in
the first 36 h, sessions, novelty, images per session, social branching, diurnal amplitude,
drawn from the ranges in RANGES), each realised, then fitted from a template scenario at the
ranges' centres (with the surge's own launch times) at the cut-offs in CUTS; the share of fits whose 90% interval of the 8-day
images covers the realised total (target 85-95%).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.fit.fit import Prior, fit  # noqa: E402
from sim.fit.forecast import WINDOW, forecast, window_peaks  # noqa: E402
from sim.fit.observed import Observed, Series  # noqa: E402
from sim.fit.synth import realised_counts  # noqa: E402
from sim.scenario import load_scenario, parse_scenario  # noqa: E402

H = 3600.0
PEAK_DAY = (144 * H, 168 * H)
RANGES = {  # synthetic surges: (low, high), log-uniform for the positive scale parameters
    "market0": (2e6, 5e7), "p0": (0.05, 0.5), "q0": (0.5, 2.0), "start1": (6 * H, 36 * H),
    "market1": (2e6, 5e7), "p1": (0.02, 0.3), "q1": (0.3, 1.5),
    "repeat": (0.5, 2.0), "novelty_s": (86400.0, 3 * 86400.0), "images": (1.5, 3.5),
    "branching": (0.0, 0.3), "diurnal_amplitude": (0.1, 0.5),
}
LOG = {"market0", "p0", "q0", "market1", "p1", "q1", "novelty_s"}
PATHS = {"market0": "waves[0].market", "p0": "waves[0].p", "q0": "waves[0].q",
         "market1": "waves[1].market", "p1": "waves[1].p", "q1": "waves[1].q",
         "repeat": "sessions.repeat", "novelty_s": "sessions.novelty_s", "images": "sessions.images",
         "branching": "social.branching", "diurnal_amplitude": "seasonality.diurnal_amplitude"}
CUTS = (60 * H, 108 * H)


def observed(df, until: float | None = None) -> Observed:
    t = df["t"].to_numpy(float)
    m = np.ones(len(t), bool) if until is None else t + H <= until
    s = {k: Series(t[m], t[m] + H, df[k].to_numpy(float)[m]) for k in ("new_users", "requests")}
    return Observed("<realised truth>", s, Series(np.zeros(0), np.zeros(0), np.zeros(0)))


def truth_figures(df) -> dict:
    m = df["t"].to_numpy() < WINDOW
    t = df["t"].to_numpy()
    pk = (t >= PEAK_DAY[0]) & (t < PEAK_DAY[1])
    return {"peak_new_users_per_hour": float(df["new_users"][m].max()),
            "images_8d": float(df["requests"][m].sum()), "users_8d": float(df["new_users"][m].sum()),
            "peak_day_rate": float(df["requests"][pk].max() / H)}


def gpus(rate: float, per_gpu: float) -> int:
    return int(math.ceil(rate / per_gpu))


def per_gpu_rate(sc) -> float:
    from sim.engine import build_pools

    p = build_pools(sc)[0]
    return float(p.cost.images_per_s(p.max_batch))


def backtest(sc, scale: float, boot: int, starts: int, seed: int) -> tuple[list[dict], dict, dict]:
    t0 = time.perf_counter()
    df = realised_counts(sc, scale, WINDOW)
    truth = truth_figures(df)
    ips = per_gpu_rate(sc)
    truth["gpus"] = gpus(truth["peak_day_rate"], ips)
    print(f"truth realised at scale {scale:g} in {time.perf_counter() - t0:.1f} s: "
          f"{truth['images_8d']:,.0f} images, {truth['users_8d']:,.0f} users, peak "
          f"{truth['peak_new_users_per_hour']:,.0f} new users/h, peak-day {truth['peak_day_rate']:,.0f} "
          f"req/s = {truth['gpus']} GPUs at {ips:.3g} images/s each", file=sys.stderr)
    launch, opening = min(w.start for w in sc.demand.waves), sc.demand.waves[-1].start
    cuts = [("launch + 12 h", launch + 12 * H), ("launch + 24 h", launch + 24 * H),
            ("launch + 48 h", launch + 48 * H),
            ("opening + 6 h", opening + 6 * H), ("opening + 24 h", opening + 24 * H)]
    obs = observed(df)
    rows, fits = [], {}
    for name, cut in cuts:
        t1 = time.perf_counter()
        f = fits[name] = fit(sc, obs, cut, starts=starts, boot=boot, seed=seed)
        fc = forecast(f, seed=seed)
        peaks = window_peaks(f, PEAK_DAY)
        g = np.array([gpus(r, ips) for r in peaks])
        row = {"cut": name, "cut_h": cut / H, "fit_s": round(time.perf_counter() - t1, 1),
               "held": len(f.held), "warnings": len(f.warnings)}
        for k in ("peak_new_users_per_hour", "images_8d", "users_8d"):
            v = fc["totals"][k]
            row[k] = v["estimate"]
            row[k + "_p5"], row[k + "_p95"] = v.get("p5"), v.get("p95")
            row[k + "_rel_err"] = v["estimate"] / truth[k] - 1
        row["gpus"] = int(g[0])
        row["gpus_p5"], row["gpus_p95"] = (int(np.percentile(g[1:], 5)), int(np.percentile(g[1:], 95))) \
            if len(g) > 1 else (None, None)
        row["gpus_rel_err"] = g[0] / truth["gpus"] - 1
        rows.append(row)
        print(f"  {name:14s} fitted in {row['fit_s']:.0f} s", file=sys.stderr)
    return rows, truth, fits


def engine_plans(path: str, f, cell: float, reps: int, jobs: int) -> dict:
    """The planner's answer on the truth and on the fit's point estimate (same cell, seeds,
    window and SLOs)."""
    from sim.fit.draws import with_demand
    from sim.planner import parse_slo, run_plan
    from sim.sweep import Executor

    sc = load_scenario(path, sets=[f"cell_fraction={cell:g}"])
    slos = [parse_slo(f"{t.name}:p95<={t.slo_s}s", sc) for t in sc.tiers]
    out = {"cell_fraction": cell, "replications": reps}
    with Executor(jobs, progress=True) as ex:
        for name, s in (("truth", sc), ("fit", with_demand(sc, f.estimate, " (fit)"))):
            t0 = time.perf_counter()
            _, res = run_plan(s, slos, reps, ex, PEAK_DAY, ("shed_reserve",), 2 * H)
            out[name] = {k: res[k] for k in ("min_gpus", "ci_low", "ci_high", "evaluations")}
            out[name]["wall_s"] = round(time.perf_counter() - t0, 1)
            print(f"  engine plan on the {name}: {res['min_gpus']} GPUs [{res['ci_low']}-{res['ci_high']}], "
                  f"{res['evaluations']} sizes in {out[name]['wall_s']:.0f} s", file=sys.stderr)
    out["rel_err"] = out["fit"]["min_gpus"] / out["truth"]["min_gpus"] - 1
    return out


def template(start1: float) -> dict:
    """The synthetic surges' scenario at the centres of RANGES, with the surge's own second
    launch time (a team knows when it launched; wave starts are not fitted)."""
    c = {k: (math.sqrt(a * b) if k in LOG else (a + b) / 2) for k, (a, b) in RANGES.items()}
    return surge_dict({**c, "start1": start1})


def surge_dict(v: dict) -> dict:
    return {
        "name": "synthetic_surge", "seed": 1, "horizon": WINDOW, "chunk_s": 600,
        "start": "2025-03-25T00:00:00Z",
        "demand": {
            "model": "viral", "grid_s": 600,
            "waves": [{"name": "launch", "start": 0, "market": v["market0"], "p": v["p0"], "q": v["q0"]},
                      {"name": "second", "start": v["start1"], "market": v["market1"], "p": v["p1"],
                       "q": v["q1"]}],
            "sessions": {"repeat": v["repeat"], "novelty_s": v["novelty_s"], "images": v["images"],
                         "think_s": 30},
            "seasonality": {"diurnal_amplitude": v["diurnal_amplitude"], "peak_hour": 20,
                            "regions": [{"name": "americas", "share": 0.4, "utc_offset_h": -5},
                                        {"name": "europe", "share": 0.3, "utc_offset_h": 1},
                                        {"name": "asia", "share": 0.3, "utc_offset_h": 8}]},
            "social": {"branching": max(v["branching"], 1e-3), "scale_s": 1200},
        },
        "tiers": [{"name": "free", "share": 1, "priority": 0, "price_per_image": 0, "slo_s": 60}],
        "fleet": {"pools": [{"name": "g", "gpus": 1, "service_time_s": 1.0}]},
    }


def template_prior() -> dict[str, Prior]:
    """RANGES as the fit's prior for the parameters it holds (sim/fit/fit.py step 6): what
    the template's team knows about the surges it may face, the ranges the truth is drawn from."""
    return {PATHS[k]: Prior(max(a, 1e-3) if k == "branching" else a, b, k in LOG)
            for k, (a, b) in RANGES.items() if k in PATHS}


def calibrate_one(args: tuple) -> list[dict]:
    i, boot, users, cuts, use_prior = args
    rng = np.random.default_rng([2025, 15, i])
    v = {}
    for k, (a, b) in RANGES.items():
        v[k] = float(np.exp(rng.uniform(np.log(a), np.log(b))) if k in LOG else rng.uniform(a, b))
    truth_sc = parse_scenario({**surge_dict(v), "seed": 100 + i})
    df = realised_counts(truth_sc, users / (v["market0"] + v["market1"]), WINDOW)
    tr = truth_figures(df)
    sc = parse_scenario(template(v["start1"]))
    obs = observed(df)
    out = []
    for cut in cuts:
        f = fit(sc, obs, cut, starts=1, boot=boot, seed=i, prior=template_prior() if use_prior else None)
        tot = forecast(f, seed=i)["totals"]["images_8d"]
        out.append({"surge": i, "cut_h": cut / H, "truth": tr["images_8d"], "estimate": tot["estimate"],
                    "p5": tot["p5"], "p95": tot["p95"],
                    "covered": bool(tot["p5"] <= tr["images_8d"] <= tot["p95"]),
                    "side": "in" if tot["p5"] <= tr["images_8d"] <= tot["p95"] else
                            ("above" if tr["images_8d"] > tot["p95"] else "below"),
                    "held": sorted(f.held), "drawn": sorted(f.prior),
                    "pre_inflection": any("inflection" in w for w in f.warnings)})
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial share k / n."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return c - h, c + h


def coverage_line(sel: list[dict]) -> str:
    k, n = sum(r["covered"] for r in sel), len(sel)
    lo, hi = wilson(k, n)
    above = sum(r["side"] == "above" for r in sel)
    return (f"{k / n:.1%} of {n} (95% {lo:.0%}-{hi:.0%}); truth above the interval {above}, "
            f"below {n - k - above}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "ghibli_2025.yaml"))
    ap.add_argument("--scale", type=float, default=0.002, help="share of the service realised for the truth")
    ap.add_argument("--boot", type=int, default=20, help="bootstrap refits per fit")
    ap.add_argument("--starts", type=int, default=2)
    ap.add_argument("--surges", type=int, default=50, help="synthetic surges for the calibration")
    ap.add_argument("--users", type=float, default=2e5, help="users realised per synthetic surge")
    ap.add_argument("--cuts", default=",".join(f"{c / H:g}" for c in CUTS),
                    help="calibration cut-offs, hours (comma-separated)")
    ap.add_argument("--no-prior", action="store_true", help="calibration fits hold unidentified "
                    "parameters at the template's values in the bootstrap too (no prior ranges)")
    ap.add_argument("--plan-cell", type=float, default=0.02, help="cell of the service the engine "
                    "plans on (0: skip the engine plan, report only the stand-in)")
    ap.add_argument("--plan-reps", type=int, default=1, help="replications per size in the engine plan")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--figure", default=str(ROOT / "out" / "backtest" / "gpus_vs_hours.png"))
    a = ap.parse_args()
    cuts = tuple(float(c) * H for c in a.cuts.split(","))
    t0 = time.perf_counter()
    sc = load_scenario(a.scenario)
    rows, truth, fits = backtest(sc, a.scale, a.boot, a.starts, 0)
    plans = engine_plans(a.scenario, fits["opening + 6 h"], a.plan_cell, a.plan_reps, a.jobs) \
        if a.plan_cell > 0 else None
    print(f"\nBacktest on {sc.name} (truth: {truth['images_8d'] / 1e6:,.1f}M images, "
          f"{truth['users_8d'] / 1e6:,.1f}M users, peak {truth['peak_new_users_per_hour'] / 1e3:,.0f}K "
          f"new users/h, {truth['gpus']} GPUs for the peak-day hour)")
    print(f"{'cut-off':15s} {'peak new/h':>22s} {'8-day images':>24s} {'8-day users':>24s} {'GPUs (stand-in)':>18s}")
    def cell(r, k, unit):
        lo, hi = r.get(k + "_p5"), r.get(k + "_p95")
        band = f" [{lo / unit:,.0f}-{hi / unit:,.0f}]" if lo is not None else ""
        return f"{r[k + '_rel_err']:+6.1%}{band}"

    for r in rows:
        print(f"{r['cut']:15s} {cell(r, 'peak_new_users_per_hour', 1e3):>22s} {cell(r, 'images_8d', 1e6):>24s} "
              f"{cell(r, 'users_8d', 1e6):>24s} {r['gpus_rel_err']:+6.1%} [{r['gpus_p5']}-{r['gpus_p95']}]")
    print("(relative error of the fit's estimate; brackets: the forecast's 90% interval, in K, M, M, GPUs;"
          " GPUs (stand-in): ceil(peak-day peak-hour rate / one GPU's rate at full batches))")
    if plans:
        tr, ft = plans["truth"], plans["fit"]
        print(f"Engine plan (planner, cell {a.plan_cell:g}, {a.plan_reps} replication(s), hours 144-168, "
              f"scaled to the service): truth {tr['min_gpus']} GPUs [{tr['ci_low']}-{tr['ci_high']}], "
              f"opening + 6 h fit {ft['min_gpus']} [{ft['ci_low']}-{ft['ci_high']}]: {plans['rel_err']:+.1%}; "
              f"{tr['wall_s'] + ft['wall_s']:.0f} s for both")
    figure(rows, truth, Path(a.figure))
    print(f"wrote {a.figure}", file=sys.stderr)

    from sim.sweep import Executor

    t1 = time.perf_counter()
    with Executor(a.jobs, progress=True) as ex:
        res = ex.map(calibrate_one, [(i, a.boot, a.users, cuts, not a.no_prior) for i in range(a.surges)],
                     desc="surges")
    cal = [r for rs in res for r in rs]
    cov = float(np.mean([r["covered"] for r in cal]))
    print(f"\nCalibration: {a.surges} synthetic surges x {len(cuts)} cut-offs "
          f"({', '.join(f'{c / H:g} h' for c in cuts)}), {a.boot} bootstrap draws a fit, held "
          f"parameters {'at the template' if a.no_prior else 'drawn from RANGES'}, "
          f"{time.perf_counter() - t1:.0f} s")
    for c in cuts:
        sel = [r for r in cal if r["cut_h"] == c / H]
        err = np.median([abs(r["estimate"] / r["truth"] - 1) for r in sel])
        pre = [r for r in sel if r["pre_inflection"]]
        print(f"  cut-off {c / H:5g} h: 90% interval covers the 8-day images in {coverage_line(sel)}; "
              f"median |error| {err:.1%}; {len(pre)} fits before an inflection point (covered "
              f"{np.mean([r['covered'] for r in pre]) if pre else float('nan'):.0%})")
    lo, hi = wilson(sum(r["covered"] for r in cal), len(cal))
    print(f"  all: coverage {coverage_line(cal)} (target 85-95%; fits of one surge share its truth)")
    k = [r for r in rows if r["cut"] == "opening + 6 h"][0]
    print(f"total wall time {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    line = {"images_rel_err": round(k["images_8d_rel_err"], 4),
            "peak_rel_err": round(k["peak_new_users_per_hour_rel_err"], 4),
            "gpus_rel_err": round(plans["rel_err"] if plans else k["gpus_rel_err"], 4),
            "gpus_standin_rel_err": round(k["gpus_rel_err"], 4),
            "gpus_source": f"engine plan, cell {a.plan_cell:g}" if plans else "stand-in",
            "coverage_90": round(cov, 4), "coverage_90_ci95": [round(lo, 4), round(hi, 4)],
            "fits": len(cal), "surges": a.surges}
    print(json.dumps(line))


def figure(rows: list[dict], truth: dict, path: Path) -> None:
    """How the GPU answer, with its band, moves as more hours are observed."""
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    x = [r["cut_h"] for r in rows]
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    band = [(np.nan, np.nan) if r["gpus_p5"] is None else (r["gpus_p5"], r["gpus_p95"]) for r in rows]
    ax.fill_between(x, [b[0] for b in band], [b[1] for b in band], alpha=0.25,
                    label="forecast 90% band")
    ax.plot(x, [r["gpus"] for r in rows], "o-", label="fitted")
    ax.axhline(truth["gpus"], color="k", ls="--", label=f"on the truth ({truth['gpus']})")
    ax.set_xlabel("hours observed")
    ax.set_ylabel("GPUs for the peak-day hour")
    ax.set_title("Planned GPUs as the surge is observed (ghibli_2025 backtest)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
