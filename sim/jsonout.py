"""Strict JSON out: no NaN or Infinity in any file or line Floodgate writes.

Python's json writes `NaN` and `Infinity`, which strict parsers (browsers' JSON.parse, jq,
most languages) refuse. Inputs that would make them (infinite prices or SLOs, NaN thresholds)
are rejected by the schemas; a figure that has no value (a percentile of no requests) is
written as null.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def finite(obj: Any) -> Any:
    """`obj` with every NaN/inf float (Python or numpy) replaced by None, numpy scalars as
    Python numbers; containers copied."""
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    return obj


def dumps(obj: Any, **kw) -> str:
    """json.dumps of finite(obj); allow_nan=False so a miss is an error, not bad JSON."""
    return json.dumps(finite(obj), allow_nan=False, **kw)


def _refuse(name: str):
    raise ValueError(f"{name} is not JSON")


def loads_strict(text: str) -> Any:
    """Parse JSON refusing NaN, Infinity and -Infinity (what a strict parser does)."""
    return json.loads(text, parse_constant=_refuse)
