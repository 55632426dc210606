"""Small scenario builders for tests."""

from __future__ import annotations

import re

from sim.engine import simulate
from sim.scenario import parse_scenario


def queue_scenario(lam: float, mu: float, c: int, horizon: float, seed: int = 0, *,
                   dist: str = "exponential", tiers: list[dict] | None = None,
                   discipline: str = "fifo", max_batch: int = 1, launch: str = "on_demand",
                   warmup: float | None = None, policies: list | None = None, **extra) -> dict:
    """A stationary Poisson scenario with a fixed mean batch time 1/mu (theory tests)."""
    tiers = tiers or [{"name": "a", "share": 1, "priority": 0, "price_per_image": 0, "slo_s": 1e9}]
    d = {
        "name": "q", "seed": seed, "horizon": horizon, "chunk_s": max(horizon / 200, 1.0),
        "demand": {"points": [[0, lam]], "users": 1000},
        "tiers": tiers, "scheduler": {"discipline": discipline},
        "policies": policies or [],
        "fleet": {"pools": [{"name": "p", "gpus": c, "service_time_s": 1 / mu,
                             "service_distribution": dist, "max_batch": max_batch,
                             "launch": launch}]},
        "outputs": {"warmup_s": horizon * 0.02 if warmup is None else warmup,
                    "figures": False, "report": False},
    }
    d.update(extra)
    return d


def run(d: dict):
    return simulate(parse_scenario(d))


def unpos(line: str) -> str:
    """An `error:` line without the `:line:col` after the file (the field and message stay)."""
    return re.sub(r"^(error: [^:]+?):\d+:\d+: ", r"\1: ", line)
