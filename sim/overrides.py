"""One-off changes to a scenario by path: `--set fleet.pools.h100.gpus=900`.

One path syntax for every command (run, plan, compare, the Python API): dot-separated
segments in the scenario's own terms. A list is indexed by the name its items carry where they
have one (`fleet.pools.h100`, `tiers.free`, `policies.daily_quota`; a policy by its `policy`
name), or by position (`policies.0`). The value is read as YAML (`3`, `true`, `2h`, `[1, 2]`).
A change is applied to the scenario as written, before validation, so the scenario's own
checks judge the result.
"""

from __future__ import annotations

from typing import Any

from sim.errors import InputError, did_you_mean
from sim.inputs import load_yaml

NAME_KEYS = ("name", "policy")


def parse_set(text: str, flag: str = "--set") -> tuple[str, Any]:
    """'PATH=VALUE' -> (path, value read as YAML)."""
    if "=" not in text:
        raise InputError(flag, text, "expected PATH=VALUE, e.g. fleet.pools.h100.gpus=900")
    path, raw = text.split("=", 1)
    path = path.strip()
    if not path or any(not s for s in path.split(".")):
        raise InputError(flag, text, "the path has an empty segment")
    try:  # the scenario's own YAML limits (depth, digits, duplicate keys)
        value = load_yaml(raw, flag) if raw.strip() else ""
    except InputError as e:
        msg = "the value is not valid YAML" if "malformed" in e.message else f"the value: {e.message}"
        raise InputError(flag, text[:100], msg) from None
    return path, value


def _suggest(word: str, options: list[str]) -> str:
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return did_you_mean(word, options) + (f" (there are: {shown})" if options else "")


def _item(seq: list, seg: str, text: str, flag: str, where: str) -> int:
    if seg.lstrip("-").isdigit():
        i = int(seg)
        if not -len(seq) <= i < len(seq):
            raise InputError(flag, text, f"{where} has {len(seq)} items; {seg} is out of range")
        return i % len(seq)
    hits = [i for i, x in enumerate(seq) if isinstance(x, dict)
            and any(str(x.get(k)) == seg for k in NAME_KEYS)]
    if len(hits) > 1:
        raise InputError(flag, text, f"{where} has {len(hits)} items named {seg!r}; "
                         f"use a position instead ({where}.{hits[0]})")
    if not hits:
        names = [str(x.get(k)) for x in seq if isinstance(x, dict) for k in NAME_KEYS if k in x]
        raise InputError(flag, text, f"{where} has no item named {seg!r}{_suggest(seg, names)}")
    return hits[0]


def apply_set(data: dict, path: str, value: Any, text: str | None = None,
              flag: str = "--set") -> dict:
    """Set `path` to `value` in the scenario mapping `data` (in place; also returned)."""
    text = text if text is not None else f"{path}={value}"
    if not isinstance(data, dict):
        raise InputError(flag, text, "the scenario is not a mapping")
    node: Any = data
    segs = path.split(".")
    where = ""
    for k, seg in enumerate(segs):
        last = k == len(segs) - 1
        if isinstance(node, dict):
            if last:
                node[seg] = value
                return data
            if seg not in node:
                raise InputError(flag, text, f"{where or 'the scenario'} has no {seg!r}"
                                 f"{_suggest(seg, [str(x) for x in node])}")
            node = node[seg]
        elif isinstance(node, list):
            i = _item(node, seg, text, flag, where)
            if last:
                node[i] = value
                return data
            node = node[i]
        else:
            raise InputError(flag, text, f"{where} is a value ({node!r}), not a section")
        where = f"{where}.{seg}" if where else seg
    return data


def apply_sets(data: dict, sets: list[str], flag: str = "--set") -> dict:
    """Apply each 'PATH=VALUE' in order."""
    for text in sets:
        path, value = parse_set(text, flag)
        apply_set(data, path, value, text, flag)
    return data
