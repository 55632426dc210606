"""Realised demand of a scenario, counted the way a team would count it: new users and
requests per interval, whole-service figures. The truth of the tests and the backtest.

The requests are first attempts drawn by the demand generator itself (chunk_arrivals, the
run's random numbers) at `scale` of the service, then scaled back: with `social` feedback the
offspring of every image are drawn by the generator (the cluster construction), as if every
request were served; retries and conversion, which need a run, are left out. A new user is
counted at their first request (the adoption time in the viral model).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.demand import build_demand, chunk_arrivals


def demand_truth(sc):
    """The scenario with social feedback drawn by the generator (not only from served images)."""
    d = sc.demand
    if d.social is not None and d.social.only_successful:
        sc = sc.model_copy(update={"demand": d.model_copy(
            update={"social": d.social.model_copy(update={"only_successful": False})})})
    return sc


def realised_counts(sc, scale: float, until: float, step: float = 3600.0) -> pd.DataFrame:
    """Columns t, new_users, requests per `step` over [0, until), scaled by 1 / scale."""
    sc = demand_truth(sc)
    model = build_demand(sc, scale=scale, until=until)
    n = int(np.ceil(until / step))
    req = np.zeros(n)
    new = np.zeros(n)
    seen = np.zeros(1024, bool)
    k = 0
    while k * sc.chunk_s < until:
        a = chunk_arrivals(model, sc, k, until)
        k += 1
        if len(a) == 0:
            continue
        b = np.minimum((a.t / step).astype(np.int64), n - 1)
        np.add.at(req, b, 1.0)
        m = int(a.user.max()) + 1
        if m > len(seen):
            g = np.zeros(max(m, 2 * len(seen)), bool)
            g[: len(seen)] = seen
            seen = g
        u, first = np.unique(a.user, return_index=True)
        fresh = ~seen[u]
        np.add.at(new, b[first[fresh]], 1.0)
        seen[u] = True
    t = np.arange(n) * step
    return pd.DataFrame({"t": t, "new_users": new / scale, "requests": req / scale})
