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
