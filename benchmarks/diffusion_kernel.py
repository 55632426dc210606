"""Time the diffusion denoising kernel and write a calibration profile.

The same as `floodgate calibrate` (all its options; --help lists them), e.g.
  python benchmarks/diffusion_kernel.py --model tiny-unet --device cpu --out /tmp/p.json
  python benchmarks/diffusion_kernel.py --model sd15,sdxl,sd3-medium --device cuda \
      --out sim/data/profiles/h100-bf16.json
Builds the denoisers from config dicts (random weights), times one denoising step, the VAE
decode and text encoding per batch size, and writes PROFILE.json and PROFILE.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.calibration.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["calibrate", *sys.argv[1:]]))
