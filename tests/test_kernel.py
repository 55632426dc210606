"""The fleet loop's cached state against its definitions.

The loop keeps, instead of recomputing per event, the series interval it integrates into,
the earliest patience expiry, per batch group counts and oldest heads, and per region rates
(sim/fleet/kernel.py). A call starts with all of them recomputed, so feeding the same
admitted requests two per call (each call fresh) must give what one long call gives.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.fleet.kernel import _iv_end, _ser_ix, _ser_ix_end
from sim.metrics.summary import summarize

# series intervals that are not binary fractions as well as round ones
DTS = [600.0, 0.1, 20000 / 45 / 1000, 1 / 3, 86400 / 7, 1e-3 * 3, 7.7]


@settings(max_examples=300, deadline=None)
@given(dts=st.sampled_from(DTS), ix=st.integers(0, 10**7))
def test_interval_ends_are_the_least_instants_past_them(dts, ix):
    # the cache is valid on [an instant that gave ix, end): end must be the first instant
    # the direct computation puts past ix, and the one below it must still give ix
    e = _ser_ix_end(ix, dts)
    below = np.nextafter(e, -np.inf)
    assert _ser_ix(e, dts) > ix
    assert _ser_ix(below, dts) == ix
    e = _iv_end(ix, dts)
    assert int(e / dts) > ix
    assert int(np.nextafter(e, -np.inf) / dts) == ix


@settings(max_examples=200, deadline=None)
@given(dts=st.sampled_from(DTS), ix=st.integers(1, 10**7), k=st.integers(-4, 4))
def test_interval_of_an_instant_never_decreases(dts, ix, k):
    # the cache rests on _ser_ix (and the counts' int(t / dts)) being non-decreasing in t;
    # the rounding that could break it sits at the boundaries, so step ulps across them
    s = (ix + 1) * dts
    for _ in range(abs(k) + 4):
        s = np.nextafter(s, -np.inf)
    prev_a = prev_b = -1
    for _ in range(12):
        a, b = _ser_ix(s, dts), int(s / dts)
        assert a >= prev_a and b >= prev_b
        prev_a, prev_b = a, b
        s = np.nextafter(s, np.inf)


def _regions_scenario(root):
    from sim.scenario import load_scenario, parse_scenario

    sc = load_scenario(root / "scenarios/ghibli_2025.yaml")  # in three fleet regions
    assert sc.fleet.regions is not None
    x = sc.model_dump(mode="json", exclude={"source"})
    x.update(cell_fraction=0.002, horizon="147h")
    # short patience: requests time out of the queues (the cached expiry) on the free opening
    x["tiers"] = [dict(t, patience_s=20) for t in x["tiers"]]
    return parse_scenario(x, "regions")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["regions", "policies/lifo", "policies/drr"])
def test_two_requests_per_call_serve_like_one_call(root, name):
    # Each call recomputes the cached state from the queues; one long call updates it per
    # event. Slices of 2 admitted requests (each call fresh) give the same summary.
    from sim.engine import Run
    from sim.scenario import load_scenario

    if name == "regions":
        sc = _regions_scenario(root)
    else:
        sc = load_scenario(root / f"scenarios/{name}.yaml", {"horizon": "2h"})
    start = 143 * 3600.0 if name == "regions" else 0.0  # the free opening
    runs = [Run(sc, slice_requests=n, start=start).execute() for n in (1 << 20, 2)]
    assert summarize(runs[0]) == summarize(runs[1])
    S = runs[0].fleet.S
    assert S.completed.sum() > 1000
    if name == "regions":
        assert S.abandoned.sum() > 0 and S.reg_spill.sum() > 0
