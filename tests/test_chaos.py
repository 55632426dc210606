"""One fault of `make chaos` in the suite: a replica SIGKILLed mid-load on loopback; every
request a replica accepted has its final outcome in the fleet's log, every 200 the client
saw is a completed line there, the deployment drains and exits 0."""

from __future__ import annotations

import pytest

from sim.live.chaos import SCENARIO, kill_replica


@pytest.mark.slow
def test_a_killed_replica_loses_nothing_it_accepted(tmp_path):
    r = kill_replica(tmp_path / "kill", SCENARIO, rate=10.0, duration=6.0, seed=5)
    assert r["victim_admitted"] > 0  # the kill came after it had accepted some
    assert r["client_cut_on_victim"] > 0  # and the client noticed, and retried elsewhere
    assert r["accepted"] > 20
    assert r["accepted_lost"] == 0
    assert r["client_200_not_in_fleet_log"] == 0
    assert r["requests_without_answer"] == 0
    assert r["torn_logs"] == 0
    assert r["supervisor_exit"] == 0
    assert sum(r["outcomes"].values()) == r["accepted"]
