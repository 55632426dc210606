"""Placeholder profiles derived from a measured one, for GPUs no session could measure.

`python -m sim.calibration.derive` writes sim/data/profiles/placeholder-sdxl-h200.json (and
.md): the SDXL entries of the measured `h100-bf16` profile with every latency divided by the
H200/H100 SDXL throughput ratio of one MLPerf Inference round. NOT MEASURED: an H200 is an
H100 die with faster, larger HBM (4.8 vs 3.35 TB/s, 141 vs 80 GB), and the SDXL CFG step is
compute bound (diffusion_kernels.md: intensity ~2,600 FLOP/B against a ridge of ~263), so the
published gain is small and is assumed to hold for every component and batch size.

Figures (MLPerf Inference, closed division, NVIDIA TensorRT FP8 UNet, SDXL 1024², 20 steps,
offline samples/s per GPU; as gathered in the project's reference notes from the published
results tables):
  v4.0: H100 1.64, H200 1.71  -> latency ratio 1.64 / 1.71 = 0.959 (used here: same round)
  v4.1: H100 2.04, H200 2.18  -> 0.936 (a later round's software; a cross-check)
Results improved ~27% between rounds on the same hardware, so only same-round ratios are used.
"""

from __future__ import annotations

import copy
from pathlib import Path

from sim.fleet.cost import PACKAGE_PROFILES, load_profile

MLPERF_SDXL_OFFLINE = {  # samples/s per GPU, MLPerf Inference closed, NVIDIA TensorRT FP8
    "v4.0": {"H100": 1.64, "H200": 1.71},
    "v4.1": {"H100": 2.04, "H200": 2.18},
}
ROUND = "v4.0"


def scaled(base: dict, name: str, models: set[str], ratio: float, device: str,
           source: str) -> dict:
    """`base`'s entries of `models`, each latency (median, p10, p90) times `ratio`; FLOPs
    kept (same network), achieved TFLOP/s recomputed, MFU dropped (no measured peak)."""
    out = {
        "schema": base["schema"], "name": name, "placeholder": True, "source": source,
        "measured_on": {"device": device, "driver": None, "torch": None, "cuda": None,
                        "dtype": base["measured_on"].get("dtype"),
                        "compile": base["measured_on"].get("compile"),
                        "attention": base["measured_on"].get("attention")},
        "derived_from": {"profile": base["name"], "latency_ratio": round(ratio, 6)},
        "command": "python -m sim.calibration.derive",
        "steps": base.get("steps", 20),
        "entries": [],
    }
    for e in base["entries"]:
        if e["model"] not in models:
            continue
        e = copy.deepcopy(e)
        e["latency_s"] = {k: round(v * ratio, 7) for k, v in e["latency_s"].items()}
        e.pop("mfu", None)
        if e.get("flops"):
            e["tflops"] = e["flops"] / e["latency_s"]["median"] / 1e12
        out["entries"].append(e)
    return out


def h200(base_dir: Path = PACKAGE_PROFILES) -> dict:
    fig = MLPERF_SDXL_OFFLINE[ROUND]
    ratio = fig["H100"] / fig["H200"]
    base = load_profile(base_dir / "h100-bf16.json")
    src = (f"NOT MEASURED. The SDXL entries of the measured h100-bf16 profile (bf16 eager, "
           f"an H100 80GB HBM3), every latency x {ratio:.4f} = H100/H200 SDXL offline samples/s "
           f"per GPU in the same MLPerf Inference round ({ROUND}, closed, NVIDIA TensorRT FP8: "
           f"{fig['H100']} vs {fig['H200']}); the {ROUND} gain is assumed for every component "
           f"and batch size (sim/calibration/derive.py). Replace with `floodgate calibrate` on "
           f"an H200.")
    return scaled(base, "placeholder-sdxl-h200", {"sdxl"}, ratio,
                  "NVIDIA H200 141GB HBM3e (assumed, not measured)", src)


def main() -> None:
    from sim.calibration.profile import write_profile

    for p in write_profile(PACKAGE_PROFILES / "placeholder-sdxl-h200.json", h200()):
        print(p)


if __name__ == "__main__":
    main()
