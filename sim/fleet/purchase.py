"""How a pool's GPUs are bought: reserved, on demand, spot; what they cost.

A pool's GPU slots are laid out in buying order, [reserved | on demand | spot]: the first
`reserved` GPUs live are reserved ones, the last `spot` are spot, the rest on demand. The
GPUs live at any moment (the fleet's `gpu_log`) therefore say how many of each are live, and
the autoscaler, adding GPUs from the left and retiring them from the right, buys reserved,
then on demand, then spot, and gives back spot first. A reserved GPU is paid for every hour
of the run, live or not (a monthly commitment); on-demand and spot GPUs only while live.
Spot GPUs are preempted (sim/policies/dynamics.py, SpotPreemption) at a rate per GPU, after
a notice, and come back after a restore time. A failure (policy `failures`) that takes a GPU
away is booked against the last slot live (spot first): the ledger keeps counts, not GPUs.

Default prices are assumptions, not quotes (no network here), relative to the pool's on-demand
`price_per_gpu_hour`:
- reserved: 60% of on demand, 730 hours a month. A 1-year commitment is typically 35-45% below
  on demand (AWS EC2 Savings Plans and Capacity Blocks pages; Lambda and CoreWeave list prices
  for H100 reserved vs on-demand, 2024-25: about $1.85-2.40 reserved vs $2.49-4.25 on demand).
- spot: 35% of on demand (AWS EC2 Spot "up to 90% off"; Google Cloud Spot VMs "60-91% off";
  GPU spot prices in 2025 sat about 55-70% below on demand).
- preemptions: 0.05 per spot GPU per day (the AWS Spot Instance Advisor puts GPU instance
  types mostly in its ">20% interrupted per month" band); notice 120 s (AWS's two-minute
  interruption notice; Google gives 30 s); a replacement serves 30 min later.
"""

from __future__ import annotations

from dataclasses import dataclass

OPTIONS = ("reserved", "on_demand", "spot")
HOURS_PER_MONTH = 730.0
RESERVED_SHARE = 0.60  # reserved per GPU-hour as a share of on demand (assumption above)
SPOT_SHARE = 0.35  # spot per GPU-hour as a share of on demand (assumption above)


@dataclass(frozen=True)
class Prices:
    """Per GPU: reserved per month (paid live or not), on demand and spot per live hour."""

    reserved_per_month: float
    on_demand_per_hour: float
    spot_per_hour: float

    @property
    def reserved_per_hour(self) -> float:
        return self.reserved_per_month / HOURS_PER_MONTH

    def per_hour(self, option: str) -> float:
        return {"reserved": self.reserved_per_hour, "on_demand": self.on_demand_per_hour,
                "spot": self.spot_per_hour}[option]


def prices_of(pool) -> Prices:
    """A scenario pool's prices, defaults filled in from its on-demand price."""
    od = float(pool.price_per_gpu_hour)
    b = pool.purchase
    res = b.reserved_per_gpu_month if b is not None and b.reserved_per_gpu_month is not None \
        else RESERVED_SHARE * od * HOURS_PER_MONTH
    spot = b.spot_per_gpu_hour if b is not None and b.spot_per_gpu_hour is not None else SPOT_SHARE * od
    return Prices(float(res), od, float(spot))


@dataclass(frozen=True)
class Ledger:
    """One pool's slot layout (cell counts) and prices."""

    slots: int
    reserved: int
    spot: int
    prices: Prices

    @property
    def on_demand(self) -> int:
        return self.slots - self.reserved - self.spot

    def split(self, live: int) -> dict[str, int]:
        """Live GPUs of each option when `live` GPUs are live (filled in buying order)."""
        live = max(0, min(int(live), self.slots))
        r = min(live, self.reserved)
        d = min(live - r, self.on_demand)
        return {"reserved": r, "on_demand": d, "spot": live - r - d}

    def hourly(self, live: int) -> float:
        """$/h with `live` GPUs live: every reserved GPU, plus the live on-demand and spot."""
        s = self.split(live)
        p = self.prices
        return (self.reserved * p.reserved_per_hour + s["on_demand"] * p.on_demand_per_hour
                + s["spot"] * p.spot_per_hour)

    def most_within(self, budget_per_hour: float) -> int:
        """The most live GPUs whose hourly cost stays within the budget; the reserved ones
        are paid for anyway, so they always fit."""
        top = max(budget_per_hour, self.hourly(self.reserved)) * (1 + 1e-12)
        lo, hi = 0, self.slots  # hourly() is non-decreasing in live: bisect
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.hourly(mid) <= top:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def cost(self, log: list[tuple[float, int]], start: float, end: float) -> dict[str, float]:
        """$ per option over [start, end] from (time, live GPUs from then on), time-sorted."""
        out = dict.fromkeys(OPTIONS, 0.0)
        p = self.prices
        out["reserved"] = self.reserved * p.reserved_per_hour * max(0.0, end - start) / 3600.0
        pts = [(max(t, start), n) for t, n in log if t < end] + [(end, 0)]
        for (t, n), (t2, _) in zip(pts[:-1], pts[1:], strict=True):
            if t2 <= t:
                continue
            s = self.split(n)
            h = (t2 - t) / 3600.0
            out["on_demand"] += s["on_demand"] * p.on_demand_per_hour * h
            out["spot"] += s["spot"] * p.spot_per_hour * h
        return out


def fixed_split(n: int, caps: dict[str, int | None], prices: Prices) -> dict[str, int]:
    """A fixed fleet of n GPUs of one pool, bought cheapest per live hour first within each
    option's cap (None: no cap); on demand has no cap. For plan --mix: a fixed fleet is live
    every hour, so a reserved GPU costs its hourly share like the others."""
    order = sorted(OPTIONS, key=lambda o: (prices.per_hour(o), OPTIONS.index(o)))
    left, out = int(n), dict.fromkeys(OPTIONS, 0)
    for o in order:
        cap = None if o == "on_demand" else caps.get(o)
        take = left if cap is None else min(left, int(cap))
        out[o] = take
        left -= take
    return out


def fixed_cost_per_day(split: dict[str, int], prices: Prices) -> float:
    return 24.0 * sum(split[o] * prices.per_hour(o) for o in OPTIONS)
