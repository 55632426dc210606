"""Durations as people write them: seconds, or a number with a unit ("90s", "15m", "36h", "8d",
"2w"). The one definition of the syntax, used by scenarios, policy parameters and the CLI.

`Duration` is a float of seconds for pydantic that accepts either form; its JSON Schema says
"a number, or a string of this pattern" so that an editor completes and checks both.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, GetJsonSchemaHandler
from pydantic_core import CoreSchema

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
MAX_S = 1e10  # ~317 years: every duration field's ceiling (README, "Bounds and limits")
MIN_S = 1e-6
# JSON Schema (ECMA-262) spelling of what parse_duration accepts
PATTERN = r"^\s*[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?\s*[smhdw]?\s*$"
_RE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([smhdw]?)\s*")


def parse_duration(v: Any) -> Any:
    """Seconds from a duration string; anything else is passed on for the number check."""
    if isinstance(v, str):
        m = _RE.fullmatch(v)
        if not m or len(v) > 64:
            raise ValueError(f"not a duration: {v[:40]!r} (use seconds or e.g. '90s', '15m', '36h', '8d')")
        return float(m.group(1)) * UNITS[m.group(2) or "s"]
    return v


def parse_hours(v: Any) -> Any:
    """Hours from a duration string ("30d" is 720); a number, or a string without a unit, is
    hours already."""
    if isinstance(v, str):
        m = _RE.fullmatch(v)
        return float(m.group(1)) if m and not m.group(2) else parse_duration(v) / 3600.0
    return v


class _NumberOrString:
    """JSON Schema of a duration: the number schema pydantic made (with its bounds) or a
    duration string."""

    def __get_pydantic_json_schema__(self, core: CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        number = handler(core)  # bounds under pydantic's names: sim.scenario.json_schema
        return {"anyOf": [number, {"type": "string", "pattern": PATTERN,
                                   "description": "a number with a unit: s, m, h, d or w"}]}


# Field(...) on a field narrows the bounds (e.g. `Field(60.0, ge=1.0)`); these are the widest.
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=MAX_S), _NumberOrString()]
PosDuration = Annotated[float, BeforeValidator(parse_duration), Field(ge=MIN_S, le=MAX_S),
                        _NumberOrString()]
# A field in hours (mtbf_h): a number of hours, or a duration string
Hours = Annotated[float, BeforeValidator(parse_hours), _NumberOrString()]
