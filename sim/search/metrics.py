"""What a search judges a run by: flat metrics, replication intervals, objectives, constraints.

Metric names are dotted like paths: `plus.p95_s`, `free.rejected_share.shed`, `gpu_cost`.
A point's value is the mean over its replications with a 95% Student-t interval; latency
quantiles are skewed, so theirs is taken on the log scale (as the planner does). Constraints are
judged on the pessimistic end of the interval (the upper end of a `<=` bound), so replication
noise cannot pass a policy that violates them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from sim.errors import InputError, did_you_mean
from sim.planner import SERVED_SHARE, parse_slo
from sim.policies import REASONS
from sim.scenario import Scenario
from sim.sweep import Job

DAY = 86400.0


def flat_metrics(sc: Scenario, s: dict) -> dict[str, float]:
    """One run's summary (summary.json) as a flat {metric: value}; a missing quantile is NaN."""
    out: dict[str, float] = {}
    free = [t.name for t in sc.tiers if t.price_per_image == 0]
    for name, t in s["tiers"].items():
        for q in ("p50", "p95", "p99"):
            v = t["latency_s"][q]
            out[f"{name}.{q}_s"] = math.nan if v is None else float(v)
        for k in ("offered", "completed", "goodput", "revenue"):
            out[f"{name}.{k}"] = float(t[k])
        off = t["offered"]
        rej = t["rejected"]
        out[f"{name}.rejected_share"] = sum(rej.values()) / off if off else 0.0
        for r in REASONS:
            out[f"{name}.rejected_share.{r}"] = rej.get(r, 0) / off if off else 0.0
        done = t["completed"] + t["abandoned"]
        out[f"{name}.served_share"] = t["completed"] / done if done else 1.0
    days = s["horizon_s"] / DAY
    out["served_images"] = float(sum(t["completed"] for t in s["tiers"].values()))
    out["free_goodput"] = float(sum(s["tiers"][t]["goodput"] for t in free))
    out["free_images"] = float(sum(s["tiers"][t]["completed"] for t in free))
    out["revenue"] = float(s["money"]["revenue"])
    out["gpu_cost"] = float(s["money"]["gpu_cost"])
    out["gpu_cost_per_day"] = out["gpu_cost"] / days if days else math.nan
    out["revenue_minus_gpu_cost"] = out["revenue"] - out["gpu_cost"]
    out["gpu_hours"] = float(s["fleet"]["gpu_hours"])
    u = s["fleet"]["utilization_mean"]
    out["utilization"] = math.nan if u is None else float(u)
    return out


def run_metrics(job: Job) -> dict[str, float]:
    """Simulate one (scenario, seed) and return its flat metrics (executed in a worker; a
    small dict travels back, not the summary)."""
    from sim.engine import simulate
    from sim.metrics.summary import summarize
    from sim.scenario import parse_scenario

    sc = parse_scenario(job.scenario, job.source)
    return flat_metrics(sc, summarize(simulate(sc)))


def is_quantile(metric: str) -> bool:
    return bool(re.search(r"\.p\d\d_s$", metric))


def interval(x: np.ndarray, log: bool = False) -> tuple[float, float, float]:
    """(mean, low, high): the mean over replications and its 95% Student-t interval (on the log
    scale when `log`); one replication gives a zero-width interval; NaN in any replication (no
    request finished) makes the value infinite."""
    x = np.asarray(x, float)
    if len(x) == 0 or np.any(np.isnan(x)):
        return math.inf, math.inf, math.inf
    m = float(np.mean(x))
    if len(x) < 2:
        return m, m, m
    from scipy.stats import t

    k = float(t.ppf(0.975, len(x) - 1)) / math.sqrt(len(x))
    if log:
        lx = np.log(np.maximum(x, 1e-9))
        g, hw = float(np.mean(lx)), k * float(np.std(lx, ddof=1))
        return m, math.exp(g - hw), math.exp(g + hw)
    hw = k * float(np.std(x, ddof=1))
    return m, m - hw, m + hw


def summarize_reps(reps: list[dict[str, float]]) -> dict[str, tuple[float, float, float]]:
    """{metric: (mean, low, high)} over the replications of one point."""
    return {k: interval(np.array([r[k] for r in reps]), is_quantile(k)) for k in reps[0]}


# Objectives by name, maximised or minimised as their names say.
OBJECTIVES = {"revenue_minus_gpu_cost": ("revenue_minus_gpu_cost", "max"),
              "free_goodput": ("free_goodput", "max"),
              "served_images": ("served_images", "max"),
              "gpu_cost": ("gpu_cost", "min")}


@dataclass
class Objective:
    metric: str
    sense: str  # "max" | "min"
    text: str

    def better(self, a: float, b: float) -> bool:
        return a > b if self.sense == "max" else a < b


def parse_objective(text: str, metrics: list[str], flag: str = "--objective") -> Objective:
    """A name from OBJECTIVES, or `max:METRIC` / `min:METRIC`."""
    t = text.strip()
    if t in OBJECTIVES:
        m, sense = OBJECTIVES[t]
        return Objective(m, sense, t)
    if ":" in t:
        sense, m = (s.strip() for s in t.split(":", 1))
        if sense not in ("max", "min"):
            raise InputError(flag, text, "expected max:METRIC or min:METRIC")
        if m not in metrics:
            raise InputError(flag, text, f"unknown metric {m!r}{did_you_mean(m, metrics)}")
        return Objective(m, sense, t)
    raise InputError(flag, text, f"unknown objective; use {', '.join(OBJECTIVES)} or max:METRIC / min:METRIC")


@dataclass
class Constraint:
    """metric <= bound (or >=), judged on the pessimistic end of the interval."""

    metric: str
    op: str  # "<=" | ">="
    bound: float
    text: str

    def holds(self, v: tuple[float, float, float], which: str = "pessimistic") -> bool:
        m, lo, hi = v
        x = {"mean": m, "pessimistic": hi if self.op == "<=" else lo,
             "optimistic": lo if self.op == "<=" else hi}[which]
        return x <= self.bound if self.op == "<=" else x >= self.bound

    def crosses(self, v: tuple[float, float, float]) -> bool:
        """The interval straddles the bound: replication noise decides."""
        return self.holds(v, "optimistic") and not self.holds(v, "pessimistic")

    def margin(self, v: tuple[float, float, float]) -> float:
        """How far the pessimistic end is past the bound, relative to the bound: <= 0 holds
        (Optuna's constraint convention); an undefined value counts as far past."""
        m, lo, hi = v
        x = hi if self.op == "<=" else lo
        if not math.isfinite(x):
            return 1e6
        d = (x - self.bound) if self.op == "<=" else (self.bound - x)
        return d / max(abs(self.bound), 1e-9)


def parse_constraints(text: str, sc: Scenario, metrics: list[str],
                      flag: str = "--constraint") -> list[Constraint]:
    """`TIER:p95<=60s` (plan's SLO syntax; it also asks that 99% of the tier's admitted requests
    complete rather than give up, as plan does), `TIER:rejected<=10%` or
    `TIER:rejected.shed<=0.2` (rejection shares), or `METRIC<=X` / `METRIC>=X`."""
    t = text.strip()
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*:\s*(p50|p95|p99)\s*<=.*", t)
    if m:
        try:
            s = parse_slo(t, sc)
        except InputError as e:
            raise InputError(flag, text, e.message) from None
        return [Constraint(f"{s.tier}.{s.quantile}_s", "<=", s.seconds, text),
                Constraint(f"{s.tier}.served_share", ">=", SERVED_SHARE, text)]
    m = re.fullmatch(r"([A-Za-z0-9_-]+)\s*:\s*(rejected(?:\.[a-z_]+)?)\s*(<=|>=)\s*([0-9.eE+-]+)\s*(%?)", t)
    if m:
        tier, what, op, v, pct = m.groups()
        metric = f"{tier}.{what.replace('rejected', 'rejected_share', 1)}"
        if metric not in metrics:
            raise InputError(flag, text, f"unknown tier or reason{did_you_mean(metric, metrics)}")
        return [Constraint(metric, op, float(v) / (100 if pct else 1), text)]
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(<=|>=)\s*([0-9.eE+-]+)", t)
    if m:
        metric, op, v = m.groups()
        if metric not in metrics:
            raise InputError(flag, text, f"unknown metric {metric!r}{did_you_mean(metric, metrics)}")
        try:
            return [Constraint(metric, op, float(v), text)]
        except ValueError:
            raise InputError(flag, text, f"{v!r} is not a number") from None
    raise InputError(flag, text, "expected TIER:p95<=60s, TIER:rejected<=10% or METRIC<=X / METRIC>=X")


def metric_names(sc: Scenario) -> list[str]:
    """Every metric flat_metrics reports for this scenario (for checking names up front)."""
    names = []
    for t in sc.tiers:
        names += [f"{t.name}.{q}_s" for q in ("p50", "p95", "p99")]
        names += [f"{t.name}.{k}" for k in ("offered", "completed", "goodput", "revenue",
                                             "rejected_share", "served_share")]
        names += [f"{t.name}.rejected_share.{r}" for r in REASONS]
    return names + ["served_images", "free_goodput", "free_images", "revenue", "gpu_cost",
                    "gpu_cost_per_day", "revenue_minus_gpu_cost", "gpu_hours", "utilization"]


def feasible(values: dict, constraints: list[Constraint]) -> bool:
    return all(c.holds(values[c.metric]) for c in constraints)
