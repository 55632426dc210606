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
@pytest.mark.parametrize("policy", ["requeue", "fail"])
def test_a_killed_gpu_worker_process_loses_its_batch_as_the_failures_policy_says(tmp_path, policy):
    """requeue: the lost batch's requests are served from the queue again; fail: each is
    answered 500 error and logged gpu_worker_lost. Either way the fleet starts another
    process and goes on serving, and reconciliation finds every accepted request."""
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
