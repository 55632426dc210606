"""API keys: the only source of a client's user id and tier.

A key table is a CSV with the header `key,user,tier` (user: integer id, tier: a tier name of
the scenario). Without one, the gateway makes `demand.users` users (1000 when the demand has
no user count): user u gets key `fg-{u:06d}` and a tier drawn by the tiers' shares with
numpy default_rng(scenario seed).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.errors import InputError
from sim.scenario import Scenario

HEADER = ["key", "user", "tier"]
DEFAULT_USERS = 1000
MAX_USER = 2**31 - 1  # per-user policy state is indexed by user id (daily_quota grows arrays)


@dataclass(frozen=True)
class KeyTable:
    """key -> (user id, tier index); `tiers` are the scenario's tier names."""

    entries: dict[str, tuple[int, int]]
    tiers: list[str]

    def lookup(self, key: str | None) -> tuple[int, int] | None:
        return self.entries.get(key) if key else None

    def __len__(self) -> int:
        return len(self.entries)


def key_of(user: int) -> str:
    """The generated key of a user."""
    return f"fg-{user:06d}"


def generate_keys(sc: Scenario, users: int | None = None) -> KeyTable:
    """One key per user of the scenario's demand, tiers drawn by share (seeded)."""
    n = users or getattr(sc.demand, "users", None) or DEFAULT_USERS
    shares = np.array([t.share for t in sc.tiers], float)
    rng = np.random.default_rng(sc.seed)
    tier = rng.choice(len(shares), size=n, p=shares / shares.sum())
    names = [t.name for t in sc.tiers]
    return KeyTable({key_of(u): (u, int(tier[u])) for u in range(n)}, names)


def load_keys(path: str | Path, sc: Scenario) -> KeyTable:
    """Read a key table; a bad row is an InputError naming the file and line."""
    path = str(path)
    names = [t.name for t in sc.tiers]
    index = {n: k for k, n in enumerate(names)}
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise InputError(path, "(file)", "no such file") from None
    except OSError as e:
        raise InputError(path, "(file)", f"cannot read: {e.strerror}") from None
    if not rows or [c.strip() for c in rows[0]] != HEADER:
        raise InputError(path, "line 1", f"expected the header {','.join(HEADER)}")
    entries: dict[str, tuple[int, int]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 3:
            raise InputError(path, f"line {n}", "expected 3 fields: key,user,tier")
        key, user, tier = (c.strip() for c in row)
        if not key:
            raise InputError(path, f"line {n}: key", "empty")
        if key in entries:
            raise InputError(path, f"line {n}: key", f"duplicate key {key!r}")
        try:
            u = int(user)
        except ValueError:
            raise InputError(path, f"line {n}: user", f"not an integer: {user!r}") from None
        if not 0 <= u <= MAX_USER:
            raise InputError(path, f"line {n}: user", f"must be between 0 and {MAX_USER}")
        if tier not in index:
            raise InputError(path, f"line {n}: tier",
                             f"unknown tier {tier!r}; tiers: {', '.join(names)}")
        entries[key] = (u, index[tier])
    if not entries:
        raise InputError(path, "(file)", "no keys")
    return KeyTable(entries, names)


def write_keys(path: str | Path, table: KeyTable) -> None:
    """Write a key table as CSV (key,user,tier)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for key, (user, tier) in table.entries.items():
            w.writerow([key, user, table.tiers[tier]])
