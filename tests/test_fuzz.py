"""Fuzz: mutated shipped scenarios and CLI flags through `floodgate run` in-process (issue 18).

For every example: exit 0 with a sane, strict-JSON summary, or exit 2 with one `error:` line
and nothing written; never a traceback, never past a time bound. Big runs are refused by the
work and memory limits (--max-requests / --max-memory), which keeps each example short.
Hypothesis runs with a fixed seed, so CI sees the same examples every time.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import signal
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from sim.cli import main
from sim.jsonout import loads_strict

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (ROOT / "scenarios").rglob("*.yaml") if "whatif" not in str(p))
BASES = {p.stem: yaml.safe_load(p.read_text()) for p in SHIPPED}
FULL = copy.deepcopy(BASES)
for _d in BASES.values():  # minutes, not days, and no figures: each example stays short
    _d["horizon"] = "15m"
    _d["outputs"] = {**_d.get("outputs", {}), "figures": False}
LIMITS = ["--max-requests", "2e6", "--max-memory", "512M"]
TIME_BOUND = 60  # wall seconds for one example, far above any of them


class Hang(Exception):
    pass


def _alarm(*_):
    raise Hang("an example ran past the time bound")


def run_cli(argv: list[str]) -> tuple[int, list[str], str]:
    """floodgate ARGV in-process under a time bound: (status, stderr lines, stdout)."""
    err, out = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_BOUND)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = main(argv)
            except SystemExit as e:  # argparse usage errors
                rc = e.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return rc, [x for x in err.getvalue().splitlines() if x.strip()], out.getvalue()


def check_outcome(rc, err: list[str], out_dir: Path, tiers_expected: int | None = None) -> None:
    assert not any("Traceback" in x for x in err), err
    if rc == 2:
        assert len(err) == 1 and err[0].startswith("error: "), err
        assert not out_dir.exists(), "an error must write nothing"
        return
    assert rc == 0, (rc, err)
    s = loads_strict((out_dir / "summary.json").read_text())
    assert s["tiers"], s
    for t in s["tiers"].values():
        assert t["offered"] >= 0
        p95 = t["latency_s"]["p95"]
        assert p95 is None or (math.isfinite(p95) and p95 >= 0)
    assert math.isfinite(s["money"]["revenue"]) and s["money"]["revenue"] >= 0


# ---- mutations of a scenario (a YAML mapping) ----

ODD = [True, False, None, "x", "", "..", [], {}, 0, -1, 1, 0.5, 1e308, -1e308, 1e-300, 10**25,
       2**63, 2**64, "1e400s", "inf", ".nan", "90s", "36h", "1e-9s", "\u00e9\u00e8", "a" * 300,
       [[0, 1]], {"a": 1}, float("inf"), float("-inf"), float("nan")]


def _paths(d, prefix=()):
    """Every path to a value in nested dicts/lists."""
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.append((*prefix, i))
            out += _paths(v, (*prefix, i))
    return out


def _get_parent(d, path):
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    return cur


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(sorted(BASES)))
    d = copy.deepcopy(BASES[name])
    for _ in range(draw(st.integers(0, 2))):
        paths = _paths(d)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _get_parent(d, path)
        key = path[-1]
        kind = draw(st.sampled_from(["mild", "mild", "mild", "odd", "odd", "scale", "delete",
                                     "unknown", "nest", "dup"]))
        if kind == "mild":  # a plausible edit: most of these still run
            v = parent[key]
            if isinstance(v, bool):
                parent[key] = not v
            elif isinstance(v, int | float):
                parent[key] = type(v)(v * draw(st.sampled_from([0.5, 2, 3]))) or v
        elif kind == "odd":
            parent[key] = draw(st.sampled_from(ODD))
        elif kind == "scale":
            v = parent[key]
            if isinstance(v, int | float) and not isinstance(v, bool):
                parent[key] = v * draw(st.sampled_from([0, -1, 1e-9, 1e-3, 10, 1e6, 1e12]))
            else:
                parent[key] = draw(st.floats(allow_nan=True, allow_infinity=True))
        elif kind == "delete":
            del parent[key]
        elif kind == "unknown" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["colour", "horizon_s", "Seed", "tier"]))] = 1
        elif kind == "nest":
            parent[key] = draw(st.sampled_from([[parent[key]], {"x": parent[key]}]))
        elif kind == "dup" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return name, d


ENCODINGS = [*["utf-8"] * 12, "utf-8-sig", "utf-16", "latin-1", "truncated", "deep"]


def _bytes(d: dict, how: str) -> bytes:
    text = yaml.safe_dump(d, allow_unicode=True)
    if how == "truncated":
        return text.encode()[: len(text) // 2]
    if how == "deep":
        return (text + "extra: " + "[" * 3000 + "]" * 3000 + "\n").encode()
    if how == "latin-1":
        return (text + "# caf\u00e9\n").encode("latin-1", "replace")
    return text.encode(how)


@seed(18)
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(case=mutated(), how=st.sampled_from(ENCODINGS))
def test_mutated_scenarios_run_or_fail_cleanly(tmp_path_factory, case, how):
    name, d = case
    tmp = tmp_path_factory.mktemp("fz")
    f = tmp / "s.yaml"
    f.write_bytes(_bytes(d, how))
    out = tmp / "out"
    rc, err, _ = run_cli(["run", str(f), "--out", str(out), "--quiet", *LIMITS])
    check_outcome(rc, err, out)


FLAG_VALUES = {
    "--seed": st.sampled_from(["0", "7", "-1", "2**64", str(2**63 - 1), str(2**63), "9" * 5000,
                               "1.5", "", "0x10", " 3"]),
    "--horizon": st.sampled_from(["10m", "0", "-5m", "inf", "nan", "1e400s", "1e-9s", "5x", "",
                                  "1e10", "1e11", "3h", "true"]),
    "--max-requests": st.sampled_from(["1e5", "0", "-1", "inf", "nan", "abc", "1e16", "5e4"]),
    "--max-memory": st.sampled_from(["512M", "0", "1k", "-1G", "1e400", "16G", "x", "1T"]),
}


@seed(18)
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(cmd=st.sampled_from(["run", "run", "run", "demand"]),
       flags=st.dictionaries(st.sampled_from(sorted(FLAG_VALUES)), st.just(None), max_size=4),
       data=st.data())
def test_cli_flags_run_or_fail_cleanly(tmp_path_factory, cmd, flags, data):
    tmp = tmp_path_factory.mktemp("fl")
    out = tmp / "out"
    argv = [cmd, str(ROOT / "scenarios/policies/token_bucket.yaml")]
    if cmd == "demand":
        flags = {k: v for k, v in flags.items() if k == "--seed"}  # its figures span 8 days: slow
    for flag in flags:
        if cmd == "demand" and flag.startswith("--max"):
            continue
        argv += [flag, data.draw(FLAG_VALUES[flag])]
    if cmd == "run":
        argv += ["--out", str(out), "--quiet"]
        if "--horizon" not in flags:
            argv += ["--horizon", "10m"]
        if "--max-requests" not in flags:
            argv += ["--max-requests", "2e6"]
    rc, err, stdout = run_cli(argv)
    if cmd == "run":
        check_outcome(rc, err, out)
    else:
        assert not any("Traceback" in x for x in err), err
        assert rc in (0, 2), (rc, err)
        if rc == 2:
            assert len(err) == 1 and err[0].startswith("error: "), err
        else:
            loads_strict(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(BASES))
def test_every_shipped_scenario_passes_the_checks(name, tmp_path):
    """The unmutated files: the fuzz above starts from scenarios that run."""
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(FULL[name]))
    rc, err, _ = run_cli(["run", str(f), "--out", str(tmp_path / "o"), "--quiet", "--horizon", "5m"])
    assert rc == 0, err
