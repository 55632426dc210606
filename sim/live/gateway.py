"""The live gateway: a FastAPI app running the scenario's policies on real requests.

`POST /v1/images` (Authorization: Bearer KEY, body {"id", "attempt", "scheduled_t"}):
the key gives user and tier (nothing else can); admission policies decide in scenario order
with the same objects as the simulator, then the simulator's own
fleet loop, driven on the wall clock (sim/live/workers.py), queues, batches and serves it;
gate and dynamics policies (concurrency, shedding, CoDel, AIMD, autoscale, failures...) act
on it through the same gates and SimPy processes as in the simulator. Answers: 200 with times; 429 for
limiter-side rejections (rate_limited, quota_exceeded), 503 for fleet-side ones (shed,
queue_full, timeout) and while draining, 403 for the content filter, 500 when a real batch
failed; 401 for a missing or unknown key. 429/503 carry Retry-After (wall seconds) and the
RateLimit-Policy / RateLimit fields of the policies the request met.
`GET /healthz`, `GET /metrics` (Prometheus text, or OpenMetrics when the Accept header asks).
At exit, gpus.json beside the request log holds the GPUs live per pool over time.
"""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim import rng
from sim.engine import apply_schedule, build_pools
from sim.jsonout import dumps
from sim.live.admission import (
    build_policies,
    concurrency_decision,
    ratelimit_fields,
)
from sim.live.headers import rejection_headers
from sim.live.http_guard import http_record, parse_body
from sim.live.keys import KeyTable
from sim.live.metrics import Metrics, RequestLog, exposition, log_record, registry
from sim.live.workers import LiveFleet, Req
from sim.outcomes import Reason as R
from sim.policies.dynamics import attach_spot
from sim.policies.pipeline import admit_one
from sim.policies.quota import DailyQuota
from sim.scenario import Scenario

JSON = "application/json"
# HTTP status of each final outcome (None: served): the one map from reasons to statuses.
# Limiter-side 429, fleet-side 503, the content filter 403 (retrying does not help), a
# failed real batch 500.
_HTTP = {R.RATE_LIMITED: 429, R.QUOTA_EXCEEDED: 429, R.FILTERED: 403, R.SHED: 503,
         R.QUEUE_FULL: 503, R.TIMEOUT: 503, R.DRAINING: 503, R.DRAIN_TIMEOUT: 503, R.ERROR: 500,
         R.LIMITER_UNAVAILABLE: 503}
STATUS: dict[str | None, int] = {None: 200, **{r.label: _HTTP[r] for r in R}}
MAX_USERS = 1 << 24  # per-user in-flight counts are kept for user ids below this
READY = "serving http://{host}:{port}"  # the line on stderr once accepting


def _r6(x: float) -> float:
    return round(x, 6)


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def _dumps(obj) -> bytes:
    return dumps(obj, separators=(",", ":")).encode()


class Gateway:
    """Admission, fleet, log and metrics of one server process (one event loop)."""

    def __init__(self, sc: Scenario, keys: KeyTable, log_path: str | Path, time_scale: float = 1.0,
                 max_queue: float | None = None, drain_timeout: float = 30.0, runner=None,
                 start_at: float | None = None, role: str = "gateway", procs=None):
        self.sc, self.keys, self.X = sc, keys, float(time_scale)
        # "gateway": admission and fleet in this process; "fleet": the fleet process behind
        # replicas (sim/live/replica.py), which did admission before forwarding
        self.role = role
        self.start_at = start_at  # unix time of sim t = 0 (None: when the server starts)
        self.tiers = [t.name for t in sc.tiers]
        self.pools = build_pools(sc)
        self.policies = build_policies(sc)
        # a fleet process behind replicas: they did admission before forwarding
        self.admission = ([lp.active for lp in self.policies if lp.kind == "admission"]
                          if role == "gateway" else [])
        self.live = {lp.active.spec_index: lp for lp in self.policies}  # for header names
        # brownout's nominal: the largest pool's steps (each pool serves its own; the fleet
        # loop lowers them per arrival while brownout's thresholds are met)
        self.steps = float(max(p.steps for p in sc.fleet.pools))
        self.max_queue = max_queue if max_queue is not None else default_max_queue(sc)
        self.drain_timeout = drain_timeout
        self.metrics = Metrics(self.tiers)
        self._registry = None  # prometheus_client's, made at the first scrape
        self.log = RequestLog(log_path)
        self.rng = rng.stream("gateway_noise", sc.seed)
        self.t0 = time.monotonic()
        users = min(MAX_USERS, 1 + max((who[0] for lst in keys.entries.values() for _, who in lst),
                                       default=0))
        self._timer: asyncio.TimerHandle | None = None
        self.fleet = LiveFleet(sc, self.pools, self.clock, self.final, users, self._arm,
                               self.max_queue, runner, procs, self.wall)
        self.procs = procs  # GPU worker processes (sim/live/gpu_worker.py), or None
        env = self.fleet.env
        for lp in self.policies:  # as Run.execute: every policy attaches to its host
            lp.active.policy.attach(self.fleet, env, lp.active)
        # spot GPUs preempted at their rate after a notice, as in Run.execute
        self.fleet.spot = attach_spot(self.fleet, env)
        for lp in self.policies:
            spec = self.sc.policies[lp.active.spec_index]
            if spec.schedule:
                env.process(apply_schedule(self.fleet, env, lp.active, spec))
        self.draining = False
        self.drain_deadline = math.inf
        self.http_inflight = 0
        self._tasks: list[asyncio.Task] = []
        self.on_drained = None  # called once the drain is over (the server then exits)

    def clock(self) -> float:
        """Simulated seconds since t = 0 (the server's start, or --start-at; 0 before it)."""
        return max(0.0, (time.monotonic() - self.t0) * self.X)

    def wall(self, t: float) -> float:
        """The unix time of simulated time t."""
        return time.time() + self.t0 + t / self.X - time.monotonic()

    # -- lifecycle --

    async def start(self) -> None:
        if self.procs is not None:
            await self.procs.start()
        self.t0 = time.monotonic()
        if self.start_at is not None:
            self.t0 += self.start_at - time.time()
        self.fleet.start()

    def _arm(self, t: float) -> None:
        """The fleet's one timer, at simulated time t (inf: none)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if t < math.inf:
            delay = self.t0 + t / self.X - time.monotonic()
            self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self.fleet.wake)

    def begin_drain(self) -> None:
        """SIGTERM: stop admitting, let the fleet finish, then call on_drained."""
        if self.draining:  # a second signal: end the drain now
            self.drain_deadline = time.monotonic()
            self.fleet.empty.set()  # wakes the drain waiting for it
            return
        self.draining = True
        self.drain_deadline = time.monotonic() + self.drain_timeout
        self._tasks.append(asyncio.get_running_loop().create_task(self._drain()))

    async def _drain(self) -> None:
        while self.fleet.in_system and time.monotonic() < self.drain_deadline:
            await self.fleet.wait_empty(self.drain_deadline - time.monotonic())
        self.fleet.abort("drain_timeout")
        self.log.flush()
        self.write_gpu_log()
        if self.procs is not None:
            await self.procs.close()
        if self.on_drained is not None:
            self.on_drained()

    async def stop(self) -> None:
        """Nothing accepted is lost: whatever is left is recorded as drain_timeout."""
        self.fleet.abort("drain_timeout")
        for t in self._tasks:
            t.cancel()
        self.log.close()
        self.write_gpu_log()
        if self.procs is not None:
            await self.procs.close()

    def write_gpu_log(self) -> None:
        """gpus.json beside the request log: [time, pool, GPUs live from then on], as the
        simulator's run records them (autoscaling, failures)."""
        path = self.log.path.with_name("gpus.json")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(dumps([[round(t, 6), self.pools[j].name, n]
                                   for t, j, n in self.fleet.gates.gpu_log]))
        tmp.replace(path)

    # -- requests --

    def log_http(self, status: int, reason: str, detail: str | None = None, who=None) -> None:
        """A request refused before admission (bad body, too large, too slow, too many)."""
        self.log.write(http_record(self.clock(), status, reason, detail, who))

    def final(self, req: Req) -> None:
        req.status = STATUS[req.reason]
        self.log.write(log_record(req))
        self.metrics.final(req)

    def _reject(self, req: Req, reason: str, retry_after: float | None, infos,
                rejected_by=None) -> tuple[int, bytes, dict]:
        """A request refused at admission: `infos` are the decisions of the policies it
        passed, `rejected_by` the (policy, decision) that refused it (None: the fleet)."""
        req.reason, req.done = reason, req.arrival
        self.final(req)
        wall = None
        if reason == "draining":
            wall = max(1, math.ceil(self.drain_deadline - time.monotonic()))
        headers = rejection_headers(req.status, retry_after, infos, self.X, rejected_by=rejected_by,
                                    fleet_quota=self.max_queue, retry_after_wall=wall)
        body = {"id": req.id, "reason": reason, "retry_after": retry_after}
        return req.status, _dumps(body), headers

    async def submit(self, user: int, tier: int, rid: int, attempt: int,
                     scheduled_t: float | None, origin: tuple[str, int, float] | None = None
                     ) -> tuple[int, bytes, dict]:
        """Admit, queue and serve one request: (status, JSON body, headers). `origin`:
        (replica, its request number, its arrival) of a request a replica forwards."""
        req = Req(rid, attempt, user, tier, self.tiers[tier], scheduled_t, self.clock())
        if origin is not None:
            req.replica, req.seq, req.hop = origin[0], origin[1], req.arrival - origin[2]
        if self.draining:
            return self._reject(req, "draining", None, [])
        req.noise, req.z = self.noise(rid, attempt, scheduled_t)
        out, infos = self.admit(req)
        if out is not None:
            return out
        await req.fut
        if req.reason is not None:  # timeout, drain_timeout or error after admission
            return self._reject_late(req, infos)
        a0 = req.arrival - req.hop
        body = {"id": req.id, "user": user, "tier": req.tier_name, "arrival_s": _r6(a0),
                "start_s": _r6(req.start), "done_s": _r6(req.done), "wait_s": _r6(req.start - a0),
                "latency_s": _r6(req.done - a0), "batch": req.batch,
                "steps": _num(req.served_steps), "degraded": req.served_steps < req.nominal}
        return 200, _dumps(body), ratelimit_fields(infos, self.X)

    def noise(self, rid: int, attempt: int, scheduled_t: float | None) -> tuple[float, float]:
        """A request's service noise (exponential, normal). One from a schedule (it carries
        scheduled_t: validation, Locust) gets its own, keyed by (id, attempt) as the
        simulator's replay of that schedule keys it (sim.rng.request_noise); any other the
        next draws of the gateway's stream, in arrival order."""
        if scheduled_t is None:
            return self.rng.exponential(), self.rng.standard_normal()
        e, z = rng.request_noise(self.sc.seed, rid, attempt)
        return float(e), float(z)

    def admit(self, req: Req) -> tuple[tuple[int, bytes, dict] | None, list]:
        """The admission pipeline at req.arrival, up to the fleet: (the answer of a rejected
        request, or None once it is queued: req.fut resolves at its outcome; the decisions
        of the policies it met, for the headers)."""
        now, user, tier = req.arrival, req.user, req.tier
        self.fleet.catch_up(now)  # policy processes and the fleet up to now
        rejected, met = admit_one(self.admission, now, user, tier)  # the simulator's rule
        infos: list = []
        for ap, d in met:
            if d.limit is None and isinstance(ap.policy, DailyQuota):
                d = ap.policy.left(user, now)
            if d is not None and d.limit is not None:
                infos.append((self.live[ap.spec_index], d))
        if rejected is not None:
            ap, d = rejected
            return self._reject(req, d.reason, d.retry_after, infos, (self.live[ap.spec_index], d)), infos
        req.nominal, req.steps = self.steps, math.inf  # a step cap: brownout lowers it inside
        req.fut = self._future()
        reason = self.fleet.arrive(req)
        if reason is not None:
            c = concurrency_decision(self.policies, tier) if reason == "rate_limited" else None
            return self._reject(req, reason, None, infos, c), infos
        self.metrics.admitted[self.tiers[tier]] += 1
        return None, infos

    def _future(self) -> asyncio.Future | None:
        try:
            return asyncio.get_running_loop().create_future()
        except RuntimeError:  # driven without an event loop (a fake clock)
            return None

    def _reject_late(self, req: Req, infos) -> tuple[int, bytes, dict]:
        headers = rejection_headers(req.status, None, infos, self.X, fleet_quota=self.max_queue)
        return req.status, _dumps({"id": req.id, "reason": req.reason, "retry_after": None}), headers

    # -- observability --

    def prometheus(self, accept: str = "") -> tuple[bytes, str]:
        """/metrics: (body, content type), read from the gateway's state at scrape time
        (sim/live/metrics.py: GatewayCollector)."""
        if self._registry is None:
            self._registry = registry(self)
        return exposition(self._registry, accept)


def default_max_queue(sc: Scenario) -> int:
    """The tiers' queue limits summed when every tier has one, else 10000."""
    lims = [t.queue_limit for t in sc.tiers]
    return sum(lims) if all(x is not None for x in lims) else 10000


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, key = header.partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


async def read_image_request(host, request: Request) -> Response | tuple[int, int, tuple]:
    """The front of POST /v1/images, on a gateway and on a replica alike: the caller's key
    (401 if unknown, counted) and its body (422 if refused, logged like every request);
    else (user, tier, the parsed body's fields) for `host.submit`."""
    who = host.keys.lookup(bearer(request.headers.get("authorization")))
    if who is None:
        host.metrics.unauthorized += 1
        return Response(_dumps({"detail": "unknown API key"}), 401, {"WWW-Authenticate": "Bearer"},
                        media_type=JSON)
    parsed = parse_body(await request.body())
    if isinstance(parsed, str):
        host.log_http(422, "invalid_body", parsed, (who[0], host.tiers[who[1]]))
        return Response(_dumps({"detail": parsed}), 422, media_type=JSON)
    return who[0], who[1], parsed


def create_app(gw: Gateway) -> FastAPI:
    """The HTTP surface of a gateway."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await gw.start()
        yield
        await gw.stop()

    app = FastAPI(title="floodgate gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    if gw.role == "fleet":
        _fleet_route(app, gw)
        _status_routes(app, gw)
        return app

    @app.post("/v1/images")
    async def images(request: Request) -> Response:
        got = await read_image_request(gw, request)
        if isinstance(got, Response):
            return got
        user, tier, parsed = got
        gw.http_inflight += 1
        try:
            status, body, headers = await gw.submit(user, tier, *parsed)
        finally:
            gw.http_inflight -= 1
        return Response(body, status, headers, media_type=JSON)

    _status_routes(app, gw)
    return app


class Forwarded(BaseModel):
    """The body of POST /fleet/v1/images: a request a replica admitted (loopback only)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    id: int
    attempt: int | None = Field(0, ge=0, le=10**6)
    scheduled_t: float | None = None
    user: int = Field(ge=0, le=2**31 - 1)
    tier: int = Field(ge=0, le=10**6)
    replica: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=0)
    t: float = Field(description="simulated time of its arrival at the replica")


def _fleet_route(app: FastAPI, gw: Gateway) -> None:
    @app.post("/fleet/v1/images")
    async def forwarded(request: Request) -> Response:
        try:
            f = Forwarded.model_validate_json(await request.body())
        except ValidationError as e:
            return Response(_dumps({"detail": str(e.errors()[0]["msg"])}), 422, media_type=JSON)
        if f.tier >= len(gw.tiers):
            return Response(_dumps({"detail": "unknown tier"}), 422, media_type=JSON)
        gw.http_inflight += 1
        try:
            status, body, headers = await gw.submit(f.user, f.tier, f.id, f.attempt, f.scheduled_t,
                                                    (f.replica, f.seq, f.t))
        finally:
            gw.http_inflight -= 1
        return Response(body, status, headers, media_type=JSON)


def _status_routes(app: FastAPI, gw: Gateway) -> None:
    @app.get("/healthz")
    async def healthz() -> Response:
        if gw.draining:
            return Response(_dumps({"status": "draining"}), 503, media_type=JSON)
        return Response(_dumps({"status": "ok"}), 200, media_type=JSON)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        body, content_type = gw.prometheus(request.headers.get("accept", ""))
        return Response(body, 200, headers={"Content-Type": content_type})


def freeze_heap() -> None:
    """Take what start-up built (numba, pandas, FastAPI, the scenario) out of the garbage
    collector's view: a full collection scanned it all, 0.1-0.5 s with the event loop
    stopped, and the requests arriving meanwhile were stamped late together (validate's
    arrival lag came in such bursts). What requests allocate later is still collected."""
    gc.collect()
    gc.freeze()


class GatewayServer(uvicorn.Server):
    """uvicorn, except that SIGTERM/SIGINT drain the gateway before it stops."""

    def __init__(self, config: uvicorn.Config, gw: Gateway, host: str):
        super().__init__(config)
        self.gw, self.host = gw, host
        self.loop: asyncio.AbstractEventLoop | None = None
        gw.on_drained = self._drained

    async def startup(self, sockets=None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        if self.started:
            freeze_heap()
            port = self.servers[0].sockets[0].getsockname()[1]
            print(READY.format(host=self.host, port=port), file=sys.stderr, flush=True)

    def _drained(self) -> None:
        self.should_exit = True

    def handle_exit(self, sig, frame) -> None:
        # Not uvicorn's own: that stops accepting at once and re-raises the signal at exit.
        if self.should_exit:
            self.force_exit = True
        elif self.loop is None or not self.started:
            self.should_exit = True
        else:  # a signal handler: hand over to the loop
            self.loop.call_soon_threadsafe(self.gw.begin_drain)
