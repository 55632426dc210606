"""What sweep, optimize and sensitivity write: tables (CSV, Parquet), figures, report.html.

Figures use the object API only (`matplotlib.figure.Figure`: no pyplot, no backend switch).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sim.report.html import img_tag, page, table
from sim.report.write import dump_json, write_dir


def _label(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _numeric(values: list) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def sweep_metrics(res) -> list[str]:
    """Metrics worth a figure: the objective, constrained metrics, each tier's p95, free goodput,
    revenue minus GPU cost, and the share rejected by each reason that rejected anything (each
    once, in that order)."""
    out = []
    if res.objective is not None:
        out.append(res.objective.metric)
    out += [c.metric for c in res.constraints if not c.metric.endswith("served_share")]
    names = {m for v in res.values for m in v}
    tiers = list(dict.fromkeys(m.split(".")[0] for m in names if m.endswith(".p95_s")))
    out += [f"{t}.p95_s" for t in tiers]
    out += ["free_goodput", "revenue_minus_gpu_cost"]
    # share rejected by reason, for the reasons that rejected anything somewhere in the grid
    out += sorted(m for m in names if ".rejected_share." in m
                  and any(np.isfinite(v[m][0]) and v[m][0] > 0 for v in res.values))
    return [m for m in dict.fromkeys(out) if m in names]


def _bounds(res, metric: str) -> list:
    return [c for c in res.constraints if c.metric == metric]


def sweep_figures(res) -> dict[str, tuple[str, Figure]]:
    """Line plots with 95% bands (one grid parameter) or heatmaps (two); by file stem."""
    metrics = sweep_metrics(res)
    out: dict[str, tuple[str, Figure]] = {}
    if len(res.axes) == 1:
        a = res.axes[0]
        x = a.values if _numeric(a.values) else list(range(len(a.values)))
        n = len(metrics)
        cols = 2 if n > 1 else 1
        rows = math.ceil(n / cols)
        fig = Figure(figsize=(5.2 * cols, 3.0 * rows))
        axs = fig.subplots(rows, cols, squeeze=False)
        for ax, m in zip(axs.flat, metrics, strict=False):
            mean = np.array([v[m][0] for v in res.values], float)
            lo = np.array([v[m][1] for v in res.values], float)
            hi = np.array([v[m][2] for v in res.values], float)
            ax.plot(x, mean, marker="o", lw=1.4)
            ok = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(np.asarray(x, float)[ok], lo[ok], hi[ok], alpha=0.25)
            for c in _bounds(res, m):
                ax.axhline(c.bound, color="crimson", ls="--", lw=1, label=c.text)
                ax.legend(fontsize=7)
            ax.set_title(m, fontsize=9)
            ax.set_xlabel(a.path, fontsize=8)
            if not _numeric(a.values):
                ax.set_xticks(x, [_label(v) for v in a.values])
        for ax in list(axs.flat)[n:]:
            ax.set_visible(False)
        fig.suptitle(f"Sweep of {a.path}: mean over {res.reps} replications, band: 95% interval")
        out["sweep_lines"] = (f"Metrics against {a.path}", fig)
    elif len(res.axes) == 2:
        ax0, ax1 = res.axes
        index = {(p[ax0.path], p[ax1.path]): i for i, p in enumerate(res.points)}
        for m in metrics:
            z = np.full((len(ax1.values), len(ax0.values)), np.nan)
            for i0, v0 in enumerate(ax0.values):
                for i1, v1 in enumerate(ax1.values):
                    z[i1, i0] = res.values[index[(v0, v1)]][m][0]
            fig = Figure(figsize=(1.0 + 0.9 * len(ax0.values) + 2, 1.0 + 0.6 * len(ax1.values) + 1.2))
            ax = fig.add_subplot()
            zz = np.where(np.isfinite(z), z, np.nan)
            im = ax.imshow(zz, origin="lower", aspect="auto", cmap="viridis")
            fig.colorbar(im, ax=ax, label=m)
            for i0, v0 in enumerate(ax0.values):
                for i1, v1 in enumerate(ax1.values):
                    i = index[(v0, v1)]
                    mark = "" if res.feasible(i) else " ✗"
                    mark += " ?" if res.crossing(i) else ""
                    ax.text(i0, i1, f"{_short(z[i1, i0])}{mark}", ha="center", va="center",
                            fontsize=7, color="w" if not res.feasible(i) else "k",
                            bbox=None if res.feasible(i) else {"fc": "k", "alpha": 0.35, "lw": 0})
            ax.set_xticks(range(len(ax0.values)), [_label(v) for v in ax0.values], fontsize=8)
            ax.set_yticks(range(len(ax1.values)), [_label(v) for v in ax1.values], fontsize=8)
            ax.set_xlabel(ax0.path)
            ax.set_ylabel(ax1.path)
            ax.set_title(f"{m}: mean of {res.reps} replications\n"
                         "✗ fails a constraint, ? its interval crosses one", fontsize=9)
            out[f"heatmap_{m.replace('.', '_')}"] = (f"{m}", fig)
    return out


def _short(x: float) -> str:
    if not np.isfinite(x):
        return "∞"
    a = abs(x)
    if a >= 1e6:
        return f"{x / 1e6:.3g}M"
    if a >= 1e4:
        return f"{x / 1e3:.3g}k"
    return f"{x:.3g}"


def _save_figs(figs: dict, fdir: Path) -> list[tuple[str, Path]]:
    fdir.mkdir()
    paths = []
    for stem, (title, fig) in figs.items():
        fig.tight_layout()
        fig.savefig(fdir / f"{stem}.png", dpi=100)
        paths.append((title, fdir / f"{stem}.png"))
    return paths


def _cell_rows(res) -> tuple[list[str], list[list], list[list[str]]]:
    paths = [a.path for a in res.axes]
    shown = sweep_metrics(res)
    header = ["cell", *paths, *[f"{m} (95% CI)" for m in shown], "reps", "feasible",
              "interval crosses"]
    rows, klass = [], []
    for i, p in enumerate(res.points):
        cross = res.crossing(i)
        r = [i, *[_label(p[k]) for k in paths]]
        r += [_ci(res.values[i][m]) for m in shown]
        r += [res.reps, "yes" if res.feasible(i) else "no", "; ".join(cross)]
        rows.append(r)
        k = [""] * len(r)
        k[-2] = "ok" if res.feasible(i) else "bad"
        k[-1] = "bad" if cross else ""
        klass.append(k)
    return header, rows, klass


def _ci(v: tuple[float, float, float]) -> str:
    m, lo, hi = v
    if not np.isfinite(m):
        return "∞"
    return f"{_short(m)} [{_short(lo)}, {_short(hi)}]"


def write_sweep(res, out: Path) -> None:
    def fill(d: Path) -> None:
        t = res.table
        t.to_csv(d / "sweep.csv", index=False)
        t.to_parquet(d / "sweep.parquet", index=False)
        res.cells.to_csv(d / "cells.csv", index=False)
        (d / "sweep.json").write_text(dump_json({
            "scenario": res.scenario, "grid": {a.path: a.values for a in res.axes},
            "constraints": list(dict.fromkeys(c.text for c in res.constraints)),
            "objective": res.objective.text if res.objective else None, **res.headline()}))
        figs = _save_figs(sweep_figures(res), d / "figures")
        header, rows, klass = _cell_rows(res)
        b = res.best
        cons = ", ".join(html.escape(c) for c in dict.fromkeys(c.text for c in res.constraints))
        intro = (f"<p>{len(res.points)} cells × {res.reps} replications each, every cell on the "
                 f"same seeds (common random numbers). Values: mean over replications and the "
                 f"95% interval. Constraints ({cons or 'none'}) are judged on the interval's "
                 f"pessimistic end; a cell whose interval crosses a bound is flagged.</p>")
        if len(res.axes) > 2:
            intro += ("<p>Figures are drawn for one- or two-parameter grids; this one has "
                      f"{len(res.axes)}, so the table (and sweep.parquet) carries it.</p>")
        if res.objective is not None:
            intro += ("<p class=findings>Best feasible cell for "
                      f"<code>{html.escape(res.objective.text)}</code>: "
                      + (", ".join(f"<code>{html.escape(k)}={html.escape(_label(v))}</code>"
                                   for k, v in res.points[b].items())
                         + f" ({_ci(res.values[b][res.objective.metric])})"
                         if b is not None else "none meets every constraint") + "</p>")
        (d / "report.html").write_text(page(
            f"Floodgate sweep: {res.scenario}",
            [intro, table(header, rows, klass),
             *[f"<h3>{html.escape(t)}</h3>" + img_tag(p, t) for t, p in figs]]))

    write_dir(out, fill, kind="sweep")


def optimize_figures(res) -> dict[str, tuple[str, Figure]]:
    """History of the first objective by trial, and the Pareto front of two metrics."""
    o = res.objectives[0]
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    n = [t.number for t in res.trials]
    y = np.array([t.values[o.metric][0] for t in res.trials], float)
    ok = np.array([t.feasible for t in res.trials])
    ax.scatter(np.array(n)[ok], y[ok], s=16, color="tab:blue", label="feasible")
    ax.scatter(np.array(n)[~ok], y[~ok], s=16, marker="x", color="tab:red", label="fails a constraint")
    best, run = [], None
    for t in res.trials:
        v = t.values[o.metric][0]
        if t.feasible and (run is None or o.better(v, run)):
            run = v
        best.append(np.nan if run is None else run)
    ax.step(n, best, where="post", color="k", lw=1.2, label="best feasible so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(o.metric)
    ax.set_title(f"{o.sense}imise {o.metric}: mean over {res.reps} replications per trial")
    ax.legend(fontsize=8)
    out = {"history": ("Optimisation history", fig)}

    (a, _), (b, _) = res.front_metrics()
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    feas = [t for t in res.trials if t.feasible]
    if feas:
        ax.scatter([t.values[a][0] for t in feas], [t.values[b][0] for t in feas], s=14,
                   color="0.6", label="feasible trials")
    front = res.front
    if front:
        xs = np.array([t.values[a] for t in front], float)
        ys = np.array([t.values[b] for t in front], float)
        ax.errorbar(xs[:, 0], ys[:, 0], xerr=np.abs(xs[:, 1:].T - xs[:, 0]),
                    yerr=np.abs(ys[:, 1:].T - ys[:, 0]), fmt="o-", color="crimson", lw=1.2,
                    ms=5, capsize=2, label="Pareto front (95% intervals)")
    if not feas:
        ax.text(0.5, 0.5, "no feasible trial", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(a)
    ax.set_ylabel(b)
    ax.set_title("Pareto front among trials meeting every constraint")
    if feas:
        ax.legend(fontsize=8)
    out["pareto"] = ("Pareto front", fig)
    return out


def write_optimize(res, out: Path, study_file: Path | None) -> None:
    import shutil

    import yaml

    def fill(d: Path) -> None:
        t = res.table
        t.to_csv(d / "trials.csv", index=False)
        front = res.front
        ft = t[t["trial"].isin([x.number for x in front])]
        ft.to_csv(d / "pareto.csv", index=False)
        over = res.best_overrides()
        if over is not None:
            import shlex

            sets = "".join(f" --set {shlex.quote(x)}" for x in res.sets)
            (d / "best.yaml").write_text(
                f"# floodgate optimize: best feasible of {len(res.trials)} trials "
                f"({res.objectives[0].text}), {res.reps} replications each.\n# Use with: "
                f"floodgate compare SCENARIO{sets} --variant best=best.yaml\n"
                + yaml.safe_dump(over, sort_keys=False))
        (d / "optimize.json").write_text(dump_json({
            "scenario": res.scenario, "study": res.study_name,
            "params": [p.text for p in res.params], "objectives": [o.text for o in res.objectives],
            "constraints": list(dict.fromkeys(c.text for c in res.constraints)),
            "reps": res.reps, "wall_s": round(res.wall_s, 2), **res.headline(),
            "best_metrics": None if res.best is None else {k: list(v) for k, v in res.best.values.items()
                                                            if k in t.columns}}))
        if study_file is not None:
            shutil.copyfile(study_file, d / "study.db")
        figs = _save_figs(optimize_figures(res), d / "figures")
        b = res.best
        o = res.objectives[0]
        cons = ", ".join(html.escape(c) for c in dict.fromkeys(c.text for c in res.constraints))
        intro = (f"<p>{len(res.trials)} trials × {res.reps} replications, every trial on the same "
                 f"seeds. Constraints ({cons or 'none'}) are judged on the pessimistic end of each "
                 f"95% interval.</p>")
        if b is None:
            intro += "<p class=findings>No trial meets every constraint.</p>"
        else:
            intro += ("<div class=findings><p>Best feasible trial "
                      f"({html.escape(o.text)} {_ci(b.values[o.metric])}): "
                      + ", ".join(f"<code>{html.escape(k)}={html.escape(_label(v))}</code>"
                                  for k, v in b.point.items())
                      + "</p><p>As overrides for <code>compare --variant</code> (best.yaml):</p><pre>"
                      + html.escape(yaml.safe_dump(over, sort_keys=False)) + "</pre></div>")
        (a, _), (bm, _) = res.front_metrics()
        header = ["trial", *[p.path for p in res.params], f"{a} (95% CI)", f"{bm} (95% CI)"]
        rows = [[x.number, *[_label(x.point[p.path]) for p in res.params], _ci(x.values[a]),
                 _ci(x.values[bm])] for x in front]
        top = sorted(res.trials, key=lambda x: (-x.feasible, -x.values[o.metric][0] if o.sense == "max"
                                                else x.values[o.metric][0]))[:15]
        h2 = ["trial", *[p.path for p in res.params], f"{o.metric} (95% CI)", "feasible"]
        r2 = [[x.number, *[_label(x.point[p.path]) for p in res.params], _ci(x.values[o.metric]),
               "yes" if x.feasible else "no"] for x in top]
        k2 = [[""] * (len(h2) - 1) + ["ok" if x.feasible else "bad"] for x in top]
        (d / "report.html").write_text(page(
            f"Floodgate optimize: {res.scenario}",
            [intro, *[f"<h3>{html.escape(t)}</h3>" + img_tag(p, t) for t, p in figs],
             "<h3>Pareto front</h3>", table(header, rows),
             "<h3>Best trials</h3>", table(h2, r2, k2)]))

    write_dir(out, fill, kind="optimize")


def sensitivity_figures(res) -> dict[str, tuple[str, Figure]]:
    """Morris: mu*-sigma per output; Sobol: tornado of total and first-order indices."""
    out: dict[str, tuple[str, Figure]] = {}
    n = len(res.outputs)
    fig = Figure(figsize=(6.0 * n, 4.2))
    axs = fig.subplots(1, n, squeeze=False)[0]
    for ax, m in zip(axs, res.outputs, strict=True):
        t = res.table[res.table["metric"] == m]
        if res.method == "morris":
            ax.errorbar(t["mu_star"], t["sigma"], xerr=t["mu_star"] - t["mu_star_low"], fmt="o",
                        capsize=3)
            for _, r in t.iterrows():
                ax.annotate(r["factor"], (r["mu_star"], r["sigma"]), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
            lim = max(float(t["mu_star_high"].max()), float(t["sigma"].max()), 1e-12) * 1.15
            ax.plot([0, lim], [0, lim], color="0.7", ls=":", lw=1)
            ax.set_xlim(0, lim)
            ax.set_ylim(0, lim)
            ax.set_xlabel("mu* (mean |elementary effect|, 95% interval)")
            ax.set_ylabel("sigma (interaction / non-linearity)")
        else:
            t = t.sort_values("ST")
            y = np.arange(len(t))
            ax.barh(y + 0.2, t["ST"], height=0.4, xerr=t["ST_high"] - t["ST"], capsize=3,
                    label="total ST")
            ax.barh(y - 0.2, t["S1"], height=0.4, xerr=t["S1_high"] - t["S1"], capsize=3,
                    label="first-order S1")
            ax.set_yticks(y, t["factor"], fontsize=8)
            ax.set_xlabel("Sobol index (95% interval)")
            ax.legend(fontsize=8)
        ax.set_title(m, fontsize=10)
    fig.suptitle(f"{res.method.capitalize()} sensitivity: {len(res.points)} points × {res.reps} "
                 f"replications")
    out["mu_star_sigma" if res.method == "morris" else "tornado"] = (
        "mu*-sigma" if res.method == "morris" else "Sobol tornado", fig)
    return out


def write_sensitivity(res, out: Path) -> None:
    def fill(d: Path) -> None:
        res.table.to_csv(d / "sensitivity.csv", index=False)
        (d / "sensitivity.json").write_text(dump_json({
            "scenario": res.scenario, "method": res.method,
            "factors": [f.text for f in res.factors], "metrics": res.outputs,
            "points": len(res.points), "reps": res.reps,
            "ranking": ranking(res)}))
        figs = _save_figs(sensitivity_figures(res), d / "figures")
        key = "mu_star" if res.method == "morris" else "ST"
        header = ["metric", "factor", f"{key} (95% CI)",
                  "sigma" if res.method == "morris" else "S1 (95% CI)"]
        rows = []
        for _, r in res.table.sort_values(["metric", key], ascending=[True, False]).iterrows():
            second = (_short(r["sigma"]) if res.method == "morris"
                      else _ci((r["S1"], r["S1_low"], r["S1_high"])))
            rows.append([r["metric"], r["factor"],
                         _ci((r[key], r[f"{key}_low"], r[f"{key}_high"])), second])
        intro = (f"<p>{res.method.capitalize()} design of {len(res.points)} points, each "
                 f"replicated {res.reps} times on the same seeds; outputs are means over "
                 f"replications.</p><p class=findings>Largest effect: "
                 + "; ".join(f"<code>{html.escape(m)}</code>: {html.escape(f[0])}"
                             for m, f in ranking(res).items()) + "</p>")
        (d / "report.html").write_text(page(
            f"Floodgate sensitivity: {res.scenario}",
            [intro, *[f"<h3>{html.escape(t)}</h3>" + img_tag(p, t) for t, p in figs],
             table(header, rows)]))

    write_dir(out, fill, kind="sensitivity")


def ranking(res) -> dict[str, list[str]]:
    """Per output, the factors from largest to smallest effect (mu* or total index)."""
    key = "mu_star" if res.method == "morris" else "ST"
    return {m: res.table[res.table["metric"] == m].sort_values(key, ascending=False)["factor"].tolist()
            for m in res.outputs}
