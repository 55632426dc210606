"""Fleet regions: where each pool is, where each user is, and how far apart they are.

A scenario with `fleet.regions` places every pool in a fleet region and gives each region the
network latency from each users' region (the demand's: seasonality regions of the viral
model, or a curve's or trace's `regions`). The fleet loop (sim/fleet/kernel.py) keeps one
queue lane per (tier, batch group, fleet region); a region's pools take only its lanes, so
each region batches and queues on its own, with the scheduler and router as without regions.

The rules, defined once in the fleet loop (`kernel._route`), applied at each arrival:

* a request goes to its home region: the fleet region with the lowest latency from its
  users' region (ties: as listed);
* spill-over: when home's predicted wait (requests queued there at the request's priority or
  above, over home's live images/s at max batch; infinite while its GPUs are out) is over
  `fleet.spill_over.predicted_wait_s`, it goes to the region with the lowest network latency
  + predicted wait instead, if that is lower than home's (and within `max_latency_s`);
* every served request's latency is the fleet's plus the network latency from its users'
  region to the region that served it (queue wait and Little's time in system are the
  fleet's own);
* a region outage (policy `region_outage`, sim/policies/dynamics.py) takes the region's GPUs
  away (batches running finish, as a retiring GPU's do) and moves the requests queued there
  by the same rule, oldest first; new arrivals spill from it until it is back.

A user's region is a function of its id: the viral model's block (one per wave and region),
else a hash of the id against the regions' shares (stream "regions"): the same user is in
the same region in every window, retry and variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from sim import rng
from sim.scenario import Scenario, user_regions


@dataclass
class RegionSetup:
    """The fleet loop's view of the regions: user regions x fleet regions."""

    users: list[str]  # users' regions, in the demand's order
    names: list[str]  # fleet regions, as listed
    home: np.ndarray  # users' region -> its home fleet region
    net: np.ndarray  # [users' region, fleet region] network latency, s
    pool_region: np.ndarray  # pool -> fleet region
    spill_wait: float  # predicted wait over which a request spills (inf: only outages)
    max_latency: float  # never to a region farther than this (inf: any)
    max_gpus: list[int | None]  # per fleet region, cell GPUs (None: no cap)
    shares: np.ndarray  # users' regions' shares (cumulative, normalised): hashed users

    def user_region(self, demand, user: np.ndarray) -> np.ndarray:
        """The users' region of each user id (int16)."""
        if len(self.users) == 1 or len(user) == 0:
            return np.zeros(len(user), np.int16)
        of = getattr(demand, "region_of", None)
        if of is not None:  # viral: the user's block
            return of(user).astype(np.int16, copy=False)
        u = rng.uniform_of(np.asarray(user, np.int64).astype(np.float64), "regions")
        return np.searchsorted(self.shares, u, side="right").clip(0, len(self.users) - 1).astype(np.int16)


def build_regions(sc: Scenario) -> RegionSetup | None:
    """The scenario's fleet regions resolved (None: the fleet has none)."""
    f = sc.fleet
    if f.regions is None:
        return None
    users = user_regions(sc.demand)
    names = [r.name for r in f.regions]
    net = np.array([[r.latency_s[u.name] for r in f.regions] for u in users], float)
    home = np.argmin(net, axis=1).astype(np.int64)  # first of equal minima: as listed
    sh = np.array([u.share for u in users], float)
    spill = f.spill_over
    wait = spill.predicted_wait_s if spill is not None and spill.predicted_wait_s is not None else np.inf
    far = spill.max_latency_s if spill is not None and spill.max_latency_s is not None else np.inf
    frac = sc.cell_fraction
    return RegionSetup(
        users=[u.name for u in users], names=names, home=home, net=net,
        pool_region=np.array([names.index(p.region) for p in f.pools], np.int64),
        spill_wait=float(wait), max_latency=float(far),
        # a capacity in the cell, scaled like a pool's GPUs (sim/engine.py:pool_setup)
        max_gpus=[None if r.max_gpus is None else r.max_gpus if frac == 1 or r.max_gpus == 0
                  else max(1, round(r.max_gpus * frac)) for r in f.regions],
        shares=np.cumsum(sh / sh.sum())[:-1])


@njit(cache=True, nogil=True)
def _count_arrivals(iv, ureg, code, offered, rejected):  # pragma: no cover - compiled
    # each arrival counted by (interval, users' region), and by reason when rejected
    for i in range(len(iv)):
        offered[iv[i], ureg[i]] += 1
        c = code[i]
        if c >= 0:
            rejected[iv[i], ureg[i], c] += 1


class RegionSeries:
    """Per users' region over time, for the time series (sim/metrics/summary.py): arrivals
    and those rejected on arrival by the interval they arrived in (as the tiers' series);
    completions (by serving region), timeouts, spills and latency quantiles from the fleet
    loop's running per-region counts, read at the end of each window that crosses an
    interval's end (exact when the interval is a multiple of chunk_s, as the clock then stops
    there) and kept as the difference from the last reading. Latency counts arrivals after
    warm-up (the summary's per-region histogram), so it is empty before."""

    def __init__(self, rg: RegionSetup, n_int: int, interval: float, n_reasons: int,
                 start: float = 0.0):
        U, F = len(rg.users), len(rg.names)
        self.dt, self.n = interval, n_int
        self.offered = np.zeros((n_int, U), np.int64)
        self.rejected = np.zeros((n_int, U, n_reasons), np.int64)  # on arrival
        self.done = np.zeros((n_int, U, F), np.int64)
        self.drop = np.zeros((n_int, U), np.int64)  # timeouts in the fleet
        self.spill = np.zeros((n_int, U), np.int64)
        self.lat = np.full((n_int, U, 3), np.nan)  # p50, p95, p99 (fleet + network), s
        # the interval the fleet's counts since the last reading fall in (a run may start
        # late: Run.start)
        self.row = min(int(start / interval), n_int - 1)
        self.last: tuple | None = None
        self.finished = False

    def arrivals(self, t: np.ndarray, ureg: np.ndarray, code: np.ndarray,
                 iv: np.ndarray | None = None) -> None:
        """Count arrivals at times t from users' regions ureg, rejected with reason `code`
        (-1: not rejected on arrival); iv: their intervals when known (the run's series)."""
        if iv is None:
            iv = np.minimum((np.asarray(t, np.float64) / self.dt).astype(np.int64), self.n - 1)
        _count_arrivals(iv, ureg, code, self.offered, self.rejected)

    @staticmethod
    def _counts(S) -> tuple:
        return (S.reg_done.copy(), S.reg_drop.copy(), S.reg_spill.copy(), S.reg_lat_hist.copy())

    def _put(self, S, row: int) -> None:
        from sim.metrics.sketch import quantiles

        now = self._counts(S)
        d = now if self.last is None else tuple(a - b for a, b in zip(now, self.last, strict=True))
        self.done[row] += d[0]
        self.drop[row] += d[1]
        self.spill[row] += d[2]
        self.lat[row] = quantiles(d[3], (0.5, 0.95, 0.99))
        self.last = now

    def tick(self, S, cursor: float) -> None:
        """After a window ending at `cursor`: read the fleet's counts once an interval ended."""
        row = min(int(cursor / self.dt), self.n - 1)
        if row > self.row:
            self._put(S, self.row)
            self.row = row

    def finish(self, S) -> None:
        """At the horizon: the counts since the last reading go to the last interval."""
        if not self.finished:
            self._put(S, self.row)
            self.finished = True
