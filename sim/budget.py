"""Work and memory a run will need, estimated before it starts, and the limits on them.

A scenario the schema accepts can still ask for hours of work or more memory than the machine
has (a 1e7/s demand, a one-second time-series step over a year, a million GPUs at batch 4096).
`estimate` works it out from the scenario alone, quickly:

* requests: the demand model's mean intensity integrated over the horizon (first attempts and
  social feedback; retries add at most `max_attempts - 1` per rejected request), plus the
  admission windows (horizon / chunk_s), each costing about WINDOW_COST requests of work;
* memory: the arrays the run allocates, sized from the time-series intervals x tiers, the
  GPUs x max batch, the users, the largest chunk of arrivals and the demand grid.

`check` turns an estimate above `--max-requests` / `--max-memory` into one InputError that
gives the estimate and the flag to raise.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from sim.errors import InputError

# Requests of work one admission window or policy event costs (Python per-window overhead:
# ~90 us measured against ~0.25 us a request in the fleet loop).
WINDOW_COST = 400
PERIODIC = {"autoscale": "period_s", "throttling": "check_s", "aimd": "window_s",
            "gradient2": "window_s"}  # policies that wake the run every so often
INTERVAL_COST = 100  # ... and one time-series interval (summaries, figures, CSV rows)
DEFAULT_MAX_REQUESTS = 10**9  # ~5 min of the fleet loop at its measured ~4M requests/s
SERIES_BYTES = 8 + 4 * 8 + 4 * 8 + 200 * 4 + 8 + 6 * 8  # per interval and tier (engine, fleet)
DRR_ROUNDS = 1000  # DRR: a quantum x weight at least 1/1000 of one request's GPU time


def physical_memory() -> int:
    """Bytes of RAM of this machine (8 GiB when it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def default_max_memory() -> int:
    """Half the machine's RAM: the rest is left for the reports and the system."""
    return physical_memory() // 2


_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(s: str) -> int:
    """'8G', '512M', '2e9' or a plain byte count."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+]?[0-9]{1,2})?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", s or "")
    if not m:
        raise ValueError(f"not a size: {s[:40]!r} (e.g. 8G, 512M)")
    v = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not 1 <= v <= 2**60:
        raise ValueError(f"size out of range: {s[:40]!r}")
    return int(v)


def fmt_bytes(n: float) -> str:
    for unit, f in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{n / 2**10:.0f} KiB"


def fmt_count(n: float) -> str:
    for unit, f in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= f:
            return f"{n / f:.1f}{unit}"
    return f"{n:.0f}"


@dataclass
class Estimate:
    requests: float  # first attempts + social feedback of the simulated cell
    windows: int  # admission windows (horizon / chunk_s) and periodic policy events
    intervals: int  # time-series intervals (horizon / outputs.interval_s)
    memory: float  # bytes of the run's arrays
    parts: dict[str, float]  # memory by what sizes it

    @property
    def work(self) -> float:
        return self.requests + WINDOW_COST * self.windows + INTERVAL_COST * self.intervals

    def line(self, name: str) -> str:
        big = max(self.parts, key=self.parts.get)
        return (f"{name}: about {fmt_count(self.requests)} requests in {self.windows:,} windows "
                f"and {self.intervals:,} intervals, "
                f"{fmt_bytes(self.memory)} of arrays (most for {big})")


def _windows(sc) -> int:
    """Admission windows plus the wake-ups of periodic policies (each one syncs the run)."""
    n = math.ceil(sc.horizon / sc.chunk_s)
    for spec in sc.policies:
        n += len(spec.schedule)
        key = PERIODIC.get(spec.policy)
        p = spec.params()
        if key is not None:
            v = p.get(key, 60.0)
            if isinstance(v, int | float) and v > 0:
                n += math.ceil(sc.horizon / v)
        elif spec.policy == "failures":  # a failure and a repair per GPU per MTBF + MTTR
            m, r = p.get("mtbf_h"), p.get("mttr_h")
            if isinstance(m, int | float) and isinstance(r, int | float) and m + r > 0:
                gpus = sum(max(q.gpus, q.max_gpus or 0) for q in sc.fleet.pools) * sc.cell_fraction
                n += math.ceil(2 * gpus * sc.horizon / ((m + r) * 3600.0))
    return n


def _intervals(sc) -> int:
    return math.ceil(sc.horizon / (sc.outputs.interval_s or max(sc.horizon / 1000.0, 1e-3))) + 1


def _static_memory(sc) -> dict[str, float]:
    """Memory that follows from the scenario's numbers alone (no demand model needed)."""
    h = sc.horizon
    n_int = _intervals(sc)
    nk = len(sc.tiers)
    f = sc.cell_fraction
    gpus = 0
    for p in sc.fleet.pools:
        g = p.gpus if f == 1 else max(1, round(p.gpus * f))
        gpus += max(g, round((p.max_gpus or 0) * f))
    for spec in sc.policies:  # an autoscaler's ceiling sizes the worker arrays too
        mg = spec.params().get("max_gpus")
        if isinstance(mg, int) and not isinstance(mg, bool):
            gpus = max(gpus, round(mg * f))
    b = max(p.max_batch for p in sc.fleet.pools)
    parts = {
        "the time series (intervals x tiers)": 1.5 * n_int * nk * SERIES_BYTES,
        "the GPUs (GPUs x max batch)": gpus * (24.0 * b + 8.0 * len(sc.fleet.pools) + 64.0),
    }
    d = sc.demand
    if d.model == "viral":
        grid = h / d.grid_s + 2
        parts["the demand grid (horizon / grid_s)"] = 96.0 * grid * len(d.waves)
    return parts


def estimate(sc) -> Estimate:
    """Requests, windows and memory of a run of `sc`, from its scenario alone."""
    parts = _static_memory(sc)
    windows = _windows(sc)
    pre = sum(parts.values())
    if pre > 2**50:  # hopeless already: do not build a demand model that large
        return Estimate(math.inf, windows, _intervals(sc), pre, parts)
    from sim.demand import build_demand

    model = build_demand(sc)
    step = max(60.0, sc.horizon / 20000.0)
    rate = model.expected(sc.horizon, step)["rate"]
    total = float(rate.cumulative(sc.horizon) - rate.cumulative(0.0))
    peak = float(max(rate.r.max(), 0.0)) if len(rate.r) else 0.0
    users = getattr(model, "n_users", None) or getattr(model, "users", 0) or 0
    parts["the users"] = 32.0 * users
    parts["one window of arrivals (peak rate x chunk_s)"] = 64.0 * peak * sc.chunk_s * 2
    return Estimate(max(total, 0.0), windows, _intervals(sc), sum(parts.values()), parts)


def check(sc, max_requests: float | None = None, max_memory: float | None = None,
          copies: int = 1) -> Estimate:
    """The estimate of `sc`, or an InputError when it is above a limit (`copies` runs at once
    for plan/compare workers)."""
    from sim.engine import build_pools

    check_drr(sc, build_pools(sc))  # profiles load (and fail) here, before the estimate shows
    max_requests = DEFAULT_MAX_REQUESTS if max_requests is None else max_requests
    max_memory = default_max_memory() if max_memory is None else max_memory
    static = _static_memory(sc)
    if sum(static.values()) * copies > max_memory:  # before building the demand model
        e = Estimate(math.nan, _windows(sc), _intervals(sc), sum(static.values()),
                     static)
    else:
        e = estimate(sc)
    big = max(e.parts, key=e.parts.get)
    if e.memory * copies > max_memory:
        raise InputError(
            sc.source, "(estimate)",
            f"needs about {fmt_bytes(e.memory * copies)} of memory"
            + (f" ({copies} runs at once)" if copies > 1 else "")
            + f", mostly for {big}; the limit is {fmt_bytes(max_memory)}: raise it with "
            "--max-memory, or coarsen the scenario (outputs.interval_s, max_batch, GPUs)")
    if e.work > max_requests:
        raise InputError(
            sc.source, "(estimate)",
            f"about {fmt_count(e.requests)} requests, {e.windows:,} windows and {e.intervals:,} "
            "intervals "
            f"(~{fmt_count(e.work)} request-equivalents of work); the limit is "
            f"{fmt_count(max_requests)}: raise it with --max-requests, or lower the demand, "
            "the horizon or cell_fraction, or raise chunk_s or outputs.interval_s")
    return e


def check_drr(sc, pools=None) -> None:
    """DRR picks (simulator and gateway) loop over the tiers adding quanta until one covers a
    request's GPU time: a quantum far below that time would make each pick take millions of
    rounds, so it is refused."""
    if sc.scheduler.discipline != "drr":
        return
    if pools is None:
        from sim.engine import build_pools

        pools = build_pools(sc)
    cost = max(p.cost.batch_time(1) for p in pools)
    if sc.request_classes is not None:  # a request costs its class (steps, encode)
        from sim.classes import build_classes

        cs = build_classes(sc, pools)
        cost = max([cost] + [
            cs.cost[j][g].batch_time(1, cs.steps[c])
            + (cs.enc[j][g][1] if cs.encode[c] and cs.enc[j][g] is not None else 0.0)
            for c, g in enumerate(cs.group) for j in range(len(pools)) if cs.cost[j][g] is not None])
    q = sc.scheduler.quantum_s * min(t.weight for t in sc.tiers)
    if q * DRR_ROUNDS < cost:
        raise InputError(
            sc.source, "scheduler.quantum_s",
            f"quantum_s x the smallest weight ({q:.3g} s) must be at least 1/{DRR_ROUNDS} of one "
            f"request's GPU time ({cost:.3g} s): raise quantum_s")
