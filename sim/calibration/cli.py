"""`floodgate calibrate` and `floodgate profiles`. torch is imported only when calibrating."""

from __future__ import annotations

import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sim.errors import InputError


def add_parsers(sub) -> None:
    c = sub.add_parser("calibrate", help="time the diffusion denoising kernel and write a profile")
    c.add_argument("--model", action="append", default=[], help="e.g. tiny-unet, sd15, sdxl, sd3-medium (repeatable, or a comma list)")
    c.add_argument("--device", default="cpu", help="cpu or cuda")
    c.add_argument("--dtype", help="fp32 (CPU default), bf16 (GPU default) or fp16")
    c.add_argument("--batches", help="comma list; default 1,2,4,... until memory runs out (GPU) or 1,2 (CPU)")
    c.add_argument("--resolution", type=int, help="image side in pixels (default: the model's)")
    c.add_argument("--repeats", type=int, default=20)
    c.add_argument("--warmup", type=int, default=3)
    c.add_argument("--cfg", action=__import__("argparse").BooleanOptionalAction, default=True,
                   help="classifier-free guidance: the denoiser batch is doubled")
    c.add_argument("--compile", action="store_true", help="torch.compile the denoiser")
    c.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    c.add_argument("--steps", type=int, default=20, help="denoising steps a served image takes")
    c.add_argument("--out", help="profile JSON (default benchmarks/profiles/<device>-<models>.json)")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_calibrate)
    p = sub.add_parser("profiles", help="list calibration profiles")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profiles)


def _models(args) -> list[str]:
    from sim.calibration.models import MODELS

    names = [m for arg in (args.model or ["tiny-unet"]) for m in arg.split(",") if m]
    for m in names:
        if m not in MODELS:
            raise InputError("--model", m, f"unknown model; known: {', '.join(MODELS)}")
    return names


def cmd_calibrate(args) -> int:
    models = _models(args)
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise InputError("--device", args.device, "use cpu or cuda")
    out = Path(args.out) if args.out else Path("benchmarks/profiles") / f"{args.device}-{'-'.join(models)}.json"
    if not out.parent.is_dir():
        raise InputError(str(out), "(file)", f"folder {out.parent} does not exist")
    if args.repeats < 1 or args.warmup < 0:
        raise InputError("--repeats", str(args.repeats), "needs repeats >= 1 and warmup >= 0")
    try:
        batches = [int(b) for b in args.batches.split(",")] if args.batches else None
    except ValueError:
        raise InputError("--batches", args.batches, "a comma list of integers") from None
    if batches is not None and any(b < 1 for b in batches):
        raise InputError("--batches", args.batches, "batch sizes are >= 1")

    import torch

    from sim.calibration import bench
    from sim.calibration.models import MODELS
    from sim.fleet.cost import SCHEMA
    from sim.report.write import write_file

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device", args.device, "no CUDA device here; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype_name = args.dtype or ("fp32" if args.device == "cpu" else "bf16")
    if dtype_name not in bench.DTYPES:
        raise InputError("--dtype", dtype_name, f"use one of {', '.join(bench.DTYPES)}")
    if batches is None:
        batches = [1, 2] if args.device == "cpu" else [1, 2, 4, 8, 16, 32, 64]
    info = bench.device_info(args.device)
    peak = bench.peak_tflops(args.device, getattr(torch, bench.DTYPES[dtype_name]))
    entries: list[dict] = []
    total = len(models) * len(batches) * 3
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="calibrate", unit="cfg", file=sys.stderr)

    def keep(e: dict) -> None:
        entries.append(e)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{e['model']} {e['component']} b={e['batch']}")

    t0 = time.perf_counter()
    interrupted = False
    try:
        for m in models:
            res = args.resolution or MODELS[m].resolution
            bench.measure(m, args.device, dtype_name, batches, res, args.cfg, args.warmup,
                          args.repeats, args.compile, peak, keep)
    except KeyboardInterrupt:
        interrupted = True  # keep what was measured
    finally:
        if bar is not None:
            bar.close()
    prof = {
        "schema": SCHEMA,
        "name": out.stem,
        "placeholder": False,
        "source": f"measured by floodgate calibrate on {info['device']}",
        "measured_on": {**info, "dtype": dtype_name, "peak_tflops": round(peak, 3),
                        "date": datetime.now(UTC).isoformat(timespec="seconds"),
                        "wall_s": round(time.perf_counter() - t0, 1), "interrupted": interrupted},
        "command": "floodgate " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "steps": args.steps,
        "entries": entries,
    }
    write_file(out, json.dumps(prof, indent=1) + "\n")
    write_file(out.with_suffix(".md"), markdown(prof))
    print(json.dumps({"profile": str(out), "device": info["device"], "entries": len(entries)}))
    return 130 if interrupted else 0


def markdown(prof: dict) -> str:
    mo = prof["measured_on"]
    lines = [f"# Profile {prof['name']}", "",
             f"{prof['source']}; torch {mo.get('torch')}, CUDA {mo.get('cuda')}, driver "
             f"{mo.get('driver')}, dtype {mo.get('dtype')}, matmul peak {mo.get('peak_tflops')} TFLOP/s.",
             f"Command: `{prof['command']}`", "",
             "| model | component | res | batch | CFG | median s | p10 s | p90 s | TFLOP/s | MFU |",
             "|---|---|---:|---:|:-:|---:|---:|---:|---:|---:|"]
    for e in prof["entries"]:
        lat = e["latency_s"]
        lines.append(f"| {e['model']} | {e['component']} | {e['resolution']} | {e['batch']} | "
                     f"{'yes' if e.get('cfg') else 'no'} | {lat['median']:.4g} | {lat['p10']:.4g} | "
                     f"{lat['p90']:.4g} | {e.get('tflops') or '–'} | {e.get('mfu') or '–'} |")
    return "\n".join(lines) + "\n"


def cmd_profiles(args) -> int:
    from sim.fleet.cost import CostModel, load_profile, profile_dirs

    seen, rows = set(), []
    for d in profile_dirs():
        for f in sorted(Path(d).glob("*.json")) if Path(d).is_dir() else []:
            if f.resolve() in seen:
                continue
            seen.add(f.resolve())
            prof = load_profile(f)
            steps = int(prof.get("steps") or 20)
            for m in sorted({e["model"] for e in prof["entries"] if e["component"] == "denoise_step"}):
                bs = sorted({e["batch"] for e in prof["entries"] if e["model"] == m and e["component"] == "denoise_step"})
                cm = CostModel.from_profile(prof, str(f), m, None, steps, max(bs))
                best = max(bs, key=cm.images_per_s)
                rows.append({"profile": f.stem, "device": prof.get("measured_on", {}).get("device"),
                             "model": m, "steps": steps, "best_batch": best,
                             "images_per_s": round(cm.images_per_s(best), 4),
                             "placeholder": bool(prof.get("placeholder")), "path": str(f)})
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'profile':32} {'model':12} {'device':40} {'batch':>5} {'img/s':>9}  note")
    for r in rows:
        note = "placeholder (not measured)" if r["placeholder"] else ""
        print(f"{r['profile']:32} {r['model']:12} {str(r['device'])[:40]:40} {r['best_batch']:>5} "
              f"{r['images_per_s']:>9.3f}  {note}")
    return 0
