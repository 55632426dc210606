#!/usr/bin/env bash
# Calibrate on a GPU machine and write the profiles under OUT (default sim/data/profiles).
#   bash benchmarks/gpu_calibrate.sh eager     # all components, batches 1-16 (~5 min on an H100)
#   bash benchmarks/gpu_calibrate.sh compile   # torch.compile, denoise step, batches 1,8 (>9 min)
# Each run is stopped with SIGINT after LIMIT seconds (default 520): the calibrate command
# keeps and writes what it measured before the interrupt (the profile says "interrupted").
# Needs python3 with torch (CUDA), transformers and diffusers; the log goes to OUT too.
set -u
mode=${1:-eager}
OUT=${OUT:-sim/data/profiles}
LIMIT=${LIMIT:-520}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
log="$OUT/h100-bf16-$mode.log"
{
  date -u; nvidia-smi; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$log"
if [ "$mode" = eager ]; then
  echo "== smoke: tiny-unet on cuda"; date -u
  python3 benchmarks/diffusion_kernel.py --model tiny-unet --device cuda --batches 1 --repeats 3 \
      --quiet --out "${TMPDIR:-/tmp}/smoke.json" 2>&1 | tail -3 | tee -a "$log" || exit 1
  [ -s "${TMPDIR:-/tmp}/smoke.json" ] || { echo "smoke failed" | tee -a "$log"; exit 1; }
  echo "== eager: sd15, sdxl, sd3-medium"; date -u
  timeout -s INT "$LIMIT" python3 benchmarks/diffusion_kernel.py --model sd15,sdxl,sd3-medium \
      --device cuda --dtype bf16 --batches 1,2,4,8,16 --quiet --out "$OUT/h100-bf16.json" \
      2>&1 | tee -a "$log"
else
  echo "== compile: denoise step"; date -u
  timeout -s INT "$LIMIT" python3 benchmarks/diffusion_kernel.py --model sd15,sdxl,sd3-medium \
      --device cuda --dtype bf16 --compile --components denoise_step --batches 1,8 --quiet \
      --out "$OUT/h100-bf16-compile.json" 2>&1 | tee -a "$log"
fi
echo "rc ${PIPESTATUS[0]}"; date -u
