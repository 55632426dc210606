"""Self-excitation and the diurnal cycle fitted on a trace of arrival times.

lambda(t) = mu s(t) + n sum_{t_i < t} g(t - t_i), with g(x) = exp(-x / tau) / tau the
exponential kernel of the scenario's social feedback (branching ratio n, scale tau) and
s(t) = 1 + a cos(2 pi (hour(t) - peak_hour) / 24) its diurnal cycle (UTC hours of the trace's
timestamps, peak hour held at the scenario's). The exact log-likelihood of the event times,

    sum_i log lambda(t_i) - mu int_0^T s - n sum_i (1 - exp(-(T - t_i) / tau)),

is computed in O(N) with the usual recursion A_i = exp(-(t_i - t_{i-1}) / tau) (1 + A_{i-1}).
Maximum likelihood over (mu, n, tau, a) on log/logit axes (scipy L-BFGS-B, multi-start);
90% intervals by profile likelihood (the other parameters re-maximised at each point; the
bounds are where twice the drop reaches chi2_1(0.90) = 2.706). A parameter whose profile
does not drop that far inside its range on both sides is not identified by the trace and is
held at the scenario's value; the diurnal amplitude is held outright for a trace shorter than
a quarter of a day (the shipped Azure traces span an hour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy.optimize import brentq, minimize

from sim.errors import InputError

DAY = 86400.0
CHI2_90 = 2.705543454095404
NAMES = ("mu", "branching", "scale_s", "diurnal_amplitude")
HOLD_FIRST = ("diurnal_amplitude", "scale_s", "branching")  # the baseline is always estimated
PATHS = {"branching": "social.branching", "scale_s": "social.scale_s",
         "diurnal_amplitude": "seasonality.diurnal_amplitude"}


@numba.njit(cache=True)
def _excitation(t, tau):
    """A_i = sum_{j < i} exp(-(t_i - t_j) / tau)."""
    n = len(t)
    A = np.zeros(n)
    for i in range(1, n):
        A[i] = np.exp(-(t[i] - t[i - 1]) / tau) * (1.0 + A[i - 1])
    return A


@dataclass
class Trace:
    t: np.ndarray  # seconds since the first arrival
    hour0: float  # UTC hour of day of the first arrival
    source: str

    @property
    def span(self) -> float:
        return float(self.t[-1]) if len(self.t) else 0.0


def read_arrivals(path, column: str = "TIMESTAMP") -> Trace:
    """Arrival times from a trace CSV (the reader of `demand.model: trace`)."""
    import pandas as pd

    from sim.demand.trace import read_trace

    rel = read_trace(path, column, source=str(path))[0]
    if len(rel) < 10:
        raise InputError(str(path), column, f"{len(rel)} arrivals: too few to fit")
    first = pd.read_csv(path, usecols=[column], nrows=1)[column].iloc[0]
    try:
        ts = pd.Timestamp(first)
        hour0 = ts.hour + ts.minute / 60 + ts.second / 3600 + ts.microsecond / 3.6e9
    except (ValueError, TypeError):
        hour0 = (float(first) / 3600.0) % 24.0  # seconds since an epoch at midnight UTC
    return Trace(np.asarray(rel, float), float(hour0), str(path))


def loglik(tr: Trace, mu: float, n: float, tau: float, a: float, peak: float) -> float:
    t, T = tr.t, tr.span
    w = 2 * np.pi / DAY
    ph = w * (tr.hour0 * 3600.0 - peak * 3600.0)
    s = 1.0 + a * np.cos(w * t + ph)
    lam = mu * s + (n / tau) * _excitation(t, tau)
    if np.any(lam <= 0):
        return -np.inf
    int_s = T + a / w * (np.sin(w * T + ph) - np.sin(ph))
    return float(np.sum(np.log(lam)) - mu * int_s - n * np.sum(-np.expm1(-(T - t) / tau)))


@dataclass
class TraceFit:
    source: str
    estimate: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    held: dict[str, str]
    loglik: float
    n_events: int
    span_s: float
    peak_hour: float


def _to(name, v):
    return float(np.log(v / (1 - v))) if name in ("branching", "diurnal_amplitude") else float(np.log(v))


def _from(name, x):
    return float(1 / (1 + np.exp(-x))) if name in ("branching", "diurnal_amplitude") else float(np.exp(x))


def fit_trace(sc, tr: Trace, starts: int = 3, seed: int = 0) -> TraceFit:
    s = sc.demand.social
    se = sc.demand.seasonality if sc.demand.model == "viral" else None
    peak = se.peak_hour if se is not None else 20.0
    init = {"mu": len(tr.t) / max(tr.span, 1.0) * 0.8,
            "branching": s.branching if s is not None and s.branching > 0 else 0.2,
            "scale_s": s.scale_s if s is not None else 60.0,
            "diurnal_amplitude": se.diurnal_amplitude if se is not None and se.diurnal_amplitude > 0 else 0.2}
    span = max(tr.span, 1.0)
    bounds = {"mu": (np.log(init["mu"]) - 5, np.log(init["mu"]) + 3), "branching": (-9.0, 6.0),
              "scale_s": (np.log(span / len(tr.t) / 100), np.log(span)),
              "diurnal_amplitude": (-9.0, 6.0)}
    held: dict[str, str] = {}
    rng = np.random.default_rng([seed, 15, 3])

    def solve(free, fixed, x0):
        def nll(x):
            v = {**fixed, **{k: _from(k, xi) for k, xi in zip(free, x, strict=True)}}
            ll = loglik(tr, v["mu"], v["branching"], v["scale_s"], v["diurnal_amplitude"], peak)
            return -ll if np.isfinite(ll) else 1e300
        if not free:
            return np.zeros(0), nll(np.zeros(0))
        r = minimize(nll, x0, method="L-BFGS-B", bounds=[bounds[k] for k in free])
        return r.x, float(r.fun)

    free = list(NAMES)
    fixed: dict[str, float] = {}
    if tr.span < DAY / 4:  # a quarter of a day does not show a daily cycle
        held["diurnal_amplitude"] = (f"the trace spans {tr.span / 60:.0f} min, under a "
                                     "quarter of the day's cycle")
        fixed["diurnal_amplitude"] = se.diurnal_amplitude if se is not None else 0.0
        free.remove("diurnal_amplitude")
    while True:
        x0 = np.array([_to(k, init[k]) for k in free])
        best = None
        for j in range(starts + 1):
            xs = x0 if j == 0 else x0 + rng.normal(0, 0.7, len(x0))
            xs = np.clip(xs, [bounds[k][0] for k in free], [bounds[k][1] for k in free])
            x, f = solve(free, fixed, xs)
            if best is None or f < best[1]:
                best = (x, f)
        xhat, fhat = best
        est = {**fixed, **{k: _from(k, v) for k, v in zip(free, xhat, strict=True)}}
        intervals, unidentified = {}, []
        for i, k in enumerate(free):
            others = [q for q in free if q != k]

            def drop(xk, k=k, i=i, others=others, xhat=xhat, fhat=fhat):
                fx = {**fixed, k: _from(k, xk)}
                x0o = np.delete(xhat, i)
                _, f = solve(others, fx, x0o)
                return 2 * (f - fhat) - CHI2_90

            ends = []
            for edge in bounds[k]:
                if drop(edge) < 0:  # never drops far enough before its bound
                    ends.append(None)
                    continue
                ends.append(brentq(drop, min(xhat[i], edge), max(xhat[i], edge), xtol=1e-3))
            if None in ends:
                unidentified.append(k)
                continue
            intervals[k] = (_from(k, min(ends)), _from(k, max(ends)))
        unidentified = [k for k in HOLD_FIRST if k in unidentified]
        if not unidentified:
            break
        unidentified = unidentified[0]  # one at a time: holding it may identify the rest
        held[unidentified] = (f"not identified by the trace ({len(tr.t)} arrivals over "
                              f"{tr.span / 60:.0f} min): its profile likelihood stays within "
                              "the 90% level to the edge of its range")
        fixed[unidentified] = (
            (s.branching if s is not None else 0.0) if unidentified == "branching" else
            (s.scale_s if s is not None else init["scale_s"]) if unidentified == "scale_s" else
            (se.diurnal_amplitude if se is not None else 0.0))
        free = [q for q in free if q != unidentified]
    return TraceFit(tr.source, est, intervals, held, -fhat, len(tr.t), tr.span, peak)


def result(tf: TraceFit) -> dict:
    params = {}
    for k in NAMES:
        e = {"estimate": tf.estimate[k], "status": "held" if k in tf.held else "estimated"}
        if k in tf.intervals:
            e["low_90"], e["high_90"] = tf.intervals[k]
            e["method"] = "profile likelihood"
        else:
            e["reason"] = tf.held.get(k, "")
        params[PATHS.get(k, "baseline_rate_per_s")] = e
    return {"kind": "arrivals", "observed": tf.source, "events": tf.n_events,
            "window_s": [0.0, tf.span_s], "loglik": tf.loglik, "peak_hour": tf.peak_hour,
            "model": "Hawkes, exponential kernel, diurnal baseline", "parameters": params}


def compensator(tr: Trace, tf: TraceFit, x: np.ndarray) -> np.ndarray:
    """Expected arrivals in [0, x) under the fitted intensity (given the trace's own past)."""
    e = tf.estimate
    w = 2 * np.pi / DAY
    ph = w * (tr.hour0 - tf.peak_hour) * 3600.0
    base = e["mu"] * (x + e["diurnal_amplitude"] / w * (np.sin(w * x + ph) - np.sin(ph)))
    out = np.empty(len(x))
    for j, xj in enumerate(x):
        past = tr.t[tr.t < xj]
        out[j] = e["branching"] * np.sum(-np.expm1(-(xj - past) / e["scale_s"]))
    return base + out


def write_trace_fit(sc, tr: Trace, tf: TraceFit, out) -> dict:
    """fit.json, fitted.yaml, the observed-vs-fitted figure and report.html, atomically."""
    import html

    import yaml
    from matplotlib.figure import Figure

    from sim.fit.model import apply
    from sim.report.html import img_tag, page, table
    from sim.report.write import dump_json, write_dir

    res = result(tf)
    values = {PATHS[k]: tf.estimate[k] for k in ("branching", "scale_s", "diurnal_amplitude")
              if k not in tf.held}
    d = sc.model_dump(mode="json", exclude={"source"})
    spec = sc.demand
    if spec.social is None and "social.branching" in values:
        from sim.scenario import SocialSpec

        spec = spec.model_copy(update={"social": SocialSpec(branching=values["social.branching"])})
    if spec.model == "viral":
        d["demand"] = apply(spec, values).model_dump(mode="json")
    elif "social.branching" in values:
        d["demand"]["social"] = {**(d["demand"].get("social") or {}),
                                 "branching": values["social.branching"],
                                 "scale_s": values.get("social.scale_s", 1800.0)}

    def fill(dd):
        (dd / "fit.json").write_text(dump_json(res))
        (dd / "fitted.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
        step = 30.0
        edges = np.arange(0.0, tr.span + step, step)
        obs = np.histogram(tr.t, edges)[0]
        exp = np.diff(compensator(tr, tf, edges))
        fig = Figure(figsize=(9, 3.8))
        ax = fig.add_subplot()
        ax.plot(edges[:-1] / 60, obs / step, ".", ms=3, color="k", label="observed arrivals / s")
        ax.plot(edges[:-1] / 60, exp / step, lw=1.2, color="tab:blue", label="fitted intensity (30 s means)")
        ax.set_xlabel("minutes since the first arrival")
        ax.set_ylabel("arrivals / s")
        ax.set_title(f"Hawkes fit: {html.escape(str(tr.source).split('/')[-1])}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(dd / "fit.png", dpi=110)
        rows = [[k, v["estimate"], v.get("low_90"), v.get("high_90"),
                 v["status"] if v["status"] == "estimated" else f"held: {v['reason']}"]
                for k, v in res["parameters"].items()]
        (dd / "report.html").write_text(page(f"Floodgate fit: {tr.source.split('/')[-1]}", [
            f"<p>{tf.n_events:,} arrivals over {tf.span_s / 60:.0f} min; {res['model']}; "
            f"log-likelihood {tf.loglik:.1f}; 90% intervals by profile likelihood.</p>",
            table(["parameter", "estimate", "low", "high", "status"], rows),
            img_tag(dd / "fit.png", "observed and fitted arrivals")]))

    write_dir(out, fill, "fit")
    return res
