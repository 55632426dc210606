"""What the measurement ran on: device name, driver, library versions, thread count."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_driver() -> str | None:
    """The NVIDIA driver version from nvidia-smi, or None when it cannot be asked."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_name()} ({torch.get_num_threads()} threads)"


def describe(device: torch.device) -> dict:
    """The `measured_on` block, less the run settings the runner adds."""
    import diffusers
    import transformers

    cuda = device.type == "cuda"
    info = {
        "device": device_name(device),
        "driver": gpu_driver() if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if cuda:
        props = torch.cuda.get_device_properties(device)
        info["gpu_memory_bytes"] = int(props.total_memory)
        info["sm_count"] = props.multi_processor_count
    return info
