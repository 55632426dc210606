"""Closed-form queueing results the simulator is checked against (../shared/reference/queueing_oracles.md)."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq


def erlang_c(lam: float, mu: float, c: int) -> float:
    """Probability of waiting in M/M/c, with Erlang B computed by the stable recursion."""
    a = lam / mu
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    rho = a / c
    return b / (1 - rho * (1 - b))


def mmc_wq(lam: float, mu: float, c: int) -> float:
    return erlang_c(lam, mu, c) / (c * mu - lam)


def md1_wq(lam: float, mu: float) -> float:
    rho = lam / mu
    return rho / (2 * mu * (1 - rho))


def cobham_mg1(lams: list[float], es: list[float], es2: list[float]) -> list[float]:
    """Mean waits per class, non-preemptive priority M/G/1, class 0 highest."""
    w0 = sum(lam * s2 / 2 for lam, s2 in zip(lams, es2, strict=True))
    out, sigma = [], 0.0
    for lam, s in zip(lams, es, strict=True):
        prev = sigma
        sigma += lam * s
        out.append(w0 / ((1 - prev) * (1 - sigma)))
    return out


def bulk_lq(lam: float, mu: float, k: int) -> float:
    """M/M^K/1 with the server always cycling: Lq = r0 / (1 - r0)."""
    f = lambda r: mu * r ** (k + 1) - (lam + mu) * r + lam  # noqa: E731
    r0 = brentq(f, 1e-12, 1 - 1e-12)
    return r0 / (1 - r0)


def batch_means_halfwidth(x: np.ndarray) -> float:
    """95% half-width of the mean of independent replications (t with n-1 dof, n >= 3)."""
    from scipy.stats import t

    n = len(x)
    return float(t.ppf(0.975, n - 1) * np.std(x, ddof=1) / math.sqrt(n))
