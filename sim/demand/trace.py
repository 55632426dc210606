"""Trace replay: request timestamps from a CSV, time-scaled, shifted and looped.

Times: t_sim = shift + k * period + time_scale * (t - t_first) for loop k = 0, 1, ... (k = 0
only without `loop`). With time_scale 1 and shift 0 the trace's relative timestamps come back
exactly (to the nanosecond of the file). A relative path is looked up in the scenario's folder,
then among the traces shipped in sim/data/traces (Azure LLM inference trace 2023, CC BY 4.0:
see the README there). Timestamps are numbers (seconds) or date-times.
Users and tiers come from optional columns, else are drawn (tiers by share). A cell smaller
than the whole service (cell_fraction < 1) keeps each request with probability cell_fraction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sim.demand.base import Arrivals, PiecewiseLinearRate, assign
from sim.demand.stream import Stream, expected_with_feedback
from sim.errors import InputError

DATA = Path(__file__).resolve().parents[1] / "data" / "traces"


def read_trace(path: Path, column: str, user_column: str | None = None,
               tier_column: str | None = None, source: str = "<scenario>",
               id_column: str | None = None):
    """(seconds since the first row, user or None, tier names or None, ids or None), sorted
    by time."""
    try:
        df = pd.read_csv(path, usecols=lambda c: c in {column, user_column, tier_column, id_column})
    except FileNotFoundError:
        raise InputError(source, "demand.path", f"no such file: {path}") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise InputError(str(path), "(file)", f"cannot read as CSV: {e}") from None
    for c, field in ((column, "demand.column"), (user_column, "demand.user_column"),
                     (tier_column, "demand.tier_column"), (id_column, "demand.id_column")):
        if c is not None and c not in df.columns:
            raise InputError(str(path), field, f"no column {c!r}")
    if len(df) == 0:
        raise InputError(str(path), column, "no rows")
    col = df[column]
    if col.isna().any():
        raise InputError(str(path), column, f"empty timestamp in row {int(col.isna().argmax()) + 2}")
    if pd.api.types.is_numeric_dtype(col):
        v = col.to_numpy(float)
        if not np.isfinite(v).all():
            raise InputError(str(path), column, f"not a finite number in row {int((~np.isfinite(v)).argmax()) + 2}")
        rel = v - v[0]
    else:
        try:
            ns = pd.to_datetime(col, format="ISO8601").to_numpy("datetime64[ns]").astype(np.int64)
        except (ValueError, TypeError) as e:
            raise InputError(str(path), column, f"not a timestamp: {e}") from None
        rel = (ns - ns[0]) / 1e9
    order = np.argsort(rel, kind="stable")
    rel = rel[order] - rel[order][0]
    user = tier = None
    if user_column is not None:
        _, user = np.unique(df[user_column].astype(str).to_numpy(), return_inverse=True)
        user = user.astype(np.int64)[order]
    if tier_column is not None:
        tier = df[tier_column].astype(str).to_numpy()[order]
    ids = None
    if id_column is not None:
        if not pd.api.types.is_integer_dtype(df[id_column]):
            raise InputError(str(path), id_column, "request ids must be integers")
        ids = df[id_column].to_numpy(np.int64)[order]
    return rel, user, tier, ids


class TraceModel(Stream):
    def __init__(self, spec, tiers, scale: float = 1.0, base: Path | None = None,
                 source: str = "<scenario>"):
        self._init_stream(spec)
        p = Path(spec.path)
        if not p.is_absolute():
            here = (base or Path(".")) / p
            shipped = DATA / p.name  # traces shipped with the package (sim/data/traces)
            p = here if here.exists() or not shipped.exists() else shipped
        self.path = p
        rel, user, tier, ids = read_trace(p, spec.column, spec.user_column, spec.tier_column,
                                          source, spec.id_column)
        self.rel = rel
        self.ids = ids  # keys of each row's own draws (None: drawn from the chunk's streams)
        self.shares = [t.share for t in tiers]
        names = [t.name for t in tiers]
        self.user = user
        self.users = int(user.max()) + 1 if user is not None else spec.users
        self.tier = None
        if tier is not None:
            bad = sorted(set(tier) - set(names))
            if bad:
                raise InputError(str(p), spec.tier_column,
                                 f"unknown tier {bad[0]!r}; tiers: {', '.join(names)}")
            lut = {n: i for i, n in enumerate(names)}
            self.tier = np.array([lut[x] for x in tier], np.int64)
        self.scale = scale
        n = len(rel)
        span = float(rel[-1])
        gap = span / (n - 1) if n > 1 else 1.0
        self.period = spec.period if spec.period is not None else spec.time_scale * (span + gap)

    @classmethod
    def from_scenario(cls, sc, scale: float | None = None, until: float | None = None):
        base = Path(sc.source).parent if sc.source and not sc.source.startswith("<") else None
        return cls(sc.demand, sc.tiers, sc.cell_fraction if scale is None else scale, base,
                   sc.source)

    def _rows(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the trace in [t0, t1) and their simulated times."""
        sp = self.spec
        if sp.loop:
            k0 = max(int(np.floor((t0 - sp.shift) / self.period)) - 1, 0)
            k1 = max(int(np.floor((t1 - sp.shift) / self.period)) + 1, 0)
        else:
            k0, k1 = 0, 0
        rows, ts = [], []
        for k in range(k0, k1 + 1):
            base = sp.shift + k * self.period
            lo = np.searchsorted(self.rel, (t0 - base) / sp.time_scale, side="left")
            hi = np.searchsorted(self.rel, (t1 - base) / sp.time_scale, side="left")
            if hi <= lo:
                continue
            idx = np.arange(lo, hi)
            t = base + sp.time_scale * self.rel[idx]
            keep = (t >= t0) & (t < t1)  # rounding at the edges
            rows.append(idx[keep])
            ts.append(t[keep])
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(rows), np.concatenate(ts)

    def _base(self, t0, t1, rng):
        idx, t = self._rows(t0, t1)
        if self.scale < 1 and len(t):
            keep = rng.random(len(t)) < self.scale
            idx, t = idx[keep], t[keep]
        if self.user is None:
            a = assign(t, self.shares, self.users, rng)
            user, tier = a.user, a.tier
        else:
            user = self.user[idx]
            tier = self.tier[idx] if self.tier is not None else assign(
                t, self.shares, self.users, rng).tier
        if self.tier is not None:
            tier = self.tier[idx]
        return Arrivals(t, user, tier, key=None if self.ids is None else self.ids[idx])

    def pick(self, t, rng):
        if self.user is None:
            a = assign(t, self.shares, self.users, rng)
            return a.user, a.tier
        r = rng.integers(0, len(self.rel), len(t))
        tier = self.tier[r] if self.tier is not None else assign(t, self.shares, self.users, rng).tier
        return self.user[r], tier

    def rate(self, t) -> np.ndarray:
        if not hasattr(self, "_r"):
            self._r = self.image_rate(max(float(np.max(t)), 1.0) if np.size(t) else 1.0)
        return self._r.rate(t)

    def image_rate(self, t_end: float, step: float = 60.0) -> PiecewiseLinearRate:
        """Requests/s in steps of `step` (exact counts per step, scaled by the cell fraction)."""
        edges = np.arange(0.0, t_end + step, step)
        t = self._rows(0.0, float(edges[-1]))[1]
        c = np.histogram(t, edges)[0] * self.scale / step
        ks = np.ravel(np.column_stack([edges[:-1], np.nextafter(edges[1:], -np.inf)]))
        base = PiecewiseLinearRate(ks, np.repeat(c, 2))
        n_b = self.spec.social.branching if self.spec.social is not None else 0.0
        return expected_with_feedback(base, n_b, self.kernel, step, t_end) if n_b else base

    def expected(self, t_end: float, step: float = 60.0) -> dict:
        rate = self.image_rate(t_end, step)
        if self.user is not None:
            idx, t = self._rows(0.0, t_end)
            first = np.full(self.users, np.inf)
            np.minimum.at(first, self.user[idx], t)
            first = np.sort(first[np.isfinite(first)])

            def uniq(x):
                return np.searchsorted(first, np.atleast_1d(x), side="right") * self.scale
        else:
            U = float(self.users) * self.scale

            def uniq(x):
                return U * -np.expm1(-rate.cumulative(x) / max(U, 1e-300))
        return {"rate": rate, "new_users": None, "unique_users": uniq}
