"""The measurement loop: every model x component x resolution x batch, until out of memory.

Results accumulate as they are measured, so Ctrl-C (KeyboardInterrupt) keeps everything
measured before it. A batch size that runs out of memory ends that component's batch sweep
(larger ones would too) and is recorded under `skipped`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from sim.calibration.build import build_component, workload
from sim.calibration.configs import MODELS, component_config, config_hash
from sim.calibration.device import DTYPES, describe
from sim.calibration.flops import component_params, count_flops
from sim.calibration.timing import (
    copy_bandwidth_gbs,
    free_memory,
    is_oom,
    peak_matmul_tflops,
    time_fn,
)

ORDER = ("denoise_step", "vae_decode", "text_encode")  # most important first, for Ctrl-C
SDPA = {"math": "MATH", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
        "cudnn": "CUDNN_ATTENTION"}


@dataclass
class Settings:
    models: list[str]
    device: str = "cpu"
    dtype: str = "fp32"
    batches: list[int] = field(default_factory=lambda: [1, 2, 4])
    resolutions: list[int] | None = None  # None: each model's default
    repeats: int = 20
    warmup: int = 3
    cfg: bool = True
    compile: bool = False
    compile_mode: str | None = None
    attention: str = "default"  # or one SDPA backend: math, flash, efficient, cudnn
    threads: int | None = None
    components: tuple[str, ...] = ORDER
    progress: bool = True
    seed: int = 0


@dataclass
class Result:
    measured_on: dict
    entries: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    models: dict = field(default_factory=dict)
    interrupted: bool = False


def _attention(name: str):
    if name == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, SDPA[name]))


def _compile(fn, mode: str | None):
    # One code object is recompiled per shape; keep dynamo from giving up on many batch sizes.
    cfg = torch._dynamo.config
    for knob in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, knob):
            setattr(cfg, knob, max(getattr(cfg, knob), 256))
    return torch.compile(fn, mode=mode, dynamic=False)


def _plan(s: Settings) -> list[tuple[str, str, list[int]]]:
    """(model, component, resolutions) in measuring order; text encoding has no resolution."""
    plan = []
    for m in s.models:
        res = s.resolutions or [MODELS[m]["resolution"]]
        for comp in ORDER:
            if comp in s.components:
                plan.append((m, comp, [0] if comp == "text_encode" else res))
    return plan


def calibrate(s: Settings) -> Result:
    """Measure every configuration of `s`; returns what was measured, even if interrupted."""
    device = torch.device(s.device)
    dtype = DTYPES[s.dtype]
    if s.threads or device.type == "cpu":  # a fixed thread count, recorded in measured_on
        torch.set_num_threads(s.threads or os.cpu_count() or 1)
    plan = _plan(s)
    total = sum(len(res) * len(s.batches) for _, _, res in plan)
    bar = tqdm(total=total, desc="calibrate", unit="cfg", file=sys.stderr,
               disable=not s.progress, dynamic_ncols=True)
    peak = peak_matmul_tflops(device, dtype)
    copy = copy_bandwidth_gbs(device)
    mo = describe(device) | {
        "dtype": s.dtype,
        "peak_tflops": peak["tflops"],
        "peak_matmul_size": peak.get("size"),
        "peak_method": f"{s.dtype} {peak['method']}",
        "copy_gb_s": copy["gb_s"],
        "copy_method": copy["method"],
        "compile": s.compile,
        "compile_mode": s.compile_mode if s.compile else None,
        "attention": s.attention,
        "warmup": s.warmup,
        "repeats": s.repeats,
        "timer": "cuda events" if device.type == "cuda" else "time.perf_counter",
        "cfg": s.cfg,
        "seed": s.seed,
    }
    out = Result(mo)
    try:
        for model, comp, resolutions in plan:
            _model_info(out, model)
            _measure_component(s, out, bar, model, comp, resolutions, device, dtype)
    except KeyboardInterrupt:
        out.interrupted = True
        bar.write("interrupted: keeping what was measured so far", file=sys.stderr)
    finally:
        bar.close()
    return out


def _model_info(out: Result, model: str) -> None:
    if model in out.models:
        return
    out.models[model] = {
        "config_hash": config_hash(MODELS[model]),
        "components": {
            c: {
                "class": [e["class"] for e in cfg] if isinstance(cfg, list) else cfg["class"],
                "params": component_params(model, c),
                "config_hash": config_hash(cfg),
            }
            for c in ORDER
            for cfg in [component_config(model, c)]
        },
    }


def _skip(out: Result, bar, model, comp, res, batch, reason: str) -> None:
    out.skipped.append(
        {"model": model, "component": comp, "resolution": res, "batch": batch, "reason": reason}
    )
    bar.write(f"skipped {model} {comp} res {res} batch {batch}: {reason}", file=sys.stderr)


def _measure_component(s, out, bar, model, comp, resolutions, device, dtype) -> None:
    torch.manual_seed(s.seed)
    failed = None
    try:
        modules = build_component(model, comp, device, dtype)
    except RuntimeError as e:  # includes torch.OutOfMemoryError
        failed = "out of memory building the modules" if is_oom(e) else str(e).splitlines()[0]
    if failed:
        free_memory(device)
        for res in resolutions:
            _skip(out, bar, model, comp, res, None, failed)
        bar.update(len(resolutions) * len(s.batches))
        return
    try:
        for res in resolutions:
            for i, b in enumerate(s.batches):
                bar.set_postfix_str(f"{model} {comp} {res or ''} b{b}")
                entry, reason = _measure_one(s, out, modules, model, comp, res, b, device, dtype)
                bar.update(1)
                if entry is None:
                    _skip(out, bar, model, comp, res, b, reason)
                    bar.update(len(s.batches) - i - 1)
                    break
                out.entries.append(entry)
    finally:
        del modules
        free_memory(device)


def _measure_one(s, out, modules, model, comp, res, b, device, dtype):
    """One configuration: (entry, None) or (None, why it could not be measured)."""
    cfg = s.cfg and comp == "denoise_step"
    failed = None
    try:
        fn = workload(model, comp, modules, b, res, cfg, device, dtype)
        if s.compile:
            fn = _compile(fn, s.compile_mode)
        with _attention(s.attention):
            timing = time_fn(fn, device, s.warmup, s.repeats)
    except RuntimeError as e:
        failed = "out of memory" if is_oom(e) else str(e).splitlines()[0]
    fn = None
    if failed:  # outside the except block, so the traceback's tensors are released
        free_memory(device)
        return None, failed
    stats = timing.stats()
    try:
        flops = count_flops(model, comp, b, res, cfg)
    except Exception as e:  # a model the meta device cannot run: keep the timing anyway
        print(f"warning: FLOPs of {model} {comp}: {e}", file=sys.stderr)
        flops = None
    tflops = flops / stats["median"] / 1e12 if flops else None
    peak = out.measured_on["peak_tflops"]
    entry = {
        "model": model,
        "component": comp,
        "resolution": res,
        "batch": b,
        "dtype": s.dtype,
        "cfg": cfg,
        "latency_s": stats,
        "peak_mem_bytes": timing.peak_mem_bytes,
        "flops": flops,
        "tflops": tflops,
        "mfu": tflops / peak if tflops and peak else None,
        "compile": s.compile,
        "attention": s.attention,
        "config_hash": config_hash(component_config(model, comp)),
    }
    return entry, None
