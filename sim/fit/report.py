"""What `floodgate fit` writes, atomically into one folder: fit.json (estimates, 90%
intervals, log-likelihood, data window, bootstrap draws, forecast), fitted.yaml (the scenario
with the estimates), forecast.png (observed, fitted, fan) and report.html."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import yaml

from sim.fit.model import apply
from sim.report.write import dump_json, write_dir


def result(f, fc: dict) -> dict:
    params = {}
    for p in f.params:
        iv = f.interval(p.path)
        e = {"estimate": f.estimate[p.path], "scenario": p.value,
             "status": "estimated" if p.path in f.free else "held"}
        if iv is not None:
            e["low_90"], e["high_90"] = iv
            e["se_axis"] = f.se[p.path]
        else:
            e["reason"] = f.held.get(p.path, "")
        if p.path in f.prior:  # held at the estimate, drawn from its range in the bootstrap
            pr = f.prior[p.path]
            e["prior"] = {"low": pr.low, "high": pr.high, "log": pr.log}
            e["reason"] += f"; drawn from its prior {pr.describe()} in the bootstrap"
        params[p.path] = e
    return {
        "scenario": f.sc.name,
        "observed": f.obs.source,
        "window_s": [f.obs.start, f.until],
        "observations": {**{k: len(s) for k, s in f.obs.series.items()},
                         "cumulative_users": len(f.obs.milestones)},
        "families": {k: {"family": fam, "dispersion": d, "pearson": f.pearson.get(k)}
                     for k, (fam, d) in f.families.items()},
        "loglik": f.loglik,
        "parameters": params,
        "warnings": f.warnings,
        "starts": f.starts,
        "bootstrap": len(f.draws),
        "seed": f.seed,
        "observed_tier_shares": f.obs.tiers,
        "forecast": fc,
        "draws": f.draws,
    }


def fitted_scenario(f) -> dict:
    d = f.sc.model_dump(mode="json", exclude={"source"})
    d["demand"] = apply(f.sc.demand, f.estimate).model_dump(mode="json")
    d["description"] = (f"{f.sc.name} with its demand fitted to {Path(f.obs.source).name} "
                        f"up to {f.until / 3600:g} h")
    return d


def figure(f, fc: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    t = np.array(fc["t_h"])
    fig = Figure(figsize=(9, 6.5))  # object API: no pyplot state touched
    axes = fig.subplots(2, 1, sharex=True)
    for ax, key, kind, scale, label in (
            (axes[0], "new_users_per_hour", "new_users", 1.0, "new users / hour"),
            (axes[1], "requests_per_s", "requests", None, "requests / s")):
        d = fc[key]
        if "p10" in d:
            ax.fill_between(t, d["p10"], d["p90"], color="tab:blue", alpha=0.2, label="forecast p10-p90")
            ax.plot(t, d["p50"], color="tab:blue", lw=0.8, ls="--", label="forecast p50")
        ax.plot(t, d["fit"], color="tab:blue", lw=1.3, label="fitted")
        s = f.obs.series.get(kind)
        if s is not None and len(s):
            w = s.b - s.a
            y = s.y / w * (3600.0 if scale else 1.0)
            ax.plot((s.a + s.b) / 2 / 3600.0, y, ".", color="k", ms=3, label="observed")
        ax.axvline(f.until / 3600.0, color="crimson", lw=1, label=f"data end ({f.until / 3600:g} h)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8, loc="upper left")
    axes[1].set_xlabel("time since launch (h)")
    axes[0].set_title(f"Nowcast: {f.sc.name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def render(res: dict, fig: Path) -> str:
    from sim.report.html import img_tag, page, table

    rows = [[k, v["estimate"], v.get("low_90"), v.get("high_90"), v["scenario"],
             v["status"] if v["status"] == "estimated" else f"held: {v.get('reason', '')}"]
            for k, v in res["parameters"].items()]
    tot = res["forecast"]["totals"]
    trows = [[k, v["estimate"], v.get("p5"), v.get("p50"), v.get("p95")] for k, v in tot.items()]
    warn = "".join(f"<li class=bad>{html.escape(w)}</li>" for w in res["warnings"])
    fams = ", ".join(f"{k}: {v['family']}" for k, v in res["families"].items())
    return page(f"Floodgate fit: {res['scenario']}", [
        f"<p>Data: <code>{html.escape(res['observed'])}</code>, "
        f"{res['window_s'][0] / 3600:g}–{res['window_s'][1] / 3600:g} h; {fams}; "
        f"log-likelihood {res['loglik']:.1f}; {res['bootstrap']} bootstrap refits.</p>",
        f"<ul>{warn}</ul>" if warn else "",
        "<h2>Forecast</h2>", table(["figure", "estimate", "p5", "p50", "p95"], trows),
        img_tag(fig, "observed, fitted and forecast fan"),
        "<h2>Parameters (90% intervals)</h2>",
        table(["parameter", "estimate", "low", "high", "scenario", "status"], rows)])


def write_fit(f, fc: dict, out: Path) -> dict:
    res = result(f, fc)

    def fill(d: Path) -> None:
        (d / "fit.json").write_text(dump_json(res))
        (d / "fitted.yaml").write_text(yaml.safe_dump(fitted_scenario(f), sort_keys=False))
        fig = figure(f, fc, d / "forecast.png")
        (d / "report.html").write_text(render(res, fig))

    write_dir(out, fill, "fit")
    return res
