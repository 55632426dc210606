"""Bad scenario, profile and flag input: one `error:` line, exit 2, nothing written (issue 18).

Each case below is a defect found by mutating the shipped scenarios; it is run in-process
through sim.cli.main, as a user's `floodgate run` would be.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from helpers import unpos

from sim.cli import main
from sim.errors import InputError
from sim.fleet.cost import load_profile
from sim.inputs import load_json, load_yaml, read_text

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "scenarios/policies/token_bucket.yaml").read_text())
BASE["horizon"] = "10m"
BASE["outputs"] = {"interval_s": 60, "figures": False, "report": False}


def cli(capsys, *argv: str) -> tuple[int, list[str]]:
    """floodgate ARGV in-process: (exit status, non-empty stderr lines)."""
    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse: usage errors
        rc = e.code
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    return rc, err


def expect_error(capsys, tmp_path: Path, path: Path, field: str, what: str = "", *flags: str) -> str:
    out = tmp_path / "out"
    rc, err = cli(capsys, "run", str(path), "--out", str(out), "--quiet", *flags)
    assert rc == 2, err
    assert len(err) == 1, err
    assert unpos(err[0]).startswith(f"error: {path}: {field}"), err
    assert what in err[0], err
    assert not out.exists()
    return err[0]


def mutated(path: tuple, value) -> dict:
    d = copy.deepcopy(BASE)
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return d


# (path, value, field in the message, text in the message)
BAD = [
    (("horizon",), "1e400s", "horizon", "finite"),
    (("horizon",), True, "horizon", "valid number"),
    (("horizon",), float("inf"), "horizon", "finite"),
    (("demand", "points"), [[0, float("inf")]], "demand.points[0][1]", "finite"),
    (("demand", "points"), [[0, 1e308]], "demand.points[0][1]", "less than or equal"),
    (("policies", 0, "burst"), float("inf"), "policies[0].burst", "finite"),
    (("policies", 0, "rate"), 1e-300, "policies[0].rate", "greater than or equal"),
    (("fleet", "pools", 0, "gpus"), True, "fleet.pools[0].gpus", "valid integer"),
    (("fleet", "pools", 0, "gpus"), 10**20, "fleet.pools[0].gpus", "less than or equal"),
    (("fleet", "pools", 0, "gpus"), 1.5, "fleet.pools[0].gpus", "valid integer"),
    (("seed",), 2**64, "seed", "less than or equal to 9223372036854775807"),
    (("demand", "users"), 10**12, "demand.users", "less than or equal"),
    (("fleet", "pools", 0, "max_batch"), 10**9, "fleet.pools[0].max_batch", "less than or equal"),
    (("chunk_s",), 1e-6, "chunk_s", "greater than or equal to 0.001"),
    (("tiers", 0, "price_per_image"), float("inf"), "tiers[0].price_per_image", "finite"),
    (("tiers", 0, "slo_s"), float("inf"), "tiers[0].slo_s", "finite"),
    (("tiers", 0, "slo_s"), float("nan"), "tiers[0].slo_s", "finite"),
    (("fleet", "pools", 0, "price_per_gpu_hour"), 1e308, "fleet.pools[0].price_per_gpu_hour", ""),
    (("tiers", 0, "share"), 0.9, "tiers", "shares must sum to 1 (they sum to 1.65)"),
    (("tiers", 0, "name"), 7, "tiers[0].name", "valid string"),
    (("fleet", "pools", 0, "profile"), "x" * 300, "fleet.pools[0].profile", "at most 255"),
    (("name",), "..", "name", "only dots"),
    (("name",), "x" * 300, "name", "at most 100"),
    (("scheduler",), {"discipline": "drr", "quantum_s": 1e-300}, "scheduler.quantum_s", ""),
    (("policies",), [{"policy": "shed_reserve", "tiers": ["free"], "utilization": {"free": float("nan")}}],
     "policies[0].utilization.free", "finite"),
    (("policies",), [{"policy": "shed_reserve", "tiers": ["free"], "queue_depth": {"free": float("-inf")}}],
     "policies[0].queue_depth.free", "finite"),
    (("policies",), [{"policy": "failures", "mtbf_h": 1e-300, "mttr_h": 1}], "policies[0].mtbf_h", ""),
    (("outputs", "interval_s"), 1e-6, "outputs.interval_s", "greater than or equal"),
    (("fleet", "pools", 0, "resolution"), "big", "fleet.pools[0].resolution", "valid integer"),
    (("outputs", "figures"), 1, "outputs.figures", "valid boolean"),
]


@pytest.mark.parametrize("path,value,field,what", BAD, ids=[f"{'.'.join(map(str, c[0]))}={str(c[1])[:12]}" for c in BAD])
def test_bad_value_one_line(tmp_path, capsys, path, value, field, what):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(mutated(path, value)))
    expect_error(capsys, tmp_path, f, field, what)


def test_the_base_scenario_runs(tmp_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(BASE))
    rc, err = cli(capsys, "run", str(f), "--out", str(tmp_path / "o"), "--quiet")
    assert rc == 0, err
    json.loads((tmp_path / "o" / "summary.json").read_text())


TEXT = yaml.safe_dump(BASE)


@pytest.mark.parametrize("case", ["utf16", "latin1", "binary", "deep", "digits", "dup", "deep_flow"])
def test_bad_file_one_line(tmp_path, capsys, case):
    f = tmp_path / "s.yaml"
    field, what = {
        "utf16": ("(file)", "UTF-16"), "latin1": ("line", "not UTF-8"), "binary": ("", ""),
        "deep": ("line 1", "nested deeper than 64"), "digits": ("line", "5000 digits"),
        "dup": ("line", "key 'seed' given twice"), "deep_flow": ("line", "nested deeper"),
    }[case]
    data = {
        "utf16": TEXT.encode("utf-16"),
        "latin1": TEXT.replace("policy_token_bucket", "caf\u00e9").encode("latin-1"),
        "binary": bytes(range(256)) * 4,
        "deep": ("a: " + "[" * 5000 + "]" * 5000).encode(),
        "digits": TEXT.replace("seed: 7", "seed: " + "9" * 5000).encode(),
        "dup": (TEXT + "seed: 3\n").encode(),
        "deep_flow": ("a:\n" + "".join("  " * i + "- \n" for i in range(1, 3000))).encode(),
    }[case]
    f.write_bytes(data)
    expect_error(capsys, tmp_path, f, field, what)


def test_utf8_bom_is_accepted(tmp_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_bytes(TEXT.encode("utf-8-sig"))
    rc, err = cli(capsys, "run", str(f), "--out", str(tmp_path / "o"), "--quiet")
    assert rc == 0, err


@pytest.mark.parametrize("flags,what", [
    (["--seed", str(2**64)], "argument --seed: expected a seed in 0..9223372036854775807"),
    (["--seed", "-1"], "argument --seed"),
    (["--seed", "9" * 5000], "argument --seed"),
    (["--horizon", "inf"], "horizon: not a duration"),
    (["--horizon", "1e400s"], "horizon: Input should be a finite number"),
])
def test_bad_flags_one_line(tmp_path, capsys, flags, what):
    f = tmp_path / "s.yaml"
    f.write_text(TEXT)
    out = tmp_path / "out"
    rc, err = cli(capsys, "run", str(f), "--out", str(out), "--quiet", *flags)
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and what in err[0], err
    assert not out.exists()


PROFILE = json.loads((ROOT / "sim/data/profiles/placeholder-sdxl-h100.json").read_text())


def _profile(tmp_path: Path, data) -> Path:
    p = tmp_path / "prof.json"
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def _bad_entry(field, value):
    d = copy.deepcopy(PROFILE)
    d["entries"][0][field] = value
    return d


@pytest.mark.parametrize("data,field,what", [
    ({**PROFILE, "entries": [1, 2, 3]}, "entries[0]", "valid dictionary"),
    (_bad_entry("batch", True), "entries[0].batch", "valid integer"),
    (_bad_entry("resolution", "big"), "entries[0].resolution", "valid integer"),
    (_bad_entry("component", "unet"), "entries[0].component", "denoise_step"),
    (json.dumps(_bad_entry("latency_s", {"median": 5, "p10": 1, "p90": 2})).replace('"median": 5', '"median": 1e400'),
     "entries[0].latency_s.median", "finite"),
    (_bad_entry("latency_s", {"median": 1, "p10": 2, "p90": 3}), "entries[0].latency_s", "p10 <= median"),
    (json.dumps(_bad_entry("latency_s", {"median": 1, "p10": 1, "p90": 2})).replace('"p90": 2', '"p90": Infinity'),
     "(json)", "Infinity is not JSON"),
    ({**PROFILE, "schema": "other"}, "schema", "expected 'floodgate.profile/1'"),
    ("[" * 100000 + "]" * 100000, "(json)", "nested deeper"),
])
def test_bad_profile_one_line(tmp_path, data, field, what):
    p = _profile(tmp_path, data)
    with pytest.raises(InputError) as e:
        load_profile(p)
    assert e.value.file == str(p) and e.value.field == field and what in e.value.message, e.value


def test_bad_profile_through_the_cli(tmp_path, capsys):
    _profile(tmp_path, _bad_entry("batch", True))
    d = copy.deepcopy(BASE)
    d["fleet"]["pools"][0]["profile"] = "prof.json"
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    out = tmp_path / "out"
    rc, err = cli(capsys, "run", str(f), "--out", str(out), "--quiet")
    assert rc == 2 and err == [f"error: {tmp_path / 'prof.json'}: entries[0].batch: Input should be a valid integer"]
    assert not out.exists()


def test_shipped_profiles_and_scenarios_pass_the_schema():
    for p in (ROOT / "sim/data/profiles").glob("*.json"):
        load_profile(p)
    from sim.scenario import load_scenario

    for p in (ROOT / "scenarios").rglob("*.yaml"):
        if "whatif" not in str(p):
            load_scenario(p)


def test_readers_limits(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: 1\n" * (4 * 2**20))
    with pytest.raises(InputError, match="larger than 16 MiB"):
        read_text(big)
    with pytest.raises(InputError, match="is a folder"):
        read_text(tmp_path)
    assert load_yaml("a: !!binary aGk=\n", "x") == {"a": b"hi"}
    with pytest.raises(InputError, match="could not determine a constructor"):
        load_yaml("a: !!python/object:os.system 1\n", "x")
    with pytest.raises(InputError, match="digits"):
        load_json('{"a": ' + "1" * 400 + "}", "x")
    with pytest.raises(InputError, match="NaN is not JSON"):
        load_json('{"a": NaN}', "x")


@pytest.mark.parametrize("argv,what", [
    (["validate", "S", "--duration", "inf"], "argument --duration: expected a finite number"),
    (["validate", "S", "--reps", "0"], "argument --reps"),
    (["calibrate", "--model", "tiny-unet", "--steps", "9" * 30], "argument --steps"),
    (["calibrate", "--model", "tiny-unet", "--seed", "-1"], "argument --seed"),
    (["plan", "S", "--reps", "100000"], "argument --reps"),
    (["plan", "S", "--jobs", "0"], "argument --jobs"),
    (["run", "S", "--max-memory", "lots"], "argument --max-memory: not a size"),
    (["run", "S", "--max-requests", "inf"], "argument --max-requests"),
    (["demand", "S", "--seed", str(2**63)], "argument --seed"),
])
def test_bad_flags_of_every_command_one_line(capsys, argv, what):
    """These hung (--duration inf) or were accepted (a 30-digit step count)."""
    argv = [str(ROOT / "scenarios/policies/token_bucket.yaml") if a == "S" else a for a in argv]
    rc, err = cli(capsys, *argv)
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: floodgate ") and what in err[0], err


@pytest.mark.parametrize("content,field,what", [
    (bytes(range(256)) * 4, "demand.column", "no column"),
    (b"TIMESTAMP\n0\ninf\n5\n", "TIMESTAMP", "not a finite number in row 3"),
    (b"TIMESTAMP\n0\n1e400\n", "TIMESTAMP", "not a finite number"),
])
def test_bad_trace_one_line(tmp_path, capsys, content, field, what):
    (tmp_path / "t.csv").write_bytes(content)
    d = copy.deepcopy(BASE)
    d["demand"] = {"model": "trace", "path": "t.csv"}
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    rc, err = cli(capsys, "run", str(f), "--out", str(tmp_path / "out"), "--quiet")
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {tmp_path / 't.csv'}: {field}: ") and what in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value,what", [
    ("9" * 5000, "the value: an integer of 5000 digits"),
    ("[" * 3000 + "]" * 3000, "the value: nested deeper than 64"),
    ("{a: 1, a: 2}", "the value: key 'a' given twice"),
    ("[1,", "the value is not valid YAML"),
])
def test_set_values_have_the_yaml_limits(tmp_path, capsys, value, what):
    f = tmp_path / "s.yaml"
    f.write_text(TEXT)
    rc, err = cli(capsys, "run", str(f), "--out", str(tmp_path / "out"), "--quiet", "--set", f"seed={value}")
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --set: ") and what in err[0], err


def test_an_input_error_crosses_a_process_pool():
    """A worker's bad input reaches the caller as the same InputError (it was a
    BrokenProcessPool: the error could not be rebuilt from its pickle)."""
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    from sim.errors import Infeasible

    e = pickle.loads(pickle.dumps(Infeasible("s.yaml", "fleet", "no GPUs", 3, 5)))
    assert type(e) is Infeasible and e.one_line() == "error: s.yaml:3:5: fleet: no GPUs"
    with ProcessPoolExecutor(1) as ex, pytest.raises(InputError, match="reps: must be"):
        ex.submit(_raise_input_error).result()


def _raise_input_error():
    raise InputError("s.yaml", "reps", "must be at least 1")
