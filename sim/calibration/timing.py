"""Timing a workload: warm-up, then repeats timed by CUDA events (GPU) or perf_counter (CPU).

Python's garbage collector is paused while timing so that a collection does not land inside a
repeat. Peak memory is torch.cuda.max_memory_allocated after a reset (weights included); the
CPU has no such counter, so it is None there.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Timing:
    samples: list[float]  # seconds, one per timed repeat
    peak_mem_bytes: int | None

    def stats(self) -> dict[str, float]:
        s = np.asarray(self.samples)
        return {
            "median": float(np.median(s)),
            "p10": float(np.percentile(s, 10)),
            "p90": float(np.percentile(s, 90)),
            "mean": float(s.mean()),
            "min": float(s.min()),
            "max": float(s.max()),
            "n": int(s.size),
        }


def is_oom(exc: BaseException) -> bool:
    """Out of memory on the GPU (torch.OutOfMemoryError) or the host allocator."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg
    )


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(
    fn: Callable[[], object], device: torch.device, warmup: int, repeats: int
) -> Timing:
    """Run fn `warmup` times untimed, then `repeats` times timed, under inference_mode."""
    cuda = device.type == "cuda"
    with torch.inference_mode():
        if cuda:
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(warmup):
            fn()
        synchronize(device)
        gc.collect()
        gc.disable()
        try:
            if cuda:
                # Events are queued back to back; one sync at the end, none between repeats.
                marks = [
                    (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                    for _ in range(repeats)
                ]
                for start, end in marks:
                    start.record()
                    fn()
                    end.record()
                synchronize(device)
                samples = [s.elapsed_time(e) / 1e3 for s, e in marks]
            else:
                samples = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn()
                    samples.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    peak = int(torch.cuda.max_memory_allocated(device)) if cuda else None
    return Timing(samples, peak)


def peak_matmul_tflops(
    device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...] | None = None,
    repeats: int | None = None,
) -> dict:
    """Dense square matmul throughput: the best median over a few sizes, in TFLOP/s."""
    cuda = device.type == "cuda"
    sizes = sizes or ((4096, 8192) if cuda else (1024, 2048))
    repeats = repeats or (20 if cuda else 5)  # a 2048 matmul takes ~0.3 s on a small CPU
    best = {"tflops": 0.0}
    for n in sizes:
        try:
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            t = time_fn(lambda a=a, b=b: a @ b, device, warmup=3, repeats=repeats)
        except Exception as e:  # a size too big for this device is not an error
            if not is_oom(e):
                raise
            free_memory(device)
            continue
        tflops = 2 * n**3 / t.stats()["median"] / 1e12
        if tflops > best["tflops"]:
            best = {"tflops": tflops, "size": n}
        del a, b
    best["method"] = f"median of {repeats} square matmuls, best of sizes {list(sizes)}"
    return best


def copy_bandwidth_gbs(
    device: torch.device, nbytes: int | None = None, repeats: int | None = None
) -> dict:
    """Device-to-device copy bandwidth: fp32 `b.copy_(a)`, bytes read plus written, in GB/s.

    1 GiB on a GPU (far past its L2), 64 MiB on a CPU (past most last-level caches); random
    data, never zeros. The memory floor of a weight-bound step is weight bytes over this.
    """
    cuda = device.type == "cuda"
    nbytes = nbytes or (2**30 if cuda else 2**26)
    repeats = repeats or (20 if cuda else 5)
    n = nbytes // 4
    try:
        a = torch.randn(n, device=device, dtype=torch.float32)
        b = torch.empty_like(a)
        t = time_fn(lambda a=a, b=b: b.copy_(a), device, warmup=3, repeats=repeats)
    except Exception as e:  # too big for this device: try half the size
        if not is_oom(e) or nbytes <= 2**24:
            raise
        free_memory(device)
        return copy_bandwidth_gbs(device, nbytes // 2, repeats)
    med = t.stats()["median"]
    del a, b
    free_memory(device)
    return {
        "gb_s": 2 * n * 4 / med / 1e9,
        "bytes": n * 4,
        "method": f"median of {repeats} fp32 copies of {n * 4 / 2**20:,.0f} MiB "
        "(bytes read + written)",
    }
