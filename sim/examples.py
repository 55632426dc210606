"""The example scenarios: shipped in the wheel as sim/data/examples/, and in a checkout read
from its top-level scenarios/ folder (the one source of both)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent / "data" / "examples"
_CHECKOUT = Path(__file__).resolve().parents[1] / "scenarios"


def examples_dir() -> Path | None:
    """The folder holding the example scenarios, or None if this install has none."""
    for d in (_PACKAGE, _CHECKOUT):
        if d.is_dir():
            return d
    return None


def list_examples() -> list[str]:
    """Names of the runnable examples, e.g. 'ghibli_2025', 'policies/token_bucket' (variant
    override files such as ghibli_whatif/*, which have no fleet of their own, are left out)."""
    import yaml

    d = examples_dir()
    if d is None:
        return []
    names = []
    for p in sorted(d.rglob("*.yaml")):
        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(doc, dict) and "fleet" in doc and "demand" in doc:
            names.append(str(p.relative_to(d).with_suffix("")))
    return names


def example_path(name: str) -> Path | None:
    d = examples_dir()
    if d is None:
        return None
    p = d / f"{name}.yaml"
    return p if p.is_file() and name in list_examples() else None
