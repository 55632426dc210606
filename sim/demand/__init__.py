"""Demand: who asks for images, and when. Models are chosen by `demand.model`:

* `curve`: Poisson arrivals on a rate curve given point by point;
* `viral`: adoption waves (Bass, logistic/SI, SIR) x per-user sessions x seasonality;
* `trace`: replay of a CSV of timestamps.

Any of them can add social feedback (`demand.social`, Hawkes); retries (`demand.retry`) and
paid conversion (`demand.conversion`) act during a run (sim/demand/feedback.py).
"""

from __future__ import annotations

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


__all__ = ["Arrivals", "MODELS", "PiecewiseLinearRate", "build_demand"]
