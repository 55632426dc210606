"""Demand: who asks for images, and when. Models are chosen by `demand.model`."""

from __future__ import annotations

from sim.demand.base import Arrivals, PiecewiseLinearRate
from sim.demand.curve import CurveModel

MODELS = {"curve": CurveModel}


def build_demand(scenario):
    """The demand model of a scenario: an object with generate(t0, t1, rng) and rate(t).

    Rates and users are those of the simulated cell (scenario.cell_fraction of the service)."""
    return MODELS[scenario.demand.model](scenario.demand, scenario.tiers, scenario.cell_fraction)


__all__ = ["Arrivals", "MODELS", "PiecewiseLinearRate", "build_demand"]
