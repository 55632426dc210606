"""The live run fed again to the gateway, on a fake clock: where a live-vs-simulated gap
comes from.

The gateway's outcomes are a function of the instants requests reach it (the fleet loop
keeps its own times; each request's noise is keyed by its schedule id and attempt). Fed the
attempts of the request log at their recorded arrival instants, the real `Gateway` (its
admission pipeline, fleet loop and policy processes; only its clock is the loop's below)
must give every attempt its live outcome and latency: anything else is a live artefact (a
late timer, a lost event). Fed the same attempts at their scheduled instants, it shows what
the arrival lag alone (Locust's send lag + HTTP) did to the figures.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from sim.live.gateway import Gateway
from sim.live.keys import KeyTable, key_hash
from sim.live.workers import Req
from sim.scenario import Scenario


class FakeClockGateway(Gateway):
    """The real gateway; its clock and its one timer are the caller's (refeed, the twin and
    metrics tests)."""

    def __init__(self, *a, **kw):
        self.now = 0.0
        self.armed = math.inf
        super().__init__(*a, **kw)

    def clock(self) -> float:
        return self.now

    def _arm(self, t: float) -> None:
        self.armed = t


def refeed(sc: Scenario, gw: pd.DataFrame, times: np.ndarray, until: float,
           max_queue: float | None = None) -> list[tuple[str | None, float]]:
    """(reason or None, latency or nan) of each row of `gw` (the gateway's records: id,
    attempt, user, tier, scheduled_t) fed to a fresh gateway at `times` (its own clock)."""
    names = [t.name for t in sc.tiers]
    order = np.argsort(times, kind="stable")
    # per-user counts sized as the live gateway's, whose key table held every user
    keys = KeyTable.of({key_hash("refeed"): (int(gw["user"].max()), 0)}, names)
    with tempfile.TemporaryDirectory(prefix="floodgate-refeed-") as tmp:
        g = FakeClockGateway(sc, keys, Path(tmp) / "requests.jsonl", 1.0, max_queue)
        g.fleet.start()
        reqs: list[Req | None] = [None] * len(gw)
        ids, att = gw["id"].to_numpy(), gw["attempt"].to_numpy()
        user, tier, sched = gw["user"].to_numpy(), gw["tier"].to_numpy(), gw["scheduled_t"].to_numpy()
        for i in order:
            t = float(times[i])
            while g.armed < t:  # the timer fires before this arrival
                g.now = g.armed
                g.fleet.wake()
            g.now = t
            k = names.index(tier[i])
            s = None if pd.isna(sched[i]) else float(sched[i])
            req = Req(int(ids[i]), int(att[i]), int(user[i]), k, tier[i], s, t)
            req.noise, req.z = g.noise(req.id, req.attempt, s)
            g.admit(req)
            reqs[i] = req
        while g.armed < until:
            g.now = g.armed
            g.fleet.wake()
        g.log.close()
    return [(r.reason, r.done - r.arrival if r.reason is None else math.nan) for r in reqs]


def refeed_figures(sc: Scenario, gw: pd.DataFrame, off: float, until: float, qs, pct,
                   max_queue: float | None = None) -> dict:
    """Fed at the recorded arrivals: how many attempts got their live outcome and latency.
    Fed at the scheduled instants: latency percentiles per tier (gw: load_live's records,
    times on the schedule's clock; off: the gateway's clock offset)."""
    gw = gw[gw["id"].notna() & gw["arrival_s"].notna()].reset_index(drop=True)
    live_reason = [None if st == 200 else r for st, r in zip(gw["status"], gw["reason"], strict=True)]
    out: dict = {}
    got = refeed(sc, gw, gw["arrival_s"].to_numpy(float) + off, until + off, max_queue)
    lat = gw["latency_s"].to_numpy(float)
    same = [a == b for (a, _), b in zip(got, live_reason, strict=True)]
    both = [i for i, (r, _) in enumerate(got) if r is None and live_reason[i] is None]
    out["from_arrivals"] = {
        "attempts": len(gw), "same_outcome": int(sum(same)), "served_both": len(both),
        "same_latency_2us": int(sum(abs(got[i][1] - lat[i]) <= 2e-6 for i in both))}  # log: 1 us
    got = refeed(sc, gw, gw["scheduled_t"].to_numpy(float) + off, until + off, max_queue)
    tiers = {}
    for t in (x.name for x in sc.tiers):
        m = (gw["tier"] == t).to_numpy()
        x = np.array([got[i][1] for i in np.flatnonzero(m) if got[i][0] is None])
        tiers[t] = {f"p{round(q * 100)}": round(pct(x, q), 6) if len(x) else None for q in qs}
    out["from_schedule"] = tiers
    return out
