"""What the gateway records: the per-request JSONL log, and counters that /metrics exposes
through prometheus_client (Prometheus text or OpenMetrics).

Times are simulated seconds. Each request gets one log line at its final outcome, written
and flushed at once, so nothing per request stays in memory after its response.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING

from sim.jsonout import dumps
from sim.outcomes import Reason

if TYPE_CHECKING:
    from sim.live.workers import Req

OUTCOMES = ("completed", *[r.label for r in Reason])
BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 90, 120, 300, 600, 1800)  # sim seconds


def _r(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 6)


def _steps(req: Req) -> int | float | None:
    """Steps its batch ran (None: never started)."""
    s = req.served_steps
    if math.isnan(s):
        return None
    return int(s) if float(s).is_integer() else s


def log_record(req: Req) -> dict:
    """The JSONL line of a request at its final outcome."""
    served = req.reason is None
    started = not math.isnan(req.start)
    a0 = req.arrival - req.hop  # a forwarded request arrived at its replica a hop earlier
    if served:
        wait = req.start - a0
    elif req.reason in ("timeout", "drain_timeout") and not math.isnan(req.done):
        wait = (req.start if started else req.done) - a0  # time it spent queued
    else:
        wait = None
    rec = {
        "id": req.id, "attempt": req.attempt, "user": req.user, "tier": req.tier_name,
        "scheduled_t": req.scheduled_t, "arrival_s": _r(a0),
        "start_s": _r(req.start) if started else None, "done_s": _r(req.done),
        "status": req.status, "reason": req.reason, "wait_s": _r(wait),
        "latency_s": _r(req.done - a0) if served else None,
        "batch": req.batch or None, "steps": _steps(req),
        "pool": req.pool_name,
    }
    if req.replica is not None:
        rec.update(replica=req.replica, seq=req.seq, hop_s=_r(req.hop))
    if req.fault is not None:  # its batch died with a GPU worker process (sim/live/gpu_worker.py)
        rec.update(fault=req.fault, requeued=req.requeued)
    return rec


class RequestLog:
    """Append-only JSONL file, one flushed line per request (a restart appends)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "a")  # a restarted gateway adds to its log, never truncates
        self.lines = 0

    def write(self, rec: dict) -> None:
        self.f.write(dumps(rec, separators=(",", ":")) + "\n")
        self.f.flush()
        self.lines += 1

    def flush(self) -> None:
        if not self.f.closed:
            self.f.flush()

    def close(self) -> None:
        if not self.f.closed:
            self.f.flush()
            self.f.close()


class _Hist:
    """Bucket counts of one histogram (not cumulative; the collector adds them up)."""

    __slots__ = ("counts", "sum", "n")

    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.n = 0

    def add(self, x: float) -> None:
        self.counts[bisect_left(BUCKETS, x)] += 1  # the first bucket with x <= le
        self.sum += x
        self.n += 1


class Metrics:
    """Counters per tier and outcome, latency and wait histograms per tier: plain integers
    bumped on the request path; prometheus_client reads them only when scraped."""

    def __init__(self, tiers: list[str]):
        self.tiers = tiers
        self.outcomes = {(t, o): 0 for t in tiers for o in OUTCOMES}
        self.admitted = dict.fromkeys(tiers, 0)
        self.unauthorized = 0
        self.latency = {t: _Hist() for t in tiers}
        self.wait = {t: _Hist() for t in tiers}

    def final(self, req: Req) -> None:
        t = req.tier_name
        self.outcomes[(t, req.reason or "completed")] += 1
        if req.reason is None:
            self.latency[t].add(req.done - req.arrival)
            self.wait[t].add(req.start - req.arrival)


class GatewayCollector:
    """A prometheus_client Collector over a gateway's own state (its Metrics, its fleet):
    families are built at scrape time, one family's samples together whatever the number of
    pools or tiers, label values escaped by the exposition code, counters typed as counters.
    `gw` is a sim.live.gateway.Gateway (read: metrics, fleet, tiers, pools, clock, X,
    http_inflight, draining)."""

    def __init__(self, gw):
        self.gw = gw

    def describe(self):
        return []  # names come from collect(); nothing to check at registration

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        gw = self.gw
        m, f = gw.metrics, gw.fleet
        gates, S = f.gates, f.fleet.S
        c = CounterMetricFamily("floodgate_requests", "Requests by tier and final outcome.",
                                labels=["tier", "outcome"])
        for (t, o), n in m.outcomes.items():
            c.add_metric([t, o], n)
        yield c
        c = CounterMetricFamily("floodgate_admitted", "Requests admitted to a tier queue.",
                                labels=["tier"])
        for t, n in m.admitted.items():
            c.add_metric([t], n)
        yield c
        yield CounterMetricFamily("floodgate_unauthorized",
                                  "Requests with a missing or unknown API key.", m.unauthorized)
        les = [floatToGoString(b) for b in BUCKETS] + ["+Inf"]
        for name, hists, what in (("floodgate_latency_seconds", m.latency, "End-to-end latency"),
                                  ("floodgate_wait_seconds", m.wait, "Queueing wait")):
            h = HistogramMetricFamily(name, f"{what} of completed requests, simulated seconds.",
                                      labels=["tier"])
            for t, x in hists.items():
                h.add_metric([t], list(zip(les, accumulate(x.counts), strict=True)), x.sum)
            yield h

        def per(cls, name, help_, label, values):
            fam = cls(name, help_, labels=[label])
            for k, v in values:
                fam.add_metric([k], v)
            return fam

        tiers, pools = list(enumerate(gw.tiers)), list(enumerate(gw.pools))
        yield per(GaugeMetricFamily, "floodgate_queue_depth", "Requests waiting, per tier.",
                  "tier", [(t, int(S.q_size[k])) for k, t in tiers])
        yield per(GaugeMetricFamily, "floodgate_in_system",
                  "Admitted requests queued or in service, per tier.", "tier",
                  [(t, int(S.n_sys[k])) for k, t in tiers])
        yield per(GaugeMetricFamily, "floodgate_workers_busy", "GPU workers running a batch.",
                  "pool", [(p.name, gates.busy(j)) for j, p in pools])
        yield per(GaugeMetricFamily, "floodgate_workers", "GPU workers.", "pool",
                  [(p.name, gates.gpus(j)) for j, p in pools])
        spot = {sp.j: sp for sp in f.spot}
        yield per(CounterMetricFamily, "floodgate_spot_preemptions",
                  "Spot preemption notices (the GPU leaves after the notice period).", "pool",
                  [(p.name, len(spot[j].notices) if j in spot else 0) for j, p in pools])
        yield per(CounterMetricFamily, "floodgate_batches", "Batches started.", "pool",
                  [(p.name, int(f.batches[j])) for j, p in pools])
        yield per(CounterMetricFamily, "floodgate_batched_requests",
                  "Requests in started batches.", "pool",
                  [(p.name, int(f.batched[j])) for j, p in pools])
        for name, help_, v in (
                ("floodgate_inflight", "Admitted requests not finished.", f.in_system),
                ("floodgate_http_inflight", "HTTP requests being handled.", gw.http_inflight),
                ("floodgate_utilization", "Busy share of the GPU workers.", f.view()["utilization"]),
                ("floodgate_sim_time_seconds", "Simulated time since start.", gw.clock()),
                ("floodgate_time_scale", "Simulated seconds per wall second.", gw.X),
                ("floodgate_draining", "1 while draining.", int(gw.draining))):
            yield GaugeMetricFamily(name, help_, value=float(v))


def registry(gw):
    """A registry of its own for one gateway (not the process-global one)."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(GatewayCollector(gw))
    return reg


def exposition(reg, accept: str = "") -> tuple[bytes, str]:
    """(body, content type): OpenMetrics when the scraper asks for it, else Prometheus text."""
    from prometheus_client.exposition import choose_encoder

    encode, content_type = choose_encoder(accept)
    return encode(reg), content_type
