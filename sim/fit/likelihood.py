"""Log-likelihoods of counts given their means.

Families (var is the variance of a count with mean mu):

* `poisson`: var = mu;
* `nb1`: negative binomial with var = mu (1 + d) (size mu / d): counts made of clusters (many
  images per session, social cascades) whose size does not grow with the rate;
* `nb2`: negative binomial with var = mu + a mu^2 (size 1 / a): a multiplicative error that
  grows with the rate (what a model's own misfit looks like at whole-service scale).

Cumulative milestones (press figures) are lognormal about the model's cumulative users with
a relative error `MILESTONE_SD`. Counts may be non-integer (a cell scaled back to the whole
service): the gamma functions extend the densities.

For least squares, `residuals` gives r_i with sum r_i^2 = 2 (sum_i U_i - loglik), U_i the
largest log-likelihood observation i can have over mu: minimising it is maximising the
likelihood exactly, with Gauss-Newton's speed.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln, gammaln, polygamma, psi

FAMILIES = ("poisson", "nb1", "nb2")
MILESTONE_SD = 0.05
TINY = 1e-9


def loglik(y, mu, family: str, disp: float = 0.0) -> np.ndarray:
    """Log-likelihood of each count y given its mean mu."""
    y = np.asarray(y, float)
    mu = np.maximum(np.asarray(mu, float), TINY)
    if family == "poisson" or disp <= 0:
        return y * np.log(mu) - mu - gammaln(y + 1.0)
    if family == "nb2":
        r = 1.0 / disp
        return _lchoose(y, r) - r * np.log1p(mu / r) + y * np.log(mu / (r + mu))
    if family == "nb1":
        r = mu / disp
        return _lchoose(y, r) - r * np.log1p(disp) + y * np.log(disp / (1.0 + disp))
    raise ValueError(family)


def _lchoose(y, r):
    """log Gamma(y + r) - log Gamma(r) - log Gamma(y + 1), stable when r is huge (a nearly
    Poisson negative binomial): the difference of gammaln's would lose every digit."""
    return -betaln(r, y + 1.0) - np.log(y + r)


def upper(y, family: str, disp: float = 0.0) -> np.ndarray:
    """sup over mu of loglik(y, mu): at mu = y for poisson and nb2; for nb1 where
    psi(y + r) - psi(r) = log(1 + d), r = mu / d (Newton on log r)."""
    y = np.asarray(y, float)
    if family != "nb1" or disp <= 0:
        return loglik(y, np.maximum(y, TINY), family, disp)
    c = np.log1p(disp)
    pos = y > 0
    lr = np.log(np.maximum(y, 1.0) / disp)
    for _ in range(60):
        r = np.exp(lr)
        g = psi(y + r) - psi(r) - c
        dg = (polygamma(1, y + r) - polygamma(1, r)) * r  # d g / d log r (< 0)
        step = np.where(pos, g / np.minimum(dg, -1e-300), 0.0)
        lr = lr - np.clip(step, -2.0, 2.0)
        if np.max(np.abs(step)) < 1e-10:
            break
    mu = np.where(pos, np.exp(lr) * disp, TINY)
    return np.where(pos, loglik(y, mu, "nb1", disp), 0.0)


def milestone_loglik(y, mu, sd: float = MILESTONE_SD) -> np.ndarray:
    y = np.maximum(np.asarray(y, float), 1.0)
    mu = np.maximum(np.asarray(mu, float), 1.0)
    z = (np.log(y) - np.log(mu)) / sd
    return -0.5 * z * z - np.log(sd * np.sqrt(2 * np.pi) * y)


def residuals(y, mu, family: str, disp: float, up: np.ndarray | None = None) -> np.ndarray:
    """Signed r_i with r_i^2 = 2 (U_i - loglik_i) (see the module docstring)."""
    ll = loglik(y, mu, family, disp)
    u = upper(y, family, disp) if up is None else up
    return np.sign(np.asarray(y, float) - mu) * np.sqrt(2.0 * np.maximum(u - ll, 0.0))


def variance(mu, family: str, disp: float) -> np.ndarray:
    mu = np.asarray(mu, float)
    if family == "nb1":
        return mu * (1.0 + disp)
    if family == "nb2":
        return mu + disp * mu * mu
    return mu


def sample(mu, family: str, disp: float, rng: np.random.Generator) -> np.ndarray:
    """Counts drawn from the family (gamma-Poisson mixtures for the negative binomials)."""
    mu = np.maximum(np.asarray(mu, float), 0.0)
    if family == "poisson" or disp <= 0:
        return rng.poisson(mu).astype(float)
    if family == "nb2":
        r = 1.0 / disp
        return rng.poisson(rng.gamma(r, mu / r)).astype(float)
    r = mu / disp
    lam = np.where(r > 0, rng.gamma(np.maximum(r, 1e-300), disp), 0.0)
    return rng.poisson(lam).astype(float)


def fit_dispersion(y, mu, family: str) -> float:
    """Maximum-likelihood dispersion of a family for counts y with means mu."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y, float)
    mu = np.maximum(np.asarray(mu, float), TINY)
    if family == "poisson":
        return 0.0
    # moment start: Pearson excess
    if family == "nb1":
        guess = max(np.sum((y - mu) ** 2 / mu) / len(y) - 1.0, 1e-6)
    else:
        guess = max(np.sum(((y - mu) ** 2 - mu) / mu ** 2) / len(y), 1e-8)
    lg = np.log(guess)
    res = minimize_scalar(lambda z: -np.sum(loglik(y, mu, family, float(np.exp(z)))),
                          bounds=(lg - 8.0, lg + 8.0), method="bounded",
                          options={"xatol": 1e-6})
    return float(np.exp(res.x))


def pearson(y, mu) -> float:
    """Pearson dispersion sum (y - mu)^2 / mu / n (1 for Poisson counts)."""
    mu = np.maximum(np.asarray(mu, float), TINY)
    return float(np.mean((np.asarray(y, float) - mu) ** 2 / mu))
