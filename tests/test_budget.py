"""Work and memory estimated before a run; limits refuse with the estimate and the flag."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from test_inputs import BASE, ROOT, cli

from sim.budget import check, estimate, parse_bytes
from sim.engine import simulate
from sim.errors import InputError
from sim.scenario import load_scenario, parse_scenario


def test_request_estimate_matches_a_run():
    sc = load_scenario(ROOT / "scenarios/policies/strict_priority.yaml", {"horizon": "1h"})
    assert sc.demand.retry is None and sc.demand.social is None  # first attempts only
    e = estimate(sc)
    offered = int(simulate(sc).offered.sum())
    # Poisson count: sd = sqrt(mean); 5 sd
    assert abs(offered - e.requests) < 5 * math.sqrt(e.requests), (offered, e.requests)
    assert e.windows == 360 and e.intervals == 61


def _sc(**over) -> dict:
    d = copy.deepcopy(BASE)
    for k, v in over.items():
        cur = d
        *path, last = k.split("__")
        for p in path:
            cur = cur[int(p) if p.isdigit() else p]
        cur[last] = v
    return d


@pytest.mark.parametrize("over,flag,what", [
    ({"demand__points": [[0, 1e7]]}, "--max-memory", "one window of arrivals"),
    ({"demand__points": [[0, 1e7]], "chunk_s": 0.01}, "--max-requests", "requests"),
    ({"fleet__pools__0__gpus": 10**6, "fleet__pools__0__max_batch": 4096}, "--max-memory", "the GPUs"),
    ({"outputs__interval_s": 1e-3, "horizon": "100d"}, "--max-memory", "the time series"),
    ({"horizon": "3000d", "outputs__interval_s": 86400}, "--max-requests", "windows"),
])
def test_huge_runs_are_refused_before_they_start(tmp_path, capsys, over, flag, what):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(_sc(**over)))
    out = tmp_path / "out"
    rc, err = cli(capsys, "run", str(f), "--out", str(out), "--quiet", "--max-memory", "4G")
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {f}: (estimate): "), err
    assert flag in err[0] and what in err[0], err
    assert not out.exists()


def test_limits_are_flags_and_the_estimate_shows(tmp_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(BASE))
    rc, err = cli(capsys, "run", str(f), "--out", str(tmp_path / "o"), "--max-requests", "100")
    assert rc == 2 and "the limit is 100: raise it with --max-requests" in err[0], err
    rc, err = cli(capsys, "run", str(f), "--out", str(tmp_path / "o"), "--max-memory", "1k")
    assert rc == 2 and "raise it with --max-memory" in err[0], err
    rc, err = cli(capsys, "run", str(f), "--out", str(tmp_path / "o"))
    assert rc == 0 and err[0].startswith("policy_token_bucket: about "), err
    assert "requests in 60 windows and 11 intervals" in err[0]


def test_drr_quantum_must_cover_a_fraction_of_a_request():
    d = _sc(scheduler={"discipline": "drr", "quantum_s": 0.001})
    d["fleet"]["pools"][0] = {"name": "p", "gpus": 2, "service_time_s": 5.0}
    with pytest.raises(InputError, match="quantum_s x the smallest weight"):
        check(parse_scenario(d, "s.yaml"))
    d["scheduler"]["quantum_s"] = 0.005
    check(parse_scenario(d, "s.yaml"))


def test_sizes():
    assert parse_bytes("8G") == 8 * 2**30 and parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("2e9") == 2 * 10**9
    for bad in ("", "x", "-1G", "1e400", "inf"):
        with pytest.raises(ValueError):
            parse_bytes(bad)


def test_periodic_policies_count_as_work():
    """An autoscaler waking every second over 8 days is 691k wake-ups, each a sync of the run."""
    d = _sc(horizon="8d", outputs={"interval_s": 3600, "figures": False, "report": False})
    base = estimate(parse_scenario(d, "s.yaml")).windows
    d["policies"] = [{"policy": "autoscale", "period_s": 1, "max_gpus": 20}]
    assert estimate(parse_scenario(d, "s.yaml")).windows == base + 8 * 86400
    d["policies"] = [{"policy": "autoscale", "period_s": 1e-3, "max_gpus": 20}]
    with pytest.raises(InputError, match="period_s: Input should be greater than or equal to 1"):
        parse_scenario(d, "s.yaml")
