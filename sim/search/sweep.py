"""Grid sweep: every cell of the grid, replicated on common random numbers.

The tidy table has one row per cell and metric: the grid values, the metric, its mean over
replications, the 95% interval and the number of replications. The best cell is the one with
the best mean objective among cells whose pessimistic interval end meets every constraint.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pandas as pd

from sim.search.evaluate import evaluate
from sim.search.metrics import Constraint, Objective, feasible
from sim.search.space import Axis, Base
from sim.sweep import Executor


@dataclass
class SweepResult:
    scenario: str
    axes: list[Axis]
    reps: int
    points: list[dict]
    values: list[dict]  # per cell: {metric: (mean, low, high)}
    constraints: list[Constraint] = field(default_factory=list)
    objective: Objective | None = None

    def figures(self) -> dict:
        """The report's figures by file stem, each a matplotlib Figure."""
        from sim.search.report import sweep_figures

        return {k: fig for k, (_, fig) in sweep_figures(self).items()}

    def write(self, out):
        """Write the report folder, as the command's --out does."""
        from sim.report.write import check_out
        from sim.search.report import write_sweep

        out = check_out(out)
        write_sweep(self, out)
        return out

    @property
    def table(self) -> pd.DataFrame:
        """Tidy: one row per cell and metric."""
        rows = []
        for i, (p, v) in enumerate(zip(self.points, self.values, strict=True)):
            for m, (mean, lo, hi) in v.items():
                rows.append({"cell": i, **p, "metric": m, "mean": mean, "low": lo, "high": hi,
                             "reps": self.reps})
        return pd.DataFrame(rows)

    def feasible(self, i: int) -> bool:
        return feasible(self.values[i], self.constraints)

    def crossing(self, i: int) -> list[str]:
        """Constraints whose interval straddles the bound at cell i."""
        return list(dict.fromkeys(c.text for c in self.constraints
                                  if c.crosses(self.values[i][c.metric])))

    @property
    def cells(self) -> pd.DataFrame:
        """One row per cell: grid values, objective (mean, interval), feasible, crossing."""
        rows = []
        for i, p in enumerate(self.points):
            r = {"cell": i, **p}
            if self.objective is not None:
                m, lo, hi = self.values[i][self.objective.metric]
                r.update({self.objective.metric: m, "low": lo, "high": hi})
            r["feasible"] = self.feasible(i)
            r["crossing"] = "; ".join(self.crossing(i))
            rows.append(r)
        return pd.DataFrame(rows)

    @property
    def best(self) -> int | None:
        if self.objective is None:
            return None
        ok = [i for i in range(len(self.points)) if self.feasible(i)]
        if not ok:
            return None
        o = self.objective
        key = [self.values[i][o.metric][0] for i in ok]
        j = max(range(len(ok)), key=lambda k: key[k] if o.sense == "max" else -key[k])
        return ok[j]

    def headline(self) -> dict:
        b = self.best
        return {"cells": len(self.points), "reps": self.reps,
                "best": None if b is None else self.points[b],
                "best_metrics": None if b is None else {
                    m: round(v[0], 6) for m, v in self.values[b].items()
                    if m in self._shown()}}

    def _shown(self) -> set[str]:
        s = {c.metric for c in self.constraints}
        if self.objective is not None:
            s.add(self.objective.metric)
        return s | {"served_images", "free_goodput", "revenue_minus_gpu_cost", "gpu_cost"}


def run_sweep(base: Base, axes: list[Axis], reps: int, ex: Executor,
              constraints: list[Constraint] | None = None,
              objective: Objective | None = None) -> SweepResult:
    points = [dict(zip([a.path for a in axes], combo, strict=True))
              for combo in itertools.product(*[a.values for a in axes])]
    values, _ = evaluate(base, points, reps, ex, desc="sweep runs")
    return SweepResult(base.sc.name, axes, reps, points, values, list(constraints or []), objective)
