"""GPU worker processes: the fleet process (sim/live/workers.py) runs the scheduling, these
run the batches (`floodgate serve --gpu-procs K`).

The fleet's kernel decides every queue, batch and worker as in the simulator; a batch it
launches on kernel worker w (a GPU) is sent to process w % K, which runs it and answers.
Worker w's batch end is what that answer says, reported back with `Fleet.complete` (the
kernel's external mode), so a slow or dead process delays or loses real work:
- cost model (`--kernel model`): the process sleeps until the batch's drawn end (the kernel
  draws it as in the simulator; the end is a wall-clock instant, so dispatch lag is not
  added twice); the answer's trip back is the only extra;
- `--kernel torch`: the process runs the real denoiser (sim/live/denoiser.py); process i
  takes cuda:i (mod the GPUs there) unless --torch-device names one: one process per GPU.

Protocol, JSON lines: the process prints {"ready": pid} once it can take work; the fleet
writes {"j": job, "pool", "b", "steps", "until": unix time or null}, the process answers
{"j": job, "ok": true} (or "ok": false with "error") from a thread per batch. A process
that exits (SIGKILL mid-batch) loses its batches: `GpuProcs.run` raises WorkerLost for each,
the fleet re-queues or fails them as the scenario's failures policy says (`lost_batch`),
and the process is started again; work sent meanwhile waits for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path


class WorkerLost(Exception):
    """The GPU worker process running a batch exited before answering."""


# ---- the worker process ----


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.live.gpu_worker")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--torch", metavar="SCENARIO", help="run the real denoiser for this scenario")
    ap.add_argument("--device")
    ap.add_argument("--dtype")
    args = ap.parse_args(argv)
    run = None
    if args.torch:
        import torch

        from sim.engine import build_pools
        from sim.live.denoiser import TorchRunner
        from sim.scenario import load_scenario

        dev = args.device
        if dev is None and torch.cuda.is_available():
            dev = f"cuda:{args.index % torch.cuda.device_count()}"
        sc = load_scenario(args.torch)
        runner = TorchRunner(sc, build_pools(sc), dev, args.dtype)
        print(f"GPU worker {args.index}: {runner.describe()}", file=sys.stderr, flush=True)
        run = runner.run
    out = sys.stdout
    lock = threading.Lock()

    def say(obj: dict) -> None:
        with lock:
            out.write(json.dumps(obj) + "\n")
            out.flush()

    def batch(job: dict) -> None:
        try:
            if run is not None:
                run(job["pool"], job["b"], job["steps"])
            elif job.get("until") is not None:
                time.sleep(max(0.0, job["until"] - time.time()))
            say({"j": job["j"], "ok": True})
        except Exception as e:  # the batch failed: the fleet fails its requests
            say({"j": job["j"], "ok": False, "error": f"{type(e).__name__}: {e}"})

    say({"ready": os.getpid()})
    for line in sys.stdin:  # EOF: the fleet is gone, so is its work
        if line.strip():
            threading.Thread(target=batch, args=(json.loads(line),), daemon=True).start()
    return 0


# ---- the fleet's side ----


class _Slot:
    def __init__(self, index: int):
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.pending: dict[int, asyncio.Future] = {}
        self.starts = 0
        self.broken: str | None = None  # it exited before it was ready, three times running
        self.failed_starts = 0


class GpuProcs:
    """K worker processes on the fleet's event loop; `run` sends one batch to one of them.
    Their pids are written to `pid_file` (JSON {"pids": [...], "starts": [...], "lost":
    [...], "busy": [...]}) at each start and when a process starts or ends holding batches
    (busy: the batches it holds), for fault scenarios and operators."""

    def __init__(self, n: int, torch_args: list[str] | None = None, pid_file: Path | None = None):
        self.n = n
        self.torch_args = torch_args  # None: the cost model (sleep until the drawn end)
        self.pid_file = pid_file
        self.slots = [_Slot(i) for i in range(n)]
        self.lost = [0] * n  # batches lost with a process, per process
        self.closing = False
        self._next = 0
        self._tasks: set[asyncio.Task] = set()

    async def start(self, timeout: float = 300.0) -> None:
        """Start every process and wait until each can take work."""
        for s in self.slots:
            self._spawn(s)
        await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in self.slots)), timeout)
        for s in self.slots:
            if s.broken:
                raise RuntimeError(s.broken)

    def _spawn(self, s: _Slot) -> None:
        t = asyncio.get_running_loop().create_task(self._serve(s))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _serve(self, s: _Slot) -> None:
        """Run one process of slot s until it exits; then fail its batches and start another."""
        from sim.live.serve import _die_with_parent

        cmd = [sys.executable, "-m", "sim.live.gpu_worker", "--index", str(s.index),
               *(self.torch_args or [])]
        s.proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent, limit=2**20)
        s.starts += 1
        was_ready = False
        try:
            while True:
                line = await s.proc.stdout.readline()
                if not line:
                    break
                msg = json.loads(line)
                if "ready" in msg:
                    was_ready = True
                    s.failed_starts = 0
                    s.ready.set()
                    self._write_pids()
                    continue
                fut = s.pending.pop(msg["j"], None)
                if not s.pending:
                    self._write_pids()  # it holds no batch now
                if fut is not None and not fut.done():
                    if msg["ok"]:
                        fut.set_result(None)
                    else:
                        fut.set_exception(RuntimeError(msg.get("error", "batch failed")))
        finally:
            s.ready.clear()
            await s.proc.wait()
            for fut in s.pending.values():  # what it held is lost with it
                self.lost[s.index] += 1
                if not fut.done():
                    fut.set_exception(WorkerLost(f"GPU worker process {s.index} exited "
                                                 f"({s.proc.returncode})"))
            s.pending.clear()
            s.failed_starts += not was_ready
            if s.failed_starts >= 3:  # it cannot start: its batches fail from now on
                s.broken = (f"GPU worker process {s.index} exited ({s.proc.returncode}) before "
                            "it was ready, 3 times (its stderr is the fleet's)")
                s.ready.set()
            elif not self.closing:
                self._spawn(s)

    async def run(self, w: int, pool: int, b: int, steps: int, until: float | None) -> None:
        """Batch of kernel worker w on process w % K; returns when it answers (RuntimeError:
        the batch failed; WorkerLost: the process exited first)."""
        s = self.slots[w % self.n]
        while not s.ready.is_set():  # set now: its reader has not yet failed what it held
            await s.ready.wait()
        if s.broken:
            raise RuntimeError(s.broken)
        j = self._next
        self._next += 1
        fut = asyncio.get_running_loop().create_future()
        s.pending[j] = fut
        if len(s.pending) == 1:
            self._write_pids()  # it holds a batch now (a fault scenario kills it then)
        try:
            s.proc.stdin.write((json.dumps({"j": j, "pool": pool, "b": b, "steps": steps,
                                            "until": until}) + "\n").encode())
            await s.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died: the reader fails the pending batch
        await fut

    def _write_pids(self) -> None:
        if self.pid_file is None:
            return
        info = {"pids": [s.proc.pid if s.proc else None for s in self.slots],
                "ready": [s.ready.is_set() for s in self.slots],
                "starts": [s.starts for s in self.slots], "lost": self.lost,
                "busy": [len(s.pending) for s in self.slots]}
        tmp = self.pid_file.with_name(self.pid_file.name + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(self.pid_file)

    def describe(self) -> str:
        return f"{self.n} GPU worker process(es) ({'torch' if self.torch_args else 'cost model'})"

    async def close(self) -> None:
        """Stop the processes (their stdin closed: each exits) and wait for them."""
        self.closing = True
        for s in self.slots:
            if s.proc is not None and s.proc.returncode is None:
                s.proc.stdin.close()
        for s in self.slots:
            if s.proc is not None:
                try:
                    await asyncio.wait_for(s.proc.wait(), 10.0)
                except TimeoutError:
                    s.proc.kill()
                    await s.proc.wait()
        self._write_pids()


if __name__ == "__main__":
    sys.exit(main())
