"""The OBSERVED file of `floodgate fit`: what a team knows hours into a surge.

A CSV with one row per interval since the launch (t = 0 is the scenario's `start`):

* time: `t` (seconds since t = 0, or a duration such as `36h`) or `timestamp` (a date-time,
  converted with the scenario's start): the start of the interval;
* its end (optional): `t_end` (same units as `t`) or `dt` (seconds); without either, every
  interval is the file's step (the smallest gap between rows with counts), so a missing row
  is a missing interval, not a longer one;
* counts (each optional, at least one per file): `new_users`, `requests`, and per tier
  `requests_<tier>` (summed into `requests` where that is empty);
* `cumulative_users`: users so far at time t (press milestones), on rows of their own or
  beside counts.

Empty cells are missing values. Counts are whole-service figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import InputError

COUNTS = ("new_users", "requests")


@dataclass
class Series:
    """Counts of one kind over intervals [a, b)."""

    a: np.ndarray
    b: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def upto(self, until: float) -> Series:
        m = self.b <= until + 1e-9
        return Series(self.a[m], self.b[m], self.y[m])


@dataclass
class Observed:
    source: str
    series: dict[str, Series]  # "new_users", "requests" (only those present)
    milestones: Series  # a = b = t, y = cumulative users
    tiers: dict[str, float] = field(default_factory=dict)  # observed share of requests per tier

    @property
    def end(self) -> float:
        ends = [float(s.b.max()) for s in self.series.values() if len(s)]
        if len(self.milestones):
            ends.append(float(self.milestones.b.max()))
        return max(ends) if ends else 0.0

    @property
    def start(self) -> float:
        s = [float(x.a.min()) for x in self.series.values() if len(x)]
        if len(self.milestones):
            s.append(float(self.milestones.a.min()))
        return min(s) if s else 0.0

    def upto(self, until: float) -> Observed:
        return Observed(self.source, {k: s.upto(until) for k, s in self.series.items()},
                        self.milestones.upto(until), self.tiers)

    def n(self) -> int:
        return sum(len(s) for s in self.series.values()) + len(self.milestones)


def _times(col: pd.Series, name: str, src: str, epoch: float | None) -> np.ndarray:
    """Seconds since t = 0 from numbers, durations ('36h') or date-times."""
    from sim.scenario import _duration

    if name == "timestamp":
        ns = pd.to_datetime(col, format="ISO8601", utc=True, errors="coerce")
        if ns.isna().any():
            i = int(ns.isna().to_numpy().argmax())
            raise InputError(src, name, f"row {i + 2}: not a date-time: {col.iloc[i]!r}")
        if epoch is None:
            raise InputError(src, name, "date-times need a scenario start")
        return ns.to_numpy("datetime64[ns]").astype(np.int64) / 1e9 - epoch
    out = np.empty(len(col))
    for i, v in enumerate(col):
        try:
            out[i] = float(_duration(v.strip() if isinstance(v, str) else v))
        except (ValueError, TypeError):
            raise InputError(src, name, f"row {i + 2}: not a time: {v!r} (seconds or e.g. '36h')") from None
    return out


def _numbers(df: pd.DataFrame, c: str, src: str) -> np.ndarray:
    v = pd.to_numeric(df[c], errors="coerce").to_numpy(float)
    bad = np.flatnonzero(np.isnan(v) & df[c].notna().to_numpy())
    if len(bad):
        raise InputError(src, c, f"row {bad[0] + 2}: not a number: {df[c].iloc[bad[0]]!r}")
    if np.any(v[~np.isnan(v)] < 0):
        i = int(np.flatnonzero(v < 0)[0])
        raise InputError(src, c, f"row {i + 2}: negative count {v[i]:g}")
    if np.any(np.isinf(v)):
        raise InputError(src, c, f"row {int(np.flatnonzero(np.isinf(v))[0]) + 2}: not finite")
    return v


def read_observed(path: str | Path, tiers: list[str] | None = None,
                  epoch: float | None = None) -> Observed:
    """Read and check an OBSERVED file; bad input raises InputError (file, column, what)."""
    src = str(path)
    try:
        df = pd.read_csv(path, dtype=str, skipinitialspace=True)
    except FileNotFoundError:
        raise InputError(src, "(file)", "no such file") from None
    except pd.errors.EmptyDataError:
        raise InputError(src, "(file)", "empty file") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise InputError(src, "(file)", f"cannot read as CSV: {str(e).strip().splitlines()[-1]}") from None
    df.columns = [c.strip() for c in df.columns]
    tcol = "t" if "t" in df.columns else "timestamp" if "timestamp" in df.columns else None
    if tcol is None:
        raise InputError(src, "t", f"no time column: give `t` or `timestamp` (columns: {', '.join(df.columns)})")
    tier_cols = [c for c in df.columns if c.startswith("requests_")]
    for c in tier_cols:
        if tiers is not None and c.removeprefix("requests_") not in tiers:
            raise InputError(src, c, f"unknown tier {c.removeprefix('requests_')!r}; tiers: {', '.join(tiers)}")
    known = {tcol, "t_end", "dt", "cumulative_users", *COUNTS, *tier_cols}
    extra = [c for c in df.columns if c not in known]
    if extra:
        raise InputError(src, extra[0], "unknown column (expected t or timestamp, t_end or dt, "
                         "new_users, requests, requests_<tier>, cumulative_users)")
    if not any(c in df.columns for c in (*COUNTS, "cumulative_users", *tier_cols)):
        raise InputError(src, "(columns)", "no counts: give new_users, requests or cumulative_users")
    if len(df) == 0:
        raise InputError(src, "(file)", "no rows")
    if df[tcol].isna().any():
        raise InputError(src, tcol, f"row {int(df[tcol].isna().to_numpy().argmax()) + 2}: empty time")
    t = _times(df[tcol], tcol, src, epoch)
    if not np.all(np.isfinite(t)):
        raise InputError(src, tcol, "times must be finite")
    if "t_end" in df.columns:
        if df["t_end"].isna().any():
            raise InputError(src, "t_end", f"row {int(df['t_end'].isna().to_numpy().argmax()) + 2}: empty")
        te = _times(df["t_end"], "timestamp" if tcol == "timestamp" else "t_end", src, epoch)
    elif "dt" in df.columns:
        te = t + _numbers(df, "dt", src)
    vals = {c: _numbers(df, c, src) for c in df.columns if c in (*COUNTS, "cumulative_users", *tier_cols)}
    if "t_end" not in df.columns and "dt" not in df.columns:
        counted = np.any([~np.isnan(vals[c]) for c in vals if c != "cumulative_users"] or
                         [np.zeros(len(t), bool)], axis=0)
        u = np.unique(t[counted])
        step = float(np.min(np.diff(u))) if len(u) > 1 else 3600.0
        te = t + step
    shares = {}
    if tier_cols:
        tot = np.nansum([vals[c] for c in tier_cols], axis=0)
        anyt = np.any([~np.isnan(vals[c]) for c in tier_cols], axis=0)
        req = vals.get("requests", np.full(len(df), np.nan))
        vals["requests"] = np.where(np.isnan(req) & anyt, tot, req)
        s = {c.removeprefix("requests_"): float(np.nansum(vals[c])) for c in tier_cols}
        z = sum(s.values())
        shares = {k: v / z for k, v in s.items()} if z > 0 else {}
    series = {}
    for c in COUNTS:
        if c not in vals:
            continue
        m = ~np.isnan(vals[c])
        if not m.any():
            continue
        bad = np.flatnonzero(m & (te <= t))
        if len(bad):
            raise InputError(src, "t_end" if "t_end" in df.columns else "dt",
                             f"row {bad[0] + 2}: interval ends before it starts")
        a, b, y = t[m], te[m], vals[c][m]
        o = np.argsort(a, kind="stable")
        a, b, y = a[o], b[o], y[o]
        if len(a) > 1 and np.any(a[1:] < b[:-1] - 1e-6):
            i = int(np.flatnonzero(a[1:] < b[:-1] - 1e-6)[0])
            raise InputError(src, c, f"intervals overlap at t = {a[i + 1]:g} s (each interval once)")
        series[c] = Series(a, b, y)
    ms = Series(np.zeros(0), np.zeros(0), np.zeros(0))
    if "cumulative_users" in vals:
        m = ~np.isnan(vals["cumulative_users"])
        tt = t[m] if "t_end" not in df.columns else te[m]
        y = vals["cumulative_users"][m]
        o = np.argsort(tt, kind="stable")
        tt, y = tt[o], y[o]
        if np.any(np.diff(y) < 0):
            i = int(np.flatnonzero(np.diff(y) < 0)[0])
            raise InputError(src, "cumulative_users", f"decreases after t = {tt[i]:g} s")
        ms = Series(tt, tt, y)
    obs = Observed(src, series, ms, shares)
    if obs.n() == 0:
        raise InputError(src, "(columns)", "every count is empty")
    if np.any(np.concatenate([s.a for s in series.values()] + [ms.a]) < 0):
        raise InputError(src, tcol, "times before the launch (t < 0)")
    return obs
