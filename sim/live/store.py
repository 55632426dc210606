"""Where the gateway's limiter state lives: the limiter store interface.

A store decides one request for one policy, by the policy's name: `admit(name, now, user,
tier)` gives the policy's `Decision` (a concurrency policy also hands out a lease, released
with `release` when the request ends). Two implementations:

- `MemoryStore`: the simulator's own policy objects in this process (their one-request
  `admit` is the definition), the clock injected; one gateway, as before.
- `RedisStore` (sim/live/redis_store.py): the same decisions from one atomic Lua script per
  limiter on a shared Redis, so N gateway replicas enforce one limit, not N.

Times are the policies' (simulated) seconds. `now=None` asks the store for its clock: the
injected one in memory, Redis `TIME` in production mode, so replicas with skewed clocks agree.
`time_scale` is store seconds per wall second (the gateway's --time-scale): lease lifetimes
are given in wall seconds, and Redis expires keys on the wall clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Protocol

from sim.policies.base import Decision, Policy
from sim.policies.concurrency import Concurrency
from sim.policies.quota import DailyQuota


class LimiterStore(Protocol):
    def admit(self, policy_name: str, now: float | None, user: int, tier: int) -> Decision:
        """The named policy's decision on one request (ok, reason, retry_after, limit,
        remaining, reset_after; a concurrency policy's admission carries `lease_id`)."""
        ...

    def release(self, policy_name: str, user: int, tier: int, lease_id: str) -> None:
        """A concurrency lease given back (the request ended); unknown or expired: no-op."""
        ...

    def close(self) -> None: ...


def lease_key(pol: Concurrency, user: int, tier: int) -> int:
    return user if pol.params.key == "user" else tier


def new_lease() -> str:
    return uuid.uuid4().hex


class Leases:
    """A concurrency policy's leases: at most `limit` unexpired per key (user or tier). A lease
    lives `ttl` store seconds unless released, so the slots of a replica that died holding
    them come back; the definition the Redis script (lua/concurrency.lua) follows.

    Invariant: after admit at `now`, every key holds at most `limit` leases expiring after now."""

    def __init__(self, pol: Concurrency, ttl: float):
        self.pol, self.ttl = pol, float(ttl)
        self.held: dict[int, dict[str, float]] = {}  # key -> lease id -> expiry

    def admit(self, now: float, user: int, tier: int, lease_id: str | None = None) -> Decision:
        lim = self.pol.params.limit
        k = lease_key(self.pol, user, tier)
        held = {i: e for i, e in self.held.get(k, {}).items() if e > now}
        n = len(held)
        if n >= lim:
            self._keep(k, held)
            return Decision(False, "rate_limited", None, lim, 0)
        lease_id = lease_id or new_lease()
        held[lease_id] = now + self.ttl
        self._keep(k, held)
        return Decision(True, limit=lim, remaining=lim - n - 1, lease_id=lease_id)

    def _keep(self, k: int, held: dict[str, float]) -> None:
        if held:
            self.held[k] = held
        else:  # memory bounded by the keys holding leases
            self.held.pop(k, None)

    def release(self, user: int, tier: int, lease_id: str) -> None:
        k = lease_key(self.pol, user, tier)
        held = self.held.get(k)
        if held is not None:
            held.pop(lease_id, None)
            self._keep(k, held)


def decide(pol: Policy, now: float, user: int, tier: int) -> Decision:
    """A policy's own `admit`, with what a calendar quota leaves the user when it admits
    (the gateway's RateLimit headers; a shared store cannot be peeked at afterwards)."""
    d = pol.admit(now, user, tier)
    if d.ok and d.limit is None and isinstance(pol, DailyQuota):
        return pol.left(user, now) or d
    return d


class MemoryStore:
    """Limiter state in this process: the policy objects themselves (`policies`: name ->
    the simulator's policy object), `now_fn()` giving now when the caller passes None."""

    def __init__(self, policies: Mapping[str, Policy], *, now_fn: Callable[[], float] | None = None,
                 lease_ttl_s: float = 30.0, time_scale: float = 1.0):
        self.policies = dict(policies)
        self.now_fn = now_fn
        self.leases = {name: Leases(p, lease_ttl_s * time_scale) for name, p in self.policies.items()
                       if isinstance(p, Concurrency)}

    def _now(self, now: float | None) -> float:
        if now is not None:
            return float(now)
        if self.now_fn is None:
            raise ValueError("MemoryStore: now=None needs a now_fn")
        return float(self.now_fn())

    def admit(self, policy_name: str, now: float | None, user: int, tier: int) -> Decision:
        t = self._now(now)
        if policy_name in self.leases:
            return self.leases[policy_name].admit(t, user, tier)
        return decide(self.policies[policy_name], t, user, tier)

    def release(self, policy_name: str, user: int, tier: int, lease_id: str) -> None:
        self.leases[policy_name].release(user, tier, lease_id)

    def close(self) -> None:
        pass


REDIS_ONLY = ("prefix", "clock", "origin", "socket_timeout")


def open_store(url: str | None, policies: Mapping[str, Policy], **kw) -> LimiterStore:
    """None: a MemoryStore; "redis://..." (or rediss://, unix://): a RedisStore on that server.
    Keyword arguments go to the store; one call serves both, so a MemoryStore ignores the
    Redis-only ones (prefix, clock, origin, socket_timeout) and a RedisStore `now_fn` (its
    clock is the caller's or Redis TIME)."""
    if url is None:
        return MemoryStore(policies, **{k: v for k, v in kw.items() if k not in REDIS_ONLY})
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"limiter store: {url!r} is not a redis:// URL")
    from sim.live.redis_store import RedisStore  # needs the `redis` package (floodgate[serve])

    return RedisStore(url, policies, **{k: v for k, v in kw.items() if k != "now_fn"})
