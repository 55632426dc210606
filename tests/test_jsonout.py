"""Outputs are strict JSON: no NaN or Infinity (issue 18). conftest.py also parses every
.json/.jsonl the suite leaves in its temporary folders with the strict parser."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import yaml
from test_inputs import BASE, cli

from sim.jsonout import dumps, loads_strict


def test_finite_replaces_nan_and_inf_with_null():
    obj = {"a": math.nan, "b": [np.float64("inf"), -math.inf, 1.5], "c": np.int64(3),
           "d": (np.float32(2.0),), "e": np.array([1.0, np.nan])}
    assert loads_strict(dumps(obj)) == {"a": None, "b": [None, None, 1.5], "c": 3, "d": [2.0],
                                        "e": [1.0, None]}


def test_strict_parser_refuses_what_python_writes():
    import json

    for bad in ("NaN", "Infinity", "-Infinity", '{"x": NaN}'):
        with pytest.raises(ValueError):
            loads_strict(bad)
    assert json.loads("NaN") != json.loads("NaN")  # Python's own parser takes it


def test_a_run_that_serves_nothing_writes_strict_json(tmp_path, capsys):
    d = copy.deepcopy(BASE)
    d["fleet"]["pools"][0]["gpus"] = 0  # nothing completes: no latencies, no cost per image
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    rc, _ = cli(capsys, "run", str(f), "--out", str(tmp_path / "o"), "--quiet", "--json")
    assert rc == 0
    s = loads_strict((tmp_path / "o" / "summary.json").read_text())
    assert all(t["latency_s"]["p95"] is None for t in s["tiers"].values())
