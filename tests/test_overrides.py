"""`--set PATH=VALUE`: one path syntax, names where the scenario has them, clear errors."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cli import main
from sim.errors import InputError
from sim.examples import example_path
from sim.overrides import apply_set, apply_sets, parse_set

SCEN = {"tiers": [{"name": "paid", "slo_s": 30}, {"name": "free", "slo_s": 90}],
        "policies": [{"policy": "daily_quota", "limit": 3}, {"policy": "shed_reserve"}],
        "fleet": {"pools": [{"name": "h100", "gpus": 10}, {"name": "h200", "gpus": 4}]}}


def _copy():
    return json.loads(json.dumps(SCEN))


def test_names_indices_and_yaml_values():
    d = apply_sets(_copy(), ["fleet.pools.h200.gpus=12", "policies.daily_quota.limit=5",
                             "tiers.1.slo_s=2m", "policies.shed_reserve.tiers=[free]",
                             "fleet.pools.-1.max_batch=8"])
    assert d["fleet"]["pools"][1] == {"name": "h200", "gpus": 12, "max_batch": 8}
    assert d["policies"][0]["limit"] == 5 and d["policies"][1]["tiers"] == ["free"]
    assert d["tiers"][1]["slo_s"] == "2m" and d["tiers"][0]["slo_s"] == 30


@pytest.mark.parametrize("text, why", [
    ("fleet.pools.h10.gpus=3", "did you mean 'h100'"),
    ("fleeet.pools.h100.gpus=3", "did you mean 'fleet'"),
    ("tiers.7.slo_s=3", "out of range"),
    ("fleet.pools.h100.gpus.x=3", "is a value"),
    ("fleet..gpus=3", "empty segment"),
    ("fleet.pools.h100.gpus", "expected PATH=VALUE"),
    ("tiers.free.slo_s=[1, 2", "not valid YAML"),
])
def test_errors_name_the_flag_and_suggest(text, why):
    with pytest.raises(InputError) as e:
        apply_sets(_copy(), [text])
    assert e.value.file == "--set" and e.value.field == text and why in e.value.message


def test_ambiguous_name_asks_for_a_position():
    d = _copy()
    d["policies"].append({"policy": "daily_quota", "limit": 9})
    with pytest.raises(InputError, match="use a position instead"):
        apply_set(d, "policies.daily_quota.limit", 1)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(["h100", "h200"]))
def test_set_equals_editing_the_mapping(n, pool):
    d = apply_sets(_copy(), [f"fleet.pools.{pool}.gpus={n}"])
    e = _copy()
    next(p for p in e["fleet"]["pools"] if p["name"] == pool)["gpus"] = n
    assert d == e
    assert parse_set(f"x={n}") == ("x", n)


def test_cli_set_equals_an_edited_file(tmp_path, capsys):
    src = yaml.safe_load(example_path("policies/daily_quota").read_text())
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(src))
    src["policies"][0]["limit"] = 1
    src["fleet"]["pools"][0]["gpus"] = 6
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(src))
    assert main(["run", str(tmp_path / "a.yaml"), "--set", "policies.daily_quota.limit=1",
                 "--set", "fleet.pools.h100.gpus=6", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["run", str(tmp_path / "b.yaml"), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    a.pop("scenario_file", None), b.pop("scenario_file", None)
    assert a["tiers"] == b["tiers"] and a["fleet"] == b["fleet"]
    capsys.readouterr()
    assert main(["run", str(tmp_path / "a.yaml"), "--set", "policies.daily_quot.limit=1",
                 "--out", str(tmp_path / "c"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --set: policies.daily_quot.limit=1: policies has no item named "
                   "'daily_quot'; did you mean 'daily_quota'? (there are: daily_quota)"]
    assert not (tmp_path / "c").exists()
