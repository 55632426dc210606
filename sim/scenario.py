"""Scenario files: YAML validated with pydantic v2. Unknown keys are errors.

Durations are seconds or strings with a unit ("90s", "15m", "36h", "8d"). Bad input raises
InputError naming the file and the field path.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from sim.errors import InputError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def _duration(v: Any) -> Any:
    if isinstance(v, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([smhdw]?)\s*", v)
        if not m:
            raise ValueError(f"not a duration: {v!r} (use seconds or e.g. '90s', '15m', '36h', '8d')")
        return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    return v


Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0)]
PosDuration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tier(Strict):
    name: str
    share: float = Field(gt=0, le=1, description="share of users in this tier")
    priority: int = Field(ge=0, description="0 is served first")
    price_per_image: float = Field(ge=0, description="revenue per completed image, USD")
    slo_s: PosDuration = Field(description="end-to-end latency target for goodput and plans")
    patience_s: PosDuration | None = Field(None, description="a waiting user abandons after this")
    queue_limit: int | None = Field(None, ge=0, description="queued requests beyond this: queue_full")
    weight: float = Field(1.0, gt=0, description="DRR weight")
    lifo: bool = False


class CurveDemand(Strict):
    """A piecewise-linear rate curve: [[time, requests/s], ...]; Poisson arrivals on it."""

    model: Literal["curve"] = "curve"
    points: list[tuple[Duration, Annotated[float, Field(ge=0)]]] = Field(min_length=1)
    users: int = Field(gt=0, description="population the requests come from")
    interpolation: Literal["linear", "step"] = "linear"

    @model_validator(mode="after")
    def _sorted(self):
        ts = [p[0] for p in self.points]
        if ts != sorted(ts):
            raise ValueError("points must be in time order")
        return self


class PolicyWhen(Strict):
    at: Duration
    enabled: bool | None = None
    params: dict[str, Any] | None = None


class PolicySpec(BaseModel):
    """One admission policy: `policy: <name>`, which tiers, when, and its own parameters."""

    model_config = ConfigDict(extra="allow")
    policy: str
    tiers: list[str] | None = None
    enabled: bool = True
    schedule: list[PolicyWhen] = []

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Pool(Strict):
    name: str
    gpus: int = Field(ge=0)
    max_gpus: int | None = Field(None, ge=0, description="ceiling for autoscaling")
    profile: str | None = Field(None, description="calibration profile: name or path")
    model: str | None = None
    resolution: int | None = Field(None, gt=0)
    steps: int = Field(20, gt=0, description="denoising steps per image")
    service_time_s: PosDuration | None = Field(None, description="fixed batch time instead of a profile")
    service_distribution: Literal["profile", "exponential", "deterministic"] = "profile"
    max_batch: int = Field(1, ge=1)
    max_wait_s: Duration = 0.0
    launch: Literal["on_demand", "cycle"] = "on_demand"
    price_per_gpu_hour: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _cost(self):
        if (self.profile is None) == (self.service_time_s is None):
            raise ValueError("give exactly one of profile or service_time_s")
        return self


class Fleet(Strict):
    pools: list[Pool] = Field(min_length=1)


class Scheduler(Strict):
    discipline: Literal["strict_priority", "fifo", "edf", "drr"] = "strict_priority"
    quantum_s: PosDuration = Field(1.0, description="DRR quantum in GPU-seconds per unit weight")


class Outputs(Strict):
    interval_s: PosDuration | None = Field(None, description="time-series step; default: horizon/1000")
    warmup_s: Duration = 0.0
    figures: bool = True
    report: bool = True


class Scenario(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = Field(0, ge=0)
    start: datetime = Field(datetime(2025, 1, 1, tzinfo=UTC), description="calendar time of t = 0")
    horizon: PosDuration
    chunk_s: PosDuration = Field(60.0, description="arrivals are generated this many seconds at a time")
    cell_fraction: float = Field(
        1.0, gt=0, le=1,
        description="simulate one cell with this share of the users and GPUs; counts and money "
        "in the outputs are scaled back to the whole service",
    )
    demand: CurveDemand
    tiers: list[Tier] = Field(min_length=1)
    policies: list[PolicySpec] = []
    scheduler: Scheduler = Scheduler()
    fleet: Fleet
    outputs: Outputs = Outputs()
    variants: dict[str, dict[str, Any]] = Field(
        {}, description="named what-if overrides for `floodgate compare` (merged into this file)")

    # Set by load_scenario: where the file is, for relative paths and messages.
    source: str = Field("<scenario>", exclude=True)

    @model_validator(mode="after")
    def _check(self):
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError("tier names must be unique")
        return self

    @property
    def epoch(self) -> float:
        s = self.start if self.start.tzinfo else self.start.replace(tzinfo=UTC)
        return s.timestamp()

    def tier_index(self, name: str) -> int:
        return [t.name for t in self.tiers].index(name)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(("function-", "tagged-union")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(root)"


def _first_error(e: ValidationError) -> tuple[str, str]:
    err = e.errors()[0]
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "literal_error":
        msg = f"{msg}"
    msg = msg.removeprefix("Value error, ")
    return _loc(err["loc"]), msg


def validate_policies(sc: Scenario) -> None:
    """Check each policy's name, tiers and parameters against its own schema."""
    from sim.policies import REGISTRY

    tiers = {t.name for t in sc.tiers}
    for i, spec in enumerate(sc.policies):
        where = f"policies[{i}]"
        cls = REGISTRY.get(spec.policy)
        if cls is None:
            raise InputError(
                sc.source, f"{where}.policy",
                f"unknown policy {spec.policy!r}; known: {', '.join(sorted(REGISTRY))}",
            )
        for t in spec.tiers or []:
            if t not in tiers:
                raise InputError(sc.source, f"{where}.tiers", f"unknown tier {t!r}; tiers: {', '.join(sorted(tiers))}")
        for j, when in enumerate([None, *spec.schedule]):
            params = spec.params() if when is None else {**spec.params(), **(when.params or {})}
            try:
                cls.Params.model_validate(params)
            except ValidationError as e:
                field, msg = _first_error(e)
                sub = where if when is None else f"{where}.schedule[{j - 1}].params"
                raise InputError(sc.source, f"{sub}.{field}", msg) from None


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    if not isinstance(data, dict):
        raise InputError(source, "(root)", "a scenario is a YAML mapping")
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as e:
        field, msg = _first_error(e)
        raise InputError(source, field, msg) from None
    sc.source = source
    validate_policies(sc)
    return sc


def load_scenario(path: str | Path, overrides: dict | None = None) -> Scenario:
    """Read, merge overrides into, and validate a scenario file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise InputError(str(p), "(file)", "no such file") from None
    except OSError as e:
        raise InputError(str(p), "(file)", f"cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(yaml)"
        raise InputError(str(p), where, f"malformed YAML: {getattr(e, 'problem', None) or e}") from None
    if overrides and isinstance(data, dict):
        data = merge(data, overrides)
    return parse_scenario(data, str(p))


def merge(base: Any, over: Any) -> Any:
    """Deep-merge `over` into `base`: mappings merge, everything else replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base.get(k), v) if k in base else v
        return out
    return over
