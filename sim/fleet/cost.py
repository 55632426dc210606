"""Cost model: GPU time of a batch, from a calibration profile.

A batch of b images costs  text_encode(b) + steps * denoise_step(b) + vae_decode(b)  seconds,
each term interpolated monotonically over the measured batch sizes (piecewise linear in b,
extrapolated at the per-image cost of the largest measured batch). Service-time variance is a
lognormal whose spread matches the measured p10/p90 of the denoising step.

Profile JSON (schema "floodgate.profile/1"), shipped as package data in sim/data/profiles/:
{
  "schema": "floodgate.profile/1", "name": str, "placeholder": bool, "source": str,
  "measured_on": {"device": str, "driver": str|null, "torch": str, "cuda": str|null, ...},
  "command": str,
  "entries": [{"model": str,
               "component": "denoise_step"|"vae_decode"|"text_encode"|"vae_encode",
               "resolution": int, "batch": int, "dtype": str, "cfg": bool,
               "latency_s": {"median": float, "p10": float, "p90": float},
               "peak_mem_bytes": int|null, "flops": float|null}, ...]
}
denoise_step latencies are per step for the whole batch (CFG already included when cfg is true).
vae_encode (optional) is the input-image encode of image-to-image requests (edits).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sim.errors import InputError
from sim.inputs import load_json, read_text

SCHEMA = "floodgate.profile/1"
COMPONENTS = ("denoise_step", "vae_decode", "text_encode")
Z90 = 1.2815515655446004  # standard normal quantile at 0.9


PACKAGE_PROFILES = Path(__file__).resolve().parents[1] / "data" / "profiles"


def profile_dirs(extra: list[Path] | None = None) -> list[Path]:
    """Where profiles are looked up by name, first match wins: the scenario's folder (`extra`),
    then each FLOODGATE_PROFILES folder, then the profiles shipped in the package. A profile of
    your own beside the scenario therefore overrides a shipped one of the same name."""
    dirs = list(extra or [])
    env = os.environ.get("FLOODGATE_PROFILES")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(PACKAGE_PROFILES)
    return dirs


def find_profile(ref: str, base: Path | None = None) -> Path | None:
    """A profile by path (relative to the scenario's folder) or by name (file stem)."""
    cands = []
    if base is not None:
        cands.append(base / ref)
    cands.append(Path(ref))
    for d in profile_dirs([base] if base else None):
        cands += [d / ref, d / f"{ref}.json"]
    for c in cands:
        try:
            if c.is_file():
                return c
        except OSError:  # a name too long for the file system, say: not this candidate
            continue
    return None


class _Loose(BaseModel):
    # metadata beyond the checked fields is kept (measured_on details, flops, mfu, ...)
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class Latency(_Loose):
    median: float = Field(gt=0, le=1e6)
    p10: float = Field(gt=0, le=1e6)
    p90: float = Field(gt=0, le=1e6)

    @model_validator(mode="after")
    def _ordered(self):
        if not self.p10 <= self.median <= self.p90:
            raise ValueError("needs p10 <= median <= p90")
        return self


class Entry(_Loose):
    model: str = Field(min_length=1, max_length=200)
    component: Literal["denoise_step", "vae_decode", "text_encode", "vae_encode"]
    resolution: int = Field(ge=0, le=65536, description="0: any resolution (text encoders)")
    batch: int = Field(ge=1, le=65536)
    latency_s: Latency


class ProfileFile(_Loose):
    """What a profile must hold; the rest is description (sim/calibration/profile.py)."""

    schema_: Literal["floodgate.profile/1"] = Field(alias="schema")
    name: str = Field("", max_length=200)
    entries: list[Entry] = Field(min_length=1, max_length=100000)


def profile_schema() -> dict:
    """JSON Schema of a profile file (what ProfileFile checks; the rest is free)."""
    sch = ProfileFile.model_json_schema(by_alias=True)
    sch["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    sch["$id"] = "urn:floodgate:profile/1"
    return sch


def profile_problems(data: dict) -> list[tuple[tuple, str, str]]:
    """Every problem of a profile: (loc into the data, field path, what); [] when it is fine."""
    try:
        ProfileFile.model_validate(data)
    except ValidationError as e:
        return [_one(err) for err in e.errors()]
    return []


def _one(err: dict) -> tuple[tuple, str, str]:
    raw = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in raw).lstrip(".")
    if err["type"] == "missing":
        return raw, loc or "(root)", "missing"
    if loc == "schema":
        return raw, loc, f"expected {SCHEMA!r}"
    return raw, loc or "(root)", err["msg"].removeprefix("Value error, ")


def _profile_error(e: ValidationError) -> tuple[str, str]:
    return _one(e.errors()[0])[1:]


def load_profile(path: Path) -> dict:
    """Read and check a profile; any problem is an InputError naming the file and field."""
    data = load_json(read_text(path), str(path))
    if not isinstance(data, dict):
        raise InputError(str(path), "(root)", "a profile is a JSON object")
    try:
        ProfileFile.model_validate(data)
    except ValidationError as e:
        raise InputError(str(path), *_profile_error(e)) from None
    return data


def _curve(points: dict[int, float], max_batch: int) -> np.ndarray:
    """Latency for b = 0..max_batch: monotone piecewise-linear through the measured points."""
    bs = np.array(sorted(points), dtype=float)
    ys = np.maximum.accumulate(np.array([points[int(b)] for b in bs], dtype=float))
    b = np.arange(max_batch + 1, dtype=float)
    out = np.interp(b, bs, ys)
    # Below the smallest batch: not cheaper than it. Above the largest: per-image cost holds.
    big = b > bs[-1]
    out[big] = ys[-1] * b[big] / bs[-1]
    return out


@dataclass
class CostModel:
    """Mean batch time for b = 0..max_batch and the service-time spread (lognormal sigma)."""

    fixed: np.ndarray  # text encode + VAE decode for a batch of b, seconds
    step: np.ndarray  # one denoising step for a batch of b, seconds
    steps: int  # nominal denoising steps per image
    sigma: float  # lognormal sigma of the measured step spread
    source: str
    model: str = ""  # the profile's model and resolution it was read for ("" / 0: constant)
    resolution: int = 0

    def batch_time(self, b: int, steps: float | None = None) -> float:
        s = self.steps if steps is None else steps
        return float(self.fixed[b] + s * self.step[b])

    def images_per_s(self, b: int) -> float:
        return b / self.batch_time(b)

    @classmethod
    def constant(cls, seconds: float, max_batch: int, steps: int = 1) -> CostModel:
        """A batch takes `seconds` whatever its size (theory tests, quick what-ifs)."""
        fixed = np.full(max_batch + 1, float(seconds))
        return cls(fixed, np.zeros(max_batch + 1), steps, 0.0, f"constant {seconds}s")

    @classmethod
    def from_profile(
        cls,
        profile: dict,
        path: str,
        model: str | None,
        resolution: int | None,
        steps: int,
        max_batch: int,
        field: str = "profile",
        cfg: bool | None = None,
        size_scale: float = 1.0,
    ) -> CostModel:
        """The cost of `model` at `resolution` (None: the profile's only model, its largest
        resolution). cfg None takes the denoiser as measured; cfg False without entries
        measured so costs a batch of b as a measured CFG batch of b / 2 (CFG runs the
        denoiser on two latents per image), never below the smallest measured batch.
        size_scale: an image of another size than the measured square `resolution` costs
        its denoising step and VAE decode times this (the text encoder does not see pixels)."""
        entries = profile["entries"]
        models = sorted({e["model"] for e in entries if e["component"] == "denoise_step"})
        if model is None:
            if len(models) != 1:
                raise InputError(path, f"{field}: model", f"choose one of {', '.join(models)}")
            model = models[0]
        if model not in models:
            raise InputError(path, f"{field}: model", f"{model!r} not in profile; has {', '.join(models)}")
        den = [e for e in entries if e["model"] == model and e["component"] == "denoise_step"]
        res_avail = sorted({e["resolution"] for e in den})
        if resolution is None:
            resolution = res_avail[-1]
        if resolution not in res_avail:
            raise InputError(
                path, f"{field}: resolution", f"{resolution} not measured; has {res_avail}"
            )
        den = [e for e in den if e["resolution"] == resolution]
        scale = 1
        if cfg is not None:
            same = [e for e in den if bool(e.get("cfg", True)) == cfg]
            if same:
                den = same
            elif cfg:
                raise InputError(path, f"{field}: cfg", "only measured without CFG")
            else:
                scale = 2  # no-CFG batch 2b runs like the measured CFG batch b
        step = {scale * e["batch"]: e["latency_s"]["median"] for e in den}
        sig = [
            (math.log(e["latency_s"]["p90"]) - math.log(e["latency_s"]["p10"])) / (2 * Z90)
            for e in den
        ]
        fixed = np.zeros(max_batch + 1)
        for comp in ("vae_decode", "text_encode"):
            pts = [
                e
                for e in entries
                if e["component"] == comp and e["model"] in (model, "*")
                and e["resolution"] in (resolution, 0)
            ]
            if not pts:  # a component measured for another model of the same resolution
                pts = [e for e in entries if e["component"] == comp and e["resolution"] in (resolution, 0)]
            if pts:
                k = size_scale if comp == "vae_decode" else 1.0
                fixed += k * _curve({e["batch"]: e["latency_s"]["median"] for e in pts}, max_batch)
        st = size_scale * _curve(step, max_batch)
        fixed[0] = 0.0
        st[0] = 0.0
        name = profile.get("name", Path(path).stem)
        tag = "" if cfg is None or scale == 1 else " no-cfg"
        tag += "" if size_scale == 1.0 else f" x{size_scale:g}"
        return cls(fixed, st, steps, float(np.median(sig)), f"{name}:{model}@{resolution}{tag}",
                   model, resolution)


def encode_curve(profile: dict, model: str, resolution: int, max_batch: int,
                 component: str = "vae_encode", size_scale: float = 1.0) -> np.ndarray | None:
    """Input-image encode time of a batch with n encodes (n = 0..max_batch) from the
    profile's vae_encode entries (or another component's) for this model, or any model, at
    this resolution, times size_scale (another image size); None if none were measured."""
    pts = [e for e in profile["entries"] if e["component"] == component
           and e["model"] in (model, "*") and e["resolution"] in (resolution, 0)]
    if not pts:
        pts = [e for e in profile["entries"] if e["component"] == component
               and e["resolution"] in (resolution, 0)]
    if not pts:
        return None
    out = size_scale * _curve({e["batch"]: e["latency_s"]["median"] for e in pts}, max_batch)
    out[0] = 0.0
    return out
