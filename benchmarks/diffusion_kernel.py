"""Time the diffusion denoising kernel and write a calibration profile.

Same as `floodgate calibrate` (all its options), e.g.
  python benchmarks/diffusion_kernel.py --model tiny-unet --device cpu --out /tmp/p.json
  python benchmarks/diffusion_kernel.py --model sd15,sdxl,sd3-medium --device cuda --dtype bf16
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["calibrate", *sys.argv[1:]]))
