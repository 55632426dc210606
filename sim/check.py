"""`floodgate check S`: validate a scenario without running it, reporting every problem.

Each problem is one line `error: <file>:<line>:<col>: <field path>: <what>` (the line and
column of the field's key, from the YAML node tree), the same wording `floodgate run` prints
for its first problem. Shape and types are checked all at once; the rules across sections
(tier names, shares), the profiles each pool names and the variants once the shape is right.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sim.errors import InputError
from sim.inputs import position, read_yaml_nodes
from sim.scenario import Problem, input_error, merge, scenario_problems


def loc_of(field: str) -> tuple:
    """`fleet.pools[0].profile` -> ('fleet', 'pools', 0, 'profile')."""
    out: list = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", field):
        out.append(int(index) if index else name)
    return tuple(out)


def _line(e: InputError) -> str:
    return e.one_line()


def _resources(sc, source: str, nodes: Any) -> list[str]:
    """Problems only the files a scenario names can show: profiles (found, valid, with the
    pool's model and batch sizes) and a trace (readable, its columns there)."""
    from sim.engine import pool_setup

    out = []
    for i in range(len(sc.fleet.pools)):
        try:
            pool_setup(sc, i)
        except InputError as e:
            out.append(_placed(e, source, nodes))
    if sc.demand.model == "trace":
        from sim.demand import build_demand

        try:
            build_demand(sc)
        except InputError as e:
            out.append(_placed(e, source, nodes))
    return out


def _placed(e: InputError, source: str, nodes: Any) -> str:
    """An InputError about the scenario file itself, with the line:col of its field."""
    if e.file == source and e.line is None and not e.field.startswith(("(", "line ")):
        pos = position(nodes, loc_of(e.field.split(" ")[0]))
        if pos is not None:
            e = InputError(e.file, e.field, e.message, *pos)
    return _line(e)


def check_profile(path: str | Path) -> list[str]:
    """Every problem of a calibration profile (floodgate.profile/1), with line:col."""
    import yaml

    from sim.fleet.cost import profile_problems
    from sim.inputs import load_json, read_text

    source = str(path)
    try:
        text = read_text(path)
        data = load_json(text, source)
    except InputError as e:
        return [_line(e)]
    if not isinstance(data, dict):
        return [_line(InputError(source, "(root)", "a profile is a JSON object"))]
    try:  # JSON is YAML: its node tree gives each key's place
        nodes = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        nodes = None
    return [_line(InputError(source, field, what, *(position(nodes, loc) or (None, None))))
            for loc, field, what in profile_problems(data)]


def check_file(path: str | Path, variants: list[str] | None = None) -> tuple[list[str], Any]:
    """(error lines, the scenario or None) for one scenario file; no lines: it would run.
    `variants`: NAME=OVERRIDES.yaml files, as `compare --variant`, each checked merged in. A
    .json file is checked as a calibration profile."""
    source = str(path)
    if source.endswith(".json"):
        return check_profile(path), None
    try:
        data, nodes = read_yaml_nodes(path)
    except InputError as e:
        return [_line(e)], None
    sc, probs = scenario_problems(data)
    lines = _sorted([input_error(source, p, nodes) for p in probs])
    if sc is None or lines:
        return lines, None
    sc.source = source
    lines += _resources(sc, source, nodes)
    # each variant merged in is a scenario too: a problem inside the variant's own overrides
    # is placed there, one elsewhere is the scenario's, said to come with that variant
    todo = [(n, o, source, nodes, ("variants", n)) for n, o in sc.variants.items()]
    for arg in variants or []:
        if "=" not in arg:
            lines.append(_line(InputError("--variant", arg, "expected NAME=OVERRIDES.yaml")))
            continue
        name, vpath = arg.split("=", 1)
        try:
            over, vnodes = read_yaml_nodes(vpath)
        except InputError as e:
            lines.append(_line(e))
            continue
        if not isinstance(over, dict):
            lines.append(_line(InputError(vpath, "(root)", "overrides are a YAML mapping")))
            continue
        todo.append((name, over, vpath, vnodes, ()))
    base = {k: v for k, v in data.items() if k != "variants"}
    for name, over, vsource, vnodes, prefix in todo:
        _, vp = scenario_problems(merge(base, over) if isinstance(over, dict) else over)
        errs = []
        for p in vp:
            if _within(over, p.loc):
                errs.append(input_error(vsource, Problem(prefix + p.loc, p.message), vnodes))
            else:
                errs.append(input_error(source, Problem(p.loc, f"variant {name}: {p.message}"),
                                        nodes))
        lines += _sorted(errs)
    return lines, (None if lines else sc)


def _sorted(errs: list[InputError]) -> list[str]:
    """One line each, in file order (those without a place last)."""
    errs = sorted(errs, key=lambda e: (e.line is None, e.line or 0, e.col or 0))
    return [_line(e) for e in errs]


def _within(over: Any, loc: tuple) -> bool:
    """Whether the variant's own overrides hold the start of `loc` (then its place is there)."""
    return isinstance(over, dict) and bool(loc) and loc[0] in over
