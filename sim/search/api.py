"""Policy search from Python: `sim.grid_sweep`, `sim.optimize`, `sim.sensitivity`.

    import sim
    s = sim.grid_sweep("scenario.yaml", {"policies.daily_quota.limit": [1, 3, 5],
                                         "fleet.pools.h100.gpus": "900:1500:300"},
                       reps=3, constraints=["plus:p95<=60s"], objective="free_goodput")
    s.table                       # tidy: one row per cell and metric (mean, low, high, reps)
    s.figures()["heatmap_free_goodput"]   # a matplotlib Figure

Each runs what the matching `floodgate` command runs (same parsing, executor and seeds), so a
notebook and the CLI agree for a seed. Top-level keyword overrides merge into the scenario as
in `sim.run`; `sets` are `--set PATH=VALUE` changes.
"""

from __future__ import annotations

from pathlib import Path

from sim.errors import InputError


def _base(scenario, sets, overrides):
    from sim.search.space import load_base

    return load_base(scenario, list(sets or []), overrides or None)


def _judging(base, constraints, objectives):
    from sim.search.metrics import metric_names, parse_constraints, parse_objective

    names = metric_names(base.sc)
    cons = [c for t in constraints for c in parse_constraints(t, base.sc, names, "constraints")]
    objs = [parse_objective(o, names, "objective") for o in objectives]
    return cons, objs


def _range(path: str, r) -> str:
    return f"{path}={r}" if isinstance(r, str) else f"{path}={':'.join(str(x) for x in r)}"


def grid_sweep(scenario: str | Path | dict, grid: dict, *, reps: int = 3,
               constraints: list[str] = (), objective: str | None = None,
               sets: list[str] = (), jobs: int | None = None, cluster: str | None = None,
               progress: bool = False, **overrides):
    """`floodgate sweep`: grid {PATH: [values] or 'LOW:HIGH:STEP'}; returns a SweepResult
    (`table`, `cells`, `best`, `headline()`, `figures()`, `write(out)`)."""
    from sim.search.space import Axis, check_point, parse_grid
    from sim.search.sweep import run_sweep
    from sim.sweep import Executor

    base = _base(scenario, sets, overrides)
    axes = []
    for path, v in grid.items():
        if isinstance(v, str):
            axes.append(parse_grid(f"{path}={v}", base, "grid"))
        else:
            for x in v:
                check_point(base, {path: x}, "grid", f"{path}={x}")
            axes.append(Axis(path, list(v), f"{path}={v}"))
    cons, objs = _judging(base, constraints, [objective] if objective else [])
    if reps < 1:
        raise InputError("reps", str(reps), "must be at least 1")
    with Executor(jobs, cluster, progress=progress) as ex:
        return run_sweep(base, axes, reps, ex, cons, objs[0] if objs else None)


def optimize(scenario: str | Path | dict, params: dict, *, objective: str | list[str] = "revenue_minus_gpu_cost",
             constraints: list[str] = (), trials: int = 40, reps: int = 3, batch: int = 4,
             storage: str | None = None, seed: int | None = None, sets: list[str] = (),
             jobs: int | None = None, cluster: str | None = None, progress: bool = False,
             **overrides):
    """`floodgate optimize`: params {PATH: 'LOW:HIGH[:int|:log]' or (LOW, HIGH)}; `storage` a
    SQLAlchemy URL to keep (and resume) the study, else it lives in memory. Returns an
    OptimizeResult (`table`, `best`, `front`, `best_overrides()`, `figures()`)."""
    from sim.search.optimize import run_optimize
    from sim.search.space import parse_param
    from sim.sweep import Executor

    base = _base(scenario, sets, overrides)
    ps = [parse_param(_range(p, r), base, "params") for p, r in params.items()]
    cons, objs = _judging(base, constraints, [objective] if isinstance(objective, str) else list(objective))
    with Executor(jobs, cluster, progress=False) as ex:
        return run_optimize(base, ps, objs, cons, reps, trials, ex, storage,
                            batch, seed, progress=progress)


def sensitivity(scenario: str | Path | dict, factors: dict, *, metrics: list[str] | None = None,
                method: str = "morris", samples: int = 10, reps: int = 1,
                seed: int | None = None, sets: list[str] = (), jobs: int | None = None,
                cluster: str | None = None, progress: bool = False, **overrides):
    """`floodgate sensitivity`: factors {PATH: 'LOW:HIGH' or (LOW, HIGH)}; returns a
    SensitivityResult (`table` with 95% intervals, `figures()`)."""
    from sim.search.metrics import metric_names
    from sim.search.sensitivity import run_sensitivity
    from sim.search.space import parse_param
    from sim.sweep import Executor

    base = _base(scenario, sets, overrides)
    fs = [parse_param(_range(p, r), base, "factors") for p, r in factors.items()]
    names = metric_names(base.sc)
    ms = metrics or [f"{t.name}.p95_s" for t in base.sc.tiers if t.price_per_image > 0] + ["gpu_hours"]
    for m in ms:
        if m not in names:
            raise InputError("metrics", m, "unknown metric")
    with Executor(jobs, cluster, progress=progress) as ex:
        return run_sensitivity(base, fs, ms, method, samples, reps, ex, seed)
