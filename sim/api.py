"""The Python API for notebooks and scripts: `sim.run`, `sim.plan`, `sim.compare`.

    import sim
    r = sim.run("scenarios/ghibli_2025.yaml", horizon="1d")
    r.tiers                      # one row per tier: offered, completed, p95, SLO met...
    r.timeseries                 # DataFrame, calendar `time` column first
    fig = r.plot.latency()       # a matplotlib Figure (object API: no pyplot state touched)

Each call runs exactly what the matching `floodgate` command runs (same scenario loader, same
engine, same executor), so a notebook and the CLI give identical figures for a seed. Keyword
overrides are merged into the scenario as `load_scenario` merges them (nested dicts merge).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sim.errors import InputError


def _scenario(scenario: str | Path | dict, overrides: dict):
    from sim.scenario import load_scenario, merge, parse_scenario

    if isinstance(scenario, dict):
        return parse_scenario(merge(scenario, overrides) if overrides else scenario, "<dict>")
    return load_scenario(scenario, overrides or None)


class _Plots:
    """Figures of a result, each a method returning a new matplotlib Figure."""

    def __init__(self, make: dict):
        self._make = make

    def __dir__(self):
        return sorted(self._make)

    def __getattr__(self, name: str):
        try:
            make = self._make[name]
        except KeyError:
            raise AttributeError(f"no figure {name!r}; there are: {', '.join(sorted(self._make))}") from None
        return make

    def __repr__(self) -> str:
        return f"<figures: {', '.join(f'{k}()' for k in sorted(self._make))}>"


@dataclass
class RunResult:
    """One simulated run: `summary` (the summary.json dict), `timeseries`, `tiers`, `plot`."""

    scenario: Any
    summary: dict
    timeseries: pd.DataFrame
    _run: Any = field(repr=False)

    @property
    def tiers(self) -> pd.DataFrame:
        rows = {}
        for name, t in self.summary["tiers"].items():
            rows[name] = {"offered": t["offered"], "admitted": t["admitted"],
                          "completed": t["completed"], "rejected": sum(t["rejected"].values()),
                          "p50_s": t["latency_s"]["p50"], "p95_s": t["latency_s"]["p95"],
                          "p99_s": t["latency_s"]["p99"], "slo_s": t["slo_s"],
                          "slo_met": t["slo_met"], "goodput": t["goodput"], "revenue": t["revenue"]}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("tier")

    @property
    def plot(self) -> _Plots:
        from sim.report.run_report import run_figures

        return _Plots({k: draw for k, (_, draw) in run_figures(self._run, self.timeseries).items()})

    def write(self, out: str | Path) -> Path:
        """Write the report folder, as `floodgate run --out` does."""
        from sim.report.run_report import write_run
        from sim.report.write import check_out

        out = check_out(out)
        write_run(self._run, out)
        return out


def run(scenario: str | Path | dict, *, progress: bool = False, **overrides) -> RunResult:
    """Simulate a scenario (a YAML path or a dict) with optional top-level overrides."""
    from sim.engine import simulate
    from sim.metrics.summary import summarize, timeseries, with_calendar_time

    sc = _scenario(scenario, overrides)
    r = simulate(sc, progress=progress)
    return RunResult(sc, summarize(r), with_calendar_time(timeseries(r), sc), r)


@dataclass
class PlanResult:
    """The smallest fleet meeting every SLO: `result` (plan.json's dict), `curve`, `plot`."""

    scenario: Any
    result: dict

    @property
    def min_gpus(self) -> int:
        return self.result["min_gpus"]

    @property
    def curve(self) -> pd.DataFrame:
        return pd.DataFrame(self.result["curve"]).set_index("gpus")

    @property
    def plot(self) -> _Plots:
        from sim.report.plan_report import curve_figure

        return _Plots({"capacity_vs_slo": lambda: curve_figure(self.result)})


def plan(scenario: str | Path | dict, *, slo: list[str] | None = None, reps: int = 3,
         window: tuple[float, float] | None = None, without: tuple[str, ...] = (),
         jobs: int | None = None, cluster: str | None = None, progress: bool = False,
         **overrides) -> PlanResult:
    """`floodgate plan`: SLOs as 'TIER:p95<=60s' (default each tier's slo_s on p95)."""
    from sim.planner import parse_slo, run_plan
    from sim.sweep import Executor

    sc = _scenario(scenario, overrides)
    slos = [parse_slo(s, sc) for s in (slo or [])] or [
        parse_slo(f"{t.name}:p95<={t.slo_s}s", sc) for t in sc.tiers]
    if reps < 1:
        raise InputError("reps", str(reps), "must be at least 1")
    with Executor(jobs, cluster, progress=progress) as ex:
        _, res = run_plan(sc, slos, reps, ex, window, tuple(without))
    return PlanResult(sc, res)


@dataclass
class CompareResult:
    """Variants on common random numbers: `result` (compare.json), `series`, `table`, `plot`."""

    scenario: Any
    result: dict
    series: dict[str, pd.DataFrame]

    @property
    def table(self) -> pd.DataFrame:
        from sim.report.compare_report import _rows

        header, rows = _rows(self.result)
        return pd.DataFrame(rows, columns=header).set_index("variant")

    @property
    def plot(self) -> _Plots:
        from sim.report.compare_report import compare_figures

        names = [t.name for t in self.scenario.tiers]
        slos = [t.slo_s for t in self.scenario.tiers]
        return _Plots({k: draw for k, (_, draw) in compare_figures(self.series, names, slos).items()})


def compare(scenario: str | Path | dict, variants: dict[str, dict | str | Path] | None = None, *,
            jobs: int | None = None, cluster: str | None = None, progress: bool = False,
            **overrides) -> CompareResult:
    """`floodgate compare`: each variant is an overrides dict or an overrides YAML file; the
    scenario's own `variants:` section is included as the CLI includes it."""
    from sim.sweep import Executor
    from sim.variants import load_variant, run_compare

    sc = _scenario(scenario, overrides)
    extra = []
    for name, v in (variants or {}).items():
        extra.append(load_variant(f"{name}={v}") if isinstance(v, str | Path) else (name, dict(v)))
    if not sc.variants and not extra:
        raise InputError(sc.source, "variants", "nothing to compare: give variants or a variants: section")
    with Executor(jobs, cluster, progress=progress) as ex:
        res, series = run_compare(sc, extra, ex)
    return CompareResult(sc, res, series)
