"""What `floodgate compare` writes: compare.json, compare.md, overlaid figures, report.html."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from sim.jsonout import finite
from sim.report.figures import time_axis
from sim.report.html import img_tag, page, table
from sim.report.write import dump_json, write_dir


def _rows(res: dict) -> tuple[list[str], list[list]]:
    names = list(res["variants"])
    tiers = list(res["variants"][names[0]]["tiers"])
    header = ["variant"]
    for t in tiers:
        header += [f"{t} goodput", f"{t} p95 s", f"{t} rejected"]
    header += ["utilisation", "GPU cost $", "revenue $", "Jain", "recovery h", "retry amp.",
               "false blocks", "degraded"]
    rows = []
    for n in names:
        v = res["variants"][n]
        r = [n]
        for t in tiers:
            x = v["tiers"][t]
            r += [x["goodput"], x["p95_s"], sum(x["rejected"].values())]
        fb = v["false_blocks"]
        dg = v["degraded_share"]
        r += [v["utilization"], v["gpu_cost"], v["revenue"], v["jain_fairness"], v["recovery_h"],
              v["retry_amplification"], sum(fb.values()) if isinstance(fb, dict) else fb,
              (max(dg.values()) if dg else None) if isinstance(dg, dict) else dg]
        rows.append(r)
    return header, rows


def _fmt(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def markdown(res: dict) -> str:
    header, rows = _rows(res)
    lines = [f"# Policy comparison: {res['scenario']}", "",
             "Every variant ran on the same random numbers (seed "
             f"{res['seed']}). Goodput: images completed within the tier's SLO.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    lines += ["", "Rejections by reason:", ""]
    for n, v in res["variants"].items():
        parts = [f"{t}: " + ", ".join(f"{k} {_fmt(c)}" for k, c in x["rejected"].items() if c)
                 for t, x in v["tiers"].items() if sum(x["rejected"].values())]
        lines.append(f"- **{n}**: " + ("; ".join(parts) if parts else "none"))
    return "\n".join(lines) + "\n"


def _xlabel(series: dict[str, pd.DataFrame]) -> str:
    return time_axis(next(iter(series.values())))[1] if series else "time (h)"


def _dates(fig: Figure, series: dict[str, pd.DataFrame]) -> None:
    if series and "time" in next(iter(series.values())).columns:
        fig.autofmt_xdate()


def _latency_p95(series: dict[str, pd.DataFrame], tiers: list[str], slos: list[float]) -> Figure:
    fig = Figure(figsize=(9, 2.6 * len(tiers)))
    axes = fig.subplots(len(tiers), 1, sharex=True, squeeze=False)
    for ax, t, s in zip(axes[:, 0], tiers, slos, strict=True):
        for n, ts in series.items():
            ax.plot(time_axis(ts)[0], ts[f"{t}.latency_p95_s"], lw=1.1, label=n)
        ax.axhline(s, color="k", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel(f"{t} p95 (s)")
    axes[0, 0].legend(fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel(_xlabel(series))
    _dates(fig, series)
    fig.suptitle("p95 latency per tier (dashed: SLO)")
    return fig


def _goodput(series: dict[str, pd.DataFrame], tiers: list[str]) -> Figure:
    fig = Figure(figsize=(9, 3.5))
    ax = fig.add_subplot()
    for n, ts in series.items():
        dt = ts["t_s"].iloc[1] - ts["t_s"].iloc[0] if len(ts) > 1 else 1.0
        ax.plot(time_axis(ts)[0], sum(ts[f"{t}.goodput"] for t in tiers) / dt, lw=1.1, label=n)
    ax.set_xlabel(_xlabel(series))
    _dates(fig, series)
    ax.set_ylabel("goodput (images/s within SLO)")
    ax.legend(fontsize=7, ncol=3)
    return fig


def _gpus(series: dict[str, pd.DataFrame]) -> Figure:
    fig = Figure(figsize=(9, 3.5))
    ax = fig.add_subplot()
    for n, ts in series.items():
        ax.plot(time_axis(ts)[0], ts["gpus_active"], lw=1.1, label=n)
    ax.set_xlabel(_xlabel(series))
    _dates(fig, series)
    ax.set_ylabel("GPUs live")
    ax.legend(fontsize=7, ncol=3)
    return fig


def compare_figures(series: dict[str, pd.DataFrame], tiers: list[str],
                    slos: list[float]) -> dict:
    """The variants overlaid, by file stem: (title, a function drawing that Figure); object
    API, no pyplot; a caller asking for one draws only that one."""
    return {
        "latency_p95": ("p95 latency per tier", lambda: _latency_p95(series, tiers, slos)),
        "goodput": ("Goodput", lambda: _goodput(series, tiers)),
        "gpus": ("GPUs live", lambda: _gpus(series)),
    }


def figures(series: dict[str, pd.DataFrame], tiers: list[str], slos: list[float],
            fdir: Path) -> list[tuple[str, Path]]:
    fdir.mkdir()
    paths = []
    for stem, (title, draw) in compare_figures(series, tiers, slos).items():
        fig = draw()
        fig.tight_layout()
        fig.savefig(fdir / f"{stem}.png", dpi=100)
        paths.append((title, fdir / f"{stem}.png"))
    return paths


def write_compare(res: dict, series: dict, tiers: list[str], slos: list[float], out: Path) -> None:
    def fill(d: Path) -> None:
        (d / "compare.json").write_text(dump_json(finite(res)))
        (d / "compare.md").write_text(markdown(res))
        figs = figures(series, tiers, slos, d / "figures")
        header, rows = _rows(res)
        (d / "report.html").write_text(page(
            f"Floodgate what-if: {res['scenario']}",
            ["<p>Every variant ran on the same random numbers. Goodput counts images completed "
             "within the tier's SLO.</p>", table(header, rows),
             *[f"<h3>{t}</h3>" + img_tag(p, t) for t, p in figs]]))

    write_dir(out, fill, kind="compare")
