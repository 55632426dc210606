"""Limiter state shared by gateway replicas in Redis: one atomic Lua script per limiter
(sim/live/lua/*.lua, each the Python `admit` it names, line for line), one key per policy and
user (or tier, or one for everyone), each key expiring when a missing key would decide the
same, so Redis holds only the users still inside a window.

Clock: `clock="caller"` takes the caller's now (reproducible: tests, replays); with
`clock="redis"`, now=None reads Redis `TIME` inside the script, as (TIME - origin) x
time_scale, so replicas with skewed clocks agree. Policies without a script (content filter,
shadow, ...) are decided in this process by their own objects.

Errors reaching Redis (redis.exceptions.ConnectionError, TimeoutError) are raised to the
caller: failing open or closed is the gateway's choice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from importlib.resources import files
from typing import Literal

import redis

from sim.live.store import MemoryStore, new_lease
from sim.policies.base import Decision, Policy
from sim.policies.concurrency import Concurrency
from sim.policies.limits import FixedWindow, Gcra, SlidingCounter, SlidingLog, TokenBucket
from sim.policies.quota import DailyQuota

SCRIPTED: dict[type[Policy], str] = {
    TokenBucket: "token_bucket", Gcra: "gcra", FixedWindow: "fixed_window", SlidingLog: "sliding_log",
    SlidingCounter: "sliding_counter", DailyQuota: "daily_quota", Concurrency: "concurrency",
}


def script_source(name: str) -> str:
    """A limiter's script as Redis runs it: the shared prelude, then the limiter's body."""
    lua = files("sim.live") / "lua"
    return (lua / "_prelude.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def _num(x: float) -> str:
    return repr(float(x))  # the shortest text that gives back the same double


def _f(v: bytes | None) -> float | None:
    return None if v is None else float(v)


def _i(v: bytes | None) -> int | None:
    return None if v is None else int(float(v))


def _params(pol: Policy, ttl: float) -> list[str]:
    """The script's parameters, read at each call (a schedule may reconfigure the policy)."""
    p = pol.params
    if isinstance(pol, TokenBucket):
        return [_num(p.rate), _num(p.burst)]
    if isinstance(pol, Gcra):
        return [_num(p.count), _num(p.period_s), _num(p.burst)]
    if isinstance(pol, FixedWindow | SlidingCounter):
        return [_num(p.limit), _num(p.window_s), _num(pol.epoch)]
    if isinstance(pol, SlidingLog):
        return [_num(p.limit), _num(p.window_s)]
    if isinstance(pol, DailyQuota):
        return [_num(p.limit), p.window, _num(pol.epoch)]
    if isinstance(pol, Concurrency):
        return [_num(p.limit), _num(ttl)]
    raise TypeError(type(pol).__name__)


def _suffix(pol: Policy, user: int, tier: int) -> str:
    key = "user" if isinstance(pol, DailyQuota) else pol.params.key
    return f"u{user}" if key == "user" else f"t{tier}" if key == "tier" else "g"


class RedisStore:
    """A LimiterStore on a Redis server. `policies`: name -> the simulator's policy object
    (its parameters and epoch are read at each call); keys are `prefix:name:u<user>` (or
    `t<tier>`, `g`). `lease_ttl_s` (wall seconds): how long a concurrency lease is held when
    its replica never releases it. `time_scale`: store seconds per wall second; `origin`: the
    unix time of store t = 0 for Redis TIME (default: the policies' epoch, so calendar windows
    are UTC days)."""

    def __init__(self, url: str, policies: Mapping[str, Policy], *, prefix: str = "fg",
                 clock: Literal["caller", "redis"] = "caller", lease_ttl_s: float = 30.0,
                 time_scale: float = 1.0, origin: float | None = None,
                 socket_timeout: float | None = 1.0):
        if clock not in ("caller", "redis"):
            raise ValueError(f"RedisStore: clock must be 'caller' or 'redis', not {clock!r}")
        self.policies = dict(policies)
        self.prefix, self.clock = prefix, clock
        self.scale = float(time_scale)
        if origin is None:
            origin = next((p.epoch for p in self.policies.values()), 0.0)
        self.origin = float(origin)
        self.lease_ttl = float(lease_ttl_s) * self.scale  # in store seconds
        # hiredis parses the replies when installed (redis[hiredis]); no round trip here, so
        # a store can be opened while Redis is down
        self.r = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                      socket_connect_timeout=socket_timeout)
        self._scripts = {}
        local = {}
        for name, pol in self.policies.items():
            kind = SCRIPTED.get(type(pol))
            if kind is None:
                local[name] = pol
            else:  # EVALSHA, loading the script again after a Redis restart (NOSCRIPT)
                self._scripts[name] = self.r.register_script(script_source(kind))
        self.local = MemoryStore(local, now_fn=self._wall_now, lease_ttl_s=lease_ttl_s,
                                 time_scale=time_scale)

    def _wall_now(self) -> float:
        return (time.time() - self.origin) * self.scale

    def key(self, policy_name: str, user: int, tier: int) -> str:
        return f"{self.prefix}:{policy_name}:{_suffix(self.policies[policy_name], user, tier)}"

    def _now_arg(self, now: float | None) -> str:
        if now is not None:
            return _num(now)
        if self.clock == "caller":
            raise ValueError("RedisStore(clock='caller'): admit needs now")
        return ""  # the script reads Redis TIME

    def admit(self, policy_name: str, now: float | None, user: int, tier: int) -> Decision:
        script = self._scripts.get(policy_name)
        if script is None:
            return self.local.admit(policy_name, now, user, tier)
        pol = self.policies[policy_name]
        args = [self._now_arg(now), _num(self.origin), _num(self.scale), *_params(pol, self.lease_ttl)]
        lease = None
        if isinstance(pol, Concurrency):
            lease = new_lease()
            args.append(lease)
        ok, reason, retry, limit, remaining, reset = script(keys=[self.key(policy_name, user, tier)],
                                                            args=args)
        return Decision(bool(ok), reason.decode() if reason is not None else None, _f(retry), _i(limit),
                        _i(remaining), _f(reset), lease if ok else None)

    def release(self, policy_name: str, user: int, tier: int, lease_id: str) -> None:
        if policy_name not in self._scripts:
            return self.local.release(policy_name, user, tier, lease_id)
        if not isinstance(self.policies[policy_name], Concurrency):
            raise KeyError(f"{policy_name!r} holds no leases")
        self.r.zrem(self.key(policy_name, user, tier), lease_id)  # an empty zset is deleted

    def ping(self) -> bool:
        return bool(self.r.ping())

    def close(self) -> None:
        self.r.close()


def wall_ms(store_s: float, time_scale: float = 1.0) -> int:
    """A key's lifetime in wall milliseconds for `store_s` store seconds, as the scripts set it
    (the prelude's `expire`: rounded up, plus one millisecond)."""
    return max(1, math.ceil(store_s / time_scale * 1000) + 1)
