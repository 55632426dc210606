"""Points x replications through the one executor, on common random numbers."""

from __future__ import annotations

from typing import Any

from sim.search.metrics import run_metrics, summarize_reps
from sim.search.space import Base, with_point
from sim.sweep import Executor, Job


def point_jobs(base: Base, point: dict[str, Any], reps: int) -> list[Job]:
    """R jobs for one point: seeds seed .. seed+R-1, the same at every point (common random
    numbers); reports and figures off (only the summary is read)."""
    jobs = []
    for r in range(reps):
        d = with_point(base.data, point)
        d["seed"] = base.sc.seed + r
        out = d.setdefault("outputs", {})
        out["figures"] = False
        out["report"] = False
        jobs.append(Job(d, base.source, base.start))
    return jobs


def evaluate(base: Base, points: list[dict[str, Any]], reps: int, ex: Executor,
             desc: str = "runs") -> tuple[list[dict], list[list[dict]]]:
    """For each point, {metric: (mean, low, high)} and the per-replication metrics."""
    jobs = [j for p in points for j in point_jobs(base, p, reps)]
    res = ex.map(run_metrics, jobs, desc=desc)
    per = [res[i * reps:(i + 1) * reps] for i in range(len(points))]
    return [summarize_reps(r) for r in per], per
