"""GPU worker processes (sim/live/gpu_worker.py): real child processes on this machine; a
batch answers at its drawn end, never before; a process killed mid-batch loses exactly the
batches it held (WorkerLost) and a new one takes the next batch. What a lost batch becomes
is the scenario's failures policy's `lost_batch`, per pool."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from sim.live.gpu_worker import GpuProcs, WorkerLost
from sim.policies.dynamics import lost_batch
from sim.scenario import parse_scenario
from tests.helpers import queue_scenario


def test_lost_batch_is_the_failures_policy_of_the_pool():
    d = queue_scenario(1.0, 1.0, 2, 100.0)
    d["fleet"]["pools"] = [dict(d["fleet"]["pools"][0], name="a"), dict(d["fleet"]["pools"][0], name="b")]
    sc = parse_scenario(d)
    assert [lost_batch(sc, j) for j in range(2)] == ["requeue", "requeue"]  # no policy
    d["policies"] = [{"policy": "failures", "pool": "b", "mtbf_h": 5, "mttr_h": 1, "lost_batch": "fail"}]
    sc = parse_scenario(d)
    assert [lost_batch(sc, j) for j in range(2)] == ["requeue", "fail"]
    d["policies"] = [{"policy": "failures", "mtbf_h": 5, "mttr_h": 1, "lost_batch": "fail"}]
    assert lost_batch(parse_scenario(d), 0) == "fail"  # no pool named: the first, as the policy


def test_worker_processes_answer_at_the_end_and_a_killed_one_loses_its_batches(tmp_path):
    async def go():
        procs = GpuProcs(2, pid_file=tmp_path / "gpu-workers.json")
        await procs.start(60)
        try:
            t = time.time()
            ends = [t + 0.3 + 0.05 * w for w in range(4)]
            await asyncio.gather(*(procs.run(w, 0, 1, 20, e) for w, e in enumerate(ends)))
            assert time.time() >= max(ends)  # each slept until its drawn end
            # two batches on process 0 (workers 0, 2), one on process 1; kill 0 mid-batch
            far = time.time() + 30.0
            held = [asyncio.ensure_future(procs.run(w, 0, 1, 20, far)) for w in (0, 2)]
            other = asyncio.ensure_future(procs.run(1, 0, 1, 20, time.time() + 0.5))
            await asyncio.sleep(0.3)
            os.kill(procs.slots[0].proc.pid, signal.SIGKILL)
            for f in held:
                with pytest.raises(WorkerLost):
                    await asyncio.wait_for(f, 20)
            await asyncio.wait_for(other, 20)  # the other process is untouched
            await asyncio.wait_for(procs.run(0, 0, 1, 20, time.time() + 0.1), 60)  # a new one
            assert procs.lost == [2, 0]
            assert [s.starts for s in procs.slots] == [2, 1]
        finally:
            await procs.close()
        assert all(s.proc.returncode is not None for s in procs.slots)

    asyncio.run(go())


def test_a_worker_process_that_cannot_start_is_given_up_after_three_tries():
    async def go():
        procs = GpuProcs(1, torch_args=["--no-such-option"])  # argparse exits 2 at once
        with pytest.raises(RuntimeError, match="before it was ready, 3 times"):
            await procs.start(60)
        assert procs.slots[0].starts == 3
        with pytest.raises(RuntimeError):  # its batches fail (a recorded error), none hangs
            await asyncio.wait_for(procs.run(0, 0, 1, 1, None), 5)
        await procs.close()

    asyncio.run(go())


FOUR = """
name: four
seed: 1
horizon: 600s
demand: {model: curve, users: 8, points: [[0, 1]]}
tiers:
- {name: free, share: 1, priority: 0, price_per_image: 0, slo_s: 60}
policies: []
fleet:
  pools:
  - {name: p, gpus: 4, service_time_s: 3, service_distribution: deterministic}
"""


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["requeue"])  # fail: tests/test_chaos.py, on a deployment
def test_a_gateways_killed_gpu_process_loses_its_two_batches_as_the_policy_says(tmp_path, policy):
    """8 requests on 4 GPUs (batches of one, 3 s) served by 2 processes (GPUs 0, 2 on process
    0): process 0 SIGKILLed 1.5 s in holds exactly 2 batches. requeue: both requests go back to
    the queue and are served (8 answered 200); fail: both answer 500 error. Each is logged
    gpu_worker_lost; the process is started again and the gateway drains and exits 0."""
    import csv
    import json

    import httpx

    from sim.live.replica import read_jsonl
    from sim.live.serve import free_port, start_server, stop_server

    sc = tmp_path / "four.yaml"
    text = FOUR if policy == "requeue" else FOUR.replace(
        "policies: []", f"policies: [{{policy: failures, mtbf_h: 1e9, mttr_h: 1, lost_batch: {policy}}}]")
    sc.write_text(text)
    log = tmp_path / "requests.jsonl"
    port = free_port()
    proc = start_server(sc, port, log_path=log, extra_args=("--gpu-procs", "2"))
    try:
        with open(tmp_path / "keys.csv", newline="") as f:
            keys = [r["key"] for r in csv.DictReader(f)]
        pid0 = json.loads((tmp_path / "gpu-workers.json").read_text())["pids"][0]

        async def go():
            async with httpx.AsyncClient(timeout=60) as c:
                async def one(i):
                    r = await c.post(f"http://127.0.0.1:{port}/v1/images", json={"id": i},
                                     headers={"Authorization": f"Bearer {keys[i]}"})
                    return r.status_code

                tasks = [asyncio.ensure_future(one(i)) for i in range(8)]
                await asyncio.sleep(1.5)
                os.kill(pid0, signal.SIGKILL)
                return await asyncio.gather(*tasks)

        codes = asyncio.run(go())
    finally:
        rc = stop_server(proc)
    assert rc == 0
    lines = read_jsonl(log)
    hit = [x for x in lines if x.get("fault") == "gpu_worker_lost"]
    assert len(hit) == 2
    if policy == "requeue":
        assert sorted(codes) == [200] * 8
        assert all(x["status"] == 200 and x["requeued"] == 1 for x in hit)
    else:
        assert sorted(codes) == [200] * 6 + [500] * 2
        assert all(x["reason"] == "error" and x["requeued"] == 0 for x in hit)
    procs = json.loads((tmp_path / "gpu-workers.json").read_text())
    assert procs["starts"] == [2, 1] and procs["lost"] == [2, 0]
    assert len(lines) == 8
