"""Quantiles from the log-spaced histograms the fleet loop fills (DDSketch-style)."""

from __future__ import annotations

import numpy as np

from sim.fleet.kernel import HIST_GAMMA, HIST_MIN, SERIES_GAMMA, SERIES_MIN


def _rep(i: np.ndarray, xmin: float, gamma: float) -> np.ndarray:
    """Value reported for bin i: within (gamma-1)/(gamma+1) of anything in the bin; bin 0 is ~0."""
    i = np.asarray(i)
    return np.where(i == 0, 0.0, xmin * gamma ** (i - 1.0) * 2 * gamma / (gamma + 1))


def quantiles(hist: np.ndarray, qs=(0.5, 0.95, 0.99), series: bool = False) -> np.ndarray:
    """Quantiles along the last axis of a histogram (nan where it is empty)."""
    xmin, gamma = (SERIES_MIN, SERIES_GAMMA) if series else (HIST_MIN, HIST_GAMMA)
    h = np.asarray(hist, dtype=np.int64)
    cum = np.cumsum(h, axis=-1)
    n = cum[..., -1:]
    out = []
    for q in qs:
        # rank of the q-quantile (nearest-rank, 1-based)
        rank = np.maximum(1, np.ceil(q * n))
        idx = np.argmax(cum >= rank, axis=-1)
        v = _rep(idx, xmin, gamma)
        out.append(np.where(n[..., 0] > 0, v, np.nan))
    return np.stack(out, axis=-1)


def mean(hist: np.ndarray, series: bool = False) -> np.ndarray:
    """Mean along the last axis of a histogram, each bin at its reported value (nan if empty)."""
    xmin, gamma = (SERIES_MIN, SERIES_GAMMA) if series else (HIST_MIN, HIST_GAMMA)
    h = np.asarray(hist, dtype=np.float64)
    v = _rep(np.arange(h.shape[-1]), xmin, gamma)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (h * v).sum(axis=-1) / h.sum(axis=-1)


RELATIVE_ERROR = (HIST_GAMMA - 1) / (HIST_GAMMA + 1)
SERIES_RELATIVE_ERROR = (SERIES_GAMMA - 1) / (SERIES_GAMMA + 1)
