"""What a search varies: grid values, parameter ranges and factors, each a PATH in the
scenario's own terms (`sim.overrides`), checked against the scenario before anything runs.

Errors name the flag: `error: --grid: fleet.pools.h100.gpuz=1,2: ... unknown key`.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.errors import InputError
from sim.overrides import apply_set, apply_sets
from sim.scenario import Scenario, merge, parse_scenario


@dataclass
class Base:
    """The scenario as written (after `--set`), where it came from, and its validated form."""

    data: dict
    source: str
    sc: Scenario
    sets: tuple[str, ...] = ()  # the --set changes applied (a search's fixed conditions)
    # Warm start (as plan --warm): each run begins this long before outputs.warmup_s with an
    # empty system, instead of simulating everything before the judged window. None: t = 0.
    warm_s: float | None = None

    @property
    def start(self) -> float:
        if self.warm_s is None:
            return 0.0
        return max(0.0, self.sc.outputs.warmup_s - self.warm_s)


def load_base(scenario: str | Path | dict, sets: list[str] | None = None,
              overrides: dict | None = None, warm_s: float | None = None) -> Base:
    """Read a scenario file (or take a dict), merge `overrides` (nested mappings merge, as
    `load_scenario` does) and apply `--set` changes, as `run` does."""
    if isinstance(scenario, dict):
        data, source = copy.deepcopy(scenario), "<dict>"
    else:
        from sim.inputs import read_yaml

        data, source = read_yaml(Path(scenario)), str(scenario)
    if not isinstance(data, dict):
        raise InputError(source, "(root)", "a scenario is a YAML mapping")
    if overrides:
        data = merge(data, overrides)
    if sets:
        apply_sets(data, sets)
    return Base(data, source, parse_scenario(copy.deepcopy(data), source), tuple(sets or ()),
                warm_s)


def with_point(data: dict, point: dict[str, Any], flag: str = "--grid") -> dict:
    """A copy of the scenario mapping with each PATH set to its value."""
    d = copy.deepcopy(data)
    for path, value in point.items():
        apply_set(d, path, value, f"{path}={value}", flag)
    return d


def check_point(base: Base, point: dict[str, Any], flag: str, text: str) -> Scenario:
    """Validate the scenario at `point`; a bad value is an error naming the flag."""
    d = with_point(base.data, point, flag)
    try:
        return parse_scenario(d, base.source)
    except InputError as e:
        raise InputError(flag, text, f"{e.field}: {e.message}") from None


def _split(text: str, flag: str) -> tuple[str, str]:
    if "=" not in text:
        raise InputError(flag, text, "expected PATH=VALUES")
    path, raw = (s.strip() for s in text.split("=", 1))
    if not path or any(not s for s in path.split(".")):
        raise InputError(flag, text, "the path has an empty segment")
    if not raw:
        raise InputError(flag, text, "no values after '='")
    return path, raw


_NUM = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _num(s: str, flag: str, text: str) -> int | float:
    s = s.strip()
    if not _NUM.fullmatch(s):
        raise InputError(flag, text, f"{s!r} is not a number")
    v = float(s)
    return int(v) if re.fullmatch(r"[+-]?\d+", s) else v


@dataclass
class Axis:
    """One grid dimension: a path and the values it takes."""

    path: str
    values: list
    text: str


def parse_grid(text: str, base: Base, flag: str = "--grid") -> Axis:
    """'PATH=1,3,5,10' (values read as YAML) or 'PATH=LOW:HIGH:STEP' (HIGH included)."""
    path, raw = _split(text, flag)
    parts = raw.split(":")
    if len(parts) == 3 and all(_NUM.fullmatch(p.strip()) for p in parts):
        lo, hi, step = (_num(p, flag, text) for p in parts)
        if lo > hi:
            raise InputError(flag, text, f"LOW {lo} is above HIGH {hi}")
        if step <= 0:
            raise InputError(flag, text, "STEP must be positive")
        n = int(math.floor((hi - lo) / step + 1e-9)) + 1
        if n > 10_000:
            raise InputError(flag, text, f"{n} values; a grid axis takes at most 10,000")
        if all(isinstance(x, int) for x in (lo, hi, step)):
            values = [lo + i * step for i in range(n)]
        else:
            values = [round(lo + i * step, 12) for i in range(n)]
    elif ":" in raw and "," not in raw and all(_NUM.fullmatch(p.strip()) for p in parts):
        raise InputError(flag, text, "a range is LOW:HIGH:STEP, e.g. 900:1500:100")
    else:
        from sim.inputs import load_yaml

        values = []
        for item in raw.split(","):
            try:
                values.append(load_yaml(item, flag) if item.strip() else None)
            except InputError as e:
                raise InputError(flag, text, f"{item!r}: {e.message}") from None
        if any(v is None for v in values):
            raise InputError(flag, text, "an empty value in the list")
    if len(set(map(repr, values))) != len(values):
        raise InputError(flag, text, "a value is repeated")
    for v in values:
        check_point(base, {path: v}, flag, text)
    return Axis(path, values, text)


@dataclass
class Param:
    """A continuous or integer range to search (or a factor to vary), LOW <= HIGH."""

    path: str
    low: float
    high: float
    kind: str  # "int" | "float"
    log: bool
    text: str

    def cast(self, x: float) -> int | float:
        return int(round(x)) if self.kind == "int" else float(x)


def parse_param(text: str, base: Base, flag: str = "--param") -> Param:
    """'PATH=LOW:HIGH[:int][:log]'; integer bounds without a type are an integer range."""
    path, raw = _split(text, flag)
    parts = [p.strip() for p in raw.split(":")]
    if len(parts) < 2:
        raise InputError(flag, text, "expected PATH=LOW:HIGH[:int|:log]")
    tags = parts[2:]
    bad = [t for t in tags if t not in ("int", "log", "float")]
    if bad:
        raise InputError(flag, text, f"unknown type {bad[0]!r}; use int, float or log")
    lo, hi = (_num(p, flag, text) for p in parts[:2])
    if lo > hi:
        raise InputError(flag, text, f"LOW {lo} is above HIGH {hi}")
    kind = "int" if "int" in tags or ("float" not in tags and isinstance(lo, int)
                                      and isinstance(hi, int) and "log" not in tags) else "float"
    log = "log" in tags
    if log and lo <= 0:
        raise InputError(flag, text, "a log range needs LOW > 0")
    p = Param(path, float(lo), float(hi), kind, log, text)
    for v in {p.cast(lo), p.cast(hi), p.cast((lo + hi) / 2)}:
        check_point(base, {path: v}, flag, text)
    return p


def overrides_for(data: dict, point: dict[str, Any]) -> dict:
    """The point as an overrides mapping that `compare --variant` merges unchanged: nested
    mappings down to each path, a list (which `merge` replaces) written out whole."""
    d = with_point(data, point)
    out: dict = {}
    for path in point:
        segs = path.split(".")
        node, o = d, out
        for k, seg in enumerate(segs):
            val = node[seg]
            if isinstance(val, list) or k == len(segs) - 1:
                o[seg] = copy.deepcopy(val)
                break
            o = o.setdefault(seg, {})
            node = val
    return out
