"""`floodgate check` and `floodgate schema`: every problem with its line and column, and a
JSON Schema that accepts what the shipped scenarios are and refuses what check refuses."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from test_fuzz import mutated

from sim.cli import main
from sim.scenario import json_schema, merge

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").rglob("*.yaml"))
BASE = ROOT / "scenarios" / "ghibli_2025.yaml"


def as_json(d):
    """What an editor sees: YAML timestamps are text in JSON."""
    return json.loads(json.dumps(d, default=lambda o: o.isoformat()))


def full(path: Path) -> dict:
    """A shipped file as a whole scenario: override files (ghibli_whatif/*) merged into their
    baseline, as `compare --variant` does."""
    d = yaml.safe_load(path.read_text())
    return d if "demand" in d else merge(yaml.safe_load(BASE.read_text()), d)


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft202012Validator(json_schema())


def test_schema_is_a_valid_json_schema_and_the_shipped_file_is_current():
    jsonschema.Draft202012Validator.check_schema(json_schema())
    # a fresh process: policies other tests register (tests/test_demand.py) are not in it
    p = subprocess.run([sys.executable, "-m", "sim.cli", "schema"], capture_output=True,
                       text=True, cwd=ROOT, timeout=120, check=True)
    shipped = json.loads((ROOT / "floodgate.schema.json").read_text())
    assert shipped == json.loads(p.stdout), \
        "floodgate.schema.json is stale: make schema (floodgate schema > floodgate.schema.json)"


def test_schema_command_prints_it(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(json_schema()))
    assert main(["schema", "--profile"]) == 0
    prof = json.loads(capsys.readouterr().out)
    shipped = json.loads((ROOT / "sim/data/profiles/h100-bf16.json").read_text())
    jsonschema.validate(shipped, prof)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**shipped, "schema": "floodgate.profile/2"}, prof)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: str(p.relative_to(ROOT / "scenarios")))
def test_every_shipped_scenario_passes_schema_and_check(path, validator, tmp_path, capsys):
    d = full(path)
    errors = [e.message for e in validator.iter_errors(as_json(d))]
    assert errors == []
    f = path  # the file itself: relative trace and profile paths resolve from its folder
    if "demand" not in yaml.safe_load(path.read_text()):  # an override file: check the merge
        f = tmp_path / path.name
        f.write_text(yaml.safe_dump(d))
    assert main(["check", str(f)]) == 0, capsys.readouterr().err


def _set(d: dict, path: tuple, value) -> dict:
    d = copy.deepcopy(d)
    cur = d
    for p in path[:-1]:
        cur = cur[p]
    if value is _DROP:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


_DROP = object()
TB = ROOT / "scenarios/policies/token_bucket.yaml"
# (where, new value, the field check names, what it says): each refused by schema and check
MUTATIONS = [
    (("policies", 0, "brust"), 5, "policies[0].brust", "unknown key; did you mean 'burst'?"),
    (("policies", 0, "policy"), "token_buckt", "policies[0].policy",
     "unknown policy 'token_buckt'; did you mean 'token_bucket'?"),
    (("policies", 0, "rate"), -1, "policies[0].rate", "greater than or equal"),
    (("policies", 0, "burst"), _DROP, "policies[0].burst", "Field required"),
    (("horizon",), "3 hours", "horizon", "not a duration"),
    (("tiers", 0, "slo_s"), "-5s", "tiers[0].slo_s", "not a duration"),
    (("fleet", "pools", 0, "gpus"), 1.5, "fleet.pools[0].gpus", "valid integer"),
    (("fleet", "pools", 0, "gpuz"), 3, "fleet.pools[0].gpuz", "did you mean 'gpus'?"),
    (("demand", "interpolation"), "lin", "demand.interpolation", "did you mean 'linear'?"),
    (("demand", "model"), "curv", "demand.model", "did you mean 'curve'?"),
    (("scheduler", "discipline"), "edd", "scheduler.discipline", "'edf'"),
    (("colour",), "red", "colour", "unknown key"),
    (("seed",), -1, "seed", "greater than or equal"),
]


@pytest.mark.parametrize("where,value,field,what", MUTATIONS, ids=[m[2] for m in MUTATIONS])
def test_mutated_scenario_fails_schema_where_check_fails(where, value, field, what, validator,
                                                         tmp_path, capsys):
    d = _set(yaml.safe_load(TB.read_text()), where, value)
    assert list(validator.iter_errors(as_json(d))), "the schema accepts what check refuses"
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d, sort_keys=False))
    assert main(["check", str(f)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    head, _, rest = err[0].partition(f"{f}:")
    line, col, tail = rest.split(":", 2)
    assert head == "error: " and tail.startswith(f" {field}: ") and what in tail, err
    # line:col is the key's own place in the file (the mapping holding it when it is missing)
    text = f.read_text().splitlines()[int(line) - 1]
    key = str(where[-1])
    if value is _DROP:
        assert text[int(col) - 1:].startswith("policy:") or text[int(col) - 1:].startswith("tiers:")
    elif not isinstance(where[-1], int):
        assert text[int(col) - 1:].startswith(f"{key}:"), (text, col)


FILE = """\
name: many_errors
horizon: 2 hours
demand:
  model: curve
  users: 100
  points: [[0, 1]]
tiers:
- {name: free, share: 1, priority: 0, price_per_image: 0, slo_s: 60}
policies:
- policy: token_bucket
  rate: 1
  brust: 5
- policy: dialy_quota
  limit: 3
fleet:
  pools:
  - {name: p, gpus: 1, service_time_s: 1, max_bach: 4}
"""


def test_check_reports_every_error_with_line_col_and_suggestions(tmp_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text(FILE)
    assert main(["check", str(f)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"error: {f}:2:1: horizon: not a duration: '2 hours' (use seconds or e.g. '90s', "
        "'15m', '36h', '8d')",
        f"error: {f}:10:3: policies[0].burst: Field required",
        f"error: {f}:12:3: policies[0].brust: unknown key; did you mean 'burst'?",
        f"error: {f}:13:3: policies[1].policy: unknown policy 'dialy_quota'; did you mean "
        "'daily_quota'? known: " + err[3].split("known: ")[1],
        f"error: {f}:17:43: fleet.pools[0].max_bach: unknown key; did you mean 'max_batch'?",
    ]
    # run stops at the first, in the same words and at the same place
    rc = main(["run", str(f), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2 and capsys.readouterr().err.splitlines() == err[:1]
    assert not (tmp_path / "o").exists()


def test_cross_section_rules_run_beside_shape_errors(tmp_path, capsys):
    d = yaml.safe_load(TB.read_text())
    d["policies"].append({"policy": "daily_quota", "tiers": ["fre"], "limit": 3})
    d["policies"][0]["brust"] = d["policies"][0].pop("burst")
    d["demand"]["retry"] = {"reasons": ["rate_limitd"]}
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d, sort_keys=False))
    assert main(["check", str(f)]) == 2
    err = [e.split(": ", 3)[2:] for e in capsys.readouterr().err.splitlines()]
    assert err == [
        ["demand.retry.reasons", "unknown reason 'rate_limitd'; did you mean 'rate_limited'? "
         "reasons: " + err[0][1].split("reasons: ")[1]],
        ["policies[0].burst", "Field required"],
        ["policies[0].brust", "unknown key; did you mean 'burst'?"],
        ["policies[1].tiers", "unknown tier 'fre'; did you mean 'free'? tiers: free, paid"]]


def test_check_rules_across_sections_profiles_and_variants(tmp_path, capsys):
    d = yaml.safe_load(TB.read_text())
    d["policies"][0]["tiers"] = ["fre"]
    d["fleet"]["pools"][0]["profile"] = "no-such-profile"
    d["variants"] = {"tight": {"policies": [{"policy": "token_bucket", "rate": 1}]}}
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d, sort_keys=False))
    assert main(["check", str(f)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "policies[0].tiers: unknown tier 'fre'; did you mean 'free'?" in err[0]
    d["policies"][0]["tiers"] = ["free"]
    f.write_text(yaml.safe_dump(d, sort_keys=False))
    assert main(["check", str(f)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert "fleet.pools[0].profile: profile 'no-such-profile' not found" in err[0]
    assert "variants.tight.policies[0].burst: Field required" in err[1]
    for e in err:  # each placed at its key
        n = int(e.split(f"{f}:")[1].split(":")[0])
        assert ("profile:" if "profile" in e else "policy: token_bucket") in \
            f.read_text().splitlines()[n - 1] or "- policy" in f.read_text().splitlines()[n - 1]


def test_check_clean_exit_0_and_io_errors(tmp_path, capsys):
    assert main(["check", str(TB)]) == 0
    assert capsys.readouterr().out.startswith(f"{TB}: ok: policy_token_bucket")
    assert main(["check", str(tmp_path / "nope.yaml"), str(TB)]) == 2
    cap = capsys.readouterr()
    assert cap.err.strip() == f"error: {tmp_path / 'nope.yaml'}: (file): no such file"
    assert f"{TB}: ok" in cap.out  # the others are still checked
    (tmp_path / "bad.yaml").write_text("name: x\n  horizon: [1,\n")
    assert main(["check", str(tmp_path / "bad.yaml")]) == 2
    assert "malformed YAML" in capsys.readouterr().err


def test_durations_in_policy_parameters(tmp_path):
    from sim.scenario import parse_scenario

    d = yaml.safe_load((ROOT / "scenarios/policies/fixed_window.yaml").read_text())
    d["policies"][0]["window_s"] = "1d"
    sc = parse_scenario(d)
    assert sc.policies[0].window_s == 86400.0
    assert sc.policies[0].params()["window_s"] == 86400.0
    sch = json_schema()
    assert any(b.get("type") == "string" and "pattern" in b
               for b in sch["$defs"]["FixedWindowPolicy"]["properties"]["window_s"]["anyOf"])


def test_schedule_changes_are_typed_per_policy_and_applied(tmp_path, capsys):
    from helpers import queue_scenario, run

    q = queue_scenario(5.0, 10.0, 1, 7200.0, seed=3, chunk_s=60.0, policies=[
        {"policy": "daily_quota", "limit": 10**6,
         "schedule": [{"at": "1h", "params": {"limit": 0}}]}])
    q["demand"]["users"] = 50
    r = run(q)
    assert r.policies[0].policy.params.limit == 0  # the change reached the policy object
    f = tmp_path / "s.yaml"
    q["policies"][0]["schedule"][0]["params"] = {"limt": 0, "window": "calender"}
    f.write_text(yaml.safe_dump(q, sort_keys=False))
    assert main(["check", str(f)]) == 2
    err = [e.split(": ", 3)[2:] for e in capsys.readouterr().err.splitlines()]
    assert sorted(err) == [
        ["policies[0].schedule[0].params.limt", "unknown key; did you mean 'limit'?"],
        ["policies[0].schedule[0].params.window",
         "Input should be 'calendar' or 'rolling'; did you mean 'calendar'?"]]
    assert list(jsonschema.Draft202012Validator(json_schema()).iter_errors(as_json(q)))


def test_hours_fields_take_durations_too():
    from sim.policies.dynamics import FailureParams

    assert FailureParams(mtbf_h="30d", mttr_h="15m").mtbf_h == 720.0
    assert FailureParams(mtbf_h="30d", mttr_h="15m").mttr_h == 0.25
    assert FailureParams(mtbf_h="2", mttr_h=0.5).mtbf_h == 2.0  # no unit: hours, as a number
    with pytest.raises(ValueError, match="greater than or equal"):
        FailureParams(mtbf_h="1s", mttr_h=1)


@seed(17)
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=mutated())
def test_the_schema_is_never_stricter_than_check(validator, case):
    """Whatever the schema refuses, the models refuse too (an editor never flags a scenario
    that runs). The converse holds for shape and type errors (MUTATIONS above); rules across
    fields (sorted points, p10 <= median, tier names, NaN) are the models' alone."""
    from sim.scenario import scenario_problems

    _, d = case
    data = json.loads(json.dumps(d, default=lambda o: o.isoformat()))
    if not list(validator.iter_errors(data)):
        return
    _, probs = scenario_problems(data)
    assert probs, "the schema refuses a scenario the models accept"


def test_check_a_profile_reports_every_problem_with_its_place(tmp_path, capsys):
    prof = json.loads((ROOT / "sim/data/profiles/cpu-tiny.json").read_text())
    prof["entries"][0]["component"] = "denoise"
    del prof["entries"][1]["batch"]
    f = tmp_path / "p.json"
    f.write_text(json.dumps(prof, indent=1))
    assert main(["check", str(f)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [e.split(": ", 3)[2] for e in err] == ["entries[0].component", "entries[1].batch"]
    lines = f.read_text().splitlines()
    n, c = (int(x) for x in err[0].split(f"{f}:")[1].split(":")[:2])
    assert lines[n - 1][c - 1:].startswith('"component"')
    assert main(["check", str(ROOT / "sim/data/profiles/cpu-tiny.json")]) == 0
    assert "ok: a floodgate.profile/1" in capsys.readouterr().out


def test_check_variant_files_places_problems_in_the_overrides(tmp_path, capsys):
    v = tmp_path / "v.yaml"
    v.write_text("policies:\n- policy: daily_quota\n  tiers: [free]\n  limt: 3\n")
    assert main(["check", str(BASE), "--variant", f"q={v}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {v}:2:3: policies[0].limit: Field required",
                   f"error: {v}:4:3: policies[0].limt: unknown key; did you mean 'limit'?"]
    args = [f"{n}={ROOT / 'scenarios/ghibli_whatif' / n}.yaml"
            for n in ("no_limits", "historical", "reserve_shed", "brownout", "autoscale")]
    assert main(["check", str(BASE), *[x for a in args for x in ("--variant", a)]]) == 0


def test_a_bad_value_from_the_command_line_is_not_placed_in_the_file(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["run", str(TB), "--set", "fleet.pools.h100.gpus=-1", "--out", str(out),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {TB}: fleet.pools[0].gpus: Input should be greater than or equal "
                   "to 0 (as set on the command line)"]
    f = tmp_path / "s.yaml"  # the same value in the file: placed at its key
    f.write_text(TB.read_text().replace("gpus: 10", "gpus: -1"))
    assert main(["run", str(f), "--set", "seed=3", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {f}:27:18: fleet.pools[0].gpus: "), err
    assert not out.exists()
