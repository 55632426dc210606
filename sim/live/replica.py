"""Gateway replicas: stateless admission in front of one fleet process.

Topology (`floodgate serve --replicas N`, or processes started by hand with `--role`):

    clients --> replica 0..N-1 --(loopback HTTP)--> fleet process --> GPU worker processes
                                                                     (--gpu-procs K)
                     |
                     +--> limiter store (Redis: shared; in memory: each replica its own)

A replica holds no queue and no batch: it authenticates the key, runs the scenario's
admission policies (limiters, quotas, the content filter) against the limiter store
(sim/live/store.py) with the one admission pipeline (sim/policies/pipeline.py:admit_one), and
forwards what it admits to the fleet process (`floodgate serve --role fleet`), which is the
single-process gateway with its admission turned off: the simulator's own fleet loop, its
gates (concurrency, shedding, CoDel, brownout) and dynamics (autoscale, failures). Why one
fleet rather than one per cell: the fleet's queues, priorities and batches are one state
machine that must see every request to order them (a paid request overtakes queued free
ones; batches fill across users); split by user hash into cells, each cell's GPUs would sit
idle while another's queue grows. Admission is the part that scales out, and the part whose
state must be shared (a per-user limit enforced by N replicas with their own counts lets
up to N times through: `limiter_state: per_replica` in the simulator predicts by how much).
The price is one loopback hop per admitted request, measured (`hop_s` in the fleet's log)
and a scenario parameter (`gateway.hop_latency_s`).

Records: the fleet's JSONL has one line per forwarded request at its final outcome (with
`replica`, `seq`, `hop_s`); a replica's JSONL has one line per request it answered itself
(rejected at admission, draining, the fleet unreachable) and one `"event": "admitted"` line
per request it forwards, written before it forwards it: so every request a replica accepted
can be matched with its final outcome in the fleet's log (`reconcile`), even when the
replica is killed. When the limiter store is unreachable the replica's `store_failure`
mode decides: `fail_open` admits without a check (counted, and marked `unchecked` in the
log), `fail_closed` answers 503 `limiter_unavailable` with Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.parse
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import simpy
from fastapi import FastAPI, Request
from fastapi.responses import Response

from sim.engine import apply_schedule
from sim.errors import InputError
from sim.jsonout import dumps
from sim.live.admission import build_policies, concurrency_decision, ratelimit_fields
from sim.live.gateway import STATUS, read_image_request
from sim.live.headers import rejection_headers
from sim.live.http_guard import http_record
from sim.live.keys import KeyTable
from sim.live.metrics import Metrics, RequestLog, log_record
from sim.live.store import LimiterStore, open_store
from sim.live.workers import Req
from sim.outcomes import Reason as R
from sim.policies.pipeline import admit_one
from sim.policies.screening import Shadow
from sim.policies.shedding import ShedReserve
from sim.scenario import Scenario

JSON = "application/json"
MAX_SAMPLES = 1_000_000  # store-call timings kept for the percentiles
STORE_RETRY_S = 1.0  # wall seconds a client is told to wait while the store is down (fail_closed)


def check_replicable(sc: Scenario) -> None:
    """Admission policies that read the fleet's state cannot run in a replica."""
    for i, lp in enumerate(build_policies(sc)):
        pol = lp.active.policy
        if isinstance(pol, Shadow) and isinstance(pol.inner, ShedReserve):
            raise InputError(sc.source, f"policies[{i}]", "a shadow of shed_reserve reads the "
                             "fleet's state: it cannot run in a replica (serve without --replicas)")


class Replica:
    """One replica: admission against its limiter store (`store_url`: Redis, shared; None:
    in memory, its own), then the fleet process at `fleet_url`."""

    def __init__(self, sc: Scenario, keys: KeyTable, log_path: str | Path, fleet_url: str,
                 store_url: str | None = None, name: str = "r0", time_scale: float = 1.0,
                 start_at: float | None = None, drain_timeout: float = 30.0,
                 store_failure: str = "fail_open"):
        self.status_of = STATUS
        self.sc, self.keys, self.X, self.name = sc, keys, float(time_scale), name
        self.tiers = [t.name for t in sc.tiers]
        self.policies = build_policies(sc)
        self.admission = [lp.active for lp in self.policies if lp.kind == "admission"]
        self.live = {lp.active.spec_index: lp for lp in self.policies}  # for header names
        # the store decides for the replica's own policy objects (in memory) or shares their
        # state in Redis; schedules reconfigure these objects either way
        self.store: LimiterStore = open_store(
            store_url, {self.live[ap.spec_index].header: ap.policy for ap in self.admission})
        self.store_failure, self.store_url = store_failure, store_url
        self.fleet_url = fleet_url.rstrip("/")
        self.start_at, self.drain_timeout = start_at, drain_timeout
        self.t0 = time.monotonic()
        self.log = RequestLog(log_path)
        self.metrics = Metrics(self.tiers)
        self.seq = 0
        self.inflight = 0
        self.draining = False
        self.drain_deadline = math.inf
        self.idle = asyncio.Event()
        self.idle.set()
        self.counts: Counter = Counter()  # admitted, unchecked, store_errors, fleet_errors
        self.store_s: list[float] = []  # wall seconds of each limiter store call that answered
        self.on_drained = None
        self.client: FleetClient | None = None
        self._tasks: list[asyncio.Task] = []
        # the admission policies' schedules (a quota switched on at hour 36) on a SimPy
        # environment stepped on the wall clock, as the fleet process steps its own
        self.env = simpy.Environment()
        self.gates = None  # a replica has no fleet: nothing it runs may need one
        self.pools = []
        for ap in self.admission:
            ap.policy.attach(self, self.env, ap)
            spec = sc.policies[ap.spec_index]
            if spec.schedule:
                self.env.process(apply_schedule(self, self.env, ap, spec))

    # -- the host interface of the admission policies' schedules --

    def sync(self, now: float) -> None:
        """Nothing to bring up to date: a replica's state is its store."""

    def clock(self) -> float:
        return max(0.0, (time.monotonic() - self.t0) * self.X)

    async def start(self) -> None:
        self.t0 = time.monotonic()
        if self.start_at is not None:
            self.t0 += self.start_at - time.time()
        # one connection per request in flight: the fleet answers when the request is done
        self.client = FleetClient(self.fleet_url)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.client is not None:
            await self.client.aclose()
        self.store.close()
        self.log.close()
        self.write_counts()

    def write_counts(self) -> None:
        """<log stem>.counts.json beside the log: what this replica admitted, how, and its
        limiter store's call times."""
        path = self.log.path.with_name(f"{self.log.path.stem}.counts.json")
        tmp = path.with_name(path.name + ".tmp")
        q = ([round(float(x) * 1e3, 4) for x in np.quantile(self.store_s, [0.5, 0.99])]
             if self.store_s else [None, None])
        tmp.write_text(dumps({"replica": self.name, **dict(self.counts),
                              "store": "redis" if self.store_url else "memory",
                              "store_calls": len(self.store_s),
                              "store_p50_ms": q[0], "store_p99_ms": q[1]}))
        tmp.replace(path)

    def begin_drain(self) -> None:
        if self.draining:
            self.drain_deadline = time.monotonic()
            self.idle.set()
            return
        self.draining = True
        self.drain_deadline = time.monotonic() + self.drain_timeout
        self._tasks.append(asyncio.get_running_loop().create_task(self._drain()))

    async def _drain(self) -> None:
        while self.inflight and time.monotonic() < self.drain_deadline:
            self.idle.clear()
            try:
                await asyncio.wait_for(self.idle.wait(), self.drain_deadline - time.monotonic())
            except TimeoutError:
                break
        self.log.flush()
        if self.on_drained is not None:
            self.on_drained()

    # -- requests --

    def _decide(self, ap, now: float, user: int, tier: int):
        t = time.perf_counter()
        try:
            d = self.store.admit(self.live[ap.spec_index].header, now, user, tier)
            if len(self.store_s) < MAX_SAMPLES:
                self.store_s.append(time.perf_counter() - t)
            return d
        except Exception as e:  # the store is down or unreachable: the configured mode decides
            self.counts["store_errors"] += 1
            self.counts[f"store_error:{type(e).__name__}"] += 1
            raise _StoreDown() from e

    def _answer(self, req: Req, reason: str | None, retry_after, infos, rejected_by=None,
                wall: int | None = None) -> tuple[int, bytes, dict]:
        req.reason, req.done = reason, req.arrival
        req.status = self.status_of[reason]
        self.log.write({**log_record(req), "replica": self.name, "seq": req.seq})
        self.metrics.final(req)
        headers = rejection_headers(req.status, retry_after, infos, self.X, rejected_by=rejected_by,
                                    retry_after_wall=wall)
        return req.status, _dumps({"id": req.id, "reason": reason, "retry_after": retry_after}), headers

    async def submit(self, user: int, tier: int, rid: int, attempt: int,
                     scheduled_t: float | None) -> tuple[int, bytes, dict]:
        now = self.clock()
        req = Req(rid, attempt, user, tier, self.tiers[tier], scheduled_t, now)
        req.seq, self.seq = self.seq, self.seq + 1
        if self.draining:
            wall = max(1, math.ceil(self.drain_deadline - time.monotonic()))
            return self._answer(req, R.DRAINING.label, None, [], wall=wall)
        while self.env.peek() <= now:  # policy schedules due by now
            self.env.step()
        unchecked = False
        try:
            no, met = admit_one(self.admission, now, user, tier, self._decide)
            infos = [(self.live[ap.spec_index], d) for ap, d in met if d.limit is not None]
            if no is not None:
                no = (self.live[no[0].spec_index], no[1])
        except _StoreDown:
            if self.store_failure == "fail_closed":
                return self._answer(req, R.LIMITER_UNAVAILABLE.label, None, [],
                                    wall=math.ceil(STORE_RETRY_S))
            no, infos, unchecked = None, [], True  # fail_open: admitted without a check
            self.counts["unchecked"] += 1
        if no is not None:
            return self._answer(req, no[1].reason, no[1].retry_after, infos, no)
        self.counts["admitted"] += 1
        rec = {"event": "admitted", "replica": self.name, "seq": req.seq, "id": rid,
               "attempt": attempt, "user": user, "tier": req.tier_name, "arrival_s": round(now, 6)}
        if unchecked:
            rec["unchecked"] = True
        self.log.write(rec)  # flushed before the fleet hears of it: a kill cannot hide it
        self.inflight += 1
        try:
            return await self._forward(req, infos)
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self.idle.set()

    async def _forward(self, req: Req, infos) -> tuple[int, bytes, dict]:
        body = {"id": req.id, "attempt": req.attempt, "scheduled_t": req.scheduled_t,
                "user": req.user, "tier": req.tier, "replica": self.name, "seq": req.seq,
                "t": req.arrival}
        try:
            status, rh, content = await self.client.post("/fleet/v1/images", _dumps(body))
        except FleetUnreachable as e:  # the fleet is down: answered here, with a reason
            self.counts["fleet_errors"] += 1
            req.reason = R.ERROR.label
            return self._fleet_error(req, infos, str(e))
        try:
            data = json.loads(content)
        except ValueError:
            data = {}
        if status != 200 and "reason" not in data:  # not an outcome: the fleet refused the hop
            self.counts["fleet_errors"] += 1
            req.reason = R.ERROR.label
            return self._fleet_error(req, infos, f"status {status}: {content[:200]!r}")
        self.metrics.outcomes[(req.tier_name, data.get("reason") or "completed")] += 1
        if status == 200:
            return 200, content, ratelimit_fields(infos, self.X)
        reason = data.get("reason")
        c = concurrency_decision(self.policies, req.tier) if reason == "rate_limited" else None
        wall = None
        if reason == "draining" and rh.get("retry-after"):
            wall = int(rh["retry-after"])
        headers = rejection_headers(status, data.get("retry_after"), infos, self.X, rejected_by=c,
                                    retry_after_wall=wall)
        return status, content, headers

    def _fleet_error(self, req: Req, infos, what: str) -> tuple[int, bytes, dict]:
        req.done, req.status = self.clock(), self.status_of[R.ERROR.label]
        self.log.write({**log_record(req), "replica": self.name, "seq": req.seq,
                        "detail": f"fleet unreachable: {what}"})
        return req.status, _dumps({"id": req.id, "reason": req.reason, "retry_after": None}), {}

    def log_http(self, status: int, reason: str, detail: str | None = None, who=None) -> None:
        """A request refused before admission (bad body, too large, too slow, too many)."""
        self.log.write({**http_record(self.clock(), status, reason, detail, who),
                        "replica": self.name})

    # -- observability --

    def prometheus(self) -> str:
        g = [("floodgate_replica_inflight", "Requests forwarded to the fleet, not answered.", {},
              self.inflight),
             ("floodgate_replica_unchecked", "Requests admitted without a limit check (store down).",
              {}, self.counts["unchecked"]),
             ("floodgate_replica_store_errors", "Limiter store calls that failed.", {},
              self.counts["store_errors"]),
             ("floodgate_draining", "1 while draining.", {}, int(self.draining))]
        return self.metrics.render(g)


class _StoreDown(Exception):
    pass


class FleetUnreachable(Exception):
    pass


class FleetClient:
    """HTTP/1.1 POSTs to the fleet process over a pool of keep-alive loopback connections.

    Each forwarded request holds a connection until the fleet answers (when the request is
    done), so hundreds are open at once; a general client's pool bookkeeping (httpx scans
    its connections per request) cost seconds of hop at validation_small's peak on two
    cores, this costs a list pop. A reused connection the fleet closed while idle (EOF
    before any byte of the answer) is retried once on a fresh one: the fleet never read it."""

    def __init__(self, url: str):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.closed = False

    async def post(self, path: str, body: bytes, headers: dict[str, str] | None = None
                   ) -> tuple[int, dict[str, str], bytes]:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{extra}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        for fresh in (False, True):
            reused = bool(self.idle) and not fresh
            try:
                conn = self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
            except OSError as e:
                raise FleetUnreachable(type(e).__name__) from None
            r, w = conn
            try:
                w.write(head + body)
                await w.drain()
                line = await r.readline()
                if not line:
                    raise ConnectionResetError("closed before answering")
                status = int(line.split()[1])
                headers: dict[str, str] = {}
                while True:
                    h = await r.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                data = await r.readexactly(int(headers.get("content-length", "0")))
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                w.close()
                if reused and isinstance(e, ConnectionResetError | BrokenPipeError):
                    continue  # closed while idle: the fleet never read this request
                raise FleetUnreachable(type(e).__name__) from None
            if headers.get("connection", "").lower() == "close" or self.closed:
                w.close()
            else:
                self.idle.append(conn)
            return status, headers, data
        raise FleetUnreachable("no connection")

    async def aclose(self) -> None:
        self.closed = True
        for _, w in self.idle:
            w.close()
        self.idle.clear()


def _dumps(obj) -> bytes:
    return dumps(obj, separators=(",", ":")).encode()


def create_replica_app(rp: Replica):
    """The HTTP surface of a replica: the single gateway's, minus the fleet."""
    @asynccontextmanager
    async def lifespan(app):
        await rp.start()
        yield
        await rp.stop()

    app = FastAPI(title="floodgate replica", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.post("/v1/images")
    async def images(request: Request) -> Response:
        got = await read_image_request(rp, request)
        if isinstance(got, Response):
            return got
        user, tier, parsed = got
        status, body, headers = await rp.submit(user, tier, *parsed)
        return Response(body, status, headers, media_type=JSON)

    @app.get("/healthz")
    async def healthz() -> Response:
        if rp.draining:
            return Response(_dumps({"status": "draining"}), 503, media_type=JSON)
        return Response(_dumps({"status": "ok", "replica": rp.name}), 200, media_type=JSON)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(rp.prometheus(), 200, media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


# ---- reconciling the logs of a deployment ----


def read_jsonl(path: Path) -> list[dict]:
    """The complete lines of a JSONL log (a line cut short by a kill is not a record)."""
    out = []
    with open(path) as f:
        for line in f:
            if line.endswith("\n"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def reconcile(fleet_log: Path, replica_logs: list[Path]) -> dict:
    """Every request a replica admitted, matched with its final outcome in the fleet's log.

    accepted: admitted lines in the replicas' logs; accepted_lost: those with no final
    outcome anywhere (neither the fleet's log nor the replica's own, for a fleet that could
    not be reached); outcomes: the final outcomes of the accepted requests, by reason."""
    final: dict[tuple[str, int], dict] = {}
    for rec in read_jsonl(fleet_log) if fleet_log.exists() else []:  # a fleet that never ran
        if rec.get("replica") is not None:
            final[(rec["replica"], rec["seq"])] = rec
    admitted, unchecked = [], 0
    for p in replica_logs:
        if not p.exists():
            continue
        for rec in read_jsonl(p):
            key = (rec.get("replica"), rec.get("seq"))
            if rec.get("event") == "admitted":
                admitted.append(key)
                unchecked += bool(rec.get("unchecked"))
            elif rec.get("reason") == "error" and key not in final:
                final[key] = rec  # the fleet could not be reached: answered by the replica
    lost = [k for k in admitted if k not in final]
    outcomes = Counter((final[k].get("reason") or "completed") for k in admitted if k in final)
    return {"accepted": len(admitted), "accepted_lost": len(lost), "unchecked": unchecked,
            "outcomes": dict(sorted(outcomes.items())), "lost_examples": lost[:5]}
