"""Which uncertain inputs move the answer most: Morris screening or Sobol indices (SALib).

Each factor is a PATH=LOW:HIGH range in the scenario's own terms; SALib draws the design, every
design point runs R replications on the seeds every point shares (so differences between
points come from the factors, not the draw), and each output is the mean over replications.
Morris gives mu* (mean absolute elementary effect) with a bootstrap 95% interval and sigma
(spread: interaction or non-linearity); Sobol gives first-order and total indices with 95%
intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.errors import InputError
from sim.search.evaluate import evaluate
from sim.search.space import Base, Param
from sim.sweep import Executor


@dataclass
class SensitivityResult:
    scenario: str
    method: str
    factors: list[Param]
    outputs: list[str]
    reps: int
    points: list[dict]
    table: pd.DataFrame  # one row per output and factor

    def figures(self) -> dict:
        """The report's figures by file stem, each a matplotlib Figure."""
        from sim.search.report import sensitivity_figures

        return {k: fig for k, (_, fig) in sensitivity_figures(self).items()}

    def write(self, out):
        """Write the report folder, as the command's --out does."""
        from sim.report.write import check_out
        from sim.search.report import write_sensitivity

        out = check_out(out)
        write_sensitivity(self, out)
        return out


def _problem(factors: list[Param]) -> dict:
    return {"num_vars": len(factors), "names": [f.path for f in factors],
            "bounds": [[f.low, f.high] for f in factors]}


def run_sensitivity(base: Base, factors: list[Param], outputs: list[str], method: str,
                    samples: int, reps: int, ex: Executor, seed: int | None = None,
                    levels: int = 4) -> SensitivityResult:
    """Morris: `samples` trajectories ((k+1) points each); Sobol: `samples` base samples
    (a power of two; (k+2) points each, first-order and total indices)."""
    seed = base.sc.seed if seed is None else seed
    prob = _problem(factors)
    if method == "morris":
        from SALib.analyze import morris as analyze
        from SALib.sample import morris as sample

        X = sample.sample(prob, samples, num_levels=levels, seed=seed)
    elif method == "sobol":
        from SALib.analyze import sobol as analyze
        from SALib.sample import sobol as sample

        if samples & (samples - 1):
            raise InputError("--samples", str(samples), "Sobol needs a power of two, e.g. 8, 16, 64")
        X = sample.sample(prob, samples, calc_second_order=False, seed=seed)
    else:
        raise InputError("--method", method, "use morris or sobol")
    points = [{f.path: f.cast(x) for f, x in zip(factors, row, strict=True)} for row in X]
    # integer factors are rounded; the design keeps the value actually run
    Xrun = np.array([[float(p[f.path]) for f in factors] for p in points])
    values, _ = evaluate(base, points, reps, ex, desc="sensitivity runs")
    rows = []
    for m in outputs:
        Y = np.array([v[m][0] for v in values], float)
        if not np.all(np.isfinite(Y)):
            raise InputError("--metric", m, "is undefined at some design points (no request of "
                             "the tier finished); choose another metric or narrower ranges")
        if method == "morris":
            r = analyze.analyze(prob, Xrun, Y, conf_level=0.95, num_levels=levels, seed=seed)
            for j, f in enumerate(factors):
                mu, c = float(r["mu_star"][j]), float(r["mu_star_conf"][j])
                # mu* is a mean of absolute effects: its interval stops at 0
                rows.append({"metric": m, "factor": f.path, "mu_star": mu, "mu_star_low": max(0.0, mu - c),
                             "mu_star_high": mu + c, "sigma": float(r["sigma"][j]),
                             "mu": float(r["mu"][j])})
        else:
            r = analyze.analyze(prob, Y, calc_second_order=False, conf_level=0.95, seed=seed)
            for j, f in enumerate(factors):
                s1, c1 = float(r["S1"][j]), float(r["S1_conf"][j])
                st, ct = float(r["ST"][j]), float(r["ST_conf"][j])
                rows.append({"metric": m, "factor": f.path, "S1": s1, "S1_low": s1 - c1,
                             "S1_high": s1 + c1, "ST": st, "ST_low": st - ct, "ST_high": st + ct})
    t = pd.DataFrame(rows)
    t["reps"] = reps
    t["points"] = len(points)
    return SensitivityResult(base.sc.name, method, factors, outputs, reps, points, t)
