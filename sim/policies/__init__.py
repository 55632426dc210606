"""Admission policies, chosen by name from the scenario."""

from __future__ import annotations

from collections.abc import Callable

from sim.outcomes import REASONS
from sim.policies.base import Decision, Params, Policy
from sim.policies.brownout import Brownout
from sim.policies.concurrency import Aimd, Concurrency, Gradient2
from sim.policies.dynamics import Autoscale, Failures, RegionOutage, Throttling
from sim.policies.limits import LIMITERS
from sim.policies.quota import DailyQuota
from sim.policies.screening import ContentFilter, Shadow
from sim.policies.shedding import Codel, ShedReserve

REGISTRY: dict[str, type[Policy]] = {
    p.name: p
    for p in (Policy, DailyQuota, *LIMITERS, Concurrency, ShedReserve, Aimd, Gradient2, Brownout,
              ContentFilter, Shadow, Codel, Autoscale, Failures, Throttling, RegionOutage)
}


# Called after each register(): the scenario schema rebuilds its union of policy models.
ON_REGISTER: list[Callable[[], None]] = []


def register(cls: type[Policy]) -> type[Policy]:
    """Add a policy class to the catalogue under its `name`."""
    REGISTRY[cls.name] = cls
    for hook in ON_REGISTER:
        hook()
    return cls


__all__ = ["REASONS", "REGISTRY", "Decision", "Params", "Policy", "register"]
