"""What the gateway records: the per-request JSONL log and Prometheus counters.

Times are simulated seconds. Each request gets one log line at its final outcome, written
and flushed at once, so nothing per request stays in memory after its response.
"""

from __future__ import annotations

import math
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
    if served:
        wait = req.start - req.arrival
    elif req.reason in ("timeout", "drain_timeout") and not math.isnan(req.done):
        wait = (req.start if started else req.done) - req.arrival  # time it spent queued
    else:
        wait = None
    return {
        "id": req.id, "attempt": req.attempt, "user": req.user, "tier": req.tier_name,
        "scheduled_t": req.scheduled_t, "arrival_s": _r(req.arrival),
        "start_s": _r(req.start) if started else None, "done_s": _r(req.done),
        "status": req.status, "reason": req.reason, "wait_s": _r(wait),
        "latency_s": _r(req.done - req.arrival) if served else None,
        "batch": req.batch or None, "steps": _steps(req),
        "pool": req.pool_name,
    }


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
    __slots__ = ("counts", "sum", "n")

    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.n = 0

    def add(self, x: float) -> None:
        i = 0
        while i < len(BUCKETS) and x > BUCKETS[i]:
            i += 1
        self.counts[i] += 1
        self.sum += x
        self.n += 1


def prom_value(v: float) -> str:
    """A sample value in the Prometheus text format: +Inf, -Inf and NaN spelled its way."""
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return f"{v:g}"


def _labels(**kw) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in kw.items()) + "}"


class Metrics:
    """Counters per tier and outcome, latency and wait histograms per tier."""

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

    def render(self, gauges: list[tuple[str, str, dict, float]]) -> str:
        """Prometheus text format; `gauges` are (name, help, labels, value)."""
        out = ["# HELP floodgate_requests_total Requests by tier and final outcome.",
               "# TYPE floodgate_requests_total counter"]
        for (t, o), n in self.outcomes.items():
            out.append(f"floodgate_requests_total{_labels(tier=t, outcome=o)} {n}")
        out += ["# HELP floodgate_admitted_total Requests admitted to a tier queue.",
                "# TYPE floodgate_admitted_total counter"]
        out += [f"floodgate_admitted_total{_labels(tier=t)} {n}" for t, n in self.admitted.items()]
        out += ["# HELP floodgate_unauthorized_total Requests with a missing or unknown API key.",
                "# TYPE floodgate_unauthorized_total counter",
                f"floodgate_unauthorized_total {self.unauthorized}"]
        for name, hists, what in (("floodgate_latency_seconds", self.latency, "End-to-end latency"),
                                  ("floodgate_wait_seconds", self.wait, "Queueing wait")):
            out += [f"# HELP {name} {what} of completed requests, simulated seconds.",
                    f"# TYPE {name} histogram"]
            for t, h in hists.items():
                cum = 0
                for le, c in zip((*BUCKETS, "+Inf"), h.counts, strict=True):
                    cum += c
                    out.append(f"{name}_bucket{_labels(tier=t, le=le)} {cum}")
                total = f"{h.sum:.6f}" if math.isfinite(h.sum) else prom_value(h.sum)
                out.append(f"{name}_sum{_labels(tier=t)} {total}")
                out.append(f"{name}_count{_labels(tier=t)} {h.n}")
        seen = set()
        for name, help_, labels, value in gauges:
            if name not in seen:
                seen.add(name)
                out += [f"# HELP {name} {help_}", f"# TYPE {name} gauge"]
            out.append(f"{name}{_labels(**labels) if labels else ''} {prom_value(value)}")
        return "\n".join(out) + "\n"
