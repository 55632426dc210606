"""FLOPs of a workload, counted with torch.utils.flop_counter on the meta device.

Meta tensors carry shapes but no data, so even the full-size models are counted in about a
second without memory. FlopCounterMode counts matmuls, convolutions and attention only
(elementwise work such as norms and activations is not included), as the reference table does.
"""

from __future__ import annotations

from functools import cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from sim.calibration.build import build_component, count_params, workload

META = torch.device("meta")


@cache
def meta_modules(model: str, component: str) -> tuple[torch.nn.Module, ...]:
    """The component's modules on the meta device (fp32: FLOPs do not depend on dtype)."""
    return tuple(build_component(model, component, META, torch.float32))


def count_flops(model: str, component: str, batch: int, resolution: int, cfg: bool) -> float:
    """FLOPs of one workload call (one denoising step, decode or text encoding) for a batch."""
    mods = list(meta_modules(model, component))
    fn = workload(model, component, mods, batch, resolution, cfg, META, torch.float32)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def component_params(model: str, component: str) -> int:
    """Parameter count of the component's modules."""
    return count_params(list(meta_modules(model, component)))
