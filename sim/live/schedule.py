"""The request schedule shared by Locust and the simulator: `id,t,user,tier`, t in simulated
seconds from 0. It is drawn exactly as the engine draws a run's arrivals (chunk by chunk,
sim.demand.chunk_arrivals), so it is the scenario's own demand for that seed. Retries are not in
it: they depend on what the system answers, and each side makes its own.

The key table gives each user one API key, `fg-{user:06d}`, with the user's tier.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from sim.demand import Arrivals, build_demand, chunk_arrivals
from sim.errors import InputError
from sim.scenario import Scenario, parse_scenario

COLUMNS = ("id", "t", "user", "tier")


def user_key(user: int) -> str:
    return f"fg-{int(user):06d}"


def check_supported(sc: Scenario) -> None:
    """Demand that reacts to the run in ways the gateway cannot mirror is refused."""
    d = sc.demand
    if sc.cell_fraction != 1:
        raise InputError(sc.source, "cell_fraction", "validation needs the whole service (1)")
    if d.conversion is not None:
        raise InputError(sc.source, "demand.conversion",
                         "not supported by validation: a key's tier is fixed")
    if d.social is not None and d.social.only_successful:
        raise InputError(sc.source, "demand.social.only_successful",
                         "not supported by validation: offspring depend on the run")


def generate(sc: Scenario, horizon: float) -> pd.DataFrame:
    """The scenario's first attempts over [0, horizon), time-sorted, as a DataFrame."""
    sc = sc.model_copy(update={"horizon": float(horizon)})
    model = build_demand(sc)
    c, parts, k = sc.chunk_s, [], 0
    while k * c < horizon:
        parts.append(chunk_arrivals(model, sc, k, horizon))
        k += 1
    a = Arrivals.concat(parts)
    names = np.array([t.name for t in sc.tiers])
    return pd.DataFrame({"id": np.arange(len(a), dtype=np.int64), "t": a.t,
                         "user": a.user.astype(np.int64), "tier": names[a.tier]})


def write(df: pd.DataFrame, path: Path) -> None:
    # %.9f: nanosecond resolution, and both sides read the same text
    df.to_csv(path, index=False, columns=list(COLUMNS), float_format="%.9f")


def read(path: Path) -> pd.DataFrame:
    """A schedule CSV, checked: the columns, times sorted and non-negative."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(str(path), "(file)", "no such file") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise InputError(str(path), "(file)", f"cannot read as CSV: {e}") from None
    for c in COLUMNS:
        if c not in df.columns:
            raise InputError(str(path), c, "missing column")
    if len(df) and (df["t"].isna().any() or (df["t"] < 0).any() or (df["t"].diff() < 0).any()):
        raise InputError(str(path), "t", "times must be non-negative and sorted")
    return df


def write_keys(df: pd.DataFrame, path: Path) -> int:
    """Key table `key,user,tier`, one row per user of the schedule; returns the row count."""
    users = df.drop_duplicates("user")[["user", "tier"]].sort_values("user")
    if len(users) != df[["user", "tier"]].drop_duplicates().shape[0]:
        raise InputError(str(path), "tier", "a user appears with two tiers")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "user", "tier"])
        for u, t in zip(users["user"], users["tier"], strict=True):
            w.writerow([user_key(u), int(u), t])
    return len(users)


def replay_scenario(sc: Scenario, path: Path, horizon: float, t_first: float,
                    interval_s: float, seed: int | None = None,
                    warmup_s: float = 0.0) -> Scenario:
    """The scenario with its demand replaced by the schedule (trace with user and tier
    columns; the retry model kept) over `horizon`, figures and report off. Requests are
    keyed by their schedule id: with the scenario's own seed a request gets the service noise
    and retry draws the gateway gives it (sim.rng.keyed_uniform), another seed other ones."""
    data = sc.model_dump(mode="json", exclude={"variants"})
    d = {"model": "trace", "path": str(Path(path).resolve()), "column": "t",
         "user_column": "user", "tier_column": "tier",
         "id_column": "id",  # each request's own noise and retry draws: the gateway's too
         "shift": t_first}  # the trace starts at its first row: put it back at t_first
    if sc.demand.retry is not None:
        d["retry"] = sc.demand.retry.model_dump(mode="json")
    data.update(demand=d, horizon=float(horizon), cell_fraction=1.0,
                seed=sc.seed if seed is None else seed)
    data["outputs"] = {"interval_s": interval_s, "warmup_s": warmup_s,
                       "figures": False, "report": False}
    return parse_scenario(data, sc.source)


def expected_count(sc: Scenario, horizon: float) -> float:
    """Mean number of first attempts over [0, horizon) (for tests)."""
    sc = sc.model_copy(update={"horizon": float(horizon)})
    rate = build_demand(sc).expected(horizon, step=min(1.0, horizon / 100))["rate"]
    return float(rate.cumulative(horizon) - rate.cumulative(0.0))
