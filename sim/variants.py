"""Policy what-if: variants of one scenario side by side, on the same random numbers.

A variant is a set of overrides deep-merged into the scenario (mappings merge, lists such as
`policies` replace). Every variant runs the same seeds, so differences come from the policies,
not from luck of the draw.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.errors import InputError
from sim.inputs import read_yaml
from sim.metrics.summary import with_calendar_time
from sim.scenario import Scenario, merge, parse_scenario
from sim.sweep import Executor, Job


def run_job_full(job: Job) -> tuple[dict, pd.DataFrame]:
    """Summary and time series of one run (executed in a worker)."""
    from sim.engine import simulate
    from sim.metrics.summary import summarize, timeseries

    r = simulate(parse_scenario(job.scenario, job.source), start=job.start, threads=job.threads)
    return summarize(r), timeseries(r)


def load_variant(arg: str) -> tuple[str, dict]:
    if "=" not in arg:
        raise InputError("--variant", arg, "expected NAME=OVERRIDES.yaml")
    name, path = arg.split("=", 1)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise InputError(path, "(root)", "overrides are a YAML mapping")
    return name, data


def variant_dicts(sc: Scenario, extra: list[tuple[str, dict]]) -> dict[str, dict]:
    """Validated scenario dicts for the baseline and each variant."""
    base = sc.model_dump(mode="json", exclude={"source", "variants"})
    out = {"baseline": base}
    for name, over in [*sc.variants.items(), *extra]:
        d = merge(base, over)
        d["name"] = sc.name
        parse_scenario(d, f"{sc.source} (variant {name})")  # errors name the variant
        out[name] = d
    return out


def jain(x: np.ndarray) -> float | None:
    """Jain's fairness index (sum x)^2 / (n sum x^2)."""
    x = np.asarray(x, float)
    if len(x) == 0 or not np.any(x):
        return None
    return float(x.sum() ** 2 / (len(x) * (x ** 2).sum()))


def recovery_time(ts: pd.DataFrame, tiers: list, slos: list[float]) -> float | None:
    """Hours from the demand peak until every tier's p95 is back within SLO for good."""
    offered = sum(ts[f"{t}.offered"] for t in tiers)
    peak = int(np.argmax(offered.to_numpy()))
    bad = np.zeros(len(ts), bool)
    for t, s in zip(tiers, slos, strict=True):
        p95 = ts[f"{t}.latency_p95_s"].to_numpy()
        bad |= np.nan_to_num(p95, nan=0.0) > s
    after = np.flatnonzero(bad[peak:])
    if len(after) == 0:
        return 0.0
    last = peak + after[-1]
    if last >= len(ts) - 1:
        return None  # not recovered within the horizon
    return float(ts["t_h"].iloc[last + 1] - ts["t_h"].iloc[peak])


def metrics(sc: Scenario, summary: dict, ts: pd.DataFrame) -> dict:
    tiers = [t.name for t in sc.tiers]
    T = summary["tiers"]
    served = np.array([T[t]["completed"] / T[t]["offered"] if T[t]["offered"] else 1.0 for t in tiers])
    pol = summary.get("policies", {})
    dem = summary.get("demand", {})
    return {
        "tiers": {t: {
            "goodput": T[t]["goodput"],
            "offered": T[t]["offered"],
            "completed": T[t]["completed"],
            "rejected": T[t]["rejected"],
            "p50_s": T[t]["latency_s"]["p50"], "p95_s": T[t]["latency_s"]["p95"],
            "p99_s": T[t]["latency_s"]["p99"],
            "slo_met": T[t]["slo_met"],
        } for t in tiers},
        "utilization": summary["fleet"]["utilization_mean"],
        "gpu_hours": summary["fleet"]["gpu_hours"],
        "gpu_cost": summary["money"]["gpu_cost"],
        "revenue": summary["money"]["revenue"],
        "jain_fairness": jain(served),
        "recovery_h": recovery_time(ts, tiers, [t.slo_s for t in sc.tiers]),
        "retry_amplification": dem.get("retry_amplification"),
        "false_blocks": _collect(pol, "false_blocks"),
        "degraded_share": _collect(pol, "degraded_share"),
    }


def _collect(pol: dict, key: str):
    """A figure the policies section reports, summed over policies (None if none does)."""
    vals = [p[key] for p in pol.values() if isinstance(p, dict) and key in p]
    if not vals:
        return None
    if all(isinstance(v, dict) for v in vals):
        out: dict = {}
        for v in vals:
            for k, x in v.items():
                out[k] = out.get(k, 0) + (x or 0)
        return out
    return sum(v for v in vals if isinstance(v, (int, float)) and not math.isnan(v))


def run_compare(sc: Scenario, extra: list[tuple[str, dict]], ex: Executor) -> dict:
    dicts = variant_dicts(sc, extra)
    names = list(dicts)
    res = ex.map(run_job_full, [Job(dicts[n], sc.source) for n in names], desc="variants")
    out = {"scenario": sc.name, "seed": sc.seed, "variants": {}}
    series = {}
    for n, (summary, ts) in zip(names, res, strict=True):
        vsc = parse_scenario(dicts[n], sc.source)
        out["variants"][n] = metrics(vsc, summary, ts)
        series[n] = with_calendar_time(ts, vsc)  # figures on calendar time
    return out, series
