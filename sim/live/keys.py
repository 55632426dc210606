"""API keys: the only source of a client's user id and tier.

A key table is a CSV with the header `key,user,tier` (user: integer id, tier: a tier name of
the scenario). Without one, the gateway makes `demand.users` users (1000 when the demand has
no user count): user u gets a random key from `secrets` (`fg_` + 32 URL-safe characters, not
guessable from another user's) and a tier drawn by the tiers' shares with numpy
default_rng(scenario seed); the table is written 0600 for the operator to hand out.
In memory only SHA-256 hashes of the keys are kept, and a presented key is compared with
hmac.compare_digest.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.errors import InputError
from sim.inputs import read_text
from sim.scenario import Scenario

HEADER = ["key", "user", "tier"]
DEFAULT_USERS = 1000
MAX_USER = 2**31 - 1  # per-user policy state is indexed by user id (daily_quota grows arrays)


MAX_KEY = 200  # characters; a longer Authorization value is no key of ours


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class KeyTable:
    """Keys by SHA-256 hash -> (user id, tier index); `tiers` are the scenario's tier names.
    The dict is keyed by the hash's first 8 bytes; the full hash is then compared with
    hmac.compare_digest. `plain` holds the keys only for a table made here, to be written."""

    entries: dict[bytes, list[tuple[bytes, tuple[int, int]]]]
    tiers: list[str]
    plain: dict[str, tuple[int, int]] | None = None

    @classmethod
    def of(cls, hashed: dict[bytes, tuple[int, int]], tiers: list[str], plain=None) -> KeyTable:
        entries: dict[bytes, list] = {}
        for h, v in hashed.items():
            entries.setdefault(h[:8], []).append((h, v))
        return cls(entries, tiers, plain)

    def lookup(self, key: str | None) -> tuple[int, int] | None:
        if not key or len(key) > MAX_KEY:
            return None
        h = key_hash(key)
        for stored, who in self.entries.get(h[:8], ()):
            if hmac.compare_digest(stored, h):
                return who
        return None

    def __len__(self) -> int:
        return sum(len(v) for v in self.entries.values())


def new_key() -> str:
    """A fresh API key: 192 random bits from `secrets`."""
    return "fg_" + secrets.token_urlsafe(24)


def generate_keys(sc: Scenario, users: int | None = None) -> KeyTable:
    """One random key per user of the scenario's demand, tiers drawn by share (seeded)."""
    n = users or getattr(sc.demand, "users", None) or DEFAULT_USERS
    n = min(n, 1_000_000)  # a table for a live test, not for the whole simulated population
    shares = np.array([t.share for t in sc.tiers], float)
    rng = np.random.default_rng(sc.seed)
    tier = rng.choice(len(shares), size=n, p=shares / shares.sum())
    names = [t.name for t in sc.tiers]
    plain = {new_key(): (u, int(tier[u])) for u in range(n)}
    return KeyTable.of({key_hash(k): v for k, v in plain.items()}, names, plain)


def load_keys(path: str | Path, sc: Scenario) -> KeyTable:
    """Read a key table; a bad row is an InputError naming the file and line."""
    path = str(path)
    names = [t.name for t in sc.tiers]
    index = {n: k for k, n in enumerate(names)}
    try:
        rows = list(csv.reader(io.StringIO(read_text(path), newline="")))
    except csv.Error as e:
        raise InputError(path, "(file)", f"not a CSV table: {e}") from None
    if not rows or [c.strip() for c in rows[0]] != HEADER:
        raise InputError(path, "line 1", f"expected the header {','.join(HEADER)}")
    entries: dict[bytes, tuple[int, int]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 3:
            raise InputError(path, f"line {n}", "expected 3 fields: key,user,tier")
        key, user, tier = (c.strip() for c in row)
        if not key:
            raise InputError(path, f"line {n}: key", "empty")
        if len(key) > MAX_KEY:
            raise InputError(path, f"line {n}: key", f"longer than {MAX_KEY} characters")
        h = key_hash(key)
        if h in entries:
            raise InputError(path, f"line {n}: key", f"duplicate key {key!r}")
        try:
            if len(user) > 20:
                raise ValueError
            u = int(user)
        except ValueError:
            raise InputError(path, f"line {n}: user", f"not an integer: {user!r}") from None
        if not 0 <= u <= MAX_USER:
            raise InputError(path, f"line {n}: user", f"must be between 0 and {MAX_USER}")
        if tier not in index:
            raise InputError(path, f"line {n}: tier",
                             f"unknown tier {tier!r}; tiers: {', '.join(names)}")
        entries[h] = (u, index[tier])
    if not entries:
        raise InputError(path, "(file)", "no keys")
    return KeyTable.of(entries, names)


def write_keys(path: str | Path, table: KeyTable) -> None:
    """Write a generated key table as CSV (key,user,tier), mode 0600, atomically."""
    if table.plain is None:
        raise ValueError("only a generated table has its keys to write")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)  # mkstemp: 0600
    try:
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(HEADER)
            for key, (user, tier) in table.plain.items():
                w.writerow([key, user, table.tiers[tier]])
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
