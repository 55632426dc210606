"""Faults of `make chaos` in the suite: a replica SIGKILLed mid-load on loopback, and a GPU
worker process SIGKILLed mid-batch; every request a replica accepted has its final outcome
in the fleet's log, every 200 the client saw is a completed line there, the deployment
drains and exits 0."""

from __future__ import annotations

import pytest

from sim.live.chaos import SCENARIO, kill_gpu_worker, kill_replica


@pytest.mark.slow
def test_a_killed_replica_loses_nothing_it_accepted(tmp_path):
    r = kill_replica(tmp_path / "kill", SCENARIO, rate=10.0, duration=6.0, seed=5)
    assert r["victim_admitted"] > 0  # the kill came after it had accepted some
    assert r["client_cut_on_victim"] > 0  # and the client noticed, and retried elsewhere
    assert r["accepted"] > 20
    assert r["accepted_lost"] == 0
    assert r["client_200_not_in_fleet_log"] == 0
    assert r["requests_without_answer"] == 0
    assert r["torn_logs"] == 0
    assert r["supervisor_exit"] == 0
    assert sum(r["outcomes"].values()) == r["accepted"]


@pytest.mark.slow
def test_a_replica_whose_fleet_is_down_answers_and_records_it(tmp_path):
    """The fleet unreachable: the request a replica admitted is answered 500 `error` and
    logged by the replica, so reconcile finds its outcome (nothing accepted goes unrecorded)."""
    import csv

    import httpx

    from sim.live.replica import reconcile
    from sim.live.serve import free_port, start_server, stop_server

    log = tmp_path / "replica-0.jsonl"
    port, dead = free_port(), free_port()
    proc = start_server(SCENARIO, port, log_path=log,
                        extra_args=("--role", "replica", "--fleet", f"http://127.0.0.1:{dead}"))
    try:
        with open(tmp_path / "keys.csv", newline="") as f:
            key = next(r["key"] for r in csv.DictReader(f) if r["tier"] == "paid")
        r = httpx.post(f"http://127.0.0.1:{port}/v1/images", json={"id": 7},
                       headers={"Authorization": f"Bearer {key}"}, timeout=30)
    finally:
        assert stop_server(proc) == 0
    assert r.status_code == 500 and r.json()["reason"] == "error"
    rec = reconcile(tmp_path / "fleet.jsonl", [log])
    assert rec["accepted"] == 1 and rec["accepted_lost"] == 0
    assert rec["outcomes"] == {"error": 1}


@pytest.mark.slow
def test_a_killed_gpu_worker_process_fails_its_batch_and_the_fleet_goes_on(tmp_path):
    """lost_batch: fail (make chaos runs requeue; tests/test_gpu_workers.py both, on one
    gateway): each request of the lost batches answers 500 error, logged gpu_worker_lost;
    the fleet starts another process and goes on serving, and reconciliation finds every
    accepted request."""
    policy = "fail"
    r = kill_gpu_worker(tmp_path / "gpu", SCENARIO, rate=10.0, duration=6.0, seed=5, policy=policy)
    assert r["requests_in_lost_batches"] > 0  # the kill came mid-batch
    assert r["batches_lost"] > 0
    if policy == "requeue":
        assert r["requeued_then_served"] == r["requests_in_lost_batches"]
        assert r["failed_gpu_worker_lost"] == 0
    else:
        assert r["failed_gpu_worker_lost"] == r["requests_in_lost_batches"]
        assert r["outcomes"].get("error") == r["requests_in_lost_batches"]
        assert r["client_statuses"].get("500") == r["requests_in_lost_batches"]
    assert r["gpu_proc_starts"] == [2, 1]  # the killed one was started again, once
    assert r["served_after_kill"] > 0
    assert r["accepted_lost"] == 0
    assert r["client_200_not_in_fleet_log"] == 0
    assert r["torn_logs"] == 0
    assert r["supervisor_exit"] == 0
    assert r["ok"]


HOLD = """
name: hold
seed: 1
horizon: 600s
demand: {model: curve, users: 4, points: [[0, 1]]}
tiers:
- {name: free, share: 1, priority: 0, price_per_image: 0, slo_s: 60}
policies:
- {policy: concurrency, key: user, limit: 1}
fleet:
  pools:
  - {name: p, gpus: 2, service_time_s: 3, service_distribution: deterministic}
"""


@pytest.mark.slow
def test_a_dead_replicas_slots_come_back_and_a_restarted_one_rejoins(tmp_path):
    """Concurrency (1 per user) is the fleet's in-flight gate: a replica SIGKILLed while a
    request it forwarded is in service holds nothing; the fleet finishes that request, the
    user is refused (429) on the other replica until then and admitted after. With
    --restart-replicas the killed replica comes back on its port under a new name, serves,
    and reconciliation covers both of its lives."""
    import asyncio
    import csv
    import json
    import os
    import signal
    import time

    import httpx

    from sim.live.chaos import stop
    from sim.live.deploy import start_deployment
    from sim.live.replica import read_jsonl, reconcile

    sc = tmp_path / "hold.yaml"
    sc.write_text(HOLD)
    d = tmp_path / "dep"
    proc, dep = start_deployment(d, sc, 2, ("--restart-replicas",))
    with open(d / "keys.csv", newline="") as f:
        keys = {int(r["user"]): r["key"] for r in csv.DictReader(f)}
    r0, r1 = dep["replicas"]

    async def post(c, url, user, rid):
        try:
            r = await c.post(url + "/v1/images", json={"id": rid},
                             headers={"Authorization": f"Bearer {keys[user]}"})
            return r.status_code
        except httpx.HTTPError:
            return None

    async def go():
        async with httpx.AsyncClient(timeout=30) as c:
            held = asyncio.create_task(post(c, r1, 0, 1))  # in service for 3 s
            await asyncio.sleep(1.0)
            os.kill(dep["pids"]["replica-1"], signal.SIGKILL)
            during = await post(c, r0, 0, 2)  # user 0's slot: still in service
            cut = await held
            fleet_log = d / "requests.jsonl"
            end = time.monotonic() + 20
            while not any(x.get("id") == 1 for x in read_jsonl(fleet_log)):
                assert time.monotonic() < end, "the fleet did not finish the dead replica's request"
                await asyncio.sleep(0.2)
            after = await post(c, r0, 0, 3)  # the slot came back
            end = time.monotonic() + 60
            while json.loads((d / "deployment.json").read_text()).get("restarts", {}).get("replica-1") != 1:
                assert time.monotonic() < end, "replica-1 was not restarted"
                await asyncio.sleep(0.2)
            back = None
            while back is None and time.monotonic() < end:
                back = await post(c, r1, 1, 4)  # None until it listens again
                await asyncio.sleep(0.2)
            return during, cut, after, back

    try:
        during, cut, after, back = asyncio.run(go())
    finally:
        rc = stop(proc)
    assert cut is None  # the client lost its connection with the replica
    assert during == 429  # the dead replica's request still held user 0's one slot
    assert after == 200 and back == 200
    assert rc == 0
    fleet = read_jsonl(d / "requests.jsonl")
    assert {x["replica"] for x in fleet if x.get("id") == 4} == {"r1.1"}
    assert [x["status"] for x in fleet if x.get("id") == 1] == [200]  # served though cut off
    rec = reconcile(d / "requests.jsonl", [d / "replica-0.jsonl", d / "replica-1.jsonl"])
    # ids 1-4 passed the replicas' admission; the fleet's gate refused 2
    assert rec["accepted"] == 4 and rec["accepted_lost"] == 0
    assert rec["outcomes"] == {"completed": 3, "rate_limited": 1}
