"""What a fit estimates, and the expected counts it compares with the data.

A parameter is a path into the scenario's demand section (`waves[2].market`,
`sessions.repeat`, `social.branching`, ...) with a transform to an unconstrained axis (log for
positive values, logit for shares in (0, 1)), so optimisers and intervals work on that axis.
The forward model is the demand model's own mean intensity (sim/demand/viral.py: adoption
curves, repeat sessions with novelty decay, seasonality, Hawkes feedback on the mean): one
definition of the demand, used for simulation and for fitting alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.demand.viral import DAY, Adoption, ViralModel
from sim.errors import InputError

WAVE_PARAMS = {"bass": ("market", "p", "q"), "logistic": ("market", "rate", "i0"),
               "sir": ("market", "beta", "gamma", "i0")}
SHARE = {"i0", "diurnal_amplitude", "branching"}  # in (0, 1): logit axis
# When the data cannot tell two parameters apart, the one earlier here is held first.
HOLD_FIRST = ("social.scale_s", "social.branching", "seasonality.diurnal_amplitude",
              "sessions.novelty_s", "sessions.images")


@dataclass(frozen=True)
class Param:
    path: str  # e.g. "waves[0].market"
    value: float  # the scenario's value
    share: bool  # logit axis (else log)

    def to_x(self, v: float) -> float:
        if self.share:
            v = min(max(v, 1e-9), 1 - 1e-9)
            return float(np.log(v / (1 - v)))
        if self.path == "sessions.images":  # images >= 1
            return float(np.log(max(v - 1.0, 1e-9)))
        return float(np.log(max(v, 1e-300)))

    def from_x(self, x):
        x = np.asarray(x, float)
        if self.share:
            return 1.0 / (1.0 + np.exp(-x))
        if self.path == "sessions.images":
            return 1.0 + np.exp(x)
        return np.exp(x)

    def bounds(self) -> tuple[float, float]:
        if self.share:
            return -9.0, 9.0
        x = self.to_x(self.value)
        w = np.log(100.0) if self.path.endswith("market") else np.log(30.0)
        return x - w, x + w


def get(spec, path: str) -> float:
    obj = spec
    for part in path.replace("]", "").split("."):
        name, _, idx = part.partition("[")
        obj = getattr(obj, name)
        if idx:
            obj = obj[int(idx)]
    return float(obj)


def apply(spec, values: dict[str, float]):
    """A copy of the demand spec with the given parameter values."""
    waves = list(spec.waves)
    upd: dict[str, dict] = {}
    wupd: dict[int, dict] = {}
    for path, v in values.items():
        head, _, leaf = path.partition(".")
        if head.startswith("waves["):
            wupd.setdefault(int(head[6:-1]), {})[leaf] = float(v)
        else:
            upd.setdefault(head, {})[leaf] = float(v)
    for i, u in wupd.items():
        waves[i] = waves[i].model_copy(update=u)
    top = {"waves": waves}
    for head, u in upd.items():
        top[head] = getattr(spec, head).model_copy(update=u)
    return spec.model_copy(update=top)


def catalogue(sc) -> list[Param]:
    """Every demand parameter a fit may estimate, at the scenario's values."""
    d = sc.demand
    if d.model != "viral":
        raise InputError(sc.source, "demand.model",
                         f"fit estimates a viral demand model (this scenario's is {d.model!r})")
    out = []
    for i, w in enumerate(d.waves):
        for name in WAVE_PARAMS[w.adoption]:
            out.append(Param(f"waves[{i}].{name}", float(getattr(w, name)), name in SHARE))
    out += [Param("sessions.repeat", d.sessions.repeat, False),
            Param("sessions.novelty_s", d.sessions.novelty_s, False),
            Param("sessions.images", d.sessions.images, False),
            Param("seasonality.diurnal_amplitude", d.seasonality.diurnal_amplitude, True)]
    if d.social is not None:
        out += [Param("social.branching", d.social.branching, True),
                Param("social.scale_s", d.social.scale_s, False)]
    return out


class Forward:
    """Expected whole-service counts over intervals for parameter values: new users (the
    adoption curves), requests (the mean image rate), cumulative users at milestones."""

    def __init__(self, sc, params: list[Param]):
        self.sc = sc
        self.params = params

    def spec(self, values: dict[str, float]):
        return apply(self.sc.demand, values)

    def model(self, values: dict[str, float], until: float) -> ViralModel:
        return ViralModel(self.spec(values), self.sc.tiers, 1.0, until, self.sc.epoch)

    def expected(self, values: dict[str, float], obs) -> dict[str, np.ndarray]:
        """Mean of every observation in `obs` (an Observed), by series name."""
        until = max(obs.end, 1.0)
        m = self.model(values, until)
        out = {}
        if "new_users" in obs.series:
            s = obs.series["new_users"]
            out["new_users"] = m.new_users(s.b) - m.new_users(s.a)
        if "requests" in obs.series:
            s = obs.series["requests"]
            out["requests"] = requests_between(m, s.a, s.b, until)
        if len(obs.milestones):
            out["cumulative_users"] = m.new_users(obs.milestones.b)
        return out


def requests_between(m: ViralModel, a, b, until: float) -> np.ndarray:
    """Expected requests over [a, b): images of first sessions from the adoption curves
    exactly, of repeat sessions and social offspring from the model's grid.

    The model's mean image rate takes first sessions from a central difference of the
    adopters on its grid, which spreads a wave's start over the grid cell before it and
    flattens the first hour of a wave that starts fast (about 20% low for p = 0.3/day on a
    5-minute grid): counts at a launch would contradict it. Offspring are the mean rate's
    remainder over the immigrants on the same grid, so that spread cancels out of them."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    k = m.mean_k
    img = m.image_rate(until)
    sess = m.session_rate()
    first = m.new_users(b) - m.new_users(a)
    rep = m.rep_rate.cumulative(b) - m.rep_rate.cumulative(a)
    kids = (img.cumulative(b) - img.cumulative(a)) - k * (sess.cumulative(b) - sess.cumulative(a))
    return np.maximum(k * (first + rep) + kids, 0.0)


def inflection(w) -> float | None:
    """Time since its start at which a wave adds users fastest (None: at once)."""
    if w.adoption == "bass":
        return float(np.log(w.q / w.p) / (w.p + w.q) * DAY) if w.q > w.p else None
    if w.adoption == "logistic":
        return float(np.log((1 - w.i0) / w.i0) / w.rate * DAY) if w.i0 < 0.5 else None
    a = Adoption(w, 120 * DAY)
    x = a.x
    j = int(np.argmax(np.diff(a.F)))
    return float(x[j]) if j > 0 else None
