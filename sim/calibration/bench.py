"""Timing the denoising kernel the way GPU people do: warm up, synchronise, many repeats,
median and spread, peak memory per configuration, FLOPs counted, MFU against a measured peak."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import numpy as np

from sim.calibration.models import (
    MODELS,
    build_denoiser,
    build_text,
    build_vae,
    config_hash,
    denoiser_inputs,
    latent_shape,
)

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _torch():
    import torch

    return torch


def quiet_libraries() -> None:
    """Random-weight models make diffusers/transformers warn about loading: not relevant here."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        _torch().cuda.synchronize()


def time_fn(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> np.ndarray:
    """Seconds per call: CUDA events on a GPU, perf_counter after synchronising on a CPU."""
    torch = _torch()
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        sync(device)
        out = []
        if device.startswith("cuda"):
            for _ in range(repeats):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                out.append(a.elapsed_time(b) / 1e3)
        else:
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    return np.array(out)


def count_flops(fn: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    torch = _torch()
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def meta_flops(model: str, batch: int, resolution: int, cfg: bool) -> float:
    """FLOPs of one denoising step counted on the meta device (no memory, no weights)."""
    torch = _torch()
    with torch.device("meta"):
        m = build_denoiser(model)
    b = batch * (2 if cfg else 1)
    kw = denoiser_inputs(model, b, resolution, "meta", torch.float32)
    return count_flops(lambda: m(**kw))


def peak_tflops(device: str, dtype) -> float:
    """Dense matmul throughput measured on this device and dtype (the MFU denominator)."""
    torch = _torch()
    n = 8192 if device.startswith("cuda") else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = np.median(time_fn(lambda: a @ b, device, 3, 10))
    return 2 * n ** 3 / t / 1e12


def device_info(device: str) -> dict:
    torch = _torch()
    info = {"device": platform.processor() or platform.machine(), "driver": None,
            "torch": torch.__version__, "cuda": torch.version.cuda, "host": platform.node(),
            "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        info["device"] = torch.cuda.get_device_name()
        try:
            import subprocess

            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    else:
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    info["device"] = "CPU: " + line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return info


def _stats(lat: np.ndarray) -> dict:
    return {"median": float(np.median(lat)), "p10": float(np.percentile(lat, 10)),
            "p90": float(np.percentile(lat, 90)), "n": int(len(lat))}


def _is_oom(e: BaseException) -> bool:
    return "out of memory" in str(e).lower() or isinstance(e, MemoryError)


def measure(model: str, device: str, dtype_name: str, batches: list[int], resolution: int,
            cfg: bool, warmup: int, repeats: int, compile_: bool, peak: float | None,
            on_entry: Callable[[dict], None]) -> None:
    """Time the denoising step over batch sizes (until out of memory), then the VAE decode
    and the text encoder per batch; each entry goes to on_entry as soon as it is measured."""
    torch = _torch()
    quiet_libraries()
    dtype = getattr(torch, DTYPES[dtype_name])
    common = dict(model=model, resolution=resolution, dtype=dtype_name, device_kind=device,
                  config_hash=config_hash(model), compile=compile_)
    with torch.device(device):
        den = build_denoiser(model).to(dtype=dtype).eval()
    fwd = torch.compile(den) if compile_ else den
    for b in batches:
        bb = b * (2 if cfg else 1)  # classifier-free guidance doubles the batch
        try:
            kw = denoiser_inputs(model, bb, resolution, device, dtype)
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            lat = time_fn(lambda kw=kw, f=fwd: f(**kw), device, warmup, repeats)
            mem = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
        except (RuntimeError, MemoryError) as e:
            if _is_oom(e):
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
                break
            raise
        flops = meta_flops(model, b, resolution, cfg)
        st = _stats(lat)
        tf = flops / st["median"] / 1e12
        on_entry({**common, "component": "denoise_step", "batch": b, "cfg": cfg, "latency_s": st,
                  "peak_mem_bytes": mem, "flops": flops, "tflops": round(tf, 4),
                  "mfu": round(tf / peak, 4) if peak else None})
    del den, fwd
    with torch.device(device):
        vae = build_vae(model).to(dtype=dtype).eval()
    ch, side, _ = latent_shape(model, resolution)
    lat_ch = MODELS[model].vae["latent_channels"]
    for b in batches:
        try:
            z = torch.randn(b, lat_ch, side, side, device=device, dtype=dtype)
            lat = time_fn(lambda z=z, v=vae: v.decode(z), device, max(1, warmup // 2), max(3, repeats // 2))
        except (RuntimeError, MemoryError) as e:
            if _is_oom(e):
                break
            raise
        on_entry({**common, "component": "vae_decode", "batch": b, "cfg": False,
                  "latency_s": _stats(lat), "peak_mem_bytes": None, "flops": count_flops(lambda z=z, v=vae: v.decode(z))})
    del vae
    with torch.device(device):
        enc = build_text(model).to(dtype=dtype).eval()
    vocab = MODELS[model].text["vocab_size"]
    for b in batches:
        ids = torch.randint(0, vocab, (b * (2 if cfg else 1), 77), device=device)
        lat = time_fn(lambda ids=ids: enc(input_ids=ids), device, max(1, warmup // 2), max(3, repeats // 2))
        on_entry({**common, "component": "text_encode", "batch": b, "cfg": cfg,
                  "latency_s": _stats(lat), "peak_mem_bytes": None, "flops": None})
