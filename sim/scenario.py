"""Scenario files: YAML validated with pydantic v2. Unknown keys are errors.

Durations are seconds or strings with a unit ("90s", "15m", "36h", "8d"; sim/units.py). Each
policy entry is its policy's own model, built from the registry (`policy_model`) and told apart
by `policy:`. `scenario_problems` finds every problem with its path into the data; the first is
raised as an InputError naming the file (with the key's line:col when the YAML nodes are
known) and the field path. `json_schema()` is what `floodgate schema` prints.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic.json_schema import SkipJsonSchema

from sim.errors import InputError, did_you_mean
from sim.inputs import position, read_yaml_nodes
from sim.units import MAX_S, MIN_S, Duration, PosDuration
from sim.units import parse_duration as _duration  # noqa: F401 (the CLI's --window, --warm)

# Bounds shared by many fields (README, "Bounds and limits"). Durations up to ~317 years
# (sim/units.py), counts that fit the arrays they size; the work and memory a run needs are
# checked separately before it starts (sim/budget.py).
MAX_SEED = 2**63 - 1
MAX_USERS = 10**9
MAX_GPUS = 10**6
MAX_BATCH = 4096
MAX_RATE = 1e9  # requests/s of the whole service
MAX_PRICE = 1e6  # USD per image or per GPU-hour
MAX_COUNT = 10**12
__all__ = ["MAX_S", "MIN_S", "Duration", "PosDuration"]


def _tuples(v: Any) -> Any:
    """YAML has lists, not tuples: [[t, rate], ...] pairs as tuples for the strict schema."""
    if isinstance(v, list):
        return [tuple(x) if isinstance(x, list) else x for x in v]
    return v


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
    regions: list[Region] | None = Field(None, min_length=1, description="users' regions (fleet."
                                         "regions): a user's is drawn by share from a hash of its id")

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
    """A region of the users: their share and local time (seasonality), and the home of
    their requests when the fleet has regions (fleet.regions)."""

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
    id_column: str | None = Field(None, description="integer request ids keying each request's "
                                  "own service noise and retry draws (sim.rng): a replay of a live "
                                  "schedule draws what the gateway drew")
    time_scale: float = Field(1.0, ge=1e-9, le=1e9, description="t_sim = shift + time_scale * (t - t_first)")
    shift: Duration = 0.0
    loop: bool = False
    period: PosDuration | None = Field(None, description="loop period (default: span + mean gap)")
    users: int = Field(1000, gt=0, le=MAX_USERS, description="users to draw from when there is no user column")
    regions: list[Region] | None = Field(None, min_length=1, description="users' regions (fleet."
                                         "regions): a user's is drawn by share from a hash of its id")


DEMAND_MODELS = ("curve", "viral", "trace")


def _default_model(v: Any) -> Any:
    if isinstance(v, dict) and "model" not in v:
        return {**v, "model": "curve"}
    return v


Demand = Annotated[CurveDemand | ViralDemand | TraceDemand, BeforeValidator(_default_model),
                   Field(discriminator="model")]


TRIGGER_METRICS = ("utilization", "queue_wait", "p95", "rejection_share")


class Trigger(Strict):
    """Incident response (sim/policies/triggers.py): a metric beyond a threshold for a
    duration. Measured every `check_s` over the last check_s: utilization (the fleet's busy
    share), a tier's queue_wait (mean wait before service, s) or p95 (latency of the requests
    completed, s), or its rejection_share (rejected / offered, every reason); queue_wait is
    the request-seconds queued per request started over the window (Little's law)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True)
    metric: Literal["utilization", "queue_wait", "p95", "rejection_share"]
    tier: str | None = Field(None, description="the tier measured (all but utilization)")
    above: float = Field(ge=0, le=1e10, description="fires when the metric is above this ...")
    for_s: Duration = Field(0.0, alias="for", description="... at every check for this long")
    check_s: PosDuration = Field(300.0, ge=1.0, description="measured this often, over the last check_s")

    @model_validator(mode="after")
    def _tier(self):
        if (self.metric == "utilization") != (self.tier is None):
            raise ValueError("utilization is the fleet's (no tier); the other metrics need a tier")
        return self


class When(Strict):
    """At `at`, or when `trigger` fires plus the operator's reaction delay: switch the policy
    on or off or change some of its parameters."""

    at: Duration | None = None
    trigger: Trigger | None = None
    delay_s: Duration = Field(0.0, description="operator reaction: the change lands this long after the trigger")

    @model_validator(mode="after")
    def _when(self):
        if (self.at is None) == (self.trigger is None):
            raise ValueError("give exactly one of at or trigger")
        if self.at is not None and self.delay_s:
            raise ValueError("delay_s goes with a trigger (at is already the time)")
        return self


# ---- policies: one model per policy of the registry, told apart by `policy:` ----

COMMON = ("policy", "tiers", "enabled", "schedule")


class _AsGiven(Strict):
    """Dumps only the keys the file gave: a dumped policy parses back to the same policy (a
    default such as brownout's queue_depth = inf is not JSON, a schedule change's unset
    parameters are not changes)."""

    @model_serializer(mode="wrap")
    def _given(self, handler):
        d = handler(self)
        return {k: v for k, v in d.items() if k in self.model_fields_set or k == "policy"}


class PolicySpec(_AsGiven):
    """What every policy entry has besides its own parameters (its Params, sim/policies)."""

    policy: str
    tiers: list[str] | None = Field(None, description="tiers it applies to (default: all)")
    enabled: bool = True

    def params(self, when: Any = None) -> dict[str, Any]:
        """The parameters the scenario gave (defaults left to the policy's Params); with a
        schedule entry, as that entry changes them."""
        given = {k: getattr(self, k) for k in self.model_fields_set if k not in COMMON}
        if when is not None and when.params is not None:
            given.update(when.params.model_dump(exclude_unset=True))
        return given


_MODELS: dict[type, type[PolicySpec]] = {}


def _partial(params: type[BaseModel]) -> type[Strict]:
    """The policy's parameters, each optional: what a schedule entry may change. (The merged
    parameters are checked with the policy's own Params after, cross-field rules included.)"""
    fields = {}
    for n, f in params.model_fields.items():
        fi = copy.copy(f)
        fi.default, fi.default_factory = None, None
        fields[n] = (f.annotation, fi)
    return create_model(f"{params.__name__}Change", __base__=_AsGiven, **fields)


def policy_model(cls) -> type[PolicySpec]:
    """The scenario entry of one policy class: `policy: <name>`, the common keys and its
    parameters, with a schedule that may change them."""
    if cls not in _MODELS:
        clash = set(COMMON) & set(cls.Params.model_fields)
        if clash:
            raise TypeError(f"{cls.__name__}.Params uses reserved keys {sorted(clash)}")
        stem = cls.__name__
        when = create_model(
            f"{stem}When", __base__=When, __doc__=When.__doc__,
            enabled=(bool | None, None), params=(_partial(cls.Params) | None, None))
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        _MODELS[cls] = create_model(
            f"{stem}Policy", __base__=(PolicySpec, cls.Params), __doc__=" ".join(doc.split()),
            policy=(Literal[cls.name], ...), schedule=(list[when], []))
    return _MODELS[cls]


def policy_union() -> Any:
    """Every registered policy's model, discriminated by `policy` (sim.policies.REGISTRY)."""
    from sim.policies import REGISTRY

    return Annotated[Union[tuple(policy_model(c) for c in REGISTRY.values())],  # noqa: UP007
                     Field(discriminator="policy")]


class Purchase(Strict):
    """How a pool's GPUs are bought (sim/fleet/purchase.py): the first `reserved` GPUs live
    are reserved, the last `spot` of its slots (max_gpus, else gpus) are spot, the rest on
    demand at the pool's price_per_gpu_hour. Counts are whole-service figures."""

    reserved: int = Field(0, ge=0, le=MAX_GPUS, description="GPUs under reservation (paid live or not)")
    spot: int = Field(0, ge=0, le=MAX_GPUS, description="spot GPUs: cheaper, preempted")
    reserved_per_gpu_month: float | None = Field(
        None, ge=0, le=MAX_PRICE, description="default: 60% of on demand x 730 h (an assumption)")
    spot_per_gpu_hour: float | None = Field(None, ge=0, le=MAX_PRICE,
                                            description="default: 35% of on demand (an assumption)")
    preemptions_per_gpu_day: float = Field(0.05, ge=0, le=1e4, description="spot preemption rate")
    notice_s: Duration = Field(120.0, description="a preempted spot GPU serves this long, then leaves")
    restore_s: Duration = Field(1800.0, description="a replacement spot GPU serves this long after")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="preemption random stream")


class Pool(Strict):
    name: str
    gpus: int = Field(ge=0, le=MAX_GPUS)
    max_gpus: int | None = Field(None, ge=0, le=MAX_GPUS, description="ceiling for autoscaling")
    profile: str | None = Field(None, max_length=255, description="calibration profile: name or path")
    model: str | None = None
    models: list[str] | None = Field(None, min_length=1, description="request classes: the models "
                                     "this pool holds (default: every model its profile costs)")
    swap_s: Duration = Field(0.0, description="request classes: seconds a GPU takes to load "
                             "another model before a batch of it")
    resolution: int | None = Field(None, gt=0, le=65536)
    steps: int = Field(20, gt=0, le=10000, description="denoising steps per image")
    service_time_s: PosDuration | None = Field(None, description="fixed batch time instead of a profile")
    service_distribution: Literal["profile", "exponential", "deterministic"] = "profile"
    max_batch: int = Field(1, ge=1, le=MAX_BATCH)
    max_wait_s: Duration = 0.0
    launch: Literal["on_demand", "cycle"] = "on_demand"
    price_per_gpu_hour: float = Field(0.0, ge=0, le=MAX_PRICE, description="on demand, per live GPU-hour")
    purchase: Purchase | None = Field(None, description="reserved / on-demand / spot (default: all on demand)")
    region: str | None = Field(None, description="the fleet region it is in (fleet.regions)")

    @model_validator(mode="after")
    def _cost(self):
        if (self.profile is None) == (self.service_time_s is None):
            raise ValueError("give exactly one of profile or service_time_s")
        b = self.purchase
        if b is not None and b.reserved + b.spot > max(self.gpus, self.max_gpus or 0):
            raise ValueError(f"purchase: reserved + spot ({b.reserved + b.spot}) exceed the pool's "
                             f"GPUs ({max(self.gpus, self.max_gpus or 0)})")
        return self


class FleetRegion(Strict):
    """A region of the fleet (sim/regions.py): its pools name it; `latency_s` is the network
    latency from each users' region to it, added to the latency of each request it serves.
    A users' region's home is the fleet region with the lowest latency from it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    latency_s: dict[str, Annotated[float, Field(ge=0, le=60)]] = Field(
        description="users' region -> network latency to this region, seconds (every users' "
        "region: demand.seasonality.regions, or demand.regions)")
    max_gpus: int | None = Field(None, ge=0, le=MAX_GPUS, description="capacity: live GPUs of "
                                 "its pools together never exceed this (whole service)")


class SpillOver(Strict):
    """When a request leaves its home region (sim/regions.py): at its arrival, when the home
    region's predicted wait is over `predicted_wait_s` (or its GPUs are out), it goes to the
    region with the lowest network latency + predicted wait, if that is lower than home's."""

    predicted_wait_s: Duration | None = Field(
        None, description="spill when home's predicted wait (requests queued there at the "
        "request's priority or above, over its live images/s at max batch) is over this "
        "(default: only when its GPUs are out)")
    max_latency_s: float | None = Field(None, ge=0, le=60, description="never to a region "
                                        "farther than this from the user (network latency)")


class Fleet(Strict):
    pools: list[Pool] = Field(min_length=1)
    router: Literal["listed", "cheapest", "least_loaded", "affinity"] = Field(
        "listed", description="which pool with an idle GPU takes queued work first: as listed, "
        "the cheapest per image, the lowest busy share, or as listed with each GPU preferring "
        "the model it holds")
    regions: list[FleetRegion] | None = Field(None, min_length=1, description="fleet regions; "
                                              "each pool names its own (pools[].region)")
    spill_over: SpillOver | None = Field(None, description="regions: when a request leaves "
                                         "its home region (default: only when its GPUs are out)")


ClassName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@+-]+$", max_length=100)]
ClassMixMap = dict[str, dict[str, Share]]


class RequestClass(Strict):
    """One kind of image the service sells: its model, size, steps and guidance."""

    name: ClassName
    model: str | None = Field(None, max_length=200, description="profile model (default: each pool's own)")
    resolution: int | None = Field(None, gt=0, le=65536, description="the measured square side "
                                   "it is costed at (default: each pool's own)")
    size: str | None = Field(None, pattern=r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$",
                             description="WIDTHxHEIGHT when not the square `resolution` (e.g. "
                             "1024x1536): costed at `resolution` times size_scale")
    size_scale: float | None = Field(None, gt=0, le=1e3, description="GPU time of the denoising "
                                     "step and VAE at `size` relative to the square `resolution` "
                                     "(default: the ratio of pixel counts)")
    steps: int = Field(20, gt=0, le=10000, description="denoising steps per image")
    cfg: bool | None = Field(None, description="classifier-free guidance (default: as the profile "
                             "measured it; off costs the denoiser half the batch)")
    encode: bool = Field(False, description="an input image to VAE-encode first (edits)")
    encode_s: PosDuration | None = Field(None, description="encode seconds per image instead of "
                                         "the profile's vae_encode (or vae_decode as a bound)")
    service_time_s: PosDuration | None = Field(None, description="fixed batch time instead of "
                                               "the profile (theory tests, what-ifs)")
    quality: float = Field(1.0, gt=0, le=1e3, description="relative image quality (brownout's proxy)")

    @model_validator(mode="after")
    def _size(self):
        if self.size is not None and self.resolution is None:
            raise ValueError("size needs resolution (the measured square it is costed at)")
        if self.size_scale is not None and self.size is None:
            raise ValueError("size_scale needs size")
        return self

    def scale(self) -> float:
        """GPU time of the step and VAE relative to the square `resolution`."""
        if self.size is None:
            return 1.0
        if self.size_scale is not None:
            return float(self.size_scale)
        w, h = (int(x) for x in self.size.split("x"))
        return w * h / float(self.resolution) ** 2


class ClassMixWhen(Strict):
    at: Duration
    mix: ClassMixMap = Field(description="tier -> class -> share, replacing those tiers' mixes")


class RequestClasses(Strict):
    """Request classes and each tier's mix of them (which may change over time)."""

    classes: list[RequestClass] = Field(min_length=1, max_length=127)
    mix: ClassMixMap = Field({}, description="tier -> class -> share (each tier's sum to 1); a "
                             "tier not named asks for the first class")
    schedule: list[ClassMixWhen] = []


class Scheduler(Strict):
    discipline: Literal["strict_priority", "fifo", "edf", "drr"] = "strict_priority"
    quantum_s: PosDuration = Field(1.0, ge=1e-3, description="DRR quantum in GPU-seconds per unit weight "
                                   "(at least 1/1000 of one request's GPU time: sim/budget.py)")


class GatewaySpec(Strict):
    """The deployment in front of the fleet (sim/live/replica.py): gateway replicas doing
    admission, forwarding to one fleet."""

    replicas: int = Field(1, ge=1, le=64, description="gateway replicas; a load balancer spreads "
                          "requests over them round robin, one request at a time (no stickiness)")
    limiter_state: Literal["shared", "per_replica"] = Field(
        "shared", description="shared: one limiter state for all replicas (Redis); per_replica: "
        "each replica its own, so per-user and per-tier limits let up to `replicas` times through")
    hop_latency_s: Duration = Field(0.0, le=60, description="replica to fleet, added to every "
                                    "admitted request's latency and wait (measured on loopback: "
                                    "`hop_s` in the fleet's log)")


class Outputs(Strict):
    interval_s: PosDuration | None = Field(None, ge=1e-3, description="time-series step; default: horizon/1000")
    warmup_s: Duration = 0.0
    figures: bool = True
    report: bool = True


class Scenario(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    description: str = ""
    seed: int = Field(0, ge=0, le=MAX_SEED)
    # a date-time (a YAML timestamp or an ISO string); numbers are refused (_calendar_time)
    start: Annotated[datetime, WithJsonSchema({"type": "string", "format": "date-time"})] = Field(
        datetime(2025, 1, 1, tzinfo=UTC), strict=False, description="calendar time of t = 0")
    horizon: PosDuration
    chunk_s: PosDuration = Field(60.0, ge=1e-3, description="arrivals are generated this many seconds at a time")
    cell_fraction: float = Field(
        1.0, gt=0, le=1,
        description="simulate one cell with this share of the users and GPUs; counts and money "
        "in the outputs are scaled back to the whole service",
    )
    demand: Demand
    tiers: list[Tier] = Field(min_length=1)
    policies: list[policy_union()] = []  # rebuilt when a policy registers (rebuild_policies)
    scheduler: Scheduler = Scheduler()
    fleet: Fleet
    gateway: GatewaySpec = GatewaySpec()
    request_classes: RequestClasses | None = None
    outputs: Outputs = Outputs()
    variants: dict[str, dict[str, Any]] = Field(
        {}, description="named what-if overrides for `floodgate compare` (merged into this file)")

    # Set by load_scenario: where the file is, for relative paths and messages.
    source: SkipJsonSchema[str] = Field("<scenario>", exclude=True)

    @field_validator("start", mode="before")
    @classmethod
    def _calendar_time(cls, v):
        # a number would be read as unix seconds (0 is 1970): the schema and the files say
        # date-time, so the model does too
        if isinstance(v, int | float) and not isinstance(v, bool):
            raise ValueError("a calendar time such as '2025-03-25T00:00:00Z', not a number")
        return v

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


def rebuild_policies() -> None:
    """Make a policy registered after import (sim.policies.register) a valid `policy:`."""
    Scenario.model_fields["policies"] = FieldInfo.from_annotated_attribute(
        list[policy_union()], [])
    Scenario.model_rebuild(force=True)
    _SCHEMA.clear()
    _ADAPTERS.clear()


def _hook() -> None:
    from sim.policies import ON_REGISTER

    ON_REGISTER.append(rebuild_policies)


_hook()


# ---- problems: every error of a file, each with its path into the data ----


@dataclass
class Problem:
    """One thing wrong with a scenario: where (keys and indices into the data) and what."""

    loc: tuple
    message: str

    @property
    def field(self) -> str:
        return field_path(self.loc)


def field_path(loc: tuple) -> str:
    """policies[0].limit: names joined by dots, list indices in brackets."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(root)"


def _data_loc(data: Any, loc: tuple) -> tuple:
    """Pydantic's loc as a path into the data: the tags it inserts (a union member such as
    `viral` or `token_bucket`, `function-after[...]`) are not keys of the file."""
    out, cur = [], data
    for i, part in enumerate(loc):
        if isinstance(cur, dict) and part in cur:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif i == len(loc) - 1 and isinstance(part, str) and not part.startswith("function-"):
            out.append(part)  # a missing key: not in the data, but the field to name
    return tuple(out)


_SCHEMA: dict[str, dict] = {}


def json_schema() -> dict:
    """The scenario's JSON Schema (validation mode): `floodgate schema` prints it."""
    if "scenario" not in _SCHEMA:
        sch = Scenario.model_json_schema()
        sch["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        sch["$id"] = "urn:floodgate:scenario"  # a name, not a place to fetch
        _SCHEMA["scenario"] = _bounds(sch)
    return _SCHEMA["scenario"]


def _bounds(node: Any) -> Any:
    """Constraints pydantic leaves under its own names (ge, le...) when a validator sits
    between them and the type (durations, curve points): as JSON Schema keywords."""
    names = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}
    if isinstance(node, dict):
        if node.get("type") in ("number", "integer"):
            for a, b in names.items():
                if a in node:
                    v = node.pop(a)
                    pick = max if b in ("minimum", "exclusiveMinimum") else min
                    node[b] = pick(v, node[b]) if b in node else v
        for v in node.values():
            _bounds(v)
    elif isinstance(node, list):
        for v in node:
            _bounds(v)
    return node


def _schema_at(loc: tuple) -> dict | None:
    """The schema node (object, enum...) pydantic's loc leads to: for "did you mean"."""
    root = json_schema()
    defs = root.get("$defs", {})

    def deref(n):
        while isinstance(n, dict) and "$ref" in n:
            n = defs.get(n["$ref"].rsplit("/", 1)[-1], {})
        return n

    def walk(n, parts, depth=0):
        n = deref(n)
        if not parts or depth > 50:
            for b in n.get("anyOf", []):  # an optional object or choice: the object or choice
                if "properties" in deref(b) or "enum" in deref(b):
                    return deref(b)
            return n
        p, rest = parts[0], parts[1:]
        if p in n.get("properties", {}):
            return walk(n["properties"][p], rest, depth + 1)
        mapping = n.get("discriminator", {}).get("mapping", {})
        if p in mapping:
            return walk({"$ref": mapping[p]}, rest, depth + 1)
        if isinstance(p, int) and isinstance(n.get("items"), dict):
            return walk(n["items"], rest, depth + 1)
        if isinstance(p, str) and isinstance(n.get("additionalProperties"), dict):
            return walk(n["additionalProperties"], rest, depth + 1)
        for b in n.get("anyOf", []) + n.get("oneOf", []):
            r = walk(b, parts, depth + 1)
            if r is not None:
                return r
        if isinstance(p, str) and (p.startswith("function-") or "[" in p):
            return walk(n, rest, depth + 1)  # a validator's or union member's tag
        return None

    return walk(root, loc)


def problems_of(e: ValidationError, data: Any) -> list[Problem]:
    """Every error pydantic found, as paths into the data and messages a user acts on."""
    out = []
    for err in e.errors():
        raw = tuple(err["loc"])
        loc = _data_loc(data, raw)
        kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
        ctx = err.get("ctx") or {}
        if kind == "extra_forbidden":
            node = _schema_at(raw[:-1]) or {}
            msg = "unknown key" + did_you_mean(raw[-1], set(node.get("properties", {})))
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            key = str(ctx.get("discriminator", "")).strip("'") or "policy"
            loc += (key,)
            node = _schema_at(raw) or {}
            tags = sorted(node.get("discriminator", {}).get("mapping", {}))
            if kind == "union_tag_not_found":
                msg = f"missing; one of: {', '.join(tags)}"
            else:
                what = "policy" if key == "policy" else f"demand {key}" if raw[:1] == ("demand",) else key
                tag = ctx.get("tag")
                msg = f"unknown {what} {tag!r}{did_you_mean(tag, tags) or ';'} known: {', '.join(tags)}"
        elif kind == "literal_error":
            node = _schema_at(raw) or {}
            choices = node.get("enum") or [b.get("const") for b in node.get("anyOf", []) if "const" in b]
            msg += did_you_mean(err.get("input"), [str(c) for c in choices or []])
        out.append(Problem(loc, msg))
    return out


def demand_problems(d: Any, tiers: list[str]) -> list[Problem]:
    """Tier names and reasons the demand section (validated) refers to must exist."""
    from sim.outcomes import REASONS

    out = []

    def check(names, loc):
        for t in names:
            if t not in tiers:
                out.append(Problem(loc, f"unknown tier {t!r}{did_you_mean(t, tiers) or ';'} tiers: {', '.join(tiers)}"))

    if d.conversion is not None:
        check(d.conversion.tiers, ("demand", "conversion", "tiers"))
        check([d.conversion.to], ("demand", "conversion", "to"))
    if d.retry is not None:
        for r in d.retry.reasons or []:
            if r not in REASONS:
                out.append(Problem(("demand", "retry", "reasons"),
                                   f"unknown reason {r!r}{did_you_mean(r, REASONS) or ';'} reasons: {', '.join(REASONS)}"))
    if d.model == "viral":
        for i, w in enumerate(d.waves):
            if w.tiers is not None:
                check(list(w.tiers), ("demand", "waves", i, "tiers"))
                if sum(w.tiers.values()) <= 0:
                    out.append(Problem(("demand", "waves", i, "tiers"), "shares must not all be 0"))
        if sum(r.share for r in d.seasonality.regions) <= 0:
            out.append(Problem(("demand", "seasonality", "regions"), "shares must not all be 0"))
    return out


def policy_problems(specs: list[tuple[int, PolicySpec]], tiers: list[str]) -> list[Problem]:
    """Each policy's tiers, and its parameters after each schedule change, against its own
    Params (the shape of each entry is the Scenario model's). `specs`: (index, entry)."""
    from sim.policies import REGISTRY

    out = []
    for i, spec in specs:
        cls = REGISTRY[spec.policy]
        for t in spec.tiers or []:
            if t not in tiers:
                out.append(Problem(("policies", i, "tiers"),
                                   f"unknown tier {t!r}{did_you_mean(t, tiers) or ';'} tiers: {', '.join(sorted(tiers))}"))
        for j, when in enumerate(spec.schedule):
            tr = when.trigger
            if tr is not None and tr.tier is not None and tr.tier not in tiers:
                out.append(Problem(("policies", i, "schedule", j, "trigger", "tier"),
                                   f"unknown tier {tr.tier!r}{did_you_mean(tr.tier, tiers) or ';'} tiers: {', '.join(sorted(tiers))}"))
        for j, when in enumerate([None, *spec.schedule]):
            params = spec.params(when)
            sub = ("policies", i) if when is None else ("policies", i, "schedule", j - 1, "params")
            try:
                parsed = cls.Params.model_validate(params)
            except ValidationError as e:
                out += [Problem(sub + p.loc, p.message) for p in problems_of(e, params)]
                continue
            bad = cls.check_tiers(parsed, tiers)
            if bad is not None:  # a parameter keyed by tier names a tier that does not exist
                out.append(Problem(sub + tuple(bad[0].split(".")), bad[1]))
    return out


def scenario_problems(data: Any) -> tuple[Scenario | None, list[Problem]]:
    """The scenario and every problem found in it. Shape and types first (all at once); the
    rules across sections (tier names, shares) once the shape is right."""
    if not isinstance(data, dict):
        return None, [Problem((), "a scenario is a YAML mapping")]
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as e:
        return None, problems_of(e, data) + _section_problems(data)
    return sc, cross_problems(sc.tiers, list(enumerate(sc.policies)), sc.demand) + region_problems(sc)


def user_regions(demand: Any) -> list[Region]:
    """The users' regions: the viral model's seasonality regions, or a curve's or trace's
    `regions` (default one, 'utc', as seasonality's)."""
    if demand.model == "viral":
        return demand.seasonality.regions
    return demand.regions or [Region(name="utc", share=1.0)]


def region_problems(sc: Scenario) -> list[Problem]:
    """Fleet regions (sim/regions.py): names unique, every pool in one, each region's latency
    from every users' region, capacities that hold the pools' GPUs; region_outage policies
    name a region."""
    f, out = sc.fleet, []
    outages = [(i, p) for i, p in enumerate(sc.policies) if p.policy == "region_outage"]
    if f.regions is None:
        if f.spill_over is not None:
            out.append(Problem(("fleet", "spill_over"), "needs fleet.regions"))
        for i, p in enumerate(f.pools):
            if p.region is not None:
                out.append(Problem(("fleet", "pools", i, "region"), "needs fleet.regions"))
        for i, _ in outages:
            out.append(Problem(("policies", i, "region"), "needs fleet.regions"))
        return out
    names = [r.name for r in f.regions]
    if len(set(names)) != len(names):
        out.append(Problem(("fleet", "regions"), "region names must be unique"))
    users = [r.name for r in user_regions(sc.demand)]
    where = "demand.seasonality.regions" if sc.demand.model == "viral" else "demand.regions"
    for i, p in enumerate(f.pools):
        if p.region is None:
            out.append(Problem(("fleet", "pools", i, "region"),
                               f"missing: with fleet.regions each pool is in one of {', '.join(names)}"))
        elif p.region not in names:
            out.append(Problem(("fleet", "pools", i, "region"), f"unknown region {p.region!r}"
                               f"{did_you_mean(p.region, names) or ';'} regions: {', '.join(names)}"))
    for j, r in enumerate(f.regions):
        for u in r.latency_s:
            if u not in users:
                out.append(Problem(("fleet", "regions", j, "latency_s", u),
                                   f"unknown users' region {u!r}{did_you_mean(u, users) or ';'} "
                                   f"{where}: {', '.join(users)}"))
        missing = [u for u in users if u not in r.latency_s]
        if missing:
            out.append(Problem(("fleet", "regions", j, "latency_s"),
                               f"no latency from {', '.join(missing)} ({where})"))
        own = [p for p in f.pools if p.region == r.name]
        if not own:
            out.append(Problem(("fleet", "regions", j), "no pool is in this region"))
        gpus = sum(p.gpus for p in own)
        if r.max_gpus is not None and gpus > r.max_gpus:
            out.append(Problem(("fleet", "regions", j, "max_gpus"),
                               f"its pools start with {gpus} GPUs, over its capacity"))
    for i, spec in outages:
        r = spec.params().get("region")
        if r not in names:
            out.append(Problem(("policies", i, "region"), f"unknown region {r!r}"
                               f"{did_you_mean(r, names) or ';'} regions: {', '.join(names)}"))
    return out


def cross_problems(tiers: list[Tier], specs: list[tuple[int, PolicySpec]],
                   demand: Any) -> list[Problem]:
    """The rules across sections: tier shares, and the tier names (and reasons) policies and
    demand refer to. `demand` may be None (its section did not validate)."""
    out = []
    total = sum(t.share for t in tiers)
    if abs(total - 1.0) > 1e-6:  # not normalised silently: 0.3 + 0.9 is a typo, not a mix
        out.append(Problem(("tiers",), f"shares must sum to 1 (they sum to {total:.6g})"))
    names = [t.name for t in tiers]
    out += policy_problems(specs, names)
    if demand is not None:
        out += demand_problems(demand, names)
    return out


_ADAPTERS: dict[str, TypeAdapter] = {}


def _section(kind: str, value: Any) -> Any:
    """One section validated alone, or None where it has problems (already reported)."""
    if kind not in _ADAPTERS:
        _ADAPTERS[kind] = TypeAdapter({"tiers": list[Tier], "policy": policy_union(),
                                       "demand": Demand}[kind])
    try:
        return _ADAPTERS[kind].validate_python(value)
    except ValidationError:
        return None


def _section_problems(data: dict) -> list[Problem]:
    """When the file has shape or type errors, the cross-section rules still run on the
    sections that are right (a misspelt key in one policy does not hide an unknown tier in
    another): `floodgate check` reports both at once."""
    tiers = _section("tiers", data.get("tiers"))
    if not tiers or len({t.name for t in tiers}) != len(tiers):
        return []
    pols = data.get("policies")
    specs = [(i, s) for i, p in enumerate(pols if isinstance(pols, list) else [])
             if (s := _section("policy", p)) is not None]
    return cross_problems(tiers, specs, _section("demand", data.get("demand")))


def input_error(source: str, p: Problem, nodes: Any = None, file_data: Any = None,
                data: Any = None) -> InputError:
    """A problem as the InputError the CLI prints, with the file's line:col when known. With
    `file_data` (what the file said) and `data` (after command-line overrides), a field the
    command line changed is not placed in the file: the file is not what is wrong there."""
    if file_data is not None and p.loc and _at(file_data, p.loc) != _at(data, p.loc):
        return InputError(source, p.field, f"{p.message} (as set on the command line)")
    pos = position(nodes, p.loc) if nodes is not None and p.loc else None
    return InputError(source, p.field, p.message, *(pos or (None, None)))


_MISSING = object()


def _at(d: Any, loc: tuple) -> Any:
    for part in loc:
        if isinstance(d, dict) and part in d:
            d = d[part]
        elif isinstance(d, list) and isinstance(part, int) and 0 <= part < len(d):
            d = d[part]
        else:
            return _MISSING
    return d


def parse_scenario(data: Any, source: str = "<scenario>", nodes: Any = None,
                   file_data: Any = None) -> Scenario:
    """A validated Scenario; the first problem is raised as an InputError (`floodgate check`
    lists them all). `nodes`: the YAML node tree the data came from, for line:col;
    `file_data`: the file's own data when the command line changed some of it."""
    sc, probs = scenario_problems(data)
    if probs:
        raise input_error(source, probs[0], nodes, file_data, data)
    sc.source = source
    from sim.classes import validate_classes

    validate_classes(sc)
    return sc


def load_scenario(path: str | Path, overrides: dict | None = None,
                  sets: list[str] | None = None) -> Scenario:
    """Read, merge overrides into, apply `--set PATH=VALUE` changes to, and validate a
    scenario file."""
    p = Path(path)
    data, nodes = read_yaml_nodes(p)
    original = copy.deepcopy(data) if overrides or sets else None  # apply_sets edits in place
    if overrides and isinstance(data, dict):
        data = merge(data, overrides)
    if sets:
        from sim.overrides import apply_sets

        data = apply_sets(data, sets)
    return parse_scenario(data, str(p), nodes, original)


def merge(base: Any, over: Any) -> Any:
    """Deep-merge `over` into `base`: mappings merge, everything else replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base.get(k), v) if k in base else v
        return out
    return over
