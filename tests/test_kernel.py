"""The fleet loop's cached state against its definitions.

The loop keeps, instead of recomputing per event, the series interval it integrates into,
the earliest patience expiry, per batch group counts and oldest heads, and per region rates
(sim/fleet/kernel.py). A call starts with all of them recomputed, so feeding the same
admitted requests two per call (each call fresh) must give what one long call gives.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from sim.fleet import kernel as K
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


@njit(cache=True)
def _bins_disagree(xs):
    # the loop's table bins against the definition (hist_bin with its log), compiled alike
    lg, ls = math.log(K.HIST_GAMMA), math.log(K.SERIES_GAMMA)
    bad = 0
    for x in xs:
        bad += K._hbin(x) != K.hist_bin(x, K.HIST_MIN, lg, K.HIST_BINS)
        bad += K._sbin(x) != K.hist_bin(x, K.SERIES_MIN, ls, K.SERIES_BINS)
    return bad


def test_table_bins_are_hist_bin_around_every_edge_and_between():
    # a log's rounding could only make hist_bin step back near a bin edge: every edge and
    # 200 doubles each side of it (both histograms), then values spread over the whole range
    edges = np.concatenate([K.H_EDGES[1:-1], K.S_EDGES[1:-1]]).view(np.int64)
    near = np.concatenate([(edges + d).view(np.float64) for d in range(-200, 201)])
    assert _bins_disagree(near) == 0
    rng = np.random.default_rng(7)
    spread = np.exp(rng.uniform(math.log(1e-7), math.log(1e9), 1_000_000))
    # (not inf or nan: hist_bin's int() of them is undefined; the table puts them last)
    assert _bins_disagree(np.concatenate([spread, [0.0, 1e-4, 1e-3, 1e300]])) == 0
    # bins are visited, not all collapsed: some in every decade of latency
    assert len(np.unique([K._hbin(x) for x in spread[:20000]])) > 1500


@pytest.mark.parametrize("edges, tab, shift", [(K.H_EDGES, K.H_TAB, K.H_SHIFT),
                                                (K.S_EDGES, K.S_TAB, K.S_SHIFT)])
def test_a_table_cell_holds_at_most_one_bin_edge(edges, tab, shift):
    # _table_bin steps up past one edge at most (no loop): every value of cell j (float bits
    # >> shift = k0 + j) is below the second edge above the cell's start bin; the last cell
    # (all above) starts in the last bin, whose upper edge is inf
    k0 = int(edges[1:2].view(np.int64)[0]) >> shift
    j = np.arange(len(tab) - 1)
    last = ((k0 + j + 1) << shift) - 1  # the largest double of cell j
    assert (last.view(np.float64) < edges[tab[:-1].astype(np.int64) + 2]).all()
    assert tab[-1] == len(edges) - 2 and edges[-1] == np.inf


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([0.5, 1.0, 1.5]), st.floats(0, 3)),
                min_size=1, max_size=300))
def test_completion_heap_pops_in_end_time_then_worker_order(ops):
    # keys (end time, worker) are distinct, so any valid heap pops them in this one order
    N = 40
    ht, hw, hn = np.zeros(N + 1), np.zeros(N + 1, np.int64), np.zeros(1, np.int64)
    ref, free, now = [], list(range(N)), 0.0
    for push, tie, dt in ops:
        if free and (push or hn[0] == 0):
            w = free.pop(int(dt * 13) % len(free))
            t = now + (tie if dt < 1.5 else dt)  # ties on round ends
            K._heap_push(ht, hw, hn, t, w)
            ref.append((t, w))
        else:
            t0 = ht[0]
            w = K._heap_pop(ht, hw, hn)
            assert (t0, w) == min(ref)
            ref.remove((t0, w))
            now = t0
            free.append(w)


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
