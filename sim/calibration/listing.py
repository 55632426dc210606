"""`floodgate profiles`: the profiles on the search path and their images/s at the best batch."""

from __future__ import annotations

from pathlib import Path

from sim.fleet.cost import CostModel, load_profile, profile_dirs

DEFAULT_STEPS = 20


def find_all(extra: list[Path] | None = None) -> list[Path]:
    """Every *.json in the profile folders; like a lookup by name, the first of a name wins."""
    seen: set[str] = set()
    found = []
    for d in profile_dirs(extra):
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.json")):
            if p.stem not in seen:
                seen.add(p.stem)
                found.append(p)
    return found


def summarise(path: Path, steps: int | None = None) -> list[dict]:
    """One row per (model, resolution) of a profile, from the simulator's own CostModel."""
    prof = load_profile(path)
    steps = steps or prof.get("steps") or DEFAULT_STEPS
    den = [e for e in prof["entries"] if e["component"] == "denoise_step"]
    rows = []
    for model in sorted({e["model"] for e in den}):
        for res in sorted({e["resolution"] for e in den if e["model"] == model}):
            mine = [e for e in den if e["model"] == model and e["resolution"] == res]
            batches = sorted({e["batch"] for e in mine})
            cost = CostModel.from_profile(prof, str(path), model, res, steps, batches[-1])
            best = max(batches, key=cost.images_per_s)
            rows.append({
                "profile": prof.get("name", Path(path).stem),
                "path": str(path),
                "device": (prof.get("measured_on") or {}).get("device"),
                "model": model,
                "resolution": res,
                "dtype": mine[0].get("dtype"),
                "cfg": mine[0].get("cfg"),
                "steps": steps,
                "best_batch": best,
                "images_per_s": cost.images_per_s(best),
                "placeholder": bool(prof.get("placeholder")),
            })
    return rows


def table(rows: list[dict]) -> str:
    """A plain-text table, one row per (profile, model, resolution)."""
    head = ["profile", "device", "model", "res", "dtype", "cfg", "steps", "best batch",
            "images/s", ""]
    body = [
        [r["profile"], str(r["device"]), r["model"], str(r["resolution"]), str(r["dtype"]),
         "yes" if r["cfg"] else "no", str(r["steps"]), str(r["best_batch"]),
         f"{r['images_per_s']:.4g}", "placeholder" if r["placeholder"] else ""]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    return "\n".join(
        "  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
        for line in [head, *body]
    )
