"""`--kernel torch`: a batch runs the real denoiser instead of sleeping the cost model.

A batch of b images runs what the cost model prices: text encoding, `steps` denoising steps
(model forward with classifier-free guidance, Euler update) and a VAE decode, on modules
built from the calibration configs with random weights (sim/calibration/build.py). On a CPU
the tiny variant of a pool's model runs; on a GPU the full-size one. torch is imported here
only, and this module only in that mode.
"""

from __future__ import annotations

import threading

import torch

from sim.calibration.build import build_component, workload
from sim.calibration.configs import MODELS
from sim.calibration.device import DTYPES
from sim.fleet.fleet import PoolSetup
from sim.scenario import Scenario

TINY = {"sd15": "tiny-unet", "sdxl": "tiny-sdxl", "sd3-medium": "tiny-dit"}
COMPONENTS = ("text_encode", "denoise_step", "vae_decode")


def pick_model(name: str | None, device: torch.device) -> str:
    """The model a pool runs: its own on a GPU, the tiny variant on a CPU."""
    if name not in MODELS:
        return "tiny-unet"
    return TINY.get(name, name) if device.type == "cpu" else name


class TorchRunner:
    """Runs batches on real modules; `run` is called from worker threads."""

    def __init__(self, sc: Scenario, pools: list[PoolSetup], device: str | None = None,
                 dtype: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = DTYPES[dtype or ("fp16" if self.device.type == "cuda" else "fp32")]
        self.models = [pick_model(p.model, self.device) for p in sc.fleet.pools]
        self.res = [MODELS[m]["resolution"] if m != p.model or p.resolution is None else p.resolution
                    for m, p in zip(self.models, sc.fleet.pools, strict=True)]
        self.modules = {m: {c: build_component(m, c, self.device, self.dtype) for c in COMPONENTS}
                        for m in set(self.models)}
        self._work: dict[tuple[int, int, str], object] = {}
        self._lock = threading.Lock()
        for j in range(len(pools)):  # warm up: first calls allocate and pick kernels
            self.run(j, 1, 1)

    def _fn(self, pool: int, b: int, comp: str):
        key = (pool, b, comp)
        with self._lock:
            fn = self._work.get(key)
            if fn is None:
                m = self.models[pool]
                fn = workload(m, comp, self.modules[m][comp], b, self.res[pool], True,
                              self.device, self.dtype)
                self._work[key] = fn
        return fn

    def run(self, pool: int, b: int, steps: int) -> None:
        """One batch of b images with `steps` denoising steps."""
        with torch.inference_mode():
            self._fn(pool, b, "text_encode")()
            step = self._fn(pool, b, "denoise_step")
            for _ in range(max(1, steps)):
                step()
            self._fn(pool, b, "vae_decode")()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def describe(self) -> str:
        return f"{', '.join(sorted(set(self.models)))} on {self.device} ({self.dtype})"
