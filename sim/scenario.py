"""Scenario files: YAML validated with pydantic v2. Unknown keys are errors.

Durations are seconds or strings with a unit ("90s", "15m", "36h", "8d"). Bad input raises
InputError naming the file and the field path.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sim.errors import InputError
from sim.inputs import read_yaml

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


# Bounds shared by many fields (README, "Bounds and limits"). Durations up to ~317 years,
# counts that fit the arrays they size; the work and memory a run needs are checked separately
# before it starts (sim/budget.py).
MAX_S = 1e10
MIN_S = 1e-6
MAX_SEED = 2**63 - 1
MAX_USERS = 10**9
MAX_GPUS = 10**6
MAX_BATCH = 4096
MAX_RATE = 1e9  # requests/s of the whole service
MAX_PRICE = 1e6  # USD per image or per GPU-hour
MAX_COUNT = 10**12


def _duration(v: Any) -> Any:
    if isinstance(v, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([smhdw]?)\s*", v)
        if not m or len(v) > 64:
            raise ValueError(f"not a duration: {v[:40]!r} (use seconds or e.g. '90s', '15m', '36h', '8d')")
        return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    return v


def _tuples(v: Any) -> Any:
    """YAML has lists, not tuples: [[t, rate], ...] pairs as tuples for the strict schema."""
    if isinstance(v, list):
        return [tuple(x) if isinstance(x, list) else x for x in v]
    return v


Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0, le=MAX_S)]
PosDuration = Annotated[float, BeforeValidator(_duration), Field(ge=MIN_S, le=MAX_S)]
Share = Annotated[float, Field(ge=0, le=1)]
Price = Annotated[float, Field(ge=0, le=MAX_PRICE)]


class Strict(BaseModel):
    # strict: `horizon: true` or `gpus: 1.5` are errors, not 1 s or 1 GPU; no inf or NaN
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Tier(Strict):
    name: str
    share: float = Field(gt=0, le=1, description="share of users in this tier (shares sum to 1)")
    priority: int = Field(ge=0, le=10**6, description="0 is served first")
    price_per_image: float = Field(ge=0, le=MAX_PRICE, description="revenue per completed image, USD")
    slo_s: PosDuration = Field(description="end-to-end latency target for goodput and plans")
    patience_s: PosDuration | None = Field(None, description="a waiting user abandons after this")
    queue_limit: int | None = Field(None, ge=0, le=MAX_COUNT, description="queued requests beyond this: queue_full")
    weight: float = Field(1.0, ge=1e-3, le=1e3, description="DRR weight")
    lifo: bool = False


class RetrySpec(Strict):
    """What a rejected user does: try again after a backoff, up to max_attempts tries in all."""

    max_attempts: int = Field(3, ge=1, le=100, description="tries in all, the first included")
    base_s: PosDuration = Field(2.0, description="first backoff; doubles with each attempt")
    cap_s: PosDuration = Field(120.0, description="longest backoff")
    jitter: Literal["none", "full", "equal", "decorrelated"] = "full"
    honour_retry_after: bool = Field(True, description="wait at least the Retry-After when given")
    probability: float = Field(1.0, ge=0, le=1, description="a rejected user retries with this "
                               "probability, else gives up")
    reasons: list[str] | None = Field(None, description="rejection reasons retried (default: all)")


class ConversionSpec(Strict):
    """Paid conversion when the free cap bites: at a user's first quota_exceeded rejection."""

    tiers: list[str] = Field(min_length=1, description="tiers whose users may convert (e.g. free)")
    to: str = Field(description="tier they move to")
    probability: float = Field(ge=0, le=1, description="chance a user upgrades on hitting the quota")


class SocialSpec(Strict):
    """Self-exciting (Hawkes) demand: each image triggers on average `branching` more requests."""

    branching: float = Field(ge=0, lt=1, description="mean requests triggered per image (n < 1)")
    kernel: Literal["exponential", "power_law"] = "exponential"
    scale_s: PosDuration = Field(1800.0, description="kernel time scale")
    exponent: float = Field(1.5, ge=1e-3, le=100, description="power_law: density ~ (1 + t/scale)^-(1+exponent)")
    max_delay_s: PosDuration | None = Field(None, description="power_law: truncation (default 1000 scales)")
    only_successful: bool = Field(False, description="only images that were not rejected excite "
                                  "(offspring then come from the run; see sim/demand/feedback.py)")


class DemandCommon(Strict):
    retry: RetrySpec | None = None
    conversion: ConversionSpec | None = None
    social: SocialSpec | None = None


class CurveDemand(DemandCommon):
    """A piecewise-linear rate curve: [[time, requests/s], ...]; Poisson arrivals on it."""

    model: Literal["curve"] = "curve"
    points: Annotated[list[tuple[Duration, Annotated[float, Field(ge=0, le=MAX_RATE)]]],
                      BeforeValidator(_tuples)] = Field(min_length=1, max_length=10**6)
    users: int = Field(gt=0, le=MAX_USERS, description="population the requests come from")
    interpolation: Literal["linear", "step"] = "linear"

    @model_validator(mode="after")
    def _sorted(self):
        ts = [p[0] for p in self.points]
        if ts != sorted(ts):
            raise ValueError("points must be in time order")
        return self


class Wave(Strict):
    """One adoption wave (a launch, an opening): new users over time and their tier mix."""

    name: str = "wave"
    start: Duration = Field(0.0, description="when the wave begins")
    market: float = Field(gt=0, le=1e11, description="users this wave eventually brings (whole service); "
                          "sir: the susceptible population")
    adoption: Literal["bass", "logistic", "sir"] = "bass"
    p: float = Field(0.01, ge=1e-9, le=1e3, description="bass: innovation coefficient, per day")
    q: float = Field(0.5, ge=0, le=1e3, description="bass: imitation coefficient, per day")
    rate: float = Field(1.0, ge=1e-9, le=1e3, description="logistic (SI): growth rate, per day")
    i0: float = Field(0.001, ge=1e-12, lt=1, description="logistic, sir: initial adopted fraction")
    beta: float = Field(1.0, ge=1e-9, le=1e3, description="sir: contact rate, per day")
    gamma: float = Field(0.3, ge=0, le=1e3, description="sir: loss-of-interest rate, per day")
    tiers: dict[str, Share] | None = Field(
        None, description="tier mix of this wave's new users (default: the tiers' shares)")


class Sessions(Strict):
    """Per-user behaviour: a first session at adoption, then repeat sessions with novelty decay."""

    repeat: float = Field(1.0, ge=0, le=1e4, description="mean further sessions per user, over a lifetime")
    novelty: Literal["exponential", "power_law"] = "exponential"
    novelty_s: PosDuration = Field(172800.0, description="time scale of a user's interest decay")
    novelty_exponent: float = Field(1.0, ge=1e-3, le=100, description="power_law: tail exponent")
    activity_tail: float = Field(2.0, gt=1, le=100, description="Pareto index of per-user activity "
                                 "(lower: a few users make more of the sessions)")
    images: float = Field(2.5, ge=1, le=1e4, description="mean images per session")
    images_dist: Literal["lognormal", "pareto"] = "lognormal"
    images_sigma: float = Field(1.0, ge=1e-3, le=10, description="lognormal sigma of images per session")
    images_alpha: float = Field(2.5, gt=1, le=100, description="pareto index of images per session")
    think_s: Duration = Field(45.0, description="mean gap between images of a session")


class Region(Strict):
    name: str
    share: float = Field(gt=0, le=1, description="share of the users")
    utc_offset_h: float = Field(0.0, ge=-12, le=14)


class Seasonality(Strict):
    """Diurnal and weekly cycles of repeat sessions, in each region's local time."""

    diurnal_amplitude: float = Field(0.0, ge=0, lt=1, description="1 + a cos(...): 0 is flat")
    peak_hour: float = Field(20.0, ge=0, lt=24, description="local hour of the daily peak")
    weekend_factor: float = Field(1.0, ge=1e-3, le=1e3, description="weekend day rate / weekday rate")
    regions: list[Region] = Field(default_factory=lambda: [Region(name="utc", share=1.0)],
                                  min_length=1)


class ViralDemand(DemandCommon):
    """Adoption waves x per-user sessions x seasonality (+ social feedback, retries)."""

    model: Literal["viral"]
    waves: list[Wave] = Field(min_length=1)
    sessions: Sessions = Sessions()
    seasonality: Seasonality = Seasonality()
    grid_s: PosDuration = Field(300.0, ge=1.0, description="step of the intensity grid")


class TraceDemand(DemandCommon):
    """Replay a CSV of request timestamps (seconds or date-times), scaled, shifted, looped."""

    model: Literal["trace"]
    path: str = Field(description="CSV file; relative paths are from the scenario's folder")
    column: str = "TIMESTAMP"
    user_column: str | None = None
    tier_column: str | None = None
    time_scale: float = Field(1.0, ge=1e-9, le=1e9, description="t_sim = shift + time_scale * (t - t_first)")
    shift: Duration = 0.0
    loop: bool = False
    period: PosDuration | None = Field(None, description="loop period (default: span + mean gap)")
    users: int = Field(1000, gt=0, le=MAX_USERS, description="users to draw from when there is no user column")


DEMAND_MODELS = ("curve", "viral", "trace")


def _default_model(v: Any) -> Any:
    if isinstance(v, dict) and "model" not in v:
        return {**v, "model": "curve"}
    return v


Demand = Annotated[CurveDemand | ViralDemand | TraceDemand, BeforeValidator(_default_model),
                   Field(discriminator="model")]


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
    gpus: int = Field(ge=0, le=MAX_GPUS)
    max_gpus: int | None = Field(None, ge=0, le=MAX_GPUS, description="ceiling for autoscaling")
    profile: str | None = Field(None, max_length=255, description="calibration profile: name or path")
    model: str | None = None
    resolution: int | None = Field(None, gt=0, le=65536)
    steps: int = Field(20, gt=0, le=10000, description="denoising steps per image")
    service_time_s: PosDuration | None = Field(None, description="fixed batch time instead of a profile")
    service_distribution: Literal["profile", "exponential", "deterministic"] = "profile"
    max_batch: int = Field(1, ge=1, le=MAX_BATCH)
    max_wait_s: Duration = 0.0
    launch: Literal["on_demand", "cycle"] = "on_demand"
    price_per_gpu_hour: float = Field(0.0, ge=0, le=MAX_PRICE)

    @model_validator(mode="after")
    def _cost(self):
        if (self.profile is None) == (self.service_time_s is None):
            raise ValueError("give exactly one of profile or service_time_s")
        return self


class Fleet(Strict):
    pools: list[Pool] = Field(min_length=1)


class Scheduler(Strict):
    discipline: Literal["strict_priority", "fifo", "edf", "drr"] = "strict_priority"
    quantum_s: PosDuration = Field(1.0, ge=1e-3, description="DRR quantum in GPU-seconds per unit weight "
                                   "(at least 1/1000 of one request's GPU time: sim/budget.py)")


class Outputs(Strict):
    interval_s: PosDuration | None = Field(None, ge=1e-3, description="time-series step; default: horizon/1000")
    warmup_s: Duration = 0.0
    figures: bool = True
    report: bool = True


class Scenario(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    description: str = ""
    seed: int = Field(0, ge=0, le=MAX_SEED)
    start: datetime = Field(datetime(2025, 1, 1, tzinfo=UTC), strict=False,
                            description="calendar time of t = 0")
    horizon: PosDuration
    chunk_s: PosDuration = Field(60.0, ge=1e-3, description="arrivals are generated this many seconds at a time")
    cell_fraction: float = Field(
        1.0, gt=0, le=1,
        description="simulate one cell with this share of the users and GPUs; counts and money "
        "in the outputs are scaled back to the whole service",
    )
    demand: Demand
    tiers: list[Tier] = Field(min_length=1)
    policies: list[PolicySpec] = []
    scheduler: Scheduler = Scheduler()
    fleet: Fleet
    outputs: Outputs = Outputs()
    variants: dict[str, dict[str, Any]] = Field(
        {}, description="named what-if overrides for `floodgate compare` (merged into this file)")

    # Set by load_scenario: where the file is, for relative paths and messages.
    source: str = Field("<scenario>", exclude=True)

    @field_validator("name")
    @classmethod
    def _not_dots(cls, v: str) -> str:
        if set(v) == {"."}:  # "." and ".." are folders, not names (out/<name>/)
            raise ValueError("must not be only dots")
        return v

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
    loc = tuple(err["loc"])
    if len(loc) > 1 and loc[0] == "demand" and loc[1] in DEMAND_MODELS:
        loc = loc[:1] + loc[2:]  # the union's tag ("viral") is not a field
    return _loc(loc), msg


def validate_demand(sc: Scenario) -> None:
    """Tier names and reasons the demand section refers to must exist."""
    from sim.outcomes import REASONS

    d, tiers = sc.demand, [t.name for t in sc.tiers]

    def check(names, field):
        for t in names:
            if t not in tiers:
                raise InputError(sc.source, field, f"unknown tier {t!r}; tiers: {', '.join(tiers)}")

    if d.conversion is not None:
        check(d.conversion.tiers, "demand.conversion.tiers")
        check([d.conversion.to], "demand.conversion.to")
    if d.retry is not None:
        for r in d.retry.reasons or []:
            if r not in REASONS:
                raise InputError(sc.source, "demand.retry.reasons",
                                 f"unknown reason {r!r}; reasons: {', '.join(REASONS)}")
    if d.model == "viral":
        for i, w in enumerate(d.waves):
            if w.tiers is not None:
                check(list(w.tiers), f"demand.waves[{i}].tiers")
                if sum(w.tiers.values()) <= 0:
                    raise InputError(sc.source, f"demand.waves[{i}].tiers", "shares must not all be 0")
        if sum(r.share for r in d.seasonality.regions) <= 0:
            raise InputError(sc.source, "demand.seasonality.regions", "shares must not all be 0")


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
            sub = where if when is None else f"{where}.schedule[{j - 1}].params"
            try:
                parsed = cls.Params.model_validate(params)
            except ValidationError as e:
                field, msg = _first_error(e)
                raise InputError(sc.source, f"{sub}.{field}", msg) from None
            bad = cls.check_tiers(parsed, [t.name for t in sc.tiers])
            if bad is not None:  # a parameter keyed by tier names a tier that does not exist
                raise InputError(sc.source, f"{sub}.{bad[0]}", bad[1])


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    if not isinstance(data, dict):
        raise InputError(source, "(root)", "a scenario is a YAML mapping")
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as e:
        field, msg = _first_error(e)
        raise InputError(source, field, msg) from None
    sc.source = source
    total = sum(t.share for t in sc.tiers)
    if abs(total - 1.0) > 1e-6:  # not normalised silently: 0.3 + 0.9 is a typo, not a mix
        raise InputError(source, "tiers", f"shares must sum to 1 (they sum to {total:.6g})")
    validate_policies(sc)
    validate_demand(sc)
    return sc


def load_scenario(path: str | Path, overrides: dict | None = None,
                  sets: list[str] | None = None) -> Scenario:
    """Read, merge overrides into, apply `--set PATH=VALUE` changes to, and validate a
    scenario file."""
    p = Path(path)
    data = read_yaml(p)
    if overrides and isinstance(data, dict):
        data = merge(data, overrides)
    if sets:
        from sim.overrides import apply_sets

        data = apply_sets(data, sets)
    return parse_scenario(data, str(p))


def merge(base: Any, over: Any) -> Any:
    """Deep-merge `over` into `base`: mappings merge, everything else replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base.get(k), v) if k in base else v
        return out
    return over
