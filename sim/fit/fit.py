"""Maximum-likelihood fit of a scenario's demand parameters to observed counts.

1. Parameters the data cannot reach are held at the scenario's values before fitting: every
   parameter of a wave that has not begun by the end of the data, zeros in the scenario
   (a structural absence), and the session, seasonality and social parameters when there are
   no request counts.
2. Poisson fit (multi-start, step 3); then each series gets its family: Poisson unless
   overdispersed (Pearson dispersion over 1.5), else the negative binomial (nb1 or nb2, see
   likelihood.py) with the higher likelihood, its dispersion estimated by maximum likelihood.
3. Multi-start (in step 2's Poisson fit): the scenario's values and `starts` random starts in
   a box about them; each a bounded Gauss-Newton (scipy least_squares) on residuals whose
   squares sum to -2 log-likelihood (exactly the MLE); the best is refitted with the chosen
   families and the dispersions re-estimated.
4. Identification: from the Fisher information J'J at the optimum, a parameter whose standard
   error on its fitting axis (log, or logit for shares) exceeds SE_MAX -- the data cannot
   pin it within a factor of ~2.7 -- or that sits on its bound is held at the scenario's
   value and the rest refitted, one at a time (HOLD_FIRST decides among confounded ones).
5. Uncertainty: parametric bootstrap. `boot` data sets drawn from the fitted model (same
   intervals, families, dispersions), each refitted from the estimate; 90% intervals are
   the estimate +- t sd of the draws on the fitting axis (boot_interval), and the draws feed
   the forecast fan and the plan.
6. Priors for held parameters (optional, `prior`): a parameter the fit holds -- not
   identified, or of a wave not yet begun -- is held at one value while the truth could be
   anywhere in a range the team believes; holding it in the bootstrap too leaves that
   uncertainty out of every interval (synthetic surges: 90% intervals of the 8-day images
   covered 75% at 60 h, the misses with held parameters away from the template). With a prior
   range, each bootstrap draw takes the held parameter from it (uniform, or log-uniform) and
   refits the free ones under that value, so a draw carries both; the estimate stays the
   conditional MLE at the scenario's value, and the parameter is reported as held and drawn.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from sim.fit import likelihood as lk
from sim.fit.model import HOLD_FIRST, Forward, Param, catalogue, inflection
from sim.fit.observed import Observed

SE_MAX = 1.0
OVERDISPERSED = 1.5


@dataclass(frozen=True)
class Prior:
    """A range a held parameter is drawn from in the bootstrap: uniform on [low, high], or
    log-uniform (`log`)."""

    low: float
    high: float
    log: bool = False

    def sample(self, rng) -> float:
        if self.log:
            return float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def describe(self) -> str:
        return f"{self.low:.4g}-{self.high:.4g}{' (log-uniform)' if self.log else ''}"


def parse_prior(text: str, field: str = "--prior") -> tuple[str, Prior]:
    """`PATH=LOW:HIGH` or `PATH=LOW:HIGH:log`, e.g. `sessions.repeat=0.5:2`."""
    from sim.errors import InputError

    path, eq, rng = text.partition("=")
    parts = rng.split(":")
    if not eq or not path or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
        raise InputError(field, text, "expected PATH=LOW:HIGH or PATH=LOW:HIGH:log")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise InputError(field, text, "LOW and HIGH must be numbers") from None
    log = len(parts) == 3
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or (log and lo <= 0):
        raise InputError(field, text, "needs LOW < HIGH (and LOW > 0 for log)")
    return path.strip(), Prior(lo, hi, log)


def check_prior(params: list[Param], prior: dict[str, Prior]) -> None:
    from sim.errors import InputError

    paths = [p.path for p in params]
    for k in prior:
        if k not in paths:
            raise InputError("--prior", k, f"not a demand parameter of this scenario ({', '.join(paths)})")


@dataclass
class Fit:
    sc: object
    obs: Observed
    until: float
    params: list[Param]
    free: list[str]
    held: dict[str, str]  # path -> why
    estimate: dict[str, float]  # every parameter (held ones at the scenario's value)
    families: dict[str, tuple[str, float]]
    loglik: float
    se: dict[str, float]  # free parameters, on their fitting axis
    draws: list[dict[str, float]] = field(default_factory=list)  # bootstrap, free parameters
    warnings: list[str] = field(default_factory=list)
    pearson: dict[str, float] = field(default_factory=dict)
    starts: int = 0
    seed: int = 0
    prior: dict[str, Prior] = field(default_factory=dict)  # held parameters drawn in the bootstrap

    def values(self, draw: dict[str, float] | None = None) -> dict[str, float]:
        return {**self.estimate, **(draw or {})}

    def interval(self, path: str, level: float = 0.9) -> tuple[float, float] | None:
        """The estimate +- t sd of the bootstrap draws on the parameter's fitting axis (see
        boot_interval), mapped back."""
        if path not in self.free or len(self.draws) < 2:
            return None
        p = next(q for q in self.params if q.path == path)
        x = np.array([p.to_x(d[path]) for d in self.draws])
        lo, hi = boot_interval(p.to_x(self.estimate[path]), x, level)
        return float(p.from_x(lo)), float(p.from_x(hi))


def boot_interval(center: float, draws: np.ndarray, level: float = 0.9) -> tuple[float, float]:
    """center +- t_{B-1} sd(draws) sqrt(1 + 1/B). With B of a few dozen draws, the draws'
    own 5th and 95th percentiles would cover only ~83% (B = 25): the t quantile and the
    prediction factor make the interval's coverage the nominal one for a normal axis."""
    from scipy.stats import t

    B = len(draws)
    hw = float(t.ppf(0.5 + level / 2, B - 1) * np.std(draws, ddof=1) * np.sqrt(1 + 1 / B))
    return center - hw, center + hw


class Problem:
    """Residuals of the observations as a function of the free parameters' axis values."""

    def __init__(self, fw: Forward, obs: Observed, free: list[Param], fixed: dict[str, float],
                 families: dict[str, tuple[str, float]]):
        self.fw, self.obs, self.free, self.fixed, self.families = fw, obs, free, fixed, families
        self.data = {k: s.y for k, s in obs.series.items()}
        if len(obs.milestones):
            self.data["cumulative_users"] = obs.milestones.y
        self.up = {k: lk.upper(y, *families[k]) for k, y in self.data.items()
                   if k != "cumulative_users"}
        self.lo = np.array([p.bounds()[0] for p in free])
        self.hi = np.array([p.bounds()[1] for p in free])

    def values(self, x) -> dict[str, float]:
        return {**self.fixed, **{p.path: float(p.from_x(v)) for p, v in zip(self.free, x, strict=True)}}

    def means(self, x) -> dict[str, np.ndarray]:
        return self.fw.expected(self.values(x), self.obs)

    def resid(self, x) -> np.ndarray:
        mu = self.means(x)
        out = []
        for k, y in self.data.items():
            if k == "cumulative_users":
                out.append((np.log(np.maximum(y, 1.0)) - np.log(np.maximum(mu[k], 1.0))) / lk.MILESTONE_SD)
            else:
                out.append(lk.residuals(y, mu[k], *self.families[k], self.up[k]))
        r = np.concatenate(out)
        return np.where(np.isfinite(r), r, 1e6)

    def loglik(self, x) -> float:
        mu = self.means(x)
        tot = 0.0
        for k, y in self.data.items():
            if k == "cumulative_users":
                tot += float(np.sum(lk.milestone_loglik(y, mu[k])))
            else:
                tot += float(np.sum(lk.loglik(y, mu[k], *self.families[k])))
        return tot

    def solve(self, x0, max_nfev: int | None = None):
        x0 = np.clip(np.asarray(x0, float), self.lo + 1e-9, self.hi - 1e-9)
        if len(x0) == 0:
            class R:
                x, cost, jac = x0, 0.5 * float(np.sum(self.resid(x0) ** 2)), np.zeros((1, 0))
            return R
        return least_squares(self.resid, x0, bounds=(self.lo, self.hi), method="trf",
                             x_scale="jac", max_nfev=max_nfev or 60 * (len(x0) + 1),
                             xtol=1e-7, ftol=1e-7, diff_step=1e-5)


def prior_holds(sc, obs: Observed, params: list[Param], until: float) -> dict[str, str]:
    held = {}
    for p in params:
        if p.path.startswith("waves["):
            w = sc.demand.waves[int(p.path[6:p.path.index("]")])]
            if w.start >= until:
                held[p.path] = f"wave {w.name!r} begins at {w.start / 3600:g} h, after the data end"
                continue
        if p.value == 0:
            held[p.path] = "zero in the scenario"
        elif "requests" not in obs.series and not p.path.startswith("waves["):
            held[p.path] = "no request counts"
    return held


def choose_families(obs: Observed, mu: dict[str, np.ndarray]) -> tuple[dict, dict]:
    fam, pear = {}, {}
    for k, s in obs.series.items():
        pear[k] = lk.pearson(s.y, mu[k])
        if pear[k] <= OVERDISPERSED:
            fam[k] = ("poisson", 0.0)
            continue
        best = max((_dispersion(s.y, mu[k], f) for f in ("nb1", "nb2")),
                   key=lambda fd: float(np.sum(lk.loglik(s.y, mu[k], *fd))))
        fam[k] = best
    return fam, pear


def _dispersion(y, mu, f: str) -> tuple[str, float]:
    """The family's ML dispersion; a variance within 1% of Poisson's is Poisson (a nearly
    Poisson negative binomial has sizes so large that its likelihood's finite differences
    turn to noise, and with them the Fisher information)."""
    if f == "poisson":
        return f, 0.0
    d = lk.fit_dispersion(y, mu, f)
    inflation = d if f == "nb1" else d * float(np.median(mu))
    return (f, d) if inflation > 0.01 else ("poisson", 0.0)


def _refit_dispersion(obs, mu, fam):
    return {k: _dispersion(obs.series[k].y, mu[k], f) for k, (f, _) in fam.items()}


def fit(sc, obs: Observed, until: float | None = None, starts: int = 3, boot: int = 40,
        seed: int = 0, progress: bool = False, hold: dict[str, str] | None = None,
        prior: dict[str, Prior] | None = None) -> Fit:
    """Fit the scenario's demand to obs (up to `until`, default the data's end); `prior`:
    ranges for parameters the fit ends up holding, drawn in the bootstrap (step 6)."""
    until = obs.end if until is None else float(until)
    obs = obs.upto(until)
    params = catalogue(sc)
    check_prior(params, prior or {})
    fw = Forward(sc, params)
    base = {p.path: p.value for p in params}
    held = prior_holds(sc, obs, params, until)
    held.update(hold or {})
    rng = np.random.default_rng([seed, 15])

    def problem(free_paths, fam, fixed):
        free = [p for p in params if p.path in free_paths]
        return Problem(fw, obs, free, fixed, fam)

    free = [p.path for p in params if p.path not in held]
    poisson = {k: ("poisson", 0.0) for k in obs.series}
    pr = problem(free, poisson, base)
    x_scn = np.array([p.to_x(p.value) for p in pr.free])
    # multi-start (Poisson): the scenario's values and random starts in a box about them (a
    # factor 5 for the waves' parameters, 2 for the rest), where two overlapping waves can
    # split the same adopters in several ways
    width = np.array([np.log(5.0) if p.path.startswith("waves[") else np.log(2.0) for p in pr.free])
    cands = [x_scn] + [x_scn + rng.uniform(-1.0, 1.0, len(x_scn)) * width for _ in range(starts)]
    r0 = None
    for j, x0 in enumerate(cands):
        r = pr.solve(x0, max_nfev=None if j == 0 else 30 * (len(x0) + 1))
        if r0 is None or r.cost < r0.cost:
            r0 = r
    r0 = pr.solve(r0.x)
    fam, pear = choose_families(obs, pr.means(r0.x))
    x_best = r0.x
    while True:
        pr = problem(free, fam, base)
        best = pr.solve(x_best)
        fam = _refit_dispersion(obs, pr.means(best.x), fam)
        pr = problem(free, fam, base)
        best = pr.solve(best.x)
        x_best = best.x
        se = _se(best.jac, len(free))
        bad = [(i, p) for i, p in enumerate(pr.free)
               if not se[i] <= SE_MAX or min(best.x[i] - pr.lo[i], pr.hi[i] - best.x[i]) < 1e-3]
        if not bad:
            break
        i, p = max(bad, key=lambda ip: (_rank(ip[1].path), se[ip[0]]))
        held[p.path] = ("at the edge of its range" if se[i] <= SE_MAX else
                        f"not identified by the data (s.e. {se[i]:.2g} on the "
                        f"{'logit' if p.share else 'log'} axis)")
        free = [q for q in free if q != p.path]
        x_best = np.delete(best.x, i)
    est = pr.values(best.x)
    out = Fit(sc, obs, until, params, free, held, est, fam, pr.loglik(best.x),
              {p.path: float(s) for p, s in zip(pr.free, se, strict=True)},
              pearson=pear, starts=len(cands), seed=seed)
    out.prior = {k: v for k, v in (prior or {}).items() if k in held}
    out.draws = bootstrap(pr, best.x, boot, rng, progress, out.prior)
    out.warnings = warnings(out)
    return out


def _rank(path: str) -> int:
    return len(HOLD_FIRST) - HOLD_FIRST.index(path) if path in HOLD_FIRST else 0


def _se(jac, n: int) -> np.ndarray:
    if n == 0:
        return np.zeros(0)
    J = np.asarray(jac, float)
    F = J.T @ J
    try:
        cov = np.linalg.inv(F)
        d = np.diag(cov)
        if np.any(d < 0) or not np.all(np.isfinite(d)):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        d = np.diag(np.linalg.pinv(F, rcond=1e-12))
        d = np.where(np.diag(F) > 0, d, np.inf)
        d = np.where(d > 0, d, np.inf)  # a direction the data do not see
    return np.sqrt(d)


def bootstrap(pr: Problem, x: np.ndarray, B: int, rng, progress: bool = False,
              prior: dict[str, Prior] | None = None) -> list[dict]:
    """Refit B data sets drawn from the fitted model; the free parameters of each, and with
    `prior` the held parameters' values drawn for it (the refit made under them)."""
    prior = prior or {}
    if B <= 0 or (len(x) == 0 and not prior):
        return []
    mu = pr.means(x)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=B, desc="bootstrap", file=sys.stderr, delay=2.0)
    draws = []
    saved = dict(pr.data), dict(pr.up), pr.fixed
    try:
        for _ in range(B):
            held = {k: p.sample(rng) for k, p in prior.items()}
            pr.fixed = {**saved[2], **held}
            for k in saved[0]:
                if k == "cumulative_users":
                    pr.data[k] = mu[k] * np.exp(lk.MILESTONE_SD * rng.standard_normal(len(mu[k])))
                else:
                    pr.data[k] = lk.sample(mu[k], *pr.families[k], rng)
                    pr.up[k] = lk.upper(pr.data[k], *pr.families[k])
            # a drawn held value moves the free ones further from x: more steps to follow it
            r = pr.solve(x, max_nfev=(20 if held else 8) * (len(x) + 1))
            draws.append({**held, **{p.path: float(p.from_x(v)) for p, v in zip(pr.free, r.x, strict=True)}})
            if bar is not None:
                bar.update(1)
    finally:
        pr.data, pr.up, pr.fixed = saved
        if bar is not None:
            bar.close()
    return draws


def warnings(f: Fit) -> list[str]:
    out = []
    for i, w in enumerate(f.sc.demand.waves):
        if w.start >= f.until:
            continue
        fitted = f.sc.demand.waves[i].model_copy(update={
            k.split(".")[1]: v for k, v in f.estimate.items() if k.startswith(f"waves[{i}].")})
        ti = inflection(fitted)
        if ti is not None and w.start + ti > f.until:
            out.append(f"wave {w.name!r} is observed only before its inflection point (fitted at "
                       f"{(w.start + ti) / 3600:.1f} h, data end at {f.until / 3600:.1f} h): "
                       "its market and peak are extrapolated")
    for path, why in f.held.items():
        if why.startswith("not identified") or why.startswith("at the edge"):
            out.append(f"{path} held at the scenario's value: {why}")
    return out


def rel_width(f: Fit, path: str) -> float:
    iv = f.interval(path)
    if iv is None:
        return math.inf
    return (iv[1] - iv[0]) / f.estimate[path]
