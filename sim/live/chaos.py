"""`make chaos`: scripted faults against a replicated deployment on loopback, bounded in
time, each reconciled from the client's records and the servers' JSONL logs.

Faults (each a fresh `floodgate serve --replicas N` under an open-loop load):
- `kill_replica`: SIGKILL one replica mid-load; the client retries a failed connection on
  the next replica (same id, next attempt). Every request any replica accepted must have a
  final outcome in the fleet's log (`accepted_lost` = 0), and every 200 the client saw is a
  completed line there.
- `redis_outage` (when redis-server is installed: sim/live/redis_server.py starts one):
  Redis stopped for `outage_s`, then restarted, under fail_open and fail_closed; no
  replica may exit, fail_open admits and counts (`unchecked`), fail_closed answers 503
  limiter_unavailable with Retry-After; after the restart limits are checked again.
- `kill_gpu_worker`: SIGKILL one of the fleet's GPU worker processes (`--gpu-procs 2`,
  sim/live/gpu_worker.py) mid-batch; its batches are re-queued or failed as the
  scenario's failures policy says (`lost_batch`), the fleet starts another process and
  goes on serving, and nothing accepted is lost.
- `sigterm_all`: SIGTERM the deployment mid-load: it drains and exits 0, every JSONL line
  is complete, and nothing accepted is lost.
The last line printed is one JSON object: {"faults", "accepted", "accepted_lost", ...};
the per-fault figures go to `<out>/chaos.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sim.jsonout import dumps
from sim.live.deploy import replica_log, start_deployment
from sim.live.replica import read_jsonl, reconcile

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "validation_small.yaml"


# ---- the deployment and the load ----


def keys_of(d: Path) -> list[tuple[str, int, str]]:
    with open(d / "keys.csv", newline="") as f:
        return [(r["key"], int(r["user"]), r["tier"]) for r in csv.DictReader(f)]


async def load(urls: list[str], keys, rate: float, duration: float, seed: int,
               tries: int = 3, events=()) -> list[dict]:
    """Open-loop Poisson requests over `duration` s, round robin over the replicas; a
    request whose connection fails is retried at once on the next replica (attempt + 1).
    `events`: (at_s, callable) run in a thread at those times. One record per attempt."""
    import httpx

    rng = random.Random(seed)
    recs: list[dict] = []
    rr = [0]
    t0 = time.monotonic()

    async def one(client, rid: int, key: str, user: int):
        for attempt in range(tries):
            i = rr[0] % len(urls)
            rr[0] += 1
            rec = {"id": rid, "attempt": attempt, "user": user, "replica": i,
                   "sent_s": round(time.monotonic() - t0, 4)}
            try:
                r = await client.post(urls[i] + "/v1/images", json={"id": rid, "attempt": attempt},
                                      headers={"Authorization": f"Bearer {key}"})
                body = r.json() if r.content else {}
                rec.update(status=r.status_code, reason=body.get("reason"),
                           retry_after=r.headers.get("retry-after"))
                recs.append(rec)
                return
            except httpx.HTTPError as e:  # refused or cut: try the next replica
                rec.update(status=None, error=type(e).__name__)
                recs.append(rec)
        return

    async def fire(at: float, fn):
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        await asyncio.to_thread(fn)

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=512)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0), limits=limits) as client:
        tasks = [asyncio.create_task(fire(at, fn)) for at, fn in events]
        t, rid = 0.0, 0
        while True:
            t += rng.expovariate(rate)
            if t >= duration:
                break
            await asyncio.sleep(max(0.0, t0 + t - time.monotonic()))
            key, user, _ = keys[rng.randrange(len(keys))]
            tasks.append(asyncio.create_task(one(client, rid, key, user)))
            rid += 1
        await asyncio.gather(*tasks)
    return recs


def stop(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def check_logs(d: Path, dep: dict, client: list[dict]) -> dict:
    """Reconcile the logs of a finished deployment with the client's records."""
    fleet = Path(dep["logs"]["fleet"])
    reps = [Path(p) for p in dep["logs"]["replicas"]]
    rec = reconcile(fleet, reps)
    done = {(r["id"], r["attempt"]) for r in read_jsonl(fleet) if r.get("status") == 200}
    ok = [(r["id"], r["attempt"]) for r in client if r.get("status") == 200]
    torn = 0
    for p in [fleet, *reps]:
        text = p.read_text() if p.exists() else ""
        torn += bool(text) and not text.endswith("\n")
    rec.update(client_attempts=len(client), client_200=len(ok),
               client_200_not_in_fleet_log=sum(k not in done for k in ok),
               client_statuses=dict(sorted(Counter(str(r.get("status")) for r in client).items())),
               client_errors=sum(r.get("status") is None for r in client),
               torn_logs=torn)
    return rec


# ---- the faults ----


def kill_replica(d: Path, scenario: Path, rate: float, duration: float, seed: int) -> dict:
    proc, dep = start_deployment(d, scenario, 3)
    victim = dep["pids"]["replica-1"]
    killed = {}

    def kill():
        os.kill(victim, signal.SIGKILL)
        killed["at"] = time.monotonic()

    try:
        client = asyncio.run(load(dep["replicas"], keys_of(d), rate, duration, seed,
                                  events=[(duration * 0.4, kill)]))
    finally:
        rc = stop(proc)
    out = check_logs(d, dep, client)
    on_victim = [r for r in client if r["replica"] == 1 and r.get("status") is None]
    served_unseen = {(r["id"], r["attempt"]) for r in read_jsonl(Path(dep["logs"]["fleet"]))
                     if r.get("replica") == "r1"} & {(r["id"], r["attempt"]) for r in on_victim}
    gave_up = {r["id"] for r in client} - {r["id"] for r in client if r.get("status") is not None}
    out.update(fault="kill_replica", supervisor_exit=rc, replicas=3,
               victim_admitted=sum(1 for r in read_jsonl(replica_log(Path(dep["logs"]["fleet"]), 1))
                                   if r.get("event") == "admitted"),
               client_cut_on_victim=len(on_victim), cut_but_completed_in_fleet=len(served_unseen),
               requests_without_answer=len(gave_up),
               ok=out["accepted_lost"] == 0 and out["client_200_not_in_fleet_log"] == 0
               and not out["torn_logs"] and rc == 0 and not gave_up)
    return out


def kill_gpu_worker(d: Path, scenario: Path, rate: float, duration: float, seed: int,
                    policy: str = "requeue") -> dict:
    """SIGKILL GPU worker process 0 of 2 at 40% of the load, when it holds a batch."""
    sc = d / "scenario.yaml"
    d.mkdir(parents=True, exist_ok=True)
    with_lost_batch(scenario, sc, policy)
    proc, dep = start_deployment(d, sc, 2, ("--gpu-procs", "2"))
    fleet_log = Path(dep["logs"]["fleet"])
    pids = fleet_log.with_name("gpu-workers.json")
    killed: dict = {}

    def kill():
        # when it holds a batch (a kill at a fixed time can find it idle on a slow machine)
        deadline = time.monotonic() + 0.4 * duration
        while True:
            info = json.loads(pids.read_text())
            if info.get("busy", [1])[0] > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        victim = info["pids"][0]
        os.kill(victim, signal.SIGKILL)
        killed.update(pid=victim, sim_s=time.time() - dep["start_at"])  # time scale 1

    try:
        client = asyncio.run(load(dep["replicas"], keys_of(d), rate, duration, seed,
                                  events=[(duration * 0.4, kill)]))
    finally:
        rc = stop(proc)
    out = check_logs(d, dep, client)
    procs = json.loads(pids.read_text())
    lines = read_jsonl(fleet_log)
    hit = [r for r in lines if r.get("fault") == "gpu_worker_lost"]
    # the fleet goes on: requests served from batches that started a second after the kill
    t_kill = killed.get("sim_s", float("inf"))
    after = [r for r in lines if r.get("status") == 200 and r["start_s"] > t_kill + 1.0]
    requeued_ok = sum(r.get("status") == 200 for r in hit)
    failed = sum(r.get("reason") == "error" for r in hit)
    out.update(fault=f"kill_gpu_worker_{policy}", lost_batch=policy, supervisor_exit=rc,
               victim_pid=killed.get("pid"), gpu_proc_starts=procs["starts"],
               batches_lost=sum(procs["lost"]), requests_in_lost_batches=len(hit),
               requeued_then_served=requeued_ok, failed_gpu_worker_lost=failed,
               served_after_kill=len(after), kill_s=round(t_kill, 3))
    held = (requeued_ok > 0 and failed == 0) if policy == "requeue" else (failed == len(hit) > 0)
    out["ok"] = (held and procs["starts"][0] == 2 and len(after) > 0 and rc == 0
                 and out["accepted_lost"] == 0 and out["client_200_not_in_fleet_log"] == 0
                 and not out["torn_logs"])
    return out


def with_lost_batch(src: Path, dst: Path, policy: str) -> Path:
    """The scenario with a failures policy that only says what a lost batch becomes: its
    MTBF (1e9 h) makes no simulated failure happen in a run this short."""
    import yaml

    d = yaml.safe_load(src.read_text())
    d["policies"] = [p for p in d.get("policies", []) if p.get("policy") != "failures"]
    d["policies"].append({"policy": "failures", "mtbf_h": 1e9, "mttr_h": 1, "lost_batch": policy})
    dst.write_text(yaml.safe_dump(d, sort_keys=False))
    return dst


def sigterm_all(d: Path, scenario: Path, rate: float, duration: float, seed: int) -> dict:
    proc, dep = start_deployment(d, scenario, 3)
    rc = {}

    def term():
        rc["exit"] = stop(proc, 60.0)

    client = asyncio.run(load(dep["replicas"], keys_of(d), rate, duration, seed,
                              events=[(duration * 0.5, term)]))
    if "exit" not in rc:
        rc["exit"] = stop(proc)
    out = check_logs(d, dep, client)
    stderr = {p.name: p.read_text() for p in d.glob("*.stderr")}
    tracebacks = sum("Traceback" in t for t in stderr.values())
    out.update(fault="sigterm_all", supervisor_exit=rc["exit"], tracebacks=tracebacks,
               ok=rc["exit"] == 0 and out["accepted_lost"] == 0 and not out["torn_logs"]
               and out["client_200_not_in_fleet_log"] == 0 and tracebacks == 0)
    return out


def redis_outage(d: Path, scenario: Path, rate: float, duration: float, seed: int,
                 mode: str, outage_s: float) -> dict:
    from sim.live.redis_server import start_redis, stop_redis

    rs = [start_redis()]
    port = rs[0].port

    def down() -> None:
        stop_redis(rs[0])

    def up() -> None:  # the same port: the replicas reconnect to it
        rs[0] = start_redis(port)

    try:
        proc, dep = start_deployment(d, scenario, 2, ("--redis", rs[0].url, "--store-failure", mode))
        t_out = duration * 0.25
        try:
            client = asyncio.run(load(dep["replicas"], keys_of(d), rate, duration, seed,
                                      events=[(t_out, down), (t_out + outage_s, up)]))
            alive = {k: _alive(pid) for k, pid in dep["pids"].items()}
        finally:
            rc = stop(proc)
    finally:
        stop_redis(rs[0])
    out = check_logs(d, dep, client)
    during = [r for r in client if t_out + 0.5 <= r["sent_s"] < t_out + outage_s - 0.5]
    after = [r for r in client if r["sent_s"] >= t_out + outage_s + 2.0]
    unavailable = [r for r in during if r.get("reason") == "limiter_unavailable"]
    out.update(fault=f"redis_outage_{mode}", outage_s=outage_s, supervisor_exit=rc,
               all_alive_during=all(alive.values()), sent_during=len(during),
               limiter_unavailable_during=len(unavailable),
               retry_after_on_503=all(r.get("retry_after") for r in unavailable),
               limited_after=sum(r.get("reason") == "rate_limited" for r in after),
               limiter_unavailable_after=sum(r.get("reason") == "limiter_unavailable" for r in after))
    held = (out["unchecked"] > 0 and not unavailable) if mode == "fail_open" else \
        (len(unavailable) > 0 and out["retry_after_on_503"] and out["unchecked"] == 0)
    held = held and out["limited_after"] > 0  # limits are checked again after the restart
    out["ok"] = (held and all(alive.values()) and rc == 0 and out["accepted_lost"] == 0
                 and out["limiter_unavailable_after"] == 0 and not out["torn_logs"])
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def redis_available() -> bool:
    from sim.live.redis_server import redis_server_exe

    try:
        import redis  # noqa: F401
    except ImportError:
        return False
    return redis_server_exe() is not None


def few_users(src: Path, dst: Path, users: int) -> Path:
    """The scenario with `users` users (keys are made for them): at the chaos load each
    free user meets its limiter often, so limits visibly hold before and after a fault."""
    import yaml

    d = yaml.safe_load(src.read_text())
    d["demand"]["users"] = users
    dst.write_text(yaml.safe_dump(d, sort_keys=False))
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.live.chaos", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/chaos")
    ap.add_argument("--scenario", default=str(SCENARIO))
    ap.add_argument("--rate", type=float, default=12.0, help="requests per wall second")
    ap.add_argument("--duration", type=float, default=12.0, help="wall seconds of load per fault")
    ap.add_argument("--outage", type=float, default=10.0, help="wall seconds Redis is down")
    ap.add_argument("--only", action="append", help="run only these faults (repeatable)")
    ap.add_argument("--users", type=int, default=20, help="users of the scenario (default 20)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    sc = few_users(Path(args.scenario), out / "chaos.yaml", args.users)
    t0 = time.monotonic()
    faults = {"kill_replica": lambda d: kill_replica(d, sc, args.rate, args.duration, 1),
              "kill_gpu_worker": lambda d: kill_gpu_worker(d, sc, args.rate, args.duration, 6),
              "sigterm_all": lambda d: sigterm_all(d, sc, args.rate, args.duration, 2)}
    skipped = []
    if redis_available():
        for i, mode in enumerate(("fail_open", "fail_closed")):
            faults[f"redis_outage_{mode}"] = (lambda d, m=mode, s=3 + i: redis_outage(
                d, sc, args.rate, max(args.duration, args.outage + 14), s, m, args.outage))
    else:
        skipped.append("redis_outage (no redis package or redis-server)")
    results = []
    for name, fn in faults.items():
        if args.only and name not in args.only:
            continue
        t = time.monotonic()
        r = fn(out / name)
        r["wall_s"] = round(time.monotonic() - t, 1)
        print(f"{name}: {'ok' if r['ok'] else 'FAILED'} accepted {r['accepted']} lost "
              f"{r['accepted_lost']} ({r['wall_s']} s)", file=sys.stderr, flush=True)
        results.append(r)
    line = {"faults": len(results), "ok": all(r["ok"] for r in results),
            "accepted": sum(r["accepted"] for r in results),
            "accepted_lost": sum(r["accepted_lost"] for r in results),
            "unchecked": sum(r["unchecked"] for r in results),
            "failed": [r["fault"] for r in results if not r["ok"]], "skipped": skipped,
            "wall_s": round(time.monotonic() - t0, 1), "report": str(out / "chaos.json")}
    tmp = out / "chaos.json.tmp"
    tmp.write_text(dumps({"summary": line, "faults": results}, indent=1))
    tmp.replace(out / "chaos.json")
    print(dumps(line))
    return 0 if line["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
