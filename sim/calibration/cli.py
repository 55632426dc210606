"""`floodgate calibrate` and `floodgate profiles`.

torch and diffusers are imported inside the calibrate handler only: building the parser (as
`floodgate run` does) must not load them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from sim.args import int_in, seed
from sim.calibration.configs import COMPONENTS, MODELS, max_resolution, resolution_step
from sim.errors import InputError
from sim.jsonout import dumps

ATTENTION = ("default", "math", "flash", "efficient", "cudnn")
DTYPE_NAMES = ("fp32", "fp16", "bf16")


def _csv(values: list[str] | None) -> list[str]:
    """Repeatable and comma-separated: ['a,b', 'c'] -> ['a', 'b', 'c']."""
    return [v.strip() for x in values or [] for v in x.split(",") if v.strip()]


def _ints(arg: str, values: list[str], low: int = 1) -> list[int]:
    out = []
    for v in values:
        try:
            n = int(v)
        except ValueError:
            raise InputError(arg, v, "not an integer") from None
        if n < low:
            raise InputError(arg, v, f"must be at least {low}")
        out.append(n)
    return sorted(set(out))


def _batches(args, cuda: bool) -> list[int]:
    vals = _csv(args.batches) or ["auto"]
    if vals == ["auto"]:  # 1, 2, 4, ... up to --max-batch (or out of memory)
        cap = args.max_batch or (256 if cuda else 4)
        if cap < 1:
            raise InputError("--max-batch", str(cap), "must be at least 1")
        return [2**k for k in range(cap.bit_length()) if 2**k <= cap]
    return _ints("--batches", vals)


def _check(args) -> tuple[list[str], str, list[str], list[int] | None, Path]:
    """Every cheap check, before torch is imported: models, device, dtype, sizes, output."""
    models = _csv(args.model)
    if not models:
        raise InputError("--model", "(none)", f"give at least one of {', '.join(MODELS)}")
    for m in models:
        if m not in MODELS:
            raise InputError("--model", m, f"unknown model; known: {', '.join(MODELS)}")
    dev = args.device
    if dev != "cpu" and not (dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise InputError("--device", dev, "unknown device; use cpu, cuda or cuda:N")
    dtype = args.dtype or ("fp32" if dev == "cpu" else "bf16")
    if dtype not in DTYPE_NAMES:
        raise InputError("--dtype", dtype, f"use one of {', '.join(DTYPE_NAMES)}")
    if args.attention not in ATTENTION:
        raise InputError("--attention", args.attention, f"use one of {', '.join(ATTENTION)}")
    comps = _csv(args.components) or list(COMPONENTS)
    for c in comps:
        if c not in COMPONENTS:
            raise InputError("--components", c, f"use some of {', '.join(COMPONENTS)}")
    res = _ints("--resolution", _csv(args.resolution)) or None
    for m in models:
        for r in res or []:
            step, top = resolution_step(m), max_resolution(m)
            if r % step:
                raise InputError("--resolution", str(r), f"{m} needs a multiple of {step} pixels")
            if top and r > top:
                raise InputError("--resolution", str(r), f"{m} goes up to {top} pixels")
    for name, value, low in (("--repeats", args.repeats, 1), ("--warmup", args.warmup, 0),
                             ("--steps", args.steps, 1), ("--threads", args.threads, 1)):
        if value is not None and value < low:
            raise InputError(name, str(value), f"must be at least {low}")
    return models, dtype, comps, res, _out_path(args, models)


def _out_path(args, models: list[str]) -> Path:
    if args.out is None:  # default: out/profiles/, created on demand
        out = Path("out") / "profiles" / f"{args.device.split(':')[0]}-{'-'.join(models)}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
    out = Path(args.out)
    if out.suffix != ".json":
        raise InputError("--out", args.out, "a profile file ends in .json")
    if not out.parent.is_dir():
        raise InputError("--out", args.out, f"directory {str(out.parent)!r} does not exist")
    return out


def _settings(args):
    """Checked options as runner Settings, and the output path (imports torch)."""
    models, dtype, comps, res, out = _check(args)
    if args.device == "cpu":
        # Idle OpenMP threads sleep instead of spinning: on a shared CPU a spinning thread
        # starves a busy one and single repeats jump 10-50x. Read when torch loads (below).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from sim.calibration.runner import Settings

    dev = args.device
    if dev != "cpu":
        if not torch.cuda.is_available():
            raise InputError("--device", dev, f"CUDA is not available to torch {torch.__version__}")
        if ":" in dev and int(dev[5:]) >= torch.cuda.device_count():
            raise InputError("--device", dev, f"only {torch.cuda.device_count()} GPU(s)")
    s = Settings(
        models=models, device=dev, dtype=dtype, batches=_batches(args, dev != "cpu"),
        resolutions=res, repeats=args.repeats, warmup=args.warmup, cfg=args.cfg,
        compile=args.compile, compile_mode=args.compile_mode, attention=args.attention,
        threads=args.threads, components=tuple(comps), progress=not args.quiet, seed=args.seed,
    )
    return s, out


def _command(s, out: Path, steps: int, name: str) -> str:
    """The fully resolved command line that reproduces this run."""
    parts = [
        "floodgate", "calibrate", "--model", ",".join(s.models), "--device", s.device,
        "--dtype", s.dtype, "--batches", ",".join(map(str, s.batches)),
        "--repeats", str(s.repeats), "--warmup", str(s.warmup),
        "--cfg" if s.cfg else "--no-cfg", "--attention", s.attention,
        "--components", ",".join(s.components), "--steps", str(steps),
        "--seed", str(s.seed), "--name", name, "--out", str(out),
    ]
    if s.resolutions:
        parts += ["--resolution", ",".join(map(str, s.resolutions))]
    if s.threads:
        parts += ["--threads", str(s.threads)]
    if s.compile:
        parts += ["--compile"] + (["--compile-mode", s.compile_mode] if s.compile_mode else [])
    return shlex.join(parts)


def cmd_calibrate(args) -> int:
    """Measure, write PROFILE.json and PROFILE.md, print {"profile", "device", "entries"}."""
    from datetime import UTC, datetime

    s, out = _settings(args)
    from sim.calibration.profile import make_profile, markdown, write_profile
    from sim.calibration.runner import calibrate

    name = args.name or out.stem
    t0 = time.perf_counter()
    res = calibrate(s)
    wall = time.perf_counter() - t0
    if not res.entries:
        why = ("interrupted before anything was measured" if res.interrupted
               else "nothing could be measured (see the skipped lines above)")
        print(f"error: {out}: entries: {why}; nothing written", file=sys.stderr)
        return 130 if res.interrupted else 1
    res.measured_on["wall_s"] = round(wall, 1)
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    prof = make_profile(
        name, res.measured_on, _command(s, out, args.steps, name), res.entries, res.models,
        res.skipped, res.interrupted, created, steps=args.steps,
    )
    path, md = write_profile(out, prof)
    print(markdown(prof))
    print(f"wrote {path} and {md} ({len(res.entries)} entries in {wall:.1f} s)", file=sys.stderr)
    print(dumps({"profile": str(path), "device": res.measured_on["device"],
                      "entries": len(res.entries)}))
    return 130 if res.interrupted else 0


def cmd_profiles(args) -> int:
    """List profiles (the search path, or the files given) with images/s at the best batch."""
    from sim.calibration.listing import find_all, summarise, table

    if args.steps is not None and args.steps < 1:
        raise InputError("--steps", str(args.steps), "must be at least 1")
    for p in args.paths:
        if not Path(p).is_file():
            raise InputError(p, "(file)", "no such profile")
    paths = [Path(p) for p in args.paths] or find_all()
    rows = [r for p in paths for r in summarise(p, args.steps)]
    if args.json:
        print(dumps(rows))
    elif rows:
        print(table(rows))
    else:
        print("no profiles found", file=sys.stderr)
    return 0


def add_parsers(subparsers) -> None:
    """Add `calibrate` and `profiles` to an argparse subparsers object."""
    c = subparsers.add_parser(
        "calibrate",
        description="Build denoisers from config dicts (random weights) and time one "
        "denoising step, VAE decode and text encoding per batch size; write a profile.",
    )
    c.add_argument("--model", action="append", metavar="NAME",
                   help=f"repeatable or comma list: {', '.join(MODELS)}")
    c.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    c.add_argument("--dtype", help="fp32, fp16 or bf16 (default: bf16 on cuda, fp32 on cpu)")
    c.add_argument("--batches", action="append",
                   help="comma list, or 'auto': 1, 2, 4, ... up to --max-batch or out of memory")
    c.add_argument("--max-batch", type=int_in(1, 4096), help="cap for auto batches (default cuda 256, cpu 4)")
    c.add_argument("--resolution", action="append",
                   help="image side in pixels, repeatable or comma list (default: per model)")
    c.add_argument("--repeats", type=int_in(1, 10000), default=20, help="timed repeats (default 20)")
    c.add_argument("--warmup", type=int_in(0, 10000), default=3, help="untimed warm-up runs (default 3)")
    c.add_argument("--cfg", action=argparse.BooleanOptionalAction, default=True,
                   help="classifier-free guidance: the denoiser batch is doubled (default on)")
    c.add_argument("--compile", action="store_true", help="torch.compile each workload")
    c.add_argument("--compile-mode", help="torch.compile mode, e.g. max-autotune")
    c.add_argument("--attention", default="default",
                   help="SDPA backend: default, math, flash, efficient or cudnn")
    c.add_argument("--components", action="append",
                   help=f"comma list of {', '.join(COMPONENTS)} (default all)")
    c.add_argument("--threads", type=int_in(1, 4096), help="torch threads (default: all cores on cpu)")
    c.add_argument("--steps", type=int_in(1, 10000), default=20,
                   help="nominal denoising steps per image, recorded in the profile (default 20)")
    c.add_argument("--seed", type=seed, default=0, help="seed of the random weights and inputs")
    c.add_argument("--name", help="profile name (default: the output file's stem)")
    c.add_argument("--out", help="profile JSON path (default out/profiles/DEVICE-MODELS.json)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_calibrate)

    p = subparsers.add_parser(
        "profiles",
        description="List sim/data/profiles/*.json and the FLOODGATE_PROFILES folders (or "
        "the files given) with images/s at the best measured batch, from the cost model.",
    )
    p.add_argument("paths", nargs="*", help="profile files (default: the profile search path)")
    p.add_argument("--steps", type=int_in(1, 10000),
                   help="denoising steps per image (default: the profile's, else 20)")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON line")
    p.set_defaults(func=cmd_profiles)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (python -m sim.calibration.cli); `floodgate` wires add_parsers."""
    ap = argparse.ArgumentParser(prog="floodgate")
    add_parsers(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:
        print(e.one_line(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # raised before measuring started (imports, model build)
        print("interrupted: nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
