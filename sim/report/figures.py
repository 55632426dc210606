"""Figures of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sim.policies import REASONS  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def demand_vs_capacity(ts: pd.DataFrame, tiers: list[str], capacity_per_s: np.ndarray, path: Path) -> Path:
    """Offered load per tier (stacked) against what the live fleet can serve."""
    fig, ax = plt.subplots(figsize=(9, 4))
    dt = ts["t_s"].iloc[1] - ts["t_s"].iloc[0] if len(ts) > 1 else 1.0
    ax.stackplot(ts["t_h"], *[ts[f"{t}.offered"] / dt for t in tiers], labels=[f"{t} offered" for t in tiers], alpha=0.7)
    ax.plot(ts["t_h"], sum(ts[f"{t}.completed"] for t in tiers) / dt, color="k", lw=1.2, label="completed")
    ax.plot(ts["t_h"], capacity_per_s, color="crimson", ls="--", lw=1.5, label="fleet capacity")
    ax.set_xlabel("time (h)")
    ax.set_ylabel("images / s")
    ax.set_title("Demand vs capacity")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def latency(ts: pd.DataFrame, tiers: list[str], slos: list[float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    for j, t in enumerate(tiers):
        line = ax.plot(ts["t_h"], ts[f"{t}.latency_p95_s"], lw=1.4, label=f"{t} p95")[0]
        ax.plot(ts["t_h"], ts[f"{t}.latency_p50_s"], lw=0.8, ls=":", color=line.get_color(), label=f"{t} p50")
        ax.axhline(slos[j], color=line.get_color(), lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("time (h)")
    ax.set_ylabel("end-to-end latency (s)")
    ax.set_title("Latency percentiles per tier (dashed: SLO)")
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def rejections(ts: pd.DataFrame, tiers: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    dt = ts["t_s"].iloc[1] - ts["t_s"].iloc[0] if len(ts) > 1 else 1.0
    any_line = False
    for t in tiers:
        for r in REASONS:
            col = ts[f"{t}.rejected.{r}"]
            if col.sum() > 0:
                ax.plot(ts["t_h"], col / dt, lw=1.2, label=f"{t}: {r}")
                any_line = True
    if not any_line:
        ax.text(0.5, 0.5, "no rejections", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("time (h)")
    ax.set_ylabel("rejections / s")
    ax.set_title("Rejections by reason")
    if any_line:
        ax.legend(fontsize=8)
    return _save(fig, path)


def utilization(ts: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(ts["t_h"], ts["utilization"], color="tab:purple", lw=1.2, label="utilisation")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("time (h)")
    ax.set_ylabel("busy share of live GPUs")
    ax2 = ax.twinx()
    ax2.plot(ts["t_h"], ts["gpus_active"], color="tab:gray", lw=1, ls="--", label="GPUs live")
    ax2.set_ylabel("GPUs live")
    ax.set_title("Fleet utilisation")
    ax.legend(loc="lower left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
