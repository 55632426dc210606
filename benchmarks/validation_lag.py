"""How far arrival lag alone moves `floodgate validate`'s headline figures: the simulator
against itself, no live side.

The scenario's schedule is replayed twice on the same noise (common random numbers, as
validate's first replication): once at the scheduled instants, once with an arrival lag
added to every first attempt. The lags come from a finished validation's own records
(`--lags OUT`: its live/gateway.jsonl, schedule to the gateway's stamp), drawn independently
per request, or with `--burst` as the recorded sequence in schedule order, rolled by a random
shift (a loaded machine's lag comes in bursts: a starved process sends several at once).
Per draw, the headline errors are computed the way validate computes them for the simulated
side (worst tier; whole run, below and above saturation); the worst over the draws against
the targets tells whether a scenario is dense enough for its figures to mean something at
that lag. Prints a line per phase, then one JSON line.

    PYTHONPATH=. python benchmarks/validation_lag.py scenarios/validation_surge.yaml \
        --lags out/validation_surge/validation [--draws 10] [--burst] [--duration 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.live import schedule  # noqa: E402
from sim.live.fidelity import QS, TARGETS, Setup, sim_stats  # noqa: E402
from sim.live.validate import capacity, load_live, saturation_time, simulate  # noqa: E402
from sim.outcomes import REASONS  # noqa: E402
from sim.scenario import load_scenario  # noqa: E402

FIGS = ("p50_rel_err", "p95_rel_err", "p99_rel_err", "rejection_abs_err_pp", "throughput_rel_err")


def recorded_lags(d: Path) -> np.ndarray:
    """Schedule to gateway stamp of each first attempt, in schedule order, simulated s."""
    gw, _, _ = load_live({"gateway": d / "live" / "gateway.jsonl", "client": d / "live" / "client.jsonl"})
    f = gw[gw["attempt"] == 0].sort_values("scheduled_t")
    return (f["arrival_s"] - f["scheduled_t"]).to_numpy(float)


def figures(st: Setup, path: Path, t_sat: float | None, tiers: list[str]) -> dict:
    """Per phase and tier: quantiles, attempts, rejections, completions (validate's sim side)."""
    sched = schedule.read(path)
    t_first = float(sched["t"].iloc[0])
    A = simulate(st, path, t_first, st.sc.seed)
    B = simulate(st, path, t_first, st.sc.seed, t_sat) if t_sat is not None else A
    phases = {"all": (0.0, st.horizon)}
    if t_sat is not None:
        phases |= {"below": (0.0, t_sat), "above": (t_sat, st.horizon)}
    out = {}
    iv = np.arange(A.n_int) * A.interval
    for ph, span in phases.items():
        s = sim_stats(A, B, span, ph, tiers, list(REASONS))
        m = (iv >= span[0] - 1e-9) & (iv < span[1] - 1e-9)
        for k, t in enumerate(tiers):
            s[t]["done"] = int(A.fleet.S.ser_completed[m, k].sum())
            del s[t]["hist"]
        out[ph] = s
    return out


def errors(base: dict, x: dict, tiers: list[str]) -> dict:
    """Worst tier of each headline figure, x against base."""
    out = {}
    for j, q in enumerate(QS):
        out[f"p{round(q * 100)}_rel_err"] = max(
            (abs(x[t]["q"][j] / base[t]["q"][j] - 1) for t in tiers if base[t]["q"][j] > 0), default=0.0)
    out["rejection_abs_err_pp"] = max(
        (abs(100 * x[t]["rej"][r] / x[t]["n"] - 100 * base[t]["rej"][r] / base[t]["n"])
         for t in tiers for r in REASONS if base[t]["n"] and x[t]["n"]), default=0.0)
    out["throughput_rel_err"] = max(
        (abs(x[t]["done"] / base[t]["done"] - 1) for t in tiers if base[t]["done"]), default=0.0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--lags", required=True, help="a validation output folder (its live/ records)")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--burst", action="store_true", help="the recorded lag sequence, rolled")
    ap.add_argument("--duration", type=float, default=60.0, help="wall s of schedule (time scale 1)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    sc = load_scenario(a.scenario)
    st = Setup(sc, Path(a.scenario), a.duration, 1.0, 15.0, 1, "model")
    tiers = [t.name for t in sc.tiers]
    t_sat = saturation_time(st, capacity(st))
    lags = recorded_lags(Path(a.lags))
    rng = np.random.default_rng(a.seed)
    sched = schedule.generate(sc, st.horizon)
    with tempfile.TemporaryDirectory() as tmp:
        p0, p1 = Path(tmp) / "s.csv", Path(tmp) / "lagged.csv"
        schedule.write(sched, p0)
        base = figures(st, p0, t_sat, tiers)
        worst: dict = {ph: {f: [] for f in FIGS} for ph in base}
        for _ in range(a.draws):
            L = (np.roll(np.resize(lags, len(sched)), rng.integers(len(sched))) if a.burst
                 else rng.choice(lags, len(sched)))
            lagged = sched.assign(t=sched["t"].to_numpy() + L).sort_values("t", kind="stable")
            schedule.write(lagged.reset_index(drop=True), p1)
            got = figures(st, p1, t_sat, tiers)
            for ph in base:
                for f, v in errors(base[ph], got[ph], tiers).items():
                    worst[ph][f].append(v)
    print(f"{sc.name}: {len(sched)} scheduled, saturation at {t_sat} s; lag p50 "
          f"{1e3 * np.median(lags):.1f} ms, p99 {1e3 * np.percentile(lags, 99):.1f} ms"
          f"{' (bursts kept)' if a.burst else ''}; {a.draws} draws")
    res = {"scenario": sc.name, "draws": a.draws, "burst": a.burst, "targets": TARGETS, "phases": {}}
    for ph, e in worst.items():
        row = {f: {"median": round(float(np.median(v)), 4), "max": round(float(np.max(v)), 4),
                   "missed": int(sum(x > TARGETS[f] for x in v))} for f, v in e.items()}
        res["phases"][ph] = row
        print(f"{ph:6s} " + "  ".join(f"{f.split('_')[0]} med {r['median']:.3g} max {r['max']:.3g}"
                                      f" missed {r['missed']}" for f, r in row.items()))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
