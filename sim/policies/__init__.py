"""Admission policies, chosen by name from the scenario."""

from __future__ import annotations

from sim.policies.base import REASONS, Decision, Params, Policy
from sim.policies.quota import DailyQuota

REGISTRY: dict[str, type[Policy]] = {p.name: p for p in (Policy, DailyQuota)}


def register(cls: type[Policy]) -> type[Policy]:
    """Add a policy class to the catalogue under its `name`."""
    REGISTRY[cls.name] = cls
    return cls


__all__ = ["REASONS", "REGISTRY", "Decision", "Params", "Policy", "register"]
