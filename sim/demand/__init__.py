"""Demand: who asks for images, and when. Models are chosen by `demand.model`:

* `curve`: Poisson arrivals on a rate curve given point by point;
* `viral`: adoption waves (Bass, logistic/SI, SIR) x per-user sessions x seasonality;
* `trace`: replay of a CSV of timestamps.

Any of them can add social feedback (`demand.social`, Hawkes); retries (`demand.retry`) and
paid conversion (`demand.conversion`) act during a run (sim/demand/feedback.py).
"""

from __future__ import annotations

import numpy as np

from sim.demand.base import Arrivals, PiecewiseLinearRate
from sim.demand.curve import CurveModel
from sim.demand.trace import TraceModel
from sim.demand.viral import ViralModel

MODELS = {"curve": CurveModel, "viral": ViralModel, "trace": TraceModel}


def build_demand(scenario, scale: float | None = None, until: float | None = None):
    """The demand model of a scenario: an object with generate(t0, t1, rng) and rate(t).

    Rates and users are those of the simulated cell (scenario.cell_fraction of the service),
    or of `scale` when given (1: the whole service). `until`: how far the model must reach
    (default the horizon)."""
    cls = MODELS[scenario.demand.model]
    if cls is CurveModel:
        return cls.from_scenario(scenario, scale)
    return cls.from_scenario(scenario, scale, until)


def chunk_arrivals(model, scenario, k: int, until: float, convert: bool = True) -> Arrivals:
    """First attempts of chunk k: [k * chunk_s, min((k + 1) * chunk_s, until)), drawn from
    rng([seed, 1, k]). Every reader of a scenario's demand (the run, `floodgate demand`, the
    live schedule) draws through here, so all see the same arrivals for the same seed.
    convert=False: tiers before paid conversion (the run applies it when it takes the chunk)."""
    c = scenario.chunk_s
    t0, t1 = k * c, min((k + 1) * c, until)
    if t1 <= t0:
        return Arrivals.empty()
    return model.generate(t0, t1, np.random.default_rng([scenario.seed, 1, k]), convert)


__all__ = ["Arrivals", "MODELS", "PiecewiseLinearRate", "build_demand", "chunk_arrivals"]
