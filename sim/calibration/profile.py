"""The profile files: JSON in the "floodgate.profile/1" schema and a Markdown table beside it.

Both are written atomically (a temporary file in the same folder, then os.replace), and the
JSON is checked with sim.fleet.cost.load_profile before it replaces anything.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sim.fleet.cost import SCHEMA, load_profile
from sim.jsonout import dumps


def make_profile(
    name: str,
    measured_on: dict,
    command: str,
    entries: list[dict],
    models: dict,
    skipped: list[dict],
    interrupted: bool,
    created: str,
    steps: int = 20,
) -> dict:
    """A profile dict; `source` says how it was made, `placeholder` is false (measured)."""
    return {
        "schema": SCHEMA,
        "name": name,
        "placeholder": False,
        "source": f"measured by `floodgate calibrate` on {measured_on['device']} at {created}"
        + (" (interrupted: partial)" if interrupted else ""),
        "created": created,
        "measured_on": measured_on,
        "command": command,
        "steps": steps,
        "models": models,
        "entries": entries,
        "skipped": skipped,
        "interrupted": interrupted,
    }


def _fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown(profile: dict) -> str:
    """A table of every entry, per-image latency and images/s of that component alone."""
    mo = profile["measured_on"]
    peak = mo.get("peak_tflops")
    lines = [
        f"# Calibration profile `{profile['name']}`",
        "",
        f"- device: {mo['device']} (driver {mo.get('driver')}, torch {mo['torch']}, "
        f"CUDA {mo.get('cuda')})",
        f"- dtype {mo.get('dtype')}, compile {mo.get('compile')}, attention "
        f"{mo.get('attention')}, {mo.get('warmup')} warm-up + {mo.get('repeats')} timed repeats"
        f", timer {mo.get('timer')}",
        f"- peak matmul: {_fmt(peak, '.3f')} TFLOP/s ({mo.get('peak_method', '-')})",
        f"- device copy: {_fmt(mo.get('copy_gb_s'), ',.1f')} GB/s "
        f"({mo.get('copy_method', '-')})",
        f"- command: `{profile['command']}`",
        *([f"- **placeholder, NOT MEASURED**: {profile.get('source')}"]
          if profile.get("placeholder") else []),
        "",
        "| model | component | res | batch | cfg | median ms | p10 ms | p90 ms | ms/image "
        "| GFLOP | TFLOP/s | MFU | peak mem |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in profile["entries"]:
        lat = e["latency_s"]
        flops = e.get("flops")
        lines.append(
            f"| {e['model']} | {e['component']} | {e['resolution'] or '-'} | {e['batch']} "
            f"| {'yes' if e.get('cfg') else 'no'} | {lat['median'] * 1e3:.2f} "
            f"| {lat['p10'] * 1e3:.2f} | {lat['p90'] * 1e3:.2f} "
            f"| {lat['median'] * 1e3 / e['batch']:.2f} "
            f"| {_fmt(None if flops is None else flops / 1e9, '.4g')} "
            f"| {_fmt(e.get('tflops'), '.4f')} | {_fmt(e.get('mfu'), '.1%')} "
            f"| {_fmt_bytes(e.get('peak_mem_bytes'))} |"
        )
    for s in profile.get("skipped", []):
        lines.append(
            f"\nskipped: {s['model']} {s['component']} res {s['resolution']} batch "
            f"{s['batch']}: {s['reason']}"
        )
    if profile.get("interrupted"):
        lines.append("\n**Interrupted**: only the entries above were measured.")
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a profile is meant to be shared
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def write_profile(path: Path, profile: dict) -> tuple[Path, Path]:
    """Write PATH (JSON) and PATH with .md; check the JSON loads before it goes in place."""
    path = Path(path)
    md_path = path.with_suffix(".md")
    tmp = _atomic_write(path, dumps(profile, indent=1) + "\n")
    try:
        load_profile(tmp)
    except BaseException:
        os.unlink(tmp)
        raise
    tmp_md = _atomic_write(md_path, markdown(profile))
    os.replace(tmp, path)
    os.replace(tmp_md, md_path)
    return path, md_path
