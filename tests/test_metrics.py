"""/metrics through prometheus_client: the real gateway on a fake clock, its exposition read
back by prometheus_client's Prometheus text parser and its (strict) OpenMetrics parser, for one
and two pools and tier names that need escaping."""

from __future__ import annotations

import math

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as prom_parse

from sim.live.keys import KeyTable, key_hash
from sim.live.refeed import FakeClockGateway
from sim.live.workers import Req
from sim.scenario import parse_scenario

ODD = 'fr"ee'
BACK = "back\\slash\nnewline"


def gateway(tmp_path, pools: int) -> FakeClockGateway:
    tiers = [{"name": "paid", "share": 0.3, "priority": 0, "price_per_image": 0.01, "slo_s": 20},
             {"name": ODD, "share": 0.4, "priority": 1, "price_per_image": 0.0, "slo_s": 60},
             {"name": BACK, "share": 0.3, "priority": 1, "price_per_image": 0.0, "slo_s": 60}]
    pool = {"gpus": 1, "service_time_s": 2.0, "service_distribution": "deterministic",
            "max_batch": 2}
    sc = parse_scenario({
        "name": "metrics", "seed": 1, "horizon": 100, "chunk_s": 10,
        "demand": {"points": [[0, 1]], "users": 10}, "tiers": tiers,
        "policies": [{"policy": "daily_quota", "tiers": [ODD], "limit": 2}],
        "fleet": {"pools": [{"name": f"p{j}", **pool} for j in range(pools)]},
        "outputs": {"figures": False, "report": False}})
    keys = KeyTable.of({key_hash(f"k{u}"): (u, 0) for u in range(10)}, [t["name"] for t in tiers])
    gw = FakeClockGateway(sc, keys, tmp_path / "requests.jsonl", 1.0, 10**9)
    gw.fleet.start()
    return gw


def drive(gw: FakeClockGateway, sends: list[tuple[float, int, int]]) -> None:
    """Each (time, user, tier) admitted at its time; the fleet then runs until idle."""
    for i, (t, u, k) in enumerate(sends):
        while gw.armed <= t:
            gw.now = gw.armed
            gw.fleet.wake()
        gw.now = t
        gw.admit(Req(i, 0, u, k, gw.tiers[k], t, t))
    while gw.armed < math.inf:
        gw.now = gw.armed
        gw.fleet.wake()


def families(parse, text: str) -> dict:
    out = {}
    for fam in parse(text):
        assert fam.name not in out, f"family {fam.name} split in two (interleaved)"
        out[fam.name] = fam
    return out


def value(fam, name: str, **labels) -> float:
    hits = [s.value for s in fam.samples if s.name == name and s.labels == labels]
    assert len(hits) == 1, (name, labels, fam.samples)
    return hits[0]


@pytest.mark.parametrize("pools", [1, 2])
def test_both_parsers_read_what_the_gateway_counted(tmp_path, pools):
    gw = gateway(tmp_path, pools)
    # 3 of user 1 on the quota'd odd tier (the third is over quota), 2 paid, 1 on BACK
    drive(gw, [(0.0, 1, 1), (0.5, 1, 1), (1.0, 1, 1), (1.5, 2, 0), (2.0, 3, 0), (2.5, 4, 2)])
    gw.metrics.unauthorized += 1
    m = gw.metrics
    assert m.outcomes[(ODD, "quota_exceeded")] == 1 and m.outcomes[(ODD, "completed")] == 2

    body, ctype = gw.prometheus("")
    assert ctype.startswith("text/plain")
    om_body, om_type = gw.prometheus("application/openmetrics-text; version=1.0.0")
    assert om_type.startswith("application/openmetrics-text")
    for parse, text, total in ((prom_parse, body.decode(), "floodgate_requests_total"),
                               (om_parse, om_body.decode(), "floodgate_requests_total")):
        fams = families(parse, text)
        req = fams["floodgate_requests"]
        assert req.type == "counter"
        for (t, o), n in m.outcomes.items():  # the odd names come back exactly
            assert value(req, total, tier=t, outcome=o) == n
        assert value(fams["floodgate_unauthorized"], "floodgate_unauthorized_total") == 1
        for name in ("floodgate_batches", "floodgate_batched_requests", "floodgate_admitted"):
            assert fams[name].type == "counter", name
        assert sum(value(fams["floodgate_batched_requests"], "floodgate_batched_requests_total",
                         pool=f"p{j}") for j in range(pools)) == 5
        for j in range(pools):
            assert value(fams["floodgate_workers"], "floodgate_workers", pool=f"p{j}") == 1
        lat = fams["floodgate_latency_seconds"]
        assert lat.type == "histogram"
        for t in gw.tiers:
            n = m.outcomes[(t, "completed")]
            assert value(lat, "floodgate_latency_seconds_count", tier=t) == n
            assert value(lat, "floodgate_latency_seconds_bucket", tier=t, le="+Inf") == n
            # latencies are whole batches of 2 s behind one another: cumulative, never falling
            b = [s.value for s in lat.samples if s.name.endswith("_bucket") and s.labels["tier"] == t]
            assert b == sorted(b)
        assert value(fams["floodgate_inflight"], "floodgate_inflight") == 0
        assert value(fams["floodgate_sim_time_seconds"], "floodgate_sim_time_seconds") == gw.now
    assert om_body.decode().endswith("# EOF\n")
    assert '\\"' in body.decode() and "\\n" in body.decode()  # escaped, not raw


def test_the_request_path_does_not_touch_prometheus_client(tmp_path):
    gw = gateway(tmp_path, 1)
    drive(gw, [(0.0, 1, 0)])
    assert gw._registry is None  # made at the first scrape, read only then
    gw.prometheus("")
    assert gw._registry is not None


def test_spot_gpus_are_preempted_live_at_their_rate_and_leave_after_the_notice(tmp_path):
    """The gateway runs the simulator's spot process on its own clock: 20 spot GPUs at 2
    preemptions per GPU-hour over 10 h (no requests) give a Poisson count of mean rate x spot
    GPU-hours at risk; each preempted GPU leaves the notice (60 s) after its notice, and
    /metrics counts the notices."""
    from scipy.stats import poisson

    rate_h, hours, spot = 2.0, 10.0, 20
    sc = parse_scenario({
        "name": "spot", "seed": 3, "horizon": hours * 3600, "chunk_s": 60,
        "demand": {"points": [[0, 0.01]], "users": 10},
        "tiers": [{"name": "a", "share": 1, "priority": 0, "price_per_image": 0, "slo_s": 60}],
        "fleet": {"pools": [{"name": "p", "gpus": spot, "service_time_s": 1.0,
                             "price_per_gpu_hour": 2.0,
                             "purchase": {"spot": spot, "preemptions_per_gpu_day": 24 * rate_h,
                                          "notice_s": 60, "restore_s": 600}}]},
        "outputs": {"figures": False, "report": False}})
    keys = KeyTable.of({key_hash("k"): (0, 0)}, ["a"])
    gw = FakeClockGateway(sc, keys, tmp_path / "requests.jsonl", 1.0, 10**9)
    gw.fleet.start()
    end = hours * 3600
    lowest = spot
    while gw.armed < end:
        gw.now = gw.armed
        gw.fleet.wake()
        lowest = min(lowest, gw.fleet.gates.gpus(0))
    sp = gw.fleet.spot[0]
    sp._tally(end)
    n = len(sp.notices)
    lo, hi = poisson.interval(0.999, rate_h * sp.exposure_s / 3600)
    assert lo <= n <= hi and n > 100, n
    done = [a for a in sp.notices if a + 60 <= end]
    assert [round(b - a, 6) for a, b in zip(done, sp.left, strict=True)] == [60.0] * len(done)
    assert lowest < spot  # GPUs did leave the live fleet
    fam = families(prom_parse, gw.prometheus("")[0].decode())
    assert fam["floodgate_spot_preemptions"].samples[0].value == n
