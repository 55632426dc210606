"""The findings a planner reads first: a few sentences from a run's summary and series.

Each finding is computed, never canned: which tier met or missed its SLO and by how much, the
busiest hour in calendar time, the worst hour of rejections and its main reason, and spikes of
offered load a reader of the averages would miss (such as quota-blocked users coming back
together when a calendar quota resets at 00:00 UTC).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.outcomes import REASONS

# A spike: an hour whose offered load is this many times the median of the hours around it.
SPIKE_RATIO = 2.0
SPIKE_WINDOW_H = 6


def _when(t: pd.Timestamp) -> str:
    return t.strftime("%a %d %b %Y %H:%M UTC")


def _hourly(ts: pd.DataFrame) -> pd.DataFrame:
    """Counts summed per calendar hour (rates are not summed: only count columns are used)."""
    return ts.set_index("time").resample("1h").sum(numeric_only=True)


def _n(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 10 else f"{x:.2g}"


def findings(summary: dict, ts: pd.DataFrame, policies: list[str] | None = None) -> list[str]:
    """Plain-language findings, most important first. `ts` must carry the calendar `time`
    column (`with_calendar_time`); `policies` are the scenario's policy names."""
    out = []
    for name, t in summary["tiers"].items():
        p95, slo = t["latency_s"]["p95"], t["slo_s"]
        if t["completed"] == 0:
            line = f"{name}: no request completed, so its SLO of {slo:g} s was not met"
        elif t["slo_met"]:
            line = (f"{name} met its SLO: p95 {p95:.3g} s against {slo:g} s "
                    f"({(1 - p95 / slo) * 100:.0f}% headroom)")
        else:
            line = (f"{name} MISSED its SLO: p95 {p95:.3g} s, {p95 / slo:.1f} times its "
                    f"{slo:g} s target")
        # The SLO judges the requests served; say when many were not served at all.
        rejected = sum(t["rejected"].values())
        if t["offered"] and rejected / t["offered"] >= 0.01:
            reason = max(t["rejected"], key=t["rejected"].get)
            line += (f"; {rejected / t['offered'] * 100:.0f}% of its requests were rejected, "
                     f"mostly {reason}")
        out.append(line + ".")
    tiers = list(summary["tiers"])
    if len(ts) == 0 or "time" not in ts:
        return out
    h = _hourly(ts)
    offered = sum(h[f"{t}.offered"] for t in tiers)
    if offered.max() > 0:
        peak = offered.idxmax()
        out.append(f"The busiest hour began {_when(peak)}: {_n(offered.max())} requests offered "
                   f"({_n(offered.max() / 3600)}/s).")
    rej = {(t, r): h[f"{t}.rejected.{r}"] for t in tiers for r in REASONS
           if f"{t}.rejected.{r}" in h}
    total = sum(rej.values()) if rej else None
    if total is not None and total.max() > 0:
        worst = total.idxmax()
        (tier, reason), n = max(((k, v.loc[worst]) for k, v in rej.items()), key=lambda kv: kv[1])
        share = n / offered.loc[worst] if offered.loc[worst] > 0 else np.nan
        out.append(f"The most rejections came in the hour from {_when(worst)}: "
                   f"{_n(total.max())} in all, mostly {tier} {reason} ({_n(n)}"
                   + (f", {share * 100:.0f}% of that hour's offered load" if share == share else "")
                   + ").")
    out += _spikes(offered, policies or [])
    return out


def _spikes(offered: pd.Series, policies: list[str]) -> list[str]:
    if len(offered) < 3:
        return []
    around = offered.rolling(2 * SPIKE_WINDOW_H + 1, center=True, min_periods=3).median()
    ratio = offered / around.where(around > 0)
    spikes = ratio[ratio >= SPIKE_RATIO]
    out = []
    for t, r in spikes.sort_values(ascending=False).head(3).items():
        why = ""
        if t.hour == 0 and "daily_quota" in policies:
            why = " — the calendar quota reset at 00:00 UTC: users it blocked come back together"
        out.append(f"A spike of offered load in the hour from {_when(t)}: {_n(offered.loc[t])} "
                   f"requests, {r:.1f} times the hours around it{why}.")
    return out
