"""Policy optimisation: Optuna over PATH=LOW:HIGH parameters, trials on common random numbers.

A trial is a point (one value per parameter) run R times on the seeds every trial shares, its
objective the mean over replications. Constraints are judged on the pessimistic end of each
replication interval and handed to the sampler as constraint values (<= 0 holds), so a policy
that passes only by luck of the draw is not reported as feasible. One objective: TPE; two:
NSGA-II (a Pareto front). Trials are asked in batches of `batch` and each batch runs through the
executor at once, so the answer depends on the batch size and seed, never on the executor.
The study lives in SQLite: a later call with the same search and more trials resumes it.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass

import pandas as pd

from sim.errors import InputError
from sim.search.evaluate import evaluate
from sim.search.metrics import Constraint, Objective
from sim.search.space import Base, Param, overrides_for
from sim.sweep import Executor


@dataclass
class Trial:
    number: int
    point: dict
    values: dict  # {metric: (mean, low, high)}
    violations: list[float]

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.violations)


@dataclass
class OptimizeResult:
    scenario: str
    params: list[Param]
    objectives: list[Objective]
    constraints: list[Constraint]
    reps: int
    trials: list[Trial]
    base_data: dict
    study_name: str
    sets: tuple[str, ...]
    wall_s: float

    def figures(self) -> dict:
        """The report's figures by file stem, each a matplotlib Figure."""
        from sim.search.report import optimize_figures

        return {k: fig for k, (_, fig) in optimize_figures(self).items()}

    def write(self, out):
        """Write the report folder, as the command's --out does."""
        from sim.report.write import check_out
        from sim.search.report import write_optimize

        out = check_out(out)
        write_optimize(self, out, None)
        return out

    def objective_values(self, t: Trial) -> list[float]:
        return [t.values[o.metric][0] for o in self.objectives]

    @property
    def best(self) -> Trial | None:
        """The feasible trial with the best mean first objective."""
        ok = [t for t in self.trials if t.feasible]
        if not ok:
            return None
        o = self.objectives[0]
        return max(ok, key=lambda t: t.values[o.metric][0] * (1 if o.sense == "max" else -1))

    def front_metrics(self) -> list[tuple[str, str]]:
        """The two (metric, sense) pairs of the Pareto front: the objectives when there are two,
        else GPU cost per day (min) against the objective."""
        if len(self.objectives) == 2:
            return [(o.metric, o.sense) for o in self.objectives]
        o = self.objectives[0]
        other = ("gpu_cost_per_day", "min") if o.metric != "gpu_cost_per_day" else ("served_images", "max")
        return [other, (o.metric, o.sense)]

    @property
    def front(self) -> list[Trial]:
        """Feasible trials no other feasible trial beats on both front metrics."""
        (a, sa), (b, sb) = self.front_metrics()
        sign = {"max": 1.0, "min": -1.0}
        ok = [t for t in self.trials if t.feasible]

        def key(t):
            return sign[sa] * t.values[a][0], sign[sb] * t.values[b][0]

        out = []
        for t in ok:
            ka = key(t)
            if not any((kb[0] >= ka[0] and kb[1] >= ka[1] and kb != ka)
                       for kb in (key(u) for u in ok)):
                out.append(t)
        return sorted(out, key=lambda t: t.values[a][0])

    @property
    def table(self) -> pd.DataFrame:
        rows = []
        shown = list(dict.fromkeys([o.metric for o in self.objectives]
                                   + [m for m, _ in self.front_metrics()]
                                   + [c.metric for c in self.constraints]))
        for t in self.trials:
            r = {"trial": t.number, **t.point}
            for m in shown:
                r[m], r[f"{m}.low"], r[f"{m}.high"] = t.values[m]
            r["feasible"] = t.feasible
            r["max_violation"] = max(t.violations, default=0.0)
            r["reps"] = self.reps
            rows.append(r)
        return pd.DataFrame(rows)

    def best_overrides(self) -> dict | None:
        b = self.best
        return None if b is None else overrides_for(self.base_data, b.point)

    def headline(self) -> dict:
        b = self.best
        return {"trials": len(self.trials), "best": None if b is None else b.point,
                "best_value": None if b is None else round(b.values[self.objectives[0].metric][0], 6),
                "feasible": b is not None}


def study_name(base: Base, params: list[Param], objectives: list[Objective],
               constraints: list[Constraint], reps: int) -> str:
    """Same search, same name: what a resumed study must agree on, hashed."""
    key = json.dumps({"scenario": base.data, "params": [p.text for p in params],
                      "objectives": [o.text for o in objectives],
                      "constraints": [c.text for c in constraints], "reps": reps},
                     sort_keys=True, default=str)
    return f"{base.sc.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def run_optimize(base: Base, params: list[Param], objectives: list[Objective],
                 constraints: list[Constraint], reps: int, trials: int, ex: Executor,
                 storage: str | None, batch: int = 4, seed: int | None = None,
                 progress: bool = True) -> OptimizeResult:
    """Run (or resume) the study stored at `storage` (a SQLAlchemy URL; None: in memory) up
    to `trials` trials."""
    import optuna

    if not 1 <= len(objectives) <= 2:
        raise InputError("--objective", ", ".join(o.text for o in objectives) or "(none)",
                         "give one objective, or two for a Pareto front")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    seed = base.sc.seed if seed is None else seed

    # Optuna 5 takes constraint values from the trial; older versions from constraints_func.
    per_trial = hasattr(optuna.trial.Trial, "set_constraint")
    kw = {} if per_trial or not constraints else {
        "constraints_func": lambda ft: ft.user_attrs["violations"]}
    if len(objectives) == 1:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, trials // 3)),
                                             **kw)
    else:
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, trials // 4)),
                                                **kw)
    name = study_name(base, params, objectives, constraints, reps)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                load_if_exists=True,
                                directions=["maximize" if o.sense == "max" else "minimize"
                                            for o in objectives])
    t0 = time.perf_counter()
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for t in study.trials:  # a trial left RUNNING by an interrupted call is not counted
        if t.state == optuna.trial.TrialState.RUNNING:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    n = len(done)
    if progress and n:
        print(f"optimize: resuming study {name} at {n} trials", file=sys.stderr)
    while n < trials:
        k = min(batch, trials - n)
        asked = [study.ask() for _ in range(k)]
        points = []
        for tr in asked:
            pt = {}
            for p in params:
                if p.kind == "int":
                    pt[p.path] = tr.suggest_int(p.path, int(p.low), int(p.high), log=p.log)
                else:
                    pt[p.path] = tr.suggest_float(p.path, p.low, p.high, log=p.log)
            points.append(pt)
        values, _ = evaluate(base, points, reps, ex, desc="trials")
        for tr, v in zip(asked, values, strict=True):
            viol = [c.margin(v[c.metric]) for c in constraints]
            tr.set_user_attr("violations", viol)
            if per_trial:
                for i, x in enumerate(viol):
                    tr.set_constraint(f"c{i}", min(x, 1e6))
            tr.set_user_attr("values", {m: list(x) for m, x in v.items()})
            obj = [v[o.metric][0] for o in objectives]
            study.tell(tr, [x if math.isfinite(x) else (-1e18 if o.sense == "max" else 1e18)
                            for x, o in zip(obj, objectives, strict=True)])
        n += k
        if progress:
            res = _result(base, params, objectives, constraints, reps, study, name, t0)
            b = res.best
            o = objectives[0]
            shown = (f"best {o.metric} {b.values[o.metric][0]:.4g} at "
                     + ", ".join(f"{k}={_fmt(v)}" for k, v in b.point.items())) if b else "none feasible yet"
            print(f"optimize: {n}/{trials} trials, {sum(t.feasible for t in res.trials)} feasible; "
                  f"{shown} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return _result(base, params, objectives, constraints, reps, study, name, t0)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _result(base, params, objectives, constraints, reps, study, name, t0) -> OptimizeResult:
    import optuna

    trials = []
    for t in study.trials:
        if t.state != optuna.trial.TrialState.COMPLETE or "values" not in t.user_attrs:
            continue
        vals = {m: tuple(x) for m, x in t.user_attrs["values"].items()}
        trials.append(Trial(t.number, {p.path: t.params[p.path] for p in params}, vals,
                            list(t.user_attrs["violations"])))
    return OptimizeResult(base.sc.name, params, objectives, constraints, reps, trials,
                          base.data, name, base.sets, time.perf_counter() - t0)
