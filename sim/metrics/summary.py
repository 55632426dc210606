"""From a finished run to the numbers a planner reads: summary.json and the time series."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.metrics.sketch import RELATIVE_ERROR, quantiles
from sim.outcomes import REASONS

QS = (0.5, 0.95, 0.99)


def _r(x: float, nd: int = 6) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else round(x, nd)


def _pcts(hist: np.ndarray, hop: float = 0.0) -> dict:
    q = quantiles(hist, QS) + hop
    return {"p50": _r(q[0]), "p95": _r(q[1]), "p99": _r(q[2])}


def summarize(run) -> dict:
    """summary.json of a run: per tier, fleet and money. Deterministic for a scenario and seed."""
    sc, S = run.sc, run.fleet.S
    measured = sc.horizon - min(sc.outputs.warmup_s, sc.horizon)
    x = 1.0 / sc.cell_fraction  # a cell's counts, scaled to the whole service

    def n(v) -> int:
        return int(round(float(v) * x))

    rej = run.rejections()
    hop = sc.gateway.hop_latency_s  # replica to fleet: on every admitted request's latency
    tiers = {}
    revenue = 0.0
    for k, t in enumerate(sc.tiers):
        done = int(S.done_stats[k])
        left = int(S.n_sys[k])
        lat = _pcts(S.lat_hist[k], hop)
        adm = int(S.adm_stats[k])
        n_sys_stats = int(S.done_stats[k] + S.aband_stats[k])
        rev = float(S.completed[k]) * t.price_per_image * x
        revenue += rev
        tiers[t.name] = {
            "offered": n(run.offered[k]),
            "admitted": n(S.admitted[k]),
            "completed": n(S.completed[k]),
            "rejected": {r: n(rej[k, j]) for j, r in enumerate(REASONS)},
            "abandoned": n(S.abandoned[k]),
            "in_system_end": n(left),
            "latency_s": {**lat, "mean": _r(S.sum_lat[k] / done + hop) if done else None},
            "wait_s": {**_pcts(S.wait_hist[k], hop),
                       "mean": _r(S.sum_wait[k] / S.done_stats[k] + hop) if done else None},
            "goodput": n(S.good[k]),
            "goodput_per_s": _r(S.good[k] * x / measured) if measured else None,
            "slo_s": t.slo_s,
            "slo_met": bool(lat["p95"] is not None and lat["p95"] <= t.slo_s),
            "revenue": round(rev, 2),
            # Little's law, over the measured window: L = lambda * W
            "little": {
                "L": _r(S.area_sys[k] / measured) if measured else None,
                "lambda": _r(adm / measured) if measured else None,
                "W": _r(S.sum_sys[k] / n_sys_stats) if n_sys_stats else None,
            },
        }
    classes = _classes(run, n) if getattr(run, "classes", None) is not None else None
    gpu_hours = float(S.area[1]) / 3600.0 * x
    by_option = gpu_cost_by_option(run)
    gpu_cost = sum(by_option.values())
    days = (sc.horizon - run.start) / 86400.0
    n_img = n(S.completed.sum())
    return {
        "scenario": sc.name,
        "seed": sc.seed,
        "cell_fraction": sc.cell_fraction,
        "horizon_s": sc.horizon,
        "warmup_s": sc.outputs.warmup_s,
        "quantile_relative_error": round(RELATIVE_ERROR, 6),
        "tiers": tiers,
        "fleet": {
            "gpu_hours": round(gpu_hours, 4),
            "utilization_mean": _r(S.area[0] / S.area[1]) if S.area[1] else None,
            "batches": int(S.batches[0]),
            "mean_batch_size": _r(S.batches[1] / S.batches[0]) if S.batches[0] else None,
            "pools": {p.name: {"gpus_end": n(run.fleet.gpus(j)), "cost_model": p.cost.source,
                               "images_per_s_per_gpu_at_max_batch":
                                   _r(p.cost.images_per_s(p.max_batch), 4)}
                      for j, p in enumerate(run.pools)},
            **({"spot": {run.pools[sp.j].name: sp.report(x) for sp in run.spot}}
               if getattr(run, "spot", None) else {}),
        },
        "money": {
            "revenue": round(revenue, 2),
            "gpu_cost": round(gpu_cost, 2),
            "gpu_cost_per_day": round(gpu_cost / days, 2) if days > 0 else None,
            "gpu_cost_by_option": {o: round(v, 2) for o, v in by_option.items()},
            "cost_per_image": _r(gpu_cost / n_img) if n_img else None,
        },
        **({"classes": classes} if classes is not None else {}),
        **({"regions": regions_summary(run, n, hop)} if getattr(run, "regions", None) is not None else {}),
        "demand": _demand(run),
        "policies": _policies(run),
    }


def _classes(run, n) -> dict:
    """Per request class (arrivals after warm-up): its batch group, requests started, the
    mean size and fill (size / the pool's max_batch) of the batches they ran in, completions,
    mean latency, within-SLO count; and per pool the model swaps."""
    S, cs = run.fleet.S, run.classes
    out = {}
    for c, name in enumerate(cs.names):
        st, done = S.cls_stats[c, 0], S.cls_stats[c, 3]
        out[name] = {
            "group": cs.group_names[cs.group[c]],
            "started": n(st),
            "mean_batch_size": _r(S.cls_stats[c, 1] / st) if st else None,
            "batch_fill": _r(S.cls_stats[c, 2] / st) if st else None,
            "completed": n(done),
            "latency_mean_s": _r(S.cls_stats[c, 4] / done) if done else None,
            "goodput": n(S.cls_stats[c, 5]),
        }
    return {"per_class": out,
            "model_swaps": {p.name: n(S.swaps[j]) for j, p in enumerate(run.pools)}}


def regions_summary(run, n, hop: float = 0.0) -> dict:
    """Fleet regions (sim/regions.py). Per users' region: arrivals, completions, rejections by
    reason (timeouts: patience and CoDel), in system at the end, requests spilled away from
    home (on arrival, or moved by an outage), latency quantiles (network latency included)
    and goodput of arrivals after warm-up, and which fleet regions served them. Per fleet
    region: its pools, live GPUs at the end, completions. offered = completed + rejected +
    in_system_end, per users' region (cell counts before scaling)."""
    S, rg = run.fleet.S, run.regions
    t_out = REASONS.index("timeout")
    users = {}
    for u, name in enumerate(rg.users):
        rej = run.reg_rejected[u].copy()
        rej[t_out] += S.reg_drop[u]
        cnt = S.reg_stats[u, 0]
        users[name] = {
            "home": rg.names[int(rg.home[u])],
            "offered": n(run.reg_offered[u]),
            "completed": n(S.reg_done[u].sum()),
            "rejected": {r: n(rej[j]) for j, r in enumerate(REASONS)},
            "in_system_end": n(S.reg_nsys[u]),
            "spilled": n(S.reg_spill[u]),
            "latency_s": {**_pcts(S.reg_lat_hist[u], hop),
                          "mean": _r(S.reg_stats[u, 1] / cnt + hop) if cnt else None},
            "network_latency_mean_s": _r(S.reg_stats[u, 3] / cnt) if cnt else None,
            "goodput": n(S.reg_stats[u, 2]),
            "served_by": {f: n(S.reg_done[u, r]) for r, f in enumerate(rg.names)},
        }
    fleet = {}
    for r, name in enumerate(rg.names):
        own = [j for j in range(len(run.pools)) if rg.pool_region[j] == r]
        fleet[name] = {"pools": [run.pools[j].name for j in own],
                       "gpus_end": n(sum(run.fleet.gpus(j) for j in own)),
                       "completed": n(S.reg_done[:, r].sum()),
                       "out_at_end": bool(S.reg_down[r])}
    return {"users": users, "fleet": fleet}


def _policies(run) -> dict:
    """What each policy did (its own report), keyed by name (and position when repeated)."""
    out = {}
    names = [ap.policy.name for ap in run.policies]
    for i, ap in enumerate(run.policies):
        key = ap.policy.name if names.count(ap.policy.name) == 1 else f"{ap.policy.name}[{i}]"
        for pol in ap.each():
            pol.scale = 1.0 / run.sc.cell_fraction  # its counts, scaled to the whole service
        # per-replica limiter state: each gateway replica's own object reports
        rep = {"per_replica": [p.report() for p in ap.replicas]} if ap.replicas else ap.policy.report()
        out[key] = {"tiers": [t for t, m in zip(ap.policy.tiers, ap.tiers, strict=True) if m],
                    "enabled_at_end": ap.enabled, **rep,
                    **({"fired": ap.fired} if ap.fired else {})}
    return out


def _demand(run) -> dict:
    from sim.demand.feedback import demand_summary

    return demand_summary(run)


def gpu_cost_by_option(run) -> dict[str, float]:
    """Whole-service $ per purchase option over the run: reserved GPUs every hour, on-demand
    and spot ones while live (sim/fleet/purchase.py), from the GPUs-live log of each pool."""
    from sim.fleet.purchase import OPTIONS, Ledger, Prices

    out = dict.fromkeys(OPTIONS, 0.0)
    for j, p in enumerate(run.pools):
        led = p.ledger or Ledger(p.max_gpus, 0, 0, Prices(0.0, p.price_per_gpu_hour, 0.0))
        log = [(t, n) for t, pool, n in run.gpu_log if pool == j]
        for o, v in led.cost(log, run.start, run.sc.horizon).items():
            out[o] += v / run.sc.cell_fraction
    return out


def timeseries(run) -> pd.DataFrame:
    """Fixed-interval series: offered, admitted, completed, queue depth per tier, utilisation."""
    sc, S = run.sc, run.fleet.S
    dt = run.interval
    n = int(np.ceil(sc.horizon / dt))
    t = np.arange(n) * dt
    cols = {"t_s": t, "t_h": t / 3600.0}
    span = np.minimum(dt, sc.horizon - t)
    rej = run.ser_rejected[:n].copy()
    from sim.outcomes import KERNEL_REASON

    for j, r in enumerate(KERNEL_REASON):
        rej[:, :, r] += S.ser_rej[:n, :, j]
    lat = quantiles(S.ser_lat_hist[:n], (0.5, 0.95, 0.99), series=True) + sc.gateway.hop_latency_s
    for k, tier in enumerate(sc.tiers):
        nm = tier.name
        cols[f"{nm}.offered"] = run.ser_offered[:n, k]
        cols[f"{nm}.admitted"] = S.ser_admitted[:n, k]
        cols[f"{nm}.completed"] = S.ser_completed[:n, k]
        cols[f"{nm}.goodput"] = S.ser_good[:n, k]
        cols[f"{nm}.queue_depth"] = S.ser_queue[:n, k] / span
        for j, r in enumerate(REASONS):
            cols[f"{nm}.rejected.{r}"] = rej[:, k, j]
        cols[f"{nm}.latency_p50_s"] = lat[:, k, 0]
        cols[f"{nm}.latency_p95_s"] = lat[:, k, 1]
        cols[f"{nm}.latency_p99_s"] = lat[:, k, 2]
    act = S.ser_active[:n]
    cols["gpus_active"] = act / span
    cols["utilization"] = np.where(act > 0, S.ser_busy[:n] / np.where(act > 0, act, 1), np.nan)
    if getattr(run, "reg_series", None) is not None:
        cols.update(_region_columns(run, n, t, span))
    df = pd.DataFrame(cols)
    if sc.cell_fraction != 1:  # counts of one cell, scaled to the whole service
        scaled = [c for c in df.columns if not c.startswith("t_") and "latency" not in c and c != "utilization"]
        df[scaled] = df[scaled].astype(float) / sc.cell_fraction
    return df


def _region_columns(run, n: int, t: np.ndarray, span: np.ndarray) -> dict:
    """Per users' region (`region.NAME.*`): offered, completed, rejected (every reason,
    timeouts in the fleet included), timeouts, spilled, latency p50/p95/p99 (network latency
    and the gateway hop included; arrivals after warm-up); per fleet region
    (`fleet_region.NAME.*`): completions and mean live GPUs (sim/regions.py, RegionSeries)."""
    rs, rg = run.reg_series, run.regions
    hop = run.sc.gateway.hop_latency_s
    t_out = REASONS.index("timeout")
    cols = {}
    for u, name in enumerate(rg.users):
        rej = rs.rejected[:n, u].sum(axis=1) + rs.drop[:n, u]
        cols[f"region.{name}.offered"] = rs.offered[:n, u]
        cols[f"region.{name}.completed"] = rs.done[:n, u].sum(axis=1)
        cols[f"region.{name}.rejected"] = rej
        cols[f"region.{name}.rejected.timeout"] = rs.rejected[:n, u, t_out] + rs.drop[:n, u]
        cols[f"region.{name}.spilled"] = rs.spill[:n, u]
        for i, q in enumerate(("p50", "p95", "p99")):
            cols[f"region.{name}.latency_{q}_s"] = rs.lat[:n, u, i] + hop
    live = _gpus_live(run, t, span)
    for r, name in enumerate(rg.names):
        cols[f"fleet_region.{name}.completed"] = rs.done[:n, :, r].sum(axis=1)
        own = [j for j in range(len(run.pools)) if rg.pool_region[j] == r]
        cols[f"fleet_region.{name}.gpus_live"] = live[:, own].sum(axis=1)
    return cols


def _gpus_live(run, t: np.ndarray, span: np.ndarray) -> np.ndarray:
    """[interval, pool] mean live GPUs over each interval, from the gates' GPUs-live log."""
    out = np.zeros((len(t), len(run.pools)))
    end = t + span
    for j in range(len(run.pools)):
        log = [(a, m) for a, pool, m in run.gpu_log if pool == j]  # in time order
        for k, (a, m) in enumerate(log):
            b = log[k + 1][0] if k + 1 < len(log) else np.inf
            out[:, j] += m * np.clip(np.minimum(end, b) - np.maximum(t, a), 0, None)
    return out / np.where(span > 0, span, 1)[:, None]


def with_calendar_time(ts: pd.DataFrame, sc) -> pd.DataFrame:
    """The series with a `time` column first: calendar time (UTC) of each interval's start,
    from the scenario's `start`."""
    out = ts.copy()
    out.insert(0, "time", pd.to_datetime(sc.epoch + ts["t_s"].to_numpy(), unit="s", utc=True))
    return out
