"""Figures of a run, each a function returning a matplotlib `Figure`.

Object API only (`matplotlib.figure.Figure`, no pyplot, no backend switch): a notebook's own
matplotlib state is left alone, the figures render without a display, and nothing is kept in a
global figure registry. Time axes are calendar time (the series' `time` column) when present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sim.outcomes import REASONS


def _new(figsize=(9, 4)):
    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot()


def time_axis(ts: pd.DataFrame):
    """Calendar time when the series has it, else hours since t = 0."""
    if "time" in ts.columns:
        t = ts["time"]
        return (t.dt.tz_convert("UTC").dt.tz_localize(None) if t.dt.tz is not None else t), "time (UTC)"
    return ts["t_h"], "time (h)"


def save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def clip_spike(ax, x, y: np.ndarray, keep: list[np.ndarray], unit: str, when=None) -> bool:
    """Clip the y axis above a spike that would flatten the rest of the curve (the retry wave
    when a calendar quota resets), and say on the figure how high it went and when. A spike:
    the curve's top over 2x the higher of its 99th percentile and the other curves' tops
    (`keep`: capacity, completions). Returns whether it clipped."""
    y = np.asarray(y, float)
    if len(y) < 20 or not np.isfinite(y).any():
        return False
    top = float(np.nanmax(y))
    body = max([float(np.nanpercentile(y, 99))]
               + [float(np.nanmax(k)) for k in keep if len(k) and np.isfinite(k).any()])
    if not (body > 0 and top > 2 * body):
        return False
    lim = 1.25 * body
    ax.set_ylim(0, lim)
    i = int(np.nanargmax(y))
    xi = x.iloc[i] if hasattr(x, "iloc") else x[i]
    at = when(i) if when is not None else ""
    ax.annotate(f"spike clipped: {top:,.0f} {unit}{' at ' + at if at else ''}",
                xy=(xi, lim), xytext=(0.5, 0.93), textcoords="axes fraction", ha="center",
                fontsize=8, color="crimson",
                arrowprops={"arrowstyle": "->", "color": "crimson", "lw": 0.8},
                bbox={"boxstyle": "round", "fc": "white", "ec": "crimson", "lw": 0.6})
    return True


def demand_vs_capacity(ts: pd.DataFrame, tiers: list[str], capacity_per_s: np.ndarray) -> Figure:
    """Offered load per tier (stacked) against what the live fleet can serve; a spike that
    would flatten the curve (retries returning together) is clipped and annotated."""
    x, xlabel = time_axis(ts)
    fig, ax = _new()
    dt = ts["t_s"].iloc[1] - ts["t_s"].iloc[0] if len(ts) > 1 else 1.0
    offered = [ts[f"{t}.offered"].to_numpy() / dt for t in tiers]
    done = (sum(ts[f"{t}.completed"] for t in tiers) / dt).to_numpy()
    ax.stackplot(x, *offered, labels=[f"{t} offered" for t in tiers], alpha=0.7)
    ax.plot(x, done, color="k", lw=1.2, label="completed")
    ax.plot(x, capacity_per_s, color="crimson", ls="--", lw=1.5, label="fleet capacity")
    when = None
    if "time" in ts.columns:
        def when(i):
            return pd.Timestamp(ts["time"].iloc[i]).strftime("%Y-%m-%d %H:%M UTC")
    clip_spike(ax, x, sum(offered), [np.asarray(capacity_per_s, float), done], "images/s", when)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images / s")
    ax.set_title("Demand vs capacity")
    ax.legend(loc="upper left", fontsize=8)
    if "time" in ts.columns:
        fig.autofmt_xdate()
    return fig


def latency(ts: pd.DataFrame, tiers: list[str], slos: list[float]) -> Figure:
    x, xlabel = time_axis(ts)
    fig, ax = _new()
    for j, t in enumerate(tiers):
        line = ax.plot(x, ts[f"{t}.latency_p95_s"], lw=1.4, label=f"{t} p95")[0]
        ax.plot(x, ts[f"{t}.latency_p50_s"], lw=0.8, ls=":", color=line.get_color(), label=f"{t} p50")
        ax.axhline(slos[j], color=line.get_color(), lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("end-to-end latency (s)")
    ax.set_title("Latency percentiles per tier (dashed: SLO)")
    ax.legend(fontsize=8, ncol=2)
    if "time" in ts.columns:
        fig.autofmt_xdate()
    return fig


def rejections(ts: pd.DataFrame, tiers: list[str]) -> Figure:
    x, xlabel = time_axis(ts)
    fig, ax = _new()
    dt = ts["t_s"].iloc[1] - ts["t_s"].iloc[0] if len(ts) > 1 else 1.0
    any_line = False
    for t in tiers:
        for r in REASONS:
            col = ts[f"{t}.rejected.{r}"]
            if col.sum() > 0:
                ax.plot(x, col / dt, lw=1.2, label=f"{t}: {r}")
                any_line = True
    if not any_line:
        ax.text(0.5, 0.5, "no rejections", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rejections / s")
    ax.set_title("Rejections by reason")
    if any_line:
        ax.legend(fontsize=8)
    if "time" in ts.columns:
        fig.autofmt_xdate()
    return fig


def utilization(ts: pd.DataFrame) -> Figure:
    x, xlabel = time_axis(ts)
    fig, ax = _new()
    ax.plot(x, ts["utilization"], color="tab:purple", lw=1.2, label="utilisation")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("busy share of live GPUs")
    ax2 = ax.twinx()
    ax2.plot(x, ts["gpus_active"], color="tab:gray", lw=1, ls="--", label="GPUs live")
    ax2.set_ylabel("GPUs live")
    ax.set_title("Fleet utilisation")
    ax.legend(loc="lower left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    if "time" in ts.columns:
        fig.autofmt_xdate()
    return fig


def regions(ts: pd.DataFrame, users: list[str]) -> Figure:
    """Per users' region over time: p95 and p50 latency (network latency included) above,
    rejections and spills per second below (the series' `region.NAME.*` columns)."""
    x, xlabel = time_axis(ts)
    fig = Figure(figsize=(9, 6))
    ax, ax2 = fig.subplots(2, 1, sharex=True)
    dt = ts["t_s"].iloc[1] - ts["t_s"].iloc[0] if len(ts) > 1 else 1.0
    for u in users:
        line = ax.plot(x, ts[f"region.{u}.latency_p95_s"], lw=1.4, label=f"{u} p95")[0]
        ax.plot(x, ts[f"region.{u}.latency_p50_s"], lw=0.8, ls=":", color=line.get_color())
        ax2.plot(x, ts[f"region.{u}.rejected"] / dt, lw=1.2, color=line.get_color(), label=f"{u} rejected")
        if ts[f"region.{u}.spilled"].sum() > 0:
            ax2.plot(x, ts[f"region.{u}.spilled"] / dt, lw=0.8, ls="--", color=line.get_color(),
                     label=f"{u} spilled")
    lat = np.concatenate([ts[f"region.{u}.latency_p95_s"].to_numpy(float) for u in users])
    if (lat[np.isfinite(lat)] > 0).any():
        ax.set_yscale("log")
    else:  # nothing completed in the run (a log axis needs a positive value)
        ax.text(0.5, 0.5, "no completions", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("latency (s; dotted p50)")
    ax.set_title("Per users' region: latency, rejections and spill-over")
    ax.legend(fontsize=8, ncol=3)
    ax2.set_xlabel(xlabel)
    ax2.set_ylabel("requests / s")
    ax2.legend(fontsize=8, ncol=3)
    if "time" in ts.columns:
        fig.autofmt_xdate()
    return fig
