"""From a fit to the horizon: the demand of every bootstrap draw, the p10/p50/p90 fan of new
users per hour and requests per second, and the 8-day totals a plan is made for.

Totals are predictive: what has been observed is counted as observed, the rest of the 8 days
comes from each draw's curve plus the counts' own noise (the fitted family on hourly bins,
normal approximation), so their interval covers both the parameters and the luck of the days
to come; p5-p95 and p10-p90 are prediction intervals on the log axis about the estimate
(fit.boot_interval), p50 the draws' median; with held parameters drawn from a prior (fit.py step
6) the intervals are about the draws' mean instead, the estimate being at the scenario's value,
which need not be the prior's centre. Peaks are of the expected curve (hourly). The fan
of the curves is the draws' own p10/p50/p90 at each hour.
"""

from __future__ import annotations

import numpy as np

from sim.fit import likelihood as lk
from sim.fit.fit import boot_interval
from sim.fit.model import requests_between

DAY = 86400.0
WINDOW = 8 * DAY


def _observed_parts(f, kind: str, end: float) -> tuple[float, np.ndarray, np.ndarray]:
    s = f.obs.series.get(kind)
    if s is None:
        return 0.0, np.zeros(0), np.zeros(0)
    m = s.b <= end
    return float(s.y[m].sum()), s.a[m], s.b[m]


def curves(f, values: dict, span: float, step: float = 3600.0):
    m = f_model(f, values, span)
    t = np.arange(0.0, span, step)
    new = m.new_users(t + step) - m.new_users(t)
    req = requests_between(m, t, t + step, span)

    def cum(x):  # cumulative expected requests from 0
        x = np.atleast_1d(np.asarray(x, float))
        return requests_between(m, np.zeros(len(x)), x, span)

    return t, new, req, m, cum


def f_model(f, values, span):
    from sim.fit.model import Forward

    return Forward(f.sc, f.params).model(values, span)


def forecast(f, step: float = 3600.0, seed: int = 0) -> dict:
    span = max(f.sc.horizon, WINDOW)
    rng = np.random.default_rng([seed, 15, 2])
    draws = [f.values()] + [f.values(d) for d in f.draws]
    new_all, req_all, tot = [], [], {"images_8d": [], "users_8d": [], "peak_new_users_per_hour": [],
                                     "peak_requests_per_s": []}
    obs_req, ra, rb = _observed_parts(f, "requests", WINDOW)
    obs_new, na, nb = _observed_parts(f, "new_users", WINDOW)
    hours = np.arange(0.0, WINDOW, step)
    for j, v in enumerate(draws):
        t, new, req, m, r = curves(f, v, span, step)
        new_all.append(new)
        req_all.append(req / step)
        for kind, cum, oa, ob, obs_sum, key in (
                ("requests", r, ra, rb, obs_req, "images_8d"),
                ("new_users", m.new_users, na, nb, obs_new, "users_8d")):
            full = float(cum(np.array([WINDOW]))[0] - cum(np.array([0.0]))[0])
            seen = float(np.sum(cum(ob) - cum(oa)))
            rest = max(full - seen, 0.0)
            if j == 0:
                tot[key].append(obs_sum + rest)
                continue
            fam = f.families.get(kind, ("poisson", 0.0))
            # noise of the unobserved part, on hourly bins
            hb = cum(hours + step) - cum(hours)
            share = rest / full if full > 0 else 0.0
            var = float(np.sum(lk.variance(hb, *fam))) * share
            tot[key].append(max(obs_sum + rest + np.sqrt(var) * rng.standard_normal(), 0.0))
        tot["peak_new_users_per_hour"].append(float(new[t < WINDOW].max()))
        tot["peak_requests_per_s"].append(float(req[t < WINDOW].max() / step))
    new_all, req_all = np.array(new_all), np.array(req_all)

    def fan(a):
        if len(a) == 1:
            return {"fit": a[0].tolist()}
        q = np.quantile(a[1:], [0.1, 0.5, 0.9], axis=0)
        return {"fit": a[0].tolist(), "p10": q[0].tolist(), "p50": q[1].tolist(), "p90": q[2].tolist()}

    def summ(x):
        x = np.asarray(x, float)
        out = {"estimate": float(x[0])}
        if len(x) > 2:  # on the log axis, about the estimate (fit.boot_interval)
            lx = np.log(np.maximum(x, 1e-300))
            centre = float(np.mean(lx[1:])) if f.prior else lx[0]
            for name, level in (("p5", 0.9), ("p10", 0.8)):
                lo, hi = boot_interval(centre, lx[1:], level)
                out[name] = float(np.exp(lo))
                out["p95" if name == "p5" else "p90"] = float(np.exp(hi))
            out["p50"] = float(np.median(x[1:]))
        return out

    return {"step_s": step, "t_h": (t / 3600.0).tolist(),
            "new_users_per_hour": fan(new_all), "requests_per_s": fan(req_all),
            "totals": {k: summ(v) for k, v in tot.items()}, "draws": len(draws) - 1}


def window_peaks(f, window: tuple[float, float], step: float = 3600.0) -> np.ndarray:
    """Peak of the hourly mean request rate (requests/s) within `window`, for the estimate
    (first) and every bootstrap draw."""
    a, b = window
    out = []
    for v in [f.values()] + [f.values(d) for d in f.draws]:
        m = f_model(f, v, b + step)
        t = np.arange(a, b, step)
        out.append(float(np.max(requests_between(m, t, t + step, b + step)) / step))
    return np.array(out)
