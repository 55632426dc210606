"""Whether a cell (cell_fraction < 1) behaves like the whole service it stands for.

A cell has cell_fraction of the users and of the GPUs, so per-GPU load is the same, but its
arrivals are 1/cell_fraction times sparser: a batch that fills within its wait in the
service may not in the cell, and a pool of a few GPUs multiplexes worse than one of
hundreds. Both are checked at the demand's peak, from the model's mean intensity:

* batch fill: arrivals in one batch wait across the pool, lambda x share x max_wait_s, against
  max_batch. Below max_batch in the cell but not in the service, the cell's batches run part
  full where the service's fill (smaller batches, lower throughput, other latencies).
* multiplexing: fewer than MIN_GPUS GPUs in a pool where the service has more. Random
  fluctuations of load relative to capacity scale as 1/sqrt(GPUs) (square-root staffing):
  ~18% at 30 GPUs, against ~3% at 1,000.
"""

from __future__ import annotations

import numpy as np

MIN_GPUS = 30


def regime(sc, demand, pools) -> dict:
    """Figures and warnings for a run's cell (`demand` and `pools` at the cell's scale)."""
    f = sc.cell_fraction
    out: dict = {"cell_fraction": f, "warnings": []}
    if f >= 1:
        return out
    t = np.linspace(0.0, sc.horizon, 2001)
    peak = float(np.max(demand.rate(t)))
    out["peak_rate_per_s"] = round(peak, 3)
    total = sum(max(p.gpus, 1) for p in pools)
    per_pool = []
    for p, spec in zip(pools, sc.fleet.pools, strict=True):
        lam = peak * max(p.gpus, 1) / total  # arrivals shared across pools by GPU count
        fill_cell = lam * p.max_wait_s / p.max_batch
        fill_service = fill_cell / f
        per_pool.append({"pool": p.name, "gpus": p.gpus, "service_gpus": spec.gpus,
                         "batch_fill": round(fill_cell, 3), "service_batch_fill": round(fill_service, 3)})
        if p.max_batch > 1 and fill_cell < 1 <= fill_service:
            out["warnings"].append(
                f"pool {p.name}: at the peak the cell brings {lam * p.max_wait_s:.1f} arrivals per "
                f"{p.max_wait_s:g} s batch wait against max_batch {p.max_batch} (the whole service: "
                f"{lam * p.max_wait_s / f:.0f}); its batches run part full where the service's fill")
        if p.gpus < MIN_GPUS < spec.gpus:
            out["warnings"].append(
                f"pool {p.name}: {p.gpus} GPUs in the cell stand for {spec.gpus}; load fluctuates "
                f"~{1 / np.sqrt(p.gpus):.0%} of capacity against ~{1 / np.sqrt(spec.gpus):.0%} in the service")
    out["pools"] = per_pool
    if out["warnings"]:
        out["warnings"].append(f"cell_fraction {f:g} is too small to stand for the whole service: "
                               "use a larger cell (or 1), or check with `floodgate run --check-cell`")
    return out


def headline(s: dict) -> dict[str, float]:
    """The figures a cell should reproduce, from a summary.json (whole-service counts)."""
    out: dict[str, float] = {}
    for name, t in s["tiers"].items():
        off = t["offered"] or 1
        out[f"{name} completed share"] = t["completed"] / off
        out[f"{name} shed share"] = t["rejected"].get("shed", 0) / off
        out[f"{name} p50 s"] = t["latency_s"]["p50"]
        out[f"{name} p95 s"] = t["latency_s"]["p95"]
    f = s["fleet"]
    out["mean batch"] = f["mean_batch_size"] or 0.0
    out["GPU-hours"] = f["gpu_hours"]
    out["utilisation"] = f["utilization_mean"]
    return {k: (float(v) if v is not None else float("nan")) for k, v in out.items()}


def check_cell(sc, other: float) -> dict:
    """Run the scenario at its cell_fraction and at `other` on common random numbers (same
    seed: the same chunk keys draw each cell's demand) and compare the headline figures."""
    from sim.engine import simulate
    from sim.metrics.summary import summarize

    sizes = [sc.cell_fraction, other]
    figs = [headline(summarize(simulate(sc.model_copy(update={"cell_fraction": f})))) for f in sizes]
    rows = []
    for k in figs[0]:
        a, b = figs[0][k], figs[1][k]
        rel = (a - b) / abs(b) if b else (0.0 if a == b else float("inf"))
        rows.append({"figure": k, "cell": round(a, 6), "other": round(b, 6), "rel_diff": round(rel, 4)})
    return {"cell_fraction": sizes[0], "other_cell_fraction": sizes[1], "figures": rows,
            "max_abs_rel_diff": max(abs(r["rel_diff"]) for r in rows)}
