"""Open-loop replay of a schedule against the gateway (run by `floodgate validate`, always in
its own Locust process: `import locust` monkey-patches with gevent).

One dispatcher user sleeps until each scheduled time (t / time_scale wall seconds after a
common start) and spawns a greenlet per request, so a slow answer never delays the next
request (no coordinated omission). 429, 503 and the content filter's 403 are expected
answers, marked as successes; 429 and 503 are retried by the simulator's own rule, called
here (sim/demand/feedback.py: `Retry.after_reject` on a one-request batch: attempts,
reasons, probability, backoff, the body's retry_after in simulated seconds honoured where
the gateway gives one, which is where the simulator has one: admission policies, not the
fleet loop; a timed-out request retried from when the user gave up; its draws keyed by the
request's schedule id and attempt, as the simulator's replay keys them). One JSONL record
per attempt, written as soon as it ends.

Environment: FG_SCHEDULE (CSV id,t,user,tier), FG_OUT (JSONL), FG_TIME_SCALE, FG_HORIZON
(sim s: no attempt is sent at or after it), FG_DRAIN (wall s to wait for answers after the
last send), FG_RETRY (JSON of the scenario's demand.retry, or empty), FG_TIERS (JSON
[[name, patience_s or null], ...] of the scenario's tiers), FG_SEED,
FG_CONCURRENCY (connection pool size), FG_LEAD (wall s from start-up to t = 0) or FG_START_AT
(unix time of t = 0, the gateway's too), FG_HOSTS (comma-separated gateway replicas: each
attempt goes to the next one, round robin, as a load balancer without stickiness sends it;
default: Locust's --host).

Distributed (`floodgate validate --locust-workers K`, when one process cannot hold the send
rate): a master (`--master --expect-workers K`, one Dispatcher per worker) and K worker
processes, worker i with FG_PART=i/K replaying the requests of the users with user % K == i
(a user's requests and retries stay in one process, in their order) into its own FG_OUT;
each tells the master when its part is done ("fg_done"), the master quits once all have.
"""

from __future__ import annotations

import csv
import gc
import json
import math
import os
import time
import traceback
from types import SimpleNamespace

import gevent
import numpy as np
from gevent.pool import Group
from locust import constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

from sim import rng
from sim.demand.base import Arrivals
from sim.demand.feedback import Retry
from sim.jsonout import dumps
from sim.live.schedule import user_key
from sim.outcomes import REASONS
from sim.scenario import RetrySpec

ENV = os.environ
X = float(ENV.get("FG_TIME_SCALE", "1"))
HORIZON = float(ENV.get("FG_HORIZON", "inf"))
DRAIN = float(ENV.get("FG_DRAIN", "30"))
LEAD = float(ENV.get("FG_LEAD", "0.5"))
PART = ENV.get("FG_PART")  # "i/K": this worker's share of the users (distributed mode)
DONE_MSG = "fg_done"
_dispatchers = [0]  # Dispatchers started in this process: one replays the whole part


def part_of(part: str | None) -> tuple[int, int]:
    """(i, K) of FG_PART "i/K"; (0, 1) without one."""
    if not part:
        return 0, 1
    i, k = (int(x) for x in part.split("/"))
    if not 0 <= i < k:
        raise ValueError(f"FG_PART {part!r}: expected i/K with 0 <= i < K")
    return i, k


@events.init.add_listener
def _on_init(environment, **kw) -> None:
    from locust.runners import MasterRunner

    runner = environment.runner
    if isinstance(runner, MasterRunner):  # quit once every worker replayed its part
        done: set = set()
        want = environment.parsed_options.expect_workers if environment.parsed_options else 1

        def on_done(environment, msg, **kw) -> None:
            done.add(msg.data)
            if len(done) >= want:
                gevent.spawn_later(0.1, runner.quit)

        runner.register_message(DONE_MSG, on_done)


class FixedTiers:
    """A validation key's tier never changes (conversion is refused): the retry keeps it."""

    @staticmethod
    def tier_now(user, tier):
        return tier


def load_schedule(path: str) -> list[tuple[int, float, int, str]]:
    with open(path, newline="") as f:
        return [(int(r["id"]), float(r["t"]), int(r["user"]), r["tier"]) for r in csv.DictReader(f)]


class Dispatcher(FastHttpUser):
    """Replays the whole schedule once, then stops Locust."""

    wait_time = constant(0)
    concurrency = int(ENV.get("FG_CONCURRENCY", "1024"))
    network_timeout = DRAIN + 600.0  # a request is never cut short by the client
    connection_timeout = 30.0

    def on_start(self) -> None:
        try:
            self._setup()
        except Exception:  # stop at once with a code of our own, not at --run-time
            traceback.print_exc()
            self.environment.process_exit_code = 3
            gevent.spawn_later(0.1, self._finish)
            raise StopUser() from None

    def _setup(self) -> None:
        _dispatchers[0] += 1
        if _dispatchers[0] > 1:  # a part replayed twice would send its requests twice
            raise RuntimeError("a second Dispatcher in one Locust process: -u must equal the workers")
        i, k = part_of(PART)
        self.part = f"{i}/{k}"
        self.schedule = [r for r in load_schedule(ENV["FG_SCHEDULE"]) if r[2] % k == i]
        spec = ENV.get("FG_RETRY", "")
        tiers = json.loads(ENV.get("FG_TIERS", "[]"))
        self.tier_index = {name: k for k, (name, _) in enumerate(tiers)}
        self.retry = (Retry(RetrySpec.model_validate_json(spec), FixedTiers(),
                            [SimpleNamespace(patience_s=p) for _, p in tiers],
                            seed=int(ENV.get("FG_SEED", "0"))) if spec else None)
        if self.retry is not None:
            rng.warm()  # before t = 0: the first retry's draw must not hold up the sends
        self.rng = np.random.default_rng(int(ENV.get("FG_SEED", "0")))
        self.out = open(ENV["FG_OUT"], "w", buffering=1)  # noqa: SIM115 (closed in on_stop)
        self.inflight: dict[tuple[int, int], dict] = {}
        hosts = [h for h in ENV.get("FG_HOSTS", "").split(",") if h]
        self.urls = [h.rstrip("/") + "/v1/images" for h in hosts] or ["/v1/images"]
        self.rr = 0
        self.tasks_in_flight = Group()
        # start-up's objects (locust, gevent, numpy, the schedule) out of the collector's
        # view: a full collection scanning them stopped every greenlet for ~0.2 s on a busy
        # machine, and the sends due meanwhile went out late, together
        gc.collect()
        gc.freeze()

    def on_stop(self) -> None:
        if not hasattr(self, "out"):
            return  # set-up failed
        for rec in list(self.inflight.values()):  # cut off by the deadline: no answer
            self._write({**rec, "status": None, "reason": "unanswered"})
        self.inflight.clear()
        self.out.close()

    def _write(self, rec: dict) -> None:
        self.out.write(dumps(rec) + "\n")

    @task
    def replay(self) -> None:
        at = ENV.get("FG_START_AT")  # unix time of t = 0, shared with the gateway
        self.start = time.monotonic() + (float(at) - time.time() if at else LEAD)
        for rid, t, user, tier in self.schedule:
            if t >= HORIZON:
                break
            self._sleep_until(t)
            self.tasks_in_flight.spawn(self._send, rid, 0, t, user, tier)
        # retries may be due up to the horizon; then DRAIN for the last answers (join returns
        # as soon as nothing is left in flight)
        t_end = HORIZON if math.isfinite(HORIZON) else (self.schedule[-1][1] if self.schedule else 0)
        self.tasks_in_flight.join(timeout=max(0.0, self.start + t_end / X - time.monotonic()) + DRAIN)
        self.tasks_in_flight.kill(block=True, timeout=5)
        # the run is over: stop this user (so --stop-timeout has nothing to wait for), then Locust
        gevent.spawn_later(0.1, self._finish)
        raise StopUser()

    def _finish(self) -> None:
        """Alone: Locust quits. A worker tells the master its part is done (the master quits
        all once each has; a worker quitting by itself would have its user moved to another)."""
        from locust.runners import WorkerRunner

        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            runner.send_message(DONE_MSG, getattr(self, "part", PART))
        else:
            runner.quit()

    def _sleep_until(self, t: float) -> None:
        d = self.start + t / X - time.monotonic()
        if d > 0:
            gevent.sleep(d)

    def _send(self, rid: int, attempt: int, t: float, user: int, tier: str) -> None:
        key = (rid, attempt)
        sent = time.monotonic()
        rec = {"id": rid, "attempt": attempt, "user": user, "tier": tier, "scheduled_t": t,
               "scheduled_wall": t / X, "send_wall": sent - self.start,
               "lag_s": sent - (self.start + t / X)}
        self.inflight[key] = rec
        body = {"id": rid, "attempt": attempt, "scheduled_t": t}
        hdr = {"Authorization": f"Bearer {user_key(user)}"}
        t0 = time.perf_counter()
        url = self.urls[self.rr % len(self.urls)]
        self.rr += 1
        with self.client.post(url, json=body, headers=hdr, name="/v1/images",
                              catch_response=True) as r:
            rec["client_latency_s"] = time.perf_counter() - t0
            status = int(r.status_code or 0)
            data = {}
            try:
                data = r.json() if r.text else {}
            except ValueError:
                pass
            if status in (200, 403, 429, 503):
                r.success()  # an answer the contract expects, not a load-test failure
            else:
                r.failure(f"status {status}: {r.text[:200] if r.text else r.error}")
        rec.update(status=status, reason=data.get("reason"),
                   gateway_latency_s=data.get("latency_s"), retry_after=data.get("retry_after"),
                   retry_after_header=r.headers.get("Retry-After") if r.headers else None,
                   answer_wall=time.monotonic() - self.start)
        self.inflight.pop(key, None)
        self._write(rec)
        if status in (429, 503) and self.retry is not None:
            self._maybe_retry(rec, data)

    def _maybe_retry(self, rec: dict, data: dict) -> None:
        """The simulator's rule (Retry.after_reject), from the instant of the rejection (the
        answer), or for a timeout from the arrival (it adds the patience)."""
        reason = rec["reason"]
        if reason not in REASONS:
            return  # live-only outcomes (draining...): the simulator has no rule for them
        t0 = (rec["send_wall"] if reason == "timeout" else rec["answer_wall"]) * X
        a = Arrivals(np.array([t0]), np.array([rec["user"]], np.int64),
                     np.array([self.tier_index[rec["tier"]]], np.int64),
                     np.array([rec["attempt"]], np.int64),
                     np.array([rec["id"]], np.int64))  # keyed: the replay draws the same
        ra = data.get("retry_after")  # simulated seconds; null for fleet-side rejections
        out = self.retry.after_reject(a, np.array([REASONS.index(reason)], np.int64),
                                      np.array([np.nan if ra is None else float(ra)]), self.rng)
        if len(out) == 0:
            return
        t, att = float(out.t[0]), rec["attempt"]
        if t >= HORIZON:
            return  # the simulator's run drops retries past the horizon too
        self.tasks_in_flight.spawn(self._later, rec["id"], att + 1, t, rec["user"], rec["tier"])

    def _later(self, rid: int, attempt: int, t: float, user: int, tier: str) -> None:
        self._sleep_until(t)
        self._send(rid, attempt, t, user, tier)
