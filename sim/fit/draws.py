"""A fit's demand as scenarios: the point estimate, and bootstrap draws for planning.

`plan --forecast FIT_DIR` and `compare --forecast FIT_DIR` read FIT_DIR/fit.json (written by
`floodgate fit`) and put its demand parameters into the scenario being planned: the estimate
for the point plan, and draws stratified by their peak request rate over the planning
window (draw i of n at the (i + 1/2)/n quantile), so a few draws span the forecast's range.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sim.errors import InputError
from sim.fit.model import apply, catalogue


def load_fit(fit_dir: str | Path, sc) -> dict:
    p = Path(fit_dir) / "fit.json"
    try:
        res = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError("--forecast", str(fit_dir), "no fit.json there (write one with floodgate fit)") from None
    except (OSError, ValueError) as e:
        raise InputError(str(p), "(file)", f"cannot read: {e}") from None
    if not isinstance(res, dict) or "parameters" not in res or "draws" not in res:
        raise InputError(str(p), "(root)", "not a fit.json of floodgate fit")
    if res.get("scenario") != sc.name:
        raise InputError(str(p), "scenario", f"fitted for {res.get('scenario')!r}, not {sc.name!r}")
    known = {q.path for q in catalogue(sc)}
    for k in res["parameters"]:
        if k not in known:
            raise InputError(str(p), f"parameters.{k}", "not a demand parameter of this scenario")
    return res


def with_demand(sc, values: dict[str, float], name_suffix: str = ""):
    """The scenario with these demand parameters (a validated copy)."""
    from sim.scenario import parse_scenario

    d = sc.model_dump(mode="json", exclude={"source"})
    d["demand"] = apply(sc.demand, values).model_dump(mode="json")
    return parse_scenario(d, sc.source + name_suffix)


def point(sc, res: dict):
    return with_demand(sc, {k: v["estimate"] for k, v in res["parameters"].items()}, " (fit)")


def _peak(sc, window) -> float:
    from sim.demand.viral import ViralModel

    a, b = window if window else (0.0, sc.horizon)
    m = ViralModel(sc.demand, sc.tiers, 1.0, b, sc.epoch)
    t = np.arange(a, b, 600.0)
    return float(m.image_rate(b).rate(t).max())


def stratified(sc, res: dict, n: int, window=None, quantile: float | None = None) -> list:
    """n draws of the fit as scenarios, spread over the forecast's peak request rate
    (quantile: the one draw nearest that quantile instead)."""
    est = {k: v["estimate"] for k, v in res["parameters"].items()}
    draws = res["draws"]
    if not draws:
        raise InputError("--forecast", res.get("observed", "fit.json"),
                         "the fit has no bootstrap draws (refit with --boot > 0)")
    scs = [with_demand(sc, {**est, **d}, f" (draw {i})") for i, d in enumerate(draws)]
    peaks = np.array([_peak(s, window) for s in scs])
    order = np.argsort(peaks, kind="stable")
    if quantile is not None:
        return [scs[order[min(int(quantile * len(scs)), len(scs) - 1)]]]
    n = min(n, len(scs))
    return [scs[order[int((i + 0.5) / n * len(scs))]] for i in range(n)]
