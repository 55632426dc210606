"""How close the simulator came to the live gateway: percentiles, rejection rates,
throughput and queue depth per tier and phase; the headline is the worst tier against the
targets.

Replication 0 runs on the scenario's own seed, so each request meets the service noise and
retry draws the gateway gave it (common random numbers, sim.rng.keyed_uniform, and the same
failure times): the headline compares live with it, and what is left is fidelity, not
sampling noise. The other replications (other seeds: other noise, failures, retries) are the
band: the spread sampling alone makes. Live intervals come from a block bootstrap."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sim.fleet.kernel import HIST_BINS, HIST_GAMMA, HIST_MIN
from sim.scenario import Scenario

WINDOW_WALL_S = 10.0  # throughput window, wall seconds

@dataclass
class Setup:
    sc: Scenario
    path: Path
    duration: float  # wall seconds of schedule
    X: float  # simulated seconds per wall second
    drain: float  # wall seconds allowed after the schedule for the last answers
    reps: int
    kernel: str

    @property
    def horizon(self) -> float:
        return self.duration * self.X

    @property
    def interval(self) -> float:
        return self.X  # series step: one wall second

    @property
    def window(self) -> float:
        return WINDOW_WALL_S * self.X


# The one-fleet issue's targets, worst tier, whole run and each side of saturation.
TARGETS = {"p50_rel_err": 0.05, "p95_rel_err": 0.05, "p99_rel_err": 0.10,
           "rejection_abs_err_pp": 1.0, "throughput_rel_err": 0.03}
BLOCK_WALL_S = 2.0  # bootstrap block: latencies are correlated over a few seconds
QS = (0.5, 0.95, 0.99)


def pct(x: np.ndarray, q: float) -> float:
    """Nearest-rank percentile, the simulator's definition."""
    if len(x) == 0:
        return math.nan
    s = np.sort(x)
    return float(s[max(1, math.ceil(q * len(s))) - 1])


def _rel(a: float, b: float) -> float | None:
    return None if not (np.isfinite(a) and np.isfinite(b)) or b == 0 else float(a / b - 1.0)


def _band(v) -> list[float] | None:
    """[min, max] of the other seeds' figures (None: one replication, or not finite)."""
    v = np.asarray(v, float)[1:]
    return [float(v.min()), float(v.max())] if len(v) and np.isfinite(v).all() else None


def _ci(v: np.ndarray) -> list[float] | None:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else None


def _rnd(x, nd=6):
    if x is None:
        return None
    if isinstance(x, list):
        return [_rnd(v, nd) for v in x]
    return None if not np.isfinite(x) else round(float(x), nd)


def _columns(g: pd.DataFrame, tiers: list[str], reasons: list[str]) -> dict:
    """The record columns live_stats reads, as arrays: tier and reason as indices (-1: none
    of them), served, latency."""
    tk = {t: k for k, t in enumerate(tiers)}
    rk = {r: k for k, r in enumerate(reasons)}
    return {"tier": np.array([tk.get(t, -1) for t in g["tier"]], np.int64),
            "served": (g["status"] == 200).to_numpy(bool),
            "lat": g["latency_s"].to_numpy(float),
            "reason": np.array([rk.get(r, -1) if isinstance(r, str) else -1 for r in g["reason"]],
                               np.int64)}


def _stats(c: dict, idx: np.ndarray | None, tiers: list[str], reasons: list[str]) -> dict:
    tier, served, lat, reason = (c[k] if idx is None else c[k][idx] for k in ("tier", "served", "lat", "reason"))
    nr = len(reasons)
    ok = (tier >= 0) & (reason >= 0)
    rej = np.bincount(tier[ok] * nr + reason[ok], minlength=len(tiers) * nr).reshape(len(tiers), nr)
    out = {}
    for k, t in enumerate(tiers):
        m = tier == k
        x = lat[m & served]
        out[t] = {"n": int(m.sum()), "served": len(x), "q": [pct(x, q) for q in QS],
                  "rej": {r: int(rej[k, j]) for j, r in enumerate(reasons)}}
    return out


def live_stats(gw: pd.DataFrame, tiers: list[str], reasons: list[str]) -> dict:
    """Per tier: latency percentiles of served requests, rejection counts, attempts."""
    return _stats(_columns(gw, tiers, reasons), None, tiers, reasons)


def _blocks(g: pd.DataFrame, span: tuple[float, float], block: float, nb: int):
    g = g[(g["scheduled_t"] >= span[0]) & (g["scheduled_t"] < span[1])]
    b = np.floor((g["scheduled_t"].to_numpy(float) - span[0]) / block).astype(np.int64)
    return g, [np.flatnonzero(b == i) for i in range(nb)]


def bootstrap(gw: pd.DataFrame, span: tuple[float, float], block: float, tiers, reasons,
              B: int, rng: np.random.Generator, sim: pd.DataFrame | None = None
              ) -> tuple[list[dict], list[dict] | None]:
    """Local block bootstrap over scheduled time (Paparoditis and Politis): each block of
    attempts is replaced by itself or a neighbour, so resamples keep the demand ramp and
    correlations shorter than a block, which an i.i.d. or plain block bootstrap would not.
    With `sim` (the same-noise replication's attempts, sim_attempts) the same blocks of it
    too, resample by resample: what the two sides share (the schedule, the noise) then
    moves both, and the spread of their difference is that of the error, not of live alone."""
    nb = max(1, math.ceil((span[1] - span[0]) / block - 1e-9))
    g, groups = _blocks(gw, span, block, nb)
    cl = _columns(g, tiers, reasons)
    if sim is not None:
        gs, sgroups = _blocks(sim, span, block, nb)
        cs = _columns(gs, tiers, reasons)
    out, out_sim = [], ([] if sim is not None else None)
    for _ in range(B):
        pick = np.clip(np.arange(nb) + rng.integers(-1, 2, nb), 0, nb - 1)
        out.append(_stats(cl, np.concatenate([groups[i] for i in pick]), tiers, reasons))
        if sim is not None:
            out_sim.append(_stats(cs, np.concatenate([sgroups[i] for i in pick]), tiers, reasons))
    return out, out_sim


def sim_attempts(run, tiers: list[str]) -> pd.DataFrame:
    """Per offered attempt of a traced run (Run(trace=True)), in the live records' columns:
    scheduled_t (its arrival), tier, status (200 served, else 0), reason and latency_s at
    the run histogram's resolution plus the hop, so its nearest-rank percentiles are the
    histogram's (sim_stats)."""
    from sim.fleet import kernel as K
    from sim.metrics.sketch import _rep
    from sim.outcomes import REASONS

    end = {rid: t for kind, rid, t, _a in run.trace_events if kind == K.COMPLETED}
    drop = {rid for kind, rid, _t, _a in run.trace_events if kind == K.DROPPED}  # patience
    rows = [(o[0], o[2], o[5], o[6]) for o in run.trace_offered]
    t, tier, code, rid = (np.array(c) for c in zip(*rows, strict=True)) if rows else [np.zeros(0)] * 4
    done = np.array([end.get(int(r), np.nan) if c < 0 else np.nan for r, c in zip(rid, code, strict=True)])
    lat = done - t
    with np.errstate(invalid="ignore", divide="ignore"):
        b = 1 + np.floor(np.log(np.maximum(lat, HIST_MIN) / HIST_MIN) / math.log(HIST_GAMMA))
    b = np.clip(np.where(lat < HIST_MIN, 0, np.nan_to_num(b)), 0, HIST_BINS - 1)
    served = np.isfinite(done)
    reason = [REASONS[int(c)] if c >= 0 else None if ok else "timeout" if int(r) in drop else "unfinished"
              for c, ok, r in zip(code, served, rid, strict=True)]
    return pd.DataFrame({"scheduled_t": t, "tier": [tiers[int(k)] for k in tier],
                         "status": np.where(served, 200, 0), "reason": reason,
                         "latency_s": np.where(served, _rep(b, HIST_MIN, HIST_GAMMA), np.nan)
                         + run.sc.gateway.hop_latency_s})


def paired_ci(boot: list[dict], boot_sim: list[dict], t: str, j: int | None = None,
              r: str | None = None) -> list[float] | None:
    """95% interval of the error over paired resamples: sim/live - 1 of quantile j, or the
    rejection rate's sim - live in percentage points for reason r."""
    v = []
    for L, S in zip(boot, boot_sim, strict=True):
        a, b = L[t], S[t]
        if j is not None:
            v.append(b["q"][j] / a["q"][j] - 1 if a["q"][j] > 0 else np.nan)
        elif a["n"] and b["n"]:
            v.append(100 * (b["rej"][r] / b["n"] - a["rej"][r] / a["n"]))
    return _ci(np.asarray(v, float))


def sim_stats(runA, runB, span: tuple[float, float], phase: str, tiers, reasons) -> dict:
    """The simulator's figures for a phase. Latency by arrival time comes from the run
    histograms: run B has warmup at the saturation time, so it holds arrivals after it,
    and A - B those before it."""
    from sim.metrics.sketch import quantiles
    from sim.outcomes import KERNEL_REASON, REASONS

    S = runA.fleet.S
    iv = np.arange(runA.n_int) * runA.interval
    m = (iv >= span[0] - 1e-9) & (iv < span[1] - 1e-9)
    rej = runA.ser_rejected.copy()  # admission policies' rejections, then the fleet loop's
    for j, r in enumerate(KERNEL_REASON):
        rej[:, :, r] += S.ser_rej[:, :, j]
    out = {}
    for k, t in enumerate(tiers):
        if phase == "above":
            h = runB.fleet.S.lat_hist[k]
        elif phase == "below":
            h = S.lat_hist[k] - runB.fleet.S.lat_hist[k]
        else:
            h = S.lat_hist[k]
        out[t] = {"n": int(runA.ser_offered[m, k].sum()), "served": int(h.sum()),
                  "q": [float(v) + runA.sc.gateway.hop_latency_s for v in quantiles(h, QS)],
                  "hist": h, "hop": runA.sc.gateway.hop_latency_s,
                  "rej": {r: int(rej[m, k, REASONS.index(r)].sum()) if r in REASONS else 0
                          for r in reasons}}
    return out


def level_err(hist: np.ndarray, x: float, q: float) -> float:
    """How far q is from the simulated share below x: 0 when q lies between the shares
    below and at or below x's 1% bin (x is then the simulated q-quantile, to the bin),
    else the distance to the nearer one, signed (positive: the simulation has more below)."""
    from sim.fleet.kernel import HIST_BINS, HIST_GAMMA, HIST_MIN, hist_bin

    n = hist.sum()
    if n == 0 or not np.isfinite(x):
        return math.nan
    cum = np.cumsum(hist) / n
    b = hist_bin(x, HIST_MIN, math.log(HIST_GAMMA), HIST_BINS)
    lo, hi = (float(cum[b - 1]) if b else 0.0), float(cum[b])
    return lo - q if lo > q else (hi - q if hi < q else 0.0)


def series(runs, gw: pd.DataFrame, st: Setup, tiers) -> dict:
    """Completions per throughput window and queue depth per interval, both sides."""
    T = st.horizon + st.drain * st.X
    wedges = np.arange(0.0, T + 1e-9, st.window)
    qedges = np.arange(0.0, T + 1e-9, st.interval)
    out = {"window_edges_s": wedges.tolist(), "queue_edges_s": qedges.tolist(), "tiers": {}}
    nq = len(qedges) - 1
    for k, t in enumerate(tiers):
        g = gw[gw["tier"] == t]
        done = g.loc[g["status"] == 200, "done_s"].to_numpy(float)
        live_thr = np.histogram(done, wedges)[0]
        sim_thr = []
        sim_q = []
        for run in runs:
            S = run.fleet.S
            c = S.ser_completed[:, k]
            per = int(round(st.window / run.interval))
            nw = len(wedges) - 1
            sim_thr.append([int(c[i * per:(i + 1) * per].sum()) for i in range(nw)])
            sim_q.append((S.ser_queue[:nq, k] / run.interval).tolist())
        # live queue: admitted requests wait from arrival to start (or to the end, if never
        # started: timed out or cut off by the drain)
        adm = g[g["start_s"].notna() | g["reason"].isin(["timeout", "drain_timeout"])]
        a = adm["arrival_s"].to_numpy(float)
        e = adm["start_s"].fillna(adm["done_s"]).to_numpy(float)
        area = np.clip(qedges[None, :] - a[:, None], 0, (e - a)[:, None]).sum(axis=0)
        out["tiers"][t] = {"live_completed": live_thr.tolist(), "sim_completed": sim_thr,
                           "live_completed_iv": np.histogram(done, qedges)[0].tolist(),
                           "sim_completed_iv": [r.fleet.S.ser_completed[:nq, k].tolist() for r in runs],
                           "live_queue": (np.diff(area) / st.interval).tolist(),
                           "sim_queue": sim_q}
    return out


def compare(st: Setup, gw: pd.DataFrame, simA: list, simB: list, t_sat: float | None,
            ser: dict, B: int = 500) -> dict:
    """Per tier and phase: simulated vs live, relative errors, bootstrap intervals."""
    from sim.outcomes import REASONS

    tiers = [t.name for t in st.sc.tiers]
    reasons = list(REASONS)
    H = st.horizon
    phases = {"all": (0.0, H)}
    if t_sat is not None:
        phases |= {"below": (0.0, t_sat), "above": (t_sat, H)}
    rng = np.random.default_rng(st.sc.seed)
    # the same-noise replication's attempts, for the paired intervals (traced: validate's first)
    sim0 = sim_attempts(simA[0], tiers) if simA[0].trace else None
    res = {}
    for ph, span in phases.items():
        g = gw[(gw["scheduled_t"] >= span[0]) & (gw["scheduled_t"] < span[1])]
        lv = live_stats(g, tiers, reasons)
        boot, boot_sim = bootstrap(gw, span, BLOCK_WALL_S * st.X, tiers, reasons, B, rng, sim0)
        sims = [sim_stats(a, b, span, ph, tiers, reasons) for a, b in zip(simA, simB, strict=True)]
        tiers_out = {}
        for t in tiers:
            lat = {}
            for j, q in enumerate(QS):
                name = f"p{round(q * 100)}"
                L = lv[t]["q"][j]
                Lb = np.array([b[t]["q"][j] for b in boot])
                Sr = np.array([s[t]["q"][j] for s in sims])
                S0 = float(Sr[0])  # the replication with the gateway's noise
                # the live side's sampling alone: the simulator's is mostly shared (same noise)
                relb = np.array([S0 / x - 1 if x > 0 else np.nan for x in Lb])
                lat[name] = {"live": _rnd(L), "live_ci": _rnd(_ci(Lb)), "sim": _rnd(S0),
                             "sim_band": _rnd(_band(Sr)),
                             "rel_err": _rnd(_rel(S0, L), 4), "rel_err_ci": _rnd(_ci(relb), 4),
                             # the same blocks of both sides resampled (paired_errors)
                             "rel_err_ci_paired": _rnd(paired_ci(boot, boot_sim, t, j=j), 4) if boot_sim else None,
                             "rel_err_band": _rnd(_band([_rel(x, L) if np.isfinite(x) else np.nan
                                                         for x in Sr]), 4),
                             # the error on the probability scale (a median in a gap between
                             # batch-size modes moves far on a small shift of shares)
                             "level_err_pp": _rnd(100 * level_err(sims[0][t]["hist"], L - sims[0][t]["hop"], q), 2)}
            rej = {}
            for r in reasons:
                n_l = lv[t]["n"]
                live_r = 100 * lv[t]["rej"][r] / n_l if n_l else math.nan
                sim_r = np.array([100 * s[t]["rej"][r] / s[t]["n"] if s[t]["n"] else np.nan for s in sims])
                if live_r == 0 and np.nansum(sim_r) == 0:
                    continue
                lb = np.array([100 * b[t]["rej"][r] / b[t]["n"] if b[t]["n"] else np.nan for b in boot])
                sm = float(sim_r[0])
                rej[r] = {"live_pct": _rnd(live_r, 3), "live_ci": _rnd(_ci(lb), 3),
                          "sim_pct": _rnd(sm, 3), "sim_band": _rnd(_band(sim_r), 3),
                          "abs_err_pp": _rnd(abs(sm - live_r), 3),
                          "err_pp_ci": _rnd(_ci(sm - lb), 3),
                          "err_pp_ci_paired": _rnd(paired_ci(boot, boot_sim, t, r=r), 3) if boot_sim else None,
                          "abs_err_band": _rnd(_band(np.abs(sim_r - live_r)), 3)}
            thr = throughput(ser["tiers"][t], st, span, ser["window_edges_s"], ser["queue_edges_s"])
            qd = queue_mean(ser["tiers"][t], ser["queue_edges_s"], span)
            tiers_out[t] = {"attempts": {"live": lv[t]["n"], "sim": sims[0][t]["n"]},
                            "served": {"live": lv[t]["served"], "sim": sims[0][t]["served"]},
                            "latency_s": lat, "rejection": rej, "throughput": thr, "queue_depth": qd}
        res[ph] = {"span_s": list(span), "tiers": tiers_out, "headline": headline(tiers_out),
                   "worst": worst_detail(tiers_out)}
    return res


def throughput(s: dict, st: Setup, span: tuple[float, float], wedges: list[float],
               qedges: list[float]) -> dict:
    """Completions per second over the span (1 s intervals) and the worst whole 10 s
    window inside it."""
    q = np.asarray(qedges)
    m = (q[:-1] >= span[0] - 1e-9) & (q[1:] <= span[1] + 1e-9)
    if not m.any():
        return {"windows": 0}
    dur = m.sum() * st.interval
    live = float(np.asarray(s["live_completed_iv"])[m].sum())
    sims = np.asarray(s["sim_completed_iv"])[:, m].sum(axis=1)
    sm = float(sims[0])  # the replication with the gateway's noise
    e = np.asarray(wedges)
    w = np.flatnonzero((e[:-1] >= span[0] - 1e-9) & (e[1:] <= span[1] + 1e-9))
    per = [_rel(float(s["sim_completed"][0][i]), float(s["live_completed"][i])) for i in w]
    per = [abs(x) for x in per if x is not None]
    return {"windows": int(len(w)), "live_completed": int(live), "live_per_s": _rnd(live / dur, 4),
            "sim_per_s": _rnd(sm / dur, 4), "sim_band": _rnd(_band(sims / dur), 4),
            "rel_err": _rnd(_rel(sm, live), 4),
            "rel_err_band": _rnd(_band([_rel(float(x), live) for x in sims]), 4),
            "window_abs_rel_err_max": _rnd(max(per), 4) if per else None}


def queue_mean(s: dict, edges: list[float], span: tuple[float, float]) -> dict:
    e = np.asarray(edges)
    m = (e[:-1] >= span[0] - 1e-9) & (e[1:] <= span[1] + 1e-9)
    live = float(np.mean(np.asarray(s["live_queue"])[m])) if m.any() else math.nan
    sim = [float(np.mean(np.asarray(q)[m])) for q in s["sim_queue"]] if m.any() else [math.nan]
    sm = sim[0]  # the replication with the gateway's noise
    return {"live_mean": _rnd(live, 3), "sim_mean": _rnd(sm, 3), "sim_band": _rnd(_band(sim), 3),
            "abs_err": _rnd(abs(sm - live), 3), "rel_err": _rnd(_rel(sm, live), 4)}


def headline(tiers: dict) -> dict:
    """Worst tier of each figure (absolute relative errors, percentage points)."""
    def worst(vals):
        v = [abs(x) for x in vals if x is not None]
        return round(max(v), 4) if v else None

    return {
        "p50_rel_err": worst(t["latency_s"]["p50"]["rel_err"] for t in tiers.values()),
        "p95_rel_err": worst(t["latency_s"]["p95"]["rel_err"] for t in tiers.values()),
        "p99_rel_err": worst(t["latency_s"]["p99"]["rel_err"] for t in tiers.values()),
        "rejection_abs_err_pp": worst(r["abs_err_pp"] for t in tiers.values()
                                      for r in t["rejection"].values()) or 0.0,
        "throughput_rel_err": worst(t["throughput"].get("rel_err") for t in tiers.values()),
    }


def beyond(n: int, q: float) -> int:
    """Served requests above the nearest-rank q-quantile of n: how many set a tail figure."""
    return n - max(1, math.ceil(q * n)) if n else 0


def worst_detail(tiers: dict) -> dict:
    """Beside each headline figure: the tier it comes from, its sample (served requests and
    how many lie beyond the quantile; attempts for a rejection rate; live completions for
    throughput) and the 95% interval of its error (the paired bootstrap where the
    replication was traced, else live's own; None for throughput), so a reader sees
    whether the figure is meaningful at this sample size."""
    out = {}
    for q in ("p50", "p95", "p99"):
        c = [(abs(T["latency_s"][q]["rel_err"]), t) for t, T in tiers.items()
             if T["latency_s"][q]["rel_err"] is not None]
        if c:
            t = max(c)[1]
            n = tiers[t]["served"]["live"]
            x = tiers[t]["latency_s"][q]
            out[f"{q}_rel_err"] = {"tier": t, "n": n, "beyond": beyond(n, int(q[1:]) / 100),
                                   "ci": x.get("rel_err_ci_paired") or x["rel_err_ci"]}
    c = [(r["abs_err_pp"], t, k) for t, T in tiers.items() for k, r in T["rejection"].items()
         if r["abs_err_pp"] is not None]
    if c:
        _, t, k = max(c)
        x = tiers[t]["rejection"][k]
        out["rejection_abs_err_pp"] = {"tier": t, "reason": k, "n": tiers[t]["attempts"]["live"],
                                       "ci": x.get("err_pp_ci_paired") or x["err_pp_ci"]}
    c = [(abs(T["throughput"]["rel_err"]), t) for t, T in tiers.items()
         if T["throughput"].get("rel_err") is not None]
    if c:
        t = max(c)[1]
        th = tiers[t]["throughput"]
        out["throughput_rel_err"] = {"tier": t, "n": th["live_completed"], "ci": None}
    return out


def met(h: dict) -> dict:
    return {k: (h[k] is not None and h[k] <= v) for k, v in TARGETS.items()}


def client_figures(cl: pd.DataFrame, gw: pd.DataFrame, X: float, concurrency: int) -> dict:
    """Send lag, arrival lag (schedule to the gateway's stamp), client overhead (client
    latency - gateway latency), in-flight peak; wall s."""
    if len(cl) == 0:
        return {}
    j = cl.merge(gw[["id", "attempt", "latency_s"]], on=["id", "attempt"], how="left",
                 suffixes=("", "_gw"))
    ok = j[(j["status"] == 200) & j["latency_s"].notna()]
    over = (ok["client_latency_s"] - ok["latency_s"] / X).to_numpy(float)
    ans = cl["answer_wall"].fillna(np.inf).to_numpy(float)
    ev = np.concatenate([cl["send_wall"].to_numpy(float), ans])
    step = np.concatenate([np.ones(len(cl)), -np.ones(len(cl))])
    peak = int(np.max(np.cumsum(step[np.argsort(ev, kind="stable")]))) if len(ev) else 0
    lag = cl["lag_s"].to_numpy(float)
    st = cl["status"]
    first = cl[cl["attempt"] == 0].sort_values("scheduled_t") if "attempt" in cl else cl
    # schedule to the gateway's arrival stamp (send lag + HTTP + the gateway's event loop)
    arr = ((gw["arrival_s"] - gw["scheduled_t"]) / X).dropna().to_numpy(float)
    return {"attempts": int(len(cl)),
            # the first request's lag: Locust began behind t = 0 (then the first requests
            # went out in one burst) when this is large
            "start_lag_s": _rnd(float(first["lag_s"].iloc[0])) if len(first) else None,
            "lag_p50_s": _rnd(np.median(lag)), "lag_p99_s": _rnd(np.percentile(lag, 99)),
            "lag_max_s": _rnd(lag.max()),
            "arrival_lag_p50_s": _rnd(np.median(arr)) if len(arr) else None,
            "arrival_lag_p99_s": _rnd(np.percentile(arr, 99)) if len(arr) else None,
            "arrival_lag_max_s": _rnd(arr.max()) if len(arr) else None,
            "overhead_p50_s": _rnd(np.median(over)) if len(over) else None,
            "peak_in_flight": peak, "concurrency": concurrency,
            "unanswered": int(st.isna().sum()),
            "failed": int((~st.isin([200, 403, 429, 503]) & st.notna()).sum())}


def sim_records(run) -> pd.DataFrame:
    """Per attempt of a traced replay (Run(trace=True)): id, attempt, tier index, outcome
    (None: served; a reason) and latency, keyed by the schedule's ids."""
    from sim.fleet import kernel as K
    from sim.outcomes import REASONS

    end, drop = {}, {}
    for kind, rid, t, _a in run.trace_events:
        if kind == K.COMPLETED:
            end[rid] = t
        elif kind == K.DROPPED:
            drop[rid] = t
    rows, hop = [], run.sc.gateway.hop_latency_s  # replica to fleet, as the headline adds it
    for (t, _u, k, _e, _z, code, rid), (key, att) in zip(run.trace_offered, run.trace_keys, strict=True):
        if code >= 0:
            rows.append((key, att, k, REASONS[code], math.nan))
        elif rid in end:
            rows.append((key, att, k, None, end[rid] - t + hop))
        else:
            rows.append((key, att, k, "timeout" if rid in drop else "unfinished",
                         drop[rid] - t if rid in drop else math.nan))
    return pd.DataFrame(rows, columns=["id", "attempt", "tier", "reason", "latency_s"])


def pairs(gw: pd.DataFrame, run, tiers: list[str], span: tuple[float, float] | None = None) -> dict:
    """Request by request, live against the replication with the same noise: the attempts
    both sides made (retries can differ), the share with the same outcome, and for those
    both served the latency differences. The evidence behind a headline figure."""
    sim = sim_records(run)
    sim["tier"] = [tiers[k] for k in sim["tier"]]
    live = gw[gw["id"].notna()].copy()
    live["reason"] = live["reason"].where(live["status"] != 200, None)
    j = live[["id", "attempt", "tier", "reason", "latency_s", "scheduled_t"]].merge(
        sim, on=["id", "attempt"], how="outer", suffixes=("", "_sim"), indicator=True)
    j["tier"] = j["tier"].fillna(j["tier_sim"])
    out = {}
    for t in tiers:
        g = j[j["tier"] == t]
        both = g[g["_merge"] == "both"]
        same = both["reason"].fillna("served") == both["reason_sim"].fillna("served")
        served = both[both["reason"].isna() & both["reason_sim"].isna()]
        d = (served["latency_s_sim"] - served["latency_s"]).to_numpy(float)
        a = np.abs(d)
        out[t] = {"attempts_both": int(len(both)), "live_only": int((g["_merge"] == "left_only").sum()),
                  "sim_only": int((g["_merge"] == "right_only").sum()),
                  "same_outcome": _rnd(float(same.mean()) if len(both) else math.nan, 4),
                  "served_both": int(len(served)),
                  "latency_within_10ms": _rnd(float((a <= 0.01).mean()) if len(a) else math.nan, 4),
                  "latency_diff_p50_s": _rnd(float(np.median(d)) if len(d) else math.nan),
                  "latency_absdiff_p95_s": _rnd(float(np.percentile(a, 95)) if len(a) else math.nan),
                  "latency_absdiff_max_s": _rnd(float(a.max()) if len(a) else math.nan)}
    return out
